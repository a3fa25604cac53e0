import Glibc
import Synchronization

/// A readers–writer lock that prefers writers, so a waiting resize is not starved by a stream of
/// searches. Not recursive: a thread holding it must not take it again.
final class ReadersWriterLock: @unchecked Sendable {
  private let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)

  init() {
    var attributes = pthread_rwlockattr_t()
    pthread_rwlockattr_init(&attributes)
    pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
    let result = pthread_rwlock_init(lock, &attributes)
    precondition(result == 0, "pthread_rwlock_init failed: \(result)")
    pthread_rwlockattr_destroy(&attributes)
  }

  deinit {
    pthread_rwlock_destroy(lock)
    lock.deallocate()
  }

  func lockShared() { pthread_rwlock_rdlock(lock) }
  func lockExclusive() { pthread_rwlock_wrlock(lock) }
  func unlock() { pthread_rwlock_unlock(lock) }

  func withShared<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
    lockShared()
    defer { unlock() }
    return try body()
  }

  func withExclusive<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
    lockExclusive()
    defer { unlock() }
    return try body()
  }
}

/// A plain mutex that can be held across a scope that `Mutex.withLock` cannot express (an
/// insertion that raises the graph's top level holds it until the new entry point is linked).
final class PlainMutex: @unchecked Sendable {
  private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

  init() { pthread_mutex_init(mutex, nil) }

  deinit {
    pthread_mutex_destroy(mutex)
    mutex.deallocate()
  }

  func lock() { pthread_mutex_lock(mutex) }
  func unlock() { pthread_mutex_unlock(mutex) }
}

/// One 32-bit word per node; bit 1 is its tombstone (read only when the index has tombstones).
struct NodeStates {
  static let deletedBit: UInt32 = 2

  private(set) var words: UnsafeMutablePointer<Atomic<UInt32>>
  private(set) var capacity: Int

  init(capacity: Int) {
    self.capacity = capacity
    words = .allocate(capacity: capacity)
    for index in 0..<capacity { (words + index).initialize(to: Atomic(0)) }
  }

  /// Frees the words; the owner calls it once, with no other thread using them.
  func deallocate() {
    words.deinitialize(count: capacity)
    words.deallocate()
  }

  /// Grows to `newCapacity`, keeping the first `used` words (exclusive access required).
  mutating func grow(to newCapacity: Int, used: Int) {
    precondition(newCapacity >= capacity && used <= capacity)
    let bigger = UnsafeMutablePointer<Atomic<UInt32>>.allocate(capacity: newCapacity)
    for index in 0..<newCapacity {
      let value = index < used ? words[index].load(ordering: .relaxed) : 0
      (bigger + index).initialize(to: Atomic(value))
    }
    deallocate()
    words = bigger
    capacity = newCapacity
  }

  @inline(__always)
  func isDeleted(_ node: UInt32) -> Bool {
    words[Int(node)].load(ordering: .relaxed) & Self.deletedBit != 0
  }

  /// Sets or clears the tombstone; returns whether it was set before.
  @discardableResult
  func setDeleted(_ node: UInt32, _ deleted: Bool) -> Bool {
    let word = words + Int(node)
    let previous =
      deleted
      ? word.pointee.bitwiseOr(Self.deletedBit, ordering: .relaxed).oldValue
      : word.pointee.bitwiseAnd(~Self.deletedBit, ordering: .relaxed).oldValue
    return previous & Self.deletedBit != 0
  }

  /// Overwrites a word (exclusive access required), as compaction moves a node.
  func store(_ node: Int, _ value: UInt32) { words[node].store(value, ordering: .relaxed) }
  func load(_ node: Int) -> UInt32 { words[node].load(ordering: .relaxed) }
}

/// Runs `body(worker)` on `threads` OS threads (worker 0 on the calling one) and waits for all.
func runOnThreads(_ threads: Int, _ body: @escaping @Sendable (Int) -> Void) {
  precondition(threads >= 1 && threads <= VectorLimits.threadsMaximum)
  final class Job: @unchecked Sendable {
    let body: @Sendable (Int) -> Void
    let worker: Int
    init(_ body: @escaping @Sendable (Int) -> Void, worker: Int) {
      self.body = body
      self.worker = worker
    }
  }
  var handles: [pthread_t] = []
  for worker in 1..<threads {
    let job = Unmanaged.passRetained(Job(body, worker: worker)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(
      &thread, nil,
      { raw in
        let job = Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue()
        job.body(job.worker)
        return nil
      }, job)
    precondition(result == 0, "pthread_create failed: \(result)")
    handles.append(thread)
  }
  body(0)
  for thread in handles { pthread_join(thread, nil) }
}

/// Online processors, for "use every core".
public func activeProcessorCount() -> Int {
  max(1, min(VectorLimits.threadsMaximum, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
}
