import MemWALCore
import MemWALLog
import MemWALNode
import MemWALStore
import Testing

/// Restart equivalence and as-of correctness over a random workload of 5,000 transactions
/// (DESIGN G5, G6).
@Suite(.serialized) struct RecoveryEquivalenceTests {
  static let transactions = 5_000

  static func open(_ disk: SimulatedFileSystem, clock: TestClock) async throws -> MemoryEngine {
    try await MemoryEngine.open(
      directory: "/node", options: engineOptions(clock: clock), fileSystem: disk, logger: quietLogger)
  }

  @Test(arguments: [true, false]) func restartGivesTheSameDigest(withCheckpoint: Bool) async throws {
    let clock = TestClock()
    let disk = SimulatedFileSystem()
    var engine = try await Self.open(disk, clock: clock)
    var workload = Workload(seed: withCheckpoint ? 11 : 12)
    let (_, applied) = try await workload.run(Self.transactions / 2, on: engine, clock: clock)
    if withCheckpoint { _ = try await engine.checkpoint() }
    _ = try await workload.run(Self.transactions / 2, on: engine, clock: clock)
    #expect(applied > Self.transactions / 4, "the workload mostly succeeds (\(applied))")
    let last = engine.log.positions.written.value
    try await engine.waitForApplied(last)
    let before = try engine.store.digest()
    await engine.close()

    engine = try await Self.open(disk, clock: clock)
    #expect(engine.store.appliedLSN == last)
    if withCheckpoint { #expect(engine.log.checkpointLSNs.count == 1) }
    #expect(try engine.store.digest() == before)
    // And the same as a store rebuilt from the whole log.
    if !withCheckpoint {
      let reference = try replayedStore(engine.log, through: last, options: engine.options.store)
      #expect(try reference.digest() == before)
    }
    await engine.close()
  }

  @Test func crashAtARandomPointRecoversTheStateOfItsLSN() async throws {
    for seed in UInt64(1)...3 {
      let clock = TestClock()
      let disk = SimulatedFileSystem()
      let engine = try await Self.open(disk, clock: clock)
      var workload = Workload(seed: seed * 101)
      _ = try await workload.run(600, on: engine, clock: clock)
      _ = try await engine.checkpoint()
      // Crash somewhere in the next stretch of writes.
      var random = Seeded(seed)
      disk.setFaultPlan(.init(operationIndex: Int.random(in: 5...200, using: &random), fault: .crash))
      _ = try? await workload.run(400, on: engine, clock: clock)
      disk.crashNow()
      await engine.close()
      let image = disk.crashImage(mode: .tornUnsyncedPrefix, seed: seed)
      let recovered = try await Self.open(image, clock: clock)
      let lsn = recovered.store.appliedLSN
      #expect(lsn == recovered.log.positions.written.value)
      let reference = try replayedStore(recovered.log, through: lsn, options: recovered.options.store)
      #expect(try recovered.store.digest() == reference.digest(), "seed \(seed), recovered through \(lsn)")
      await recovered.close()
    }
  }

  @Test func asOfReadsEqualAStoreReplayedToThatLSN() async throws {
    let clock = TestClock()
    let engine = try await Self.open(SimulatedFileSystem(), clock: clock)
    var workload = Workload(seed: 77)
    _ = try await workload.run(1_500, on: engine, clock: clock)
    let last = engine.log.positions.written.value
    try await engine.waitForApplied(last)
    var random = Seeded(5)
    for _ in 0..<15 {
      let lsn = LSN(UInt64.random(in: 3...last.rawValue, using: &random))
      let reference = try replayedStore(engine.log, through: lsn, options: engine.options.store)
      let point = try engine.store.readPoint(asOf: lsn)
      let referencePoint = try reference.readPoint(asOf: lsn)
      #expect(point == referencePoint)
      #expect(try engine.store.digest(at: lsn) == reference.digest(), "digest as of \(lsn)")
      for config in Workload.namespaces {
        guard (try? reference.namespaceConfig(config.name, at: referencePoint)) != nil else { continue }
        for index in 0..<150 {
          #expect(
            try engine.store.memory("m\(index)", in: config.name, at: point)
              == reference.memory("m\(index)", in: config.name, at: referencePoint))
        }
        let query = workload.vector(config.dimension)
        let filter = Filter.isIn(field: "topic", values: [.string("a"), .string("b")])
        let ours = try engine.store.search(query, k: 10, in: config.name, filter: filter, at: point).hits
        let theirs = try reference.search(query, k: 10, in: config.name, filter: filter, at: referencePoint)
          .hits
        #expect(ours == theirs, "search as of \(lsn)")
        for index in 0..<40 {
          let id = "n\(index)"
          let node = try engine.store.node(id, in: config.name, at: point)
          #expect(node == (try reference.node(id, in: config.name, at: referencePoint)))
          guard node != nil else { continue }
          #expect(
            try engine.store.neighbors(
              of: id, in: config.name, query: GraphQuery(direction: .both), at: point)
              == reference.neighbors(
                of: id, in: config.name, query: GraphQuery(direction: .both), at: referencePoint))
          #expect(
            try engine.store.traverse(from: id, in: config.name, maximumDepth: 3, at: point)
              == reference.traverse(from: id, in: config.name, maximumDepth: 3, at: referencePoint))
        }
      }
    }
    // By time: the point for a record's commit time is that record's LSN.
    let middle = LSN(last.rawValue / 2)
    let byLSN = try engine.store.readPoint(asOf: middle)
    #expect(try engine.store.readPoint(asOfTime: byLSN.timeMicros).lsn == middle)
    await engine.close()
  }

  @Test func corruptSnapshotsAreRefusedNeverCrash() async throws {
    let clock = TestClock()
    let engine = try await Self.open(SimulatedFileSystem(), clock: clock)
    var workload = Workload(seed: 3)
    _ = try await workload.run(200, on: engine, clock: clock)
    try await engine.waitForApplied(engine.log.positions.written.value)
    await engine.close()
    let (_, bytes) = engine.store.snapshot()
    let loaded = try MemoryStore.load(bytes, options: engine.options.store)
    #expect(try loaded.digest() == engine.store.digest())
    var random = Seeded(9)
    var refused = 0
    for round in 0..<2_000 {
      var damaged = bytes
      if round % 3 == 0 {
        damaged.removeLast(Int.random(in: 1..<damaged.count, using: &random))
      } else {
        for _ in 0..<Int.random(in: 1...4, using: &random) {
          damaged[Int.random(in: 0..<damaged.count, using: &random)] ^= UInt8.random(
            in: 1...255, using: &random)
        }
      }
      do {
        _ = try MemoryStore.load(damaged, options: engine.options.store)
      } catch {
        refused += 1
      }
    }
    // Flips inside values (a vector component, say) can decode to a different valid store; all
    // structural damage is refused, and nothing crashes.
    #expect(refused > 1_000)
  }
}
