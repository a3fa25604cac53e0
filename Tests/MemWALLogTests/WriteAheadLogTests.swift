import MemWALCore
import Testing

@testable import MemWALLog

@Suite struct WriteAheadLogTests {
  @Test func appendsAreReadBackInOrderAndSurviveReopen() async throws {
    let disk = SimulatedFileSystem()
    var (log, recovery) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: disk, logger: quietLogger)
    #expect(recovery.isNewLog)
    var acknowledged: [WriteAheadLog.AppendResult] = []
    for index in 0..<50 {
      acknowledged.append(try await log.append(makeTransaction(writer: 0, index: index), durability: .local))
    }
    #expect(acknowledged.map(\.lsn.rawValue) == Array(1...50))
    #expect(acknowledged.allSatisfy { $0.durability == .local && $0.epoch == Epoch(1) })
    #expect(
      zip(acknowledged, acknowledged.dropFirst()).allSatisfy { $0.timestampMicros < $1.timestampMicros })
    #expect(zip(acknowledged, acknowledged.dropFirst()).allSatisfy { $0.transactionID < $1.transactionID })
    #expect(log.segmentNames.count > 1, "8 KiB segments must roll")
    await log.close()

    (log, recovery) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: disk, logger: quietLogger)
    #expect(!recovery.isNewLog)
    #expect(recovery.lastLSN == LSN(50))
    #expect(recovery.truncatedTail == nil)
    let records = try allRecords(log)
    #expect(records.map(identity) == (0..<50).map { "w0-\($0)" })
    #expect(records == records.sorted { $0.lsn < $1.lsn })
    let next = try await log.append(makeTransaction(writer: 0, index: 50))
    #expect(next.lsn == LSN(51))
    #expect(next.timestampMicros > acknowledged.last!.timestampMicros)
    await log.close()
  }

  @Test func concurrentWritersShareFsyncs() async throws {
    let disk = SimulatedFileSystem()
    let (log, _) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(segmentBytes: 1 << 20), fileSystem: disk, logger: quietLogger)
    let syncsBefore = disk.count(of: .sync)
    let results = try await withThrowingTaskGroup(of: [WriteAheadLog.AppendResult].self) { group in
      for writer in 0..<16 {
        group.addTask {
          var mine: [WriteAheadLog.AppendResult] = []
          for index in 0..<25 {
            mine.append(try await log.append(makeTransaction(writer: writer, index: index)))
          }
          return mine
        }
      }
      return try await group.reduce(into: []) { $0 += $1 }
    }
    #expect(Set(results.map(\.lsn)).count == 400)
    #expect(results.allSatisfy { $0.durability == .local })
    let syncs = disk.count(of: .sync) - syncsBefore
    #expect(syncs < 400, "group commit: \(syncs) fsyncs for 400 appends")
    #expect(log.positions.flushed.value == LSN(400))
    // Each writer's own records appear in its order.
    let records = try allRecords(log)
    for writer in 0..<16 {
      let mine = records.compactMap(identity).filter { $0.hasPrefix("w\(writer)-") }
      #expect(mine == (0..<25).map { "w\(writer)-\($0)" })
    }
    await log.close()
  }

  @Test func memoryDurabilityDoesNotSync() async throws {
    let disk = SimulatedFileSystem()
    let (log, _) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(segmentBytes: 1 << 20), fileSystem: disk, logger: quietLogger)
    let syncsBefore = disk.count(of: .sync)
    let result = try await log.append(makeTransaction(writer: 0, index: 0), durability: .memory)
    #expect(result.durability == .memory)
    #expect(disk.count(of: .sync) == syncsBefore)
    #expect(log.positions.written.value == LSN(1))
    #expect(log.positions.flushed.value == .zero)
    // A later local write makes both durable.
    let second = try await log.append(makeTransaction(writer: 0, index: 1), durability: .local)
    #expect(second.durability == .local)
    #expect(log.positions.flushed.value == LSN(2))
    // Lost on power failure before that sync: check with a crash image of an unsynced memory write.
    _ = try await log.append(makeTransaction(writer: 0, index: 2), durability: .memory)
    let image = disk.crashImage(mode: .dropUnsynced)
    await log.close()
    let (reopened, recovery) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: image, logger: quietLogger)
    #expect(recovery.lastLSN == LSN(2))
    await reopened.close()
  }

  @Test func epochChangesAreRecordedAndFenced() async throws {
    let disk = SimulatedFileSystem()
    var (log, _) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: disk, logger: quietLogger)
    _ = try await log.append(makeTransaction(writer: 0, index: 0))
    let change = try await log.appendEpochChange(to: Epoch(3), leader: "n2")
    #expect(change.lsn == LSN(2) && change.epoch == Epoch(3))
    let after = try await log.append(makeTransaction(writer: 0, index: 1))
    #expect(after.epoch == Epoch(3))
    await #expect(throws: WALError.staleEpoch(current: Epoch(3), requested: Epoch(2))) {
      try await log.appendEpochChange(to: Epoch(2), leader: "n1")
    }
    #expect(
      log.epochHistory == [
        EpochStart(epoch: Epoch(1), firstLSN: LSN(1)), EpochStart(epoch: Epoch(3), firstLSN: LSN(2)),
      ])
    await log.close()
    (log, _) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: disk, logger: quietLogger)
    #expect(log.currentEpoch == Epoch(3))
    #expect(log.epochHistory.map(\.epoch) == [Epoch(1), Epoch(3)])
    let records = try allRecords(log)
    #expect(records[1].payload == .epochChange(EpochChange(previousEpoch: Epoch(1), leader: "n2")))
    await log.close()
  }

  @Test func badInputIsRefusedAndChangesNothing() async throws {
    let disk = SimulatedFileSystem()
    let (log, _) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: disk, logger: quietLogger)
    let huge = WALTransaction(
      namespace: "agents",
      operations: [
        WALOperation(kind: .insert, target: .memory, id: "x", after: [UInt8](repeating: 1, count: 4096))
      ])
    await #expect(throws: WALError.self) { try await log.append(huge) }
    await #expect(throws: WALError.invalidInput(.invalid(field: "namespace", reason: "must not be empty"))) {
      try await log.append(
        WALTransaction(namespace: "", operations: [WALOperation(kind: .delete, target: .memory, id: "a")]))
    }
    await #expect(throws: WALError.self) {
      try await log.append(WALTransaction(namespace: "a", operations: []))
    }
    let longID = String(repeating: "x", count: WALFormat.maximumNameBytes + 1)
    await #expect(throws: WALError.self) {
      try await log.append(
        WALTransaction(namespace: "a", operations: [WALOperation(kind: .delete, target: .memory, id: longID)])
      )
    }
    #expect(log.positions.written.value == .zero)
    let ok = try await log.append(makeTransaction(writer: 0, index: 0))
    #expect(ok.lsn == LSN(1))
    await log.close()
  }

  @Test func fsyncFailureStopsTheLogForGood() async throws {
    let disk = SimulatedFileSystem()
    let (log, _) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(segmentBytes: 1 << 20), fileSystem: disk, logger: quietLogger)
    _ = try await log.append(makeTransaction(writer: 0, index: 0))
    disk.setFaultPlan(.init(operationIndex: 1, fault: .ioError, kinds: [.sync]))
    await #expect(throws: WALError.self) { try await log.append(makeTransaction(writer: 0, index: 1)) }
    disk.setFaultPlan(nil)
    // Even though the disk works again, the log must not acknowledge anything more.
    do {
      _ = try await log.append(makeTransaction(writer: 0, index: 2))
      Issue.record("append after an fsync failure succeeded")
    } catch let error as WALError {
      guard case .failed(let reason) = error else {
        Issue.record("unexpected error \(error)")
        return
      }
      #expect(reason.contains("sync"))
      #expect(error.description.contains("accepts no more writes"))
    }
    #expect(log.stoppedBy != nil)
    #expect(throws: WALError.self) { try log.writeCheckpoint(at: LSN(1), payload: []) }
    await log.close()
  }

  @Test func checkpointsRetentionAndRecoveryFromCheckpoint() async throws {
    let disk = SimulatedFileSystem()
    var (log, _) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: disk, logger: quietLogger)
    for index in 0..<60 { _ = try await log.append(makeTransaction(writer: 1, index: index)) }
    #expect(throws: WALError.self) { try log.writeCheckpoint(at: LSN(61), payload: [1]) }
    try log.writeCheckpoint(at: LSN(20), payload: Array("state@20".utf8))
    _ = try log.retireSegments(below: LSN(1000))
    #expect(
      LogFileNames.segmentLSN(log.segmentNames.first!)! <= LSN(21), "records after checkpoint 20 must stay")
    try log.writeCheckpoint(at: LSN(40), payload: Array("state@40".utf8))
    try log.writeCheckpoint(at: LSN(50), payload: Array("state@50".utf8))
    #expect(log.checkpointLSNs == [LSN(50), LSN(40)])
    #expect(throws: WALError.self) { try log.writeCheckpoint(at: LSN(45), payload: []) }
    let segmentsBefore = log.segmentNames
    let retired = try log.retireSegments(below: LSN(1000))
    // Only segments wholly at or below the older kept checkpoint (40) may go.
    let remainingFirst = LogFileNames.segmentLSN(log.segmentNames.first!)!
    #expect(remainingFirst <= LSN(41))
    #expect(segmentsBefore.count == log.segmentNames.count + retired.count)
    let checkpointFiles = try disk.contentsOfDirectory("/data/checkpoints")
    #expect(
      checkpointFiles == [LogFileNames.checkpoint(lsn: LSN(40)), LogFileNames.checkpoint(lsn: LSN(50))])
    await log.close()

    let recovery: WriteAheadLog.Recovery
    (log, recovery) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: disk, logger: quietLogger)
    #expect(recovery.checkpoint?.lsn == LSN(50))
    #expect(recovery.checkpoint?.payload == Array("state@50".utf8))
    #expect(recovery.lastLSN == LSN(60))
    let replay = try allRecords(log, from: LSN(51))
    #expect(replay.map(\.lsn.rawValue) == Array(51...60))
    let next = try await log.append(makeTransaction(writer: 1, index: 60))
    #expect(next.lsn == LSN(61))
    await log.close()
  }

  @Test func retiredSegmentsCanBeArchived() async throws {
    let disk = SimulatedFileSystem()
    var options = smallOptions()
    options.archiveRetiredSegments = true
    let (log, _) = try WriteAheadLog.open(
      directory: "/data", options: options, fileSystem: disk, logger: quietLogger)
    for index in 0..<40 { _ = try await log.append(makeTransaction(writer: 2, index: index)) }
    try log.writeCheckpoint(at: LSN(40), payload: [])
    let retired = try log.retireSegments(below: LSN(41))
    #expect(!retired.isEmpty)
    #expect(try disk.contentsOfDirectory("/data/archive") == retired)
    await log.close()
  }

  @Test func waitingForAnLSN() async throws {
    let disk = SimulatedFileSystem()
    let (log, _) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(segmentBytes: 1 << 20), fileSystem: disk, logger: quietLogger)
    await #expect(throws: WaitError.timedOut(waitingFor: LSN(5), reached: .zero)) {
      try await log.waitUntil(LSN(5), reaches: .local, timeout: .milliseconds(20))
    }
    async let waiter: Void = log.waitUntil(LSN(3), reaches: .local, timeout: .seconds(30))
    for index in 0..<3 {
      _ = try await log.append(makeTransaction(writer: 0, index: index), durability: .memory)
    }
    _ = try await log.append(makeTransaction(writer: 0, index: 3), durability: .local)
    try await waiter
    #expect(log.positions.flushed.value == LSN(4))
    await log.close()
    await #expect(throws: WALError.closed) { try await log.append(makeTransaction(writer: 0, index: 9)) }
  }

  @Test func realFileSystemRoundTrip() async throws {
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    var options = WriteAheadLog.Options()
    options.segmentBytes = 64 << 10
    options.maximumRecordBytes = 16 << 10
    var (log, _) = try WriteAheadLog.open(directory: directory.path, options: options, logger: quietLogger)
    for index in 0..<200 {
      _ = try await log.append(makeTransaction(writer: 3, index: index, payloadBytes: 500))
    }
    try log.writeCheckpoint(at: LSN(150), payload: [9, 9, 9])
    await log.close()
    let recovery: WriteAheadLog.Recovery
    (log, recovery) = try WriteAheadLog.open(directory: directory.path, options: options, logger: quietLogger)
    #expect(recovery.lastLSN == LSN(200))
    #expect(recovery.checkpoint?.lsn == LSN(150))
    #expect(try allRecords(log, from: LSN(151)).count == 50)
    await log.close()
  }
}

@Suite struct LogFollowingTests {
  @Test func submitFixesLogOrderSynchronously() async throws {
    let disk = SimulatedFileSystem()
    let (log, _) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(segmentBytes: 1 << 20), fileSystem: disk, logger: quietLogger)
    let tickets = try (0..<20).map {
      try log.submit(makeTransaction(writer: 5, index: $0), durability: .local)
    }
    var lsns: [UInt64] = []
    for ticket in tickets.reversed() { lsns.append(try await ticket.result().lsn.rawValue) }
    #expect(lsns == Array((1...20).reversed()))
    await log.close()
    #expect(throws: WALError.closed) { try log.submit(makeTransaction(writer: 5, index: 99)) }
  }

  @Test func tailServesNewRecordsAndDiskServesOlderOnes() async throws {
    let disk = SimulatedFileSystem()
    var options = smallOptions(segmentBytes: 1 << 20)
    options.tailBytes = 4 << 10
    var (log, _) = try WriteAheadLog.open(
      directory: "/data", options: options, fileSystem: disk, logger: quietLogger)
    for index in 0..<10 { _ = try await log.append(makeTransaction(writer: 6, index: index)) }
    await log.close()
    (log, _) = try WriteAheadLog.open(
      directory: "/data", options: options, fileSystem: disk, logger: quietLogger)
    #expect(log.tail.records(from: LSN(1), limit: 10) == nil, "older than the tail: read from disk")
    #expect(try log.records(from: LSN(3), limit: 4).map(\.lsn.rawValue) == [3, 4, 5, 6])
    for index in 10..<60 { _ = try await log.append(makeTransaction(writer: 6, index: index)) }
    // The tail holds only the newest ~4 KiB; both paths give the same records.
    let fromTail = try #require(log.tail.records(from: LSN(58), limit: 10))
    #expect(fromTail.map(\.lsn.rawValue) == [58, 59, 60])
    #expect(log.tail.records(from: LSN(12), limit: 10) == nil)
    var fromDisk: [WALRecord] = []
    try log.readRecords(from: LSN(58)) { record in
      fromDisk.append(record)
      return true
    }
    #expect(fromDisk == fromTail)
    #expect(try log.records(from: LSN(11), limit: 100).map(\.lsn.rawValue) == Array(11...60))
    #expect(try log.records(from: LSN(61), limit: 5).isEmpty)
    await log.close()
  }

  @Test func syncMakesMemoryWritesDurable() async throws {
    let disk = SimulatedFileSystem()
    let (log, _) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(segmentBytes: 1 << 20), fileSystem: disk, logger: quietLogger)
    for index in 0..<5 {
      _ = try await log.append(makeTransaction(writer: 7, index: index), durability: .memory)
    }
    #expect(log.positions.flushed.value == .zero)
    try await log.sync()
    #expect(log.positions.flushed.value == LSN(5))
    let image = disk.crashImage(mode: .dropUnsynced)
    await log.close()
    let (reopened, recovery) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: image, logger: quietLogger)
    #expect(recovery.lastLSN == LSN(5))
    await reopened.close()
  }
}
