import Hummingbird
import Logging
import MemWALClient
import MemWALCore
import MemWALLog
import MemWALNode
import MemWALServer
import Synchronization
import Testing

let quietLogger = Logger(label: "quiet") { _ in SwiftLogNoOpLogHandler() }

/// Runs a node server on a free loopback port for the duration of `body`.
func withNode(tokens: [TokenGrant]? = nil, _ body: @Sendable (String) async throws -> Void) async throws {
  var options = MemoryEngine.Options()
  options.expiryInterval = nil
  options.log.segmentBytes = 1 << 20
  options.log.maximumRecordBytes = 512 << 10
  let engine = try await MemoryEngine.open(
    directory: "/node", options: options, fileSystem: SimulatedFileSystem(), logger: quietLogger)
  let (ports, continuation) = AsyncStream<Int>.makeStream()
  let application = NodeServer.makeApplication(
    engine: engine, host: "127.0.0.1", port: 0, tokens: tokens, logger: quietLogger
  ) { port in
    continuation.yield(port)
  }
  let server = Task { try await application.runService(gracefulShutdownSignals: []) }
  var iterator = ports.makeAsyncIterator()
  guard let port = await iterator.next() else { throw CancellationError() }
  do {
    try await body("http://127.0.0.1:\(port)")
  } catch {
    server.cancel()
    _ = await server.result
    await engine.close()
    throw error
  }
  server.cancel()
  _ = await server.result
  await engine.close()
}

@Suite struct ClientTests {
  @Test func readYourWritesAndEveryCall() async throws {
    try await withNode { url in
      let client = MemWALClient(baseURL: url)
      try await client.createNamespace("agents", dimension: 3, metric: .cosine)
      let written = try await client.upsert(
        [
          MemoryRecord(id: "a", vector: [1, 0, 0], text: "alpha", metadata: ["kind": .string("fact")]),
          MemoryRecord(id: "b", vector: [0, 1, 0]),
        ], in: "agents")
      #expect(written.durability == .local && client.lastWrittenLSN == written.lsn)
      // Read-your-writes: the read carries min_lsn, so it sees the write without any waiting here.
      let a = try #require(try await client.memory("a", in: "agents"))
      #expect(a.record.text == "alpha" && a.version == written.lsn)
      #expect(try await client.memory("missing", in: "agents") == nil)
      let hits = try await client.search([1, 0.1, 0], k: 1, in: "agents")
      #expect(hits.map(\.id) == ["a"])
      let filtered = try await client.search(
        [1, 0.1, 0], k: 2, in: "agents", filter: .object(["kind": .string("fact")]))
      #expect(filtered.map(\.id) == ["a"])
      #expect(try await client.namespaces().map(\.name) == ["agents"])

      try await client.upsert(
        nodes: [GraphNode(id: "x", type: "t"), GraphNode(id: "y", type: "t")], in: "agents")
      try await client.upsert(edges: [GraphEdge(id: "e", from: "x", to: "y", type: "rel")], in: "agents")
      #expect(try await client.neighbors(of: "x", in: "agents").map(\.node) == ["y"])
      #expect(try await client.node("x", in: "agents")?.type == "t")
      #expect(try await client.traverse(from: "x", in: "agents", maxDepth: 2).map(\.node) == ["x", "y"])
      #expect(try await client.path(from: "x", to: "y", in: "agents", maxDepth: 2) == ["x", "y"])
      try await client.deleteEdge("e", in: "agents")
      #expect(try await client.path(from: "x", to: "y", in: "agents", maxDepth: 2) == nil)
      #expect(try await client.history("edges", id: "e", in: "agents").count == 2)
      try await client.deleteNode("y", in: "agents")
      #expect(try await client.node("y", in: "agents") == nil)

      let repeated = try await client.transaction(
        [.object(["op": .string("delete_memory"), "id": .string("b")])], in: "agents", idempotencyKey: "k1")
      let again = try await client.transaction(
        [.object(["op": .string("delete_memory"), "id": .string("b")])], in: "agents", idempotencyKey: "k1")
      #expect(again.lsn == repeated.lsn && again.isRepeat)
      #expect(try await client.memory("b", in: "agents") == nil)
      #expect(try await client.memory("b", in: "agents", consistency: .asOfLSN(written.lsn)) != nil)

      do {
        try await client.upsert([MemoryRecord(id: "bad", vector: [1, 2])], in: "agents")
        Issue.record("a wrong dimension was accepted")
      } catch let error as MemWALClientError {
        #expect(error.status == 400 && error.code == "wrong_dimension")
      }
      let status = try await client.status()
      #expect(status.jsonText.contains(#""role":"primary""#))
    }
  }

  @Test func tokensTravelWithEveryRequest() async throws {
    let grant = TokenGrant(
      name: "admin", sha256: TokenGrant.digest(of: "secret"), namespaces: ["*"], role: .admin)
    try await withNode(tokens: [grant]) { url in
      let anonymous = MemWALClient(baseURL: url)
      await #expect(throws: MemWALClientError.self) {
        try await anonymous.createNamespace("n", dimension: 2, metric: .l2)
      }
      let client = MemWALClient(baseURL: url, token: "secret")
      try await client.createNamespace("n", dimension: 2, metric: .l2)
      #expect(try await client.namespaces().count == 1)
    }
  }
  /// Both encodings carry every component exactly (base64 by default, shortest decimal text on
  /// request), and a component that is not finite is refused before anything is sent.
  @Test func vectorsTravelExactlyInBothEncodings() async throws {
    try await withNode { url in
      var generator = SplitMix64(seed: 11)
      func vector() -> [Float] {
        var components: [Float] = [0, -0.0, .leastNonzeroMagnitude, .greatestFiniteMagnitude, 1e-7, 0.1]
        while components.count < 16 {
          let component = Float(bitPattern: UInt32(truncatingIfNeeded: generator.next()))
          if component.isFinite { components.append(component) }
        }
        return components
      }
      for encoding in [MemWALClient.VectorEncoding.base64, .json] {
        let client = MemWALClient(baseURL: url, vectorEncoding: encoding)
        let namespace = "n-\(encoding)"
        try await client.createNamespace(namespace, dimension: 16, metric: .l2)
        let memories = (0..<20).map { MemoryRecord(id: "m\($0)", vector: vector(), text: "t\($0)") }
        try await client.upsert(memories, in: namespace)
        for memory in memories {
          let read = try #require(try await client.memory(memory.id, in: namespace))
          #expect(read.record.vector.map(\.bitPattern) == memory.vector.map(\.bitPattern), "\(encoding)")
          #expect(read.record.text == memory.text)
        }
        let hits = try await client.search(memories[3].vector, k: 1, in: namespace)
        #expect(hits.map(\.id) == ["m3"] && hits.first?.distance == 0, "\(encoding)")

        var bad = vector()
        bad[5] = .nan
        let before = client.lastWrittenLSN
        await #expect(throws: MemWALClientError.self) {
          try await client.upsert([MemoryRecord(id: "bad", vector: bad)], in: namespace)
        }
        await #expect(throws: MemWALClientError.self) {
          _ = try await client.search(bad.map { $0.isNaN ? .infinity : $0 }, k: 1, in: namespace)
        }
        #expect(client.lastWrittenLSN == before)
        #expect(try await client.memory("bad", in: namespace) == nil)
      }
    }
  }
}
