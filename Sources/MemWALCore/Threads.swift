import Glibc

/// A pthread mutex with one condition variable: the flusher thread sleeps on it between batches.
public final class ConditionLock: @unchecked Sendable {
  private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
  private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

  public init() {
    pthread_mutex_init(mutex, nil)
    var attributes = pthread_condattr_t()
    pthread_condattr_init(&attributes)
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
    pthread_cond_init(condition, &attributes)
    pthread_condattr_destroy(&attributes)
  }

  deinit {
    pthread_cond_destroy(condition)
    pthread_mutex_destroy(mutex)
    condition.deallocate()
    mutex.deallocate()
  }

  public func lock() { pthread_mutex_lock(mutex) }
  public func unlock() { pthread_mutex_unlock(mutex) }
  public func signal() { pthread_cond_signal(condition) }
  public func broadcast() { pthread_cond_broadcast(condition) }

  /// Waits for a signal; the lock must be held.
  public func wait() { pthread_cond_wait(condition, mutex) }

  /// Waits for a signal or until `microseconds` pass; the lock must be held.
  public func wait(microseconds: Int) {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    var nanoseconds = Int(now.tv_nsec) + microseconds * 1000
    var deadline = now
    deadline.tv_sec += nanoseconds / 1_000_000_000
    nanoseconds %= 1_000_000_000
    deadline.tv_nsec = nanoseconds
    pthread_cond_timedwait(condition, mutex, &deadline)
  }

  public func withLock<T>(_ body: () throws -> T) rethrows -> T {
    lock()
    defer { unlock() }
    return try body()
  }
}

/// Starts a detached OS thread (not one of Swift concurrency's pool threads, which must never
/// block on I/O) running `body`.
public func startThread(name: String, _ body: @escaping @Sendable () -> Void) {
  final class Box: @unchecked Sendable {
    let body: @Sendable () -> Void
    let name: String
    init(_ body: @escaping @Sendable () -> Void, name: String) {
      self.body = body
      self.name = name
    }
  }
  let box = Unmanaged.passRetained(Box(body, name: name)).toOpaque()
  var thread = pthread_t()
  let result = pthread_create(
    &thread, nil,
    { raw in
      let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
      box.body()
      return nil
    }, box)
  precondition(result == 0, "pthread_create failed: \(result)")
  pthread_detach(thread)
}

/// Microseconds since the Unix epoch from the system's real-time clock.
public protocol WALClock: Sendable {
  func microsecondsSinceEpoch() -> Int64
}

public struct SystemClock: WALClock {
  public init() {}
  public func microsecondsSinceEpoch() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
  }
}

/// Monotonic nanoseconds, for measuring durations.
public func monotonicNanoseconds() -> UInt64 {
  var now = timespec()
  clock_gettime(CLOCK_MONOTONIC, &now)
  return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
