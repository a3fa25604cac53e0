import Synchronization

/// A position in the log that only moves forward (written, flushed; replication adds quorum and
/// applied), with async waiting for it to reach an LSN. Once failed, every waiter and every later
/// wait gets the failure.
public final class LSNWatermark: Sendable {
  private struct Waiter {
    var lsn: LSN
    var id: UInt64
    var continuation: CheckedContinuation<Void, Error>
  }

  private struct State {
    var value: LSN
    var failure: (any Error)?
    var waiters: [Waiter] = []
    var nextID: UInt64 = 0
  }

  private let state: Mutex<State>

  public init(_ value: LSN = .zero) { state = Mutex(State(value: value)) }

  public var value: LSN { state.withLock { $0.value } }

  /// Moves the mark forward (never back) and wakes the waiters it satisfies.
  public func advance(to lsn: LSN) {
    let ready = state.withLock { state -> [Waiter] in
      guard lsn > state.value else { return [] }
      state.value = lsn
      var ready: [Waiter] = []
      state.waiters.removeAll { waiter in
        guard waiter.lsn <= lsn else { return false }
        ready.append(waiter)
        return true
      }
      return ready
    }
    for waiter in ready { waiter.continuation.resume() }
  }

  /// Fails every current and future waiter with `error`.
  public func fail(_ error: any Error) {
    let waiters = state.withLock { state -> [Waiter] in
      if state.failure == nil { state.failure = error }
      defer { state.waiters.removeAll() }
      return state.waiters
    }
    for waiter in waiters { waiter.continuation.resume(throwing: error) }
  }

  /// Returns once the mark is at or past `lsn`; throws `WaitError.timedOut` after `timeout`, and
  /// `CancellationError` if the task is cancelled.
  ///
  /// The waiter is registered before its timer starts, and registration looks at the task's
  /// cancellation under the lock: a timer that fired, or a cancellation that ran its handler,
  /// before the waiter existed would otherwise find nothing to end, and the wait would last until
  /// the mark moved.
  public func wait(for lsn: LSN, timeout: Duration? = nil) async throws {
    let id = state.withLock { state -> UInt64 in
      state.nextID += 1
      return state.nextID
    }
    let timer = Mutex<Task<Void, Never>?>(nil)
    defer { timer.withLock { $0?.cancel() } }
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
        let outcome = state.withLock { state -> Result<Void, any Error>? in
          if let failure = state.failure { return .failure(failure) }
          if state.value >= lsn { return .success(()) }
          if Task.isCancelled { return .failure(CancellationError()) }
          state.waiters.append(Waiter(lsn: lsn, id: id, continuation: continuation))
          return nil
        }
        if let outcome {
          continuation.resume(with: outcome)
          return
        }
        guard let timeout else { return }
        // Should the wait end before this is stored, the timer finds no waiter and does nothing.
        let task = Task { [weak self] in
          try? await Task.sleep(for: timeout)
          guard !Task.isCancelled, let self else { return }
          self.cancel(id, with: WaitError.timedOut(waitingFor: lsn, reached: self.value))
        }
        timer.withLock { $0 = task }
      }
    } onCancel: {
      self.cancel(id, with: nil)
    }
  }

  private func cancel(_ id: UInt64, with error: (any Error)?) {
    let waiter = state.withLock { state -> Waiter? in
      guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
      return state.waiters.remove(at: index)
    }
    if let waiter {
      if let error {
        waiter.continuation.resume(throwing: error)
      } else {
        waiter.continuation.resume(throwing: CancellationError())
      }
    }
  }
}

/// A wait on a watermark that ran out of time.
public enum WaitError: Error, Equatable, Sendable, CustomStringConvertible {
  case timedOut(waitingFor: LSN, reached: LSN)

  public var description: String {
    switch self {
    case .timedOut(let waiting, let reached):
      return "timed out waiting for LSN \(waiting) (reached \(reached))"
    }
  }
}
