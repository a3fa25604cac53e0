import Logging
import MemWALCore

/// Keeps one spare segment file ready — preallocated, zero-filled and synced under a `.tmp`
/// name — so that rolling to a new segment costs a header write, an fsync and a rename instead of
/// zero-filling 64 MiB on the flusher's path (PostgreSQL pre-creates WAL segments for the same reason).
/// A spare is only ever a temporary file: recovery deletes `.tmp` files, so a crash at any point
/// leaves nothing that could pass for a segment.
final class SegmentPreparer: @unchecked Sendable {
  private let lock = ConditionLock()
  private let walDirectory: String
  private let segmentBytes: Int
  private let fileSystem: FileSystem
  private let logger: Logger
  private let zeroFill: Bool
  // Guarded by `lock`.
  private var spare: (file: StorageFile, path: String)?
  private var isWanted = false
  private var isStopping = false
  private var isRunning = true
  private var counter = 0
  private var stopWaiters: [CheckedContinuation<Void, Never>] = []

  init(walDirectory: String, segmentBytes: Int, zeroFill: Bool, fileSystem: FileSystem, logger: Logger) {
    self.zeroFill = zeroFill
    self.walDirectory = walDirectory
    self.segmentBytes = segmentBytes
    self.fileSystem = fileSystem
    self.logger = logger
    startThread(name: "memwal-segments") { [self] in run() }
  }

  /// Asks for a spare to be prepared (the flusher asks once the current segment is half full, so
  /// that preparing competes with writes as little as possible and only when a roll is coming).
  func request() {
    lock.withLock {
      if spare == nil && !isWanted {
        isWanted = true
        lock.signal()
      }
    }
  }

  /// The prepared spare, if one is ready.
  func takeSpare() -> (file: StorageFile, path: String)? {
    lock.withLock {
      defer { spare = nil }
      return spare
    }
  }

  private func run() {
    while true {
      lock.lock()
      while (!isWanted || spare != nil) && !isStopping { lock.wait() }
      if isStopping {
        isRunning = false
        let leftover = spare
        spare = nil
        let waiters = stopWaiters
        lock.unlock()
        if let leftover {
          leftover.file.close()
          try? fileSystem.removeFile(leftover.path)
        }
        for waiter in waiters { waiter.resume() }
        return
      }
      isWanted = false
      counter += 1
      let path = joinPath(walDirectory, "spare-\(counter)\(LogFileNames.temporarySuffix)")
      lock.unlock()
      do {
        let file = try fileSystem.openFile(path, mode: .createNew)
        do {
          try file.preallocate(size: Int64(segmentBytes))
          if zeroFill { try file.writeZeros(from: 0, to: Int64(segmentBytes)) }
          try file.sync()
        } catch {
          file.close()
          try? fileSystem.removeFile(path)
          throw error
        }
        lock.withLock { spare = (file, path) }
      } catch {
        // The flusher then creates its next segment itself, and meets any lasting fault there.
        logger.warning(
          "could not prepare a spare segment", metadata: ["file": "\(path)", "error": "\(error)"])
      }
    }
  }

  /// Stops the thread and removes an unused spare.
  func stop() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let done = lock.withLock {
        isStopping = true
        lock.signal()
        if !isRunning { return true }
        stopWaiters.append(continuation)
        return false
      }
      if done { continuation.resume() }
    }
  }
}
