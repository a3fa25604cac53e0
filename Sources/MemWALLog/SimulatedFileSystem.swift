import MemWALCore
import Synchronization

/// An in-memory disk that remembers what is durable and what is not, for crash and fault tests
/// (SQLite's and TigerBeetle's method).
///
/// - File contents: a write changes the *current* bytes; `sync()` makes them *durable*.
/// - Directory entries: creating, renaming or removing a file changes the *current* namespace;
///   `syncDirectory` makes the namespace of that directory durable. Directories themselves are
///   durable as soon as they are created.
/// - Faults: `plan` can fail (with EIO) or crash at the Nth mutating operation (write, sync,
///   rename, directory sync, create, remove, truncate, preallocate). After a crash every call throws
///   `SimulatedCrash`, as if the process had died.
/// - `crashImage(mode:seed:)` returns the disk a restarted machine would see: only what was durable,
///   plus, depending on the mode, some or all of the unsynced writes in order with the last one torn,
///   or garbage where unsynced writes were.
public final class SimulatedFileSystem: FileSystem, @unchecked Sendable {
  /// What happens at the chosen operation.
  public enum Fault: Sendable, Equatable {
    /// The operation fails with EIO and changes nothing; later operations work.
    case ioError
    /// The operation does not happen and the "process" is dead from then on.
    case crash
  }

  /// Which operations count toward `FaultPlan.operationIndex`.
  public enum OperationKind: String, Sendable, CaseIterable {
    case write, sync, rename, syncDirectory, create, remove, truncate, preallocate
  }

  public struct FaultPlan: Sendable {
    /// 1-based index of the operation that faults, counting only `kinds`.
    public var operationIndex: Int
    public var fault: Fault
    public var kinds: Set<OperationKind>

    public init(operationIndex: Int, fault: Fault, kinds: Set<OperationKind> = Set(OperationKind.allCases)) {
      self.operationIndex = operationIndex
      self.fault = fault
      self.kinds = kinds
    }
  }

  /// What survives a simulated power loss.
  public enum CrashMode: Sendable, CaseIterable {
    /// Every unsynced byte is lost.
    case dropUnsynced
    /// A seeded prefix of the unsynced writes survives, in order, the last of them torn at a random byte.
    case tornUnsyncedPrefix
    /// Every unsynced write is replaced by random bytes of the same length.
    case garbleUnsynced
  }

  final class Inode: @unchecked Sendable {
    var current: [UInt8]
    var durable: [UInt8]
    /// Writes (and size changes, as `nil` bytes) since the last sync, in order.
    var pending: [(offset: Int, bytes: [UInt8]?, newSize: Int)] = []

    init(current: [UInt8] = [], durable: [UInt8] = []) {
      self.current = current
      self.durable = durable
    }
  }

  struct State {
    var current: [String: Inode] = [:]
    var durable: [String: Inode] = [:]
    var directories: Set<String> = ["/", "."]
    var plan: FaultPlan?
    var counted = 0
    var operationsByKind: [OperationKind: Int] = [:]
    var isCrashed = false
  }

  let state = Mutex(State())

  public init() {}

  /// Arms (or, with `nil`, disarms) a fault. The count restarts at zero.
  public func setFaultPlan(_ plan: FaultPlan?) {
    state.withLock {
      $0.plan = plan
      $0.counted = 0
    }
  }

  /// Mutating operations counted so far under the current plan (or since creation).
  public var operationCount: Int { state.withLock { $0.counted } }
  public var isCrashed: Bool { state.withLock { $0.isCrashed } }
  public func count(of kind: OperationKind) -> Int { state.withLock { $0.operationsByKind[kind] ?? 0 } }

  /// Marks the file system crashed now, as if power failed between two operations.
  public func crashNow() { state.withLock { $0.isCrashed = true } }

  // MARK: fault accounting

  /// Called at the start of every mutating operation; throws the planned fault if it is this one.
  func enter(_ kind: OperationKind, _ path: String, _ state: inout State) throws {
    if state.isCrashed { throw SimulatedCrash(operation: kind.rawValue, path: path) }
    state.operationsByKind[kind, default: 0] += 1
    guard let plan = state.plan else {
      state.counted += 1
      return
    }
    guard plan.kinds.contains(kind) else { return }
    state.counted += 1
    guard state.counted == plan.operationIndex else { return }
    switch plan.fault {
    case .ioError:
      throw FileSystemError(
        operation: "\(kind.rawValue) (injected)", path: path, errno: 5, reason: "Input/output error")
    case .crash:
      state.isCrashed = true
      throw SimulatedCrash(operation: kind.rawValue, path: path)
    }
  }

  func checkAlive(_ operation: String, _ path: String, _ state: State) throws {
    if state.isCrashed { throw SimulatedCrash(operation: operation, path: path) }
  }

  // MARK: FileSystem

  public func openFile(_ path: String, mode: FileOpenMode) throws -> StorageFile {
    let path = normalize(path)
    return try state.withLock { state in
      switch mode {
      case .readOnly, .readWrite:
        try checkAlive("open", path, state)
        guard state.current[path] != nil else {
          throw FileSystemError(operation: "open", path: path, errno: 2, reason: "No such file or directory")
        }
      case .createNew:
        guard state.directories.contains(parentDirectory(of: path)) else {
          try checkAlive("open", path, state)
          throw FileSystemError(operation: "open", path: path, errno: 2, reason: "No such file or directory")
        }
        if state.current[path] != nil {
          try checkAlive("open", path, state)
          throw FileSystemError(operation: "open", path: path, errno: 17, reason: "File exists")
        }
        try enter(.create, path, &state)
        state.current[path] = Inode()
      }
      return SimulatedFile(
        fileSystem: self, path: path, inode: state.current[path]!, isWritable: mode != .readOnly)
    }
  }

  public func contentsOfDirectory(_ path: String) throws -> [String] {
    let path = normalize(path)
    return try state.withLock { state in
      try checkAlive("opendir", path, state)
      guard state.directories.contains(path) else {
        throw FileSystemError(operation: "opendir", path: path, errno: 2, reason: "No such file or directory")
      }
      var names = Set<String>()
      for name in state.current.keys where parentDirectory(of: name) == path {
        names.insert(lastPathComponent(name))
      }
      for directory in state.directories where directory != path && parentDirectory(of: directory) == path {
        names.insert(lastPathComponent(directory))
      }
      return names.sorted()
    }
  }

  public func createDirectory(_ path: String) throws {
    let path = normalize(path)
    try state.withLock { state in
      try checkAlive("mkdir", path, state)
      var directory = path
      while !state.directories.contains(directory) {
        state.directories.insert(directory)
        directory = parentDirectory(of: directory)
      }
    }
  }

  public func fileExists(_ path: String) -> Bool {
    let path = normalize(path)
    return state.withLock { $0.current[path] != nil || $0.directories.contains(path) }
  }

  public func isDirectory(_ path: String) -> Bool {
    let path = normalize(path)
    return state.withLock { $0.directories.contains(path) }
  }

  public func rename(_ source: String, to destination: String) throws {
    let source = normalize(source)
    let destination = normalize(destination)
    try state.withLock { state in
      guard let inode = state.current[source] else {
        try checkAlive("rename", source, state)
        throw FileSystemError(
          operation: "rename", path: source, errno: 2, reason: "No such file or directory")
      }
      try enter(.rename, "\(source) -> \(destination)", &state)
      state.current[source] = nil
      state.current[destination] = inode
    }
  }

  public func removeFile(_ path: String) throws {
    let path = normalize(path)
    try state.withLock { state in
      guard state.current[path] != nil else {
        try checkAlive("unlink", path, state)
        throw FileSystemError(operation: "unlink", path: path, errno: 2, reason: "No such file or directory")
      }
      try enter(.remove, path, &state)
      state.current[path] = nil
    }
  }

  public func syncDirectory(_ path: String) throws {
    let path = normalize(path)
    try state.withLock { state in
      try enter(.syncDirectory, path, &state)
      for name in state.durable.keys where parentDirectory(of: name) == path { state.durable[name] = nil }
      for (name, inode) in state.current where parentDirectory(of: name) == path {
        state.durable[name] = inode
      }
    }
  }

  // MARK: crash images

  /// The disk as a machine restarted after a power loss would find it.
  public func crashImage(mode: CrashMode, seed: UInt64 = 1) -> SimulatedFileSystem {
    var generator = SplitMix64(seed: seed)
    let image = SimulatedFileSystem()
    state.withLock { state in
      var copied: [ObjectIdentifier: Inode] = [:]
      for (name, inode) in state.durable.sorted(by: { $0.key < $1.key }) {
        if let done = copied[ObjectIdentifier(inode)] {
          image.state.withLock {
            $0.current[name] = done
            $0.durable[name] = done
          }
          continue
        }
        let survived = Self.surviving(inode, mode: mode, generator: &generator)
        let fresh = Inode(current: survived, durable: survived)
        copied[ObjectIdentifier(inode)] = fresh
        image.state.withLock {
          $0.current[name] = fresh
          $0.durable[name] = fresh
        }
      }
      image.state.withLock { $0.directories = state.directories }
    }
    return image
  }

  private static func surviving(_ inode: Inode, mode: CrashMode, generator: inout SplitMix64) -> [UInt8] {
    var bytes = inode.durable
    switch mode {
    case .dropUnsynced:
      break
    case .tornUnsyncedPrefix:
      guard !inode.pending.isEmpty else { break }
      let kept = Int(generator.next() % UInt64(inode.pending.count + 1))
      for (index, change) in inode.pending.enumerated() where index <= kept {
        if index == kept {
          // The write at the cut survives only partly (possibly not at all).
          guard let data = change.bytes, !data.isEmpty else { break }
          let prefix = Int(generator.next() % UInt64(data.count))
          apply(offset: change.offset, bytes: Array(data.prefix(prefix)), newSize: nil, to: &bytes)
        } else {
          apply(offset: change.offset, bytes: change.bytes, newSize: change.newSize, to: &bytes)
        }
      }
    case .garbleUnsynced:
      for change in inode.pending {
        guard let data = change.bytes else {
          apply(offset: change.offset, bytes: nil, newSize: change.newSize, to: &bytes)
          continue
        }
        var garbage = [UInt8](repeating: 0, count: data.count)
        for index in garbage.indices { garbage[index] = UInt8(truncatingIfNeeded: generator.next()) }
        apply(offset: change.offset, bytes: garbage, newSize: nil, to: &bytes)
      }
    }
    return bytes
  }

  static func apply(offset: Int, bytes: [UInt8]?, newSize: Int?, to content: inout [UInt8]) {
    if let bytes {
      let end = offset + bytes.count
      if end > content.count { content.append(contentsOf: repeatElement(0, count: end - content.count)) }
      content.replaceSubrange(offset..<end, with: bytes)
    } else if let newSize {
      if newSize < content.count {
        content.removeLast(content.count - newSize)
      } else {
        content.append(contentsOf: repeatElement(0, count: newSize - content.count))
      }
    }
  }

  private func normalize(_ path: String) -> String {
    var result = path
    while result.count > 1 && result.hasSuffix("/") { result.removeLast() }
    return result
  }

  // MARK: file operations (called by SimulatedFile)

  func fileWrite(_ inode: Inode, path: String, bytes: [UInt8], offset: Int) throws {
    try state.withLock { state in
      try enter(.write, path, &state)
      Self.apply(offset: offset, bytes: bytes, newSize: nil, to: &inode.current)
      inode.pending.append((offset, bytes, 0))
    }
  }

  func fileResize(_ inode: Inode, path: String, size: Int, kind: OperationKind) throws {
    try state.withLock { state in
      try enter(kind, path, &state)
      if kind == .preallocate && size <= inode.current.count { return }
      Self.apply(offset: 0, bytes: nil, newSize: size, to: &inode.current)
      inode.pending.append((0, nil, size))
    }
  }

  func fileSync(_ inode: Inode, path: String) throws {
    try state.withLock { state in
      try enter(.sync, path, &state)
      inode.durable = inode.current
      inode.pending.removeAll()
    }
  }

  func fileRead(_ inode: Inode, path: String, offset: Int, count: Int) throws -> [UInt8] {
    try state.withLock { state in
      try checkAlive("read", path, state)
      guard offset < inode.current.count else { return [] }
      return Array(inode.current[offset..<min(inode.current.count, offset + count)])
    }
  }

  func fileSize(_ inode: Inode, path: String) throws -> Int64 {
    try state.withLock { state in
      try checkAlive("fstat", path, state)
      return Int64(inode.current.count)
    }
  }

  // MARK: test helpers

  /// Reads a file's current bytes (tests only).
  public func contents(of path: String) -> [UInt8]? {
    state.withLock { $0.current[normalize(path)]?.current }
  }

  /// Replaces a file's bytes, durably, bypassing fault accounting (tests that corrupt files).
  public func overwrite(_ path: String, with bytes: [UInt8]) {
    state.withLock { state in
      let path = normalize(path)
      let inode = state.current[path] ?? Inode()
      inode.current = bytes
      inode.durable = bytes
      inode.pending.removeAll()
      state.current[path] = inode
      state.durable[path] = inode
    }
  }
}

/// The error every operation throws after a simulated crash.
public struct SimulatedCrash: Error, Equatable, Sendable, CustomStringConvertible {
  public var operation: String
  public var path: String
  public var description: String { "simulated crash at \(operation) \(path)" }
}

final class SimulatedFile: StorageFile, @unchecked Sendable {
  let fileSystem: SimulatedFileSystem
  let path: String
  let inode: SimulatedFileSystem.Inode
  let isWritable: Bool

  init(fileSystem: SimulatedFileSystem, path: String, inode: SimulatedFileSystem.Inode, isWritable: Bool) {
    self.fileSystem = fileSystem
    self.path = path
    self.inode = inode
    self.isWritable = isWritable
  }

  func read(at offset: Int64, count: Int) throws -> [UInt8] {
    try fileSystem.fileRead(inode, path: path, offset: Int(offset), count: count)
  }

  func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
    precondition(isWritable, "write to a file opened read-only: \(path)")
    try fileSystem.fileWrite(inode, path: path, bytes: Array(bytes), offset: Int(offset))
  }

  func sync() throws { try fileSystem.fileSync(inode, path: path) }
  func size() throws -> Int64 { try fileSystem.fileSize(inode, path: path) }
  func truncate(to size: Int64) throws {
    try fileSystem.fileResize(inode, path: path, size: Int(size), kind: .truncate)
  }
  func preallocate(size: Int64) throws {
    try fileSystem.fileResize(inode, path: path, size: Int(size), kind: .preallocate)
  }
  func close() {}
}
