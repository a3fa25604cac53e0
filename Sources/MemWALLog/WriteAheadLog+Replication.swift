import Logging
import MemWALCore

/// What `WriteAheadLog.truncate(directory:after:)` cut and where it kept it.
public struct TruncationReport: Sendable, Equatable {
  /// The last LSN the log keeps.
  public var keptThrough: LSN
  /// The first and last LSN cut.
  public var firstRemoved: LSN
  public var lastRemoved: LSN
  /// The epoch of the first record cut.
  public var epoch: Epoch
  /// The archive file holding the cut records (a segment file: header + frames), under `archive/`.
  public var archiveFile: String
  /// Checkpoints that reflected records past `keptThrough`, moved to the archive too.
  public var removedCheckpoints: [LSN]
  public var removedRecords: UInt64 { lastRemoved.rawValue - firstRemoved.rawValue + 1 }
}

/// Why an offline log operation (truncation, installing a checkpoint) was refused.
public enum LogSurgeryError: Error, Equatable, Sendable, CustomStringConvertible {
  /// The cut would go below the oldest checkpoint or segment the log has, so the stores could not
  /// be rebuilt from what stays.
  case cannotTruncate(String)
  /// The checkpoint file received is not a valid checkpoint of this cluster.
  case invalidCheckpoint(String)

  public var description: String {
    switch self {
    case .cannotTruncate(let detail): return "cannot truncate the log: \(detail)"
    case .invalidCheckpoint(let detail): return "cannot install the checkpoint: \(detail)"
    }
  }
}

extension WriteAheadLog {
  /// Archive name for a divergent tail starting at `lsn` in `epoch` (DESIGN G4).
  /// A second, different tail with the same start (`variant` 2, 3, …) is named `….<variant>.wal`.
  public static func divergedArchiveName(epoch: Epoch, firstLSN: LSN, variant: Int = 1) -> String {
    let stem = "diverged-\(epoch.rawValue)-\(String(firstLSN.rawValue).leftPadded(to: 20))"
    return variant == 1 ? stem + ".wal" : stem + ".\(variant).wal"
  }

  /// Whether the file at `path` begins with every byte of the file at `prefix`.
  static func startsWith(_ path: String, contentsOf prefix: String, fileSystem: FileSystem) throws -> Bool {
    let whole = try fileSystem.openFile(path, mode: .readOnly)
    defer { whole.close() }
    let part = try fileSystem.openFile(prefix, mode: .readOnly)
    defer { part.close() }
    let size = try part.size()
    guard try whole.size() >= size else { return false }
    var offset: Int64 = 0
    while offset < size {
      let count = Int(min(size - offset, 1 << 20))
      guard try whole.read(at: offset, count: count) == part.read(at: offset, count: count) else {
        return false
      }
      offset += Int64(count)
    }
    return true
  }

  /// Cuts every record after `lsn` from the (closed) log under `directory`, after first copying
  /// them, as a segment file (header + the frames as they were), to
  /// `archive/diverged-<epoch>-<lsn>.wal`. Checkpoints newer than `lsn` are moved to the archive as
  /// well, since the stores they hold saw records that are no longer in the log. Returns nil when
  /// the log holds nothing after `lsn`.
  ///
  /// Crash-safe in this order: the archive file is made durable (temporary name → fsync → rename →
  /// fsync directory) before anything is removed; later segments are removed newest first; the
  /// segment holding the cut is zeroed from the cut and fsynced. A crash part-way leaves a log that
  /// is still a valid log ending somewhere at or after the cut, and running the truncation again
  /// finishes it.
  public static func truncate(
    directory: String, after lsn: LSN, fileSystem: FileSystem = POSIXFileSystem(),
    logger: Logger = Logger(label: "memwal.wal")
  ) throws -> TruncationReport? {
    let layout = LogLayout(root: directory)
    let scanner = LogScanner(walDirectory: layout.walDirectory, fileSystem: fileSystem)
    let whole = try scanner.scan()
    guard whole.lastLSN > lsn, let clusterID = whole.clusterID else { return nil }
    guard let first = whole.firstLSN, first <= lsn.next else {
      throw LogSurgeryError.cannotTruncate(
        "the log starts at LSN \(whole.firstLSN ?? .zero), after LSN \(lsn): the records up to it are gone")
    }
    let checkpoints = CheckpointStore(directory: layout.checkpointDirectory, fileSystem: fileSystem)
    let kept = try checkpoints.list().filter { $0.lsn <= lsn }
    guard first == LSN(1) || kept.contains(where: { $0.lsn >= LSN(first.rawValue - 1) }) else {
      throw LogSurgeryError.cannotTruncate(
        "no checkpoint at or below LSN \(lsn) covers the records before the log's first LSN \(first)")
    }
    // `epoch` names the tail; `epochBefore` is the one in effect before its first record, which
    // the archive's header must carry (a tail that starts with an epoch change — a promotion cut
    // whole — would otherwise read as corrupt: found by `memwal chaos`, seed 3202).
    var cut: (segment: String, offset: Int64, previousCRC: UInt32, epoch: Epoch, epochBefore: Epoch)?
    try scanner.scan(visitFrom: lsn.next) { frame, name, offset in
      if frame.record.lsn == lsn.next {
        var before = frame.record.epoch
        if case .epochChange(let change) = frame.record.payload { before = change.previousEpoch }
        cut = (name, offset, frame.previousCRC, frame.record.epoch, before)
      }
      return false
    }
    guard let cut, let cutIndex = whole.segments.firstIndex(where: { $0.name == cut.segment }) else {
      throw LogSurgeryError.cannotTruncate("LSN \(lsn.next) was not found in the log")
    }

    // 1. The archive, durable before anything is removed.
    try fileSystem.createDirectory(layout.archiveDirectory)
    var archiveName = divergedArchiveName(epoch: cut.epoch, firstLSN: lsn.next)
    var archivePath = joinPath(layout.archiveDirectory, archiveName)
    let temporary = archivePath + LogFileNames.temporarySuffix
    if fileSystem.fileExists(temporary) { try fileSystem.removeFile(temporary) }
    let archive = try fileSystem.openFile(temporary, mode: .createNew)
    do {
      let header = SegmentHeader(
        clusterID: clusterID, firstLSN: lsn.next, epoch: cut.epochBefore, chainSeedCRC: cut.previousCRC)
      try archive.write(header.encoded(), at: 0)
      var offset = Int64(SegmentHeader.size)
      for (index, segment) in whole.segments.enumerated() where index >= cutIndex {
        let start = index == cutIndex ? cut.offset : Int64(SegmentHeader.size)
        guard segment.endOffset > start else { continue }
        let file = try fileSystem.openFile(joinPath(layout.walDirectory, segment.name), mode: .readOnly)
        defer { file.close() }
        let bytes = try file.read(at: start, count: Int(segment.endOffset - start))
        try archive.write(bytes, at: offset)
        offset += Int64(bytes.count)
      }
      try archive.sync()
      archive.close()
    } catch {
      archive.close()
      throw error
    }
    // A truncation run again after a crash finds the archive it made before; segments it removed
    // since are missing from this copy, which is then a prefix of that one and is dropped instead
    // of replacing it. Any other archive of the same name is kept and this one gets the next name.
    var variant = 1
    var isArchivedAlready = false
    while fileSystem.fileExists(archivePath) {
      isArchivedAlready = try startsWith(archivePath, contentsOf: temporary, fileSystem: fileSystem)
      if isArchivedAlready { break }
      variant += 1
      guard variant <= 1_000 else {
        throw LogSurgeryError.cannotTruncate("1,000 archives named like \(archiveName) exist already")
      }
      archiveName = divergedArchiveName(epoch: cut.epoch, firstLSN: lsn.next, variant: variant)
      archivePath = joinPath(layout.archiveDirectory, archiveName)
    }
    if isArchivedAlready {
      try fileSystem.removeFile(temporary)
    } else {
      try fileSystem.rename(temporary, to: archivePath)
    }
    try fileSystem.syncDirectory(layout.archiveDirectory)

    // 2. Checkpoints past the cut go to the archive.
    var removedCheckpoints: [LSN] = []
    for entry in try checkpoints.list() where entry.lsn > lsn {
      try fileSystem.rename(
        joinPath(layout.checkpointDirectory, entry.name),
        to: joinPath(layout.archiveDirectory, "diverged-" + entry.name))
      removedCheckpoints.append(entry.lsn)
    }
    if !removedCheckpoints.isEmpty {
      try fileSystem.syncDirectory(layout.archiveDirectory)
      try fileSystem.syncDirectory(layout.checkpointDirectory)
    }

    // 3. Later segments, newest first; then the segment holding the cut, or all of it when the cut
    // is its first frame (and it is not the log's first segment).
    let dropWhole = cut.offset == Int64(SegmentHeader.size) && cutIndex > 0
    for index in stride(from: whole.segments.count - 1, through: dropWhole ? cutIndex : cutIndex + 1, by: -1)
    {
      try fileSystem.removeFile(joinPath(layout.walDirectory, whole.segments[index].name))
      try fileSystem.syncDirectory(layout.walDirectory)
    }
    if !dropWhole {
      let file = try fileSystem.openFile(joinPath(layout.walDirectory, cut.segment), mode: .readWrite)
      defer { file.close() }
      try file.writeZeros(from: cut.offset, to: try file.size())
      try file.sync()
    }
    let report = TruncationReport(
      keptThrough: lsn, firstRemoved: lsn.next, lastRemoved: whole.lastLSN, epoch: cut.epoch,
      archiveFile: joinPath("archive", archiveName), removedCheckpoints: removedCheckpoints)
    logger.warning(
      "cut a divergent tail from the log and archived it",
      metadata: [
        "kept_through": "\(lsn)", "removed": "\(report.removedRecords)", "archive": "\(report.archiveFile)",
        "epoch": "\(cut.epoch)",
      ])
    return report
  }

  /// Replaces the (closed) log under `directory` with a checkpoint received from the primary: the
  /// checkpoint file is validated (format, checksums, cluster) and written the crash-safe way, then
  /// every older segment and checkpoint is removed and an empty segment starting right after the
  /// checkpoint's LSN is created. `open` then recovers the node from the checkpoint. The segments it
  /// replaces are moved to `archive/` when `archiveReplaced` is set.
  public static func installCheckpoint(
    directory: String, checkpointFile bytes: [UInt8], expectedClusterID: ClusterID?,
    segmentBytes: Int = Options().segmentBytes, archiveReplaced: Bool = false,
    fileSystem: FileSystem = POSIXFileSystem(), logger: Logger = Logger(label: "memwal.wal")
  ) throws -> Checkpoint {
    let checkpoint: Checkpoint
    let clusterID: ClusterID
    switch CheckpointFormat.decode(bytes) {
    case .failure(let problem): throw LogSurgeryError.invalidCheckpoint("\(problem)")
    case .success(let (decoded, cluster)):
      if let expectedClusterID, expectedClusterID != cluster {
        throw LogSurgeryError.invalidCheckpoint(
          "it belongs to cluster \(cluster), this node to cluster \(expectedClusterID)")
      }
      checkpoint = decoded
      clusterID = cluster
    }
    let layout = LogLayout(root: directory)
    for path in [layout.root, layout.walDirectory, layout.checkpointDirectory] {
      try fileSystem.createDirectory(path)
    }
    // 1. A marker naming the checkpoint being installed: from here until it is removed, `open`
    // finishes the installation instead of recovering a half-replaced log.
    let marker = joinPath(layout.checkpointDirectory, installMarkerName(lsn: checkpoint.lsn))
    if !fileSystem.fileExists(marker) {
      let file = try fileSystem.openFile(marker, mode: .createNew)
      try file.sync()
      file.close()
    }
    try fileSystem.syncDirectory(layout.checkpointDirectory)
    // 2. The checkpoint itself, durable.
    let store = CheckpointStore(directory: layout.checkpointDirectory, fileSystem: fileSystem)
    _ = try store.write(checkpoint, clusterID: clusterID)
    // 3. Everything else goes; an empty segment starts after the checkpoint; the marker goes last.
    let names = try finishInstall(
      checkpoint: checkpoint, clusterID: clusterID, layout: layout, segmentBytes: segmentBytes,
      archiveReplaced: archiveReplaced, fileSystem: fileSystem)
    logger.info(
      "installed a checkpoint from the primary",
      metadata: [
        "lsn": "\(checkpoint.lsn)", "epoch": "\(checkpoint.epoch)", "replaced_segments": "\(names.count)",
      ])
    return checkpoint
  }

  static let installMarkerPrefix = "installing-"

  static func installMarkerName(lsn: LSN) -> String {
    installMarkerPrefix + String(lsn.rawValue).leftPadded(to: 20)
  }

  /// Steps 3 and on of `installCheckpoint`, also run by `open` when it finds a marker left by an
  /// installation that a crash interrupted (the checkpoint was durable before the marker could go).
  /// Returns the names of the segments replaced.
  @discardableResult
  static func finishInstall(
    checkpoint: Checkpoint, clusterID: ClusterID, layout: LogLayout, segmentBytes: Int, archiveReplaced: Bool,
    fileSystem: FileSystem
  ) throws -> [String] {
    let store = CheckpointStore(directory: layout.checkpointDirectory, fileSystem: fileSystem)
    for entry in try store.list() where entry.lsn != checkpoint.lsn {
      try fileSystem.removeFile(joinPath(layout.checkpointDirectory, entry.name))
    }
    try fileSystem.syncDirectory(layout.checkpointDirectory)
    let scanner = LogScanner(walDirectory: layout.walDirectory, fileSystem: fileSystem)
    let names = try scanner.segmentNames()
    if archiveReplaced && !names.isEmpty { try fileSystem.createDirectory(layout.archiveDirectory) }
    for name in names.reversed() {
      let path = joinPath(layout.walDirectory, name)
      if archiveReplaced {
        try fileSystem.rename(path, to: joinPath(layout.archiveDirectory, "replaced-" + name))
      } else {
        try fileSystem.removeFile(path)
      }
    }
    if archiveReplaced && !names.isEmpty { try fileSystem.syncDirectory(layout.archiveDirectory) }
    try fileSystem.syncDirectory(layout.walDirectory)
    let header = SegmentHeader(
      clusterID: clusterID, firstLSN: checkpoint.lsn.next, epoch: checkpoint.epoch, chainSeedCRC: 0)
    let writer = try createSegment(
      header, layout: layout, segmentBytes: segmentBytes, zeroFill: true, fileSystem: fileSystem)
    writer.file.close()
    try fileSystem.removeFile(joinPath(layout.checkpointDirectory, installMarkerName(lsn: checkpoint.lsn)))
    try fileSystem.syncDirectory(layout.checkpointDirectory)
    return names
  }

  /// Finishes a checkpoint installation a crash interrupted, if `open` finds its marker.
  static func resumeInterruptedInstall(
    layout: LogLayout, options: Options, fileSystem: FileSystem, logger: Logger
  ) throws {
    guard fileSystem.isDirectory(layout.checkpointDirectory) else { return }
    let markers = try fileSystem.contentsOfDirectory(layout.checkpointDirectory)
      .filter { $0.hasPrefix(installMarkerPrefix) }
    for marker in markers {
      guard let value = UInt64(marker.dropFirst(installMarkerPrefix.count)) else { continue }
      let lsn = LSN(value)
      let store = CheckpointStore(directory: layout.checkpointDirectory, fileSystem: fileSystem)
      let name = LogFileNames.checkpoint(lsn: lsn)
      if fileSystem.fileExists(joinPath(layout.checkpointDirectory, name)),
        case .success(let (checkpoint, cluster)) = try store.load(name)
      {
        logger.warning(
          "finishing a checkpoint installation interrupted by a crash", metadata: ["lsn": "\(lsn)"])
        try finishInstall(
          checkpoint: checkpoint, clusterID: cluster, layout: layout, segmentBytes: options.segmentBytes,
          archiveReplaced: options.archiveRetiredSegments, fileSystem: fileSystem)
      } else {
        // The checkpoint never became durable, so nothing was replaced yet: the old log stands.
        logger.warning(
          "dropping an installation marker whose checkpoint never landed", metadata: ["lsn": "\(lsn)"])
        try fileSystem.removeFile(joinPath(layout.checkpointDirectory, marker))
        try fileSystem.syncDirectory(layout.checkpointDirectory)
      }
    }
  }

  /// The newest kept checkpoint file's bytes and LSN (what a primary streams to a follower that
  /// needs records it no longer has), or nil when there is none.
  public func newestCheckpointFile() throws -> (lsn: LSN, bytes: [UInt8])? {
    try maintenanceLock.withLock {
      guard let newest = keptCheckpoints.first else { return nil }
      let file = try fileSystem.openFile(
        joinPath(layout.checkpointDirectory, LogFileNames.checkpoint(lsn: newest)), mode: .readOnly)
      defer { file.close() }
      return (newest, try file.readAll())
    }
  }

  /// The first LSN the log still holds in its segments.
  public var oldestRetainedLSN: LSN { lock.withLock { segments.first?.firstLSN ?? LSN(1) } }
}
