import AsyncHTTPClient
import MemWALCore
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// A client of one MemWAL node's API (async/await). It remembers the highest LSN it has written
/// and, unless told otherwise, reads with `min_lsn` set to it: read-your-writes, even on a replica.
public final class MemWALClient: Sendable {
  public enum Consistency: Sendable, Equatable {
    /// Wait until the node has applied this client's last write (the default).
    case readYourWrites
    /// Whatever the node has applied.
    case latest
    /// The state as of an LSN, or a time in microseconds since the Unix epoch.
    case asOfLSN(LSN)
    case asOfTime(Int64)
  }

  /// How vectors travel in request bodies (docs/openapi.yaml, `vector` and `vector_base64`).
  public enum VectorEncoding: Sendable, Equatable {
    /// `vector_base64`: the components as little-endian float32 in base64 (`VectorBase64`), exact
    /// and without decimal conversion on either side. The default.
    case base64
    /// `vector`: an array of JSON numbers, each the shortest text that reads back as the same
    /// Float (`FloatText`), for nodes older than `vector_base64`.
    case json
  }

  public let baseURL: String
  let token: String?
  let http: HTTPClient
  let timeout: TimeAmount
  let vectorEncoding: VectorEncoding
  private let lastWritten = Mutex<LSN>(.zero)

  /// `baseURL` like `http://127.0.0.1:7600` (or `https://…` for a node with TLS, with an
  /// `httpClient` from ``makeHTTPClient(trustingCertificateAuthorityFile:)``); `token` for a node
  /// with tokens configured.
  public init(
    baseURL: String, token: String? = nil, httpClient: HTTPClient = .shared,
    timeout: TimeAmount = .seconds(30), vectorEncoding: VectorEncoding = .base64
  ) {
    self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
    self.token = token
    self.http = httpClient
    self.timeout = timeout
    self.vectorEncoding = vectorEncoding
  }

  /// An HTTP client for nodes that serve their API over HTTPS (`tls:` in their configuration) with
  /// a certificate issued by the CA in `certificateAuthorityFile` (PEM, e.g. the `ca.pem` of
  /// `memwal certs init`). Only that CA is trusted, not the system's store; the node's address
  /// must be one its certificate names (those of `memwal certs init` name the node, `localhost`
  /// and `127.0.0.1`). The caller owns it: pass it as `httpClient` and call `shutdown()` on it
  /// when done.
  public static func makeHTTPClient(trustingCertificateAuthorityFile certificateAuthorityFile: String)
    throws(MemWALClientError) -> HTTPClient
  {
    let authorities: [NIOSSLCertificate]
    do {
      authorities = try NIOSSLCertificate.fromPEMFile(certificateAuthorityFile)
    } catch {
      throw MemWALClientError(
        status: 0, code: "bad_certificate_authority",
        message: "cannot read CA certificates from \(certificateAuthorityFile): \(error)")
    }
    guard !authorities.isEmpty else {
      throw MemWALClientError(
        status: 0, code: "bad_certificate_authority",
        message: "\(certificateAuthorityFile) holds no certificate")
    }
    var tls = TLSConfiguration.makeClientConfiguration()
    tls.minimumTLSVersion = .tlsv12
    tls.trustRoots = .certificates(authorities)
    tls.certificateVerification = .fullVerification
    return HTTPClient(
      eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: .init(tlsConfiguration: tls))
  }

  /// The highest LSN this client has written (reads wait for it by default).
  public var lastWrittenLSN: LSN { lastWritten.withLock { $0 } }

  // MARK: namespaces

  @discardableResult
  public func createNamespace(
    _ name: String, dimension: Int, metric: DistanceMetric, durability: Durability = .local
  )
    async throws -> WriteResult
  {
    try await write(
      .POST, "/v1/namespaces",
      [
        "name": .string(name), "dimension": .number(Double(dimension)), "metric": .string(metric.rawValue),
        "durability": .string(durability.description),
      ])
  }

  public func namespaces(consistency: Consistency = .readYourWrites) async throws -> [NamespaceConfig] {
    let response = try await read(.GET, "/v1/namespaces", query: readQuery(consistency))
    return try response.array("namespaces").map(Self.namespace)
  }

  @discardableResult
  public func deleteNamespace(_ name: String) async throws -> WriteResult {
    try await write(.DELETE, "/v1/namespaces/\(escape(name))", nil)
  }

  // MARK: memories

  @discardableResult
  public func upsert(
    _ memories: [MemoryRecord], in namespace: String, durability: Durability = .local,
    idempotencyKey: String? = nil
  ) async throws -> WriteResult {
    var fields: JSONObject = ["durability": .string(durability.description)]
    if let idempotencyKey { fields["idempotency_key"] = .string(idempotencyKey) }
    // Written straight to bytes: the vectors are most of the body, and as JSONValues each
    // component would be an enum before it is text (RequestBody).
    var body = RequestBody(vectorEncoding: vectorEncoding)
    try body.appendMemories(memories, beside: fields)
    return try await write(.POST, "/v1/namespaces/\(escape(namespace))/memories", body: body.bytes)
  }

  /// The memory, or nil when there is none.
  public func memory(_ id: String, in namespace: String, consistency: Consistency = .readYourWrites)
    async throws
    -> (record: MemoryRecord, version: LSN)?
  {
    do {
      let response = try await read(
        .GET, "/v1/namespaces/\(escape(namespace))/memories/\(escape(id))", query: readQuery(consistency))
      let memory = try response.object("memory")
      return (try Self.memoryRecord(memory), LSN(UInt64(try memory.integer("version"))))
    } catch let error as MemWALClientError where error.status == 404 && error.code == "not_found" {
      return nil
    }
  }

  @discardableResult
  public func deleteMemory(_ id: String, in namespace: String, ifVersion: LSN? = nil) async throws
    -> WriteResult
  {
    var query = ""
    if let ifVersion { query = "?if_version=\(ifVersion)" }
    return try await write(.DELETE, "/v1/namespaces/\(escape(namespace))/memories/\(escape(id))\(query)", nil)
  }

  public struct SearchHit: Sendable, Equatable {
    public var id: String
    public var distance: Float
    public var text: String?
    public var metadata: JSONObject
    public var version: LSN
  }

  /// The `k` nearest memories; `filter` in the API's filter language (docs/openapi.yaml).
  public func search(
    _ vector: [Float], k: Int, in namespace: String, filter: JSONValue? = nil, ef: Int? = nil,
    consistency: Consistency = .readYourWrites
  ) async throws -> [SearchHit] {
    var fields: JSONObject = ["k": .number(Double(k))]
    if let filter { fields["filter"] = filter }
    if let ef { fields["ef"] = .number(Double(ef)) }
    for (key, value) in readQuery(consistency) {
      fields[key] = Int64(value).map { .number(Double($0)) } ?? .string(value)
    }
    var body = RequestBody(vectorEncoding: vectorEncoding)
    try body.appendObject(fields, vector: vector, path: "vector")
    let response = try await send(
      .POST, "/v1/namespaces/\(escape(namespace))/search", query: [], body: body.bytes)
    return try response.array("results").map { value in
      let hit = try Fields(value)
      return SearchHit(
        id: try hit.string("id"), distance: Float(try hit.number("distance")),
        text: hit.optionalString("text"),
        metadata: hit.optionalObject("metadata") ?? [:], version: LSN(UInt64(try hit.integer("version"))))
    }
  }

  // MARK: graph and transactions

  @discardableResult
  public func upsert(nodes: [GraphNode], in namespace: String, durability: Durability = .local) async throws
    -> WriteResult
  {
    try await write(
      .POST, "/v1/namespaces/\(escape(namespace))/graph/nodes",
      ["nodes": .array(nodes.map(Self.json)), "durability": .string(durability.description)])
  }

  @discardableResult
  public func upsert(edges: [GraphEdge], in namespace: String, durability: Durability = .local) async throws
    -> WriteResult
  {
    try await write(
      .POST, "/v1/namespaces/\(escape(namespace))/graph/edges",
      ["edges": .array(edges.map(Self.json)), "durability": .string(durability.description)])
  }

  /// Neighbour node ids with the edges that lead to them, in edge-id order.
  public func neighbors(
    of id: String, in namespace: String, direction: String = "out", type: String? = nil,
    consistency: Consistency = .readYourWrites
  ) async throws -> [(edge: String, node: String)] {
    var query = readQuery(consistency)
    query.append(("direction", direction))
    if let type { query.append(("type", type)) }
    let response = try await read(
      .GET, "/v1/namespaces/\(escape(namespace))/graph/nodes/\(escape(id))/neighbors", query: query)
    return try response.array("neighbors").map { value in
      let entry = try Fields(value)
      return (try entry.object("edge").string("id"), try entry.object("node").string("id"))
    }
  }

  @discardableResult
  public func deleteNode(_ id: String, in namespace: String) async throws -> WriteResult {
    try await write(.DELETE, "/v1/namespaces/\(escape(namespace))/graph/nodes/\(escape(id))", nil)
  }

  @discardableResult
  public func deleteEdge(_ id: String, in namespace: String) async throws -> WriteResult {
    try await write(.DELETE, "/v1/namespaces/\(escape(namespace))/graph/edges/\(escape(id))", nil)
  }

  /// The node, or nil when there is none.
  public func node(_ id: String, in namespace: String, consistency: Consistency = .readYourWrites)
    async throws -> GraphNode?
  {
    do {
      let response = try await read(
        .GET, "/v1/namespaces/\(escape(namespace))/graph/nodes/\(escape(id))", query: readQuery(consistency))
      let node = try response.object("node")
      return GraphNode(
        id: try node.string("id"), type: try node.string("type"),
        properties: node.optionalObject("properties") ?? [:])
    } catch let error as MemWALClientError where error.status == 404 && error.code == "not_found" {
      return nil
    }
  }

  /// Node ids reached from `start` with their depth, breadth first.
  public func traverse(
    from start: String, in namespace: String, maxDepth: Int, edgeTypes: [String]? = nil,
    direction: String = "out",
    consistency: Consistency = .readYourWrites
  ) async throws -> [(node: String, depth: Int)] {
    var body: JSONObject = [
      "start": .string(start), "max_depth": .number(Double(maxDepth)), "direction": .string(direction),
    ]
    if let edgeTypes { body["edge_types"] = .array(edgeTypes.map { .string($0) }) }
    for (key, value) in readQuery(consistency) {
      body[key] = Int64(value).map { .number(Double($0)) } ?? .string(value)
    }
    let response = try await read(.POST, "/v1/namespaces/\(escape(namespace))/graph/traverse", body: body)
    return try response.array("nodes").map { value in
      let node = try Fields(value)
      return (try node.string("id"), try node.integer("depth"))
    }
  }

  /// The node ids of a shortest path, or nil when there is none within `maxDepth` hops.
  public func path(
    from: String, to: String, in namespace: String, maxDepth: Int, consistency: Consistency = .readYourWrites
  ) async throws -> [String]? {
    var body: JSONObject = ["from": .string(from), "to": .string(to), "max_depth": .number(Double(maxDepth))]
    for (key, value) in readQuery(consistency) {
      body[key] = Int64(value).map { .number(Double($0)) } ?? .string(value)
    }
    let response = try await read(.POST, "/v1/namespaces/\(escape(namespace))/graph/path", body: body)
    guard case .object(let path)? = response.fields["path"] else { return nil }
    return try Fields(.object(path)).array("nodes").map { try Fields($0).string("id") }
  }

  /// A key's audit trail (`kind`: memories, nodes or edges), oldest first, as the API returns it.
  public func history(_ kind: String, id: String, in namespace: String) async throws -> [JSONValue] {
    try await read(.GET, "/v1/namespaces/\(escape(namespace))/history/\(escape(kind))/\(escape(id))").array(
      "history")
  }

  /// Runs operations (each as the API's `{"op": …}` objects) as one atomic transaction.
  @discardableResult
  public func transaction(
    _ operations: [JSONValue], in namespace: String, durability: Durability = .local,
    idempotencyKey: String? = nil
  ) async throws -> WriteResult {
    var body: JSONObject = ["operations": .array(operations), "durability": .string(durability.description)]
    if let idempotencyKey { body["idempotency_key"] = .string(idempotencyKey) }
    return try await write(.POST, "/v1/namespaces/\(escape(namespace))/transactions", body)
  }

  /// The node's status object.
  public func status() async throws -> JSONValue { try await read(.GET, "/v1/status").value }

  // MARK: plumbing

  func readQuery(_ consistency: Consistency) -> [(String, String)] {
    switch consistency {
    case .readYourWrites:
      let lsn = lastWrittenLSN
      return lsn > .zero ? [("min_lsn", String(lsn.rawValue))] : []
    case .latest: return []
    case .asOfLSN(let lsn): return [("as_of_lsn", String(lsn.rawValue))]
    case .asOfTime(let micros): return [("as_of_time", String(micros))]
    }
  }

  private func write(_ method: HTTPMethod, _ path: String, _ body: JSONObject?) async throws -> WriteResult {
    try await write(method, path, body: body.map { Array(JSONValue.object($0).jsonText.utf8) })
  }

  private func write(_ method: HTTPMethod, _ path: String, body: [UInt8]?) async throws -> WriteResult {
    let response = try await send(method, path, query: [], body: body)
    let result = WriteResult(
      lsn: LSN(UInt64(try response.integer("lsn"))), epoch: Epoch(UInt64(try response.integer("epoch"))),
      durability: Durability(name: try response.string("durability")) ?? .memory,
      isRepeat: response.optionalBool("repeat") ?? false)
    lastWritten.withLock { $0 = max($0, result.lsn) }
    return result
  }

  private func read(
    _ method: HTTPMethod, _ path: String, query: [(String, String)] = [], body: JSONObject? = nil
  ) async throws
    -> Fields
  {
    try await send(method, path, query: query, body: body.map { Array(JSONValue.object($0).jsonText.utf8) })
  }

  private func send(_ method: HTTPMethod, _ path: String, query: [(String, String)], body: [UInt8]?)
    async throws -> Fields
  {
    var url = baseURL + path
    if !query.isEmpty {
      url += (path.contains("?") ? "&" : "?") + query.map { "\($0.0)=\(escape($0.1))" }.joined(separator: "&")
    }
    var request = HTTPClientRequest(url: url)
    request.method = method
    if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
    if let body {
      request.headers.add(name: "Content-Type", value: "application/json")
      request.body = .bytes(ByteBuffer(bytes: body))
    }
    let response = try await http.execute(request, timeout: timeout)
    let bytes = try await response.body.collect(upTo: 256 << 20)
    let value =
      bytes.readableBytes == 0 ? JSONValue.null : try JSONParser.parse(Array(bytes.readableBytesView))
    guard (200..<300).contains(Int(response.status.code)) else {
      throw MemWALClientError(status: Int(response.status.code), response: value)
    }
    return try Fields(value)
  }

  func escape(_ component: String) -> String {
    var out = ""
    for byte in component.utf8 {
      switch byte {
      case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
        UInt8(ascii: "0")...UInt8(ascii: "9"),
        UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
        out.unicodeScalars.append(Unicode.Scalar(byte))
      default:
        out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
      }
    }
    return out
  }
}

/// What a write got.
public struct WriteResult: Sendable, Equatable {
  public var lsn: LSN
  public var epoch: Epoch
  public var durability: Durability
  public var isRepeat: Bool
}

/// An error the node answered with (`{"error": {"code", "message"}}`), or a response the client
/// could not read.
public struct MemWALClientError: Error, Equatable, Sendable, CustomStringConvertible {
  public var status: Int
  public var code: String
  public var message: String

  init(status: Int, code: String, message: String) {
    self.status = status
    self.code = code
    self.message = message
  }

  init(status: Int, response: JSONValue) {
    if case .object(let top) = response, case .object(let error)? = top["error"],
      case .string(let code)? = error["code"]
    {
      let message: String
      if case .string(let text)? = error["message"] { message = text } else { message = "" }
      self.init(status: status, code: code, message: message)
    } else {
      self.init(status: status, code: "unexpected_response", message: response.jsonText)
    }
  }

  public var description: String { "\(status) \(code): \(message)" }
}
