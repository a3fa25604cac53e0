import MemWALCore

/// Where a read looks: the state as of `lsn`, with expiry judged at `timeMicros`.
public struct ReadPoint: Sendable, Equatable {
  public var lsn: LSN
  public var timeMicros: Int64
  public init(lsn: LSN, timeMicros: Int64) {
    self.lsn = lsn
    self.timeMicros = timeMicros
  }
}

/// One version of a key: made by the record at `lsn`, ended by the record at `endLSN` (nil while it
/// is current). A nil `value` is a deletion.
public struct Version<Value: Sendable>: Sendable {
  public var value: Value?
  public var lsn: LSN
  public var timestampMicros: Int64
  public var transactionID: TransactionID
  public var endLSN: LSN?
  /// The vector index entry of a memory version (0 for others).
  var label: UInt64 = 0

  public func isVisible(at lsn: LSN) -> Bool {
    self.lsn <= lsn && (endLSN.map { $0 > lsn } ?? true) && value != nil
  }
}

/// Every retained version of one key, oldest first.
struct VersionChain<Value: Sendable>: Sendable {
  var versions: [Version<Value>] = []

  var latest: Version<Value>? { versions.last }

  /// The version in force at `lsn` (a deletion counts: it returns nil).
  func version(at lsn: LSN) -> Version<Value>? {
    // Versions are few per key; scan from the newest.
    for version in versions.reversed() where version.lsn <= lsn {
      return version.value == nil ? nil : version
    }
    return nil
  }

  mutating func append(_ version: Version<Value>) {
    if !versions.isEmpty { versions[versions.count - 1].endLSN = version.lsn }
    versions.append(version)
  }

  /// Drops versions that ended at or before `floor`, returning them. The newest version always stays
  /// unless it is a deletion at or before `floor` (then the whole chain can go).
  mutating func prune(endedAtOrBefore floor: LSN) -> [Version<Value>] {
    var dropped: [Version<Value>] = []
    while let first = versions.first, let end = first.endLSN, end <= floor {
      dropped.append(versions.removeFirst())
    }
    if versions.count == 1, versions[0].value == nil, versions[0].lsn <= floor {
      dropped.append(versions.removeFirst())
    }
    return dropped
  }
}

/// One entry of a key's audit trail.
public struct HistoryEntry<Value: Sendable>: Sendable {
  public var lsn: LSN
  public var timestampMicros: Int64
  public var transactionID: TransactionID
  public var before: Value?
  public var after: Value?
}

extension VersionChain {
  var history: [HistoryEntry<Value>] {
    var entries: [HistoryEntry<Value>] = []
    var previous: Value?
    for version in versions {
      entries.append(
        HistoryEntry(
          lsn: version.lsn, timestampMicros: version.timestampMicros, transactionID: version.transactionID,
          before: previous, after: version.value))
      previous = version.value
    }
    return entries
  }
}
