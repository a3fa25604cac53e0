import MemWALCore

/// Where two logs stop agreeing (DESIGN G4).
///
/// Only one primary writes in an epoch, so a record is identified by its (LSN, epoch): two logs
/// hold the same record at an LSN exactly when they give it the same epoch. An epoch history
/// (`[EpochStart]`, ascending) maps every LSN to its epoch: the epoch of the last entry whose
/// first LSN is at or below it. LSNs below the first entry map to `Epoch.zero` in both logs.
public enum Divergence {
  /// The last LSN the two logs share: the largest `L` at or below both logs' last LSNs such that
  /// every LSN up to `L` has the same epoch in both histories.
  public static func lastSharedLSN(
    _ first: [EpochStart], lastLSN firstLast: LSN, _ second: [EpochStart], lastLSN secondLast: LSN
  ) -> LSN {
    let end = min(firstLast, secondLast)
    guard end > .zero else { return .zero }
    // Epochs are constant between boundaries, so only the boundaries need comparing.
    var boundaries = [LSN(1)]
    for start in first + second where start.firstLSN > LSN(1) && start.firstLSN <= end {
      boundaries.append(start.firstLSN)
    }
    boundaries.sort()
    for boundary in boundaries where epoch(at: boundary, in: first) != epoch(at: boundary, in: second) {
      return LSN(boundary.rawValue - 1)
    }
    return end
  }

  /// The epoch a history gives to `lsn` (`Epoch.zero` before its first entry).
  public static func epoch(at lsn: LSN, in history: [EpochStart]) -> Epoch {
    var result = Epoch.zero
    for start in history {
      if start.firstLSN > lsn { break }
      result = start.epoch
    }
    return result
  }

  /// The history cut after `lsn`: the entries of epochs that start at or before it.
  public static func history(_ history: [EpochStart], truncatedAfter lsn: LSN) -> [EpochStart] {
    history.filter { $0.firstLSN <= lsn }
  }

  /// Whether a history is well formed: epochs strictly increasing, first LSNs non-decreasing and
  /// above zero.
  public static func isWellFormed(_ history: [EpochStart]) -> Bool {
    for (index, start) in history.enumerated() {
      if start.firstLSN == .zero { return false }
      if index > 0 {
        let previous = history[index - 1]
        if start.epoch <= previous.epoch || start.firstLSN < previous.firstLSN { return false }
      }
    }
    return true
  }
}
