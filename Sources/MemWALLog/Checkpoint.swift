import MemWALCore

/// A snapshot of the stores as of `lsn`, with what the log needs to continue after it even when
/// the segments holding records up to `lsn` have been retired.
public struct Checkpoint: Sendable, Equatable {
  public var lsn: LSN
  public var epoch: Epoch
  /// Commit time of the record at `lsn` (0 when `lsn` is 0).
  public var timestampMicros: Int64
  public var lastTransactionID: TransactionID
  public var epochHistory: [EpochStart]
  /// The caller's snapshot bytes, opaque to the log.
  public var payload: [UInt8]

  public init(
    lsn: LSN, epoch: Epoch, timestampMicros: Int64, lastTransactionID: TransactionID,
    epochHistory: [EpochStart],
    payload: [UInt8]
  ) {
    self.lsn = lsn
    self.epoch = epoch
    self.timestampMicros = timestampMicros
    self.lastTransactionID = lastTransactionID
    self.epochHistory = epochHistory
    self.payload = payload
  }
}

/// The checkpoint file format (docs/wal-format.md, "Checkpoint files").
///
/// ```
/// header (64 bytes):
/// 0  magic "MWALCKP\0"  8 version:u32  12 headerSize:u32  16 clusterID:u128
/// 32 lsn:u64  40 epoch:u64  48 bodyLength:u64  56 bodyCRC:u32  60 headerCRC:u32
/// body:
///    timestampMicros:i64 lastTransactionID:u64 historyCount:u32
///    historyCount × (epoch:u64 firstLSN:u64)  payloadLength:u64 payload
/// ```
public enum CheckpointFormat {
  public static let headerSize = 64
  public static let magic: [UInt8] = Array("MWALCKP".utf8) + [0]
  public static let formatVersion: UInt32 = 1
  static let maximumHistory = 1 << 20

  public static func encode(_ checkpoint: Checkpoint, clusterID: ClusterID) -> [UInt8] {
    var body = ByteWriter(capacity: checkpoint.payload.count + 64 + checkpoint.epochHistory.count * 16)
    body.write(checkpoint.timestampMicros)
    body.write(checkpoint.lastTransactionID.rawValue)
    body.write(UInt32(checkpoint.epochHistory.count))
    for start in checkpoint.epochHistory {
      body.write(start.epoch.rawValue)
      body.write(start.firstLSN.rawValue)
    }
    body.write(UInt64(checkpoint.payload.count))
    body.write(bytes: checkpoint.payload)

    var header = ByteWriter(capacity: headerSize + body.count)
    header.write(bytes: magic)
    header.write(formatVersion)
    header.write(UInt32(headerSize))
    header.write(clusterID.high)
    header.write(clusterID.low)
    header.write(checkpoint.lsn.rawValue)
    header.write(checkpoint.epoch.rawValue)
    header.write(UInt64(body.count))
    header.write(CRC32C.checksum(body.bytes))
    header.write(CRC32C.checksum(header.bytes))
    header.write(bytes: body.bytes)
    return header.bytes
  }

  public static func decode(_ bytes: [UInt8]) -> Result<(Checkpoint, ClusterID), HeaderProblem> {
    guard bytes.count >= headerSize else { return .failure(.truncated(bytes.count)) }
    guard Array(bytes[0..<8]) == magic else { return .failure(.badMagic) }
    return bytes.withUnsafeBytes { raw -> Result<(Checkpoint, ClusterID), HeaderProblem> in
      let storedHeaderCRC = raw.loadUnaligned(fromByteOffset: 60, as: UInt32.self).littleEndian
      guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<60])) == storedHeaderCRC else {
        return .failure(.checksumMismatch)
      }
      do {
        var reader = ByteReader(raw, offset: 8)
        let version: UInt32 = try reader.read()
        let size: UInt32 = try reader.read()
        guard version == formatVersion, size == UInt32(headerSize) else {
          return .failure(.unsupportedVersion(version))
        }
        let cluster = ClusterID(high: try reader.read(), low: try reader.read())
        let lsn = LSN(try reader.read(UInt64.self))
        let epoch = Epoch(try reader.read(UInt64.self))
        let bodyLength: UInt64 = try reader.read()
        let bodyCRC: UInt32 = try reader.read()
        guard bodyLength == UInt64(raw.count - headerSize) else {
          return .failure(
            .invalidField("body length \(bodyLength) but \(raw.count - headerSize) bytes follow the header"))
        }
        let body = UnsafeRawBufferPointer(rebasing: raw[headerSize...])
        guard CRC32C.checksum(body) == bodyCRC else {
          return .failure(.invalidField("body checksum mismatch"))
        }
        var bodyReader = ByteReader(body)
        let timestamp: Int64 = try bodyReader.read()
        let lastTransaction = TransactionID(try bodyReader.read(UInt64.self))
        let historyCount = Int(try bodyReader.read(UInt32.self))
        guard historyCount <= maximumHistory, historyCount * 16 <= bodyReader.remaining else {
          return .failure(.invalidField("epoch history of \(historyCount) entries"))
        }
        var history: [EpochStart] = []
        for _ in 0..<historyCount {
          history.append(
            EpochStart(
              epoch: Epoch(try bodyReader.read(UInt64.self)), firstLSN: LSN(try bodyReader.read(UInt64.self)))
          )
        }
        let payloadLength: UInt64 = try bodyReader.read()
        guard payloadLength == UInt64(bodyReader.remaining) else {
          return .failure(
            .invalidField("payload length \(payloadLength) but \(bodyReader.remaining) bytes remain"))
        }
        let payload = try bodyReader.readBytes(Int(payloadLength))
        let checkpoint = Checkpoint(
          lsn: lsn, epoch: epoch, timestampMicros: timestamp, lastTransactionID: lastTransaction,
          epochHistory: history,
          payload: payload)
        return .success((checkpoint, cluster))
      } catch {
        return .failure(.invalidField("\(error)"))
      }
    }
  }
}

/// Reading, writing and choosing checkpoint files in a directory.
public struct CheckpointStore: Sendable {
  public let directory: String
  public let fileSystem: FileSystem

  public init(directory: String, fileSystem: FileSystem) {
    self.directory = directory
    self.fileSystem = fileSystem
  }

  /// Checkpoint files, newest first.
  public func list() throws -> [(name: String, lsn: LSN)] {
    guard fileSystem.isDirectory(directory) else { return [] }
    return try fileSystem.contentsOfDirectory(directory)
      .compactMap { name in LogFileNames.checkpointLSN(name).map { (name, $0) } }
      .sorted { $0.lsn > $1.lsn }
  }

  public func load(_ name: String) throws -> Result<(Checkpoint, ClusterID), HeaderProblem> {
    let file = try fileSystem.openFile(joinPath(directory, name), mode: .readOnly)
    defer { file.close() }
    let result = CheckpointFormat.decode(try file.readAll())
    if case .success(let (checkpoint, _)) = result, LogFileNames.checkpoint(lsn: checkpoint.lsn) != name {
      return .failure(
        .invalidField(
          "file name says LSN \(LogFileNames.checkpointLSN(name) ?? .zero), header says \(checkpoint.lsn)"))
    }
    return result
  }

  /// Writes a checkpoint atomically: temporary file, fsync, rename, fsync of the directory.
  /// On return the checkpoint is durable under its final name.
  public func write(_ checkpoint: Checkpoint, clusterID: ClusterID) throws -> String {
    let name = LogFileNames.checkpoint(lsn: checkpoint.lsn)
    let finalPath = joinPath(directory, name)
    let temporaryPath = finalPath + LogFileNames.temporarySuffix
    if fileSystem.fileExists(temporaryPath) { try fileSystem.removeFile(temporaryPath) }
    let file = try fileSystem.openFile(temporaryPath, mode: .createNew)
    do {
      try file.write(CheckpointFormat.encode(checkpoint, clusterID: clusterID), at: 0)
      try file.sync()
      file.close()
    } catch {
      file.close()
      // Leave no partial file to fill a disk that is already full; the next try starts afresh.
      try? fileSystem.removeFile(temporaryPath)
      throw error
    }
    try fileSystem.rename(temporaryPath, to: finalPath)
    try fileSystem.syncDirectory(directory)
    return name
  }
}
