import Hummingbird
import Logging
import MemWALCore
import MemWALLog
import MemWALNode
import MemWALStore
import NIOCore

/// The client API's routes over one node's engine (issue 4's route table; JSON in and out).
public struct API: Sendable {
  public struct Limits: Sendable {
    public var maximumBodyBytes = 32 << 20
    public var maximumBatch = 1_000
    public init() {}
  }

  /// The node served: its engine (which a follower may replace) and its replication.
  let node: ClusterNode
  let limits: Limits
  /// Bearer tokens by SHA-256; `nil` is development mode (no authentication).
  let tokens: [String: TokenGrant]?
  public let metrics: NodeMetrics

  /// The engine serving this request.
  var engine: MemoryEngine { node.host.engine }

  /// The API of a single node (no replication) over `engine`.
  public init(engine: MemoryEngine, limits: Limits = Limits(), tokens: [TokenGrant]? = nil) {
    self.init(node: ClusterNode(single: engine), limits: limits, tokens: tokens)
  }

  /// The API of `node`, a cluster member or a single node.
  public init(node: ClusterNode, limits: Limits = Limits(), tokens: [TokenGrant]? = nil) {
    self.node = node
    self.limits = limits
    self.metrics = NodeMetrics(node: node)
    self.tokens = tokens.map {
      Dictionary($0.map { ($0.sha256, $0) }, uniquingKeysWith: { first, _ in first })
    }
  }

  /// Checks the request's bearer token: 401 without a valid one, 403 when it does not cover
  /// `namespace` with at least `role`. `namespace` nil: the token must cover every namespace;
  /// empty: any token with the role will do (the route filters what it shows by the token's scope).
  @discardableResult
  func authorize(_ request: Request, _ role: Role, namespace: String?) throws(APIError) -> TokenGrant? {
    guard let tokens else { return nil }
    guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else {
      throw APIError(.unauthorized, "unauthorized", "an Authorization: Bearer token is required")
    }
    guard let grant = tokens[TokenGrant.digest(of: String(header.dropFirst(7)))] else {
      throw APIError(.unauthorized, "unauthorized", "the token is not valid")
    }
    guard grant.role >= role else {
      throw APIError(
        .forbidden, "forbidden",
        "token \(grant.name) has role \(grant.role.rawValue); this needs \(role.rawValue)")
    }
    if let namespace, !namespace.isEmpty, !grant.covers(namespace) {
      throw APIError(.forbidden, "forbidden", "token \(grant.name) does not cover namespace \(namespace)")
    }
    if namespace == nil, !grant.covers("*") {
      throw APIError(
        .forbidden, "forbidden", "token \(grant.name) does not cover every namespace, which this needs")
    }
    return grant
  }

  /// Every route, as `METHOD path` (the OpenAPI test checks each is documented).
  public static let routes: [String] = [
    "GET /healthz", "GET /metrics", "GET /v1/status", "GET /v1/cluster", "GET /v1/digest",
    "POST /v1/namespaces", "GET /v1/namespaces", "DELETE /v1/namespaces/{ns}",
    "POST /v1/namespaces/{ns}/memories", "GET /v1/namespaces/{ns}/memories/{id}",
    "DELETE /v1/namespaces/{ns}/memories/{id}",
    "POST /v1/namespaces/{ns}/search",
    "POST /v1/namespaces/{ns}/graph/nodes", "POST /v1/namespaces/{ns}/graph/edges",
    "GET /v1/namespaces/{ns}/graph/nodes/{id}", "DELETE /v1/namespaces/{ns}/graph/nodes/{id}",
    "DELETE /v1/namespaces/{ns}/graph/edges/{id}", "GET /v1/namespaces/{ns}/graph/nodes/{id}/neighbors",
    "POST /v1/namespaces/{ns}/graph/traverse", "POST /v1/namespaces/{ns}/graph/path",
    "POST /v1/namespaces/{ns}/transactions", "GET /v1/namespaces/{ns}/history/{kind}/{id}", "GET /v1/changes",
  ]

  public func makeRouter() -> Router<BasicRequestContext> {
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: MetricsMiddleware(metrics: metrics))
    router.get("/healthz") { _, _ in respond { .object(["status": .string("ok")]) } }
    router.get("/metrics") { _, _ in
      Response(
        status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
        body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.render())))
    }
    router.get("/v1/status") { request, _ in
      await respond {
        try authorize(request, .read, namespace: "")
        return status()
      }
    }
    router.get("/v1/cluster") { request, _ in
      await respond {
        try authorize(request, .read, namespace: "")
        return node.topology()
      }
    }
    router.get("/v1/digest") { request, _ in
      await respond {
        try authorize(request, .admin, namespace: nil)
        return try await digest(request)
      }
    }
    router.get("/v1/changes") { request, _ -> Response in
      do {
        return try changes(request)
      } catch {
        let failure = APIError.from(error)
        return Self.json(failure.json, status: failure.status)
      }
    }
    router.post("/v1/namespaces") { request, _ in
      await respond(status: .created, request) { try await createNamespace(request) }
    }
    router.get("/v1/namespaces") { request, _ in await respond { try await listNamespaces(request) } }
    router.delete("/v1/namespaces/{ns}") { request, context in
      await respond(request) { try await deleteNamespace(request, context) }
    }
    router.post("/v1/namespaces/{ns}/memories") { request, context in
      await respond(request) { try await upsertMemories(request, context) }
    }
    router.get("/v1/namespaces/{ns}/memories/{id}") { request, context in
      await respond { try await getMemory(request, context) }
    }
    router.delete("/v1/namespaces/{ns}/memories/{id}") { request, context in
      await respond(request) {
        try await deleteOne(.deleteMemory(id: try parameter(context, "id")), request, context)
      }
    }
    router.post("/v1/namespaces/{ns}/search") { request, context in
      await respond { try await search(request, context) }
    }
    router.post("/v1/namespaces/{ns}/graph/nodes") { request, context in
      await respond(request) { try await upsertGraph(request, context, key: "nodes") }
    }
    router.post("/v1/namespaces/{ns}/graph/edges") { request, context in
      await respond(request) { try await upsertGraph(request, context, key: "edges") }
    }
    router.get("/v1/namespaces/{ns}/graph/nodes/{id}") { request, context in
      await respond { try await getNode(request, context) }
    }
    router.delete("/v1/namespaces/{ns}/graph/nodes/{id}") { request, context in
      await respond(request) {
        try await deleteOne(.deleteNode(id: try parameter(context, "id")), request, context)
      }
    }
    router.delete("/v1/namespaces/{ns}/graph/edges/{id}") { request, context in
      await respond(request) {
        try await deleteOne(.deleteEdge(id: try parameter(context, "id")), request, context)
      }
    }
    router.get("/v1/namespaces/{ns}/graph/nodes/{id}/neighbors") { request, context in
      await respond { try await neighbors(request, context) }
    }
    router.post("/v1/namespaces/{ns}/graph/traverse") { request, context in
      await respond { try await traverse(request, context) }
    }
    router.post("/v1/namespaces/{ns}/graph/path") { request, context in
      await respond { try await path(request, context) }
    }
    router.post("/v1/namespaces/{ns}/transactions") { request, context in
      await respond(request) { try await transaction(request, context) }
    }
    router.get("/v1/namespaces/{ns}/history/{kind}/{id}") { request, context in
      await respond { try await history(request, context) }
    }
    return router
  }

  // MARK: plumbing

  func respond(status: HTTPResponse.Status = .ok, _ body: () async throws -> JSONValue) async -> Response {
    do {
      return Self.json(try await body(), status: status)
    } catch {
      let failure = APIError.from(error)
      return Self.json(failure.json, status: failure.status)
    }
  }

  /// A write route's answer: on a follower, a `307` to the same path on the primary (clients that
  /// follow redirects resend the request there), with the primary's address in the body too.
  func respond(status: HTTPResponse.Status = .ok, _ request: Request, _ body: () async throws -> JSONValue)
    async
    -> Response
  {
    do {
      return Self.json(try await body(), status: status)
    } catch WriteError.notPrimary(let primary) {
      guard let primary else {
        let failure = APIError.from(WriteError.notPrimary(primary: nil))
        return Self.json(failure.json, status: failure.status)
      }
      let location = primary + request.uri.description
      var response = Self.json(
        .object([
          "error": .object([
            "code": .string("not_primary"),
            "message": .string("this node is a follower; send writes to the primary at \(primary)"),
            "primary": .string(primary),
          ])
        ]), status: .temporaryRedirect)
      response.headers[.location] = location
      return response
    } catch {
      let failure = APIError.from(error)
      return Self.json(failure.json, status: failure.status)
    }
  }

  func respond(_ body: () -> JSONValue) -> Response { Self.json(body(), status: .ok) }

  static func json(_ value: JSONValue, status: HTTPResponse.Status) -> Response {
    var text = value.jsonText
    text += "\n"
    return Response(
      status: status, headers: [.contentType: "application/json"],
      body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
  }

  func body(_ request: Request) async throws -> JSONFields {
    try JSONFields(try JSONParser.parse(try await bodyBytes(request)))
  }

  /// The request body, up to the limit; a JSON body is required.
  func bodyBytes(_ request: Request) async throws -> [UInt8] {
    var request = request
    let buffer = try await request.collectBody(upTo: limits.maximumBodyBytes)
    guard buffer.readableBytes > 0 else { throw APIError.badRequest("a JSON body is required") }
    return Array(buffer.readableBytesView)
  }

  func parameter(_ context: BasicRequestContext, _ name: String) throws(APIError) -> String {
    guard let raw = context.parameters.get(name), !raw.isEmpty else {
      throw .badRequest("missing path parameter \(name)")
    }
    guard let value = Self.percentDecoded(raw), !value.isEmpty else {
      throw .badRequest(
        "path parameter \(name) is not valid percent-encoded UTF-8 (write a literal % as %25): \(raw.prefix(80))"
      )
    }
    return value
  }

  /// A path segment with its percent-escapes decoded (RFC 3986 §2.1), or nil when an escape is
  /// malformed or the bytes are not UTF-8. MemWALClient escapes every id it puts in a path.
  static func percentDecoded(_ text: String) -> String? {
    guard text.utf8.contains(UInt8(ascii: "%")) else { return text }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(text.utf8.count)
    var iterator = text.utf8.makeIterator()
    func hex(_ byte: UInt8?) -> UInt8? {
      guard let byte else { return nil }
      switch byte {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
      case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
      case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
      default: return nil
      }
    }
    while let byte = iterator.next() {
      guard byte == UInt8(ascii: "%") else {
        bytes.append(byte)
        continue
      }
      guard let high = hex(iterator.next()), let low = hex(iterator.next()) else { return nil }
      bytes.append(high << 4 | low)
    }
    return String(validating: bytes, as: UTF8.self)
  }

  /// The read point a request asks for: waits (bounded) for `min_lsn`, then `as_of_lsn` /
  /// `as_of_time`, else the newest applied state.
  func readPoint(query: JSONFields) async throws -> ReadPoint {
    if let minimum = try query.optionalLSN("min_lsn"), minimum > .zero {
      try await engine.waitForApplied(minimum)
    }
    if let lsn = try query.optionalLSN("as_of_lsn") {
      guard !query.has("as_of_time") else {
        throw APIError.badRequest("give as_of_lsn or as_of_time, not both")
      }
      return try engine.store.readPoint(asOf: lsn)
    }
    if let time = try query.optionalTime("as_of_time") { return try engine.store.readPoint(asOfTime: time) }
    return engine.latestReadPoint()
  }

  /// Query parameters as JSON fields, every value a string (numeric fields parse their text).
  func query(_ request: Request) -> JSONFields {
    var fields: JSONObject = [:]
    for (key, value) in request.uri.queryParameters { fields[String(key)] = .string(String(value)) }
    return try! JSONFields(.object(fields), path: "query")
  }

  static func withLSN(_ point: ReadPoint, _ fields: JSONObject) -> JSONValue {
    var fields = fields
    fields["lsn"] = .number(Double(point.lsn.rawValue))
    return .object(fields)
  }

  // MARK: status

  func status() -> JSONValue {
    let engine = self.engine
    let log = engine.log
    let segments = log.segmentNames.count
    return .object([
      "role": .string(engine.role.rawValue), "epoch": .number(Double(log.currentEpoch.rawValue)),
      "replication": node.replicationStatus(),
      "written_lsn": .number(Double(log.positions.written.value.rawValue)),
      "durable_lsn": .number(Double(log.positions.flushed.value.rawValue)),
      "applied_lsn": .number(Double(engine.store.appliedLSN.rawValue)),
      "wal_segments": .number(Double(segments)),
      "wal_bytes": .number(Double(segments * log.options.segmentBytes)),
      "checkpoint_lsn": log.checkpointLSNs.first.map { .number(Double($0.rawValue)) } ?? .null,
      "unapplied_keys": .number(Double(engine.unappliedKeyCount)),
    ])
  }

  /// `GET /v1/digest`: the state digest at an LSN (`as_of_lsn`, default the applied LSN; `min_lsn`
  /// waits first), for comparing replicas.
  func digest(_ request: Request) async throws -> JSONValue {
    let point = try await readPoint(query: query(request))
    let digest = try engine.store.digest(at: point.lsn)
    return .object(["lsn": .number(Double(digest.lsn.rawValue)), "digest": .string(digest.value)])
  }

  // MARK: namespaces

  func createNamespace(_ request: Request) async throws -> JSONValue {
    let fields = try await body(request)
    try authorize(request, .admin, namespace: try fields.string("name"))
    try fields.allowOnly(["name", "dimension", "metric", "durability"])
    let metricName = try fields.string("metric")
    guard let metric = DistanceMetric(rawValue: metricName) else {
      throw APIError.badRequest("metric must be cosine, dot or l2")
    }
    let config = NamespaceConfig(
      name: try fields.string("name"), dimension: try fields.integer("dimension"), metric: metric)
    let outcome = try await engine.createNamespace(config, durability: try fields.durability())
    guard case .object(var result) = Representation.write(outcome) else { return .null }
    result["namespace"] = Representation.namespace(config)
    return .object(result)
  }

  func listNamespaces(_ request: Request) async throws -> JSONValue {
    let grant = try authorize(request, .read, namespace: "")
    let point = try await readPoint(query: query(request))
    let visible = engine.store.namespaceConfigs(at: point).filter { grant?.covers($0.name) ?? true }
    return Self.withLSN(point, ["namespaces": .array(visible.map(Representation.namespace))])
  }

  func deleteNamespace(_ request: Request, _ context: BasicRequestContext) async throws -> JSONValue {
    try authorize(request, .admin, namespace: try parameter(context, "ns"))
    let durability = try query(request).durability()
    return Representation.write(
      try await engine.deleteNamespace(try parameter(context, "ns"), durability: durability))
  }

  // MARK: memories

  func upsertMemories(_ request: Request, _ context: BasicRequestContext) async throws -> JSONValue {
    try authorize(request, .write, namespace: try parameter(context, "ns"))
    let body = try MemoriesBody(try await bodyBytes(request))
    let fields = try JSONFields(body.top)
    try fields.allowOnly(["memories", "durability", "idempotency_key"])
    let entries = try body.memories ?? fields.array("memories").map(MemoriesBody.Entry.value)
    guard !entries.isEmpty, entries.count <= limits.maximumBatch else {
      throw APIError.badRequest("memories must hold 1 to \(limits.maximumBatch) entries")
    }
    var operations: [Operation] = []
    operations.reserveCapacity(entries.count)
    for (index, entry) in entries.enumerated() {
      let path = "memories[\(index)]"
      let item: JSONFields
      var vector: DecodedVector?
      switch entry {
      case .object(let object, let decoded):
        item = try JSONFields(.object(object), path: path)
        vector = decoded
      case .value(let value): item = try JSONFields(value, path: path)
      }
      operations.append(
        .upsertMemory(
          try Representation.memoryRecord(item, decodedVector: vector),
          ifVersion: try item.optionalLSN("if_version")))
    }
    return try await execute(context, operations, fields)
  }

  func execute(_ context: BasicRequestContext, _ operations: [Operation], _ fields: JSONFields?) async throws
    -> JSONValue
  {
    let request = TransactionRequest(
      namespace: try parameter(context, "ns"), operations: operations,
      idempotencyKey: try fields?.optionalString("idempotency_key"),
      durability: try fields?.durability() ?? .local)
    return Representation.write(try await engine.execute(request))
  }

  func deleteOne(_ operation: Operation, _ request: Request, _ context: BasicRequestContext) async throws
    -> JSONValue
  {
    try authorize(request, .write, namespace: try parameter(context, "ns"))
    let query = query(request)
    var operation = operation
    if let version = try query.optionalLSN("if_version") {
      switch operation {
      case .deleteMemory(let id, _): operation = .deleteMemory(id: id, ifVersion: version)
      case .deleteNode(let id, _): operation = .deleteNode(id: id, ifVersion: version)
      case .deleteEdge(let id, _): operation = .deleteEdge(id: id, ifVersion: version)
      default: break
      }
    }
    return try await execute(context, [operation], query)
  }

  func getMemory(_ request: Request, _ context: BasicRequestContext) async throws -> JSONValue {
    try authorize(request, .read, namespace: try parameter(context, "ns"))
    let point = try await readPoint(query: query(request))
    let id = try parameter(context, "id")
    guard let memory = try engine.store.memory(id, in: try parameter(context, "ns"), at: point) else {
      throw APIError(.notFound, "not_found", "memory \(id) not found")
    }
    return Self.withLSN(point, ["memory": Representation.memory(memory)])
  }

  func search(_ request: Request, _ context: BasicRequestContext) async throws -> JSONValue {
    try authorize(request, .read, namespace: try parameter(context, "ns"))
    let fields = try await body(request)
    try fields.allowOnly([
      "vector", "vector_base64", "k", "filter", "ef", "include_vectors", "min_lsn", "as_of_lsn", "as_of_time",
    ])
    let point = try await readPoint(query: fields)
    let filter = try fields.fields["filter"].flatMap { value throws(APIError) -> Filter? in
      value == .null ? nil : try Representation.filter(value)
    }
    let includeVectors: Bool
    switch fields.fields["include_vectors"] {
    case nil, .null?: includeVectors = false
    case .bool(let flag)?: includeVectors = flag
    default: throw APIError.badRequest("include_vectors must be a boolean")
    }
    let (hits, path) = try engine.store.search(
      try fields.vector(), k: try fields.integer("k"), in: try parameter(context, "ns"),
      filter: filter,
      ef: try fields.optionalInteger("ef"), at: point)
    let results: [JSONValue] = hits.map { hit in
      guard case .object(var fields) = Representation.memory(hit.memory, includeVector: includeVectors) else {
        return .null
      }
      fields["distance"] = .number(Double(hit.distance))
      return .object(fields)
    }
    return Self.withLSN(point, ["results": .array(results), "search": .string(path.rawValue)])
  }

  // MARK: graph

  func upsertGraph(_ request: Request, _ context: BasicRequestContext, key: String) async throws -> JSONValue
  {
    try authorize(request, .write, namespace: try parameter(context, "ns"))
    let fields = try await body(request)
    try fields.allowOnly([key, "durability", "idempotency_key"])
    let values = try fields.array(key)
    guard !values.isEmpty, values.count <= limits.maximumBatch else {
      throw APIError.badRequest("\(key) must hold 1 to \(limits.maximumBatch) entries")
    }
    var operations: [Operation] = []
    for (index, value) in values.enumerated() {
      let path = "\(key)[\(index)]"
      let version = try Representation.ifVersion(value, path: path)
      operations.append(
        key == "nodes"
          ? .upsertNode(try Representation.graphNode(value, path: path), ifVersion: version)
          : .upsertEdge(try Representation.graphEdge(value, path: path), ifVersion: version))
    }
    return try await execute(context, operations, fields)
  }

  func getNode(_ request: Request, _ context: BasicRequestContext) async throws -> JSONValue {
    try authorize(request, .read, namespace: try parameter(context, "ns"))
    let point = try await readPoint(query: query(request))
    let id = try parameter(context, "id")
    guard let node = try engine.store.node(id, in: try parameter(context, "ns"), at: point) else {
      throw APIError(.notFound, "not_found", "node \(id) not found")
    }
    return Self.withLSN(point, ["node": Representation.node(node.node, version: node.version)])
  }

  func graphQuery(_ fields: JSONFields, typesKey: String) throws -> GraphQuery {
    var query = GraphQuery()
    if let direction = try fields.optionalString("direction") {
      guard let parsed = EdgeDirection(rawValue: direction) else {
        throw APIError.badRequest("direction must be out, in or both")
      }
      query.direction = parsed
    }
    switch fields.fields[typesKey] {
    case nil, .null?: break
    case .string(let single)?: query.edgeTypes = Set(single.split(separator: ",").map(String.init))
    case .array(let values)?:
      var types = Set<String>()
      for value in values {
        guard case .string(let type) = value else {
          throw APIError.badRequest("\(typesKey) must hold strings")
        }
        types.insert(type)
      }
      query.edgeTypes = types
    default: throw APIError.badRequest("\(typesKey) must be a string or an array of strings")
    }
    return query
  }

  func neighbors(_ request: Request, _ context: BasicRequestContext) async throws -> JSONValue {
    try authorize(request, .read, namespace: try parameter(context, "ns"))
    let query = query(request)
    let point = try await readPoint(query: query)
    let found = try engine.store.neighbors(
      of: try parameter(context, "id"), in: try parameter(context, "ns"),
      query: try graphQuery(query, typesKey: "type"), at: point)
    let items: [JSONValue] = found.map { neighbor in
      .object([
        "edge": Representation.edge(neighbor.edge.edge, version: neighbor.edge.version),
        "node": Representation.node(neighbor.node.node, version: neighbor.node.version),
      ])
    }
    return Self.withLSN(point, ["neighbors": .array(items)])
  }

  func traverse(_ request: Request, _ context: BasicRequestContext) async throws -> JSONValue {
    try authorize(request, .read, namespace: try parameter(context, "ns"))
    let fields = try await body(request)
    try fields.allowOnly([
      "start", "max_depth", "edge_types", "direction", "min_lsn", "as_of_lsn", "as_of_time",
    ])
    let point = try await readPoint(query: fields)
    let result = try engine.store.traverse(
      from: try fields.string("start"), in: try parameter(context, "ns"),
      maximumDepth: try fields.integer("max_depth"),
      query: try graphQuery(fields, typesKey: "edge_types"), at: point)
    let nodes: [JSONValue] = result.nodes.map { entry in
      guard case .object(var fields) = Representation.node(entry.node.node, version: entry.node.version)
      else { return .null }
      fields["depth"] = .number(Double(entry.depth))
      return .object(fields)
    }
    return Self.withLSN(
      point,
      [
        "nodes": .array(nodes),
        "edges": .array(result.edges.map { Representation.edge($0.edge, version: $0.version) }),
        "truncated": .bool(result.isTruncated),
      ])
  }

  func path(_ request: Request, _ context: BasicRequestContext) async throws -> JSONValue {
    try authorize(request, .read, namespace: try parameter(context, "ns"))
    let fields = try await body(request)
    try fields.allowOnly([
      "from", "to", "max_depth", "edge_types", "direction", "min_lsn", "as_of_lsn", "as_of_time",
    ])
    let point = try await readPoint(query: fields)
    let found = try engine.store.shortestPath(
      from: try fields.string("from"), to: try fields.string("to"), in: try parameter(context, "ns"),
      maximumDepth: try fields.integer("max_depth"), query: try graphQuery(fields, typesKey: "edge_types"),
      at: point)
    guard let found else { return Self.withLSN(point, ["path": .null]) }
    return Self.withLSN(
      point,
      [
        "path": .object([
          "nodes": .array(found.nodes.map { Representation.node($0.node, version: $0.version) }),
          "edges": .array(found.edges.map { Representation.edge($0.edge, version: $0.version) }),
        ])
      ])
  }

  // MARK: transactions and history

  func transaction(_ request: Request, _ context: BasicRequestContext) async throws -> JSONValue {
    try authorize(request, .write, namespace: try parameter(context, "ns"))
    let fields = try await body(request)
    try fields.allowOnly(["operations", "durability", "idempotency_key"])
    let values = try fields.array("operations")
    guard !values.isEmpty, values.count <= limits.maximumBatch else {
      throw APIError.badRequest("operations must hold 1 to \(limits.maximumBatch) entries")
    }
    var operations: [Operation] = []
    for (index, value) in values.enumerated() {
      let path = "operations[\(index)]"
      let entry = try JSONFields(value, path: path)
      let version = try entry.optionalLSN("if_version")
      let kind = try entry.string("op")
      func item(_ key: String) throws -> JSONValue {
        guard let nested = entry.fields[key] else {
          throw APIError.badRequest("\(path).\(key) is required for \(kind)")
        }
        return nested
      }
      switch kind {
      case "upsert_memory":
        try entry.allowOnly(["op", "memory", "if_version"])
        operations.append(
          .upsertMemory(
            try Representation.memoryRecord(try item("memory"), path: path + ".memory", allowsVersion: false),
            ifVersion: version))
      case "upsert_node":
        try entry.allowOnly(["op", "node", "if_version"])
        operations.append(
          .upsertNode(
            try Representation.graphNode(try item("node"), path: path + ".node", allowsVersion: false),
            ifVersion: version))
      case "upsert_edge":
        try entry.allowOnly(["op", "edge", "if_version"])
        operations.append(
          .upsertEdge(
            try Representation.graphEdge(try item("edge"), path: path + ".edge", allowsVersion: false),
            ifVersion: version))
      case "delete_memory", "delete_node", "delete_edge":
        try entry.allowOnly(["op", "id", "if_version"])
        let id = try entry.string("id")
        operations.append(
          kind == "delete_memory"
            ? .deleteMemory(id: id, ifVersion: version)
            : kind == "delete_node"
              ? .deleteNode(id: id, ifVersion: version) : .deleteEdge(id: id, ifVersion: version))
      default:
        throw APIError.badRequest(
          "\(path).op must be upsert_memory, delete_memory, upsert_node, delete_node, upsert_edge or delete_edge"
        )
      }
    }
    return try await execute(context, operations, fields)
  }

  func history(_ request: Request, _ context: BasicRequestContext) async throws -> JSONValue {
    try authorize(request, .read, namespace: try parameter(context, "ns"))
    let namespace = try parameter(context, "ns")
    let id = try parameter(context, "id")
    func entry<Value>(_ item: HistoryEntry<Value>, _ render: (Value) -> JSONValue) -> JSONValue {
      .object([
        "lsn": .number(Double(item.lsn.rawValue)), "time": .string(formatTimestamp(item.timestampMicros)),
        "transaction": .number(Double(item.transactionID.rawValue)),
        "operation": .string(item.after == nil ? "delete" : item.before == nil ? "insert" : "update"),
        "before": item.before.map(render) ?? .null, "after": item.after.map(render) ?? .null,
      ])
    }
    let entries: [JSONValue]
    switch try parameter(context, "kind") {
    case "memories":
      entries = try engine.store.memoryHistory(id, in: namespace).map { item in
        entry(item) {
          Representation.memory(
            StoredMemory(record: $0, version: item.lsn, timestampMicros: item.timestampMicros))
        }
      }
    case "nodes":
      entries = try engine.store.nodeHistory(id, in: namespace).map { entry($0) { Representation.node($0) } }
    case "edges":
      entries = try engine.store.edgeHistory(id, in: namespace).map { entry($0) { Representation.edge($0) } }
    default: throw APIError(.notFound, "not_found", "history is kept for memories, nodes and edges")
    }
    return .object(["history": .array(entries), "id": .string(id)])
  }
}
