import MemWALCore
import Synchronization

/// Counters the flusher keeps, for metrics and benchmarks. Monotonic; read them with `snapshot()`.
public final class LogStatistics: Sendable {
  public struct Snapshot: Sendable, Equatable {
    public var records: Int
    public var batches: Int
    public var syncs: Int
    public var bytesWritten: Int
    public var writeNanoseconds: Int
    public var syncNanoseconds: Int
    public var segmentsCreated: Int
    /// Time the flusher spent in the group-commit window, and answering writers.
    public var gatherNanoseconds: Int
    public var acknowledgeNanoseconds: Int

    public var recordsPerBatch: Double { batches == 0 ? 0 : Double(records) / Double(batches) }
  }

  let records = Atomic<Int>(0)
  let batches = Atomic<Int>(0)
  let syncs = Atomic<Int>(0)
  let bytesWritten = Atomic<Int>(0)
  let writeNanoseconds = Atomic<Int>(0)
  let syncNanoseconds = Atomic<Int>(0)
  let segmentsCreated = Atomic<Int>(0)
  let gatherNanoseconds = Atomic<Int>(0)
  let acknowledgeNanoseconds = Atomic<Int>(0)
  /// Called with each fsync's duration in nanoseconds (for a latency histogram).
  let syncObserver = Mutex<(@Sendable (Int) -> Void)?>(nil)

  init() {}

  /// Installs a callback that sees every fsync's duration in nanoseconds (it runs on the flusher
  /// thread: keep it cheap).
  public func observeSyncs(_ observer: @escaping @Sendable (Int) -> Void) {
    syncObserver.withLock { $0 = observer }
  }

  public func snapshot() -> Snapshot {
    Snapshot(
      records: records.load(ordering: .relaxed), batches: batches.load(ordering: .relaxed),
      syncs: syncs.load(ordering: .relaxed),
      bytesWritten: bytesWritten.load(ordering: .relaxed),
      writeNanoseconds: writeNanoseconds.load(ordering: .relaxed),
      syncNanoseconds: syncNanoseconds.load(ordering: .relaxed),
      segmentsCreated: segmentsCreated.load(ordering: .relaxed),
      gatherNanoseconds: gatherNanoseconds.load(ordering: .relaxed),
      acknowledgeNanoseconds: acknowledgeNanoseconds.load(ordering: .relaxed))
  }

  func recordSync(nanoseconds: Int) {
    syncs.add(1, ordering: .relaxed)
    syncNanoseconds.add(nanoseconds, ordering: .relaxed)
    if let observer = syncObserver.withLock({ $0 }) { observer(nanoseconds) }
  }
}
