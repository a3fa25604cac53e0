import Hummingbird
import HummingbirdTesting
import Logging
import MemWALCore
import MemWALLog
import MemWALNode
import MemWALServer
import NIOCore
import Testing

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Issue 7, bad input on the wire: a few thousand malformed requests from seeded generators
/// (APIFuzzGenerators.swift) against every write route and the search and traversal reads of one
/// node, over a real keep-alive connection. Each must be answered (no crash, no dropped connection,
/// no hang) with a 4xx and `{"error": {"code": …, "message": …}}`, and none may write: the written
/// LSN is checked after every request, the digest and the LSN after the run, and a valid write
/// still works at the end. `MEMWAL_API_FUZZ_SEED=N` replays (or tries) seed N;
/// `MEMWAL_API_FUZZ_TRACE=1` prints every request and its answer.
@Suite struct APIFuzzTests {
  static let defaultSeed: UInt64 = 7
  static let bodyLimit = 4 << 20
  static let probeMemory = #"{"memories":[{"id":"probe","vector":[1,0,0,0]}]}"#
  /// Every status the API refuses a request with (APIError.swift), 5xx excluded: none of those
  /// may come from bad input.
  static let refusals: Set<Int> = [400, 401, 403, 404, 405, 409, 410, 412, 413, 415, 422]

  static var seed: UInt64 {
    guard let text = getenv("MEMWAL_API_FUZZ_SEED"), let seed = UInt64(String(cString: text)) else {
      return defaultSeed
    }
    return seed
  }

  @Test func malformedRequestsAreRefusedAndChangeNothing() async throws {
    let seed = Self.seed
    try await Self.withNode { port, engine in
      let started = ContinuousClock.now
      var connection = FuzzConnection(port: port)
      try await Self.load(&connection)
      let before = try await Self.state(&connection)
      var report = FuzzReport(seed: seed)
      var random = SplitMix64(seed: seed)
      var written = engine.log.positions.written.value
      for generator in FuzzInputs.generators {
        for request in generator.make(&random) {
          report.record(request, await connection.send(request))
          let now = engine.log.positions.written.value
          if now != written {
            report.fail(request, "it wrote: the written LSN went from \(written) to \(now)")
            written = now
          }
        }
      }
      let after = try await Self.state(&connection)
      #expect(after == before, report.comment("the state changed: \(before) → \(after)"))
      let (status, body) = try await connection.call(
        .post, FuzzInputs.namespace + "/memories", Self.probeMemory)
      #expect(status == 200, report.comment("a valid write after the run: \(status) \(body.jsonText)"))
      let last = try await Self.state(&connection)
      #expect(last.writtenLSN == before.writtenLSN + 1, report.comment("the valid write is the only one"))
      await connection.close()
      print(report.summary(elapsed: ContinuousClock.now - started, reopened: connection.reopened))
    }
  }

  /// Regression (found by this fuzz): a time given as microseconds beyond Int64 (`"valid_to":
  /// 1e19`) trapped in `Int64(value)` and took the node down, and Int64.min was stored and would
  /// trap when printed; microseconds past what RFC 3339 can write are now 400.
  @Test func timesOutOfRangeAreRefused() async throws {
    try await APITests.withServer { api, engine in
      _ = try await api.call(.post, "/v1/namespaces", #"{"name":"n","dimension":2,"metric":"l2"}"#)
      _ = try await api.call(
        .post, "/v1/namespaces/n/graph/nodes", #"{"nodes":[{"id":"a","type":"t"},{"id":"b","type":"t"}]}"#)
      let written = engine.log.positions.written.value
      let edge = #"{"edges":[{"id":"e","from":"a","to":"b","type":"t","#
      for micros in [
        "1e19", "-1e19", "9223372036854775808", "-9223372036854775808", "1e300", "253402300800000000",
      ] {
        let cases = [
          ("graph/edges", edge + #""valid_to":\#(micros)}]}"#),
          ("graph/edges", edge + #""valid_from":\#(micros)}]}"#),
          ("memories", #"{"memories":[{"id":"m","vector":[1,2],"expires_at":\#(micros)}]}"#),
          ("search", #"{"vector":[1,2],"k":1,"as_of_time":\#(micros)}"#),
          ("graph/traverse", #"{"start":"a","max_depth":1,"as_of_time":\#(micros)}"#),
        ]
        for (route, body) in cases {
          let (status, response) = try await api.call(.post, "/v1/namespaces/n/\(route)", body)
          #expect(
            status == 400 && APITests.error(response) == "invalid_request",
            "\(body): \(status) \(response.jsonText)")
        }
      }
      #expect(engine.log.positions.written.value == written, "no refused time wrote anything")
    }
  }

  /// Path parameters are percent-decoded (found by this fuzz's `paths` generator: they were used as
  /// sent, so a record whose id needs escaping in a URL — `a b`, `user:42`, `café` — could not be
  /// read or deleted by its path, and MemWALClient, which escapes ids, could not reach it). A
  /// malformed escape is a 400 that names the parameter.
  @Test func percentEncodedIDsInPaths() async throws {
    try await APITests.withServer { api, _ in
      _ = try await api.call(.post, "/v1/namespaces", #"{"name":"n","dimension":2,"metric":"l2"}"#)
      let (status, body) = try await api.call(
        .post, "/v1/namespaces/n/memories",
        #"{"memories":[{"id":"a b","vector":[1,2]},{"id":"café 50%","vector":[2,1]}]}"#)
      #expect(status == 200, "\(body.jsonText)")
      let (found, memory) = try await api.call(.get, "/v1/namespaces/n/memories/a%20b?min_lsn=2")
      #expect(found == 200, "\(memory.jsonText)")
      let (other, otherBody) = try await api.call(.get, "/v1/namespaces/n/memories/caf%C3%A9%2050%25")
      #expect(other == 200, "\(otherBody.jsonText)")
      for bad in ["a%2", "a%zz", "%C3%28", "%"] {
        let (refused, error) = try await api.call(.get, "/v1/namespaces/n/memories/\(bad)")
        #expect(refused == 400, "\(bad): \(error.jsonText)")
        #expect(error.jsonText.contains("path parameter id"), "\(bad): \(error.jsonText)")
      }
    }
  }

  /// One node with the admin, reader and other-namespace tokens, on a free loopback port.
  static func withNode(_ body: @Sendable (Int, MemoryEngine) async throws -> Void) async throws {
    var options = MemoryEngine.Options()
    options.expiryInterval = nil
    options.maximumReadWait = .milliseconds(500)
    options.log.segmentBytes = 1 << 20
    options.log.maximumRecordBytes = 512 << 10
    let engine = try await MemoryEngine.open(
      directory: "/node", options: options, fileSystem: SimulatedFileSystem(), logger: quietLogger)
    var limits = API.Limits()
    limits.maximumBodyBytes = bodyLimit
    let tokens = [
      TokenGrant(
        name: "admin", sha256: TokenGrant.digest(of: FuzzInputs.adminToken), namespaces: ["*"], role: .admin),
      TokenGrant(
        name: "reader", sha256: TokenGrant.digest(of: FuzzInputs.readerToken), namespaces: ["agents"],
        role: .read),
      TokenGrant(
        name: "other", sha256: TokenGrant.digest(of: FuzzInputs.otherToken), namespaces: ["other"],
        role: .write),
    ]
    let app = Application(
      router: API(engine: engine, limits: limits, tokens: tokens).makeRouter(),
      configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: quietLogger)
    try await app.test(.live) { client in try await body(try #require(client.port), engine) }
    await engine.close()
  }

  /// The namespace `agents` (dimension 4) with memories, nodes and edges, written by the write
  /// templates (which proves them valid); the read templates must answer 200.
  static func load(_ connection: inout FuzzConnection) async throws {
    for template in FuzzInputs.writeTemplates(key: "setup", namespaceName: "agents") {
      let (status, body) = try await connection.call(.post, template.path, template.body.jsonText)
      try #require((200...201).contains(status), "setup \(template.name): \(status) \(body.jsonText)")
    }
    for template in FuzzInputs.readTemplates {
      let (status, body) = try await connection.call(.post, template.path, template.body.jsonText)
      try #require(status == 200, "setup \(template.name): \(status) \(body.jsonText)")
    }
  }

  struct NodeState: Equatable, CustomStringConvertible {
    var digest: JSONValue
    var writtenLSN: Int
    var description: String { "digest \(digest.jsonText), written LSN \(writtenLSN)" }
  }

  static func state(_ connection: inout FuzzConnection) async throws -> NodeState {
    let (digestStatus, digest) = try await connection.call(.get, "/v1/digest")
    let (statusStatus, status) = try await connection.call(.get, "/v1/status")
    try #require(digestStatus == 200 && statusStatus == 200, "\(digest.jsonText) \(status.jsonText)")
    return NodeState(digest: digest, writtenLSN: try #require(APITests.number(status, "written_lsn")))
  }
}

/// One keep-alive connection to the node, reopened when the server closes it after an answer.
struct FuzzConnection {
  let port: Int
  var client: TestClient
  /// Times the connection was reopened: after an answer with `Connection: close`, or after a
  /// request that got no answer (which is also a failure).
  var reopened = 0

  init(port: Int) {
    self.port = port
    client = Self.open(port)
  }

  /// How long a request may go unanswered before it counts as a hang.
  static let answerTimeout: Duration = .seconds(20)

  static func open(_ port: Int) -> TestClient {
    let client = TestClient(host: "127.0.0.1", port: port, configuration: .init(timeout: .seconds(60)))
    client.connect()
    return client
  }

  /// The answer to `request`, or the error in its place (a dropped connection, a timeout).
  mutating func send(_ request: FuzzRequest) async -> Result<TestClient.Response, any Error> {
    var headers = request.headers
    if let authorization = request.authorization { headers[.authorization] = authorization }
    let outgoing = TestClient.Request(
      request.path, method: request.method, authority: "localhost", headers: headers,
      body: request.body.map { ByteBuffer(bytes: $0) })
    let started = ContinuousClock.now
    do {
      // TestClient's own timeout still waits for the response, which a server that never answers
      // never sends: closing the channel fails the request instead.
      let channel = try await client.getChannel()
      let watchdog = Task {
        try await Task.sleep(for: Self.answerTimeout)
        try await channel.close()
      }
      defer { watchdog.cancel() }
      let response = try await client.execute(outgoing)
      if response.headers[.connection]?.lowercased() == "close" { await reopen() }
      return .success(response)
    } catch {
      await reopen()
      guard ContinuousClock.now - started < Self.answerTimeout else { return .failure(NoAnswer()) }
      return .failure(error)
    }
  }

  struct NoAnswer: Error, CustomStringConvertible {
    var description: String { "nothing within \(FuzzConnection.answerTimeout)" }
  }

  /// A well-formed request with the admin token; the status and the JSON body.
  mutating func call(_ method: HTTPRequest.Method, _ path: String, _ body: String? = nil) async throws
    -> (Int, JSONValue)
  {
    let request = FuzzRequest("setup", method, path, body: body.map { Array($0.utf8) })
    let response = try await send(request).get()
    let bytes = response.body.map { Array($0.readableBytesView) } ?? []
    return (response.status.code, try JSONParser.parse(bytes))
  }

  mutating func reopen() async {
    try? await client.shutdown()
    client = Self.open(port)
    reopened += 1
  }

  func close() async { try? await client.shutdown() }
}

/// What the run saw: requests per generator, statuses, and each failure (the first 30 recorded
/// as issues, each naming the seed).
struct FuzzReport {
  let seed: UInt64
  var requests: [(generator: String, count: Int)] = []
  var statuses: [Int: Int] = [:]
  var failures = 0

  func comment(_ message: String) -> Comment {
    Comment(rawValue: "seed \(seed) (replay with MEMWAL_API_FUZZ_SEED=\(seed)): \(message)")
  }

  let isTracing = getenv("MEMWAL_API_FUZZ_TRACE") != nil

  mutating func record(_ request: FuzzRequest, _ outcome: Result<TestClient.Response, any Error>) {
    if isTracing { print("\(request.generator): \(Self.describe(request)) → \(Self.describe(outcome))") }
    if requests.last?.generator == request.generator {
      requests[requests.count - 1].count += 1
    } else {
      requests.append((request.generator, 1))
    }
    if case .success(let response) = outcome { statuses[response.status.code, default: 0] += 1 }
    if let problem = Self.problem(request, outcome) { fail(request, problem) }
  }

  mutating func fail(_ request: FuzzRequest, _ problem: String) {
    failures += 1
    guard failures <= 30 else { return }
    Issue.record(comment("\(request.generator): \(Self.describe(request)) → \(problem)"))
  }

  /// What is wrong with the answer to `request`, or nil.
  static func problem(_ request: FuzzRequest, _ outcome: Result<TestClient.Response, any Error>) -> String? {
    let response: TestClient.Response
    switch outcome {
    case .failure(let error): return "no answer: \(error)"
    case .success(let answer): response = answer
    }
    let status = response.status.code
    let body = response.body.map { Array($0.readableBytesView) } ?? []
    let shown = "\(status) \(printable(body.prefix(300)))"
    if request.mayBeUnrouted, status == 404 || status == 405, body.isEmpty { return nil }
    if request.mayBeRefusedByHTTP, status == 400, body.isEmpty, response.headers[.connection] == "close" {
      return nil
    }
    guard let json = try? JSONParser.parse(body) else { return "\(shown): the body is not JSON" }
    if request.maySucceed, status == 200 { return nil }
    guard APIFuzzTests.refusals.contains(status) else { return "\(shown): not a refusal" }
    guard response.headers[.contentType] == "application/json" else {
      return "\(shown): Content-Type \(response.headers[.contentType] ?? "none")"
    }
    guard let code = APITests.error(json), !code.isEmpty else {
      return "\(shown): not {\"error\": {\"code\": …, \"message\": …}}"
    }
    if let expected = request.expectedCodes, !expected.contains(code) {
      return "\(shown): expected \(expected.sorted().joined(separator: " or "))"
    }
    return nil
  }

  static func describe(_ outcome: Result<TestClient.Response, any Error>) -> String {
    switch outcome {
    case .failure(let error): return "no answer: \(error)"
    case .success(let response):
      let body = response.body.map { Array($0.readableBytesView) } ?? []
      return "\(response.status.code) \(printable(body.prefix(300)))"
    }
  }

  static func describe(_ request: FuzzRequest) -> String {
    var text = "\(request.method) \(request.path.prefix(160))"
    if request.path.count > 160 { text += "…(\(request.path.utf8.count) bytes)" }
    if let authorization = request.authorization, authorization != "Bearer \(FuzzInputs.adminToken)" {
      text += " Authorization: \(authorization)"
    }
    for field in request.headers { text += " \(field.name): \(field.value)" }
    if let body = request.body { text += " body (\(body.count) bytes) \(printable(body.prefix(200)))" }
    return text
  }

  static func printable(_ bytes: ArraySlice<UInt8>) -> String {
    bytes.map { byte in
      (0x20..<0x7F).contains(byte)
        ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16).leftPadded(to: 2)
    }.joined()
  }

  func summary(elapsed: Duration, reopened: Int) -> String {
    let total = requests.reduce(0) { $0 + $1.count }
    let perGenerator = requests.map { "\($0.generator) \($0.count)" }.joined(separator: ", ")
    let perStatus = statuses.keys.sorted().map { "\($0)×\(statuses[$0]!)" }.joined(separator: " ")
    return
      "APIFuzzTests seed \(seed): \(total) requests in \(elapsed) (\(perGenerator)); statuses \(perStatus); "
      + "connection reopened \(reopened) times; \(failures) failures"
  }
}
