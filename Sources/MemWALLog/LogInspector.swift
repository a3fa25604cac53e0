import Logging
import MemWALCore

/// What `memwal wal verify` reports: every checkpoint's state and the result of a full scan.
public struct LogInspection: Sendable {
  public struct CheckpointState: Sendable {
    public var name: String
    public var lsn: LSN
    public var problem: HeaderProblem?
  }

  public var layout: LogLayout
  public var checkpoints: [CheckpointState] = []
  /// The checkpoint replay would start from (the newest valid one).
  public var replayCheckpoint: Checkpoint?
  public var scan: ScanResult?
  /// The first damage found, if any.
  public var corruption: WALCorruption?
  public var recordCount: UInt64 = 0

  /// True only when every segment and checkpoint is valid and nothing needs cutting.
  public var isValid: Bool {
    corruption == nil && scan?.tornTail == nil && checkpoints.allSatisfy { $0.problem == nil }
  }

  /// The first problem, as one line with file and offset.
  public var firstProblem: String? {
    if let corruption { return corruption.description }
    if let bad = checkpoints.first(where: { $0.problem != nil }) {
      return "invalid checkpoint \(joinPath(layout.checkpointDirectory, bad.name)) at byte 0: \(bad.problem!)"
    }
    if let torn = scan?.tornTail {
      return "\(torn) (recoverable: `memwal wal repair` or the next start cuts it)"
    }
    return nil
  }
}

/// Read-only inspection and explicit repair of a log directory, for the `memwal wal` commands.
public enum LogInspector {
  /// Checks the whole log and every checkpoint without changing anything.
  public static func inspect(_ path: String, fileSystem: FileSystem = POSIXFileSystem()) throws
    -> LogInspection
  {
    let layout = LogLayout.resolve(path, fileSystem: fileSystem)
    guard fileSystem.isDirectory(layout.walDirectory) else {
      throw FileSystemError(
        operation: "open log", path: layout.walDirectory, errno: 2, reason: "no wal/ directory here")
    }
    var inspection = LogInspection(layout: layout)
    let store = CheckpointStore(directory: layout.checkpointDirectory, fileSystem: fileSystem)
    var cluster: ClusterID?
    for entry in try store.list() {
      switch try store.load(entry.name) {
      case .success(let (checkpoint, id)):
        if let cluster, cluster != id {
          inspection.checkpoints.append(
            .init(name: entry.name, lsn: entry.lsn, problem: .invalidField("cluster \(id), not \(cluster)")))
          continue
        }
        cluster = id
        inspection.checkpoints.append(.init(name: entry.name, lsn: entry.lsn, problem: nil))
        if inspection.replayCheckpoint == nil { inspection.replayCheckpoint = checkpoint }
      case .failure(let problem):
        inspection.checkpoints.append(.init(name: entry.name, lsn: entry.lsn, problem: problem))
      }
    }
    let scanner = LogScanner(walDirectory: layout.walDirectory, fileSystem: fileSystem)
    do {
      let scan = try scanner.scan(checkpoint: inspection.replayCheckpoint, expectedClusterID: cluster)
      inspection.scan = scan
      inspection.recordCount = scan.segments.reduce(0) { $0 + $1.recordCount }
    } catch let corruption as WALCorruption {
      inspection.corruption = corruption
    }
    return inspection
  }

  public struct RepairReport: Sendable {
    /// What was done, one line each.
    public var actions: [String] = []
    /// The log's last LSN after the repair.
    public var lastLSN: LSN = .zero
    /// True when the repair dropped more than an unsynced tail.
    public var droppedSyncedData = false
  }

  public enum RepairError: Error, CustomStringConvertible {
    /// The damage is before the tail; repairing would drop acknowledged records.
    case needsForce(String)
    /// Nothing the tool can do safely (the log is missing records it needs).
    case unrepairable(String)

    public var description: String {
      switch self {
      case .needsForce(let detail):
        return "\(detail)\nrepairing would drop records that were synced (and may have been acknowledged); "
          + "rerun with --force to cut the log there (the dropped files are kept as .broken copies)"
      case .unrepairable(let detail): return "cannot repair: \(detail)"
      }
    }
  }

  /// Cuts a torn tail (after keeping a `.broken` copy of the segment) and sets aside unreadable
  /// checkpoints. Damage before the tail is cut only with `force`: the damaged segment is copied to
  /// `.broken` and truncated, later segments and checkpoints past the cut are renamed `.broken`.
  public static func repair(
    _ path: String, force: Bool, fileSystem: FileSystem = POSIXFileSystem(),
    logger: Logger = Logger(label: "memwal.repair")
  ) throws -> RepairReport {
    var report = RepairReport()
    var inspection = try inspect(path, fileSystem: fileSystem)
    let layout = inspection.layout
    for bad in inspection.checkpoints where bad.problem != nil {
      let file = joinPath(layout.checkpointDirectory, bad.name)
      try fileSystem.rename(file, to: try brokenName(for: file, fileSystem: fileSystem))
      try fileSystem.syncDirectory(layout.checkpointDirectory)
      report.actions.append("set aside unreadable checkpoint \(bad.name) (\(bad.problem!))")
    }
    if !report.actions.isEmpty { inspection = try inspect(path, fileSystem: fileSystem) }

    if let corruption = inspection.corruption {
      guard force else { throw RepairError.needsForce(corruption.description) }
      try cut(at: corruption, layout: layout, fileSystem: fileSystem, report: &report)
      report.droppedSyncedData = true
      inspection = try inspect(path, fileSystem: fileSystem)
      if let remaining = inspection.corruption { throw RepairError.unrepairable(remaining.description) }
    }
    if let torn = inspection.scan?.tornTail {
      let file = joinPath(layout.walDirectory, torn.file)
      let copy = try keepCopy(of: file, fileSystem: fileSystem)
      try truncate(file, at: torn.offset, fileSystem: fileSystem)
      report.actions.append(
        "cut the torn tail of \(torn.file) at byte \(torn.offset) after LSN \(torn.lastGoodLSN) (copy kept as \(lastPathComponent(copy)))"
      )
      inspection = try inspect(path, fileSystem: fileSystem)
    }
    if let problem = inspection.firstProblem { throw RepairError.unrepairable(problem) }
    report.lastLSN = inspection.scan?.lastLSN ?? .zero
    for action in report.actions { logger.warning("\(action)") }
    return report
  }

  private static func cut(
    at corruption: WALCorruption, layout: LogLayout, fileSystem: FileSystem, report: inout RepairReport
  ) throws {
    let scanner = LogScanner(walDirectory: layout.walDirectory, fileSystem: fileSystem)
    let names = try scanner.segmentNames()
    guard let index = names.firstIndex(of: corruption.file) else {
      throw RepairError.unrepairable(corruption.description)
    }
    if case .checkpointGap = corruption.kind { throw RepairError.unrepairable(corruption.description) }
    var firstToSetAside = index + 1
    switch corruption.kind {
    case .badSegmentHeader, .missingSegment, .clusterMismatch:
      firstToSetAside = index
    case .brokenSequence where corruption.offset == 48:
      firstToSetAside = index
    default:
      let file = joinPath(layout.walDirectory, corruption.file)
      let copy = try keepCopy(of: file, fileSystem: fileSystem)
      try truncate(file, at: corruption.offset, fileSystem: fileSystem)
      report.actions.append(
        "cut \(corruption.file) at byte \(corruption.offset) after LSN \(corruption.lastGoodLSN) (copy kept as \(lastPathComponent(copy)))"
      )
    }
    for name in names[firstToSetAside...] {
      let file = joinPath(layout.walDirectory, name)
      try fileSystem.rename(file, to: try brokenName(for: file, fileSystem: fileSystem))
      report.actions.append("set aside segment \(name)")
    }
    try fileSystem.syncDirectory(layout.walDirectory)
    // Checkpoints past the new end describe records the log no longer has.
    let store = CheckpointStore(directory: layout.checkpointDirectory, fileSystem: fileSystem)
    for entry in try store.list() where entry.lsn > corruption.lastGoodLSN {
      let file = joinPath(layout.checkpointDirectory, entry.name)
      try fileSystem.rename(file, to: try brokenName(for: file, fileSystem: fileSystem))
      report.actions.append("set aside checkpoint \(entry.name), which is past the cut")
    }
    try fileSystem.syncDirectory(layout.checkpointDirectory)
  }

  private static func brokenName(for path: String, fileSystem: FileSystem) throws -> String {
    var candidate = path + ".broken"
    var suffix = 1
    while fileSystem.fileExists(candidate) {
      suffix += 1
      candidate = path + ".broken.\(suffix)"
    }
    return candidate
  }

  /// Copies a file to a `.broken` name, durably, before anything is cut from it.
  private static func keepCopy(of path: String, fileSystem: FileSystem) throws -> String {
    let destination = try brokenName(for: path, fileSystem: fileSystem)
    let source = try fileSystem.openFile(path, mode: .readOnly)
    defer { source.close() }
    let copy = try fileSystem.openFile(destination, mode: .createNew)
    defer { copy.close() }
    try copy.write(try source.readAll(), at: 0)
    try copy.sync()
    try fileSystem.syncDirectory(parentDirectory(of: path))
    return destination
  }

  /// Cuts a segment at `offset` by zero-filling the rest of it, durably.
  private static func truncate(_ path: String, at offset: Int64, fileSystem: FileSystem) throws {
    let file = try fileSystem.openFile(path, mode: .readWrite)
    defer { file.close() }
    try file.writeZeros(from: offset, to: try file.size())
    try file.sync()
  }
}
