import MemWALCore
import Testing

@testable import MemWALLog

/// Damage before the tail is never skipped: each case gets its own error naming file, offset and
/// last good LSN, and the failed open changes no file (DESIGN G5, G8).
@Suite struct CorruptionTests {
  /// A closed log of `count` records, each acknowledged at `local`, in 8 KiB segments.
  static func makeLog(count: Int = 120) async throws -> SimulatedFileSystem {
    let disk = SimulatedFileSystem()
    let (log, _) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: disk, logger: quietLogger)
    for index in 0..<count { _ = try await log.append(makeTransaction(writer: 0, index: index)) }
    await log.close()
    return disk
  }

  /// Where each frame sits: (segment, offset, LSN).
  static func frames(_ disk: SimulatedFileSystem) throws -> [(segment: String, offset: Int64, lsn: LSN)] {
    var found: [(String, Int64, LSN)] = []
    try LogScanner(walDirectory: "/data/wal", fileSystem: disk).scan { frame, segment, offset in
      found.append((segment, offset, frame.record.lsn))
      return true
    }
    return found
  }

  static func flipByte(_ disk: SimulatedFileSystem, _ path: String, at offset: Int) {
    var bytes = disk.contents(of: path)!
    bytes[offset] ^= 0x5A
    disk.overwrite(path, with: bytes)
  }

  static func snapshot(_ disk: SimulatedFileSystem) throws -> [String: [UInt8]] {
    var files: [String: [UInt8]] = [:]
    for directory in ["/data/wal", "/data/checkpoints"] {
      for name in try disk.contentsOfDirectory(directory) {
        files[directory + "/" + name] = disk.contents(of: directory + "/" + name)
      }
    }
    return files
  }

  /// Opens the log expecting corruption; checks that nothing on disk changed.
  static func expectCorruption(_ disk: SimulatedFileSystem) throws -> WALCorruption {
    let before = try snapshot(disk)
    do {
      let (log, _) = try WriteAheadLog.open(
        directory: "/data", options: smallOptions(), fileSystem: disk, logger: quietLogger)
      Issue.record("open succeeded on a corrupt log (last LSN \(log.positions.flushed.value))")
      throw CancellationError()
    } catch let corruption as WALCorruption {
      #expect(try snapshot(disk) == before, "a failed open must not change files")
      #expect(corruption.description.contains(corruption.file))
      #expect(corruption.description.contains("byte \(corruption.offset)"))
      return corruption
    }
  }

  @Test func flippedByteInTheMiddleOfAnOlderSegment() async throws {
    let disk = try await Self.makeLog()
    let frames = try Self.frames(disk)
    let segments = Set(frames.map(\.segment)).sorted()
    #expect(segments.count >= 3)
    let victim = frames.filter { $0.segment == segments[0] }.dropFirst(5).first!
    Self.flipByte(disk, "/data/wal/\(victim.segment)", at: Int(victim.offset) + 30)
    let error = try Self.expectCorruption(disk)
    guard case .corruptRecord(.checksumMismatch) = error.kind else {
      Issue.record("expected a checksum mismatch, got \(error)")
      return
    }
    #expect(error.file == victim.segment)
    #expect(error.offset == victim.offset)
    #expect(error.lastGoodLSN == LSN(victim.lsn.rawValue - 1))
  }

  @Test func flippedByteInTheMiddleOfTheLastSegment() async throws {
    let disk = try await Self.makeLog()
    let frames = try Self.frames(disk)
    let last = frames.last!.segment
    let inLast = frames.filter { $0.segment == last }
    #expect(inLast.count >= 3)
    let victim = inLast[inLast.count / 2]
    Self.flipByte(disk, "/data/wal/\(last)", at: Int(victim.offset) + 60)
    let error = try Self.expectCorruption(disk)
    guard case .corruptRecord = error.kind else {
      Issue.record("expected corruption, got \(error)")
      return
    }
    #expect(
      error.file == last && error.offset == victim.offset && error.lastGoodLSN == LSN(victim.lsn.rawValue - 1)
    )
    // The damaged length field is caught too: later frames prove the record had been synced.
    let disk2 = try await Self.makeLog()
    Self.flipByte(disk2, "/data/wal/\(last)", at: Int(victim.offset) + 1)
    #expect(try Self.expectCorruption(disk2).offset == victim.offset)
  }

  /// The frames after a damaged one prove it had been synced whatever their type: a quorum change
  /// written after the damaged transaction was flushed must make it corruption, not a torn tail
  /// that recovery would cut (the scan for later frames used to skip type 3).
  @Test func damageFollowedOnlyByASyncedQuorumChangeIsCorruption() async throws {
    let disk = SimulatedFileSystem()
    let (log, _) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: disk, logger: quietLogger)
    for index in 0..<3 { _ = try await log.append(makeTransaction(writer: 0, index: index)) }
    _ = try await log.appendQuorumChange(2)
    await log.close()
    let frames = try Self.frames(disk)
    #expect(frames.count == 4)
    let victim = frames[2]
    Self.flipByte(disk, "/data/wal/\(victim.segment)", at: Int(victim.offset) + 60)
    let error = try Self.expectCorruption(disk)
    #expect(error.offset == victim.offset && error.lastGoodLSN == LSN(victim.lsn.rawValue - 1), "\(error)")
  }

  /// Rewrites one byte of the body of the frame at `offset` and fixes its checksum, as a writer
  /// of another version (or a bug) would have written it: whole, but not what this version reads.
  static func rewrite(
    _ disk: SimulatedFileSystem, _ path: String, frameAt offset: Int64, bodyByte: Int, to value: UInt8
  ) {
    var bytes = disk.contents(of: path)!
    let start = Int(offset)
    let length = bytes.withUnsafeBytes {
      Int($0.loadUnaligned(fromByteOffset: start, as: UInt32.self).littleEndian)
    }
    bytes[start + 8 + bodyByte] = value
    let crc = bytes.withUnsafeBytes {
      CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[start + 8..<start + 8 + length]))
    }
    withUnsafeBytes(of: crc.littleEndian) { bytes.replaceSubrange(start + 4..<start + 8, with: $0) }
    disk.overwrite(path, with: bytes)
  }

  /// A checksummed record this version cannot read (a type it does not know, flags it does not
  /// know) at the very end of the log is not a torn write: the log refuses to open instead of
  /// cutting it, since a newer MemWAL may have synced and acknowledged it.
  @Test(arguments: [(0, UInt8(9)), (1, UInt8(1))])
  func aWholeRecordThisVersionCannotReadIsNeverCutAsATornTail(bodyByte: Int, value: UInt8) async throws {
    let disk = try await Self.makeLog(count: 5)
    let victim = try Self.frames(disk).last!
    Self.rewrite(disk, "/data/wal/\(victim.segment)", frameAt: victim.offset, bodyByte: bodyByte, to: value)
    let error = try Self.expectCorruption(disk)
    guard case .corruptRecord(let problem) = error.kind, problem.isWrittenWhole else {
      Issue.record("expected an unreadable whole record, got \(error)")
      return
    }
    #expect(error.offset == victim.offset)
    if bodyByte == 0 {
      #expect(problem == .unknownRecordType(9) && error.description.contains("newer version"))
    }
  }

  /// Damage followed by a record of a type this version does not know, written after the damaged
  /// one was synced: that later record still proves the damage hit synced data.
  @Test func aLaterRecordOfAnUnknownTypeStillVouchesForSyncedData() async throws {
    let disk = try await Self.makeLog(count: 5)
    let frames = try Self.frames(disk)
    let (victim, later) = (frames[3], frames[4])
    #expect(victim.segment == later.segment)
    Self.rewrite(disk, "/data/wal/\(later.segment)", frameAt: later.offset, bodyByte: 0, to: 9)
    Self.flipByte(disk, "/data/wal/\(victim.segment)", at: Int(victim.offset) + 60)
    let error = try Self.expectCorruption(disk)
    #expect(error.offset == victim.offset && error.lastGoodLSN == LSN(victim.lsn.rawValue - 1), "\(error)")
  }

  @Test func truncatedSegmentHeader() async throws {
    for which in ["middle", "last"] {
      let disk = try await Self.makeLog()
      let segments = try disk.contentsOfDirectory("/data/wal")
      let victim = which == "middle" ? segments[1] : segments.last!
      disk.overwrite("/data/wal/\(victim)", with: Array(disk.contents(of: "/data/wal/\(victim)")!.prefix(30)))
      let error = try Self.expectCorruption(disk)
      #expect(error.kind == .badSegmentHeader(.truncated(30)), "\(which): \(error)")
      #expect(error.file == victim && error.offset == 0)
    }
  }

  @Test func missingSegmentInTheMiddle() async throws {
    let disk = try await Self.makeLog()
    let segments = try disk.contentsOfDirectory("/data/wal")
    #expect(segments.count >= 3)
    try disk.removeFile("/data/wal/\(segments[1])")
    let error = try Self.expectCorruption(disk)
    let expected = LogFileNames.segmentLSN(segments[1])!
    #expect(error.kind == .missingSegment(expected: expected))
    #expect(error.file == segments[2])
    #expect(error.lastGoodLSN == LSN(expected.rawValue - 1))
  }

  @Test func segmentFromAnotherCluster() async throws {
    let disk = try await Self.makeLog()
    var options = smallOptions()
    options.clusterID = ClusterID(high: 1, low: 1)
    #expect(throws: WALCorruption.self) {
      _ = try WriteAheadLog.open(directory: "/data", options: options, fileSystem: disk, logger: quietLogger)
    }
  }

  @Test func corruptNewestCheckpointFallsBackToTheOlderOne() async throws {
    let disk = SimulatedFileSystem()
    var (log, _) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: disk, logger: quietLogger)
    for index in 0..<80 { _ = try await log.append(makeTransaction(writer: 0, index: index)) }
    try log.writeCheckpoint(at: LSN(30), payload: Array("thirty".utf8))
    try log.writeCheckpoint(at: LSN(60), payload: Array("sixty".utf8))
    _ = try log.retireSegments(below: LSN(61))
    await log.close()
    let newest = "/data/checkpoints/" + LogFileNames.checkpoint(lsn: LSN(60))
    Self.flipByte(disk, newest, at: 70)
    let logs = CollectedLogs()
    let recovery: WriteAheadLog.Recovery
    (log, recovery) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: disk, logger: makeLogger(logs))
    #expect(recovery.checkpoint?.lsn == LSN(30))
    #expect(recovery.checkpoint?.payload == Array("thirty".utf8))
    #expect(recovery.rejectedCheckpoints == [LogFileNames.checkpoint(lsn: LSN(60))])
    #expect(disk.fileExists(newest + ".broken") && !disk.fileExists(newest))
    #expect(logs.contains("falling back"))
    // The segments replay from the older checkpoint needs were kept.
    #expect(try allRecords(log, from: LSN(31)).map(\.lsn.rawValue) == Array(31...80))
    await log.close()
  }

  @Test func tornTailIsCutAndLogged() async throws {
    let disk = try await Self.makeLog(count: 10)
    let frames = try Self.frames(disk)
    let last = frames.last!
    let path = "/data/wal/\(last.segment)"
    // Cut the last frame in half and leave some garbage behind it, as a torn write would.
    var bytes = disk.contents(of: path)!
    for index in (Int(last.offset) + 40)..<(Int(last.offset) + 400) {
      bytes[index] = UInt8(truncatingIfNeeded: index &* 13)
    }
    disk.overwrite(path, with: bytes)
    let logs = CollectedLogs()
    let (log, recovery) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: disk, logger: makeLogger(logs))
    #expect(recovery.truncatedTail?.offset == last.offset)
    #expect(recovery.truncatedTail?.lastGoodLSN == LSN(9))
    #expect(recovery.lastLSN == LSN(9))
    #expect(logs.contains("truncating the torn tail") && logs.contains("offset=\(last.offset)"))
    let next = try await log.append(makeTransaction(writer: 1, index: 0))
    #expect(next.lsn == LSN(10))
    await log.close()
    let (again, second) = try WriteAheadLog.open(
      directory: "/data", options: smallOptions(), fileSystem: disk, logger: quietLogger)
    #expect(second.truncatedTail == nil && second.lastLSN == LSN(10))
    #expect(try allRecords(again).last.flatMap(identity) == "w1-0")
    await again.close()
  }

  @Test func checkpointAheadOfTheLogIsRefused() async throws {
    let disk = try await Self.makeLog(count: 20)
    // A checkpoint claiming LSN 500 when the log ends at 20: the log lost records the stores saw.
    let checkpoint = Checkpoint(
      lsn: LSN(500), epoch: Epoch(1), timestampMicros: 1, lastTransactionID: TransactionID(500),
      epochHistory: [], payload: [])
    _ = try CheckpointStore(directory: "/data/checkpoints", fileSystem: disk).write(
      checkpoint, clusterID: smallOptions().clusterID!)
    let error = try Self.expectCorruption(disk)
    guard case .checkpointGap = error.kind else {
      Issue.record("expected a checkpoint gap, got \(error)")
      return
    }
  }
}
