import MemWALCore

/// Resumes writers on its own thread, so the flusher can start the next write and fsync at once
/// instead of spending a wake-up per writer first. Small batches are still answered inline by the
/// flusher (one hand-off would cost as much as the resumes it saves).
final class Acknowledger: @unchecked Sendable {
  typealias Outcome = (CheckedContinuation<WriteAheadLog.AppendResult, Error>, Result<WriteAheadLog.AppendResult, WALError>)

  private let lock = ConditionLock()
  private var pending: [Outcome] = []
  private var isStopping = false
  private var isRunning = true
  private var stopWaiters: [CheckedContinuation<Void, Never>] = []

  init() {
    startThread(name: "memwal-acks") { [self] in run() }
  }

  func submit(_ outcomes: [Outcome]) {
    lock.withLock {
      pending.append(contentsOf: outcomes)
      lock.signal()
    }
  }

  static func resume(_ outcomes: [Outcome]) {
    for (continuation, outcome) in outcomes { continuation.resume(with: outcome.mapError { $0 as Error }) }
  }

  private func run() {
    var batch: [Outcome] = []
    while true {
      lock.lock()
      while pending.isEmpty && !isStopping { lock.wait() }
      if pending.isEmpty {
        isRunning = false
        let waiters = stopWaiters
        lock.unlock()
        for waiter in waiters { waiter.resume() }
        return
      }
      swap(&batch, &pending)
      lock.unlock()
      Self.resume(batch)
      batch.removeAll(keepingCapacity: true)
    }
  }

  /// Answers everything submitted, then ends the thread.
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
