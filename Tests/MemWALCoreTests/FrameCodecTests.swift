import MemWALCore
import Testing

@Suite struct FrameCodecTests {
  static func randomRecord(lsn: UInt64, using generator: inout SeededGenerator) -> WALRecord {
    let payload: WALPayload
    if UInt8.random(in: 0...9, using: &generator) == 0 {
      payload = .epochChange(EpochChange(previousEpoch: Epoch(1), leader: "n\(lsn)"))
    } else {
      let operations = (0..<Int.random(in: 1...4, using: &generator)).map { index -> WALOperation in
        let kind = OperationKind.allCases.randomElement(using: &generator)!
        let target = TargetType.allCases.randomElement(using: &generator)!
        let before =
          kind == .insert ? nil : randomBytes(Int.random(in: 0...50, using: &generator), &generator)
        let after = kind == .delete ? nil : randomBytes(Int.random(in: 0...50, using: &generator), &generator)
        return WALOperation(
          kind: kind, target: target, id: "k\(lsn)-\(index)-é", before: before, after: after)
      }
      payload = .transaction(
        WALTransaction(
          namespace: "ns-\(lsn % 3)", operations: operations,
          idempotencyKey: lsn % 2 == 0 ? "key-\(lsn)" : nil,
          requestDigest: lsn % 4 == 0 ? randomBytes(WALFormat.requestDigestBytes, &generator) : nil))
    }
    let epoch: Epoch = if case .epochChange = payload { Epoch(2) } else { Epoch(1) }
    return WALRecord(
      lsn: LSN(lsn), epoch: epoch, transactionID: TransactionID(lsn), timestampMicros: Int64(lsn) * 10,
      payload: payload)
  }

  static func randomBytes(_ count: Int, _ generator: inout SeededGenerator) -> [UInt8] {
    (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
  }

  /// A stream of valid frames and the frames themselves.
  static func stream(count: Int, seed: UInt64) -> ([UInt8], [WALRecord], [Int]) {
    var generator = SeededGenerator(seed: seed)
    var bytes: [UInt8] = []
    var records: [WALRecord] = []
    var ends: [Int] = []
    var previous: UInt32 = 0
    for lsn in 1...UInt64(count) {
      let record = randomRecord(lsn: lsn, using: &generator)
      let (frame, crc) = WALFrame.encode(
        record: record, encodedPayload: WALFrame.encodePayload(record.payload), previousCRC: previous,
        syncedThroughLSN: LSN(lsn - 1))
      bytes += frame
      ends.append(bytes.count)
      records.append(record)
      previous = crc
    }
    return (bytes, records, ends)
  }

  @Test func roundTripsEveryRecordShape() throws {
    let (bytes, records, _) = Self.stream(count: 500, seed: 7)
    var offset = 0
    var previous: UInt32 = 0
    for record in records {
      let frame = try bytes.withUnsafeBytes {
        try WALFrame.decode(UnsafeRawBufferPointer(rebasing: $0[offset...])).get()
      }
      #expect(frame.record == record)
      #expect(frame.previousCRC == previous)
      #expect(frame.syncedThroughLSN == LSN(record.lsn.rawValue - 1))
      #expect(offset % WALFormat.frameAlignment == 0)
      previous = frame.crc
      offset += frame.encodedSize
    }
    #expect(offset == bytes.count)
  }

  @Test func smallestOperationRoundTrips() throws {
    let transaction = WALTransaction(
      namespace: "n", operations: [WALOperation(kind: .delete, target: .memory, id: "a")])
    try WALFrame.validate(.transaction(transaction))
    let record = WALRecord(
      lsn: LSN(1), epoch: Epoch(1), transactionID: TransactionID(1), timestampMicros: 1,
      payload: .transaction(transaction))
    let (frame, _) = WALFrame.encode(
      record: record, encodedPayload: WALFrame.encodePayload(record.payload), previousCRC: 0,
      syncedThroughLSN: .zero)
    let decoded = try frame.withUnsafeBytes { try WALFrame.decode($0).get() }
    #expect(decoded.record == record)
  }

  /// A keyed transaction carries its request digest as record type 4; type 4 without a key is
  /// refused, and so is a digest cut short.
  @Test func theRequestDigestTravelsAsRecordType4() throws {
    let operations = [WALOperation(kind: .delete, target: .memory, id: "a")]
    let digest = (0..<UInt8(WALFormat.requestDigestBytes)).map { $0 &* 37 }
    func frame(type: UInt8, payload: [UInt8]) -> [UInt8] {
      var bytes: [UInt8] = []
      WALFrame.appendFrame(
        to: &bytes, lsn: LSN(1), epoch: Epoch(1), transactionID: TransactionID(1), timestampMicros: 1,
        recordType: type, encodedPayload: payload, previousCRC: 0, syncedThroughLSN: .zero)
      return bytes
    }
    let keyed = WALPayload.transaction(
      WALTransaction(namespace: "n", operations: operations, idempotencyKey: "k", requestDigest: digest))
    #expect(keyed.recordType == WALFormat.RecordType.keyedTransaction)
    let decoded = try frame(type: keyed.recordType, payload: WALFrame.encodePayload(keyed)).withUnsafeBytes {
      try WALFrame.decode($0).get()
    }
    #expect(decoded.record.payload == keyed)
    // The replication stream carries the same body, so a follower (and a primary promoted from
    // one) learns the digest too.
    var body = ByteWriter()
    WALFrame.encodeRecordBody(decoded.record, into: &body)
    #expect(try body.bytes.withUnsafeBytes { try WALFrame.decodeRecordBody($0) } == decoded.record)
    let keyOnly = WALPayload.transaction(
      WALTransaction(namespace: "n", operations: operations, idempotencyKey: "k"))
    #expect(keyOnly.recordType == WALFormat.RecordType.transaction, "a key without a digest stays type 1")
    let unkeyed = WALFrame.encodePayload(.transaction(WALTransaction(namespace: "n", operations: operations)))
    let refusals = [
      frame(type: WALFormat.RecordType.keyedTransaction, payload: unkeyed),
      frame(type: WALFormat.RecordType.keyedTransaction, payload: WALFrame.encodePayload(keyOnly)),
    ]
    for bytes in refusals {
      let result = bytes.withUnsafeBytes { WALFrame.decode($0) }
      guard case .failure(.malformedBody) = result else {
        Issue.record("a type-4 record without a key or with a short digest was accepted: \(result)")
        continue
      }
    }
  }

  /// Every prefix of a valid stream decodes to exactly the whole frames inside it, then stops.
  @Test func validStreamCutAtEveryByte() {
    let (bytes, records, ends) = Self.stream(count: 40, seed: 11)
    for cut in 0...bytes.count {
      let prefix = Array(bytes[..<cut])
      var offset = 0
      var decoded = 0
      prefix.withUnsafeBytes { raw in
        while offset < raw.count,
          case .success(let frame) = WALFrame.decode(UnsafeRawBufferPointer(rebasing: raw[offset...]))
        {
          #expect(frame.record == records[decoded], "cut \(cut)")
          offset += frame.encodedSize
          decoded += 1
        }
      }
      // Frames whose body is complete are decoded even if their padding was cut.
      let expected = ends.filter { end in
        end <= cut
          || (end - cut < WALFormat.frameAlignment
            && bodyComplete(bytes, frameEnd: end, cut: cut, ends: ends))
      }.count
      #expect(decoded == expected, "cut at \(cut): decoded \(decoded), expected \(expected)")
    }
  }

  private func bodyComplete(_ bytes: [UInt8], frameEnd: Int, cut: Int, ends: [Int]) -> Bool {
    let start = ends.last(where: { $0 < frameEnd }) ?? 0
    let length = bytes.withUnsafeBytes {
      Int($0.loadUnaligned(fromByteOffset: start, as: UInt32.self).littleEndian)
    }
    return start + 8 + length <= cut
  }

  /// 100,000 random byte strings (seeded): the decoder never traps and never accepts one.
  @Test func randomBytesAreNeverAccepted() {
    var generator = SeededGenerator(seed: 2026)
    var accepted = 0
    for round in 0..<100_000 {
      let length = Int.random(in: 0...200, using: &generator)
      var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
      if round % 2 == 0 && length >= 8 {
        // Plausible lengths get past the first check and exercise the rest.
        let bodyLength = UInt32.random(in: 48...UInt32(max(48, length)), using: &generator)
        withUnsafeBytes(of: bodyLength.littleEndian) {
          for (index, byte) in $0.enumerated() { bytes[index] = byte }
        }
      }
      if case .success = bytes.withUnsafeBytes({ WALFrame.decode($0) }) { accepted += 1 }
    }
    #expect(accepted == 0)
  }

  /// Valid frames with one byte changed are rejected (checksum, or a zero-padding check).
  @Test func mutatedFramesAreRejected() {
    let (bytes, _, ends) = Self.stream(count: 30, seed: 5)
    var generator = SeededGenerator(seed: 99)
    var start = 0
    for end in ends {
      for _ in 0..<200 {
        var frame = Array(bytes[start..<end])
        let index = Int.random(in: 0..<frame.count, using: &generator)
        frame[index] ^= UInt8.random(in: 1...255, using: &generator)
        let result = frame.withUnsafeBytes { WALFrame.decode($0) }
        if case .success = result { Issue.record("mutation at byte \(index) of a frame was accepted") }
      }
      start = end
    }
  }

  @Test func validationRefusesWhatTheDecoderWouldReject() {
    let long = String(repeating: "n", count: WALFormat.maximumNameBytes + 1)
    let cases: [WALTransaction] = [
      WALTransaction(namespace: "", operations: [WALOperation(kind: .delete, target: .memory, id: "a")]),
      WALTransaction(namespace: long, operations: [WALOperation(kind: .delete, target: .memory, id: "a")]),
      WALTransaction(namespace: "n", operations: []),
      WALTransaction(namespace: "n", operations: [WALOperation(kind: .delete, target: .memory, id: "")]),
      WALTransaction(
        namespace: "n", operations: [WALOperation(kind: .delete, target: .memory, id: "a")],
        idempotencyKey: ""),
      WALTransaction(
        namespace: "n", operations: [WALOperation(kind: .delete, target: .memory, id: "a")],
        requestDigest: Array(repeating: 1, count: WALFormat.requestDigestBytes)),
      WALTransaction(
        namespace: "n", operations: [WALOperation(kind: .delete, target: .memory, id: "a")],
        idempotencyKey: "k", requestDigest: [1, 2, 3]),
    ]
    for transaction in cases {
      #expect(throws: WALInputError.self) { try WALFrame.validate(.transaction(transaction)) }
    }
  }

  @Test func byteReaderChecksBounds() {
    let bytes: [UInt8] = [1, 2, 3]
    bytes.withUnsafeBytes { raw in
      var reader = ByteReader(raw)
      #expect(throws: ByteDecodingError.truncated(offset: 0, needed: 4, available: 3)) {
        try reader.read(UInt32.self)
      }
      #expect((try? reader.read(UInt16.self)) == 0x0201)
      #expect(throws: ByteDecodingError.self) { try reader.readBytes(2) }
      #expect(throws: ByteDecodingError.self) { try reader.readBytes(-1) }
    }
    [UInt8]([0xFF, 0xFE]).withUnsafeBytes { raw in
      var reader = ByteReader(raw)
      #expect(throws: ByteDecodingError.self) { try reader.readString(2, field: "id") }
    }
  }
}
