import Hummingbird
import HummingbirdTesting
import Logging
import MemWALCore
import MemWALLog
import MemWALNode
import MemWALServer
import Testing

let quietLogger = Logger(label: "quiet") { _ in SwiftLogNoOpLogHandler() }

/// The API over real sockets (HummingbirdTesting's live client against the server on a free
/// loopback port), every route, with its error paths.
@Suite struct APITests {
  struct Client {
    let client: any TestClientProtocol

    func call(_ method: HTTPRequest.Method, _ uri: String, _ body: String? = nil, token: String? = nil)
      async throws
      -> (Int, JSONValue)
    {
      var headers = HTTPFields()
      if let token { headers[.authorization] = "Bearer \(token)" }
      return try await client.execute(
        uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }
      ) {
        response in
        let bytes = Array(response.body.readableBytesView)
        return (response.status.code, bytes.isEmpty ? .null : try JSONParser.parse(bytes))
      }
    }
  }

  static func withServer(
    tokens: [TokenGrant]? = nil, _ body: @Sendable (Client, MemoryEngine) async throws -> Void
  ) async throws {
    var options = MemoryEngine.Options()
    options.expiryInterval = nil
    options.log.segmentBytes = 1 << 20
    options.log.maximumRecordBytes = 512 << 10
    let engine = try await MemoryEngine.open(
      directory: "/node", options: options, fileSystem: SimulatedFileSystem(), logger: quietLogger)
    var limits = API.Limits()
    limits.maximumBodyBytes = 256 << 10
    let app = Application(
      router: API(engine: engine, limits: limits, tokens: tokens).makeRouter(),
      configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: quietLogger)
    try await app.test(.live) { client in try await body(Client(client: client), engine) }
    await engine.close()
  }

  static func error(_ value: JSONValue) -> String? {
    guard case .object(let top) = value, case .object(let error)? = top["error"],
      case .string(let code)? = error["code"],
      case .string(let message)? = error["message"], !message.isEmpty
    else { return nil }
    return code
  }

  static func number(_ value: JSONValue, _ key: String) -> Int? {
    guard case .object(let fields) = value, case .number(let number)? = fields[key] else { return nil }
    return Int(number)
  }

  @Test func namespacesMemoriesAndSearch() async throws {
    try await Self.withServer { api, engine in
      var (status, body) = try await api.call(
        .post, "/v1/namespaces", #"{"name":"agents","dimension":3,"metric":"cosine"}"#)
      #expect(status == 201 && Self.number(body, "lsn") == 1)
      (status, body) = try await api.call(
        .post, "/v1/namespaces", #"{"name":"agents","dimension":3,"metric":"cosine"}"#)
      #expect(status == 409 && Self.error(body) == "namespace_exists")
      (status, body) = try await api.call(.get, "/v1/namespaces?min_lsn=1")
      #expect(status == 200 && body.jsonText.contains(#""name":"agents""#))

      (status, body) = try await api.call(
        .post, "/v1/namespaces/agents/memories",
        #"{"memories":[{"id":"a","vector":[1,0,0],"text":"alpha","metadata":{"kind":"fact","n":1}},{"id":"b","vector":[0,1,0],"metadata":{"kind":"plan","n":5}}],"durability":"local"}"#
      )
      #expect(status == 200 && Self.number(body, "lsn") == 2)
      #expect(body.jsonText.contains(#""durability":"local""#))

      (status, body) = try await api.call(.get, "/v1/namespaces/agents/memories/a?min_lsn=2")
      #expect(status == 200 && body.jsonText.contains(#""text":"alpha""#) && Self.number(body, "lsn") == 2)
      (status, body) = try await api.call(.get, "/v1/namespaces/agents/memories/zzz?min_lsn=2")
      #expect(status == 404 && Self.error(body) == "not_found")

      (status, body) = try await api.call(
        .post, "/v1/namespaces/agents/search", #"{"vector":[0.9,0.2,0],"k":1,"min_lsn":2}"#)
      #expect(status == 200 && body.jsonText.contains(#""id":"a""#) && !body.jsonText.contains(#""id":"b""#))
      (status, body) = try await api.call(
        .post, "/v1/namespaces/agents/search",
        #"{"vector":[0.9,0.2,0],"k":2,"filter":{"n":{"gte":2}},"include_vectors":true}"#)
      #expect(status == 200 && body.jsonText.contains(#""id":"b""#) && !body.jsonText.contains(#""id":"a""#))
      #expect(body.jsonText.contains(#""vector":[0,1,0]"#))

      // as_of: memory a before and after an update.
      (status, body) = try await api.call(
        .post, "/v1/namespaces/agents/memories",
        #"{"memories":[{"id":"a","vector":[0,0,1],"text":"changed"}]}"#)
      let updateLSN = try #require(Self.number(body, "lsn"))
      (status, body) = try await api.call(.get, "/v1/namespaces/agents/memories/a?min_lsn=\(updateLSN)")
      #expect(body.jsonText.contains(#""text":"changed""#))
      (status, body) = try await api.call(
        .get, "/v1/namespaces/agents/memories/a?min_lsn=\(updateLSN)&as_of_lsn=2")
      #expect(status == 200 && body.jsonText.contains(#""text":"alpha""#) && Self.number(body, "lsn") == 2)
      (status, body) = try await api.call(.get, "/v1/namespaces/agents/memories/a?as_of_lsn=999999")
      #expect(status == 400 && Self.error(body) == "not_yet_applied")

      (status, body) = try await api.call(
        .get, "/v1/namespaces/agents/history/memories/a?min_lsn=\(updateLSN)")
      #expect(
        status == 200 && body.jsonText.contains(#""operation":"update""#)
          && body.jsonText.contains(#""operation":"insert""#))

      (status, body) = try await api.call(.delete, "/v1/namespaces/agents/memories/b")
      #expect(status == 200)
      (status, body) = try await api.call(.delete, "/v1/namespaces/agents/memories/b")
      #expect(status == 404)
      (status, body) = try await api.call(.get, "/v1/status")
      #expect(status == 200 && body.jsonText.contains(#""role":"primary""#))
      (status, body) = try await api.call(.get, "/healthz")
      #expect(status == 200)
      (status, body) = try await api.call(.delete, "/v1/namespaces/agents")
      #expect(status == 200)
      (status, body) = try await api.call(.delete, "/v1/namespaces/agents")
      #expect(status == 404 && Self.error(body) == "unknown_namespace")
      _ = engine
    }
  }

  @Test func graphAndTransactions() async throws {
    try await Self.withServer { api, _ in
      _ = try await api.call(.post, "/v1/namespaces", #"{"name":"g","dimension":2,"metric":"l2"}"#)
      var (status, body) = try await api.call(
        .post, "/v1/namespaces/g/graph/nodes",
        #"{"nodes":[{"id":"alice","type":"person"},{"id":"bob","type":"person"},{"id":"paris","type":"city"}]}"#
      )
      #expect(status == 200)
      (status, body) = try await api.call(
        .post, "/v1/namespaces/g/graph/edges",
        #"{"edges":[{"id":"k","from":"alice","to":"bob","type":"knows"},{"id":"v","from":"bob","to":"paris","type":"visited","valid_from":"2024-01-01T00:00:00Z"}]}"#
      )
      #expect(status == 200)
      let lsn = try #require(Self.number(body, "lsn"))
      (status, body) = try await api.call(
        .get, "/v1/namespaces/g/graph/nodes/bob/neighbors?direction=both&min_lsn=\(lsn)")
      #expect(
        status == 200 && body.jsonText.contains(#""id":"alice""#) && body.jsonText.contains(#""id":"paris""#))
      (status, body) = try await api.call(.get, "/v1/namespaces/g/graph/nodes/bob/neighbors?type=visited")
      #expect(body.jsonText.contains(#""id":"paris""#) && !body.jsonText.contains(#""id":"alice""#))
      (status, body) = try await api.call(
        .post, "/v1/namespaces/g/graph/traverse", #"{"start":"alice","max_depth":2}"#)
      #expect(status == 200 && body.jsonText.contains(#""depth":2"#))
      (status, body) = try await api.call(
        .post, "/v1/namespaces/g/graph/traverse", #"{"start":"alice","max_depth":99}"#)
      #expect(status == 400 && Self.error(body) == "limit_exceeded")
      (status, body) = try await api.call(
        .post, "/v1/namespaces/g/graph/path", #"{"from":"alice","to":"paris","max_depth":3}"#)
      #expect(status == 200 && body.jsonText.contains(#""id":"paris""#))
      (status, body) = try await api.call(
        .post, "/v1/namespaces/g/transactions",
        #"{"operations":[{"op":"upsert_memory","memory":{"id":"m","vector":[1,2]},"if_version":0},{"op":"delete_node","id":"paris"}],"idempotency_key":"t1"}"#
      )
      #expect(status == 200)
      let first = Self.number(body, "lsn")
      (status, body) = try await api.call(
        .post, "/v1/namespaces/g/transactions",
        #"{"operations":[{"op":"upsert_memory","memory":{"id":"m","vector":[1,2]},"if_version":0},{"op":"delete_node","id":"paris"}],"idempotency_key":"t1"}"#
      )
      #expect(status == 200 && Self.number(body, "lsn") == first && body.jsonText.contains(#""repeat":true"#))
      // The same key with other operations: refused, nothing written; the memory keeps its value.
      (status, body) = try await api.call(
        .post, "/v1/namespaces/g/transactions",
        #"{"operations":[{"op":"upsert_memory","memory":{"id":"m","vector":[5,6]}}],"idempotency_key":"t1"}"#)
      #expect(status == 422 && Self.error(body) == "idempotency_key_reused", "\(body.jsonText)")
      #expect(body.jsonText.contains("LSN \(first ?? 0)"), "the message names the first use")
      (status, body) = try await api.call(.get, "/v1/namespaces/g/memories/m?min_lsn=\(first ?? 0)")
      #expect(status == 200 && body.jsonText.contains("[1,2]"), "\(body.jsonText)")
      (status, body) = try await api.call(
        .post, "/v1/namespaces/g/transactions",
        #"{"operations":[{"op":"upsert_memory","memory":{"id":"m","vector":[3,4]},"if_version":0}]}"#)
      #expect(status == 412 && Self.error(body) == "version_mismatch")
      (status, body) = try await api.call(.get, "/v1/namespaces/g/graph/nodes/paris?min_lsn=\(first ?? 0)")
      #expect(status == 404)
      (status, body) = try await api.call(.get, "/v1/namespaces/g/history/edges/v")
      #expect(
        status == 200 && body.jsonText.contains(#""operation":"delete""#), "deleting a node deleted its edge")
      (status, body) = try await api.call(.delete, "/v1/namespaces/g/graph/edges/k")
      #expect(status == 200)
    }
  }

  @Test func badRequestsGetClearErrorsAndChangeNothing() async throws {
    try await Self.withServer { api, engine in
      _ = try await api.call(.post, "/v1/namespaces", #"{"name":"n","dimension":2,"metric":"dot"}"#)
      let written = engine.log.positions.written.value
      let cases: [(HTTPRequest.Method, String, String, Int, String)] = [
        (.post, "/v1/namespaces/n/memories", "{not json", 400, "malformed_json"),
        (
          .post, "/v1/namespaces/n/memories", #"{"memories":[{"id":"x","vector":[1,2,3]}]}"#, 400,
          "wrong_dimension"
        ),
        (
          .post, "/v1/namespaces/nope/memories", #"{"memories":[{"id":"x","vector":[1,2]}]}"#, 404,
          "unknown_namespace"
        ),
        (
          .post, "/v1/namespaces/n/memories", #"{"memories":[{"id":"x","vector":[1,"a"]}]}"#, 400,
          "invalid_request"
        ),
        (
          .post, "/v1/namespaces/n/memories", #"{"memories":[{"id":"x","vector":[1,1e300]}]}"#, 400,
          "invalid_request"
        ),
        (
          .post, "/v1/namespaces/n/memories", #"{"memories":[{"id":"x","vector":[1,2],"colour":"red"}]}"#,
          400, "invalid_request"
        ),
        (.post, "/v1/namespaces/n/memories", #"{"memories":[]}"#, 400, "invalid_request"),
        (
          .post, "/v1/namespaces/n/memories",
          #"{"memories":[{"id":"x","vector":[1,2]}],"durability":"eventually"}"#, 400, "invalid_request"
        ),
        (.post, "/v1/namespaces/n/search", #"{"vector":[1,2],"k":0}"#, 400, "limit_exceeded"),
        (
          .post, "/v1/namespaces/n/search", #"{"vector":[1,2],"k":3,"filter":{"a":{"between":[1,2]}}}"#, 400,
          "invalid_request"
        ),
        (.post, "/v1/namespaces", #"{"name":"m","dimension":0,"metric":"dot"}"#, 400, "invalid_request"),
        (
          .post, "/v1/namespaces", #"{"name":"m","dimension":2,"metric":"manhattan"}"#, 400, "invalid_request"
        ),
        (
          .post, "/v1/namespaces/n/graph/edges", #"{"edges":[{"id":"e","from":"a","to":"b","type":"t"}]}"#,
          400, "missing_endpoint"
        ),
        (.post, "/v1/namespaces/n/memories", String(repeating: "[", count: 5_000), 400, "malformed_json"),
        (
          .post, "/v1/namespaces/n/memories",
          #"{"memories":[{"id":"x","vector":[1,2],"text":""# + String(repeating: "x", count: 300_000)
            + #""}]}"#, 413, "payload_too_large"
        ),
      ]
      for (method, uri, body, expectedStatus, expectedCode) in cases {
        let (status, response) = try await api.call(method, uri, body)
        #expect(
          status == expectedStatus && Self.error(response) == expectedCode,
          "\(uri) \(body.prefix(80)): \(status) \(response.jsonText.prefix(200))")
      }
      #expect(engine.log.positions.written.value == written, "no bad request wrote anything")
    }
  }

  @Test func vectorsAsBase64() async throws {
    try await Self.withServer { api, engine in
      _ = try await api.call(.post, "/v1/namespaces", #"{"name":"n","dimension":2,"metric":"l2"}"#)
      // [0.1, -2.5] as little-endian float32, and [1, 0] the same way.
      let encoded = VectorBase64.text([0.1, -2.5])
      var (status, body) = try await api.call(
        .post, "/v1/namespaces/n/memories",
        #"{"memories":[{"id":"a","vector_base64":"\#(encoded)"},{"id":"b","vector":[1,0]}]}"#)
      #expect(status == 200, "\(body.jsonText)")
      (status, body) = try await api.call(.get, "/v1/namespaces/n/memories/a?min_lsn=2")
      guard case .object(let top) = body, case .object(let memory)? = top["memory"] else {
        Issue.record("\(body.jsonText)")
        return
      }
      #expect(memory["vector"] == .array([.number(Double(Float(0.1))), .number(-2.5)]))
      (status, body) = try await api.call(
        .post, "/v1/namespaces/n/search",
        #"{"vector_base64":"\#(VectorBase64.text([1, 0]))","k":1,"min_lsn":2}"#)
      #expect(status == 200 && body.jsonText.contains(#""id":"b""#), "\(body.jsonText)")

      let written = engine.log.positions.written.value
      let nan = VectorBase64.text([1, .nan])
      let cases: [(String, String, Int, String, String)] = [
        (
          "memories", #"{"memories":[{"id":"x","vector_base64":"\#(VectorBase64.text([1, 2, 3]))"}]}"#, 400,
          "wrong_dimension", "holds 2-dimensional vectors; got 3"
        ),
        (
          "memories", #"{"memories":[{"id":"x","vector_base64":"AACAPwAAAEAA"}]}"#, 400, "invalid_request",
          "memories[0].vector_base64 decodes to 9 bytes"
        ),
        (
          "memories", #"{"memories":[{"id":"x","vector_base64":"AACAPwAA*EA="}]}"#, 400, "invalid_request",
          "memories[0].vector_base64 is not base64 at character 8"
        ),
        (
          "memories", #"{"memories":[{"id":"x","vector_base64":"AACAPwAAAE"}]}"#, 400, "invalid_request",
          "memories[0].vector_base64 is 10 characters long"
        ),
        (
          "memories", #"{"memories":[{"id":"x","vector_base64":"\#(nan)"}]}"#, 400, "invalid_request",
          "memories[0].vector_base64 component 1 is nan"
        ),
        (
          "memories", #"{"memories":[{"id":"x","vector_base64":7}]}"#, 400, "invalid_request",
          "memories[0].vector_base64 must be a string"
        ),
        (
          "memories", #"{"memories":[{"id":"x","vector":[1,2],"vector_base64":"\#(encoded)"}]}"#, 400,
          "invalid_request", "give memories[0].vector or memories[0].vector_base64, not both"
        ),
        (
          "memories", #"{"memories":[{"id":"x","vector":[1,"2"],"vector_base64":"\#(encoded)"}]}"#, 400,
          "invalid_request", "not both"
        ),
        (
          "memories", #"{"memories":[{"id":"x"}]}"#, 400, "invalid_request",
          "memories[0].vector must be an array of numbers"
        ),
        (
          "memories", #"{"memories":[{"id":"x","vector":[1,2],"vector":[1,2]}]}"#, 400, "malformed_json",
          "duplicate key"
        ),
        (
          "search", #"{"vector_base64":"\#(nan)","k":1}"#, 400, "invalid_request", "vector_base64 component 1"
        ),
      ]
      for (route, request, expectedStatus, expectedCode, expectedMessage) in cases {
        let (status, response) = try await api.call(.post, "/v1/namespaces/n/\(route)", request)
        var message = ""
        if case .object(let top) = response, case .object(let error)? = top["error"],
          case .string(let text)? = error["message"]
        {
          message = text
        }
        #expect(
          status == expectedStatus && Self.error(response) == expectedCode
            && message.contains(expectedMessage),
          "\(request.prefix(80)): \(status) \(response.jsonText.prefix(200))")
      }
      #expect(engine.log.positions.written.value == written, "no bad request wrote anything")
    }
  }
}
