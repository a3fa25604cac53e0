import MemWALCore
import MemWALLog
import MemWALNode
import MemWALStore
import Testing

@Suite struct EngineTests {
  static func open(_ disk: SimulatedFileSystem, clock: TestClock) async throws -> MemoryEngine {
    try await MemoryEngine.open(
      directory: "/node", options: engineOptions(clock: clock), fileSystem: disk, logger: quietLogger)
  }

  @Test func writesAreReadBackAfterApply() async throws {
    let clock = TestClock()
    let engine = try await Self.open(SimulatedFileSystem(), clock: clock)
    _ = try await engine.createNamespace(NamespaceConfig(name: "agents", dimension: 3, metric: .cosine))
    let first = try await engine.execute(
      TransactionRequest(
        namespace: "agents",
        operations: [
          .upsertMemory(
            MemoryRecord(id: "a", vector: [1, 0, 0], text: "alpha", metadata: ["kind": .string("fact")])),
          .upsertMemory(MemoryRecord(id: "b", vector: [0, 1, 0], metadata: ["kind": .string("plan")])),
          .upsertNode(GraphNode(id: "alice", type: "person")),
          .upsertNode(GraphNode(id: "paris", type: "city")),
          .upsertEdge(GraphEdge(id: "e1", from: "alice", to: "paris", type: "visited")),
        ]))
    #expect(first.durability == .local && first.lsn == LSN(2))
    try await engine.waitForApplied(first.lsn)
    let point = engine.latestReadPoint()
    let a = try #require(try engine.store.memory("a", in: "agents", at: point))
    #expect(a.record.text == "alpha" && a.version == first.lsn)
    let (hits, _) = try engine.store.search([0.9, 0.1, 0], k: 1, in: "agents", at: point)
    #expect(hits.map(\.id) == ["a"])
    let filtered = try engine.store.search(
      [0.9, 0.1, 0], k: 2, in: "agents", filter: .equals(field: "kind", value: .string("plan")), at: point)
    #expect(filtered.hits.map(\.id) == ["b"])
    #expect(try engine.store.neighbors(of: "alice", in: "agents", at: point).map(\.node.node.id) == ["paris"])

    // Deleting a node deletes its edges in the same transaction.
    let deletion = try await engine.execute(
      TransactionRequest(namespace: "agents", operations: [.deleteNode(id: "paris")]))
    try await engine.waitForApplied(deletion.lsn)
    let after = engine.latestReadPoint()
    #expect(try engine.store.edge("e1", in: "agents", at: after) == nil)
    #expect(try engine.store.neighbors(of: "alice", in: "agents", at: after).isEmpty)
    let history = try engine.store.edgeHistory("e1", in: "agents")
    #expect(history.map(\.lsn) == [first.lsn, deletion.lsn])
    #expect(history.last?.before?.to == "paris" && history.last?.after == nil)
    await engine.close()
  }

  @Test func preconditionsAndIdempotency() async throws {
    let clock = TestClock()
    let engine = try await Self.open(SimulatedFileSystem(), clock: clock)
    _ = try await engine.createNamespace(NamespaceConfig(name: "n", dimension: 2, metric: .l2))
    let memory = MemoryRecord(id: "x", vector: [1, 2])
    let created = try await engine.execute(
      TransactionRequest(namespace: "n", operations: [.upsertMemory(memory, ifVersion: .zero)]))
    await #expect(
      throws: WriteError.versionMismatch(target: .memory, id: "x", expected: .zero, actual: created.lsn)
    ) {
      try await engine.execute(
        TransactionRequest(namespace: "n", operations: [.upsertMemory(memory, ifVersion: .zero)]))
    }
    let updated = try await engine.execute(
      TransactionRequest(
        namespace: "n",
        operations: [.upsertMemory(MemoryRecord(id: "x", vector: [3, 4]), ifVersion: created.lsn)]))
    #expect(updated.lsn > created.lsn)

    let keyed = TransactionRequest(
      namespace: "n", operations: [.upsertMemory(MemoryRecord(id: "y", vector: [0, 1]))],
      idempotencyKey: "req-1")
    let once = try await engine.execute(keyed)
    let again = try await engine.execute(keyed)
    #expect(again.lsn == once.lsn && again.isRepeat && !once.isRepeat)
    try await engine.waitForApplied(once.lsn)
    let afterApply = try await engine.execute(keyed)
    #expect(afterApply.lsn == once.lsn && afterApply.isRepeat)
    #expect(engine.log.positions.written.value == once.lsn, "repeats write nothing")
    await engine.close()
  }

  @Test func badInputIsRefusedAndChangesNothing() async throws {
    let clock = TestClock()
    let engine = try await Self.open(SimulatedFileSystem(), clock: clock)
    _ = try await engine.createNamespace(NamespaceConfig(name: "n", dimension: 3, metric: .cosine))
    let base = try await engine.execute(
      TransactionRequest(
        namespace: "n",
        operations: [.upsertNode(GraphNode(id: "a", type: "t")), .upsertNode(GraphNode(id: "b", type: "t"))]))
    try await engine.waitForApplied(base.lsn)
    let digest = try engine.store.digest()
    let written = engine.log.positions.written.value
    let bad: [(TransactionRequest, WriteError)] = [
      (
        TransactionRequest(
          namespace: "n", operations: [.upsertMemory(MemoryRecord(id: "m", vector: [1, 2]))]),
        .invalid(.dimensionMismatch(namespace: "n", expected: 3, got: 2))
      ),
      (
        TransactionRequest(
          namespace: "nope", operations: [.upsertMemory(MemoryRecord(id: "m", vector: [1, 2, 3]))]),
        .unknownNamespace("nope")
      ),
      (
        TransactionRequest(namespace: "n", operations: [.deleteMemory(id: "ghost")]),
        .notFound(target: .memory, id: "ghost")
      ),
      (
        TransactionRequest(
          namespace: "n", operations: [.upsertEdge(GraphEdge(id: "e", from: "a", to: "zz", type: "t"))]),
        .missingEndpoint(edge: "e", node: "zz")
      ),
    ]
    for (request, expected) in bad {
      await #expect(throws: expected) { try await engine.execute(request) }
    }
    let nan = TransactionRequest(
      namespace: "n", operations: [.upsertMemory(MemoryRecord(id: "m", vector: [1, .nan, 0]))])
    await #expect(throws: WriteError.self) { try await engine.execute(nan) }
    let inf = TransactionRequest(
      namespace: "n", operations: [.upsertMemory(MemoryRecord(id: "m", vector: [1, .infinity, 0]))])
    await #expect(throws: WriteError.self) { try await engine.execute(inf) }
    let huge = JSONObject(
      uniqueKeysWithValues: (0..<5_000).map {
        ("key\($0)", JSONValue.string(String(repeating: "v", count: 20)))
      })
    let oversize = TransactionRequest(
      namespace: "n", operations: [.upsertMemory(MemoryRecord(id: "m", vector: [1, 0, 0], metadata: huge))])
    do {
      _ = try await engine.execute(oversize)
      Issue.record("oversize metadata accepted")
    } catch {
      guard case .invalid(.tooLarge(let field, _, _)) = error else { throw error }
      #expect(field == "metadata")
    }
    // A mix of good and bad operations is refused whole.
    let mixed = TransactionRequest(
      namespace: "n",
      operations: [
        .upsertMemory(MemoryRecord(id: "ok", vector: [1, 0, 0])),
        .upsertMemory(MemoryRecord(id: "bad", vector: [1])),
      ])
    await #expect(throws: WriteError.self) { try await engine.execute(mixed) }
    #expect(engine.log.positions.written.value == written)
    #expect(try engine.store.digest() == digest)

    // Reads refuse bad input too.
    let point = engine.latestReadPoint()
    #expect(throws: StoreError.self) { try engine.store.search([1, 0], k: 3, in: "n", at: point) }
    #expect(throws: StoreError.unknownNamespace("x")) {
      try engine.store.search([1, 0, 0], k: 3, in: "x", at: point)
    }
    #expect(throws: StoreError.self) { try engine.store.search([1, 0, 0], k: 0, in: "n", at: point) }
    #expect(throws: StoreError.self) {
      try engine.store.traverse(
        from: "a", in: "n", maximumDepth: engine.store.options.maximumTraversalDepth + 1, at: point)
    }
    await engine.close()
  }

  @Test func cyclesDoNotTrapTraversalAndPathsAreShortest() async throws {
    let clock = TestClock()
    let engine = try await Self.open(SimulatedFileSystem(), clock: clock)
    _ = try await engine.createNamespace(NamespaceConfig(name: "g", dimension: 2, metric: .dot))
    var operations: [Operation] = (0..<20).map { .upsertNode(GraphNode(id: "v\($0)", type: "t")) }
    for index in 0..<20 {
      operations.append(
        .upsertEdge(
          GraphEdge(id: "ring\(index)", from: "v\(index)", to: "v\((index + 1) % 20)", type: "next")))
      operations.append(
        .upsertEdge(
          GraphEdge(id: "back\(index)", from: "v\((index + 1) % 20)", to: "v\(index)", type: "prev")))
    }
    operations.append(.upsertEdge(GraphEdge(id: "shortcut", from: "v0", to: "v10", type: "next")))
    let outcome = try await engine.execute(TransactionRequest(namespace: "g", operations: operations))
    try await engine.waitForApplied(outcome.lsn)
    let point = engine.latestReadPoint()
    let traversal = try engine.store.traverse(
      from: "v0", in: "g", maximumDepth: 8, query: GraphQuery(direction: .both), at: point)
    #expect(Set(traversal.nodes.map(\.node.node.id)).count == traversal.nodes.count, "each node once")
    #expect(traversal.nodes.count == 20)
    let path = try #require(
      try engine.store.shortestPath(from: "v0", to: "v12", in: "g", maximumDepth: 8, at: point))
    #expect(path.nodes.map(\.node.id) == ["v0", "v10", "v11", "v12"])
    #expect(
      try engine.store.shortestPath(
        from: "v0", to: "v5", in: "g", maximumDepth: 2, query: GraphQuery(edgeTypes: ["next"]), at: point)
        == nil)
    await engine.close()
  }

  @Test func expiredMemoriesDisappearAndAreDeletedThroughTheLog() async throws {
    let clock = TestClock()
    let engine = try await Self.open(SimulatedFileSystem(), clock: clock)
    _ = try await engine.createNamespace(NamespaceConfig(name: "n", dimension: 2, metric: .l2))
    let expires = clock.current + 10_000
    let written = try await engine.execute(
      TransactionRequest(
        namespace: "n",
        operations: [
          .upsertMemory(MemoryRecord(id: "short", vector: [1, 1], expiresAtMicros: expires)),
          .upsertMemory(MemoryRecord(id: "long", vector: [2, 2])),
        ]))
    try await engine.waitForApplied(written.lsn)
    #expect(try engine.store.memory("short", in: "n", at: engine.latestReadPoint()) != nil)
    clock.advance(by: 20_000)
    #expect(
      try engine.store.memory("short", in: "n", at: engine.latestReadPoint()) == nil, "hidden once expired")
    #expect(
      try engine.store.search([1, 1], k: 5, in: "n", at: engine.latestReadPoint()).hits.map(\.id) == ["long"])
    // As of the write, it was there.
    #expect(try engine.store.memory("short", in: "n", at: engine.store.readPoint(asOf: written.lsn)) != nil)
    #expect(await engine.deleteExpired(nowMicros: clock.current) == 1)
    try await engine.waitForApplied(engine.log.positions.written.value)
    let history = try engine.store.memoryHistory("short", in: "n")
    #expect(history.count == 2 && history.last?.after == nil && history.last?.before?.id == "short")
    await engine.close()
  }
}

@Suite struct ConcurrentReadTests {
  /// Searches keep answering, consistently with their read point, while the applier inserts.
  @Test func searchesRunWhileTheApplierInserts() async throws {
    let clock = TestClock()
    var options = engineOptions(clock: clock)
    options.store.exactSearchThreshold = 50
    let engine = try await MemoryEngine.open(
      directory: "/node", options: options, fileSystem: SimulatedFileSystem(), logger: quietLogger)
    let created = try await engine.createNamespace(NamespaceConfig(name: "n", dimension: 16, metric: .l2))
    try await engine.waitForApplied(created.lsn)
    let writer = Task {
      var random = Seeded(1)
      for batch in 0..<30 {
        let operations: [Operation] = (0..<50).map { index in
          .upsertMemory(
            MemoryRecord(
              id: "m\(batch)-\(index)", vector: (0..<16).map { _ in Float.random(in: -1...1, using: &random) }
            ))
        }
        _ = try await engine.execute(
          TransactionRequest(namespace: "n", operations: operations, durability: .memory))
      }
    }
    var searches = 0
    var random = Seeded(2)
    while !(writer.isCancelled) && searches < 2_000 {
      let point = engine.latestReadPoint()
      let query = (0..<16).map { _ in Float.random(in: -1...1, using: &random) }
      let hits = try engine.store.search(query, k: 10, in: "n", at: point).hits
      #expect(hits.count <= 10)
      for hit in hits {
        #expect(
          try engine.store.memory(hit.id, in: "n", at: point)?.record.vector == hit.memory.record.vector)
      }
      #expect(zip(hits, hits.dropFirst()).allSatisfy { $0.distance <= $1.distance })
      searches += 1
      if engine.store.appliedLSN.rawValue >= 31 { break }
    }
    try await writer.value
    try await engine.waitForApplied(engine.log.positions.written.value)
    // The overlay of unapplied writes drains once the applier has caught up.
    let deadline = ContinuousClock.now + .seconds(60)
    while engine.unappliedKeyCount > 0 && ContinuousClock.now < deadline { await Task.yield() }
    #expect(engine.unappliedKeyCount == 0)
    #expect(
      try engine.store.search([Float](repeating: 0, count: 16), k: 10, in: "n", at: engine.latestReadPoint())
        .hits.count == 10)
    await engine.close()
  }
}
