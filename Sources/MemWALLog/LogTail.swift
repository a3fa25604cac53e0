import MemWALCore
import Synchronization

/// The newest records, decoded, kept in memory for whoever follows the log (the applier now,
/// replication and the change feed later), so that following never rereads segment files while it
/// keeps up. Bounded by bytes; a reader that falls behind reads from disk instead.
public final class LogTail: Sendable {
  private struct State {
    var records: [WALRecord] = []
    var sizes: [Int] = []
    var head = 0
    var bytes = 0
  }

  private let state = Mutex(State())
  public let capacityBytes: Int

  /// The first LSN this tail receives (the one after the log's end when it was opened): anything
  /// older is only on disk.
  public let startLSN: LSN

  init(capacityBytes: Int, startLSN: LSN) {
    self.capacityBytes = capacityBytes
    self.startLSN = startLSN
  }

  func append(_ records: [WALRecord], sizes: [Int]) {
    state.withLock { state in
      state.records += records
      state.sizes += sizes
      state.bytes += sizes.reduce(0, +)
      while state.bytes > capacityBytes && state.records.count - state.head > 1 {
        state.bytes -= state.sizes[state.head]
        state.head += 1
      }
      if state.head > 4096 && state.head * 2 > state.records.count {
        state.records.removeFirst(state.head)
        state.sizes.removeFirst(state.head)
        state.head = 0
      }
    }
  }

  /// Up to `limit` records from `lsn` on, or nil when `lsn` is older than the oldest kept.
  public func records(from lsn: LSN, limit: Int) -> [WALRecord]? {
    guard lsn >= startLSN else { return nil }
    return state.withLock { state in
      guard state.head < state.records.count else { return [] }
      let first = state.records[state.head].lsn
      guard lsn >= first else { return nil }
      let start = state.head + Int(lsn.rawValue - first.rawValue)
      guard start < state.records.count else { return [] }
      return Array(state.records[start..<min(state.records.count, start + limit)])
    }
  }
}
