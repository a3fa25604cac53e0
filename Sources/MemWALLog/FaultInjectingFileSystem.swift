import Glibc
import Logging
import MemWALCore
import Synchronization

/// A file system that forwards every call to another one, except the calls a disk fault chosen
/// while the node runs makes fail. A test or the chaos harness picks the fault by writing one word
/// into a small control file (`testing.fault_file` in a node's configuration); the node notices
/// within `refreshInterval`. Test-only: a production node never has one.
///
/// | word | effect |
/// |---|---|
/// | `none`, an empty or missing file | nothing fails |
/// | `fsync_error` | every `sync()` and `syncDirectory` fails with EIO |
/// | `disk_full` | every `write`, `preallocate`, growing `truncate` and `openFile(.createNew)` fails with ENOSPC; reads work |
///
/// An unknown word counts as `none` and is logged once. The control file is read with plain POSIX
/// calls, never through the wrapped file system: it is a channel from outside the node, not part of
/// its disk.
public final class FaultInjectingFileSystem: FileSystem {
  /// A disk fault, by the word that selects it.
  public enum Mode: String, Sendable, CaseIterable {
    case none
    case fsyncError = "fsync_error"
    case diskFull = "disk_full"
  }

  public let base: FileSystem
  /// The control file holding the word.
  public let faultFile: String
  private let refreshNanoseconds: UInt64
  private let logger: Logger
  /// The mode in force, as its index in `Mode.allCases`.
  private let modeIndex = Atomic<Int>(0)
  /// When the control file is next read (monotonic nanoseconds). The caller that moves it forward
  /// is the one that reads, so the file is read at most once per interval whatever the load.
  private let nextReadNanoseconds = Atomic<UInt64>(0)
  /// The last unknown word logged, so each is logged once rather than at every read.
  private let lastUnknownWord = Mutex<String?>(nil)

  public init(
    wrapping base: FileSystem, faultFile: String, refreshInterval: Duration = .milliseconds(50),
    logger: Logger
  ) {
    self.base = base
    self.faultFile = faultFile
    let (seconds, attoseconds) = refreshInterval.components
    refreshNanoseconds = UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds / 1_000_000_000))
    self.logger = logger
    nextReadNanoseconds.store(monotonicNanoseconds() + refreshNanoseconds, ordering: .releasing)
    reload()
  }

  /// The fault in force, from a reading of the control file at most `refreshInterval` old.
  public var mode: Mode {
    let now = monotonicNanoseconds()
    let due = nextReadNanoseconds.load(ordering: .acquiring)
    if now >= due {
      let (won, _) = nextReadNanoseconds.compareExchange(
        expected: due, desired: now + refreshNanoseconds, ordering: .acquiringAndReleasing)
      if won { reload() }
    }
    return Mode.allCases[modeIndex.load(ordering: .acquiring)]
  }

  private func reload() {
    let word = Self.readWord(faultFile)
    let next: Mode
    if word.isEmpty {
      next = .none
    } else if let known = Mode(rawValue: word) {
      next = known
    } else {
      next = .none
      let isNew = lastUnknownWord.withLock { last in
        defer { last = word }
        return last != word
      }
      if isNew {
        logger.warning(
          "fault injection: unknown word in the fault file; injecting nothing",
          metadata: ["file": "\(faultFile)", "word": "\(word)", "known": "none, fsync_error, disk_full"])
      }
    }
    let index = Mode.allCases.firstIndex(of: next)!
    let previous = modeIndex.exchange(index, ordering: .acquiringAndReleasing)
    if previous != index {
      logger.warning(
        "fault injection: disk fault changed",
        metadata: ["from": "\(Mode.allCases[previous].rawValue)", "to": "\(next.rawValue)"])
    }
  }

  /// The file's first word (at most 64 bytes are read); empty when the file is missing or empty.
  private static func readWord(_ path: String) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 64)
    let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard count > 0 else { return "" }
    let text = String(decoding: buffer[..<count], as: UTF8.self)
    return text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r\n" || $0 == "\r" })
      .first.map(String.init) ?? ""
  }

  /// Throws the injected error when `mode` is in force.
  func check(_ faulty: Mode, _ operation: String, _ path: String) throws {
    guard mode == faulty else { return }
    let code = faulty == .diskFull ? ENOSPC : EIO
    throw FileSystemError(
      operation: operation, path: path, errno: code,
      reason: String(cString: strerror(code)) + " (injected: \(faulty.rawValue))")
  }

  // MARK: FileSystem

  public func openFile(_ path: String, mode: FileOpenMode) throws -> StorageFile {
    if mode == .createNew { try check(.diskFull, "open", path) }
    return FaultInjectingFile(try base.openFile(path, mode: mode), faults: self)
  }

  public func contentsOfDirectory(_ path: String) throws -> [String] { try base.contentsOfDirectory(path) }
  public func createDirectory(_ path: String) throws { try base.createDirectory(path) }
  public func fileExists(_ path: String) -> Bool { base.fileExists(path) }
  public func isDirectory(_ path: String) -> Bool { base.isDirectory(path) }
  public func rename(_ source: String, to destination: String) throws {
    try base.rename(source, to: destination)
  }
  public func removeFile(_ path: String) throws { try base.removeFile(path) }

  public func syncDirectory(_ path: String) throws {
    try check(.fsyncError, "fsync directory", path)
    try base.syncDirectory(path)
  }
}

/// A file opened through a `FaultInjectingFileSystem`.
final class FaultInjectingFile: StorageFile {
  let file: StorageFile
  let faults: FaultInjectingFileSystem

  init(_ file: StorageFile, faults: FaultInjectingFileSystem) {
    self.file = file
    self.faults = faults
  }

  var path: String { file.path }

  func read(at offset: Int64, count: Int) throws -> [UInt8] { try file.read(at: offset, count: count) }

  func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
    try faults.check(.diskFull, "pwrite", path)
    try file.write(bytes, at: offset)
  }

  func sync() throws {
    try faults.check(.fsyncError, "fdatasync", path)
    try file.sync()
  }

  func size() throws -> Int64 { try file.size() }

  func truncate(to size: Int64) throws {
    if try size > file.size() { try faults.check(.diskFull, "ftruncate", path) }
    try file.truncate(to: size)
  }

  func preallocate(size: Int64) throws {
    try faults.check(.diskFull, "posix_fallocate", path)
    try file.preallocate(size: size)
  }

  func close() { file.close() }
}
