import Logging
import MemWALCore
import Synchronization

/// The write-ahead log: segments, group commit, checkpoints, retention and recovery (DESIGN §3).
///
/// Writers call `append` from any task. Entries queue up; one flusher thread takes whatever is
/// queued (up to `maximumBatchBytes`), frames it, issues one `write` and — if any entry in the batch
/// asked for `local` or stronger — one `fdatasync`, and only then resumes the writers.
/// Durable before acknowledged: no writer is told `local` before the sync covering its record returned.
///
/// An I/O failure inside the flusher (an `fdatasync` error above all) stops the log for good, as in
/// PostgreSQL: the page cache may have dropped the data, so retrying could acknowledge lost writes.
public final class WriteAheadLog: @unchecked Sendable {
  public struct Options: Sendable {
    /// Size of each segment file, preallocated when it is created.
    public var segmentBytes: Int = 64 << 20
    /// Largest record body accepted; larger appends are refused before anything is written.
    public var maximumRecordBytes: Int = 16 << 20
    /// Most bytes framed into one write by the flusher.
    public var maximumBatchBytes: Int = 4 << 20
    /// Most bytes waiting in the queue; further appends wait for room (back-pressure).
    public var maximumQueuedBytes: Int = 64 << 20
    /// Group-commit window. When fewer writers are queued than the flusher expects back (those
    /// its last batch acknowledged, plus those already waiting), it waits up to this long for them
    /// before writing, so that concurrent writers share one fsync instead of splitting into
    /// alternating half batches. It never waits when the queue holds all it expects (a lone
    /// writer is never delayed), nor past a full batch. 0 turns the wait off.
    public var groupCommitWindowMicroseconds: Int = 0
    /// The cluster a new log belongs to; an existing log must match it. `nil`: a new log gets a
    /// random one, an existing log keeps its own.
    public var clusterID: ClusterID?
    /// The epoch of a brand-new log.
    public var initialEpoch: Epoch = Epoch(1)
    /// Keep a zero-filled spare segment ready on a background thread, so rolling to a new segment
    /// does not stall writers while 64 MiB are zero-filled.
    public var prepareSegmentsInBackground = true
    /// Bytes of the newest records kept decoded in memory for followers (`tail`).
    public var tailBytes = 64 << 20
    /// Write real zeros over new segments (after preallocating them). Preallocation alone leaves
    /// "unwritten" extents on ext4 and XFS, and converting them costs a metadata write in every later
    /// `fdatasync`; zero-filling pays that once, at creation, for the price of writing the segment twice.
    public var zeroFillSegments = true
    /// Move retired segments to `archive/` instead of deleting them.
    public var archiveRetiredSegments = false
    public var clock: any WALClock = SystemClock()
    /// Called once, on the flusher thread, when an I/O failure stops the log (`stoppedBy` is set and
    /// queued writers have been failed by then; writers of the failing batch may still be waiting
    /// for their answer). `memwal serve` ends the process from here: a node whose log has stopped
    /// must not go on answering the controller as if it were healthy.
    public var failureHandler: (@Sendable (WALError) -> Void)?

    public init() {}

    func validate() throws {
      let minimumSegment =
        SegmentHeader.size + WALFormat.aligned(WALFormat.frameHeaderSize + WALFormat.recordBodyHeaderSize) * 4
      guard segmentBytes >= minimumSegment, segmentBytes <= 1 << 30 else {
        throw WALError.invalidInput(
          .invalid(
            field: "segment_bytes", reason: "\(segmentBytes) is outside \(minimumSegment)...\(1 << 30)"))
      }
      let largestFitting =
        segmentBytes - SegmentHeader.size - WALFormat.frameHeaderSize - WALFormat.frameAlignment
      guard maximumRecordBytes >= WALFormat.recordBodyHeaderSize,
        maximumRecordBytes <= min(largestFitting, WALFormat.maximumRecordBodySize)
      else {
        throw WALError.invalidInput(
          .invalid(
            field: "maximum_record_bytes",
            reason: "\(maximumRecordBytes) must fit in a segment of \(segmentBytes) bytes"))
      }
      guard maximumBatchBytes > 0, maximumQueuedBytes >= maximumBatchBytes,
        groupCommitWindowMicroseconds >= 0, groupCommitWindowMicroseconds <= 100_000
      else {
        throw WALError.invalidInput(
          .invalid(
            field: "batch limits",
            reason: "need 0 < batch bytes ≤ queued bytes and a group-commit window of at most 100 ms"))
      }
    }
  }

  /// What a write got: its place in the log and the durability actually reached.
  public struct AppendResult: Sendable, Equatable {
    public var lsn: LSN
    public var epoch: Epoch
    public var transactionID: TransactionID
    public var timestampMicros: Int64
    public var durability: Durability
  }

  /// What `open` found and did.
  public struct Recovery: Sendable {
    /// The checkpoint to load, if any; replay the records after its LSN.
    public var checkpoint: Checkpoint?
    public var checkpointFile: String?
    /// Newer checkpoint files that were unreadable and set aside (renamed `.broken`).
    public var rejectedCheckpoints: [String] = []
    public var lastLSN: LSN = .zero
    public var epoch: Epoch = .zero
    /// The torn tail that was cut, if the last run ended in a crash mid-write.
    public var truncatedTail: TornTail?
    public var isNewLog = false
  }

  public let layout: LogLayout
  public let options: Options
  public let clusterID: ClusterID
  public let fileSystem: FileSystem
  let logger: Logger

  /// How far the log has been written and fsynced.
  public let positions: LogPositions
  /// The newest written records, decoded, for followers of the log.
  public let tail: LogTail
  /// Records, batches, syncs and their time.
  public let statistics = LogStatistics()
  private let preparer: SegmentPreparer?
  /// Appends queued so far (for the flusher's lock-free poll), and taken by the flusher so far.
  private let enqueued = Atomic<Int>(0)
  private var taken = 0

  // Guarded by `lock`.
  let lock = ConditionLock()
  private var queue: [PendingAppend] = []
  private var queueHead = 0
  private var queuedBytes = 0
  private var spaceWaiters: [CheckedContinuation<Void, Never>] = []
  private var isClosing = false
  /// Set by `sync()`: the flusher fsyncs what is written even if no writer asked for `local`.
  private var isSyncRequested = false
  /// While the flusher gathers a batch: how many queued entries it waits for (0 when not gathering).
  private var gatherTarget = 0
  private var isFlusherWaiting = false
  private var hasStopped = false
  private var stopWaiters: [CheckedContinuation<Void, Never>] = []
  private var failure: WALError?
  var segments: [SegmentSummary]
  private var epochHistoryShared: [EpochStart]
  private var currentEpochShared: Epoch

  // Owned by the flusher thread once it runs.
  private var writer: SegmentWriter
  private var nextLSN: LSN
  private var lastCRC: UInt32
  private var lastTimestamp: Int64
  private var lastTransaction: TransactionID
  private var epoch: Epoch
  private var syncedThrough: LSN
  private var batchBuffer: [UInt8] = []
  private var tailPending: [WALRecord] = []
  private var tailPendingSizes: [Int] = []

  // Serializes checkpoints and retention.
  let maintenanceLock = ConditionLock()
  var keptCheckpoints: [LSN]

  struct PendingAppend {
    var value: WALPayload
    var payload: [UInt8]
    var newEpoch: Epoch
    var durability: Durability
    var frameBytes: Int
    var ticket: AppendTicket
    /// A record received from the primary: written with its own LSN, epoch, transaction id and time.
    var replicated: WALRecord? = nil
    var recordType: UInt8 { value.recordType }
  }

  struct SegmentWriter {
    var file: StorageFile
    var name: String
    var offset: Int
    var hasRequestedSpare = false
  }

  private init(
    layout: LogLayout, options: Options, clusterID: ClusterID, fileSystem: FileSystem, logger: Logger,
    scan: ScanResult, writer: SegmentWriter, keptCheckpoints: [LSN]
  ) {
    self.layout = layout
    self.options = options
    self.clusterID = clusterID
    self.fileSystem = fileSystem
    self.logger = logger
    self.segments = scan.segments
    self.writer = writer
    self.nextLSN = scan.lastLSN.next
    self.lastCRC = scan.lastCRC
    self.lastTimestamp = scan.lastTimestampMicros
    self.lastTransaction = scan.lastTransactionID
    self.epoch = scan.epoch
    self.syncedThrough = scan.lastLSN
    self.epochHistoryShared = scan.epochHistory
    self.currentEpochShared = scan.epoch
    self.keptCheckpoints = keptCheckpoints
    self.preparer =
      options.prepareSegmentsInBackground
      ? SegmentPreparer(
        walDirectory: layout.walDirectory, segmentBytes: options.segmentBytes,
        zeroFill: options.zeroFillSegments,
        fileSystem: fileSystem, logger: logger)
      : nil
    self.positions = LogPositions(written: scan.lastLSN, flushed: scan.lastLSN)
    self.tail = LogTail(capacityBytes: options.tailBytes, startLSN: scan.lastLSN.next)
  }

  // MARK: opening

  /// Opens (or creates) the log under `directory` and recovers it: newest valid checkpoint, then
  /// every segment checked; a torn tail is cut (and logged); corruption before the tail throws
  /// `WALCorruption` naming file, offset and last good LSN. Replay with `readRecords(from:)`
  /// starting after `recovery.checkpoint?.lsn`.
  public static func open(
    directory: String, options: Options = Options(), fileSystem: FileSystem = POSIXFileSystem(),
    logger: Logger = Logger(label: "memwal.wal")
  ) throws -> (WriteAheadLog, Recovery) {
    try options.validate()
    let layout = LogLayout(root: directory)
    for path in [layout.root, layout.walDirectory, layout.checkpointDirectory] {
      try fileSystem.createDirectory(path)
    }
    try removeTemporaryFiles(in: layout.walDirectory, fileSystem: fileSystem)
    try removeTemporaryFiles(in: layout.checkpointDirectory, fileSystem: fileSystem)
    try resumeInterruptedInstall(layout: layout, options: options, fileSystem: fileSystem, logger: logger)

    var recovery = Recovery()
    let checkpoints = CheckpointStore(directory: layout.checkpointDirectory, fileSystem: fileSystem)
    var kept: [LSN] = []
    for entry in try checkpoints.list() {
      switch try checkpoints.load(entry.name) {
      case .success(let (checkpoint, cluster)) where options.clusterID == nil || cluster == options.clusterID:
        kept.append(checkpoint.lsn)
        if recovery.checkpoint == nil {
          recovery.checkpoint = checkpoint
          recovery.checkpointFile = entry.name
        }
      case .success(let (_, cluster)):
        throw WALCorruption(
          kind: .clusterMismatch(expected: options.clusterID!, found: cluster), file: entry.name, offset: 16,
          lastGoodLSN: .zero)
      case .failure(let problem):
        guard recovery.checkpoint == nil else { continue }
        let path = joinPath(layout.checkpointDirectory, entry.name)
        logger.warning(
          "checkpoint unreadable; falling back to an older one",
          metadata: ["file": "\(entry.name)", "problem": "\(problem)"])
        try fileSystem.rename(path, to: path + ".broken")
        try fileSystem.syncDirectory(layout.checkpointDirectory)
        recovery.rejectedCheckpoints.append(entry.name)
      }
    }

    let scanner = LogScanner(walDirectory: layout.walDirectory, fileSystem: fileSystem)
    var scan = try scanner.scan(checkpoint: recovery.checkpoint, expectedClusterID: options.clusterID)
    let clusterID: ClusterID
    let writer: SegmentWriter
    if scan.segments.isEmpty {
      if let checkpoint = recovery.checkpoint {
        throw WALCorruption(
          kind: .checkpointGap("no WAL segments, but a checkpoint at LSN \(checkpoint.lsn)"),
          file: layout.walDirectory,
          offset: 0, lastGoodLSN: .zero)
      }
      var random = SystemRandomNumberGenerator()
      clusterID = options.clusterID ?? ClusterID(high: random.next(), low: random.next())
      let header = SegmentHeader(
        clusterID: clusterID, firstLSN: LSN(1), epoch: options.initialEpoch, chainSeedCRC: 0)
      writer = try createSegment(
        header, layout: layout, segmentBytes: options.segmentBytes, zeroFill: options.zeroFillSegments,
        fileSystem: fileSystem)
      try fileSystem.syncDirectory(layout.root)
      scan.epoch = options.initialEpoch
      scan.epochHistory = [EpochStart(epoch: options.initialEpoch, firstLSN: LSN(1))]
      scan.segments = [
        SegmentSummary(
          name: writer.name, header: header, lastLSN: .zero, endOffset: Int64(SegmentHeader.size), lastCRC: 0,
          fileSize: Int64(options.segmentBytes))
      ]
      recovery.isNewLog = true
      logger.info(
        "created a new write-ahead log", metadata: ["directory": "\(directory)", "cluster": "\(clusterID)"])
    } else {
      clusterID = scan.clusterID!
      let last = scan.segments[scan.segments.count - 1]
      let file = try fileSystem.openFile(joinPath(layout.walDirectory, last.name), mode: .readWrite)
      if let torn = scan.tornTail {
        logger.warning(
          "truncating the torn tail of the write-ahead log",
          metadata: [
            "file": "\(torn.file)", "offset": "\(torn.offset)", "lsn": "\(torn.lastGoodLSN)",
            "problem": "\(torn.problem)",
          ])
        // Zeros over the torn bytes, so the next scan finds a clean end there.
        try file.writeZeros(from: torn.offset, to: last.fileSize)
        recovery.truncatedTail = torn
      }
      if last.fileSize < Int64(options.segmentBytes) {
        try file.preallocate(size: Int64(options.segmentBytes))
        try file.writeZeros(from: last.fileSize, to: Int64(options.segmentBytes))
      }
      // Everything recovered is made durable before new records are appended after it.
      try file.sync()
      writer = SegmentWriter(file: file, name: last.name, offset: Int(last.endOffset))
    }
    recovery.lastLSN = scan.lastLSN
    recovery.epoch = scan.epoch
    let log = WriteAheadLog(
      layout: layout, options: options, clusterID: clusterID, fileSystem: fileSystem, logger: logger,
      scan: scan,
      writer: writer, keptCheckpoints: kept)
    startThread(name: "memwal-flusher") { [log] in log.runFlusher() }
    return (log, recovery)
  }

  private static func removeTemporaryFiles(in directory: String, fileSystem: FileSystem) throws {
    for name in try fileSystem.contentsOfDirectory(directory)
    where name.hasSuffix(LogFileNames.temporarySuffix) {
      try fileSystem.removeFile(joinPath(directory, name))
    }
  }

  /// Creates a segment the crash-safe way: write the header and preallocate under a temporary
  /// name, fsync, rename into place, fsync the directory.
  static func createSegment(
    _ header: SegmentHeader, layout: LogLayout, segmentBytes: Int, zeroFill: Bool, fileSystem: FileSystem,
    spare: (file: StorageFile, path: String)? = nil
  ) throws -> SegmentWriter {
    let name = LogFileNames.segment(firstLSN: header.firstLSN)
    let path = joinPath(layout.walDirectory, name)
    let file: StorageFile
    let temporary: String
    if let spare {
      (file, temporary) = spare
    } else {
      temporary = path + LogFileNames.temporarySuffix
      file = try fileSystem.openFile(temporary, mode: .createNew)
    }
    do {
      if spare == nil {
        try file.preallocate(size: Int64(segmentBytes))
        if zeroFill { try file.writeZeros(from: Int64(SegmentHeader.size), to: Int64(segmentBytes)) }
      }
      try file.write(header.encoded(), at: 0)
      try file.sync()
      try fileSystem.rename(temporary, to: path)
      try fileSystem.syncDirectory(layout.walDirectory)
    } catch {
      file.close()
      throw error
    }
    return SegmentWriter(file: file, name: name, offset: SegmentHeader.size)
  }

  // MARK: state

  /// The epoch new records are written in.
  public var currentEpoch: Epoch { lock.withLock { currentEpochShared } }
  /// Every epoch the log has recorded, oldest first.
  public var epochHistory: [EpochStart] { lock.withLock { epochHistoryShared } }
  /// The failure that stopped the log, if any.
  public var stoppedBy: WALError? { lock.withLock { failure } }
  /// Segment files currently in the log, oldest first.
  public var segmentNames: [String] { lock.withLock { segments.map(\.name) } }
  /// LSNs of the checkpoints kept, newest first.
  public var checkpointLSNs: [LSN] { maintenanceLock.withLock { keptCheckpoints } }

  // MARK: appending

  /// Appends a transaction and returns once it has reached `durability` on this node (`local` at most;
  /// stronger levels are `local` here, and replication waits for the rest). Waits for room first
  /// when the queue is full.
  public func append(_ transaction: WALTransaction, durability: Durability = .local) async throws
    -> AppendResult
  {
    let payload = try Self.encode(.transaction(transaction))
    try await waitForRoom(frameBytes: try frameSize(of: payload))
    return try await enqueue(
      .transaction(transaction), encoded: payload, newEpoch: .zero, durability: durability
    )
    .result()
  }

  /// Queues a transaction and returns at once with its ticket: the transaction's place in the log is
  /// fixed when this returns, so a caller that holds its own lock around `submit` gets log order equal
  /// to its own order. Does not wait for room (see `waitForRoom`).
  public func submit(_ transaction: WALTransaction, durability: Durability = .local) throws -> AppendTicket {
    let payload = try Self.encode(.transaction(transaction))
    return try enqueue(.transaction(transaction), encoded: payload, newEpoch: .zero, durability: durability)
  }

  /// Records the start of epoch `newEpoch` (led by `leader`); later records carry it. Refused unless
  /// `newEpoch` is above the log's epoch when the record is written.
  public func appendEpochChange(to newEpoch: Epoch, leader: String, durability: Durability = .local)
    async throws
    -> AppendResult
  {
    let change = EpochChange(previousEpoch: .zero, leader: leader)
    let payload = try Self.encode(.epochChange(change))
    return try await enqueue(
      .epochChange(change), encoded: payload, newEpoch: newEpoch, durability: durability
    )
    .result()
  }

  /// Records that k is now `quorumFollowers` (`memwal ctl set-quorum`), in the current epoch.
  public func appendQuorumChange(_ quorumFollowers: Int, durability: Durability = .local) async throws
    -> AppendResult
  {
    let payload: WALPayload = .quorumChange(QuorumChange(quorumFollowers: quorumFollowers))
    return try await enqueue(
      payload, encoded: try Self.encode(payload), newEpoch: .zero, durability: durability
    )
    .result()
  }

  /// Queues a record received from the primary (a follower's log): it keeps the primary's LSN,
  /// epoch, transaction id and commit time. It must be the next LSN of this log and in its epoch,
  /// or an epoch-change record to a higher epoch; otherwise its ticket fails with
  /// `WALError.outOfOrder` or `.staleEpoch` and nothing is written. Queue records in LSN order
  /// from one caller. Does not wait for room (see `waitForRoom`).
  public func submitReplicated(_ record: WALRecord, durability: Durability = .local) throws -> AppendTicket {
    let payload = try Self.encode(record.payload)
    return try enqueue(
      record.payload, encoded: payload, newEpoch: record.epoch, durability: durability, replicated: record)
  }

  private static func encode(_ payload: WALPayload) throws -> [UInt8] {
    do {
      try WALFrame.validate(payload)
    } catch {
      throw WALError.invalidInput(error)
    }
    return WALFrame.encodePayload(payload)
  }

  private func frameSize(of payload: [UInt8]) throws -> Int {
    let bodyBytes = WALFormat.recordBodyHeaderSize + payload.count
    guard bodyBytes <= options.maximumRecordBytes else {
      throw WALError.invalidInput(.recordTooLarge(bytes: bodyBytes, limit: options.maximumRecordBytes))
    }
    return WALFormat.aligned(WALFormat.frameHeaderSize + bodyBytes)
  }

  /// Back-pressure: waits while the queue holds more than `maximumQueuedBytes`.
  public func waitForRoom(frameBytes: Int = 0) async throws {
    while true {
      let mustWait: Bool = try lock.withLock {
        if let failure { throw failure }
        if isClosing { throw WALError.closed }
        return queuedBytes > 0 && queuedBytes + frameBytes > options.maximumQueuedBytes
      }
      guard mustWait else { return }
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let resumeNow = lock.withLock {
          if failure != nil || isClosing || queuedBytes + frameBytes <= options.maximumQueuedBytes {
            return true
          }
          spaceWaiters.append(continuation)
          return false
        }
        if resumeNow { continuation.resume() }
      }
    }
  }

  private func enqueue(
    _ value: WALPayload, encoded payload: [UInt8], newEpoch: Epoch, durability: Durability,
    replicated: WALRecord? = nil
  ) throws -> AppendTicket {
    let frameBytes = try frameSize(of: payload)
    let ticket = AppendTicket()
    try lock.withLock {
      if let failure { throw failure }
      if isClosing { throw WALError.closed }
      queue.append(
        PendingAppend(
          value: value, payload: payload, newEpoch: newEpoch, durability: durability, frameBytes: frameBytes,
          ticket: ticket, replicated: replicated))
      queuedBytes += frameBytes
      enqueued.add(1, ordering: .releasing)
      let queued = queue.count - queueHead
      if isFlusherWaiting
        && (gatherTarget == 0 || queued >= gatherTarget || queuedBytes >= options.maximumBatchBytes)
      {
        lock.signal()
      }
    }
    return ticket
  }

  /// Makes everything written so far durable (records appended at `memory` included) and returns
  /// once it is.
  public func sync() async throws {
    let target = positions.written.value
    guard positions.flushed.value < target else { return }
    lock.withLock {
      isSyncRequested = true
      lock.signal()
    }
    try await positions.flushed.wait(for: target)
  }

  private func syncWritten() {
    let last = LSN(nextLSN.rawValue - 1)
    guard positions.flushed.value < last else { return }
    do {
      try syncSegment()
      positions.flushed.advance(to: last)
    } catch {
      logger.critical("write-ahead log stopped: fsync failed", metadata: ["error": "\(error)"])
      stop(with: .failed("\(error)"))
    }
  }

  /// Waits until `lsn` is durable on this node (`local`) or at least written (`memory`).
  public func waitUntil(_ lsn: LSN, reaches durability: Durability, timeout: Duration? = nil) async throws {
    switch durability {
    case .memory: try await positions.written.wait(for: lsn, timeout: timeout)
    default: try await positions.flushed.wait(for: lsn, timeout: timeout)
    }
  }

  // MARK: the flusher

  private func runFlusher() {
    var batch: [PendingAppend] = []
    var returning = 0
    var leftBehind = 0
    while true {
      var spaceToResume: [CheckedContinuation<Void, Never>] = []
      spinForWork()
      lock.lock()
      isFlusherWaiting = true
      while queueHead == queue.count && !isClosing && !isSyncRequested { lock.wait() }
      if queueHead == queue.count && isSyncRequested {
        isSyncRequested = false
        isFlusherWaiting = false
        lock.unlock()
        syncWritten()
        continue
      }
      if queueHead == queue.count {
        hasStopped = true
        let waiters = stopWaiters
        stopWaiters.removeAll()
        lock.unlock()
        for waiter in waiters { waiter.resume() }
        return
      }
      let gatherStart = monotonicNanoseconds()
      gather(expecting: returning + leftBehind)
      statistics.gatherNanoseconds.add(Int(monotonicNanoseconds() - gatherStart), ordering: .relaxed)
      isFlusherWaiting = false
      var bytes = 0
      while queueHead < queue.count
        && (batch.isEmpty || bytes + queue[queueHead].frameBytes <= options.maximumBatchBytes)
      {
        bytes += queue[queueHead].frameBytes
        batch.append(queue[queueHead])
        queueHead += 1
        taken += 1
      }
      if queueHead == queue.count {
        queue.removeAll(keepingCapacity: true)
        queueHead = 0
      } else if queueHead > 4096 {
        queue.removeFirst(queueHead)
        queueHead = 0
      }
      queuedBytes -= bytes
      leftBehind = queue.count - queueHead
      swap(&spaceToResume, &spaceWaiters)
      lock.unlock()
      for waiter in spaceToResume { waiter.resume() }
      statistics.batches.add(1, ordering: .relaxed)
      statistics.records.add(batch.count, ordering: .relaxed)
      process(batch)
      returning = batch.count
      batch.removeAll(keepingCapacity: true)
    }
  }

  /// Before sleeping on the condition variable, polls briefly for the next append: a writer that
  /// was just answered usually appends again within microseconds, and catching it without a
  /// sleep and wake-up takes a thread switch off every acknowledgement.
  private func spinForWork() {
    let seen = enqueued.load(ordering: .acquiring)
    guard seen == taken else { return }
    let deadline = monotonicNanoseconds() + Self.spinNanoseconds
    while enqueued.load(ordering: .acquiring) == seen && monotonicNanoseconds() < deadline {}
  }

  static let spinNanoseconds: UInt64 = 40_000

  /// The group-commit window (lock held): waits, bounded, until `target` entries are queued — the
  /// writers the last batch answered, who usually append again at once, plus those it left queued.
  private func gather(expecting target: Int) {
    let window = options.groupCommitWindowMicroseconds
    guard window > 0, target > 1, queue.count - queueHead < target, !isClosing else { return }
    gatherTarget = target
    defer { gatherTarget = 0 }
    let deadline = monotonicNanoseconds() + UInt64(window) * 1000
    while queue.count - queueHead < target && queuedBytes < options.maximumBatchBytes && !isClosing {
      let now = monotonicNanoseconds()
      guard now < deadline else { return }
      lock.wait(microseconds: max(1, Int((deadline - now) / 1000)))
    }
  }

  /// Frames, writes and (if asked) syncs one batch, then answers its writers.
  private func process(_ batch: [PendingAppend]) {
    var outcomes: [Acknowledgement] = []
    outcomes.reserveCapacity(batch.count)
    var unanswered = batch.startIndex
    var bufferStart = writer.offset
    batchBuffer.removeAll(keepingCapacity: true)
    var needsSync = false
    var newHistory: [EpochStart] = []

    do {
      for (index, entry) in batch.enumerated() {
        if let record = entry.replicated, let refusal = refusal(of: record, type: entry.recordType) {
          outcomes.append(Acknowledgement(ticket: entry.ticket, result: .failure(refusal)))
          unanswered = index + 1
          continue
        }
        if entry.recordType == WALFormat.RecordType.epochChange && entry.newEpoch <= epoch {
          outcomes.append(
            Acknowledgement(
              ticket: entry.ticket,
              result: .failure(.staleEpoch(current: epoch, requested: entry.newEpoch))))
          unanswered = index + 1
          continue
        }
        if writer.offset + batchBuffer.count + entry.frameBytes > options.segmentBytes {
          try writeBuffer(at: bufferStart)
          try rollSegment()
          bufferStart = writer.offset
        }
        let lsn = nextLSN
        nextLSN = lsn.next
        var payload = entry.payload
        var value = entry.value
        if let record = entry.replicated {
          lastTimestamp = record.timestampMicros
          lastTransaction = record.transactionID
        } else {
          lastTimestamp = max(options.clock.microsecondsSinceEpoch(), lastTimestamp + 1)
          lastTransaction = TransactionID(lastTransaction.rawValue + 1)
          if case .epochChange(var change) = value {
            change.previousEpoch = epoch
            value = .epochChange(change)
            // The previous epoch is only known here, in log order.
            payload.withUnsafeMutableBytes {
              $0.storeBytes(of: epoch.rawValue.littleEndian, toByteOffset: 0, as: UInt64.self)
            }
          }
        }
        if entry.recordType == WALFormat.RecordType.epochChange {
          epoch = entry.newEpoch
          newHistory.append(EpochStart(epoch: epoch, firstLSN: lsn))
        }
        lastCRC = WALFrame.appendFrame(
          to: &batchBuffer, lsn: lsn, epoch: epoch, transactionID: lastTransaction,
          timestampMicros: lastTimestamp,
          recordType: entry.recordType, encodedPayload: payload, previousCRC: lastCRC,
          syncedThroughLSN: syncedThrough)
        if entry.durability >= .local { needsSync = true }
        tailPending.append(
          WALRecord(
            lsn: lsn, epoch: epoch, transactionID: lastTransaction, timestampMicros: lastTimestamp,
            payload: value))
        tailPendingSizes.append(entry.frameBytes)
        outcomes.append(
          Acknowledgement(
            ticket: entry.ticket,
            result: .success(
              AppendResult(
                lsn: lsn, epoch: epoch, transactionID: lastTransaction, timestampMicros: lastTimestamp,
                durability: .memory))))
        unanswered = index + 1
      }
      try writeBuffer(at: bufferStart)
      if needsSync {
        try syncSegment()
        syncedThrough = LSN(nextLSN.rawValue - 1)
        positions.flushed.advance(to: syncedThrough)
      }
    } catch {
      let failure = WALError.failed("\(error)")
      logger.critical("write-ahead log stopped", metadata: ["error": "\(error)", "lsn": "\(syncedThrough)"])
      stop(with: failure)
      for index in unanswered..<batch.count {
        outcomes.append(
          Acknowledgement(ticket: batch[index].ticket, result: .success(placeholder)))
      }
      for outcome in outcomes {
        // Records framed in this batch may or may not be on disk: their outcome is unknown.
        if case .failure(let error) = outcome.result {
          outcome.ticket.fail(error)
        } else {
          outcome.ticket.fail(failure)
        }
      }
      return
    }
    if !newHistory.isEmpty {
      lock.withLock {
        epochHistoryShared.append(contentsOf: newHistory)
        currentEpochShared = epoch
      }
    }
    let acknowledgeStart = monotonicNanoseconds()
    defer {
      statistics.acknowledgeNanoseconds.add(
        Int(monotonicNanoseconds() - acknowledgeStart), ordering: .relaxed)
    }
    for index in outcomes.indices {
      if case .success(var result) = outcomes[index].result {
        result.durability = result.lsn <= syncedThrough ? .local : .memory
        outcomes[index].result = .success(result)
      }
    }
    Delivery.deliver(outcomes[...])
  }

  /// Why a record from the primary cannot follow this log's last record, if it cannot.
  private func refusal(of record: WALRecord, type: UInt8) -> WALError? {
    guard record.lsn == nextLSN else { return .outOfOrder(expected: nextLSN, received: record.lsn) }
    if type == WALFormat.RecordType.epochChange {
      guard record.epoch > epoch else { return .staleEpoch(current: epoch, requested: record.epoch) }
    } else if record.epoch != epoch {
      return .epochMismatch(current: epoch, received: record.epoch, lsn: record.lsn)
    }
    guard record.timestampMicros > lastTimestamp else {
      return .outOfOrder(expected: nextLSN, received: record.lsn)
    }
    return nil
  }

  private var placeholder: AppendResult {
    AppendResult(lsn: .zero, epoch: .zero, transactionID: .none, timestampMicros: 0, durability: .memory)
  }

  private func syncSegment() throws {
    let start = monotonicNanoseconds()
    try writer.file.sync()
    statistics.recordSync(nanoseconds: Int(monotonicNanoseconds() - start))
  }

  private func writeBuffer(at offset: Int) throws {
    guard !batchBuffer.isEmpty else { return }
    let start = monotonicNanoseconds()
    try batchBuffer.withUnsafeBytes { try writer.file.write($0, at: Int64(offset)) }
    statistics.writeNanoseconds.add(Int(monotonicNanoseconds() - start), ordering: .relaxed)
    statistics.bytesWritten.add(batchBuffer.count, ordering: .relaxed)
    writer.offset = offset + batchBuffer.count
    if writer.offset > options.segmentBytes / 2 && !writer.hasRequestedSpare {
      writer.hasRequestedSpare = true
      preparer?.request()
    }
    batchBuffer.removeAll(keepingCapacity: true)
    let last = LSN(nextLSN.rawValue - 1)
    // Readers of the tail learn of records only once they are in it.
    tail.append(tailPending, sizes: tailPendingSizes)
    tailPending.removeAll(keepingCapacity: true)
    tailPendingSizes.removeAll(keepingCapacity: true)
    positions.written.advance(to: last)
    lock.withLock {
      segments[segments.count - 1].lastLSN = last
      segments[segments.count - 1].lastCRC = lastCRC
      segments[segments.count - 1].endOffset = Int64(writer.offset)
    }
  }

  /// Closes the full segment (synced first: a newer segment exists only over a durable older one)
  /// and starts the next.
  private func rollSegment() throws {
    let last = LSN(nextLSN.rawValue - 1)
    if syncedThrough < last {
      try syncSegment()
      syncedThrough = last
      positions.flushed.advance(to: last)
    }
    let header = SegmentHeader(clusterID: clusterID, firstLSN: nextLSN, epoch: epoch, chainSeedCRC: lastCRC)
    let next = try Self.createSegment(
      header, layout: layout, segmentBytes: options.segmentBytes, zeroFill: options.zeroFillSegments,
      fileSystem: fileSystem,
      spare: preparer?.takeSpare())
    writer.file.close()
    writer = next
    statistics.segmentsCreated.add(1, ordering: .relaxed)
    lock.withLock {
      segments.append(
        SegmentSummary(
          name: next.name, header: header, lastLSN: last, endOffset: Int64(SegmentHeader.size),
          lastCRC: lastCRC,
          fileSize: Int64(options.segmentBytes)))
    }
    logger.debug("started a new segment", metadata: ["file": "\(next.name)", "lsn": "\(nextLSN)"])
  }

  private func stop(with error: WALError) {
    let (pending, space, isFirst) = lock.withLock {
      () -> ([PendingAppend], [CheckedContinuation<Void, Never>], Bool) in
      let isFirst = failure == nil
      if isFirst { failure = error }
      let pending = Array(queue[queueHead...])
      queue.removeAll()
      queueHead = 0
      queuedBytes = 0
      defer { spaceWaiters.removeAll() }
      return (pending, spaceWaiters, isFirst)
    }
    for entry in pending { entry.ticket.fail(error) }
    for waiter in space { waiter.resume() }
    positions.written.fail(error)
    positions.flushed.fail(error)
    if isFirst { options.failureHandler?(error) }
  }

  // MARK: closing

  /// Stops taking writes, lets the flusher finish what is queued, and closes the files.
  public func close() async {
    let alreadyStopped = lock.withLock {
      isClosing = true
      lock.signal()
      return hasStopped
    }
    if !alreadyStopped {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let done = lock.withLock {
          if hasStopped { return true }
          stopWaiters.append(continuation)
          return false
        }
        if done { continuation.resume() }
      }
    }
    let space = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
      defer { spaceWaiters.removeAll() }
      return spaceWaiters
    }
    for waiter in space { waiter.resume() }
    await preparer?.stop()
    writer.file.close()
  }
}

/// The log's two positions: `written` (the highest LSN handed to the operating system) and
/// `flushed` (the highest LSN made durable by `fdatasync`).
public final class LogPositions: Sendable {
  public let written: LSNWatermark
  public let flushed: LSNWatermark
  init(written: LSN, flushed: LSN) {
    self.written = LSNWatermark(written)
    self.flushed = LSNWatermark(flushed)
  }
}
