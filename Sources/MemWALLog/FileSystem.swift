import MemWALCore

/// Every byte the log reads or writes goes through these two protocols, so that tests can put a
/// simulated disk underneath that fails or "loses power" at any chosen operation
/// (`SimulatedFileSystem`), while production uses `POSIXFileSystem`.

/// How to open a file.
public enum FileOpenMode: Sendable {
  case readOnly
  case readWrite
  /// Create a new file; fail if it exists.
  case createNew
}

/// An open file. Offsets and sizes are in bytes.
public protocol StorageFile: AnyObject, Sendable {
  var path: String { get }
  /// Reads up to `count` bytes at `offset`; fewer only at the end of the file.
  func read(at offset: Int64, count: Int) throws -> [UInt8]
  /// Writes all of `bytes` at `offset`.
  func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws
  /// `fdatasync`: the file's data (and the metadata needed to read it) is durable on return.
  func sync() throws
  func size() throws -> Int64
  func truncate(to size: Int64) throws
  /// Reserves `size` bytes (zero-filled) so later writes within them need no allocation.
  func preallocate(size: Int64) throws
  func close()
}

/// A directory tree.
public protocol FileSystem: AnyObject, Sendable {
  func openFile(_ path: String, mode: FileOpenMode) throws -> StorageFile
  /// Names (not paths) of the entries of a directory.
  func contentsOfDirectory(_ path: String) throws -> [String]
  /// Creates the directory and any missing parents.
  func createDirectory(_ path: String) throws
  func fileExists(_ path: String) -> Bool
  func isDirectory(_ path: String) -> Bool
  /// Atomically replaces `destination` with `source` (POSIX `rename`). Durable after `syncDirectory`.
  func rename(_ source: String, to destination: String) throws
  func removeFile(_ path: String) throws
  /// `fsync` of a directory: makes creations, renames and removals in it durable.
  func syncDirectory(_ path: String) throws
}

extension StorageFile {
  public func write(_ bytes: [UInt8], at offset: Int64) throws {
    try bytes.withUnsafeBytes { try write($0, at: offset) }
  }

  /// Writes zeros over `range` in 1 MiB writes. Unlike `preallocate` alone (which leaves
  /// "unwritten" extents whose conversion costs a metadata write on every later `fdatasync`), the
  /// blocks are then really written, so later overwrites sync only their data — PostgreSQL zero-fills
  /// new WAL segments for the same reason.
  public func writeZeros(from start: Int64, to end: Int64) throws {
    let chunk = [UInt8](repeating: 0, count: 1 << 20)
    var offset = start
    while offset < end {
      let count = Int(min(Int64(chunk.count), end - offset))
      try chunk.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[0..<count]), at: offset) }
      offset += Int64(count)
    }
  }

  /// Reads the whole file.
  public func readAll() throws -> [UInt8] {
    try read(at: 0, count: Int(try size()))
  }
}

/// A failed file-system call, with the path and the operating system's reason.
public struct FileSystemError: Error, Equatable, Sendable, CustomStringConvertible {
  public var operation: String
  public var path: String
  public var errno: Int32
  public var reason: String

  public init(operation: String, path: String, errno: Int32, reason: String) {
    self.operation = operation
    self.path = path
    self.errno = errno
    self.reason = reason
  }

  public var description: String { "\(operation) \(path): \(reason) (errno \(errno))" }
}

/// Joins path components with single slashes.
public func joinPath(_ base: String, _ name: String) -> String {
  if base.isEmpty { return name }
  return base.hasSuffix("/") ? base + name : base + "/" + name
}

/// The directory part of a path ("." for a bare name).
public func parentDirectory(of path: String) -> String {
  guard let slash = path.lastIndex(of: "/") else { return "." }
  if slash == path.startIndex { return "/" }
  return String(path[..<slash])
}

/// The last component of a path.
public func lastPathComponent(_ path: String) -> String {
  guard let slash = path.lastIndex(of: "/") else { return path }
  return String(path[path.index(after: slash)...])
}
