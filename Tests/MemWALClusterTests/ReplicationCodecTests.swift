import MemWALCluster
import MemWALCore
import Testing

/// Records and messages for the codec tests and the simulation.
enum Samples {
  static let cluster = ClusterID(high: 0x0123_4567_89AB_CDEF, low: 0xFEDC_BA98_7654_3210)

  static func record(lsn: UInt64, epoch: UInt64, using generator: inout SplitMix64) -> WALRecord {
    let operations = (0..<Int.random(in: 1...3, using: &generator)).map { index in
      WALOperation(
        kind: .update, target: .memory, id: "m\(lsn)-\(index)",
        before: bytes(Int.random(in: 0...12, using: &generator), &generator),
        after: bytes(Int.random(in: 0...24, using: &generator), &generator))
    }
    return WALRecord(
      lsn: LSN(lsn), epoch: Epoch(epoch), transactionID: TransactionID(lsn), timestampMicros: Int64(lsn) * 7,
      payload: .transaction(WALTransaction(namespace: "ns", operations: operations)))
  }

  static func bytes(_ count: Int, _ generator: inout SplitMix64) -> [UInt8] {
    (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
  }

  static func messages() -> [ReplicationMessage] {
    var generator = SplitMix64(seed: 7)
    let history = [
      EpochStart(epoch: Epoch(1), firstLSN: LSN(1)), EpochStart(epoch: Epoch(3), firstLSN: LSN(40)),
    ]
    let epochChange = WALRecord(
      lsn: LSN(41), epoch: Epoch(4), transactionID: TransactionID(41), timestampMicros: 9,
      payload: .epochChange(EpochChange(previousEpoch: Epoch(3), leader: "n2")))
    return [
      .hello(
        protocolVersion: 1, clusterID: cluster, nodeID: "n2-é", epochHistory: history, lastLSN: LSN(77),
        promisedEpoch: Epoch(3)),
      .hello(
        protocolVersion: 9, clusterID: cluster, nodeID: "", epochHistory: [], lastLSN: .zero,
        promisedEpoch: .zero),
      .welcome(
        primaryID: "n1", epoch: Epoch(3), epochHistory: history, truncateAfter: LSN(39), startAfter: LSN(39)),
      .welcome(
        primaryID: "n1", epoch: Epoch(3), epochHistory: history, truncateAfter: nil, startAfter: LSN(12)),
      .refuse(code: .staleEpoch, message: "epoch 2 < 3"),
      .refuse(code: RefusalCode(rawValue: 999), message: ""),
      .records(
        epoch: Epoch(3), records: (38...40).map { record(lsn: $0, epoch: 3, using: &generator) },
        primaryFlushedLSN: LSN(40), commitLSN: LSN(38)),
      .records(epoch: Epoch(4), records: [epochChange], primaryFlushedLSN: LSN(41), commitLSN: .zero),
      .records(epoch: Epoch(4), records: [], primaryFlushedLSN: LSN(41), commitLSN: .zero),
      .checkpointBegin(lsn: LSN(30), epoch: Epoch(1), totalBytes: 1000, epochHistory: [history[0]]),
      .checkpointChunk(offset: 512, bytes: bytes(100, &generator)),
      .checkpointChunk(offset: 0, bytes: []),
      .checkpointEnd(totalCRC: 0xDEAD_BEEF),
      .checkpointAck(receivedBytes: 612),
      .ack(written: LSN(10), flushed: LSN(9), applied: LSN(8), epoch: Epoch(3)),
      .heartbeat(epoch: Epoch(3), flushedLSN: LSN(40), sentAtMicros: -5),
      .control(id: 1, .heartbeat),
      .control(id: 2, .promise(epoch: Epoch(5))),
      .control(id: 3, .promote(epoch: Epoch(5))),
      .control(id: 4, .follow(primary: "n3-é", epoch: Epoch(5))),
      .control(id: 5, .drain(epoch: Epoch(4))),
      .control(id: .max, .resume(epoch: Epoch(4))),
      .control(id: 7, .setQuorum(quorumFollowers: 2, epoch: Epoch(4))),
      .controlReply(
        id: 1,
        .report(
          NodeReport(
            role: .follower, epoch: Epoch(4), promisedEpoch: Epoch(5), flushedLSN: LSN(40),
            appliedLSN: LSN(39),
            lastEpochInLog: Epoch(4), primary: "n1", seesPrimary: true))),
      .controlReply(
        id: 9,
        .report(
          NodeReport(
            role: .primary, epoch: Epoch(4), promisedEpoch: Epoch(4), flushedLSN: LSN(40),
            appliedLSN: LSN(39),
            lastEpochInLog: Epoch(4), primary: nil, seesPrimary: true, quorumFollowers: 2))),
      .controlReply(
        id: 1,
        .report(
          NodeReport(
            role: .draining, epoch: Epoch(4), promisedEpoch: Epoch(4), flushedLSN: .zero, appliedLSN: .zero,
            lastEpochInLog: .zero, primary: nil, seesPrimary: false))),
      .controlReply(id: 2, .promised(epoch: Epoch(5), flushedLSN: LSN(40), lastLogEpoch: Epoch(4))),
      .controlReply(
        id: 3, .refused(promisedEpoch: Epoch(6), message: "epoch 5 is below the promised epoch 6")),
      .controlReply(id: 3, .promoted(epoch: Epoch(5), lsn: LSN(41))),
      .controlReply(id: 4, .done),
      .controlReply(id: 5, .failed(message: "EIO")),
    ]
  }
}

@Suite struct ReplicationCodecTests {
  @Test func everyMessageRoundTrips() throws {
    for message in Samples.messages() {
      var decoder = ReplicationFrameDecoder()
      decoder.append(message.encodedFrame())
      #expect(try decoder.next() == message, "\(message.name)")
      #expect(try decoder.next() == nil)
      #expect(decoder.bufferedByteCount == 0)
    }
  }

  /// The ByteToMessageDecoderVerifier idea: however the stream is cut, the same messages come out.
  @Test func decoderYieldsTheSameMessagesWhereverTheStreamIsCut() throws {
    let messages = Samples.messages()
    let stream = messages.flatMap { $0.encodedFrame() }
    for cut in 0...stream.count {
      var decoder = ReplicationFrameDecoder()
      var decoded: [ReplicationMessage] = []
      decoder.append(stream[..<cut])
      while let message = try decoder.next() { decoded.append(message) }
      decoder.append(stream[cut...])
      while let message = try decoder.next() { decoded.append(message) }
      #expect(decoded == messages, "cut at \(cut)")
    }
    var decoder = ReplicationFrameDecoder()
    var decoded: [ReplicationMessage] = []
    for byte in stream {
      decoder.append([byte])
      while let message = try decoder.next() { decoded.append(message) }
    }
    #expect(decoded == messages)
  }

  @Test func refusesOversizeFramesBeforeReadingThem() {
    var writer = ByteWriter()
    writer.write(ReplicationWire.magic)
    writer.write(UInt32(ReplicationWire.maximumBodySize + 1))
    var decoder = ReplicationFrameDecoder()
    decoder.append(writer.bytes)
    #expect(throws: ReplicationDecodingError.self) { try decoder.next() }
    // The error sticks: the stream has lost its framing.
    #expect(throws: ReplicationDecodingError.self) { try decoder.next() }
  }

  @Test func errorsSayWhatAndWhere() {
    var frame = ReplicationMessage.checkpointEnd(totalCRC: 1).encodedFrame()
    frame[frame.count - 1] ^= 1
    var decoder = ReplicationFrameDecoder()
    decoder.append(ReplicationMessage.checkpointAck(receivedBytes: 1).encodedFrame() + frame)
    #expect((try? decoder.next()) == .checkpointAck(receivedBytes: 1))
    do {
      _ = try decoder.next()
      Issue.record("a corrupted frame was accepted")
    } catch {
      guard case .checksumMismatch(_, _, let offset) = error else {
        Issue.record("unexpected \(error)")
        return
      }
      #expect(offset == 21)
      #expect(error.description.contains("stream offset 21"))
    }
  }

  /// A valid checksum over a body that is not a message gives a typed error, never a trap.
  @Test func malformedBodiesWithValidChecksums() {
    var generator = SplitMix64(seed: 11)
    var errors = 0
    for _ in 0..<20_000 {
      var body = Samples.bytes(Int.random(in: 0...80, using: &generator), &generator)
      if !body.isEmpty { body[0] = UInt8.random(in: 0...13, using: &generator) }
      var writer = ByteWriter()
      writer.write(ReplicationWire.magic)
      writer.write(UInt32(body.count))
      writer.write(CRC32C.checksum(body))
      writer.write(bytes: body)
      var decoder = ReplicationFrameDecoder()
      decoder.append(writer.bytes)
      do { _ = try decoder.next() } catch { errors += 1 }
    }
    #expect(errors > 19_000)
  }

  /// Random bytes, and every kind of single-byte corruption of valid frames: never a trap, never a
  /// message from a corrupted frame (the CRC catches every single-byte error), only typed errors.
  @Test func corruptedInputNeverYieldsAMessage() throws {
    var generator = SplitMix64(seed: 0x5EED)
    var cases = 0
    for _ in 0..<30_000 {
      var decoder = ReplicationFrameDecoder()
      var bytes = Samples.bytes(Int.random(in: 0...64, using: &generator), &generator)
      if Bool.random(using: &generator), bytes.count >= 4 {
        withUnsafeBytes(of: ReplicationWire.magic.littleEndian) { bytes.replaceSubrange(0..<4, with: $0) }
      }
      decoder.append(bytes)
      #expect((try? decoder.next()) == nil)
      cases += 1
    }
    let frames = Samples.messages().map { $0.encodedFrame() }
    for _ in 0..<80_000 {
      let original = frames.randomElement(using: &generator)!
      var frame = original
      let position = Int.random(in: 0..<frame.count, using: &generator)
      frame[position] ^= UInt8.random(in: 1...255, using: &generator)
      var decoder = ReplicationFrameDecoder()
      decoder.append(frame)
      do {
        let message = try decoder.next()
        #expect(message == nil, "mutation at \(position) of \(original.count) bytes yielded \(message!.name)")
      } catch {
        #expect(!error.description.isEmpty)
      }
      cases += 1
    }
    #expect(cases >= 100_000)
  }
}
