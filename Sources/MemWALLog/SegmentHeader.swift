import MemWALCore

/// The 64-byte header at the start of every segment file (docs/wal-format.md, "Segment header").
///
/// ```
/// 0  magic "MWALSEG\0"   8  version:u32   12 headerSize:u32
/// 16 clusterID:u128      32 firstLSN:u64  40 epoch:u64
/// 48 chainSeedCRC:u32    52 reserved:u32  56 reserved:u32   60 headerCRC:u32
/// ```
public struct SegmentHeader: Sendable, Equatable {
  public static let size = 64
  public static let magic: [UInt8] = Array("MWALSEG".utf8) + [0]
  public static let formatVersion: UInt32 = 1

  public var clusterID: ClusterID
  public var firstLSN: LSN
  /// The log's epoch when the segment was created.
  public var epoch: Epoch
  /// CRC of the last frame before this segment (0 for the first segment of a new log).
  public var chainSeedCRC: UInt32

  public init(clusterID: ClusterID, firstLSN: LSN, epoch: Epoch, chainSeedCRC: UInt32) {
    self.clusterID = clusterID
    self.firstLSN = firstLSN
    self.epoch = epoch
    self.chainSeedCRC = chainSeedCRC
  }

  public func encoded() -> [UInt8] {
    var writer = ByteWriter(capacity: Self.size)
    writer.write(bytes: Self.magic)
    writer.write(Self.formatVersion)
    writer.write(UInt32(Self.size))
    writer.write(clusterID.high)
    writer.write(clusterID.low)
    writer.write(firstLSN.rawValue)
    writer.write(epoch.rawValue)
    writer.write(chainSeedCRC)
    writer.write(UInt32(0))
    writer.write(UInt32(0))
    writer.write(CRC32C.checksum(writer.bytes))
    precondition(writer.count == Self.size)
    return writer.bytes
  }

  /// Decodes and checks a header; the error text says what is wrong.
  public static func decode(_ bytes: [UInt8]) -> Result<SegmentHeader, HeaderProblem> {
    guard bytes.count >= size else { return .failure(.truncated(bytes.count)) }
    guard Array(bytes[0..<8]) == magic else { return .failure(.badMagic) }
    return bytes.withUnsafeBytes { raw in
      let stored = raw.loadUnaligned(fromByteOffset: 60, as: UInt32.self).littleEndian
      let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<60]))
      guard stored == computed else { return .failure(.checksumMismatch) }
      var reader = ByteReader(raw, offset: 8)
      do {
        let version: UInt32 = try reader.read()
        guard version == formatVersion else { return .failure(.unsupportedVersion(version)) }
        let headerSize: UInt32 = try reader.read()
        guard headerSize == UInt32(size) else { return .failure(.unsupportedVersion(version)) }
        let cluster = ClusterID(high: try reader.read(), low: try reader.read())
        let first = LSN(try reader.read(UInt64.self))
        let epoch = Epoch(try reader.read(UInt64.self))
        let seed: UInt32 = try reader.read()
        guard first > .zero else { return .failure(.invalidField("first LSN is 0")) }
        return .success(SegmentHeader(clusterID: cluster, firstLSN: first, epoch: epoch, chainSeedCRC: seed))
      } catch {
        return .failure(.truncated(bytes.count))
      }
    }
  }
}

/// What is wrong with a segment or checkpoint header.
public enum HeaderProblem: Error, Equatable, Sendable, CustomStringConvertible {
  case truncated(Int)
  case badMagic
  case checksumMismatch
  case unsupportedVersion(UInt32)
  case invalidField(String)

  public var description: String {
    switch self {
    case .truncated(let count): return "header truncated (\(count) bytes)"
    case .badMagic: return "bad magic number"
    case .checksumMismatch: return "header checksum mismatch"
    case .unsupportedVersion(let version): return "unsupported format version \(version)"
    case .invalidField(let detail): return "invalid header: \(detail)"
    }
  }
}

/// Segment and checkpoint file names: the LSN as 20 decimal digits, so names sort in LSN order.
public enum LogFileNames {
  public static let segmentSuffix = ".wal"
  public static let checkpointPrefix = "checkpoint-"
  public static let checkpointSuffix = ".ckpt"
  public static let temporarySuffix = ".tmp"

  public static func segment(firstLSN: LSN) -> String {
    String(firstLSN.rawValue).leftPadded(to: 20) + segmentSuffix
  }

  public static func checkpoint(lsn: LSN) -> String {
    checkpointPrefix + String(lsn.rawValue).leftPadded(to: 20) + checkpointSuffix
  }

  /// The first LSN in a segment file name, or nil if the name is not a segment's.
  public static func segmentLSN(_ name: String) -> LSN? {
    guard name.hasSuffix(segmentSuffix) else { return nil }
    let digits = name.dropLast(segmentSuffix.count)
    guard digits.count == 20, digits.allSatisfy(\.isASCII), let value = UInt64(digits) else { return nil }
    return LSN(value)
  }

  public static func checkpointLSN(_ name: String) -> LSN? {
    guard name.hasPrefix(checkpointPrefix), name.hasSuffix(checkpointSuffix) else { return nil }
    let digits = name.dropFirst(checkpointPrefix.count).dropLast(checkpointSuffix.count)
    guard digits.count == 20, digits.allSatisfy(\.isASCII), let value = UInt64(digits) else { return nil }
    return LSN(value)
  }
}

/// Where a log keeps its files under its root directory.
public struct LogLayout: Sendable {
  public var root: String
  public var walDirectory: String { joinPath(root, "wal") }
  public var checkpointDirectory: String { joinPath(root, "checkpoints") }
  public var archiveDirectory: String { joinPath(root, "archive") }

  public init(root: String) { self.root = root }

  /// Accepts either the data directory (holding `wal/`) or the `wal/` directory itself.
  public static func resolve(_ path: String, fileSystem: FileSystem) -> LogLayout {
    if fileSystem.isDirectory(joinPath(path, "wal")) { return LogLayout(root: path) }
    if lastPathComponent(path) == "wal" { return LogLayout(root: parentDirectory(of: path)) }
    return LogLayout(root: path)
  }
}
