import Synchronization

/// Runs async operations one at a time, in arrival order.
final class AsyncSerializer: Sendable {
  private struct State {
    var isBusy = false
    var waiters: [CheckedContinuation<Void, Never>] = []
  }

  private let state = Mutex(State())

  func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
    await acquire()
    defer { release() }
    return try await body()
  }

  private func acquire() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let granted = state.withLock { state -> Bool in
        if state.isBusy {
          state.waiters.append(continuation)
          return false
        }
        state.isBusy = true
        return true
      }
      if granted { continuation.resume() }
    }
  }

  private func release() {
    let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
      if state.waiters.isEmpty {
        state.isBusy = false
        return nil
      }
      return state.waiters.removeFirst()
    }
    next?.resume()
  }
}
