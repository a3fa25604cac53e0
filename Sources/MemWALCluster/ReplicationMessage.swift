import MemWALCore

/// Identifies one replication connection inside a process. The shell assigns them; the state
/// machines only compare them, so a message from a connection that has since been replaced is
/// recognised and ignored.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
  public var rawValue: UInt64
  public init(_ rawValue: UInt64) { self.rawValue = rawValue }
  public var description: String { "conn-\(rawValue)" }
}

/// Why a peer refused a handshake or is about to close a connection. Unknown codes from a newer
/// peer decode as themselves, so the set can grow without a protocol version change.
public struct RefusalCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public var rawValue: UInt16
  public init(rawValue: UInt16) { self.rawValue = rawValue }

  /// The peer speaks a protocol version this node does not.
  public static let unsupportedVersion = RefusalCode(rawValue: 1)
  /// The peer belongs to another cluster.
  public static let wrongCluster = RefusalCode(rawValue: 2)
  /// The node name is not in the cluster membership.
  public static let unknownNode = RefusalCode(rawValue: 3)
  /// The sender's epoch is lower than one the receiver knows: the sender is stale.
  public static let staleEpoch = RefusalCode(rawValue: 4)
  /// The message broke the protocol (wrong state, gap, bad checkpoint, bad positions).
  public static let protocolViolation = RefusalCode(rawValue: 5)
  /// The peer was silent for longer than the timeout.
  public static let timeout = RefusalCode(rawValue: 6)
  /// Another connection from the same node replaced this one.
  public static let replaced = RefusalCode(rawValue: 7)
  /// The primary needs records it no longer has and has no checkpoint to send instead.
  public static let unavailable = RefusalCode(rawValue: 8)

  public var description: String {
    switch self {
    case .unsupportedVersion: return "unsupported_version"
    case .wrongCluster: return "wrong_cluster"
    case .unknownNode: return "unknown_node"
    case .staleEpoch: return "stale_epoch"
    case .protocolViolation: return "protocol_violation"
    case .timeout: return "timeout"
    case .replaced: return "replaced"
    case .unavailable: return "unavailable"
    default: return "code_\(rawValue)"
    }
  }
}

/// One message of the replication protocol, version 2. `docs/replication-protocol.md` is the
/// specification: every field, its size and who sends it. Positions are LSNs; `LSN.zero` means
/// "nothing yet".
public enum ReplicationMessage: Sendable, Equatable {
  /// Follower → primary, first message on a connection. `lastLSN` is the last record in the
  /// follower's log (written, flushed or not), `epochHistory` the epochs of that log, and
  /// `promisedEpoch` the highest epoch it has promised to the controller.
  case hello(
    protocolVersion: UInt16, clusterID: ClusterID, nodeID: String, epochHistory: [EpochStart], lastLSN: LSN,
    promisedEpoch: Epoch)
  /// Primary → follower, the answer to `hello`. The follower first cuts its log after
  /// `truncateAfter` when set, then receives a checkpoint (if one follows) or records after
  /// `startAfter`.
  case welcome(
    primaryID: String, epoch: Epoch, epochHistory: [EpochStart], truncateAfter: LSN?, startAfter: LSN)
  /// Either side, just before it closes the connection: why.
  case refuse(code: RefusalCode, message: String)
  /// Primary → follower: contiguous records, in LSN order, with the primary's flushed LSN and the
  /// highest LSN it has acknowledged at quorum.
  case records(epoch: Epoch, records: [WALRecord], primaryFlushedLSN: LSN, commitLSN: LSN)
  /// Primary → follower: a checkpoint file of `totalBytes` bytes, reflecting the log through `lsn`
  /// (written in `epoch`), follows in chunks.
  case checkpointBegin(lsn: LSN, epoch: Epoch, totalBytes: UInt64, epochHistory: [EpochStart])
  /// Primary → follower: the checkpoint file's bytes at `offset`.
  case checkpointChunk(offset: UInt64, bytes: [UInt8])
  /// Primary → follower: the checkpoint file is complete; `totalCRC` is CRC-32C of all its bytes.
  case checkpointEnd(totalCRC: UInt32)
  /// Follower → primary: how many checkpoint bytes it has written (back-pressure for the transfer).
  case checkpointAck(receivedBytes: UInt64)
  /// Follower → primary: the positions of its log, and its promised epoch.
  case ack(written: LSN, flushed: LSN, applied: LSN, epoch: Epoch)
  /// Both ways: liveness, with the sender's epoch and flushed LSN and its clock (for lag).
  case heartbeat(epoch: Epoch, flushedLSN: LSN, sentAtMicros: Int64)
  /// Controller → node, on the node's control port: request `id` (see `ControlRequest`).
  case control(id: UInt64, ControlRequest)
  /// Node → controller: the answer to request `id`.
  case controlReply(id: UInt64, ControlReply)

  /// A short name for logs and errors.
  public var name: String {
    switch self {
    case .hello: return "hello"
    case .welcome: return "welcome"
    case .refuse: return "refuse"
    case .records: return "records"
    case .checkpointBegin: return "checkpoint_begin"
    case .checkpointChunk: return "checkpoint_chunk"
    case .checkpointEnd: return "checkpoint_end"
    case .checkpointAck: return "checkpoint_ack"
    case .ack: return "ack"
    case .heartbeat: return "heartbeat"
    case .control(_, let request): return "control(\(request.name))"
    case .controlReply(_, let reply): return "control_reply(\(reply.name))"
    }
  }
}

/// Constants of the wire format (docs/replication-protocol.md).
public enum ReplicationWire {
  /// The protocol version this code speaks (docs/replication-protocol.md).
  public static let protocolVersion: UInt16 = 2
  /// "MWR1" read as a little-endian u32: starts every frame.
  public static let magic: UInt32 = 0x3152_574D
  /// magic u32 + body length u32 + body CRC-32C u32.
  public static let frameHeaderSize = 12
  /// The largest body a frame may carry: 16 MiB of records or checkpoint bytes plus headroom for
  /// the message's own fields.
  public static let maximumBodySize = (16 << 20) + (64 << 10)
  /// The largest checkpoint chunk a primary sends.
  public static let maximumChunkBytes = 1 << 20
  /// Most entries in an epoch history.
  public static let maximumEpochHistoryCount = 65_536
  /// Most records in one `records` message.
  public static let maximumRecordsPerMessage = 1 << 20
  /// Longest node name or refusal message, in UTF-8 bytes.
  public static let maximumStringBytes = WALFormat.maximumNameBytes

  /// Message type codes (the first byte of a body).
  public enum MessageType {
    public static let hello: UInt8 = 1
    public static let welcome: UInt8 = 2
    public static let refuse: UInt8 = 3
    public static let records: UInt8 = 4
    public static let checkpointBegin: UInt8 = 5
    public static let checkpointChunk: UInt8 = 6
    public static let checkpointEnd: UInt8 = 7
    public static let checkpointAck: UInt8 = 8
    public static let ack: UInt8 = 9
    public static let heartbeat: UInt8 = 10
    public static let control: UInt8 = 11
    public static let controlReply: UInt8 = 12
  }
}

extension ReplicationMessage {
  /// The whole frame (header and body) for this message.
  public func encodedFrame() -> [UInt8] {
    var body = ByteWriter(capacity: 64)
    encodeBody(into: &body)
    var frame = ByteWriter(capacity: ReplicationWire.frameHeaderSize + body.count)
    frame.write(ReplicationWire.magic)
    frame.write(UInt32(body.count))
    frame.write(CRC32C.checksum(body.bytes))
    frame.write(bytes: body.bytes)
    return frame.bytes
  }

  /// Appends the frame body: the type byte, then the fields in declaration order.
  public func encodeBody(into writer: inout ByteWriter) {
    typealias Types = ReplicationWire.MessageType
    switch self {
    case .hello(let version, let clusterID, let nodeID, let history, let lastLSN, let promisedEpoch):
      writer.write(Types.hello)
      writer.write(version)
      writer.write(clusterID.high)
      writer.write(clusterID.low)
      Self.writeString(nodeID, into: &writer)
      Self.writeHistory(history, into: &writer)
      writer.write(lastLSN.rawValue)
      writer.write(promisedEpoch.rawValue)
    case .welcome(let primaryID, let epoch, let history, let truncateAfter, let startAfter):
      writer.write(Types.welcome)
      Self.writeString(primaryID, into: &writer)
      writer.write(epoch.rawValue)
      Self.writeHistory(history, into: &writer)
      writer.write(UInt8(truncateAfter == nil ? 0 : 1))
      writer.write(truncateAfter?.rawValue ?? 0)
      writer.write(startAfter.rawValue)
    case .refuse(let code, let message):
      writer.write(Types.refuse)
      writer.write(code.rawValue)
      Self.writeString(message, into: &writer)
    case .records(let epoch, let records, let flushed, let commit):
      writer.write(Types.records)
      writer.write(epoch.rawValue)
      writer.write(flushed.rawValue)
      writer.write(commit.rawValue)
      writer.write(UInt32(records.count))
      for record in records {
        let lengthOffset = writer.count
        writer.write(UInt32(0))
        WALFrame.encodeRecordBody(record, into: &writer)
        writer.patch(UInt32(writer.count - lengthOffset - 4), at: lengthOffset)
      }
    case .checkpointBegin(let lsn, let epoch, let totalBytes, let history):
      writer.write(Types.checkpointBegin)
      writer.write(lsn.rawValue)
      writer.write(epoch.rawValue)
      writer.write(totalBytes)
      Self.writeHistory(history, into: &writer)
    case .checkpointChunk(let offset, let bytes):
      writer.write(Types.checkpointChunk)
      writer.write(offset)
      writer.write(UInt32(bytes.count))
      writer.write(bytes: bytes)
    case .checkpointEnd(let totalCRC):
      writer.write(Types.checkpointEnd)
      writer.write(totalCRC)
    case .checkpointAck(let received):
      writer.write(Types.checkpointAck)
      writer.write(received)
    case .ack(let written, let flushed, let applied, let epoch):
      writer.write(Types.ack)
      writer.write(written.rawValue)
      writer.write(flushed.rawValue)
      writer.write(applied.rawValue)
      writer.write(epoch.rawValue)
    case .heartbeat(let epoch, let flushed, let sentAt):
      writer.write(Types.heartbeat)
      writer.write(epoch.rawValue)
      writer.write(flushed.rawValue)
      writer.write(sentAt)
    case .control(let id, let request):
      writer.write(Types.control)
      writer.write(id)
      request.encode(into: &writer)
    case .controlReply(let id, let reply):
      writer.write(Types.controlReply)
      writer.write(id)
      reply.encode(into: &writer)
    }
  }

  static func writeString(_ string: String, into writer: inout ByteWriter) {
    // A longer string is cut at a character boundary, so what is sent is always valid UTF-8.
    var string = string
    while string.utf8.count > ReplicationWire.maximumStringBytes { string.removeLast() }
    let utf8 = Array(string.utf8)
    writer.write(UInt16(utf8.count))
    writer.write(bytes: utf8)
  }

  private static func writeHistory(_ history: [EpochStart], into writer: inout ByteWriter) {
    writer.write(UInt32(history.count))
    for start in history {
      writer.write(start.epoch.rawValue)
      writer.write(start.firstLSN.rawValue)
    }
  }
}
