import AsyncHTTPClient
import MemWALCore
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// A client of a MemWAL node or cluster (async/await). It remembers the highest LSN it has written
/// and, unless told otherwise, reads with `min_lsn` set to it: read-your-writes, even on a replica.
///
/// Made with ``init(endpoints:token:httpClient:timeout:vectorEncoding:failover:)`` it finds the
/// primary through `GET /v1/cluster`, finds it again when it fails over, retries writes when that
/// is safe (nothing was sent, or the write carries an idempotency key), tries reads on another
/// member, and reports a write whose outcome it cannot know as
/// ``MemWALClientError/isIndeterminate`` (docs/failover.md, "Clients").
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

  /// The node given to ``init(baseURL:token:httpClient:timeout:vectorEncoding:)``, or the first
  /// endpoint given to ``init(endpoints:token:httpClient:timeout:vectorEncoding:failover:)``.
  public let baseURL: String
  let token: String?
  let http: HTTPClient
  /// Bounds one request; ``FailoverOptions/deadline`` bounds a whole call with its retries.
  let timeout: TimeAmount
  let vectorEncoding: VectorEncoding
  /// Nil for a client of one node: one attempt per call, a redirect followed once.
  let failover: FailoverOptions?
  let view: Mutex<ClusterView>
  private let lastWritten = Mutex<LSN>(.zero)

  /// A client of the node at `baseURL`, like `http://127.0.0.1:7600` (or `https://…` for a node
  /// with TLS, with an `httpClient` from ``makeHTTPClient(trustingCertificateAuthorityFile:)``);
  /// `token` for a node with tokens configured. Each call makes one attempt (a redirect to the
  /// primary is followed once) and does not look for another node.
  public init(
    baseURL: String, token: String? = nil, httpClient: HTTPClient = .shared,
    timeout: TimeAmount = .seconds(30), vectorEncoding: VectorEncoding = .base64
  ) {
    self.baseURL = ClusterView.normalized(baseURL)
    self.token = token
    self.http = httpClient
    self.timeout = timeout
    self.vectorEncoding = vectorEncoding
    self.failover = nil
    self.view = Mutex(ClusterView(seeds: [baseURL], primary: baseURL))
  }

  /// A client of the cluster reachable at `endpoints` (any of its nodes and the failover
  /// controller, e.g. `["http://10.0.0.1:7600", "http://10.0.0.2:7600"]`); it learns the other
  /// members and the primary from `GET /v1/cluster`. `httpClient` nil uses one shared client made
  /// for failover (``makeHTTPClient()``); a client of your own should come from one of the
  /// `makeHTTPClient` functions, which fail a refused connection at once and leave redirects to
  /// this client. `timeout` bounds each request, `failover.deadline` each call.
  public init(
    endpoints: [String], token: String? = nil, httpClient: HTTPClient? = nil,
    timeout: TimeAmount = .seconds(30), vectorEncoding: VectorEncoding = .base64,
    failover: FailoverOptions = FailoverOptions()
  ) {
    precondition(!endpoints.isEmpty, "MemWALClient(endpoints:) needs at least one endpoint")
    self.baseURL = ClusterView.normalized(endpoints[0])
    self.token = token
    self.http = httpClient ?? Self.sharedFailoverHTTPClient
    self.timeout = timeout
    self.vectorEncoding = vectorEncoding
    self.failover = failover
    self.view = Mutex(ClusterView(seeds: endpoints))
  }

  /// The address writes go to now (nil until a cluster client has found the primary).
  public var primaryURL: String? { view.withLock { $0.primary } }

  /// The members' client API addresses as `GET /v1/cluster` last listed them.
  public var memberURLs: [String] { view.withLock { $0.members } }

  /// An HTTP client suited to failover: a refused connection fails at once instead of being
  /// retried until the request's deadline, connecting gives up after `connectTimeout`, and
  /// redirects are left to ``MemWALClient`` (which learns the primary from them). The caller owns
  /// it: call `shutdown()` on it when done.
  public static func makeHTTPClient(
    connectTimeout: TimeAmount = .seconds(1), tlsConfiguration: TLSConfiguration? = nil
  ) -> HTTPClient {
    HTTPClient(
      eventLoopGroup: HTTPClient.defaultEventLoopGroup,
      configuration: failoverConfiguration(connectTimeout: connectTimeout, tls: tlsConfiguration))
  }

  static func failoverConfiguration(connectTimeout: TimeAmount, tls: TLSConfiguration?)
    -> HTTPClient.Configuration
  {
    var configuration = HTTPClient.Configuration(
      tlsConfiguration: tls, redirectConfiguration: .disallow,
      timeout: .init(connect: connectTimeout, read: nil))
    configuration.connectionPool.retryConnectionEstablishment = false
    return configuration
  }

  /// The HTTP client of cluster clients made without one; like `HTTPClient.shared`, never shut down.
  static let sharedFailoverHTTPClient = makeHTTPClient()

  /// An HTTP client for nodes that serve their API over HTTPS (`tls:` in their configuration) with
  /// a certificate issued by the CA in `certificateAuthorityFile` (PEM, e.g. the `ca.pem` of
  /// `memwal certs init`). Only that CA is trusted, not the system's store; the node's address
  /// must be one its certificate names (those of `memwal certs init` name the node, `localhost`
  /// and `127.0.0.1`). It behaves as ``makeHTTPClient(connectTimeout:tlsConfiguration:)``'s. The
  /// caller owns it: pass it as `httpClient` and call `shutdown()` on it when done.
  public static func makeHTTPClient(
    trustingCertificateAuthorityFile certificateAuthorityFile: String,
    connectTimeout: TimeAmount = .seconds(1)
  )
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
    return makeHTTPClient(connectTimeout: connectTimeout, tlsConfiguration: tls)
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
      ], durability: durability)
  }

  public func namespaces(consistency: Consistency = .readYourWrites) async throws -> [NamespaceConfig] {
    let response = try await read(.GET, "/v1/namespaces", query: readQuery(consistency))
    return try response.array("namespaces").map(Self.namespace)
  }

  /// Namespace writes take no idempotency key: a cluster client retries them only when nothing was
  /// sent.
  @discardableResult
  public func deleteNamespace(_ name: String) async throws -> WriteResult {
    try await write(.DELETE, "/v1/namespaces/\(escape(name))", nil)
  }

  // MARK: memories

  /// Upserts memories as one transaction. With an `idempotencyKey` (or
  /// ``FailoverOptions/generatesIdempotencyKeys``) a cluster client retries the write after a
  /// failover until it learns its outcome: a repeat of the key answers with the first outcome
  /// (``WriteResult/isRepeat``) and writes nothing.
  @discardableResult
  public func upsert(
    _ memories: [MemoryRecord], in namespace: String, durability: Durability = .local,
    idempotencyKey: String? = nil
  ) async throws -> WriteResult {
    let key = resolvedKey(idempotencyKey)
    var fields: JSONObject = ["durability": .string(durability.description)]
    if let key { fields["idempotency_key"] = .string(key) }
    // Written straight to bytes: the vectors are most of the body, and as JSONValues each
    // component would be an enum before it is text (RequestBody).
    var body = RequestBody(vectorEncoding: vectorEncoding)
    try body.appendMemories(memories, beside: fields)
    return try await write(
      WriteRequest(
        method: .POST, path: "/v1/namespaces/\(escape(namespace))/memories", body: body.bytes,
        idempotencyKey: key, durability: durability))
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
  public func deleteMemory(
    _ id: String, in namespace: String, ifVersion: LSN? = nil, idempotencyKey: String? = nil
  ) async throws
    -> WriteResult
  {
    try await delete(
      "/v1/namespaces/\(escape(namespace))/memories/\(escape(id))", ifVersion: ifVersion,
      idempotencyKey: idempotencyKey)
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
    let response = try await read(.POST, "/v1/namespaces/\(escape(namespace))/search", body: body.bytes)
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
  public func upsert(
    nodes: [GraphNode], in namespace: String, durability: Durability = .local, idempotencyKey: String? = nil
  ) async throws
    -> WriteResult
  {
    try await keyedWrite(
      "/v1/namespaces/\(escape(namespace))/graph/nodes", ["nodes": .array(nodes.map(Self.json))],
      durability: durability, idempotencyKey: idempotencyKey)
  }

  @discardableResult
  public func upsert(
    edges: [GraphEdge], in namespace: String, durability: Durability = .local, idempotencyKey: String? = nil
  ) async throws
    -> WriteResult
  {
    try await keyedWrite(
      "/v1/namespaces/\(escape(namespace))/graph/edges", ["edges": .array(edges.map(Self.json))],
      durability: durability, idempotencyKey: idempotencyKey)
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
  public func deleteNode(_ id: String, in namespace: String, idempotencyKey: String? = nil) async throws
    -> WriteResult
  {
    try await delete(
      "/v1/namespaces/\(escape(namespace))/graph/nodes/\(escape(id))", ifVersion: nil,
      idempotencyKey: idempotencyKey)
  }

  @discardableResult
  public func deleteEdge(_ id: String, in namespace: String, idempotencyKey: String? = nil) async throws
    -> WriteResult
  {
    try await delete(
      "/v1/namespaces/\(escape(namespace))/graph/edges/\(escape(id))", ifVersion: nil,
      idempotencyKey: idempotencyKey)
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
    try await keyedWrite(
      "/v1/namespaces/\(escape(namespace))/transactions", ["operations": .array(operations)],
      durability: durability, idempotencyKey: idempotencyKey)
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

  /// A write with a JSON body that takes an idempotency key.
  private func keyedWrite(
    _ path: String, _ fields: JSONObject, durability: Durability, idempotencyKey: String?
  )
    async throws -> WriteResult
  {
    let key = resolvedKey(idempotencyKey)
    var fields = fields
    fields["durability"] = .string(durability.description)
    if let key { fields["idempotency_key"] = .string(key) }
    return try await write(
      WriteRequest(
        method: .POST, path: path, body: Array(JSONValue.object(fields).jsonText.utf8), idempotencyKey: key,
        durability: durability))
  }

  /// A delete of one record: the precondition and the idempotency key travel in the query.
  private func delete(_ path: String, ifVersion: LSN?, idempotencyKey: String?) async throws -> WriteResult {
    let key = resolvedKey(idempotencyKey)
    var query: [(String, String)] = []
    if let ifVersion { query.append(("if_version", String(ifVersion.rawValue))) }
    if let key { query.append(("idempotency_key", key)) }
    return try await write(
      WriteRequest(
        method: .DELETE, path: withQuery(path, query), body: nil, idempotencyKey: key, durability: nil))
  }

  /// A write without an idempotency key (namespaces).
  private func write(_ method: HTTPMethod, _ path: String, _ body: JSONObject?, durability: Durability? = nil)
    async throws -> WriteResult
  {
    try await write(
      WriteRequest(
        method: method, path: path, body: body.map { Array(JSONValue.object($0).jsonText.utf8) },
        idempotencyKey: nil, durability: durability))
  }

  private func write(_ request: WriteRequest) async throws -> WriteResult {
    let response = try await perform(request)
    let result: WriteResult
    do {
      result = WriteResult(
        lsn: LSN(UInt64(try response.integer("lsn"))), epoch: Epoch(UInt64(try response.integer("epoch"))),
        durability: Durability(name: try response.string("durability")) ?? .memory,
        isRepeat: response.optionalBool("repeat") ?? false, requestedDurability: request.durability,
        idempotencyKey: request.idempotencyKey)
    } catch {
      // The node acknowledged something this client cannot read: whether it is this write is unknown.
      throw MemWALClientError(
        status: 200, code: "indeterminate", message: "the write's acknowledgement is unreadable: \(error)",
        idempotencyKey: request.idempotencyKey)
    }
    lastWritten.withLock { $0 = max($0, result.lsn) }
    return result
  }

  /// The key a write carries: the caller's, or a new one when the client generates them.
  private func resolvedKey(_ given: String?) -> String? {
    if let given { return given }
    guard failover?.generatesIdempotencyKeys == true else { return nil }
    return Self.makeIdempotencyKey()
  }

  /// 128 random bits in hex.
  static func makeIdempotencyKey() -> String {
    var generator = SystemRandomNumberGenerator()
    let high = String(generator.next() as UInt64, radix: 16).leftPadded(to: 16)
    let low = String(generator.next() as UInt64, radix: 16).leftPadded(to: 16)
    return "client-" + high + low
  }

  private func read(
    _ method: HTTPMethod, _ path: String, query: [(String, String)] = [], body: JSONObject? = nil
  ) async throws
    -> Fields
  {
    try await read(
      method, withQuery(path, query), body: body.map { Array(JSONValue.object($0).jsonText.utf8) })
  }

  private func read(_ method: HTTPMethod, _ path: String, body: [UInt8]?) async throws -> Fields {
    try await performRead(ReadRequest(method: method, path: path, body: body))
  }

  func withQuery(_ path: String, _ query: [(String, String)]) -> String {
    guard !query.isEmpty else { return path }
    return path + (path.contains("?") ? "&" : "?")
      + query.map { "\($0.0)=\(escape($0.1))" }.joined(separator: "&")
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
  /// The durability reached (a repeat of an idempotency key reports what the answering node holds).
  public var durability: Durability
  /// True when this answers a repeat of an idempotency key: nothing new was written.
  public var isRepeat: Bool
  /// The durability the call asked for, when it named one.
  public var requestedDurability: Durability?
  /// The idempotency key the write carried (given, or generated by the client).
  public var idempotencyKey: String?

  public init(
    lsn: LSN, epoch: Epoch, durability: Durability, isRepeat: Bool, requestedDurability: Durability? = nil,
    idempotencyKey: String? = nil
  ) {
    self.lsn = lsn
    self.epoch = epoch
    self.durability = durability
    self.isRepeat = isRepeat
    self.requestedDurability = requestedDurability
    self.idempotencyKey = idempotencyKey
  }
}
