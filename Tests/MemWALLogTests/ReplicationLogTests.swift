import MemWALCore
import Testing

@testable import MemWALLog

/// A follower's log: records received from the primary keep their LSN, epoch, transaction id and
/// time; a divergent tail is cut into the archive; a checkpoint from the primary replaces the log.
@Suite struct ReplicationLogTests {
  /// A primary log with `count` transactions in epoch 1, then an epoch change to 2 and `more`.
  static func primaryLog(
    _ directory: String, count: Int, more: Int, fileSystem: FileSystem = POSIXFileSystem()
  ) async throws -> WriteAheadLog {
    let (log, _) = try WriteAheadLog.open(
      directory: directory, options: smallOptions(), fileSystem: fileSystem)
    for index in 0..<count { _ = try await log.append(makeTransaction(writer: 1, index: index)) }
    if more > 0 {
      _ = try await log.appendEpochChange(to: Epoch(2), leader: "n2")
      for index in 0..<more { _ = try await log.append(makeTransaction(writer: 2, index: index)) }
    }
    return log
  }

  @Test func replicatedRecordsKeepThePrimarysIdentity() async throws {
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    let primary = try await Self.primaryLog(directory.path + "/p", count: 40, more: 25)
    let sent = try allRecords(primary)
    let (follower, _) = try WriteAheadLog.open(directory: directory.path + "/f", options: smallOptions())
    var tickets: [AppendTicket] = []
    for record in sent { tickets.append(try follower.submitReplicated(record)) }
    for ticket in tickets { _ = try await ticket.result() }
    #expect(follower.positions.flushed.value == LSN(66))
    #expect(try allRecords(follower) == sent)
    #expect(follower.epochHistory == primary.epochHistory)
    #expect(follower.currentEpoch == Epoch(2))
    await follower.close()
    await primary.close()

    // Recovered from disk, the follower's log is the same.
    let (reopened, recovery) = try WriteAheadLog.open(
      directory: directory.path + "/f", options: smallOptions())
    #expect(recovery.lastLSN == LSN(66))
    #expect(try allRecords(reopened) == sent)
    #expect(reopened.epochHistory.map(\.epoch) == [Epoch(1), Epoch(2)])
    await reopened.close()
  }

  @Test func aGapARepeatOrAStaleEpochIsRefusedAndWritesNothing() async throws {
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    let primary = try await Self.primaryLog(directory.path + "/p", count: 10, more: 3)
    let sent = try allRecords(primary)
    await primary.close()
    let (follower, _) = try WriteAheadLog.open(directory: directory.path + "/f", options: smallOptions())
    defer { Task { await follower.close() } }
    for record in sent[0..<5] { _ = try await follower.submitReplicated(record).result() }

    await #expect(throws: WALError.outOfOrder(expected: LSN(6), received: LSN(7))) {
      try await follower.submitReplicated(sent[6]).result()
    }
    await #expect(throws: WALError.outOfOrder(expected: LSN(6), received: LSN(5))) {
      try await follower.submitReplicated(sent[4]).result()
    }
    var wrongEpoch = sent[5]
    wrongEpoch.epoch = Epoch(3)
    await #expect(throws: WALError.epochMismatch(current: Epoch(1), received: Epoch(3), lsn: LSN(6))) {
      try await follower.submitReplicated(wrongEpoch).result()
    }
    var staleChange = sent[10]
    #expect(staleChange.payload.recordType == WALFormat.RecordType.epochChange)
    staleChange.lsn = LSN(6)
    staleChange.epoch = Epoch(1)
    await #expect(throws: WALError.staleEpoch(current: Epoch(1), requested: Epoch(1))) {
      try await follower.submitReplicated(staleChange).result()
    }
    #expect(follower.positions.written.value == LSN(5))
    // The refused records left the log able to go on from where it was.
    for record in sent[5...] { _ = try await follower.submitReplicated(record).result() }
    #expect(try allRecords(follower) == sent)
  }

  /// `primaryLog` at `directory/n`, closed, and the records it holds.
  static func closedPrimaryLog(in directory: TemporaryDirectory, count: Int, more: Int) async throws
    -> (path: String, records: [WALRecord])
  {
    let path = directory.path + "/n"
    let log = try await primaryLog(path, count: count, more: more)
    let records = try allRecords(log)
    await log.close()
    return (path, records)
  }

  @Test func truncationArchivesTheDivergentTailAndTheLogReopensAtTheCut() async throws {
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    let path = directory.path + "/n"
    let log = try await Self.primaryLog(path, count: 60, more: 40)
    try log.writeCheckpoint(at: LSN(30), payload: [1])
    try log.writeCheckpoint(at: LSN(80), payload: [2])
    let before = try allRecords(log)
    #expect(log.segmentNames.count >= 3)
    await log.close()

    let report = try #require(try WriteAheadLog.truncate(directory: path, after: LSN(45)))
    #expect(report.firstRemoved == LSN(46))
    #expect(report.lastRemoved == LSN(101))
    #expect(report.epoch == Epoch(1))
    #expect(report.removedCheckpoints == [LSN(80)])
    #expect(report.archiveFile == "archive/diverged-1-00000000000000000046.wal")

    // The archive is a segment file holding exactly the records cut.
    let archived = try Self.archivedRecords(path + "/" + report.archiveFile, fileSystem: POSIXFileSystem())
    #expect(archived?.first?.lsn == LSN(46))
    #expect(archived == Array(before[45...]))

    // The log reopens from the checkpoint at or below the cut and ends there.
    let (reopened, recovery) = try WriteAheadLog.open(directory: path, options: smallOptions())
    #expect(recovery.lastLSN == LSN(45))
    #expect(recovery.checkpoint?.lsn == LSN(30))
    #expect(reopened.currentEpoch == Epoch(1))
    #expect(reopened.epochHistory.map(\.epoch) == [Epoch(1)])
    #expect(try allRecords(reopened) == Array(before[..<45]))
    // And it takes the new primary's records after the cut.
    let appended = try await reopened.append(makeTransaction(writer: 9, index: 0))
    #expect(appended.lsn == LSN(46))
    await reopened.close()

    // Nothing after the end: nothing to do.
    #expect(try WriteAheadLog.truncate(directory: path, after: LSN(46)) == nil)
  }

  /// The records of an archived tail (a segment file), or nil when its header is unreadable.
  static func archivedRecords(_ path: String, fileSystem: FileSystem) throws -> [WALRecord]? {
    let file = try fileSystem.openFile(path, mode: .readOnly)
    defer { file.close() }
    let archive = try file.readAll()
    guard case .success = SegmentHeader.decode(archive) else { return nil }
    var archived: [WALRecord] = []
    var offset = SegmentHeader.size
    while offset < archive.count {
      let decoded = archive.withUnsafeBytes {
        WALFrame.decode(UnsafeRawBufferPointer(rebasing: $0[offset...]))
      }
      guard case .success(let frame) = decoded else { break }
      archived.append(frame.record)
      offset += frame.encodedSize
    }
    return archived
  }

  /// A tail that starts with an epoch change (a promotion cut whole) is archived with the epoch
  /// before it in the header, so the archive reads as a valid segment: the log scanner (and
  /// `memwal wal dump`, and the chaos checker) read every record. It read as corrupt before (found
  /// by `memwal chaos`, seed 3202: "LSN … changes epoch 15 → 16 while the log is in epoch 16").
  @Test func aTailThatStartsWithAnEpochChangeIsArchivedReadably() async throws {
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    let (path, before) = try await Self.closedPrimaryLog(in: directory, count: 60, more: 40)
    guard case .epochChange = before[60].payload else {
      Issue.record("LSN 61 is not the epoch change")
      return
    }
    let report = try #require(try WriteAheadLog.truncate(directory: path, after: LSN(60)))
    #expect(report.archiveFile == "archive/diverged-2-00000000000000000061.wal")
    // Scanned as a segment of its own, as the checker and `wal dump` read it.
    let disk = POSIXFileSystem()
    let scratch = directory.path + "/scan"
    try disk.createDirectory(scratch)
    let archive = try disk.openFile(path + "/" + report.archiveFile, mode: .readOnly)
    let bytes = try archive.readAll()
    archive.close()
    let copy = try disk.openFile(scratch + "/" + LogFileNames.segment(firstLSN: LSN(61)), mode: .createNew)
    try copy.write(bytes, at: 0)
    copy.close()
    var scanned: [WALRecord] = []
    try LogScanner(walDirectory: scratch, fileSystem: disk).scan(visitFrom: LSN(61)) { frame, _, _ in
      scanned.append(frame.record)
      return true
    }
    #expect(scanned == Array(before[60...]))
  }

  /// Two different tails cut at the same place (an archive of that name exists and is not this
  /// tail): the first archive is kept and the second gets the next name.
  @Test func aDifferentTailWithTheSameStartGetsItsOwnArchive() async throws {
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    let (path, before) = try await Self.closedPrimaryLog(in: directory, count: 50, more: 0)
    let disk = POSIXFileSystem()
    try disk.createDirectory(path + "/archive")
    let taken = path + "/archive/" + WriteAheadLog.divergedArchiveName(epoch: Epoch(1), firstLSN: LSN(41))
    let other = try disk.openFile(taken, mode: .createNew)
    try other.write(Array("someone else's tail".utf8), at: 0)
    try other.sync()
    other.close()

    let report = try #require(try WriteAheadLog.truncate(directory: path, after: LSN(40)))
    #expect(report.archiveFile == "archive/diverged-1-00000000000000000041.2.wal")
    #expect(
      try Self.archivedRecords(path + "/" + report.archiveFile, fileSystem: disk) == Array(before[40...]))
    let kept = try disk.openFile(taken, mode: .readOnly)
    defer { kept.close() }
    #expect(try kept.readAll() == Array("someone else's tail".utf8))
  }

  @Test func truncationRefusesToCutBelowWhatCanBeRebuilt() async throws {
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    let path = directory.path + "/n"
    let log = try await Self.primaryLog(path, count: 80, more: 0)
    try log.writeCheckpoint(at: LSN(60), payload: [1])
    _ = try log.retireSegments(below: LSN(60))
    let first = try #require(log.segmentNames.first.flatMap(LogFileNames.segmentLSN))
    #expect(first > LSN(1))
    await log.close()
    #expect(throws: LogSurgeryError.self) { try WriteAheadLog.truncate(directory: path, after: LSN(10)) }
    // Refused means untouched.
    let (reopened, recovery) = try WriteAheadLog.open(directory: path, options: smallOptions())
    #expect(recovery.lastLSN == LSN(80))
    await reopened.close()
  }

  /// A crash at every file-system operation of a truncation leaves a log that opens and ends at or
  /// after the cut with the same records up to it; the truncation run again then completes.
  @Test func truncationSurvivesACrashAtEveryStep() async throws {
    let path = "/n"
    let base = SimulatedFileSystem()
    let log = try await Self.primaryLog(path, count: 50, more: 30, fileSystem: base)
    try log.writeCheckpoint(at: LSN(20), payload: [1])
    try log.writeCheckpoint(at: LSN(70), payload: [2])
    let before = try allRecords(log)
    await log.close()

    var point = 1
    var completed = false
    while !completed {
      let disk = base.crashImage(mode: .dropUnsynced)
      disk.setFaultPlan(.init(operationIndex: point, fault: .crash))
      do {
        _ = try WriteAheadLog.truncate(directory: path, after: LSN(35), fileSystem: disk)
        completed = true
      } catch {}
      for mode in SimulatedFileSystem.CrashMode.allCases {
        let image = disk.crashImage(mode: mode, seed: UInt64(point))
        let (reopened, recovery) = try WriteAheadLog.open(
          directory: path, options: smallOptions(), fileSystem: image)
        #expect(recovery.lastLSN >= LSN(35), "crash point \(point), \(mode)")
        let records = try allRecords(reopened)
        #expect(Array(records.prefix(35)) == Array(before.prefix(35)), "crash point \(point), \(mode)")
        await reopened.close()
        _ = try WriteAheadLog.truncate(directory: path, after: LSN(35), fileSystem: image)
        let (again, final) = try WriteAheadLog.open(
          directory: path, options: smallOptions(), fileSystem: image)
        #expect(final.lastLSN == LSN(35), "crash point \(point), \(mode)")
        #expect(try allRecords(again) == Array(before.prefix(35)))
        await again.close()
        // The archive holds the whole tail: a re-run that found segments already removed did not
        // replace it with the shorter copy it could make.
        let archive =
          path + "/archive/" + WriteAheadLog.divergedArchiveName(epoch: Epoch(1), firstLSN: LSN(36))
        let archived = try Self.archivedRecords(archive, fileSystem: image)
        #expect(archived == Array(before[35...]), "crash point \(point), \(mode)")
      }
      point += 1
    }
    #expect(point > 10)
  }

  @Test func aCheckpointFromThePrimaryReplacesAFollowersLog() async throws {
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    let primary = try await Self.primaryLog(directory.path + "/p", count: 70, more: 20)
    try primary.writeCheckpoint(at: LSN(85), payload: Array("stores@85".utf8))
    let file = try #require(try primary.newestCheckpointFile())
    #expect(file.lsn == LSN(85))
    let sent = try allRecords(primary)

    // A follower that has only the first 10 records.
    let followerPath = directory.path + "/f"
    let (follower, _) = try WriteAheadLog.open(directory: followerPath, options: smallOptions())
    for record in sent[..<10] { _ = try await follower.submitReplicated(record).result() }
    await follower.close()

    var damaged = file.bytes
    damaged[damaged.count - 1] ^= 0x40
    #expect(throws: LogSurgeryError.self) {
      try WriteAheadLog.installCheckpoint(
        directory: followerPath, checkpointFile: damaged, expectedClusterID: smallOptions().clusterID,
        segmentBytes: smallOptions().segmentBytes)
    }
    #expect(throws: LogSurgeryError.self) {
      try WriteAheadLog.installCheckpoint(
        directory: followerPath, checkpointFile: file.bytes, expectedClusterID: ClusterID(high: 1, low: 1),
        segmentBytes: smallOptions().segmentBytes)
    }
    let installed = try WriteAheadLog.installCheckpoint(
      directory: followerPath, checkpointFile: file.bytes, expectedClusterID: smallOptions().clusterID,
      segmentBytes: smallOptions().segmentBytes)
    #expect(installed.lsn == LSN(85))

    let (reopened, recovery) = try WriteAheadLog.open(directory: followerPath, options: smallOptions())
    #expect(recovery.checkpoint?.payload == Array("stores@85".utf8))
    #expect(recovery.lastLSN == LSN(85))
    #expect(reopened.currentEpoch == Epoch(2))
    #expect(reopened.epochHistory == primary.epochHistory)
    for record in sent[85...] { _ = try await reopened.submitReplicated(record).result() }
    #expect(try allRecords(reopened, from: LSN(86)) == Array(sent[85...]))
    await reopened.close()
    await primary.close()
  }

  /// A crash at every file-system operation of a checkpoint installation leaves a node that opens
  /// either with its old log intact or with the new checkpoint and an empty log after it — never a
  /// mix, and never a node that cannot start.
  @Test func checkpointInstallationSurvivesACrashAtEveryStep() async throws {
    let source = SimulatedFileSystem()
    let primary = try await Self.primaryLog("/p", count: 30, more: 10, fileSystem: source)
    try primary.writeCheckpoint(at: LSN(35), payload: Array("stores@35".utf8))
    let file = try #require(try primary.newestCheckpointFile())
    let sent = try allRecords(primary)
    await primary.close()

    let base = SimulatedFileSystem()
    let (follower, _) = try WriteAheadLog.open(directory: "/f", options: smallOptions(), fileSystem: base)
    for record in sent[..<12] { _ = try await follower.submitReplicated(record).result() }
    await follower.close()

    var point = 1
    var completed = false
    var sawOld = false
    var sawNew = false
    while !completed {
      let disk = base.crashImage(mode: .dropUnsynced)
      disk.setFaultPlan(.init(operationIndex: point, fault: .crash))
      do {
        _ = try WriteAheadLog.installCheckpoint(
          directory: "/f", checkpointFile: file.bytes, expectedClusterID: smallOptions().clusterID,
          segmentBytes: smallOptions().segmentBytes, fileSystem: disk)
        completed = true
      } catch {}
      for mode in SimulatedFileSystem.CrashMode.allCases {
        let image = disk.crashImage(mode: mode, seed: UInt64(point))
        let (reopened, recovery) = try WriteAheadLog.open(
          directory: "/f", options: smallOptions(), fileSystem: image)
        if let checkpoint = recovery.checkpoint {
          #expect(checkpoint.lsn == LSN(35), "crash point \(point), \(mode)")
          #expect(recovery.lastLSN == LSN(35), "crash point \(point), \(mode)")
          sawNew = true
        } else {
          #expect(recovery.lastLSN == LSN(12), "crash point \(point), \(mode)")
          #expect(try allRecords(reopened) == Array(sent[..<12]), "crash point \(point), \(mode)")
          sawOld = true
        }
        #expect(
          !(try image.contentsOfDirectory("/f/checkpoints")).contains { $0.hasPrefix("installing-") },
          "crash point \(point), \(mode)")
        await reopened.close()
      }
      point += 1
    }
    #expect(sawOld && sawNew && point > 8)
  }
}
