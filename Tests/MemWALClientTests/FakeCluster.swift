import Hummingbird
import MemWALCore
import Synchronization

/// The log the fake nodes share, as replication would: a keyed write that landed on one node is
/// known to every node, so a repeat of its key answers with the first outcome.
final class FakeLedger: Sendable {
  struct Entry: Sendable, Equatable {
    var lsn: UInt64
    var epoch: UInt64
    var node: String
  }

  private let state = Mutex<(lastLSN: UInt64, keys: [String: Entry], writes: [Entry])>((0, [:], []))

  /// Logs a write (or finds the first one with the same key): its entry and whether it repeats one.
  func log(key: String?, epoch: UInt64, node: String) -> (entry: Entry, isRepeat: Bool) {
    state.withLock { state in
      if let key, let first = state.keys[key] { return (first, true) }
      state.lastLSN += 1
      let entry = Entry(lsn: state.lastLSN, epoch: epoch, node: node)
      if let key { state.keys[key] = entry }
      state.writes.append(entry)
      return (entry, false)
    }
  }

  /// Every write logged, in order.
  var writes: [Entry] { state.withLock { $0.writes } }
}

/// How a fake node answers a write.
enum FakeWriteBehaviour: Sendable {
  /// Logs it and acknowledges it (a primary).
  case acknowledge
  /// `307` to the same path on `primary`, as a follower does.
  case redirect(primary: String)
  /// `503 not_primary` without a primary (a fenced primary, a follower during an election).
  case notPrimary
  /// Logs it, then answers `503` with `code` (`indeterminate`, `insufficient_replicas`).
  case logThenFail(code: String)
  /// Logs it and never answers (until the node stops).
  case logThenHang
  /// A definite refusal (`4xx`): nothing logged.
  case refuse(status: Int, code: String)
}

/// A fake MemWAL node (or, with `role` nil, a failover controller) on a loopback port: `GET
/// /v1/cluster`, `POST …/memories` and `GET …/memories/{id}`, each answering from a state the test
/// changes as it goes.
final class FakeNode: Sendable {
  struct State: Sendable {
    /// "primary", "follower", or nil for a controller (no role in its answer).
    var role: String?
    var epoch: UInt64 = 1
    /// The primary's address as this node names it.
    var primary: String?
    var members: [String] = []
    var writes: FakeWriteBehaviour = .acknowledge
    /// The idempotency key of every write received ("" for none).
    var writeKeys: [String] = []
    var clusterRequests = 0
    /// The `min_lsn` of every read received ("" for none).
    var readMinLSNs: [String] = []
  }

  let name: String
  let url: String
  let state: Mutex<State>
  private let server: Task<Void, any Error>
  /// Requests waiting for the node to stop (`logThenHang`); nil once it has.
  private let hanging = Mutex<[CheckedContinuation<Void, Never>]?>([])

  private init(name: String, url: String, role: String?, server: Task<Void, any Error>) {
    self.name = name
    self.url = url
    self.state = Mutex(State(role: role))
    self.server = server
  }

  var snapshot: State { state.withLock { $0 } }

  func update(_ change: (inout State) -> Void) { state.withLock { change(&$0) } }

  /// Starts a node on a free loopback port.
  static func start(_ name: String, role: String?, ledger: FakeLedger) async throws -> FakeNode {
    let holder = NodeHolder()
    let router = Router(context: BasicRequestContext.self)
    router.get("/v1/cluster") { _, _ in holder.node!.clusterAnswer() }
    router.post("/v1/namespaces/{ns}/memories") { request, _ in
      try await holder.node!.write(request, ledger: ledger)
    }
    router.get("/v1/namespaces/{ns}/memories/{id}") { request, context in
      holder.node!.read(request, id: context.parameters.get("id") ?? "")
    }
    let (ports, continuation) = AsyncStream<Int>.makeStream()
    let application = Application(
      router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
      onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) }, logger: quietLogger
    )
    let server = Task { try await application.runService(gracefulShutdownSignals: []) }
    var iterator = ports.makeAsyncIterator()
    guard let port = await iterator.next(), port > 0 else {
      server.cancel()
      throw CancellationError()
    }
    let node = FakeNode(name: name, url: "http://127.0.0.1:\(port)", role: role, server: server)
    holder.node = node
    return node
  }

  /// Stops the server: hanging requests are released, then new connections are refused.
  func stop() async {
    let waiting = hanging.withLock { waiting -> [CheckedContinuation<Void, Never>] in
      defer { waiting = nil }
      return waiting ?? []
    }
    for continuation in waiting { continuation.resume() }
    server.cancel()
    _ = await server.result
  }

  private func clusterAnswer() -> Response {
    let state = self.state.withLock { state in
      state.clusterRequests += 1
      return state
    }
    var fields: JSONObject = [
      "cluster": .string("fake"), "epoch": .number(Double(state.epoch)),
      "primary": state.primary.map { .object(["name": .string("p"), "api": .string($0)]) } ?? .null,
      "members": .array(
        state.members.enumerated().map { index, api in
          .object(["name": .string("n\(index)"), "api": .string(api)])
        }),
    ]
    if let role = state.role {
      fields["role"] = .string(role)
      fields["node"] = .string(name)
    }
    return Self.json(.object(fields))
  }

  private func write(_ request: Request, ledger: FakeLedger) async throws -> Response {
    var request = request
    let body = try await request.collectBody(upTo: 1 << 20)
    var key: String?
    var durability = "local"
    if case .object(let fields)? = try? JSONParser.parse(Array(body.readableBytesView)) {
      if case .string(let text)? = fields["idempotency_key"] { key = text }
      if case .string(let text)? = fields["durability"] { durability = text }
    }
    let (behaviour, epoch) = state.withLock { state in
      state.writeKeys.append(key ?? "")
      return (state.writes, state.epoch)
    }
    switch behaviour {
    case .acknowledge:
      let (entry, isRepeat) = ledger.log(key: key, epoch: epoch, node: name)
      var fields: JSONObject = [
        "lsn": .number(Double(entry.lsn)), "epoch": .number(Double(entry.epoch)),
        "durability": .string(durability),
      ]
      if isRepeat { fields["repeat"] = .bool(true) }
      return Self.json(.object(fields))
    case .redirect(let primary):
      var response = Self.json(
        .object([
          "error": .object([
            "code": .string("not_primary"), "message": .string("a follower"), "primary": .string(primary),
          ])
        ]), status: 307)
      response.headers[.location] = primary + request.uri.description
      return response
    case .notPrimary:
      return Self.error(503, "not_primary")
    case .logThenFail(let code):
      _ = ledger.log(key: key, epoch: epoch, node: name)
      return Self.error(503, code)
    case .refuse(let status, let code):
      return Self.error(status, code)
    case .logThenHang:
      _ = ledger.log(key: key, epoch: epoch, node: name)
      await withCheckedContinuation { continuation in
        let isStopped = hanging.withLock { waiting -> Bool in
          guard waiting != nil else { return true }
          waiting!.append(continuation)
          return false
        }
        if isStopped { continuation.resume() }
      }
      return Self.error(503, "shutting_down")
    }
  }

  private func read(_ request: Request, id: String) -> Response {
    let minLSN = request.uri.queryParameters["min_lsn"].map(String.init) ?? ""
    state.withLock { $0.readMinLSNs.append(minLSN) }
    return Self.json(
      .object([
        "memory": .object([
          "id": .string(id), "vector": .array([.number(1), .number(0)]), "metadata": .object([:]),
          "version": .number(1), "text": .string(name),
        ])
      ]))
  }

  static func json(_ value: JSONValue, status: Int = 200) -> Response {
    Response(
      status: .init(code: status), headers: [.contentType: "application/json"],
      body: ResponseBody(byteBuffer: ByteBuffer(string: value.jsonText)))
  }

  static func error(_ status: Int, _ code: String) -> Response {
    json(
      .object(["error": .object(["code": .string(code), "message": .string("fake \(code)")])]), status: status
    )
  }
}

/// Lets the router's handlers reach the node made after the router.
private final class NodeHolder: @unchecked Sendable {
  // Written once, before the server answers its first request.
  var node: FakeNode?
}

/// A set of fake nodes that share one ledger; `stopAll` stops every one started.
final class FakeCluster: Sendable {
  let ledger = FakeLedger()
  private let nodes = Mutex<[FakeNode]>([])

  func start(_ name: String, role: String?) async throws -> FakeNode {
    let node = try await FakeNode.start(name, role: role, ledger: ledger)
    nodes.withLock { $0.append(node) }
    return node
  }

  func stopAll() async {
    for node in nodes.withLock({ $0 }) { await node.stop() }
  }
}

/// Runs `body` with a fresh fake cluster and stops every node it started, whatever happens.
func withFakeCluster(_ body: (FakeCluster) async throws -> Void) async throws {
  let cluster = FakeCluster()
  do {
    try await body(cluster)
  } catch {
    await cluster.stopAll()
    throw error
  }
  await cluster.stopAll()
}

/// Waits until `condition` holds, polling every few milliseconds; fails after `timeout`.
func eventually(
  _ what: String, timeout: Duration = .seconds(10), _ condition: () async throws -> Bool
) async throws {
  let deadline = ContinuousClock.now + timeout
  while try await !condition() {
    guard ContinuousClock.now < deadline else {
      throw MemWALTestTimeout(what: what)
    }
    try await Task.sleep(for: .milliseconds(5))
  }
}

struct MemWALTestTimeout: Error, CustomStringConvertible {
  var what: String
  var description: String { "timed out waiting for \(what)" }
}
