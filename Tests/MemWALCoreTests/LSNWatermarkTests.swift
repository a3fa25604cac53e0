import MemWALCore
import Synchronization
import Testing

@Suite struct LSNWatermarkTests {
  /// Runs `wait` in a task and returns how it ended; if it has not ended by the deadline the mark
  /// is moved past `lsn` to release it, so a lost wake-up fails the test instead of hanging it.
  static func outcome(
    of mark: LSNWatermark, _ lsn: LSN, cancelFirst: Bool = false, timeout: Duration? = nil
  ) async -> String {
    let result = Mutex<String?>(nil)
    let task = Task {
      if cancelFirst { withUnsafeCurrentTask { $0?.cancel() } }
      let ended: String
      do {
        try await mark.wait(for: lsn, timeout: timeout)
        ended = "reached"
      } catch is CancellationError {
        ended = "cancelled"
      } catch WaitError.timedOut {
        ended = "timed out"
      } catch {
        ended = "\(error)"
      }
      result.withLock { $0 = ended }
    }
    let deadline = ContinuousClock.now + .seconds(120)
    while result.withLock({ $0 }) == nil && ContinuousClock.now < deadline {
      try? await Task.sleep(for: .milliseconds(2))
    }
    let early = result.withLock { $0 }
    if early == nil { mark.advance(to: lsn) }
    await task.value
    return early ?? "still waiting at the deadline, then " + (result.withLock { $0 } ?? "?")
  }

  @Test func aWaitEndsWhenTheMarkArrives() async {
    let mark = LSNWatermark(LSN(3))
    #expect(await Self.outcome(of: mark, LSN(2)) == "reached")
    let waiter = Task { try await mark.wait(for: LSN(9)) }
    mark.advance(to: LSN(9))
    await #expect(throws: Never.self) { try await waiter.value }
  }

  /// A task already cancelled when it starts waiting ends at once: its cancellation handler runs
  /// before the waiter exists, so registration has to notice (it used to wait until the mark moved).
  @Test func aWaitInACancelledTaskEndsAtOnce() async {
    #expect(await Self.outcome(of: LSNWatermark(), LSN(5), cancelFirst: true) == "cancelled")
  }

  @Test func aWaitTimesOut() async {
    #expect(await Self.outcome(of: LSNWatermark(), LSN(5), timeout: .milliseconds(20)) == "timed out")
  }
}
