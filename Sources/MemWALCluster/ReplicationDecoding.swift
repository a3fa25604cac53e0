import MemWALCore

/// Why bytes from a peer could not be decoded. Every case says where in the stream it happened;
/// none is recoverable on the same connection (the stream has lost its framing or its integrity),
/// so the receiver closes the connection.
public enum ReplicationDecodingError: Error, Equatable, Sendable, CustomStringConvertible {
  /// The frame at `streamOffset` does not start with the protocol's magic number.
  case badMagic(found: UInt32, streamOffset: Int)
  /// The frame at `streamOffset` declares a body larger than the limit.
  case frameTooLarge(length: Int, limit: Int, streamOffset: Int)
  /// The body of the frame at `streamOffset` does not match its CRC-32C.
  case checksumMismatch(stored: UInt32, computed: UInt32, streamOffset: Int)
  /// The frame at `streamOffset` has an empty body or an unknown message type.
  case unknownMessageType(UInt8?, streamOffset: Int)
  /// The body's checksum is right but its fields are not a valid message.
  case malformed(message: String, detail: String, streamOffset: Int)

  public var description: String {
    switch self {
    case .badMagic(let found, let offset):
      return "replication frame at stream offset \(offset): bad magic \(hex(found)), expected "
        + hex(ReplicationWire.magic)
    case .frameTooLarge(let length, let limit, let offset):
      return
        "replication frame at stream offset \(offset): body of \(length) bytes exceeds the limit \(limit)"
    case .checksumMismatch(let stored, let computed, let offset):
      return "replication frame at stream offset \(offset): checksum mismatch (stored \(hex(stored)), "
        + "computed \(hex(computed)))"
    case .unknownMessageType(let type, let offset):
      let what = type.map { "unknown message type \($0)" } ?? "empty body"
      return "replication frame at stream offset \(offset): \(what)"
    case .malformed(let message, let detail, let offset):
      return "replication frame at stream offset \(offset): malformed \(message): \(detail)"
    }
  }
}

extension ReplicationMessage {
  /// Decodes one frame body (type byte and fields). Never traps: every count is checked against
  /// the bytes left before anything is allocated.
  public static func decodeBody(_ body: UnsafeRawBufferPointer, streamOffset: Int = 0)
    throws(ReplicationDecodingError) -> ReplicationMessage
  {
    guard let type = body.first else { throw .unknownMessageType(nil, streamOffset: streamOffset) }
    var reader = ByteReader(body, offset: 1)
    let message: ReplicationMessage
    do {
      guard let decoded = try decodeFields(type: type, &reader) else {
        throw ReplicationDecodingError.unknownMessageType(type, streamOffset: streamOffset)
      }
      message = decoded
      guard reader.remaining == 0 else {
        throw ByteDecodingError.invalidValue(
          field: "body", offset: reader.offset, detail: "\(reader.remaining) unexpected trailing bytes")
      }
    } catch let error as ReplicationDecodingError {
      throw error
    } catch let error as ByteDecodingError {
      throw .malformed(message: messageName(type), detail: error.description, streamOffset: streamOffset)
    } catch {
      throw .malformed(message: messageName(type), detail: "\(error)", streamOffset: streamOffset)
    }
    return message
  }

  private static func messageName(_ type: UInt8) -> String {
    let names = [
      "hello", "welcome", "refuse", "records", "checkpoint_begin", "checkpoint_chunk", "checkpoint_end",
      "checkpoint_ack", "ack", "heartbeat", "control", "control_reply",
    ]
    return type >= 1 && Int(type) <= names.count ? names[Int(type) - 1] : "type \(type)"
  }

  private static func decodeFields(type: UInt8, _ reader: inout ByteReader) throws -> ReplicationMessage? {
    typealias Types = ReplicationWire.MessageType
    switch type {
    case Types.hello:
      let version: UInt16 = try reader.read()
      let clusterID = ClusterID(high: try reader.read(), low: try reader.read())
      let nodeID = try readString(&reader, field: "node_id")
      let history = try readHistory(&reader)
      let lastLSN = LSN(try reader.read(UInt64.self))
      let promised = Epoch(try reader.read(UInt64.self))
      return .hello(
        protocolVersion: version, clusterID: clusterID, nodeID: nodeID, epochHistory: history,
        lastLSN: lastLSN, promisedEpoch: promised)
    case Types.welcome:
      let primaryID = try readString(&reader, field: "primary_id")
      let epoch = Epoch(try reader.read(UInt64.self))
      let history = try readHistory(&reader)
      let flagOffset = reader.offset
      let hasTruncate: UInt8 = try reader.read()
      let truncate = LSN(try reader.read(UInt64.self))
      guard hasTruncate <= 1, hasTruncate == 1 || truncate == .zero else {
        throw ByteDecodingError.invalidValue(
          field: "truncate_after", offset: flagOffset, detail: "flag \(hasTruncate), value \(truncate)")
      }
      let startAfter = LSN(try reader.read(UInt64.self))
      return .welcome(
        primaryID: primaryID, epoch: epoch, epochHistory: history,
        truncateAfter: hasTruncate == 1 ? truncate : nil, startAfter: startAfter)
    case Types.refuse:
      let code = RefusalCode(rawValue: try reader.read())
      return .refuse(code: code, message: try readString(&reader, field: "message"))
    case Types.records:
      return try decodeRecords(&reader)
    case Types.checkpointBegin:
      let lsn = LSN(try reader.read(UInt64.self))
      let epoch = Epoch(try reader.read(UInt64.self))
      let total: UInt64 = try reader.read()
      return .checkpointBegin(
        lsn: lsn, epoch: epoch, totalBytes: total, epochHistory: try readHistory(&reader))
    case Types.checkpointChunk:
      let offset: UInt64 = try reader.read()
      let count: UInt32 = try reader.read()
      return .checkpointChunk(offset: offset, bytes: try reader.readBytes(Int(count)))
    case Types.checkpointEnd:
      return .checkpointEnd(totalCRC: try reader.read())
    case Types.checkpointAck:
      return .checkpointAck(receivedBytes: try reader.read())
    case Types.ack:
      let written = LSN(try reader.read(UInt64.self))
      let flushed = LSN(try reader.read(UInt64.self))
      let applied = LSN(try reader.read(UInt64.self))
      return .ack(
        written: written, flushed: flushed, applied: applied, epoch: Epoch(try reader.read(UInt64.self)))
    case Types.heartbeat:
      let epoch = Epoch(try reader.read(UInt64.self))
      let flushed = LSN(try reader.read(UInt64.self))
      return .heartbeat(epoch: epoch, flushedLSN: flushed, sentAtMicros: try reader.read())
    case Types.control:
      let id: UInt64 = try reader.read()
      return .control(id: id, try ControlRequest.decode(&reader))
    case Types.controlReply:
      let id: UInt64 = try reader.read()
      return .controlReply(id: id, try ControlReply.decode(&reader))
    default:
      return nil
    }
  }

  private static func decodeRecords(_ reader: inout ByteReader) throws -> ReplicationMessage {
    let epoch = Epoch(try reader.read(UInt64.self))
    let flushed = LSN(try reader.read(UInt64.self))
    let commit = LSN(try reader.read(UInt64.self))
    let countOffset = reader.offset
    let count: UInt32 = try reader.read()
    // A record body is at least 48 bytes plus its 4-byte length.
    guard Int(count) <= ReplicationWire.maximumRecordsPerMessage, Int(count) * 52 <= reader.remaining else {
      throw ByteDecodingError.invalidValue(
        field: "record_count", offset: countOffset, detail: "\(count) records in \(reader.remaining) bytes")
    }
    var records: [WALRecord] = []
    records.reserveCapacity(Int(count))
    for _ in 0..<count {
      let length = Int(try reader.read(UInt32.self))
      let start = reader.offset
      try reader.skip(length)
      let body = UnsafeRawBufferPointer(rebasing: reader.bytes[start..<start + length])
      do {
        records.append(try WALFrame.decodeRecordBody(body))
      } catch {
        throw ByteDecodingError.invalidValue(
          field: "record", offset: start, detail: "record \(records.count): \(error.description)")
      }
    }
    return .records(epoch: epoch, records: records, primaryFlushedLSN: flushed, commitLSN: commit)
  }

  static func readString(_ reader: inout ByteReader, field: String) throws -> String {
    let offset = reader.offset
    let length = Int(try reader.read(UInt16.self))
    guard length <= ReplicationWire.maximumStringBytes else {
      throw ByteDecodingError.invalidValue(
        field: field, offset: offset, detail: "\(length) bytes exceeds \(ReplicationWire.maximumStringBytes)")
    }
    return try reader.readString(length, field: field)
  }

  private static func readHistory(_ reader: inout ByteReader) throws -> [EpochStart] {
    let offset = reader.offset
    let count = Int(try reader.read(UInt32.self))
    guard count <= ReplicationWire.maximumEpochHistoryCount, count * 16 <= reader.remaining else {
      throw ByteDecodingError.invalidValue(
        field: "epoch_history", offset: offset, detail: "\(count) entries in \(reader.remaining) bytes")
    }
    var history: [EpochStart] = []
    history.reserveCapacity(count)
    for _ in 0..<count {
      let epoch = Epoch(try reader.read(UInt64.self))
      history.append(EpochStart(epoch: epoch, firstLSN: LSN(try reader.read(UInt64.self))))
    }
    return history
  }
}

/// Cuts a byte stream into replication messages. Bytes are appended as they arrive; `next()`
/// returns a message once a whole frame is there, and nil while one is incomplete. Nothing is
/// consumed until a whole frame has arrived and its checksum matches (the NIO shell wraps this in
/// a `ByteToMessageDecoder`). After an error the stream has lost its framing: every later call
/// throws the same error, and the caller closes the connection.
public struct ReplicationFrameDecoder: Sendable {
  private var buffer: [UInt8] = []
  private var readIndex = 0
  /// Bytes consumed from the stream so far (for error offsets).
  public private(set) var streamOffset = 0
  private var failure: ReplicationDecodingError?
  /// The largest frame body accepted.
  public let maximumBodySize: Int

  public init(maximumBodySize: Int = ReplicationWire.maximumBodySize) {
    self.maximumBodySize = maximumBodySize
  }

  /// Bytes received but not yet returned as messages.
  public var bufferedByteCount: Int { buffer.count - readIndex }

  /// Adds bytes read from the connection.
  public mutating func append(_ bytes: some Collection<UInt8>) {
    if readIndex > 0 && readIndex * 2 >= buffer.count {
      buffer.removeFirst(readIndex)
      readIndex = 0
    }
    buffer.append(contentsOf: bytes)
  }

  /// The next whole message, or nil if more bytes are needed.
  public mutating func next() throws(ReplicationDecodingError) -> ReplicationMessage? {
    if let failure { throw failure }
    do {
      return try decodeNext()
    } catch {
      failure = error
      throw error
    }
  }

  private mutating func decodeNext() throws(ReplicationDecodingError) -> ReplicationMessage? {
    let available = buffer.count - readIndex
    // The magic and the length are checked as soon as they are complete, so garbage or an
    // oversize frame is refused without waiting for (or buffering) more bytes.
    guard available >= 4 else { return nil }
    let magic = load(UInt32.self, at: readIndex)
    guard magic == ReplicationWire.magic else { throw .badMagic(found: magic, streamOffset: streamOffset) }
    guard available >= 8 else { return nil }
    let length = Int(load(UInt32.self, at: readIndex + 4))
    guard length <= maximumBodySize else {
      throw .frameTooLarge(length: length, limit: maximumBodySize, streamOffset: streamOffset)
    }
    guard available >= ReplicationWire.frameHeaderSize + length else { return nil }
    let stored = load(UInt32.self, at: readIndex + 8)
    let bodyStart = readIndex + ReplicationWire.frameHeaderSize
    let offset = streamOffset
    let result = buffer.withUnsafeBytes { raw -> Result<ReplicationMessage, ReplicationDecodingError> in
      let body = UnsafeRawBufferPointer(rebasing: raw[bodyStart..<bodyStart + length])
      let computed = CRC32C.checksum(body)
      guard computed == stored else {
        return .failure(.checksumMismatch(stored: stored, computed: computed, streamOffset: offset))
      }
      do throws(ReplicationDecodingError) {
        return .success(try ReplicationMessage.decodeBody(body, streamOffset: offset))
      } catch {
        return .failure(error)
      }
    }
    let message = try result.get()
    readIndex += ReplicationWire.frameHeaderSize + length
    streamOffset += ReplicationWire.frameHeaderSize + length
    return message
  }

  private func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
    buffer.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
  }
}
