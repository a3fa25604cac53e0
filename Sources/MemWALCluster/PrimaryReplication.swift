import MemWALCore

/// A checkpoint file the primary can stream to a follower that needs records it no longer keeps.
public struct CheckpointDescriptor: Sendable, Equatable {
  /// The checkpoint reflects the log through this LSN.
  public var lsn: LSN
  /// The epoch of the record at `lsn`.
  public var epoch: Epoch
  /// Size of the checkpoint file.
  public var totalBytes: UInt64
  /// CRC-32C of the whole file.
  public var totalCRC: UInt32
  /// The epoch history of the log through `lsn`.
  public var epochHistory: [EpochStart]

  public init(lsn: LSN, epoch: Epoch, totalBytes: UInt64, totalCRC: UInt32, epochHistory: [EpochStart]) {
    self.lsn = lsn
    self.epoch = epoch
    self.totalBytes = totalBytes
    self.totalCRC = totalCRC
    self.epochHistory = epochHistory
  }
}

/// What the shell reads from its log and sends for `PrimaryAction.sendRecords`: the records with
/// LSNs in `after + 1 ... through`, in order, stopping after the first record that brings the
/// encoded size to `maximumBytes` or more (so at least one record is always sent), as one
/// `ReplicationMessage.records(epoch:records:primaryFlushedLSN:commitLSN:)` with the fields here.
/// It then reports `PrimaryReplication.recordsSent(on:through:bytes:)`, or
/// `recordsUnavailable(on:)` if the log no longer holds `after + 1`.
public struct RecordsRequest: Sendable, Equatable {
  public var connection: ConnectionID
  public var after: LSN
  public var through: LSN
  public var maximumBytes: Int
  public var epoch: Epoch
  public var primaryFlushedLSN: LSN
  public var commitLSN: LSN
}

/// What the shell reads and sends for `PrimaryAction.sendCheckpointChunk`: up to `maximumBytes`
/// bytes of the checkpoint file at `checkpointLSN` from `offset`, as one
/// `ReplicationMessage.checkpointChunk(offset:bytes:)`; then it reports
/// `PrimaryReplication.checkpointChunkSent(on:bytes:)`. The shell keeps the file readable until
/// the transfer ends, even if a newer checkpoint replaces it.
public struct CheckpointChunkRequest: Sendable, Equatable {
  public var connection: ConnectionID
  public var checkpointLSN: LSN
  public var offset: UInt64
  public var maximumBytes: Int
}

/// What the primary's replication state machine asks its shell to do, in order.
public enum PrimaryAction: Sendable, Equatable {
  /// Encode and send this message on the connection.
  case send(ReplicationMessage, on: ConnectionID)
  /// Read records from the log and send them (see `RecordsRequest`).
  case sendRecords(RecordsRequest)
  /// Read a piece of the checkpoint file and send it (see `CheckpointChunkRequest`).
  case sendCheckpointChunk(CheckpointChunkRequest)
  /// Close the connection (any `refuse` before it is sent first). Then report `connectionClosed`.
  case close(ConnectionID, reason: String)
  /// A peer has seen a higher epoch than this primary's: this node is stale, must stop accepting
  /// writes, and rejoin as a follower (DESIGN G3). The state machine should then be discarded.
  case stepDown(observedEpoch: Epoch, reportedBy: String)
}

/// One follower as the primary sees it, for `/v1/status` and `/metrics`.
public struct FollowerStatus: Sendable, Equatable {
  public var nodeID: String
  public var connection: ConnectionID?
  /// "disconnected", "handshaking", "checkpoint" or "streaming".
  public var state: String
  public var writtenLSN: LSN
  public var flushedLSN: LSN
  public var appliedLSN: LSN
  /// LSNs the primary has flushed that the follower has not.
  public var lagLSNs: UInt64
  /// Record bytes sent and not yet acknowledged as written (the back-pressure window in use).
  public var inFlightBytes: Int
  /// Milliseconds since the follower last had flushed everything the primary had (0 when it has).
  public var lagMilliseconds: UInt64
  /// Milliseconds since the follower's last message.
  public var lastHeardMilliseconds: UInt64?
  /// Checkpoint transfer progress (bytes acknowledged, total) while one runs.
  public var checkpointProgress: (received: UInt64, total: UInt64)?

  public static func == (lhs: FollowerStatus, rhs: FollowerStatus) -> Bool {
    lhs.nodeID == rhs.nodeID && lhs.connection == rhs.connection && lhs.state == rhs.state
      && lhs.writtenLSN == rhs.writtenLSN && lhs.flushedLSN == rhs.flushedLSN
      && lhs.appliedLSN == rhs.appliedLSN && lhs.lagLSNs == rhs.lagLSNs
      && lhs.inFlightBytes == rhs.inFlightBytes && lhs.lagMilliseconds == rhs.lagMilliseconds
      && lhs.lastHeardMilliseconds == rhs.lastHeardMilliseconds
      && lhs.checkpointProgress?.received == rhs.checkpointProgress?.received
      && lhs.checkpointProgress?.total == rhs.checkpointProgress?.total
  }
}

/// The primary's side of replication, for all followers at once: a pure state machine. The shell
/// feeds it inputs (connections, decoded messages, log progress, ticks of a monotonic clock) and
/// carries out the actions it returns, in order. It owns no sockets, files or clocks.
///
/// One instance serves one term: it is made when the node becomes primary in `epoch` and dropped
/// when it steps down. docs/replication-protocol.md describes the protocol it implements.
public struct PrimaryReplication: Sendable {
  /// Fixed settings.
  public struct Configuration: Sendable {
    public var clusterID: ClusterID
    /// This node's name.
    public var nodeID: String
    /// The names of the nodes that may follow (this node's own name is ignored).
    public var members: Set<String>
    /// k: followers that must have flushed a record for `commitLSN` to cover it.
    public var quorumFollowers: Int
    public var heartbeatIntervalNanoseconds: UInt64 = 100_000_000
    /// A follower silent this long (or not done with its handshake) is closed.
    public var peerTimeoutNanoseconds: UInt64 = 2_000_000_000
    /// Most record or checkpoint bytes sent to one follower and not yet acknowledged.
    public var maximumInFlightBytes = 8 << 20
    /// Most record bytes in one `records` message.
    public var maximumBatchBytes = 1 << 20
    /// Size of one checkpoint chunk.
    public var checkpointChunkBytes = ReplicationWire.maximumChunkBytes

    public init(clusterID: ClusterID, nodeID: String, members: Set<String>, quorumFollowers: Int) {
      self.clusterID = clusterID
      self.nodeID = nodeID
      self.members = members
      self.quorumFollowers = quorumFollowers
    }
  }

  private struct CheckpointTransfer {
    var descriptor: CheckpointDescriptor
    var sentBytes: UInt64 = 0
    var acknowledgedBytes: UInt64 = 0
    var chunkOutstanding = false
  }

  private enum Phase {
    case awaitingHello
    case checkpoint(CheckpointTransfer)
    case streaming
  }

  private struct Session {
    var connection: ConnectionID
    var nodeID: String?
    var phase: Phase = .awaitingHello
    var openedAtNanoseconds: UInt64
    var lastHeardNanoseconds: UInt64
    var lastHeartbeatNanoseconds: UInt64
    /// The last LSN sent or asked for; the follower's log holds nothing legitimate past it.
    var sentThrough = LSN.zero
    var requestOutstanding = false
    /// Batches sent and not yet acknowledged as written: (last LSN, bytes).
    var inFlight: [(through: LSN, bytes: Int)] = []
    var inFlightBytes = 0
  }

  private struct Progress {
    var written = LSN.zero
    var flushed = LSN.zero
    var applied = LSN.zero
    var lastHeardNanoseconds: UInt64 = 0
    var caughtUpAtNanoseconds: UInt64 = 0
    var connection: ConnectionID?
  }

  public let configuration: Configuration
  /// The epoch this primary writes in.
  public let epoch: Epoch
  /// The primary's epoch history, ending with `epoch`.
  public let epochHistory: [EpochStart]
  /// The last LSN flushed on the primary: nothing past it is ever sent.
  public private(set) var flushedLSN: LSN
  /// The oldest LSN the primary's log still holds (its older segments were retired).
  public private(set) var oldestRetainedLSN: LSN
  /// The newest checkpoint, streamed to followers that need records older than `oldestRetainedLSN`.
  public private(set) var newestCheckpoint: CheckpointDescriptor?
  private var sessions: [ConnectionID: Session] = [:]
  private var progress: [String: Progress] = [:]
  private var now: UInt64

  /// - Parameters:
  ///   - epochHistory: the primary log's epochs; the last must be `epoch`.
  ///   - flushedLSN: the last LSN flushed in the primary's log.
  ///   - oldestRetainedLSN: the oldest LSN its log still holds (1 if nothing was retired).
  ///   - now: the monotonic clock, in nanoseconds.
  public init(
    configuration: Configuration, epoch: Epoch, epochHistory: [EpochStart], flushedLSN: LSN,
    oldestRetainedLSN: LSN = LSN(1), newestCheckpoint: CheckpointDescriptor? = nil, now: UInt64
  ) {
    precondition(epochHistory.last?.epoch == epoch, "the primary's history must end with its epoch")
    self.configuration = configuration
    self.epoch = epoch
    self.epochHistory = epochHistory
    self.flushedLSN = flushedLSN
    self.oldestRetainedLSN = oldestRetainedLSN
    self.newestCheckpoint = newestCheckpoint
    self.now = now
  }

  // MARK: - Inputs

  /// A follower connected (after TLS). It has `peerTimeout` to say hello.
  public mutating func connectionOpened(_ connection: ConnectionID) -> [PrimaryAction] {
    sessions[connection] = Session(
      connection: connection, openedAtNanoseconds: now, lastHeardNanoseconds: now,
      lastHeartbeatNanoseconds: now)
    return []
  }

  /// A connection is gone (closed by either side, or broken).
  public mutating func connectionClosed(_ connection: ConnectionID) -> [PrimaryAction] {
    if let nodeID = sessions.removeValue(forKey: connection)?.nodeID,
      progress[nodeID]?.connection == connection
    {
      progress[nodeID]?.connection = nil
    }
    return []
  }

  /// The primary's log is flushed through `lsn`: stream it.
  public mutating func logFlushed(through lsn: LSN) -> [PrimaryAction] {
    guard lsn > flushedLSN else { return [] }
    flushedLSN = lsn
    var actions: [PrimaryAction] = []
    for connection in sessions.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
      actions += pump(connection)
    }
    return actions
  }

  /// The log retired segments: it now starts at `lsn`.
  public mutating func logRetained(from lsn: LSN) -> [PrimaryAction] {
    oldestRetainedLSN = max(oldestRetainedLSN, lsn)
    return []
  }

  /// A new checkpoint was written (and made durable).
  public mutating func checkpointAvailable(_ descriptor: CheckpointDescriptor) -> [PrimaryAction] {
    if descriptor.lsn >= newestCheckpoint?.lsn ?? .zero { newestCheckpoint = descriptor }
    return []
  }

  /// The clock advanced: heartbeats and timeouts.
  public mutating func tick(now: UInt64) -> [PrimaryAction] {
    self.now = max(self.now, now)
    var actions: [PrimaryAction] = []
    for connection in sessions.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
      guard let session = sessions[connection] else { continue }
      if self.now - session.lastHeardNanoseconds >= configuration.peerTimeoutNanoseconds {
        actions += refuseAndClose(
          connection, .timeout, "no message for \(configuration.peerTimeoutNanoseconds / 1_000_000) ms")
        continue
      }
      if case .awaitingHello = session.phase { continue }
      if self.now - session.lastHeartbeatNanoseconds >= configuration.heartbeatIntervalNanoseconds {
        sessions[connection]?.lastHeartbeatNanoseconds = self.now
        actions.append(
          .send(
            .heartbeat(epoch: epoch, flushedLSN: flushedLSN, sentAtMicros: Int64(self.now / 1000)),
            on: connection))
      }
    }
    return actions
  }

  /// The shell sent what a `sendRecords` action asked for: records through `lsn`, `bytes` encoded.
  public mutating func recordsSent(on connection: ConnectionID, through lsn: LSN, bytes: Int)
    -> [PrimaryAction]
  {
    guard var session = sessions[connection], session.requestOutstanding else { return [] }
    session.requestOutstanding = false
    if lsn > session.sentThrough {
      session.sentThrough = lsn
      session.inFlight.append((lsn, bytes))
      session.inFlightBytes += bytes
    }
    sessions[connection] = session
    return pump(connection)
  }

  /// The shell could not read the records a `sendRecords` action asked for (they were retired):
  /// the follower gets the newest checkpoint instead.
  public mutating func recordsUnavailable(on connection: ConnectionID) -> [PrimaryAction] {
    guard var session = sessions[connection], session.requestOutstanding else { return [] }
    session.requestOutstanding = false
    sessions[connection] = session
    return startCheckpointOrRefuse(connection)
  }

  /// The shell sent a checkpoint chunk of `bytes` bytes.
  public mutating func checkpointChunkSent(on connection: ConnectionID, bytes: Int) -> [PrimaryAction] {
    guard var session = sessions[connection], case .checkpoint(var transfer) = session.phase,
      transfer.chunkOutstanding
    else { return [] }
    transfer.chunkOutstanding = false
    transfer.sentBytes += UInt64(bytes)
    session.phase = .checkpoint(transfer)
    sessions[connection] = session
    return pump(connection)
  }

  /// A decoded message arrived on `connection`.
  public mutating func received(_ message: ReplicationMessage, on connection: ConnectionID) -> [PrimaryAction]
  {
    guard var session = sessions[connection] else { return [] }
    session.lastHeardNanoseconds = now
    sessions[connection] = session
    if let nodeID = session.nodeID { progress[nodeID]?.lastHeardNanoseconds = now }
    switch (message, session.phase) {
    case (
      .hello(let version, let clusterID, let nodeID, let history, let lastLSN, let promised), .awaitingHello
    ):
      return handleHello(
        connection, version: version, clusterID: clusterID, nodeID: nodeID, history: history,
        lastLSN: lastLSN,
        promisedEpoch: promised)
    case (.ack(let written, let flushed, let applied, let followerEpoch), .streaming),
      (.ack(let written, let flushed, let applied, let followerEpoch), .checkpoint):
      if followerEpoch > epoch { return stepDown(connection, observed: followerEpoch) }
      return handleAck(connection, written: written, flushed: flushed, applied: applied)
    case (.checkpointAck(let received), .checkpoint(var transfer)):
      guard received <= transfer.sentBytes else {
        return refuseAndClose(
          connection, .protocolViolation, "checkpoint ack of \(received) bytes, \(transfer.sentBytes) sent")
      }
      transfer.acknowledgedBytes = max(transfer.acknowledgedBytes, received)
      sessions[connection]?.phase = .checkpoint(transfer)
      return pump(connection)
    case (.checkpointAck, .streaming):
      return []  // a late ack for a transfer that has ended
    case (.heartbeat(let followerEpoch, _, _), .streaming),
      (.heartbeat(let followerEpoch, _, _), .checkpoint):
      if followerEpoch > epoch { return stepDown(connection, observed: followerEpoch) }
      return []
    case (.refuse(let code, let text), _):
      return [.close(connection, reason: "follower refused: \(code): \(text)")]
    default:
      return refuseAndClose(connection, .protocolViolation, "unexpected \(message.name)")
    }
  }

  // MARK: - Queries

  /// The highest LSN flushed on the primary and on at least `k` followers: a `quorum` write at or
  /// below it may be acknowledged (DESIGN G2).
  public func quorumLSN(k: Int) -> LSN {
    guard k > 0 else { return flushedLSN }
    let flushed = followerProgress.map(\.value.flushed).sorted(by: >)
    guard flushed.count >= k else { return .zero }
    return min(flushed[k - 1], flushedLSN)
  }

  /// The highest LSN applied on every follower in the membership (`.zero` while one has not
  /// reported): an `all_applied` write at or below it is visible everywhere.
  public var allAppliedLSN: LSN {
    var result = flushedLSN
    for member in configuration.members where member != configuration.nodeID {
      result = min(result, progress[member]?.applied ?? .zero)
    }
    return result
  }

  /// The oldest LSN the log must keep for followers: the first LSN any follower heard from in this
  /// term still lacks. Never below `cap`, the oldest LSN the shell is willing to keep (from its
  /// retention limit); a follower that falls behind the cap catches up from a checkpoint.
  public func retentionLSN(cap: LSN) -> LSN {
    var needed = flushedLSN.next
    for (_, follower) in followerProgress { needed = min(needed, follower.flushed.next) }
    return max(needed, cap)
  }

  /// The followers this primary has heard from in this term, and every member, by name.
  public func followerStatuses() -> [FollowerStatus] {
    let names = Set(configuration.members).union(progress.keys).subtracting([configuration.nodeID])
    return names.sorted().map { status(of: $0) }
  }

  /// The connection currently streaming to `nodeID`, if any.
  public func connection(of nodeID: String) -> ConnectionID? { progress[nodeID]?.connection }

  private var followerProgress: [(key: String, value: Progress)] {
    progress.filter { configuration.members.contains($0.key) }.map { ($0.key, $0.value) }
  }

  private func status(of nodeID: String) -> FollowerStatus {
    let known = progress[nodeID] ?? Progress()
    let session = known.connection.flatMap { sessions[$0] }
    var state = "disconnected"
    var checkpointProgress: (UInt64, UInt64)?
    switch session?.phase {
    case .awaitingHello: state = "handshaking"
    case .checkpoint(let transfer):
      state = "checkpoint"
      checkpointProgress = (transfer.acknowledgedBytes, transfer.descriptor.totalBytes)
    case .streaming: state = "streaming"
    case nil: break
    }
    let caughtUp = known.flushed >= flushedLSN
    return FollowerStatus(
      nodeID: nodeID, connection: known.connection, state: state, writtenLSN: known.written,
      flushedLSN: known.flushed, appliedLSN: known.applied,
      lagLSNs: caughtUp ? 0 : flushedLSN.rawValue - known.flushed.rawValue,
      inFlightBytes: session?.inFlightBytes ?? 0,
      lagMilliseconds: caughtUp ? 0 : (now - min(now, known.caughtUpAtNanoseconds)) / 1_000_000,
      lastHeardMilliseconds: progress[nodeID].map { (now - min(now, $0.lastHeardNanoseconds)) / 1_000_000 },
      checkpointProgress: checkpointProgress)
  }

  // MARK: - Handshake

  private mutating func handleHello(
    _ connection: ConnectionID, version: UInt16, clusterID: ClusterID, nodeID: String, history: [EpochStart],
    lastLSN: LSN, promisedEpoch: Epoch
  ) -> [PrimaryAction] {
    guard version == ReplicationWire.protocolVersion else {
      return refuseAndClose(
        connection, .unsupportedVersion,
        "protocol version \(version); this primary speaks \(ReplicationWire.protocolVersion)")
    }
    guard clusterID == configuration.clusterID else {
      return refuseAndClose(
        connection, .wrongCluster, "cluster \(clusterID); this is cluster \(configuration.clusterID)")
    }
    guard configuration.members.contains(nodeID), nodeID != configuration.nodeID else {
      return refuseAndClose(connection, .unknownNode, "node \"\(nodeID)\" is not a follower in this cluster")
    }
    let newest = max(promisedEpoch, history.last?.epoch ?? .zero)
    if newest > epoch { return stepDown(connection, observed: newest, nodeID: nodeID) }
    guard Divergence.isWellFormed(history) else {
      return refuseAndClose(connection, .protocolViolation, "malformed epoch history")
    }
    var actions: [PrimaryAction] = []
    if let previous = progress[nodeID]?.connection, previous != connection, sessions[previous] != nil {
      actions += refuseAndClose(previous, .replaced, "node \(nodeID) connected again")
    }
    let shared = Divergence.lastSharedLSN(epochHistory, lastLSN: flushedLSN, history, lastLSN: lastLSN)
    let truncateAfter: LSN? = lastLSN > shared ? shared : nil
    var known = progress[nodeID] ?? Progress(caughtUpAtNanoseconds: now)
    known.written = min(known.written, shared)
    known.flushed = min(known.flushed, shared)
    known.applied = min(known.applied, shared)
    known.connection = connection
    known.lastHeardNanoseconds = now
    progress[nodeID] = known
    sessions[connection]?.nodeID = nodeID
    sessions[connection]?.sentThrough = shared
    sessions[connection]?.lastHeartbeatNanoseconds = now
    let needsCheckpoint = shared < flushedLSN && shared.next < oldestRetainedLSN
    if needsCheckpoint {
      guard let checkpoint = newestCheckpoint, checkpoint.lsn > shared,
        checkpoint.lsn.next >= oldestRetainedLSN
      else {
        return actions
          + refuseAndClose(
            connection, .unavailable, "records after \(shared) are retired and no checkpoint covers them")
      }
      actions.append(
        .send(welcome(truncateAfter: truncateAfter, startAfter: checkpoint.lsn), on: connection))
      return actions + startCheckpoint(connection, checkpoint)
    }
    sessions[connection]?.phase = .streaming
    actions.append(.send(welcome(truncateAfter: truncateAfter, startAfter: shared), on: connection))
    return actions + pump(connection)
  }

  private func welcome(truncateAfter: LSN?, startAfter: LSN) -> ReplicationMessage {
    .welcome(
      primaryID: configuration.nodeID, epoch: epoch, epochHistory: epochHistory, truncateAfter: truncateAfter,
      startAfter: startAfter)
  }

  private mutating func startCheckpointOrRefuse(_ connection: ConnectionID) -> [PrimaryAction] {
    // Only a checkpoint at or past what was already sent: a follower's log never moves backwards,
    // so what it acknowledged as flushed stays covered.
    guard let session = sessions[connection], let checkpoint = newestCheckpoint,
      checkpoint.lsn >= session.sentThrough, checkpoint.lsn.next >= oldestRetainedLSN
    else {
      return refuseAndClose(connection, .unavailable, "the records this follower needs are retired")
    }
    return startCheckpoint(connection, checkpoint)
  }

  private mutating func startCheckpoint(_ connection: ConnectionID, _ checkpoint: CheckpointDescriptor)
    -> [PrimaryAction]
  {
    guard var session = sessions[connection] else { return [] }
    session.phase = .checkpoint(CheckpointTransfer(descriptor: checkpoint))
    session.sentThrough = checkpoint.lsn
    session.inFlight = []
    session.inFlightBytes = 0
    sessions[connection] = session
    let begin = ReplicationMessage.checkpointBegin(
      lsn: checkpoint.lsn, epoch: checkpoint.epoch, totalBytes: checkpoint.totalBytes,
      epochHistory: checkpoint.epochHistory)
    return [.send(begin, on: connection)] + pump(connection)
  }

  // MARK: - Streaming

  private mutating func handleAck(_ connection: ConnectionID, written: LSN, flushed: LSN, applied: LSN)
    -> [PrimaryAction]
  {
    guard var session = sessions[connection], let nodeID = session.nodeID else { return [] }
    guard written <= session.sentThrough, flushed <= session.sentThrough else {
      return refuseAndClose(
        connection, .protocolViolation,
        "ack of written \(written) / flushed \(flushed) past the last LSN sent, \(session.sentThrough)")
    }
    while let first = session.inFlight.first, first.through <= written {
      session.inFlightBytes -= first.bytes
      session.inFlight.removeFirst()
    }
    sessions[connection] = session
    var known = progress[nodeID] ?? Progress()
    known.written = written
    known.flushed = flushed
    known.applied = applied
    if flushed >= flushedLSN { known.caughtUpAtNanoseconds = now }
    progress[nodeID] = known
    return pump(connection)
  }

  /// Sends whatever the follower's window allows: checkpoint chunks, the checkpoint's end, records.
  private mutating func pump(_ connection: ConnectionID) -> [PrimaryAction] {
    guard let session = sessions[connection], !session.requestOutstanding else { return [] }
    switch session.phase {
    case .awaitingHello:
      return []
    case .checkpoint(let transfer):
      return pumpCheckpoint(connection, transfer)
    case .streaming:
      guard session.sentThrough < flushedLSN, session.inFlightBytes < configuration.maximumInFlightBytes
      else {
        return []
      }
      if session.sentThrough.next < oldestRetainedLSN { return startCheckpointOrRefuse(connection) }
      sessions[connection]?.requestOutstanding = true
      let request = RecordsRequest(
        connection: connection, after: session.sentThrough, through: flushedLSN,
        maximumBytes: min(
          configuration.maximumBatchBytes, configuration.maximumInFlightBytes - session.inFlightBytes),
        epoch: epoch, primaryFlushedLSN: flushedLSN, commitLSN: quorumLSN(k: configuration.quorumFollowers))
      return [.sendRecords(request)]
    }
  }

  private mutating func pumpCheckpoint(_ connection: ConnectionID, _ transfer: CheckpointTransfer)
    -> [PrimaryAction]
  {
    guard !transfer.chunkOutstanding else { return [] }
    let total = transfer.descriptor.totalBytes
    if transfer.sentBytes >= total {
      // Everything is sent: end the transfer and stream the records after the checkpoint.
      sessions[connection]?.phase = .streaming
      return [.send(.checkpointEnd(totalCRC: transfer.descriptor.totalCRC), on: connection)]
        + pump(connection)
    }
    let window = UInt64(configuration.maximumInFlightBytes)
    guard transfer.sentBytes - transfer.acknowledgedBytes < window else { return [] }
    var next = transfer
    next.chunkOutstanding = true
    sessions[connection]?.phase = .checkpoint(next)
    let size = min(UInt64(configuration.checkpointChunkBytes), total - transfer.sentBytes)
    return [
      .sendCheckpointChunk(
        CheckpointChunkRequest(
          connection: connection, checkpointLSN: transfer.descriptor.lsn, offset: transfer.sentBytes,
          maximumBytes: Int(size)))
    ]
  }

  // MARK: - Errors

  private mutating func refuseAndClose(_ connection: ConnectionID, _ code: RefusalCode, _ message: String)
    -> [PrimaryAction]
  {
    guard let session = sessions.removeValue(forKey: connection) else { return [] }
    if let nodeID = session.nodeID, progress[nodeID]?.connection == connection {
      progress[nodeID]?.connection = nil
    }
    return [
      .send(.refuse(code: code, message: message), on: connection),
      .close(connection, reason: "\(code): \(message)"),
    ]
  }

  private mutating func stepDown(_ connection: ConnectionID, observed: Epoch, nodeID: String? = nil)
    -> [PrimaryAction]
  {
    let name = nodeID ?? sessions[connection]?.nodeID ?? "?"
    return refuseAndClose(
      connection, .staleEpoch,
      "follower \(name) has seen epoch \(observed); this primary is in epoch \(epoch)")
      + [.stepDown(observedEpoch: observed, reportedBy: name)]
  }
}
