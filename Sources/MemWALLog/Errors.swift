import MemWALCore

/// Damage in the log that recovery must not paper over (DESIGN G5). Always names the file,
/// the byte offset and the last LSN known good before it.
public struct WALCorruption: Error, Equatable, Sendable, CustomStringConvertible {
  public enum Kind: Equatable, Sendable {
    /// A segment header that is truncated, has a bad magic number or checksum, or disagrees with its name.
    case badSegmentHeader(HeaderProblem)
    /// A frame that fails its checks in a part of the log that had been synced.
    case corruptRecord(FrameProblem)
    /// A well-formed frame that does not continue the log (wrong LSN, chain CRC, epoch, time or transaction order).
    case brokenSequence(String)
    /// The segment that should hold `expected` is not there.
    case missingSegment(expected: LSN)
    /// Files of two different clusters in one log.
    case clusterMismatch(expected: ClusterID, found: ClusterID)
    /// The log does not reach back to the checkpoint it must be replayed from, or stops short of it.
    case checkpointGap(String)
    /// Bytes after the end of a completed segment.
    case unexpectedBytes
  }

  public var kind: Kind
  public var file: String
  public var offset: Int64
  public var lastGoodLSN: LSN

  public init(kind: Kind, file: String, offset: Int64, lastGoodLSN: LSN) {
    self.kind = kind
    self.file = file
    self.offset = offset
    self.lastGoodLSN = lastGoodLSN
  }

  public var description: String {
    let what: String
    switch kind {
    case .badSegmentHeader(let problem): what = "bad segment header: \(problem)"
    case .corruptRecord(let problem): what = "corrupt record: \(problem)"
    case .brokenSequence(let detail): what = "record out of sequence: \(detail)"
    case .missingSegment(let expected):
      what = "missing segment: expected a segment starting at LSN \(expected)"
    case .clusterMismatch(let expected, let found):
      what = "segment belongs to cluster \(found), not \(expected)"
    case .checkpointGap(let detail): what = "log does not cover the checkpoint: \(detail)"
    case .unexpectedBytes: what = "unexpected bytes after the end of a completed segment"
    }
    return "WAL corruption in \(file) at byte \(offset) (last good LSN \(lastGoodLSN)): \(what)"
  }
}

/// Why the log cannot take a write (or a checkpoint).
public enum WALError: Error, Equatable, Sendable, CustomStringConvertible {
  /// An I/O call failed inside the log (an `fdatasync` failure among them). As in PostgreSQL this is
  /// fatal: the log accepts nothing more until the node restarts and recovers from what is durable.
  /// Writes in flight when it happened have an unknown outcome.
  case failed(String)
  /// The log was closed.
  case closed
  /// A write that breaks a limit (size, name length, operation count); nothing was written.
  case invalidInput(WALInputError)
  /// An epoch change to an epoch that is not above the current one.
  case staleEpoch(current: Epoch, requested: Epoch)
  /// A checkpoint for an LSN the log has not made durable, or that is older than the newest one.
  case invalidCheckpoint(String)
  /// A replicated record that is not the next one of this log (a gap, a repeat, or a commit time
  /// that does not increase); nothing was written.
  case outOfOrder(expected: LSN, received: LSN)
  /// A replicated record of another epoch than the log's, not introduced by an epoch change.
  case epochMismatch(current: Epoch, received: Epoch, lsn: LSN)

  public var description: String {
    switch self {
    case .failed(let reason):
      return "the write-ahead log has stopped after an I/O failure and accepts no more writes: \(reason); "
        + "restart the node to recover from what is durable"
    case .closed: return "the write-ahead log is closed"
    case .invalidInput(let error): return error.description
    case .staleEpoch(let current, let requested):
      return "epoch \(requested) is not above the current epoch \(current)"
    case .invalidCheckpoint(let detail): return "invalid checkpoint: \(detail)"
    case .outOfOrder(let expected, let received):
      return "replicated record at LSN \(received) does not follow the log (expected LSN \(expected))"
    case .epochMismatch(let current, let received, let lsn):
      return "replicated record at LSN \(lsn) is in epoch \(received), the log is in epoch \(current)"
    }
  }
}
