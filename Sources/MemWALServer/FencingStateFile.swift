import MemWALCluster
import MemWALCore
import MemWALLog

/// Why the fencing state file could not be read.
public struct FencingStateFileError: Error, Sendable, Equatable, CustomStringConvertible {
  public var path: String
  public var reason: String
  public var description: String { "fencing state \(path): \(reason)" }
}

/// A node's fencing state on disk (`fencing.state` in the data directory): the epoch it promised
/// the controller, its role, its epoch and the primary it follows. A node restarts from it, so a
/// promise survives a crash and a drained primary does not take writes again on its own.
///
/// Format, little-endian: magic "MWF1" u32, version u16, promised epoch u64, role u8 (1 primary,
/// 2 draining, 3 follower), epoch u64, primary name (u16 length + UTF-8; length 0 = none), then
/// CRC-32C u32 of everything before it. Written as temp file → fsync → rename → fsync directory,
/// so a crash leaves the old state or the new one, never a mix.
public enum FencingStateFile {
  public static let fileName = "fencing.state"
  static let magic: UInt32 = 0x3146_574D
  static let version: UInt16 = 1

  public static func path(in directory: String) -> String { joinPath(directory, fileName) }

  public static func encode(_ state: FencingState) -> [UInt8] {
    var writer = ByteWriter(capacity: 64)
    writer.write(magic)
    writer.write(version)
    writer.write(state.promisedEpoch.rawValue)
    writer.write(state.role.code)
    writer.write(state.epoch.rawValue)
    let name = Array((state.primary ?? "").utf8.prefix(WALFormat.maximumNameBytes))
    writer.write(UInt16(name.count))
    writer.write(bytes: name)
    writer.write(CRC32C.checksum(writer.bytes))
    return writer.bytes
  }

  public static func decode(_ bytes: [UInt8], path: String) throws(FencingStateFileError) -> FencingState {
    func fail(_ reason: String) -> FencingStateFileError { FencingStateFileError(path: path, reason: reason) }
    guard bytes.count >= 4 + 2 + 8 + 1 + 8 + 2 + 4 else { throw fail("too short (\(bytes.count) bytes)") }
    let stored = bytes.withUnsafeBytes {
      UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: bytes.count - 4, as: UInt32.self))
    }
    guard CRC32C.checksum(bytes[..<(bytes.count - 4)]) == stored else { throw fail("checksum mismatch") }
    do {
      return try bytes.withUnsafeBytes { raw in
        var reader = ByteReader(UnsafeRawBufferPointer(rebasing: raw[..<(bytes.count - 4)]))
        guard try reader.read(UInt32.self) == magic else { throw fail("not a fencing state file") }
        let found: UInt16 = try reader.read()
        guard found == version else { throw fail("unknown version \(found)") }
        let promised = Epoch(try reader.read(UInt64.self))
        let code: UInt8 = try reader.read()
        guard let role = FencedRole(code: code) else { throw fail("unknown role \(code)") }
        let epoch = Epoch(try reader.read(UInt64.self))
        let length = Int(try reader.read(UInt16.self))
        let primary = try reader.readString(length, field: "primary")
        guard reader.remaining == 0 else { throw fail("\(reader.remaining) trailing bytes") }
        return FencingState(
          promisedEpoch: promised, role: role, epoch: epoch, primary: primary.isEmpty ? nil : primary)
      }
    } catch let error as FencingStateFileError {
      throw error
    } catch {
      throw fail("\(error)")
    }
  }

  /// The state in `directory`, or nil when the node never persisted one.
  public static func load(directory: String, fileSystem: any FileSystem) throws -> FencingState? {
    let path = path(in: directory)
    guard fileSystem.fileExists(path) else { return nil }
    let file = try fileSystem.openFile(path, mode: .readOnly)
    defer { file.close() }
    return try decode(try file.readAll(), path: path)
  }

  /// Writes `state` durably (temp → fsync → rename → fsync directory).
  public static func store(_ state: FencingState, directory: String, fileSystem: any FileSystem) throws {
    let path = path(in: directory)
    let temporary = path + ".tmp"
    if fileSystem.fileExists(temporary) { try fileSystem.removeFile(temporary) }
    let file = try fileSystem.openFile(temporary, mode: .createNew)
    do {
      try file.write(encode(state), at: 0)
      try file.sync()
      file.close()
    } catch {
      file.close()
      throw error
    }
    try fileSystem.rename(temporary, to: path)
    try fileSystem.syncDirectory(directory)
  }
}
