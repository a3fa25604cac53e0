import MemWALCore
import MemWALLog
import MemWALNode
import MemWALStore
import Synchronization
import Testing

/// A follower's engine: it refuses writes, takes the primary's records into its own log, applies
/// them into the same state, and can be promoted.
@Suite struct FollowerEngineTests {
  static func open(_ disk: SimulatedFileSystem, clock: TestClock, role: NodeRole) async throws -> MemoryEngine
  {
    var options = engineOptions(clock: clock)
    options.role = role
    return try await MemoryEngine.open(
      directory: "/node", options: options, fileSystem: disk, logger: quietLogger)
  }

  /// Ships every record the follower lacks, as the replication stream would.
  static func ship(from primary: MemoryEngine, to follower: MemoryEngine) async throws {
    let start = follower.log.positions.written.value.next
    let records = try primary.log.records(from: start, limit: 100_000)
    var tickets: [AppendTicket] = []
    for record in records { tickets.append(try follower.log.submitReplicated(record)) }
    for ticket in tickets { _ = try await ticket.result() }
  }

  @Test func aFollowerRefusesWritesAndNamesThePrimary() async throws {
    let clock = TestClock()
    let follower = try await Self.open(SimulatedFileSystem(), clock: clock, role: .follower)
    defer { Task { await follower.close() } }
    follower.setPrimaryHint("http://127.0.0.1:7601")
    await #expect(throws: WriteError.notPrimary(primary: "http://127.0.0.1:7601")) {
      try await follower.createNamespace(NamespaceConfig(name: "agents", dimension: 3, metric: .cosine))
    }
    await #expect(throws: WriteError.notPrimary(primary: "http://127.0.0.1:7601")) {
      try await follower.execute(
        TransactionRequest(namespace: "agents", operations: [.deleteMemory(id: "a")]))
    }
    #expect(follower.log.positions.written.value == .zero)
  }

  @Test func aFollowerReachesThePrimarysStateAndCanBePromoted() async throws {
    let clock = TestClock()
    let primary = try await Self.open(SimulatedFileSystem(), clock: clock, role: .primary)
    let followerDisk = SimulatedFileSystem()
    var follower = try await Self.open(followerDisk, clock: clock, role: .follower)
    for config in Workload.namespaces { _ = try await primary.createNamespace(config) }
    var workload = Workload(seed: 42)
    for round in 0..<3 {
      for _ in 0..<60 {
        clock.advance()
        _ = try? await primary.execute(workload.transaction(now: clock.current))
      }
      try await Self.ship(from: primary, to: follower)
      let lsn = primary.log.positions.written.value
      try await primary.waitForApplied(lsn)
      try await follower.waitForApplied(lsn)
      #expect(try follower.store.digest() == primary.store.digest(), "round \(round)")
      if round == 1 {
        // A restarted follower recovers what it had flushed and goes on from there.
        try await follower.log.sync()
        await follower.close()
        follower = try await Self.open(followerDisk, clock: clock, role: .follower)
        #expect(follower.log.positions.flushed.value == lsn)
      }
    }

    // Promotion: the old primary steps down, the follower records the new epoch and takes writes.
    primary.becomeFollower(primary: "follower")
    await #expect(throws: WriteError.notPrimary(primary: "follower")) {
      try await primary.createNamespace(NamespaceConfig(name: "late", dimension: 2, metric: .l2))
    }
    let epochLSN = try await follower.becomePrimary(epoch: Epoch(2), name: "f1")
    #expect(follower.role == .primary)
    #expect(follower.log.epochHistory.map(\.epoch) == [Epoch(1), Epoch(2)])
    clock.advance()
    let written = try await follower.createNamespace(
      NamespaceConfig(name: "after", dimension: 2, metric: .l2))
    #expect(written.lsn == epochLSN.next && written.epoch == Epoch(2))
    await follower.close()
    await primary.close()
  }

  /// `quorum` and `all_applied` wait at the replication gate and report what it answers.
  @Test func strongerDurabilityWaitsAtTheReplicationGate() async throws {
    final class Gate: ReplicationGate, @unchecked Sendable {
      let seen = Mutex<[(LSN, Durability)]>([])
      func wait(for lsn: LSN, epoch: Epoch, reaching durability: Durability) async throws(WriteError)
        -> Durability
      {
        seen.withLock { $0.append((lsn, durability)) }
        if durability == .allApplied { throw .insufficientReplicas("no follower is connected") }
        return durability
      }
    }
    let clock = TestClock()
    let engine = try await Self.open(SimulatedFileSystem(), clock: clock, role: .primary)
    defer { Task { await engine.close() } }
    let gate = Gate()
    _ = try await engine.createNamespace(NamespaceConfig(name: "a", dimension: 2, metric: .l2))
    let single = try await engine.createNamespace(
      NamespaceConfig(name: "b", dimension: 2, metric: .l2), durability: .quorum)
    #expect(single.durability == .local)
    engine.replicationGate = gate
    let quorum = try await engine.execute(
      TransactionRequest(
        namespace: "a", operations: [.upsertMemory(MemoryRecord(id: "x", vector: [1, 2]))],
        durability: .quorum))
    #expect(quorum.durability == .quorum)
    await #expect(throws: WriteError.insufficientReplicas("no follower is connected")) {
      try await engine.execute(
        TransactionRequest(
          namespace: "a", operations: [.upsertMemory(MemoryRecord(id: "y", vector: [1, 2]))],
          durability: .allApplied))
    }
    #expect(gate.seen.withLock { $0.map(\.1) } == [.quorum, .allApplied])
  }

  /// A gate that refuses until told to confirm.
  final class ScriptedGate: ReplicationGate {
    let confirms = Atomic<Bool>(false)
    func wait(for lsn: LSN, epoch: Epoch, reaching durability: Durability) async throws(WriteError)
      -> Durability
    {
      guard confirms.load(ordering: .relaxed) else { throw .insufficientReplicas("no follower confirmed") }
      return durability
    }
  }

  /// A keyed quorum write logged here but not confirmed by followers keeps its key: a retry does
  /// not write it again (even before the applier has applied it), and answers `quorum` only once
  /// the followers confirm the first write's LSN.
  @Test func aRetriedKeyAfterAnUnconfirmedQuorumWriteIsNotWrittenTwice() async throws {
    let clock = TestClock()
    let primary = try await Self.open(SimulatedFileSystem(), clock: clock, role: .primary)
    defer { Task { await primary.close() } }
    let gate = ScriptedGate()
    primary.replicationGate = gate
    _ = try await primary.createNamespace(NamespaceConfig(name: "agents", dimension: 3, metric: .cosine))
    let request = TransactionRequest(
      namespace: "agents", operations: [.upsertMemory(MemoryRecord(id: "m", vector: [1, 0, 0]))],
      idempotencyKey: "k1", durability: .quorum)
    await #expect(throws: WriteError.insufficientReplicas("no follower confirmed")) {
      try await primary.execute(request)
    }
    let logged = primary.log.positions.written.value
    await #expect(throws: WriteError.insufficientReplicas("no follower confirmed")) {
      try await primary.execute(request)
    }
    gate.confirms.store(true, ordering: .relaxed)
    let repeated = try await primary.execute(request)
    #expect(repeated.isRepeat && repeated.lsn == logged && repeated.durability == .quorum)
    try await primary.waitForApplied(logged)
    let again = try await primary.execute(request)
    #expect(again.isRepeat && again.lsn == logged && again.durability == .quorum)
    #expect(primary.log.positions.written.value == logged)
  }

  /// Only the primary answers a repeat of an idempotency key: a follower holding the first write,
  /// and a primary that stepped down, send the writer on (307 at the API), because their copy may
  /// be cut by a newer epoch and their answer could not be confirmed by followers anyway.
  @Test func aRepeatOnANodeThatIsNotThePrimaryIsSentToThePrimary() async throws {
    let clock = TestClock()
    let primary = try await Self.open(SimulatedFileSystem(), clock: clock, role: .primary)
    let follower = try await Self.open(SimulatedFileSystem(), clock: clock, role: .follower)
    follower.setPrimaryHint("http://primary")
    _ = try await primary.createNamespace(NamespaceConfig(name: "agents", dimension: 3, metric: .cosine))
    let request = TransactionRequest(
      namespace: "agents", operations: [.upsertMemory(MemoryRecord(id: "m", vector: [1, 0, 0]))],
      idempotencyKey: "k1", durability: .local)
    let first = try await primary.execute(request)
    try await Self.ship(from: primary, to: follower)
    try await follower.waitForApplied(first.lsn)
    await #expect(throws: WriteError.notPrimary(primary: "http://primary")) {
      try await follower.execute(request)
    }
    let repeated = try await primary.execute(request)
    #expect(repeated.isRepeat && repeated.lsn == first.lsn)
    primary.becomeFollower(primary: "http://next")
    await #expect(throws: WriteError.notPrimary(primary: "http://next")) {
      try await primary.execute(request)
    }
    #expect(primary.log.positions.written.value == first.lsn)
    await follower.close()
    await primary.close()
  }

  /// Replayed WAL counts toward the checkpoint threshold: a node restarted more often than it
  /// writes `checkpointEveryBytes` still checkpoints, instead of replaying a growing log forever.
  @Test func replayedBytesCountTowardTheNextCheckpoint() async throws {
    let clock = TestClock()
    let disk = SimulatedFileSystem()
    var options = engineOptions(clock: clock)
    options.checkpointEveryBytes = 40_000
    func open() async throws -> MemoryEngine {
      try await MemoryEngine.open(directory: "/node", options: options, fileSystem: disk, logger: quietLogger)
    }
    func write(_ engine: MemoryEngine, _ ids: Range<Int>) async throws {
      for id in ids {
        clock.advance()
        _ = try await engine.execute(
          TransactionRequest(
            namespace: "agents",
            operations: [.upsertMemory(MemoryRecord(id: "m\(id)", vector: [Float(id), 1, 0]))]))
      }
      try await engine.waitForApplied(engine.log.positions.written.value)
    }
    var engine = try await open()
    _ = try await engine.createNamespace(NamespaceConfig(name: "agents", dimension: 3, metric: .cosine))
    var id = 0
    // Each run writes less than the threshold, then the node restarts.
    var perRun = 0
    while engine.log.checkpointLSNs.isEmpty && id < 2_000 {
      let before = id
      while engine.log.checkpointLSNs.isEmpty, id - before < 50 {
        try await write(engine, id..<id + 1)
        id += 1
      }
      perRun = id - before
      await engine.close()
      engine = try await open()
    }
    #expect(!engine.log.checkpointLSNs.isEmpty, "no checkpoint after \(id) writes in runs of \(perRun)")
    await engine.close()
  }

  /// An engine that checkpoints every 60 s of its clock (and, in effect, never by bytes), with a
  /// namespace `agents`, and a write of memory `m<id>` into it.
  static func timeCheckpointedEngine(_ clock: TestClock) async throws -> (
    MemoryEngine, (Int) async throws -> LSN
  ) {
    var options = engineOptions(clock: clock)
    options.checkpointEveryBytes = 1 << 30
    options.checkpointEverySeconds = 60
    let engine = try await MemoryEngine.open(
      directory: "/node", options: options, fileSystem: SimulatedFileSystem(), logger: quietLogger)
    _ = try await engine.createNamespace(NamespaceConfig(name: "agents", dimension: 3, metric: .cosine))
    let write = { (id: Int) async throws -> LSN in
      try await engine.execute(
        TransactionRequest(
          namespace: "agents",
          operations: [.upsertMemory(MemoryRecord(id: "m\(id)", vector: [Float(id), 1, 0]))])
      ).lsn
    }
    return (engine, write)
  }

  /// Polls (up to 60 s) until the engine has written a checkpoint.
  static func waitForACheckpoint(_ engine: MemoryEngine) async throws {
    let deadline = ContinuousClock.now + .seconds(60)
    while engine.log.checkpointLSNs.isEmpty && ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(5))
    }
  }

  /// `checkpointEverySeconds`: a slow trickle of writes, far below the byte threshold, still gets
  /// a checkpoint once the interval has passed, so a restart replays at most that long of WAL;
  /// nothing applied since the last checkpoint means no new one.
  @Test func aCheckpointIsTakenWhenTheIntervalHasPassed() async throws {
    let clock = TestClock()
    let (engine, write) = try await Self.timeCheckpointedEngine(clock)
    defer { Task { await engine.close() } }
    for id in 0..<5 {
      clock.advance(by: 10_000_000)
      try await engine.waitForApplied(try await write(id))
    }
    #expect(engine.log.checkpointLSNs.isEmpty, "50 s: not yet")
    clock.advance(by: 11_000_000)
    try await engine.waitForApplied(try await write(5))
    try await Self.waitForACheckpoint(engine)
    // The applier may still be checking the record before this write when the clock moves.
    #expect((engine.log.checkpointLSNs.first ?? .zero) >= LSN(6), "61 s: a checkpoint")
  }

  /// The time trigger needs no further write: a burst followed by silence is checkpointed once the
  /// interval has passed, so a restart does not replay it however long the node stays idle.
  @Test func anIdleNodeCheckpointsWhatItAppliedOnceTheIntervalHasPassed() async throws {
    let clock = TestClock()
    let (engine, write) = try await Self.timeCheckpointedEngine(clock)
    defer { Task { await engine.close() } }
    var last = LSN.zero
    for id in 0..<5 { last = try await write(id) }
    try await engine.waitForApplied(last)
    #expect(engine.log.checkpointLSNs.isEmpty)
    clock.advance(by: 61_000_000)
    try await Self.waitForACheckpoint(engine)
    #expect(engine.log.checkpointLSNs == [last], "61 s later, with no write since: a checkpoint of all of it")
  }
}
