import MemWALCore

/// What the failover controller asks a node, over the node's control port (DESIGN §6). Each
/// request carries an id; the node answers with a `ControlReply` carrying the same id, on the same
/// connection, in the order the requests arrived.
public enum ControlRequest: Sendable, Equatable {
  /// Answer with a `.report`.
  case heartbeat
  /// Promise `epoch` durably (`NodeFencing.promise`); answer `.promised` or `.refused`.
  case promise(epoch: Epoch)
  /// Become primary in `epoch` (the epoch change is recorded in the WAL first); answer
  /// `.promoted` once writes are accepted, or `.refused`.
  case promote(epoch: Epoch)
  /// Replicate from `primary`, the primary of `epoch`; answer `.done` or `.refused`.
  case follow(primary: String, epoch: Epoch)
  /// Switchover: stop taking writes, flush, keep streaming; answer `.done` or `.refused`.
  case drain(epoch: Epoch)
  /// Abandoned switchover: take writes again; answer `.done` or `.refused`.
  case resume(epoch: Epoch)
  /// The primary of `epoch` now waits for `quorumFollowers` followers; it records the change in
  /// its WAL; answer `.done` or `.refused`.
  case setQuorum(quorumFollowers: Int, epoch: Epoch)

  public var name: String {
    switch self {
    case .heartbeat: return "heartbeat"
    case .promise: return "promise"
    case .promote: return "promote"
    case .follow: return "follow"
    case .drain: return "drain"
    case .resume: return "resume"
    case .setQuorum: return "set_quorum"
    }
  }
}

/// A node's answer to a `ControlRequest`.
public enum ControlReply: Sendable, Equatable {
  case report(NodeReport)
  /// The promise is durable; the node's log goes to `flushedLSN`, its last record is of
  /// `lastLogEpoch`.
  case promised(epoch: Epoch, flushedLSN: LSN, lastLogEpoch: Epoch)
  /// Fenced: the request's epoch is not acceptable; `promisedEpoch` is the node's promise.
  case refused(promisedEpoch: Epoch, message: String)
  /// The node is primary in `epoch`; its epoch-change record is at `lsn`.
  case promoted(epoch: Epoch, lsn: LSN)
  case done
  /// The node could not carry the request out (an I/O error, say); nothing was promised.
  case failed(message: String)

  public var name: String {
    switch self {
    case .report: return "report"
    case .promised: return "promised"
    case .refused: return "refused"
    case .promoted: return "promoted"
    case .done: return "done"
    case .failed: return "failed"
    }
  }
}

extension ControlRequest {
  enum Kind {
    static let heartbeat: UInt8 = 1
    static let promise: UInt8 = 2
    static let promote: UInt8 = 3
    static let follow: UInt8 = 4
    static let drain: UInt8 = 5
    static let resume: UInt8 = 6
    static let setQuorum: UInt8 = 7
  }

  func encode(into writer: inout ByteWriter) {
    switch self {
    case .heartbeat:
      writer.write(Kind.heartbeat)
    case .promise(let epoch):
      writer.write(Kind.promise)
      writer.write(epoch.rawValue)
    case .promote(let epoch):
      writer.write(Kind.promote)
      writer.write(epoch.rawValue)
    case .follow(let primary, let epoch):
      writer.write(Kind.follow)
      ReplicationMessage.writeString(primary, into: &writer)
      writer.write(epoch.rawValue)
    case .drain(let epoch):
      writer.write(Kind.drain)
      writer.write(epoch.rawValue)
    case .resume(let epoch):
      writer.write(Kind.resume)
      writer.write(epoch.rawValue)
    case .setQuorum(let k, let epoch):
      writer.write(Kind.setQuorum)
      writer.write(UInt32(clamping: max(0, k)))
      writer.write(epoch.rawValue)
    }
  }

  static func decode(_ reader: inout ByteReader) throws -> ControlRequest {
    let offset = reader.offset
    let kind: UInt8 = try reader.read()
    switch kind {
    case Kind.heartbeat: return .heartbeat
    case Kind.promise: return .promise(epoch: Epoch(try reader.read(UInt64.self)))
    case Kind.promote: return .promote(epoch: Epoch(try reader.read(UInt64.self)))
    case Kind.follow:
      let primary = try ReplicationMessage.readString(&reader, field: "primary")
      return .follow(primary: primary, epoch: Epoch(try reader.read(UInt64.self)))
    case Kind.drain: return .drain(epoch: Epoch(try reader.read(UInt64.self)))
    case Kind.resume: return .resume(epoch: Epoch(try reader.read(UInt64.self)))
    case Kind.setQuorum:
      let kOffset = reader.offset
      let k: UInt32 = try reader.read()
      guard k <= UInt32(ControlWire.maximumQuorumFollowers) else {
        throw ByteDecodingError.invalidValue(
          field: "quorum_followers", offset: kOffset,
          detail: "\(k) exceeds \(ControlWire.maximumQuorumFollowers)")
      }
      return .setQuorum(quorumFollowers: Int(k), epoch: Epoch(try reader.read(UInt64.self)))
    default:
      throw ByteDecodingError.invalidValue(
        field: "request_kind", offset: offset, detail: "unknown kind \(kind)")
    }
  }
}

extension ControlReply {
  enum Kind {
    static let report: UInt8 = 1
    static let promised: UInt8 = 2
    static let refused: UInt8 = 3
    static let promoted: UInt8 = 4
    static let done: UInt8 = 5
    static let failed: UInt8 = 6
  }

  func encode(into writer: inout ByteWriter) {
    switch self {
    case .report(let report):
      writer.write(Kind.report)
      writer.write(report.role.code)
      writer.write(report.epoch.rawValue)
      writer.write(report.promisedEpoch.rawValue)
      writer.write(report.flushedLSN.rawValue)
      writer.write(report.appliedLSN.rawValue)
      writer.write(report.lastEpochInLog.rawValue)
      writer.write(UInt8(report.primary == nil ? 0 : 1))
      ReplicationMessage.writeString(report.primary ?? "", into: &writer)
      writer.write(UInt8(report.seesPrimary ? 1 : 0))
      writer.write(UInt8(report.quorumFollowers == nil ? 0 : 1))
      writer.write(UInt32(clamping: max(0, report.quorumFollowers ?? 0)))
    case .promised(let epoch, let flushed, let lastEpoch):
      writer.write(Kind.promised)
      writer.write(epoch.rawValue)
      writer.write(flushed.rawValue)
      writer.write(lastEpoch.rawValue)
    case .refused(let promised, let message):
      writer.write(Kind.refused)
      writer.write(promised.rawValue)
      ReplicationMessage.writeString(message, into: &writer)
    case .promoted(let epoch, let lsn):
      writer.write(Kind.promoted)
      writer.write(epoch.rawValue)
      writer.write(lsn.rawValue)
    case .done:
      writer.write(Kind.done)
    case .failed(let message):
      writer.write(Kind.failed)
      ReplicationMessage.writeString(message, into: &writer)
    }
  }

  static func decode(_ reader: inout ByteReader) throws -> ControlReply {
    let offset = reader.offset
    let kind: UInt8 = try reader.read()
    switch kind {
    case Kind.report:
      let roleOffset = reader.offset
      let roleCode: UInt8 = try reader.read()
      guard let role = FencedRole(code: roleCode) else {
        throw ByteDecodingError.invalidValue(
          field: "role", offset: roleOffset, detail: "unknown role \(roleCode)")
      }
      let epoch = Epoch(try reader.read(UInt64.self))
      let promised = Epoch(try reader.read(UInt64.self))
      let flushed = LSN(try reader.read(UInt64.self))
      let applied = LSN(try reader.read(UInt64.self))
      let lastEpoch = Epoch(try reader.read(UInt64.self))
      let flagOffset = reader.offset
      let hasPrimary: UInt8 = try reader.read()
      let primary = try ReplicationMessage.readString(&reader, field: "primary")
      guard hasPrimary <= 1, hasPrimary == 1 || primary.isEmpty else {
        throw ByteDecodingError.invalidValue(
          field: "primary", offset: flagOffset, detail: "flag \(hasPrimary) with name \"\(primary)\"")
      }
      let seesOffset = reader.offset
      let sees: UInt8 = try reader.read()
      guard sees <= 1 else {
        throw ByteDecodingError.invalidValue(
          field: "sees_primary", offset: seesOffset, detail: "flag \(sees)")
      }
      let quorumOffset = reader.offset
      let hasQuorum: UInt8 = try reader.read()
      let quorum: UInt32 = try reader.read()
      guard hasQuorum <= 1, hasQuorum == 1 || quorum == 0,
        quorum <= UInt32(ControlWire.maximumQuorumFollowers)
      else {
        throw ByteDecodingError.invalidValue(
          field: "quorum_followers", offset: quorumOffset, detail: "flag \(hasQuorum), value \(quorum)")
      }
      return .report(
        NodeReport(
          role: role, epoch: epoch, promisedEpoch: promised, flushedLSN: flushed, appliedLSN: applied,
          lastEpochInLog: lastEpoch, primary: hasPrimary == 1 ? primary : nil, seesPrimary: sees == 1,
          quorumFollowers: hasQuorum == 1 ? Int(quorum) : nil))
    case Kind.promised:
      let epoch = Epoch(try reader.read(UInt64.self))
      let flushed = LSN(try reader.read(UInt64.self))
      return .promised(epoch: epoch, flushedLSN: flushed, lastLogEpoch: Epoch(try reader.read(UInt64.self)))
    case Kind.refused:
      let promised = Epoch(try reader.read(UInt64.self))
      return .refused(
        promisedEpoch: promised, message: try ReplicationMessage.readString(&reader, field: "message"))
    case Kind.promoted:
      let epoch = Epoch(try reader.read(UInt64.self))
      return .promoted(epoch: epoch, lsn: LSN(try reader.read(UInt64.self)))
    case Kind.done:
      return .done
    case Kind.failed:
      return .failed(message: try ReplicationMessage.readString(&reader, field: "message"))
    default:
      throw ByteDecodingError.invalidValue(
        field: "reply_kind", offset: offset, detail: "unknown kind \(kind)")
    }
  }
}

/// Constants of the control messages (docs/failover.md, "Wire").
public enum ControlWire {
  /// The largest k a `set_quorum` request or a report may carry (what a quorum-change record holds).
  public static let maximumQuorumFollowers = QuorumChange.maximum
}
