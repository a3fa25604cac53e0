import MemWALCore

/// A dedicated OS thread that runs blocking work (applying records, building the vector index,
/// writing snapshots) off Swift concurrency's small cooperative pool, one job at a time.
final class SerialThread: @unchecked Sendable {
  private let condition = ConditionLock()
  private var jobs: [@Sendable () -> Void] = []
  private var isStopping = false

  init(name: String) {
    startThread(name: name) { [self] in run() }
  }

  /// Runs `body` on the thread and returns its result.
  func perform<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
      condition.withLock {
        jobs.append { continuation.resume(with: Result { try body() }) }
        condition.signal()
      }
    }
  }

  /// Ends the thread once the jobs already submitted have run.
  func stop() {
    condition.withLock {
      isStopping = true
      condition.signal()
    }
  }

  private func run() {
    while true {
      condition.lock()
      while jobs.isEmpty && !isStopping { condition.wait() }
      if jobs.isEmpty {
        condition.unlock()
        return
      }
      let batch = jobs
      jobs.removeAll()
      condition.unlock()
      for job in batch { job() }
    }
  }
}
