import MemWALCore
import MemWALLog
import MemWALNode
import MemWALStore
import Synchronization
import Testing

/// A disk on which checkpoint files cannot be created while `isFull` is set (the log's own files
/// still can): a full disk that only the larger checkpoint write runs into.
final class CheckpointlessDisk: FileSystem, @unchecked Sendable {
  let base = SimulatedFileSystem()
  let isFull = Atomic<Bool>(false)
  /// Checkpoint files it refused to create.
  let refusals = Atomic<Int>(0)

  func openFile(_ path: String, mode: FileOpenMode) throws -> StorageFile {
    if isFull.load(ordering: .relaxed), mode == .createNew, path.contains("/checkpoints/") {
      refusals.add(1, ordering: .relaxed)
      throw FileSystemError(operation: "open", path: path, errno: 28, reason: "No space left on device")
    }
    return try base.openFile(path, mode: mode)
  }
  func contentsOfDirectory(_ path: String) throws -> [String] { try base.contentsOfDirectory(path) }
  func createDirectory(_ path: String) throws { try base.createDirectory(path) }
  func fileExists(_ path: String) -> Bool { base.fileExists(path) }
  func isDirectory(_ path: String) -> Bool { base.isDirectory(path) }
  func rename(_ source: String, to destination: String) throws { try base.rename(source, to: destination) }
  func removeFile(_ path: String) throws { try base.removeFile(path) }
  func syncDirectory(_ path: String) throws { try base.syncDirectory(path) }
}

@Suite struct CheckpointFailureTests {
  /// A time-triggered checkpoint that failed is owed: an idle node tries again once the interval
  /// has passed, with no write in between, and covers what the failed one would have.
  @Test func anIdleNodeRetriesAFailedCheckpointOnceTheIntervalHasPassed() async throws {
    let clock = TestClock()
    var options = engineOptions(clock: clock)
    options.checkpointEveryBytes = 1 << 30
    options.checkpointEverySeconds = 60
    let disk = CheckpointlessDisk()
    let engine = try await MemoryEngine.open(
      directory: "/node", options: options, fileSystem: disk, logger: quietLogger)
    _ = try await engine.createNamespace(NamespaceConfig(name: "n", dimension: 2, metric: .l2))
    let last = try await engine.execute(
      TransactionRequest(namespace: "n", operations: [.upsertMemory(MemoryRecord(id: "m", vector: [1, 2]))])
    ).lsn
    try await engine.waitForApplied(last)
    disk.isFull.store(true, ordering: .relaxed)
    clock.advance(by: 61_000_000)
    // The idle applier wakes at most a second apart: wait until it has tried (and failed).
    let deadline = ContinuousClock.now + .seconds(60)
    while disk.refusals.load(ordering: .relaxed) == 0 && ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(5))
    }
    #expect(disk.refusals.load(ordering: .relaxed) > 0 && engine.log.checkpointLSNs.isEmpty)
    disk.isFull.store(false, ordering: .relaxed)
    // The failed try restarts the countdown from the engine's clock after the refusal counted
    // above; a move of the clock in between would count from the new time, so keep moving it.
    let retryDeadline = ContinuousClock.now + .seconds(60)
    while engine.log.checkpointLSNs.isEmpty && ContinuousClock.now < retryDeadline {
      clock.advance(by: 61_000_000)
      try await Task.sleep(for: .milliseconds(20))
    }
    #expect(engine.log.checkpointLSNs == [last], "the owed checkpoint, taken with no write since")
    await engine.close()
  }

  /// A checkpoint that fails must not stop the applier: writes go on being applied (reads with
  /// `min_lsn` keep working), and checkpoints resume once the disk has room.
  @Test func aFailedCheckpointLeavesTheApplierRunning() async throws {
    let clock = TestClock()
    var options = engineOptions(clock: clock)
    options.checkpointEveryBytes = 4 << 10
    let disk = CheckpointlessDisk()
    let engine = try await MemoryEngine.open(
      directory: "/node", options: options, fileSystem: disk, logger: quietLogger)
    _ = try await engine.createNamespace(NamespaceConfig(name: "n", dimension: 8, metric: .l2))
    disk.isFull.store(true, ordering: .relaxed)
    func write(_ batch: Int) async throws -> LSN {
      var last = LSN.zero
      for index in 0..<40 {
        let record = MemoryRecord(id: "m\(batch)-\(index)", vector: (0..<8).map { Float($0 + index) })
        last = try await engine.execute(
          TransactionRequest(namespace: "n", operations: [.upsertMemory(record)])
        ).lsn
      }
      return last
    }
    for batch in 0..<3 {
      let last = try await write(batch)
      try await engine.waitForApplied(last, timeout: .seconds(60))
    }
    let checkpoints = {
      (try? disk.contentsOfDirectory("/node/checkpoints"))?.filter { $0.hasSuffix(".ckpt") } ?? []
    }
    #expect(checkpoints().isEmpty)
    disk.isFull.store(false, ordering: .relaxed)
    let deadline = ContinuousClock.now + .seconds(60)
    var batch = 3
    while checkpoints().isEmpty && ContinuousClock.now < deadline {
      let last = try await write(batch)
      try await engine.waitForApplied(last, timeout: .seconds(60))
      batch += 1
    }
    #expect(!checkpoints().isEmpty)
    await engine.close()
  }
}

@Suite struct RepeatDurabilityTests {
  /// A repeat of a key first written at `memory` that asks for `local` is answered only once the
  /// record is flushed, and says `local` — never the `memory` of the first answer.
  @Test func aRepeatAskingForMoreThanTheFirstWriteWaitsForIt() async throws {
    let clock = TestClock()
    let engine = try await MemoryEngine.open(
      directory: "/node", options: engineOptions(clock: clock), fileSystem: SimulatedFileSystem(),
      logger: quietLogger)
    _ = try await engine.createNamespace(NamespaceConfig(name: "n", dimension: 2, metric: .l2))
    let record = MemoryRecord(id: "m", vector: [1, 2])
    let first = try await engine.execute(
      TransactionRequest(
        namespace: "n", operations: [.upsertMemory(record)], idempotencyKey: "k", durability: .memory))
    let repeated = try await engine.execute(
      TransactionRequest(
        namespace: "n", operations: [.upsertMemory(record)], idempotencyKey: "k", durability: .local))
    #expect(repeated.isRepeat && repeated.lsn == first.lsn)
    #expect(repeated.durability == .local)
    #expect(engine.log.positions.flushed.value >= first.lsn)
    await engine.close()
  }
}

@Suite struct ReplicatedEngineTests {
  /// A single node answers a `quorum` write with the `local` it reached; a member of a cluster with
  /// no replication gate (a follower, a primary between roles) refuses it instead.
  @Test(arguments: [false, true]) func aQuorumWriteWithoutAGate(isReplicated: Bool) async throws {
    var options = engineOptions(clock: TestClock())
    options.isReplicated = isReplicated
    let engine = try await MemoryEngine.open(
      directory: "/node", options: options, fileSystem: SimulatedFileSystem(), logger: quietLogger)
    _ = try await engine.createNamespace(NamespaceConfig(name: "n", dimension: 2, metric: .l2))
    let request = TransactionRequest(
      namespace: "n", operations: [.upsertMemory(MemoryRecord(id: "m", vector: [1, 2]))], durability: .quorum)
    if isReplicated {
      await #expect {
        _ = try await engine.execute(request)
      } throws: { error in
        guard case WriteError.insufficientReplicas = error else { return false }
        return true
      }
    } else {
      #expect(try await engine.execute(request).durability == .local)
    }
    await engine.close()
  }
}
