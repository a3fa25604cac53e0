import MemWALCore

/// What the follower's replication state machine asks its shell to do, in order. The shell
/// carries out log actions (`truncate`, `append`, checkpoint install) strictly in the order given,
/// on one serial queue, and reports positions with `localWritten`, `localFlushed`, `localApplied`.
public enum FollowerAction: Sendable, Equatable {
  /// Open a connection (mTLS) to the primary at `address`; report `connected` or `connectionFailed`.
  case connect(ConnectionID, address: String)
  /// Encode and send this message on the current connection.
  case send(ReplicationMessage, on: ConnectionID)
  /// Close the connection (a `refuse` before it is sent first).
  case close(ConnectionID, reason: String)
  /// Cut the local log after `lsn`: the tail diverged from the primary's log (DESIGN G4). The
  /// shell archives the cut records, rebuilds its stores if it had applied past `lsn`, and does
  /// this before any later `append`.
  case truncate(after: LSN)
  /// Append these records (contiguous, following the log's last LSN) to the local log, then flush
  /// and apply them, reporting each position as it advances.
  case append([WALRecord])
  /// A checkpoint transfer starts: prepare a temporary file of `totalBytes` bytes.
  case beginCheckpoint(lsn: LSN, epoch: Epoch, totalBytes: UInt64, epochHistory: [EpochStart])
  /// Write these bytes of the checkpoint file at `offset`.
  case writeCheckpointChunk(offset: UInt64, bytes: [UInt8])
  /// The checkpoint file is complete and its CRC matches: make it durable, replace the local log
  /// with an empty one that continues after `lsn`, and load the stores from it. From here the
  /// state machine takes `lsn` as written, flushed and applied.
  case installCheckpoint(lsn: LSN, epoch: Epoch, epochHistory: [EpochStart])
  /// The transfer failed: delete the temporary file.
  case abandonCheckpoint
}

/// The local log's state when the follower (re)starts.
public struct LocalLogState: Sendable, Equatable {
  public var epochHistory: [EpochStart]
  /// The last LSN in the log (after recovery, which keeps only what was flushed).
  public var lastLSN: LSN
  public var flushedLSN: LSN
  public var appliedLSN: LSN

  public init(epochHistory: [EpochStart], lastLSN: LSN, flushedLSN: LSN, appliedLSN: LSN) {
    self.epochHistory = epochHistory
    self.lastLSN = lastLSN
    self.flushedLSN = flushedLSN
    self.appliedLSN = appliedLSN
  }
}

/// The follower's side of replication: a pure state machine. It connects to the primary, says
/// hello, cuts a divergent tail, takes records or a checkpoint, and acknowledges its positions;
/// on any error it disconnects and retries with capped, jittered exponential backoff.
/// docs/replication-protocol.md describes the protocol it implements.
public struct FollowerReplication: Sendable {
  /// Fixed settings.
  public struct Configuration: Sendable {
    public var clusterID: ClusterID
    /// This node's name.
    public var nodeID: String
    public var heartbeatIntervalNanoseconds: UInt64 = 100_000_000
    /// A primary silent this long, or a connection attempt or handshake taking this long, is given up.
    public var peerTimeoutNanoseconds: UInt64 = 2_000_000_000
    /// The first retry delay; it doubles after each failure up to `maximumBackoffNanoseconds`.
    public var initialBackoffNanoseconds: UInt64 = 50_000_000
    public var maximumBackoffNanoseconds: UInt64 = 5_000_000_000

    public init(clusterID: ClusterID, nodeID: String) {
      self.clusterID = clusterID
      self.nodeID = nodeID
    }
  }

  /// Where the follower is in its conversation with the primary.
  public enum State: Sendable, Equatable {
    /// No primary is known.
    case idle
    /// Waiting until the clock reaches `retryAtNanoseconds` to connect again.
    case disconnected(retryAtNanoseconds: UInt64)
    case connecting(ConnectionID)
    case handshaking(ConnectionID)
    case streaming(ConnectionID)
    case receivingCheckpoint(ConnectionID)

    /// The connection this state belongs to, if any.
    public var connection: ConnectionID? {
      switch self {
      case .idle, .disconnected: return nil
      case .connecting(let id), .handshaking(let id), .streaming(let id), .receivingCheckpoint(let id):
        return id
      }
    }
  }

  private struct CheckpointInstall {
    var lsn: LSN
    var epoch: Epoch
    var totalBytes: UInt64
    var receivedBytes: UInt64 = 0
    var crc: UInt32 = 0
    var epochHistory: [EpochStart]
  }

  public let configuration: Configuration
  public private(set) var state: State
  /// The highest epoch this node has promised to the controller; frames from lower epochs are refused.
  public private(set) var promisedEpoch: Epoch
  /// The primary's address, when known.
  public private(set) var primaryAddress: String?
  /// The epochs of the local log, as far as it has been handed to the shell.
  public private(set) var epochHistory: [EpochStart]
  /// The last LSN handed to the shell to append (the end of the local log).
  public private(set) var lastReceivedLSN: LSN
  public private(set) var writtenLSN: LSN
  public private(set) var flushedLSN: LSN
  public private(set) var appliedLSN: LSN
  /// The epoch of the primary on the current connection, once welcomed.
  public private(set) var primaryEpoch: Epoch?
  /// The primary's commit LSN, as last reported.
  public private(set) var commitLSN = LSN.zero
  private var checkpoint: CheckpointInstall?
  private var random: SplitMix64
  private var failures = 0
  private var nextConnection: UInt64 = 1
  private var now: UInt64
  private var stateSinceNanoseconds: UInt64
  /// When the current connection's primary was last heard from (monotonic nanoseconds).
  public private(set) var lastHeardNanoseconds: UInt64 = 0
  private var lastHeartbeatNanoseconds: UInt64 = 0
  private var lastAckNanoseconds: UInt64 = 0
  private var lastAcked: (written: LSN, flushed: LSN, applied: LSN)?

  /// - Parameters:
  ///   - log: the local log as recovery left it.
  ///   - random: the generator for backoff jitter (seeded by the caller).
  ///   - now: the monotonic clock, in nanoseconds.
  public init(
    configuration: Configuration, log: LocalLogState, promisedEpoch: Epoch, primaryAddress: String?,
    random: SplitMix64, now: UInt64
  ) {
    self.configuration = configuration
    self.epochHistory = log.epochHistory
    self.lastReceivedLSN = log.lastLSN
    self.writtenLSN = log.lastLSN
    self.flushedLSN = log.flushedLSN
    self.appliedLSN = log.appliedLSN
    self.promisedEpoch = promisedEpoch
    self.primaryAddress = primaryAddress
    self.random = random
    self.now = now
    self.stateSinceNanoseconds = now
    self.state = primaryAddress == nil ? .idle : .disconnected(retryAtNanoseconds: now)
  }

  // MARK: - Inputs

  /// The clock advanced: connect when the backoff has passed, send heartbeats and due acks, give
  /// up on a silent primary.
  public mutating func tick(now: UInt64) -> [FollowerAction] {
    self.now = max(self.now, now)
    switch state {
    case .idle:
      return []
    case .disconnected(let retryAt):
      guard self.now >= retryAt, let address = primaryAddress else { return [] }
      let connection = ConnectionID(nextConnection)
      nextConnection += 1
      enter(.connecting(connection))
      return [.connect(connection, address: address)]
    case .connecting(let connection):
      guard self.now - stateSinceNanoseconds >= configuration.peerTimeoutNanoseconds else { return [] }
      return fail(connection, reason: "connecting timed out")
    case .handshaking(let connection), .streaming(let connection), .receivingCheckpoint(let connection):
      if self.now - lastHeardNanoseconds >= configuration.peerTimeoutNanoseconds {
        return fail(connection, code: .timeout, reason: "no message from the primary for the timeout")
      }
      guard case .handshaking = state else { return periodic(connection) }
      return []
    }
  }

  /// The connection asked for by `connect` is open: say hello.
  public mutating func connected(_ connection: ConnectionID) -> [FollowerAction] {
    guard case .connecting(connection) = state else { return [.close(connection, reason: "superseded")] }
    enter(.handshaking(connection))
    lastHeardNanoseconds = now
    let hello = ReplicationMessage.hello(
      protocolVersion: ReplicationWire.protocolVersion, clusterID: configuration.clusterID,
      nodeID: configuration.nodeID, epochHistory: epochHistory, lastLSN: lastReceivedLSN,
      promisedEpoch: promisedEpoch)
    return [.send(hello, on: connection)]
  }

  /// The connection attempt failed.
  public mutating func connectionFailed(_ connection: ConnectionID) -> [FollowerAction] {
    guard state.connection == connection else { return [] }
    return disconnect()
  }

  /// The connection closed or broke.
  public mutating func connectionClosed(_ connection: ConnectionID) -> [FollowerAction] {
    guard state.connection == connection else { return [] }
    return disconnect()
  }

  /// The controller says the primary is now at `address` (nil: unknown). Reconnects at once.
  public mutating func primaryChanged(to address: String?) -> [FollowerAction] {
    guard address != primaryAddress else { return [] }
    primaryAddress = address
    failures = 0
    var actions = closeCurrent(reason: "the primary changed")
    if address == nil {
      enter(.idle)
    } else {
      enter(.disconnected(retryAtNanoseconds: now))
      actions += tick(now: now)
    }
    return actions
  }

  /// This node promised `epoch` to the controller: frames from lower epochs are refused from now
  /// on, which ends a connection to an older primary.
  public mutating func promised(_ epoch: Epoch) -> [FollowerAction] {
    guard epoch > promisedEpoch else { return [] }
    promisedEpoch = epoch
    if let connection = state.connection, let primaryEpoch, primaryEpoch < epoch {
      return fail(
        connection, code: .staleEpoch, reason: "promised epoch \(epoch); the primary is in \(primaryEpoch)")
    }
    return []
  }

  /// The local log has written (not yet flushed) records through `lsn`.
  public mutating func localWritten(through lsn: LSN) -> [FollowerAction] {
    writtenLSN = max(writtenLSN, min(lsn, lastReceivedLSN))
    return []
  }

  /// The local log is durable through `lsn`: acknowledge it now, since `quorum` writes wait on it.
  public mutating func localFlushed(through lsn: LSN) -> [FollowerAction] {
    flushedLSN = max(flushedLSN, min(lsn, lastReceivedLSN))
    writtenLSN = max(writtenLSN, flushedLSN)
    guard case .streaming(let connection) = state else { return [] }
    return sendAckIfChanged(connection)
  }

  /// The stores have applied the log through `lsn` (acknowledged with the next ack).
  public mutating func localApplied(through lsn: LSN) -> [FollowerAction] {
    appliedLSN = max(appliedLSN, min(lsn, lastReceivedLSN))
    return []
  }

  /// A decoded message arrived on `connection`. Messages from any connection but the current one
  /// (a late delivery from a closed connection) are ignored.
  public mutating func received(_ message: ReplicationMessage, on connection: ConnectionID)
    -> [FollowerAction]
  {
    guard state.connection == connection else { return [] }
    lastHeardNanoseconds = now
    switch (message, state) {
    case (.welcome(let primaryID, let epoch, _, let truncateAfter, let startAfter), .handshaking):
      return handleWelcome(
        connection, primaryID: primaryID, epoch: epoch, truncateAfter: truncateAfter, startAfter: startAfter)
    case (.records(let epoch, let records, _, let commit), .streaming):
      guard checkEpoch(epoch) else { return staleFrame(connection, epoch) }
      commitLSN = max(commitLSN, commit)
      return handleRecords(connection, epoch: epoch, records: records)
    case (.checkpointBegin(let lsn, let epoch, let total, let history), .streaming):
      return beginCheckpoint(connection, lsn: lsn, epoch: epoch, total: total, history: history)
    case (.checkpointChunk(let offset, let bytes), .receivingCheckpoint):
      return writeChunk(connection, offset: offset, bytes: bytes)
    case (.checkpointEnd(let crc), .receivingCheckpoint):
      return finishCheckpoint(connection, totalCRC: crc)
    case (.heartbeat(let epoch, _, _), .streaming), (.heartbeat(let epoch, _, _), .receivingCheckpoint):
      guard checkEpoch(epoch) else { return staleFrame(connection, epoch) }
      return []
    case (.refuse(let code, let text), _):
      var actions: [FollowerAction] = checkpoint == nil ? [] : [.abandonCheckpoint]
      checkpoint = nil
      actions.append(.close(connection, reason: "primary refused: \(code): \(text)"))
      return actions + disconnect()
    default:
      return fail(
        connection, code: .protocolViolation, reason: "unexpected \(message.name) while \(stateName)")
    }
  }

  // MARK: - Handshake and streaming

  private mutating func handleWelcome(
    _ connection: ConnectionID, primaryID: String, epoch: Epoch, truncateAfter: LSN?, startAfter: LSN
  ) -> [FollowerAction] {
    guard epoch >= promisedEpoch else { return staleFrame(connection, epoch) }
    guard epoch >= (epochHistory.last?.epoch ?? .zero) || truncateAfter != nil else {
      return fail(
        connection, code: .staleEpoch, reason: "primary \(primaryID) in epoch \(epoch) is behind this log")
    }
    var actions: [FollowerAction] = []
    if let cut = truncateAfter, cut < lastReceivedLSN {
      lastReceivedLSN = cut
      writtenLSN = min(writtenLSN, cut)
      flushedLSN = min(flushedLSN, cut)
      appliedLSN = min(appliedLSN, cut)
      epochHistory = Divergence.history(epochHistory, truncatedAfter: cut)
      actions.append(.truncate(after: cut))
    }
    primaryEpoch = epoch
    failures = 0
    enter(.streaming(connection))
    lastAcked = nil
    _ = startAfter  // records or a checkpoint follow; the gap check on records enforces continuity
    return actions + sendAck(connection)
  }

  private mutating func handleRecords(_ connection: ConnectionID, epoch: Epoch, records: [WALRecord])
    -> [FollowerAction]
  {
    let fresh = records.drop { $0.lsn <= lastReceivedLSN }
    guard let first = fresh.first else { return [] }
    guard first.lsn == lastReceivedLSN.next else {
      return fail(
        connection, code: .protocolViolation, reason: "gap: record \(first.lsn) after \(lastReceivedLSN)")
    }
    var expected = first.lsn
    var history = epochHistory
    for record in fresh {
      guard record.lsn == expected, record.epoch <= epoch, record.epoch >= (history.last?.epoch ?? .zero)
      else {
        return fail(
          connection, code: .protocolViolation,
          reason: "record \(record.lsn) in epoch \(record.epoch) out of order in a frame of epoch \(epoch)")
      }
      if record.epoch > (history.last?.epoch ?? .zero) {
        history.append(EpochStart(epoch: record.epoch, firstLSN: record.lsn))
      }
      expected = expected.next
    }
    epochHistory = history
    lastReceivedLSN = fresh.last!.lsn
    return [.append(Array(fresh))]
  }

  private mutating func beginCheckpoint(
    _ connection: ConnectionID, lsn: LSN, epoch: Epoch, total: UInt64, history: [EpochStart]
  ) -> [FollowerAction] {
    guard let primaryEpoch, epoch <= primaryEpoch, Divergence.isWellFormed(history),
      history.last.map({ $0.epoch == epoch && $0.firstLSN <= lsn }) ?? false
    else { return fail(connection, code: .protocolViolation, reason: "inconsistent checkpoint at \(lsn)") }
    checkpoint = CheckpointInstall(lsn: lsn, epoch: epoch, totalBytes: total, epochHistory: history)
    enter(.receivingCheckpoint(connection))
    return [.beginCheckpoint(lsn: lsn, epoch: epoch, totalBytes: total, epochHistory: history)]
  }

  private mutating func writeChunk(_ connection: ConnectionID, offset: UInt64, bytes: [UInt8])
    -> [FollowerAction]
  {
    guard var install = checkpoint, offset == install.receivedBytes,
      UInt64(bytes.count) <= install.totalBytes - install.receivedBytes
    else {
      return fail(connection, code: .protocolViolation, reason: "checkpoint chunk at \(offset) out of place")
    }
    install.receivedBytes += UInt64(bytes.count)
    install.crc = CRC32C.checksum(bytes, extending: install.crc)
    checkpoint = install
    return [
      .writeCheckpointChunk(offset: offset, bytes: bytes),
      .send(.checkpointAck(receivedBytes: install.receivedBytes), on: connection),
    ]
  }

  private mutating func finishCheckpoint(_ connection: ConnectionID, totalCRC: UInt32) -> [FollowerAction] {
    guard let install = checkpoint, install.receivedBytes == install.totalBytes, install.crc == totalCRC
    else {
      return fail(
        connection, code: .protocolViolation, reason: "checkpoint incomplete or its CRC does not match")
    }
    checkpoint = nil
    epochHistory = install.epochHistory
    lastReceivedLSN = install.lsn
    writtenLSN = install.lsn
    flushedLSN = install.lsn
    appliedLSN = install.lsn
    enter(.streaming(connection))
    return [.installCheckpoint(lsn: install.lsn, epoch: install.epoch, epochHistory: install.epochHistory)]
      + sendAck(connection)
  }

  // MARK: - Acks and heartbeats

  private mutating func periodic(_ connection: ConnectionID) -> [FollowerAction] {
    var actions: [FollowerAction] = []
    if now - lastHeartbeatNanoseconds >= configuration.heartbeatIntervalNanoseconds {
      lastHeartbeatNanoseconds = now
      actions.append(
        .send(
          .heartbeat(epoch: promisedEpoch, flushedLSN: flushedLSN, sentAtMicros: Int64(now / 1000)),
          on: connection))
      if case .streaming = state { actions += sendAck(connection) }
    } else if case .streaming = state {
      actions += sendAckIfChanged(connection)
    }
    return actions
  }

  private mutating func sendAckIfChanged(_ connection: ConnectionID) -> [FollowerAction] {
    if let last = lastAcked, last.written == writtenLSN, last.flushed == flushedLSN,
      last.applied == appliedLSN
    {
      return []
    }
    return sendAck(connection)
  }

  private mutating func sendAck(_ connection: ConnectionID) -> [FollowerAction] {
    lastAcked = (writtenLSN, flushedLSN, appliedLSN)
    lastAckNanoseconds = now
    return [
      .send(
        .ack(written: writtenLSN, flushed: flushedLSN, applied: appliedLSN, epoch: promisedEpoch),
        on: connection)
    ]
  }

  // MARK: - Errors and backoff

  private func checkEpoch(_ epoch: Epoch) -> Bool { epoch >= promisedEpoch && epoch == primaryEpoch }

  private mutating func staleFrame(_ connection: ConnectionID, _ epoch: Epoch) -> [FollowerAction] {
    fail(
      connection, code: .staleEpoch, reason: "frame from epoch \(epoch); this node promised \(promisedEpoch)")
  }

  /// Refuses (when the connection is open), closes and backs off.
  private mutating func fail(_ connection: ConnectionID, code: RefusalCode? = nil, reason: String)
    -> [FollowerAction]
  {
    var actions: [FollowerAction] = []
    if checkpoint != nil {
      actions.append(.abandonCheckpoint)
      checkpoint = nil
    }
    if let code, state.connection == connection {
      if case .connecting = state {
      } else {
        actions.append(.send(.refuse(code: code, message: reason), on: connection))
      }
    }
    actions.append(.close(connection, reason: reason))
    return actions + disconnect()
  }

  private mutating func closeCurrent(reason: String) -> [FollowerAction] {
    guard let connection = state.connection else { return [] }
    var actions: [FollowerAction] = checkpoint == nil ? [] : [.abandonCheckpoint]
    checkpoint = nil
    actions.append(.close(connection, reason: reason))
    return actions
  }

  private mutating func disconnect() -> [FollowerAction] {
    var actions: [FollowerAction] = []
    if checkpoint != nil {
      actions.append(.abandonCheckpoint)
      checkpoint = nil
    }
    primaryEpoch = nil
    guard primaryAddress != nil else {
      enter(.idle)
      return actions
    }
    let delay = backoffDelay()
    failures += 1
    enter(.disconnected(retryAtNanoseconds: now + delay))
    return actions
  }

  /// Exponential in the number of consecutive failures, capped, with the upper half jittered.
  private mutating func backoffDelay() -> UInt64 {
    let shift = min(failures, 30)
    let base = min(
      configuration.maximumBackoffNanoseconds, configuration.initialBackoffNanoseconds << UInt64(shift))
    let half = base / 2
    return half + (half == 0 ? 0 : random.next() % (half + 1))
  }

  private mutating func enter(_ next: State) {
    state = next
    stateSinceNanoseconds = now
  }

  private var stateName: String {
    switch state {
    case .idle: return "idle"
    case .disconnected: return "disconnected"
    case .connecting: return "connecting"
    case .handshaking: return "handshaking"
    case .streaming: return "streaming"
    case .receivingCheckpoint: return "receiving a checkpoint"
    }
  }
}
