import MemWALCluster
import MemWALCore
import MemWALLog

/// The failover controller's durable record (`ControllerRecord`) in `<state_directory>/controller-state.json`
/// (docs/failover.md, "Running the controller").
///
/// Format, version 1 — one JSON object:
///
/// ```
/// {"format": "memwal-controller-state", "version": 1, "epoch": 3, "primary": "n2",
///  "quorum": 1, "quorum_floor": 1, "members": [{"name": "n1", "priority": 0}, …]}
/// ```
///
/// `primary` is null before the first promotion. A write replaces the file atomically:
/// `controller-state.json.tmp` is written and fsynced, renamed over the file, and the directory is
/// fsynced, so a crash at any point leaves the old record or the new one, never a mixture. A file
/// that cannot be read, is not this format, or has an unknown version stops start-up with an error
/// naming it: the controller never guesses an epoch.
public struct ControllerStateFile: Sendable {
  public static let fileName = "controller-state.json"
  static let format = "memwal-controller-state"
  static let version = 1
  /// A record is a few hundred bytes; anything much larger is not one.
  static let maximumBytes = 1 << 20

  public let directory: String
  let fileSystem: any FileSystem

  public init(directory: String, fileSystem: any FileSystem = POSIXFileSystem()) {
    self.directory = directory
    self.fileSystem = fileSystem
  }

  public var path: String { joinPath(directory, Self.fileName) }
  var temporaryPath: String { path + ".tmp" }

  /// The persisted record, or nil when there is none yet (a first start). Creates the directory.
  public func load() throws(ControllerStateError) -> ControllerRecord? {
    do {
      try ensureDirectory()
    } catch {
      throw .unusable(path: directory, reason: "cannot create the state directory: \(error)")
    }
    guard fileSystem.fileExists(path) else { return nil }
    let bytes: [UInt8]
    do {
      let file = try fileSystem.openFile(path, mode: .readOnly)
      defer { file.close() }
      let size = try file.size()
      guard size <= Int64(Self.maximumBytes) else {
        throw ControllerStateError.unusable(path: path, reason: "\(size) bytes is too large for a record")
      }
      bytes = try file.read(at: 0, count: Int(size))
    } catch let error as ControllerStateError {
      throw error
    } catch {
      throw .unusable(path: path, reason: "cannot read it: \(error)")
    }
    do {
      return try Self.decode(bytes)
    } catch {
      throw .unusable(path: path, reason: error.reason)
    }
  }

  /// Replaces the persisted record durably: temp file → fsync → rename → fsync of the directory.
  /// When it returns, a restarted controller starts from `record`.
  public func write(_ record: ControllerRecord) throws(ControllerStateError) {
    let bytes = Array(Self.encode(record).utf8)
    do {
      try ensureDirectory()
      if fileSystem.fileExists(temporaryPath) { try fileSystem.removeFile(temporaryPath) }
      let file = try fileSystem.openFile(temporaryPath, mode: .createNew)
      do {
        try file.write(bytes, at: 0)
        try file.sync()
        file.close()
      } catch {
        file.close()
        throw error
      }
      try fileSystem.rename(temporaryPath, to: path)
      try fileSystem.syncDirectory(directory)
    } catch {
      throw .unusable(path: path, reason: "cannot write it: \(error)")
    }
  }

  /// Creates the directory (and its parents) if needed, and makes its entry durable.
  private func ensureDirectory() throws {
    guard !fileSystem.isDirectory(directory) else { return }
    try fileSystem.createDirectory(directory)
    try fileSystem.syncDirectory(parentDirectory(of: directory))
  }

  // MARK: encoding

  static func encode(_ record: ControllerRecord) -> String {
    let members = record.members.map { member -> JSONValue in
      .object(["name": .string(member.name), "priority": .number(Double(member.priority))])
    }
    let value = JSONValue.object([
      "format": .string(format), "version": .number(Double(version)),
      "epoch": .number(Double(record.epoch.rawValue)), "primary": record.primary.map { .string($0) } ?? .null,
      "quorum": .number(Double(record.quorumFollowers)), "quorum_floor": .number(Double(record.quorumFloor)),
      "members": .array(members),
    ])
    return value.jsonText + "\n"
  }

  struct DecodingError: Error {
    var reason: String
  }

  static func decode(_ bytes: [UInt8]) throws(DecodingError) -> ControllerRecord {
    let value: JSONValue
    do {
      value = try JSONParser.parse(bytes)
    } catch {
      throw DecodingError(reason: "not valid JSON (\(error)); a torn or foreign file?")
    }
    guard case .object(let fields) = value else { throw DecodingError(reason: "not a JSON object") }
    guard fields["format"] == .string(format) else {
      throw DecodingError(reason: "format is not \"\(format)\"")
    }
    let version = try integer(fields, "version", in: 0...Int(Int32.max))
    guard version == Self.version else {
      throw DecodingError(
        reason: "version \(version) is not known to this memwal (it reads version \(Self.version))")
    }
    let epoch = try integer(fields, "epoch", in: 0...(1 << 53))
    guard case .array(let items)? = fields["members"], !items.isEmpty else {
      throw DecodingError(reason: "members must be a non-empty array")
    }
    var members: [ClusterMember] = []
    for (index, item) in items.enumerated() {
      guard case .object(let member) = item, case .string(let name)? = member["name"],
        ClusterSettings.isValidName(name)
      else { throw DecodingError(reason: "members[\(index)] needs a valid name") }
      guard !members.contains(where: { $0.name == name }) else {
        throw DecodingError(reason: "members[\(index)]: \(name) appears twice")
      }
      let priority = try integer(member, "priority", in: -1_000...1_000, path: "members[\(index)].")
      members.append(ClusterMember(name: name, priority: priority))
    }
    var primary: String?
    switch fields["primary"] {
    case .null?: primary = nil
    case .string(let name)? where members.contains(where: { $0.name == name }): primary = name
    default: throw DecodingError(reason: "primary must be null or a member's name")
    }
    let quorum = try integer(fields, "quorum", in: 0...(members.count - 1))
    let floor = try integer(fields, "quorum_floor", in: 0...quorum)
    guard epoch > 0 || primary == nil else { throw DecodingError(reason: "a primary needs an epoch above 0") }
    return ControllerRecord(
      epoch: Epoch(UInt64(epoch)), primary: primary, members: members, quorumFollowers: quorum,
      quorumFloor: floor)
  }

  private static func integer(
    _ fields: [String: JSONValue], _ key: String, in range: ClosedRange<Int>, path: String = ""
  ) throws(DecodingError) -> Int {
    guard case .number(let number)? = fields[key], number == number.rounded(), abs(number) <= 9.0e15,
      range.contains(Int(number))
    else { throw DecodingError(reason: "\(path)\(key) must be an integer in \(range)") }
    return Int(number)
  }
}

/// Why the controller cannot use its state file.
public enum ControllerStateError: Error, Equatable, Sendable, CustomStringConvertible {
  case unusable(path: String, reason: String)

  public var description: String {
    switch self {
    case .unusable(let path, let reason): return "controller state \(path): \(reason)"
    }
  }
}
