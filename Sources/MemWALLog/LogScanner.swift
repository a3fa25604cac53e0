import MemWALCore

/// What a scan learned about one segment file.
public struct SegmentSummary: Sendable, Equatable {
  public var name: String
  public var header: SegmentHeader
  /// The last LSN in the segment (`firstLSN - 1` when it holds no record).
  public var lastLSN: LSN
  /// Offset just past the last valid frame: where the next frame goes.
  public var endOffset: Int64
  /// CRC of the last frame (the header's chain seed when empty).
  public var lastCRC: UInt32
  public var fileSize: Int64
  public var firstLSN: LSN { header.firstLSN }
  public var recordCount: UInt64 { lastLSN.rawValue + 1 - firstLSN.rawValue }
}

/// An unsynced tail that a crash left incomplete: safe to cut at `offset`.
public struct TornTail: Sendable, Equatable, CustomStringConvertible {
  public var file: String
  public var offset: Int64
  public var lastGoodLSN: LSN
  public var problem: FrameProblem
  /// Well-formed frames found after the tear that were never synced; they are dropped with it.
  public var discardedFrames: Int
  public var description: String {
    "torn tail in \(file) at byte \(offset) after LSN \(lastGoodLSN): \(problem)"
      + (discardedFrames > 0 ? "; \(discardedFrames) unsynced frames after it are dropped too" : "")
  }
}

/// The state of a whole log directory.
public struct ScanResult: Sendable {
  public var segments: [SegmentSummary] = []
  public var clusterID: ClusterID?
  public var lastLSN: LSN = .zero
  public var lastCRC: UInt32 = 0
  public var epoch: Epoch = .zero
  public var lastTimestampMicros: Int64 = 0
  public var lastTransactionID: TransactionID = .none
  public var epochHistory: [EpochStart] = []
  public var tornTail: TornTail?
  public var firstLSN: LSN? { segments.first?.firstLSN }
}

/// Reads and checks every segment of a log, in order, as recovery, `wal verify` and `wal dump` need.
///
/// The rules that tell a torn tail (cut it) from corruption (refuse to start), DESIGN G5:
/// - A frame that fails in any segment but the last is corruption: a newer segment is created only
///   after the older one was fsynced.
/// - In the last segment, a failing frame at offset X is corruption if a later well-formed frame says
///   (through its `syncedThroughLSN`) that the record expected at X had already been fsynced.
///   Otherwise X begins the unsynced tail a crash tore, and everything from X on is cut.
public struct LogScanner {
  public let walDirectory: String
  public let fileSystem: FileSystem
  public let maximumBodySize: Int

  public init(
    walDirectory: String, fileSystem: FileSystem, maximumBodySize: Int = WALFormat.maximumRecordBodySize
  ) {
    self.walDirectory = walDirectory
    self.fileSystem = fileSystem
    self.maximumBodySize = maximumBodySize
  }

  /// Segment file names in LSN order.
  public func segmentNames() throws -> [String] {
    guard fileSystem.isDirectory(walDirectory) else { return [] }
    return try fileSystem.contentsOfDirectory(walDirectory)
      .filter { LogFileNames.segmentLSN($0) != nil }
      .sorted()
  }

  /// Scans the log. `checkpoint` (if any) is where replay will start: the log must cover the
  /// records after it. `visit` sees every valid frame with an LSN of at least `visitFrom`, in order;
  /// returning false stops the scan early (the result then describes the log only up to there).
  @discardableResult
  public func scan(
    checkpoint: Checkpoint? = nil, expectedClusterID: ClusterID? = nil, visitFrom: LSN = LSN(1),
    visit: ((WALFrame, String, Int64) throws -> Bool)? = nil
  ) throws -> ScanResult {
    var result = ScanResult()
    result.clusterID = expectedClusterID
    let names = try segmentNames()
    var state = SequenceState()
    for (index, name) in names.enumerated() {
      let isLast = index == names.count - 1
      // Segments wholly before `visitFrom` are only checked when no visitor asks to skip them.
      if visit != nil, !isLast, let nextFirst = LogFileNames.segmentLSN(names[index + 1]),
        nextFirst <= visitFrom,
        visitFrom > LSN(1)
      {
        let header = try readHeader(name, lastGood: state.lastLSN)
        state.skip(to: header, nextFirst: nextFirst)
        result.segments.append(
          SegmentSummary(
            name: name, header: header, lastLSN: LSN(nextFirst.rawValue - 1), endOffset: -1, lastCRC: 0,
            fileSize: -1))
        continue
      }
      let stop = try scanSegment(
        name, isLast: isLast, checkpoint: checkpoint, state: &state, result: &result, visitFrom: visitFrom,
        visit: visit)
      if stop { break }
    }
    result.lastLSN = state.lastLSN
    result.lastCRC = state.lastCRC
    result.epoch = state.epoch
    result.lastTimestampMicros = state.lastTimestamp
    result.lastTransactionID = state.lastTransaction
    result.epochHistory = state.history
    if let checkpoint, let first = result.firstLSN {
      let file = result.segments.first?.name ?? walDirectory
      guard first <= checkpoint.lsn.next else {
        throw WALCorruption(
          kind: .checkpointGap(
            "the log starts at LSN \(first) but the checkpoint is at LSN \(checkpoint.lsn)"),
          file: file, offset: 0, lastGoodLSN: .zero)
      }
      guard result.lastLSN >= checkpoint.lsn || visit != nil else {
        throw WALCorruption(
          kind: .checkpointGap(
            "the log ends at LSN \(result.lastLSN), before the checkpoint's LSN \(checkpoint.lsn)"),
          file: result.segments.last?.name ?? file, offset: result.segments.last?.endOffset ?? 0,
          lastGoodLSN: result.lastLSN)
      }
      if result.epochHistory.first.map({ $0.firstLSN > LSN(1) }) ?? true {
        result.epochHistory = merge(checkpoint.epochHistory, result.epochHistory)
      }
    }
    return result
  }

  private func merge(_ older: [EpochStart], _ newer: [EpochStart]) -> [EpochStart] {
    var merged = older
    for start in newer where !merged.contains(where: { $0.epoch == start.epoch }) {
      if let last = merged.last, last.epoch > start.epoch { continue }
      merged.append(start)
    }
    return merged
  }

  func readHeader(_ name: String, lastGood: LSN) throws -> SegmentHeader {
    let file = try fileSystem.openFile(joinPath(walDirectory, name), mode: .readOnly)
    defer { file.close() }
    let bytes = try file.read(at: 0, count: SegmentHeader.size)
    switch SegmentHeader.decode(bytes) {
    case .success(let header): return header
    case .failure(let problem):
      throw WALCorruption(kind: .badSegmentHeader(problem), file: name, offset: 0, lastGoodLSN: lastGood)
    }
  }

  /// Running checks along the log.
  struct SequenceState {
    var started = false
    var lastLSN: LSN = .zero
    var lastCRC: UInt32 = 0
    var epoch: Epoch = .zero
    var lastTimestamp: Int64 = 0
    var lastTransaction: TransactionID = .none
    var history: [EpochStart] = []
    /// After skipped segments the next header's chain seed and epoch are taken as given.
    var trustNextHeader = false

    mutating func skip(to header: SegmentHeader, nextFirst: LSN) {
      started = true
      trustNextHeader = true
      lastLSN = LSN(nextFirst.rawValue - 1)
      epoch = header.epoch
      if history.isEmpty { history = [EpochStart(epoch: header.epoch, firstLSN: header.firstLSN)] }
    }
  }

  /// Returns true when the visitor asked to stop.
  private func scanSegment(
    _ name: String, isLast: Bool, checkpoint: Checkpoint?, state: inout SequenceState,
    result: inout ScanResult,
    visitFrom: LSN, visit: ((WALFrame, String, Int64) throws -> Bool)?
  ) throws -> Bool {
    let path = joinPath(walDirectory, name)
    let file = try fileSystem.openFile(path, mode: .readOnly)
    defer { file.close() }
    let bytes = try file.readAll()
    let header: SegmentHeader
    switch SegmentHeader.decode(bytes) {
    case .success(let decoded): header = decoded
    case .failure(let problem):
      throw WALCorruption(kind: .badSegmentHeader(problem), file: name, offset: 0, lastGoodLSN: state.lastLSN)
    }
    guard LogFileNames.segmentLSN(name) == header.firstLSN else {
      throw WALCorruption(
        kind: .badSegmentHeader(.invalidField("header says first LSN \(header.firstLSN)")), file: name,
        offset: 32,
        lastGoodLSN: state.lastLSN)
    }
    if let expected = result.clusterID, expected != header.clusterID {
      throw WALCorruption(
        kind: .clusterMismatch(expected: expected, found: header.clusterID), file: name, offset: 16,
        lastGoodLSN: state.lastLSN)
    }
    result.clusterID = header.clusterID
    try continueSequence(into: header, name: name, checkpoint: checkpoint, state: &state)

    var offset = SegmentHeader.size
    var summary = SegmentSummary(
      name: name, header: header, lastLSN: LSN(header.firstLSN.rawValue - 1), endOffset: Int64(offset),
      lastCRC: header.chainSeedCRC, fileSize: Int64(bytes.count))
    defer { result.segments.append(summary) }
    var stopped = false
    try bytes.withUnsafeBytes { raw in
      while offset < raw.count {
        let expectedLSN = state.lastLSN.next
        let decoded = WALFrame.decode(
          UnsafeRawBufferPointer(rebasing: raw[offset...]), maximumBodySize: maximumBodySize)
        var problem: FrameProblem
        switch decoded {
        case .success(let frame):
          if frame.record.lsn == expectedLSN && frame.previousCRC == state.lastCRC {
            try checkOrder(frame, name: name, offset: offset, state: &state)
            state.lastLSN = frame.record.lsn
            state.lastCRC = frame.crc
            summary.lastLSN = frame.record.lsn
            summary.lastCRC = frame.crc
            let frameOffset = offset
            offset += frame.encodedSize
            summary.endOffset = Int64(offset)
            if let visit, frame.record.lsn >= visitFrom, try !visit(frame, name, Int64(frameOffset)) {
              stopped = true
              return
            }
            continue
          }
          problem = .outOfSequence(
            "frame holds LSN \(frame.record.lsn) chained to \(hex(frame.previousCRC)); expected LSN \(expectedLSN) chained to \(hex(state.lastCRC))"
          )
        case .failure(let failure):
          problem = failure
        }
        try classifyEnd(
          raw, at: offset, problem: problem, name: name, isLast: isLast, expectedLSN: expectedLSN,
          result: &result)
        return
      }
    }
    return stopped
  }

  /// Header of a segment against the log so far: contiguous LSNs, an unbroken CRC chain, the same epoch.
  private func continueSequence(
    into header: SegmentHeader, name: String, checkpoint: Checkpoint?, state: inout SequenceState
  ) throws {
    if !state.started {
      state.started = true
      state.lastLSN = LSN(header.firstLSN.rawValue - 1)
      state.lastCRC = header.chainSeedCRC
      state.epoch = header.epoch
      if let checkpoint, checkpoint.lsn == state.lastLSN {
        state.lastTimestamp = checkpoint.timestampMicros
        state.lastTransaction = checkpoint.lastTransactionID
        state.history = checkpoint.epochHistory
      }
      if state.history.last.map({ $0.epoch < header.epoch }) ?? true {
        state.history.append(EpochStart(epoch: header.epoch, firstLSN: header.firstLSN))
      }
      return
    }
    guard header.firstLSN == state.lastLSN.next else {
      throw WALCorruption(
        kind: .missingSegment(expected: state.lastLSN.next), file: name, offset: 0, lastGoodLSN: state.lastLSN
      )
    }
    if state.trustNextHeader {
      state.trustNextHeader = false
      state.lastCRC = header.chainSeedCRC
      state.epoch = header.epoch
      return
    }
    guard header.chainSeedCRC == state.lastCRC, header.epoch == state.epoch else {
      throw WALCorruption(
        kind: .brokenSequence(
          "segment header chains to \(hex(header.chainSeedCRC)) in epoch \(header.epoch); the previous segment ended with \(hex(state.lastCRC)) in epoch \(state.epoch)"
        ), file: name, offset: 48, lastGoodLSN: state.lastLSN)
    }
  }

  /// The invariants a valid, correctly chained frame must still keep.
  private func checkOrder(_ frame: WALFrame, name: String, offset: Int, state: inout SequenceState) throws {
    let record = frame.record
    func fail(_ detail: String) -> WALCorruption {
      WALCorruption(
        kind: .brokenSequence(detail), file: name, offset: Int64(offset), lastGoodLSN: state.lastLSN)
    }
    if state.lastTimestamp != 0 || state.lastLSN > .zero, record.timestampMicros <= state.lastTimestamp {
      throw fail("LSN \(record.lsn) has time \(record.timestampMicros), not after \(state.lastTimestamp)")
    }
    guard record.transactionID > state.lastTransaction else {
      throw fail(
        "LSN \(record.lsn) has transaction \(record.transactionID), not after \(state.lastTransaction)")
    }
    state.lastTransaction = record.transactionID
    switch record.payload {
    case .transaction, .quorumChange:
      guard record.epoch == state.epoch else {
        throw fail("LSN \(record.lsn) in epoch \(record.epoch), log is in epoch \(state.epoch)")
      }
    case .epochChange(let change):
      guard record.epoch > state.epoch, change.previousEpoch == state.epoch else {
        throw fail(
          "LSN \(record.lsn) changes epoch \(change.previousEpoch) → \(record.epoch) while the log is in epoch \(state.epoch)"
        )
      }
      state.epoch = record.epoch
      state.history.append(EpochStart(epoch: record.epoch, firstLSN: record.lsn))
    }
    state.lastTimestamp = record.timestampMicros
  }

  /// Decides whether a frame that failed at `offset` is the normal end, a torn tail, or corruption.
  private func classifyEnd(
    _ raw: UnsafeRawBufferPointer, at offset: Int, problem: FrameProblem, name: String, isLast: Bool,
    expectedLSN: LSN, result: inout ScanResult
  ) throws {
    let lastGood = LSN(expectedLSN.rawValue - 1)
    let restIsZero = isZero(raw, from: offset)
    if problem == .empty && restIsZero { return }  // the normal end of the written part
    func corruption(_ problem: FrameProblem) -> WALCorruption {
      WALCorruption(kind: .corruptRecord(problem), file: name, offset: Int64(offset), lastGoodLSN: lastGood)
    }
    if problem.isWrittenWhole {
      // A checksummed record this version cannot read (a newer writer's, or a bug's) is not a
      // torn write: cutting it would drop synced data.
      throw corruption(problem)
    }
    guard isLast else {
      if problem == .empty {
        throw WALCorruption(kind: .unexpectedBytes, file: name, offset: Int64(offset), lastGoodLSN: lastGood)
      }
      throw corruption(problem)
    }
    var later = 0
    var probe = offset + WALFormat.frameAlignment
    while let (syncedThrough, at) = nextPlausibleFrame(raw, from: probe, minimumLSN: expectedLSN) {
      if syncedThrough >= expectedLSN {
        // A frame written after the one at `offset` had been fsynced: this is damage to synced data.
        throw corruption(problem == .empty ? .badLength(0) : problem)
      }
      later += 1
      probe = at + WALFormat.frameAlignment
    }
    result.tornTail = TornTail(
      file: name, offset: Int64(offset), lastGoodLSN: lastGood, problem: problem, discardedFrames: later)
  }

  private func isZero(_ raw: UnsafeRawBufferPointer, from offset: Int) -> Bool {
    var index = offset
    let count = raw.count
    // Word at a time; frames are 8-aligned.
    while index + 8 <= count {
      if raw.loadUnaligned(fromByteOffset: index, as: UInt64.self) != 0 { return false }
      index += 8
    }
    while index < count {
      if raw[index] != 0 { return false }
      index += 1
    }
    return true
  }

  /// The next aligned offset at or after `from` holding a frame written whole (its checksum is
  /// right) for an LSN of at least `minimumLSN`, with the `syncedThroughLSN` it carries. A frame
  /// this version cannot decode (a newer record type, say) counts too: its header fields are
  /// still the format's. Cheap field checks run before any checksum, so scanning garbage is fast.
  private func nextPlausibleFrame(_ raw: UnsafeRawBufferPointer, from start: Int, minimumLSN: LSN) -> (
    syncedThrough: LSN, at: Int
  )? {
    var probe = WALFormat.aligned(start)
    let minimumFrame = WALFormat.frameHeaderSize + WALFormat.recordBodyHeaderSize
    while probe + minimumFrame <= raw.count {
      defer { probe += WALFormat.frameAlignment }
      let length = Int(raw.loadUnaligned(fromByteOffset: probe, as: UInt32.self).littleEndian)
      guard length >= WALFormat.recordBodyHeaderSize, length <= maximumBodySize,
        probe + 8 + length <= raw.count
      else {
        continue
      }
      let lsn = raw.loadUnaligned(fromByteOffset: probe + 16, as: UInt64.self).littleEndian
      guard lsn >= minimumLSN.rawValue, lsn - minimumLSN.rawValue < 1 << 40 else { continue }
      switch WALFrame.decode(
        UnsafeRawBufferPointer(rebasing: raw[probe...]), maximumBodySize: maximumBodySize)
      {
      case .success(let frame):
        return (frame.syncedThroughLSN, probe)
      case .failure(let problem) where problem.isWrittenWhole:
        let synced = raw.loadUnaligned(fromByteOffset: probe + 8 + 40, as: UInt64.self).littleEndian
        return (LSN(synced), probe)
      case .failure:
        continue
      }
    }
    return nil
  }
}
