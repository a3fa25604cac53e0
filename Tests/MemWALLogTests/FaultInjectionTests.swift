import Glibc
import Logging
import MemWALCore
import Synchronization
import Testing

@testable import MemWALLog

/// `FaultInjectingFileSystem` over the real disk: the word in the fault file decides which calls
/// fail and with which errno; `none` (or an empty, missing or unknown word) lets every call through.
@Suite struct FaultInjectionTests {
  static func setFault(_ word: String?, in path: String) {
    guard let word else {
      unlink(path)
      return
    }
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0, "cannot write the fault file")
    _ = Array(word.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
  }

  /// The errno a call failed with, nil if it succeeded.
  static func errnoOf(_ call: () throws -> Void) -> Int32? {
    do {
      try call()
      return nil
    } catch let error as FileSystemError {
      return error.errno
    } catch {
      Issue.record("not a FileSystemError: \(error)")
      return -1
    }
  }

  struct Outcomes: Equatable {
    var write, sync, syncDirectory, preallocate, grow, shrink, create, read: Int32?
  }

  /// Tries every call that a fault can affect, on `file` (which holds at least 8 bytes).
  static func outcomes(_ disk: FaultInjectingFileSystem, _ file: StorageFile, directory: String) -> Outcomes {
    let size = (try? file.size()) ?? 0
    let fresh = directory + "/fresh-\(UInt64.random(in: 0...UInt64.max))"
    var outcomes = Outcomes()
    outcomes.write = errnoOf { try file.write([1, 2, 3, 4], at: 0) }
    outcomes.sync = errnoOf { try file.sync() }
    outcomes.syncDirectory = errnoOf { try disk.syncDirectory(directory) }
    outcomes.preallocate = errnoOf { try file.preallocate(size: 4096) }
    outcomes.grow = errnoOf { try file.truncate(to: size + 4096) }
    outcomes.shrink = errnoOf { try file.truncate(to: 8) }
    outcomes.create = errnoOf { try disk.openFile(fresh, mode: .createNew).close() }
    outcomes.read = errnoOf {
      let bytes = try file.read(at: 0, count: 4)
      #expect(bytes.count == 4)
    }
    return outcomes
  }

  @Test func eachModeFailsItsCallsWithItsErrnoAndNoneRestoresThem() throws {
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    let faultFile = directory.path + "/fault"
    let logs = CollectedLogs()
    let disk = FaultInjectingFileSystem(
      wrapping: POSIXFileSystem(), faultFile: faultFile, refreshInterval: .zero, logger: makeLogger(logs))
    #expect(disk.mode == .none)
    let file = try disk.openFile(directory.path + "/data", mode: .createNew)
    defer { file.close() }
    try file.write([UInt8](repeating: 7, count: 64), at: 0)

    let clean = Outcomes()
    #expect(Self.outcomes(disk, file, directory: directory.path) == clean)

    Self.setFault("fsync_error\n", in: faultFile)
    #expect(disk.mode == .fsyncError)
    var expected = clean
    expected.sync = EIO
    expected.syncDirectory = EIO
    #expect(Self.outcomes(disk, file, directory: directory.path) == expected)

    try file.write([9, 9, 9, 9], at: 0)
    Self.setFault("disk_full", in: faultFile)
    #expect(disk.mode == .diskFull)
    expected = clean
    expected.write = ENOSPC
    expected.preallocate = ENOSPC
    expected.grow = ENOSPC
    expected.create = ENOSPC
    #expect(Self.outcomes(disk, file, directory: directory.path) == expected)
    // The write of 1, 2, 3, 4 that `outcomes` tried did not reach the file.
    #expect(try file.read(at: 0, count: 4) == [9, 9, 9, 9])

    for word in ["none", "", "  \n", nil] as [String?] {
      Self.setFault("disk_full", in: faultFile)
      #expect(disk.mode == .diskFull)
      Self.setFault(word, in: faultFile)
      #expect(
        Self.outcomes(disk, file, directory: directory.path) == clean, "after \(String(describing: word))")
    }

    // An unknown word injects nothing and is reported once, not at every reading.
    Self.setFault("fsync_eror", in: faultFile)
    let before = logs.lines.withLock { $0.filter { $0.contains("unknown word") }.count }
    #expect(Self.outcomes(disk, file, directory: directory.path) == clean)
    #expect(Self.outcomes(disk, file, directory: directory.path) == clean)
    let after = logs.lines.withLock { $0.filter { $0.contains("unknown word") }.count }
    #expect(after == before + 1)
  }

  @Test func theFaultFileIsReadAtMostOncePerInterval() throws {
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    let faultFile = directory.path + "/fault"
    Self.setFault("fsync_error", in: faultFile)
    // A reading is kept for the whole interval: an hour here, so the change below is not seen.
    let cached = FaultInjectingFileSystem(
      wrapping: POSIXFileSystem(), faultFile: faultFile, refreshInterval: .seconds(3600), logger: quietLogger)
    #expect(cached.mode == .fsyncError)
    Self.setFault("none", in: faultFile)
    #expect(cached.mode == .fsyncError)

    // With the default 50 ms the change is seen soon after.
    let live = FaultInjectingFileSystem(
      wrapping: POSIXFileSystem(), faultFile: faultFile, logger: quietLogger)
    #expect(live.mode == .none)
    Self.setFault("disk_full", in: faultFile)
    let deadline = monotonicNanoseconds() + 60_000_000_000
    while live.mode != .diskFull && monotonicNanoseconds() < deadline { sched_yield() }
    #expect(live.mode == .diskFull)
  }

  /// Under an injected fsync error or a full disk the log stops for good (clearing the fault does
  /// not restart it) and calls its failure handler once, with the errno.
  @Test(arguments: [("fsync_error", EIO), ("disk_full", ENOSPC)])
  func anInjectedDiskFaultStopsTheLogAndCallsItsFailureHandlerOnce(mode: String, errno: Int32) async throws {
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    let faultFile = directory.path + "/fault"
    let disk = FaultInjectingFileSystem(
      wrapping: POSIXFileSystem(), faultFile: faultFile, refreshInterval: .zero, logger: quietLogger)
    let failures = Mutex<[WALError]>([])
    var options = smallOptions(segmentBytes: 1 << 20)
    options.failureHandler = { error in failures.withLock { $0.append(error) } }
    let (log, _) = try WriteAheadLog.open(
      directory: directory.path + "/data", options: options, fileSystem: disk, logger: quietLogger)
    _ = try await log.append(makeTransaction(writer: 0, index: 0))
    #expect(failures.withLock { $0.isEmpty })

    Self.setFault(mode, in: faultFile)
    await #expect(throws: WALError.self) { try await log.append(makeTransaction(writer: 0, index: 1)) }
    Self.setFault("none", in: faultFile)
    await #expect(throws: WALError.self) { try await log.append(makeTransaction(writer: 0, index: 2)) }
    let seen = failures.withLock { $0 }
    #expect(seen.count == 1)
    if case .failed(let reason)? = seen.first {
      #expect(reason.contains("errno \(errno)"), "\(reason)")
    } else {
      Issue.record("handler saw \(seen)")
    }
    #expect(log.stoppedBy != nil)
    await log.close()
  }
}
