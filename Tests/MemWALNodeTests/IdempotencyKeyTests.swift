import MemWALCore
import MemWALLog
import MemWALNode
import MemWALStore
import Testing

/// An idempotency key answers repeats of the request that first used it, and nothing else: the same
/// key with other operations is refused and writes nothing, wherever the key's record is (logged
/// and not yet applied, applied, replayed after a restart, loaded from a checkpoint).
@Suite struct IdempotencyKeyTests {
  static func open(_ disk: SimulatedFileSystem, clock: TestClock) async throws -> MemoryEngine {
    try await MemoryEngine.open(
      directory: "/node", options: engineOptions(clock: clock), fileSystem: disk, logger: quietLogger)
  }

  static func keyed(_ operations: [Operation], durability: Durability = .local) -> TransactionRequest {
    TransactionRequest(
      namespace: "n", operations: operations, idempotencyKey: "req-1", durability: durability)
  }

  static let first = keyed([
    .upsertMemory(MemoryRecord(id: "x", vector: [1, 0], metadata: ["v": .number(1)]))
  ])
  /// Each differs from `first` in one thing a client could change while keeping the key.
  static let others: [(String, TransactionRequest)] = [
    (
      "another vector",
      keyed([.upsertMemory(MemoryRecord(id: "x", vector: [0, 1], metadata: ["v": .number(1)]))])
    ),
    (
      "other metadata",
      keyed([.upsertMemory(MemoryRecord(id: "x", vector: [1, 0], metadata: ["v": .number(2)]))])
    ),
    (
      "another id",
      keyed([.upsertMemory(MemoryRecord(id: "y", vector: [1, 0], metadata: ["v": .number(1)]))])
    ),
    (
      "a precondition",
      keyed([
        .upsertMemory(MemoryRecord(id: "x", vector: [1, 0], metadata: ["v": .number(1)]), ifVersion: .zero)
      ])
    ),
    ("a delete", keyed([.deleteMemory(id: "x")])),
    ("one more operation", keyed(first.operations + [.upsertNode(GraphNode(id: "a", type: "t"))])),
  ]

  /// Every other request with the key is refused naming the first one's LSN and writes nothing;
  /// the same request, even asking for other durability, is still answered with the first outcome.
  static func expectOnlyRepeatsAnswered(_ engine: MemoryEngine, firstLSN: LSN, _ stage: String) async throws {
    let written = engine.log.positions.written.value
    for (change, request) in others {
      await #expect(
        throws: WriteError.idempotencyKeyReused(key: "req-1", lsn: firstLSN), "\(stage): \(change)"
      ) {
        try await engine.execute(request)
      }
    }
    #expect(engine.log.positions.written.value == written, "\(stage): a refused reuse writes nothing")
    let again = try await engine.execute(keyed(first.operations, durability: .memory))
    #expect(again.isRepeat && again.lsn == firstLSN, "\(stage): the same request is a repeat")
  }

  @Test func aKeyReusedForOtherOperationsIsRefusedAtEveryStage() async throws {
    let disk = SimulatedFileSystem()
    let clock = TestClock()
    var engine = try await Self.open(disk, clock: clock)
    _ = try await engine.createNamespace(NamespaceConfig(name: "n", dimension: 2, metric: .l2))
    let ready = engine.log.positions.written.value
    try await engine.waitForApplied(ready)
    engine.setApplierPaused(true)
    let outcome = try await engine.execute(Self.first)
    #expect(!outcome.isRepeat)
    try await Self.expectOnlyRepeatsAnswered(engine, firstLSN: outcome.lsn, "logged, not applied")
    engine.setApplierPaused(false)
    try await engine.waitForApplied(outcome.lsn)
    try await Self.expectOnlyRepeatsAnswered(engine, firstLSN: outcome.lsn, "applied")
    await engine.close()

    engine = try await Self.open(disk, clock: clock)
    try await Self.expectOnlyRepeatsAnswered(engine, firstLSN: outcome.lsn, "replayed from the log")
    #expect(try await engine.checkpoint() >= outcome.lsn)
    await engine.close()

    engine = try await Self.open(disk, clock: clock)
    #expect(engine.log.checkpointLSNs.last ?? .zero >= outcome.lsn)
    try await Self.expectOnlyRepeatsAnswered(engine, firstLSN: outcome.lsn, "loaded from a checkpoint")
    let point = engine.latestReadPoint()
    #expect(
      try engine.store.memory("x", in: "n", at: point)?.record.vector == [1, 0], "the first request's value")
    #expect(try engine.store.memory("y", in: "n", at: point) == nil, "no other request's value")
    await engine.close()
  }

  /// The digest travels with the record: a follower that took the first write through
  /// replication and is then promoted refuses the key with other operations, and answers the
  /// same request as a repeat (G2: a failover keeps what a keyed write meant, not just its key).
  @Test func aPromotedFollowerKnowsTheDigestsItReplicated() async throws {
    let clock = TestClock()
    let primary = try await Self.open(SimulatedFileSystem(), clock: clock)
    var options = engineOptions(clock: clock)
    options.role = .follower
    let follower = try await MemoryEngine.open(
      directory: "/node", options: options, fileSystem: SimulatedFileSystem(), logger: quietLogger)
    _ = try await primary.createNamespace(NamespaceConfig(name: "n", dimension: 2, metric: .l2))
    let outcome = try await primary.execute(Self.first)
    let records = try primary.log.records(from: LSN(1), limit: 100)
    for record in records { _ = try await follower.log.submitReplicated(record).result() }
    try await follower.waitForApplied(outcome.lsn)
    await primary.close()
    _ = try await follower.becomePrimary(epoch: Epoch(2), name: "f1")
    try await Self.expectOnlyRepeatsAnswered(follower, firstLSN: outcome.lsn, "promoted follower")
    await follower.close()
  }

  /// Two different requests racing with one key: exactly one is written, the other is refused,
  /// whether it finds the winner in flight or already logged.
  @Test func twoDifferentRequestsRacingWithOneKeyWriteOnlyOne() async throws {
    let engine = try await Self.open(SimulatedFileSystem(), clock: TestClock())
    _ = try await engine.createNamespace(NamespaceConfig(name: "n", dimension: 2, metric: .l2))
    let before = engine.log.positions.written.value
    for round in 0..<20 {
      let key = "race-\(round)"
      func request(_ id: String) -> TransactionRequest {
        TransactionRequest(
          namespace: "n", operations: [.upsertMemory(MemoryRecord(id: id, vector: [1, 1]))],
          idempotencyKey: key)
      }
      func attempt(_ id: String) async -> Result<WriteOutcome, WriteError> {
        do { return .success(try await engine.execute(request(id))) } catch { return .failure(error) }
      }
      async let left = attempt("l\(round)")
      async let right = attempt("r\(round)")
      let outcomes = await [left, right]
      let written = outcomes.compactMap { try? $0.get() }
      #expect(written.count == 1, "round \(round): \(outcomes)")
      for case .failure(let error) in outcomes {
        guard case .idempotencyKeyReused(key, _) = error else {
          Issue.record("round \(round): \(error)")
          continue
        }
      }
    }
    #expect(engine.log.positions.written.value == LSN(before.rawValue + 20))
    await engine.close()
  }

  /// A checkpoint written before digests (snapshot version 1: no digest after each key) still
  /// loads; its keys have no digest, so a repeat of one is answered on the key alone.
  @Test func aVersion1SnapshotLoadsWithKeysThatHaveNoDigest() async throws {
    let engine = try await Self.open(SimulatedFileSystem(), clock: TestClock())
    _ = try await engine.createNamespace(NamespaceConfig(name: "n", dimension: 2, metric: .l2))
    let outcome = try await engine.execute(Self.first)
    try await engine.waitForApplied(outcome.lsn)
    await engine.close()
    let (_, current) = engine.store.snapshot()
    #expect(
      try MemoryStore.load(current).idempotentOutcome(namespace: "n", key: "req-1")?.requestDigest?.count
        == 16)
    // Rewrite it as version 1: the version field, and no digest length and digest after the key.
    let key = Array("n\u{0}req-1".utf8)
    let at = try #require(
      (0...(current.count - key.count)).first { Array(current[$0..<$0 + key.count]) == key })
    let digestAt = at + key.count + 24
    #expect(current[digestAt] == 16)
    var old = current
    old.removeSubrange(digestAt..<digestAt + 17)
    old.replaceSubrange(8..<12, with: [1, 0, 0, 0])
    let loaded = try MemoryStore.load(old, options: engine.options.store)
    let remembered = try #require(loaded.idempotentOutcome(namespace: "n", key: "req-1"))
    #expect(remembered.lsn == outcome.lsn && remembered.requestDigest == nil)
    #expect(try loaded.digest() == engine.store.digest())
  }

  /// The digest is part of the log format and frozen (docs/wal-format.md §5.1): the same request
  /// must digest the same in every version, or a retry across an upgrade is refused. A change to
  /// its definition, or to the record image format it hashes, fails here.
  @Test func theRequestDigestIsFrozen() {
    let request = TransactionRequest(
      namespace: "n",
      operations: [
        .upsertMemory(
          MemoryRecord(
            id: "m-é", vector: [0.5, -1], text: "t", metadata: ["b": .number(2), "a": .string("x")]),
          ifVersion: LSN(7)),
        .deleteNode(id: "a"),
      ],
      idempotencyKey: "k")
    #expect(hex(request.requestDigest) == "e50bc24ea3231c9b91ac712473a05d4b")
  }
}
