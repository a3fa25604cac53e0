/// A record as it sits in a segment: framed, checksummed and chained.
///
/// ```
/// frame  = length:u32 crc:u32 body[length] zero-padding-to-8
/// body   = type:u8 flags:u8 reserved:u16 previousCRC:u32 lsn:u64 epoch:u64
///          transactionID:u64 timestampMicros:i64 syncedThroughLSN:u64 payload
/// ```
/// `crc` is CRC-32C of the body. `previousCRC` is the `crc` of the frame before it in the log,
/// which makes a stale frame from another file or an older run fail the chain check.
/// `syncedThroughLSN` is the highest LSN that was fsynced when this frame was written: recovery
/// uses it to tell a torn, never-synced tail from corruption of synced data. All integers are
/// little-endian. See docs/wal-format.md.
public struct WALFrame: Sendable, Equatable {
  public var record: WALRecord
  public var crc: UInt32
  public var previousCRC: UInt32
  public var syncedThroughLSN: LSN
  /// Length of the frame on disk including header and padding.
  public var encodedSize: Int

  public init(record: WALRecord, crc: UInt32, previousCRC: UInt32, syncedThroughLSN: LSN, encodedSize: Int) {
    self.record = record
    self.crc = crc
    self.previousCRC = previousCRC
    self.syncedThroughLSN = syncedThroughLSN
    self.encodedSize = encodedSize
  }
}

/// Why a frame was not accepted.
public enum FrameProblem: Error, Equatable, Sendable, CustomStringConvertible {
  /// The length field is zero: nothing was ever written here (end of the log).
  case empty
  /// The length field is outside the allowed range.
  case badLength(UInt32)
  /// The frame runs past the end of the available bytes.
  case truncated(needed: Int, available: Int)
  /// The body does not match its checksum.
  case checksumMismatch(stored: UInt32, computed: UInt32)
  /// The checksum is right but the body is not a valid record.
  case malformedBody(String)
  /// The checksum is right and the record's type is not one this version knows: a log written
  /// by a newer MemWAL.
  case unknownRecordType(UInt8)
  /// The body is intact but a padding byte after it (not covered by the checksum) is not zero.
  case nonZeroPadding(atFrameOffset: Int)
  /// A well-formed frame that does not continue the log (another LSN, or chained to another CRC).
  case outOfSequence(String)

  /// The checksum vouches that the frame was written whole, so a crash did not make it: a torn
  /// tail never ends in one, and recovery reports it as corruption instead of cutting it.
  public var isWrittenWhole: Bool {
    switch self {
    case .malformedBody, .unknownRecordType: return true
    default: return false
    }
  }

  public var description: String {
    switch self {
    case .empty: return "no frame (zero length)"
    case .badLength(let length): return "frame length \(length) out of range"
    case .truncated(let needed, let available): return "frame needs \(needed) bytes, \(available) available"
    case .checksumMismatch(let stored, let computed):
      return "checksum mismatch (stored \(hex(stored)), computed \(hex(computed)))"
    case .malformedBody(let detail): return "malformed record body: \(detail)"
    case .nonZeroPadding(let offset): return "non-zero padding byte at frame offset \(offset)"
    case .outOfSequence(let detail): return "frame out of sequence: \(detail)"
    case .unknownRecordType(let type):
      return
        "record type \(type) is not one this version of MemWAL knows (was the log written by a newer version?)"
    }
  }
}

/// A CRC as 0x-prefixed, zero-padded hexadecimal.
public func hex(_ value: UInt32) -> String { "0x" + String(value, radix: 16).leftPadded(to: 8) }

/// Bytes as lowercase hexadecimal, two digits each, no prefix.
public func hex(_ bytes: [UInt8]) -> String { bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined() }

extension WALFrame {
  /// Encodes the payload part of a record (everything after the fixed body header).
  public static func encodePayload(_ payload: WALPayload) -> [UInt8] {
    var writer = ByteWriter(capacity: 256)
    switch payload {
    case .transaction(let transaction):
      writeName(transaction.namespace, into: &writer)
      writeName(transaction.idempotencyKey ?? "", into: &writer)
      if let digest = transaction.requestDigest { writer.write(bytes: digest) }
      writer.write(UInt32(transaction.operations.count))
      for operation in transaction.operations {
        writer.write(operation.kind.rawValue)
        writer.write(operation.target.rawValue)
        writer.write(UInt16(0))
        writeName(operation.id, into: &writer)
        writeImage(operation.before, into: &writer)
        writeImage(operation.after, into: &writer)
      }
    case .epochChange(let change):
      writer.write(change.previousEpoch.rawValue)
      writeName(change.leader, into: &writer)
    case .quorumChange(let change):
      writer.write(UInt32(clamping: max(0, change.quorumFollowers)))
    }
    return writer.bytes
  }

  private static func writeName(_ name: String, into writer: inout ByteWriter) {
    let utf8 = Array(name.utf8)
    writer.write(UInt16(truncatingIfNeeded: utf8.count))
    writer.write(bytes: utf8)
  }

  private static func writeImage(_ image: [UInt8]?, into writer: inout ByteWriter) {
    if let image {
      writer.write(UInt32(image.count))
      writer.write(bytes: image)
    } else {
      writer.write(WALFormat.absentImage)
    }
  }

  /// Checks that a payload fits the format's limits before it is logged, so a bad write is refused
  /// up front rather than producing a record the decoder would reject.
  public static func validate(_ payload: WALPayload) throws(WALInputError) {
    switch payload {
    case .transaction(let transaction):
      try checkName(transaction.namespace, field: "namespace", allowEmpty: false)
      if let key = transaction.idempotencyKey {
        try checkName(key, field: "idempotency_key", allowEmpty: false)
      }
      if let digest = transaction.requestDigest {
        guard transaction.idempotencyKey != nil else {
          throw .invalid(
            field: "request_digest", reason: "only a transaction with an idempotency key has one")
        }
        guard digest.count == WALFormat.requestDigestBytes else {
          throw .invalid(
            field: "request_digest",
            reason: "\(digest.count) bytes; it must be \(WALFormat.requestDigestBytes)")
        }
      }
      guard !transaction.operations.isEmpty else {
        throw .invalid(field: "operations", reason: "a transaction needs at least one operation")
      }
      guard transaction.operations.count <= WALFormat.maximumOperationsPerTransaction else {
        throw .invalid(
          field: "operations",
          reason:
            "\(transaction.operations.count) operations; the limit is \(WALFormat.maximumOperationsPerTransaction)"
        )
      }
      for operation in transaction.operations {
        try checkName(operation.id, field: "id", allowEmpty: false)
        for image in [operation.before, operation.after] {
          if let image, image.count >= Int(WALFormat.absentImage) {
            throw .invalid(field: "image", reason: "image of \(image.count) bytes is too large")
          }
        }
      }
    case .epochChange(let change):
      try checkName(change.leader, field: "leader", allowEmpty: true)
    case .quorumChange(let change):
      guard (0...QuorumChange.maximum).contains(change.quorumFollowers) else {
        throw .invalid(
          field: "quorum_followers",
          reason: "\(change.quorumFollowers) is not within 0...\(QuorumChange.maximum)")
      }
    }
  }

  private static func checkName(_ name: String, field: String, allowEmpty: Bool) throws(WALInputError) {
    let count = name.utf8.count
    if count == 0 && !allowEmpty { throw .invalid(field: field, reason: "must not be empty") }
    if count > WALFormat.maximumNameBytes {
      throw .invalid(field: field, reason: "\(count) bytes; the limit is \(WALFormat.maximumNameBytes)")
    }
  }

  /// Encodes a whole frame (header, body, padding) ready to be written at an aligned offset.
  public static func encode(
    record: WALRecord, encodedPayload: [UInt8], previousCRC: UInt32, syncedThroughLSN: LSN
  ) -> (bytes: [UInt8], crc: UInt32) {
    var frame = [UInt8]()
    appendFrame(
      to: &frame, lsn: record.lsn, epoch: record.epoch, transactionID: record.transactionID,
      timestampMicros: record.timestampMicros, recordType: record.payload.recordType,
      encodedPayload: encodedPayload, previousCRC: previousCRC, syncedThroughLSN: syncedThroughLSN)
    let crc = frame.withUnsafeBytes { raw in
      raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
    }
    return (frame, crc)
  }

  /// Appends one frame to `buffer` (which must end at an aligned offset) and returns its CRC.
  /// This is the hot path of the log's flusher: it writes in place, with no intermediate arrays.
  @discardableResult
  public static func appendFrame(
    to buffer: inout [UInt8], lsn: LSN, epoch: Epoch, transactionID: TransactionID, timestampMicros: Int64,
    recordType: UInt8, encodedPayload: [UInt8], previousCRC: UInt32, syncedThroughLSN: LSN
  ) -> UInt32 {
    let start = buffer.count
    let bodyLength = WALFormat.recordBodyHeaderSize + encodedPayload.count
    let total = WALFormat.aligned(WALFormat.frameHeaderSize + bodyLength)
    buffer.append(contentsOf: repeatElement(0, count: total))
    return buffer.withUnsafeMutableBytes { raw -> UInt32 in
      let frame = UnsafeMutableRawBufferPointer(rebasing: raw[start..<start + total])
      frame.storeBytes(of: UInt32(bodyLength).littleEndian, toByteOffset: 0, as: UInt32.self)
      let body = 8
      frame.storeBytes(of: recordType, toByteOffset: body, as: UInt8.self)
      frame.storeBytes(of: previousCRC.littleEndian, toByteOffset: body + 4, as: UInt32.self)
      frame.storeBytes(of: lsn.rawValue.littleEndian, toByteOffset: body + 8, as: UInt64.self)
      frame.storeBytes(of: epoch.rawValue.littleEndian, toByteOffset: body + 16, as: UInt64.self)
      frame.storeBytes(of: transactionID.rawValue.littleEndian, toByteOffset: body + 24, as: UInt64.self)
      frame.storeBytes(of: timestampMicros.littleEndian, toByteOffset: body + 32, as: Int64.self)
      frame.storeBytes(of: syncedThroughLSN.rawValue.littleEndian, toByteOffset: body + 40, as: UInt64.self)
      encodedPayload.withUnsafeBytes { payload in
        if payload.count > 0 {
          UnsafeMutableRawBufferPointer(rebasing: frame[(body + WALFormat.recordBodyHeaderSize)...])
            .copyMemory(from: payload)
        }
      }
      let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: frame[body..<body + bodyLength]))
      frame.storeBytes(of: crc.littleEndian, toByteOffset: 4, as: UInt32.self)
      return crc
    }
  }

  /// Decodes the frame at the start of `bytes`. Never traps: lengths are checked against
  /// `maximumBodySize` and the bytes available before anything is allocated.
  public static func decode(
    _ bytes: UnsafeRawBufferPointer, maximumBodySize: Int = WALFormat.maximumRecordBodySize
  ) -> Result<WALFrame, FrameProblem> {
    guard bytes.count >= WALFormat.frameHeaderSize else {
      if bytes.allSatisfy({ $0 == 0 }) { return .failure(.empty) }
      return .failure(.truncated(needed: WALFormat.frameHeaderSize, available: bytes.count))
    }
    let length = bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self).littleEndian
    let storedCRC = bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
    if length == 0 { return .failure(storedCRC == 0 ? .empty : .badLength(0)) }
    guard Int(length) >= WALFormat.recordBodyHeaderSize,
      Int(length) <= min(maximumBodySize, WALFormat.maximumRecordBodySize)
    else { return .failure(.badLength(length)) }
    let total = WALFormat.aligned(WALFormat.frameHeaderSize + Int(length))
    let bodyEnd = WALFormat.frameHeaderSize + Int(length)
    guard bodyEnd <= bytes.count else { return .failure(.truncated(needed: total, available: bytes.count)) }
    let body = UnsafeRawBufferPointer(rebasing: bytes[WALFormat.frameHeaderSize..<bodyEnd])
    let computed = CRC32C.checksum(body)
    guard computed == storedCRC else {
      return .failure(.checksumMismatch(stored: storedCRC, computed: computed))
    }
    guard WALFormat.RecordType.known.contains(body[0]) else { return .failure(.unknownRecordType(body[0])) }
    // Padding is not covered by the CRC, so it must be zero: nothing unchecked is ever accepted.
    for index in bodyEnd..<min(total, bytes.count) where bytes[index] != 0 {
      return .failure(.nonZeroPadding(atFrameOffset: index))
    }
    do {
      let (record, previousCRC, synced) = try decodeBody(body)
      return .success(
        WALFrame(
          record: record, crc: storedCRC, previousCRC: previousCRC, syncedThroughLSN: synced,
          encodedSize: min(total, max(bodyEnd, bytes.count))))
    } catch {
      return .failure(.malformedBody(error.description))
    }
  }

  static func decodeBody(_ body: UnsafeRawBufferPointer) throws(ByteDecodingError) -> (WALRecord, UInt32, LSN)
  {
    var reader = ByteReader(body)
    let type: UInt8 = try reader.read()
    let flags: UInt8 = try reader.read()
    let reserved: UInt16 = try reader.read()
    guard flags == 0, reserved == 0 else {
      throw .invalidValue(field: "flags", offset: 1, detail: "unknown flags \(flags)/\(reserved)")
    }
    let previousCRC: UInt32 = try reader.read()
    let lsn = LSN(try reader.read(UInt64.self))
    let epoch = Epoch(try reader.read(UInt64.self))
    let transactionID = TransactionID(try reader.read(UInt64.self))
    let timestamp: Int64 = try reader.read()
    let synced = LSN(try reader.read(UInt64.self))
    guard lsn > .zero else { throw .invalidValue(field: "lsn", offset: 8, detail: "LSN 0 is reserved") }
    guard synced < lsn else {
      throw .invalidValue(
        field: "synced_through_lsn", offset: 40, detail: "\(synced) is not below the record's LSN \(lsn)")
    }
    let payload: WALPayload
    switch type {
    case WALFormat.RecordType.transaction:
      payload = .transaction(try decodeTransaction(&reader, withDigest: false))
    case WALFormat.RecordType.keyedTransaction:
      payload = .transaction(try decodeTransaction(&reader, withDigest: true))
    case WALFormat.RecordType.epochChange:
      let previous = Epoch(try reader.read(UInt64.self))
      let leader = try readName(&reader, field: "leader")
      guard previous < epoch else {
        throw .invalidValue(
          field: "previous_epoch", offset: 48, detail: "\(previous) is not below the new epoch \(epoch)")
      }
      payload = .epochChange(EpochChange(previousEpoch: previous, leader: leader))
    case WALFormat.RecordType.quorumChange:
      let k: UInt32 = try reader.read()
      guard k <= UInt32(QuorumChange.maximum) else {
        throw .invalidValue(
          field: "quorum_followers", offset: 48, detail: "\(k) exceeds \(QuorumChange.maximum)")
      }
      payload = .quorumChange(QuorumChange(quorumFollowers: Int(k)))
    default:
      throw .invalidValue(field: "record_type", offset: 0, detail: "unknown record type \(type)")
    }
    guard reader.remaining == 0 else {
      throw .invalidValue(
        field: "body", offset: reader.offset, detail: "\(reader.remaining) unexpected trailing bytes")
    }
    let record = WALRecord(
      lsn: lsn, epoch: epoch, transactionID: transactionID, timestampMicros: timestamp, payload: payload)
    return (record, previousCRC, synced)
  }

  private static func decodeTransaction(_ reader: inout ByteReader, withDigest: Bool)
    throws(ByteDecodingError)
    -> WALTransaction
  {
    let namespace = try readName(&reader, field: "namespace")
    guard !namespace.isEmpty else {
      throw .invalidValue(field: "namespace", offset: reader.offset, detail: "empty")
    }
    let key = try readName(&reader, field: "idempotency_key")
    var digest: [UInt8]?
    if withDigest {
      guard !key.isEmpty else {
        throw .invalidValue(
          field: "idempotency_key", offset: reader.offset, detail: "a keyed transaction (type 4) needs a key")
      }
      digest = try reader.readBytes(WALFormat.requestDigestBytes)
    }
    let countOffset = reader.offset
    let count: UInt32 = try reader.read()
    // Each operation takes at least 15 bytes (kind, target, reserved, a 1-byte id, two absent
    // images), which bounds the count by the bytes left before anything is allocated.
    guard count > 0, Int(count) <= WALFormat.maximumOperationsPerTransaction,
      Int(count) * 15 <= reader.remaining
    else {
      throw .invalidValue(
        field: "operation_count", offset: countOffset,
        detail: "\(count) operations in \(reader.remaining) bytes")
    }
    var operations: [WALOperation] = []
    operations.reserveCapacity(Int(count))
    for _ in 0..<count {
      let kindOffset = reader.offset
      guard let kind = OperationKind(rawValue: try reader.read()) else {
        throw .invalidValue(field: "operation_kind", offset: kindOffset, detail: "unknown")
      }
      guard let target = TargetType(rawValue: try reader.read()) else {
        throw .invalidValue(field: "target_type", offset: kindOffset + 1, detail: "unknown")
      }
      guard try reader.read(UInt16.self) == 0 else {
        throw .invalidValue(field: "operation_reserved", offset: kindOffset + 2, detail: "must be zero")
      }
      let id = try readName(&reader, field: "id")
      guard !id.isEmpty else { throw .invalidValue(field: "id", offset: reader.offset, detail: "empty") }
      let before = try readImage(&reader)
      let after = try readImage(&reader)
      operations.append(WALOperation(kind: kind, target: target, id: id, before: before, after: after))
    }
    return WALTransaction(
      namespace: namespace, operations: operations, idempotencyKey: key.isEmpty ? nil : key,
      requestDigest: digest)
  }

  private static func readName(_ reader: inout ByteReader, field: String) throws(ByteDecodingError) -> String
  {
    let offset = reader.offset
    let length = Int(try reader.read(UInt16.self))
    guard length <= WALFormat.maximumNameBytes else {
      throw .invalidValue(
        field: field, offset: offset, detail: "\(length) bytes exceeds \(WALFormat.maximumNameBytes)")
    }
    return try reader.readString(length, field: field)
  }

  private static func readImage(_ reader: inout ByteReader) throws(ByteDecodingError) -> [UInt8]? {
    let length: UInt32 = try reader.read()
    if length == WALFormat.absentImage { return nil }
    return try reader.readBytes(Int(length))
  }
}

extension WALFrame {
  /// Appends one record's body (the frame body above, with `previousCRC` and `syncedThroughLSN`
  /// zero) without the on-disk length, checksum and padding. The replication stream carries
  /// records this way, inside its own checksummed frames (docs/replication-protocol.md).
  public static func encodeRecordBody(_ record: WALRecord, into writer: inout ByteWriter) {
    let payload = encodePayload(record.payload)
    writer.write(record.payload.recordType)
    writer.write(UInt8(0))
    writer.write(UInt16(0))
    writer.write(UInt32(0))
    writer.write(record.lsn.rawValue)
    writer.write(record.epoch.rawValue)
    writer.write(record.transactionID.rawValue)
    writer.write(record.timestampMicros)
    writer.write(UInt64(0))
    writer.write(bytes: payload)
  }

  /// Decodes what `encodeRecordBody` wrote. Throws on anything the log's own decoder would refuse,
  /// and on a non-zero `previousCRC` or `syncedThroughLSN`, which have no meaning off disk.
  public static func decodeRecordBody(_ body: UnsafeRawBufferPointer) throws(ByteDecodingError) -> WALRecord {
    let (record, previousCRC, synced) = try decodeBody(body)
    guard previousCRC == 0, synced == .zero else {
      throw .invalidValue(field: "record_header", offset: 4, detail: "chain fields must be zero off disk")
    }
    return record
  }
}
