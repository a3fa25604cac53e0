import Glibc  // Linux is the supported platform (shared/DESIGN.md); the calls below are POSIX.
import MemWALCore

/// The real file system, through POSIX calls. `sync()` is `fdatasync`; directory syncs open the
/// directory and `fsync` it.
public final class POSIXFileSystem: FileSystem {
  public init() {}

  public func openFile(_ path: String, mode: FileOpenMode) throws -> StorageFile {
    let flags: Int32
    switch mode {
    case .readOnly: flags = O_RDONLY
    case .readWrite: flags = O_RDWR
    case .createNew: flags = O_RDWR | O_CREAT | O_EXCL
    }
    let fd = retryingOnInterrupt { Glibc.open(path, flags | O_CLOEXEC, 0o644) }
    guard fd >= 0 else { throw posixError("open", path) }
    return POSIXFile(path: path, descriptor: fd)
  }

  public func contentsOfDirectory(_ path: String) throws -> [String] {
    guard let directory = opendir(path) else { throw posixError("opendir", path) }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
      }
      if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
  }

  public func createDirectory(_ path: String) throws {
    if isDirectory(path) { return }
    let parent = parentDirectory(of: path)
    if parent != path && parent != "." && parent != "/" && !isDirectory(parent) {
      try createDirectory(parent)
    }
    if mkdir(path, 0o755) != 0 && errno != EEXIST { throw posixError("mkdir", path) }
  }

  public func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

  public func isDirectory(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
  }

  public func rename(_ source: String, to destination: String) throws {
    guard Glibc.rename(source, destination) == 0 else {
      throw posixError("rename", "\(source) -> \(destination)")
    }
  }

  public func removeFile(_ path: String) throws {
    guard unlink(path) == 0 else { throw posixError("unlink", path) }
  }

  public func syncDirectory(_ path: String) throws {
    let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw posixError("open directory", path) }
    defer { Glibc.close(fd) }
    guard fsync(fd) == 0 else { throw posixError("fsync directory", path) }
  }
}

/// One open file descriptor.
final class POSIXFile: StorageFile, @unchecked Sendable {
  let path: String
  private let descriptor: Int32

  init(path: String, descriptor: Int32) {
    self.path = path
    self.descriptor = descriptor
  }

  func read(at offset: Int64, count: Int) throws -> [UInt8] {
    precondition(count >= 0 && offset >= 0, "negative read")
    var result = [UInt8](repeating: 0, count: count)
    var done = 0
    try result.withUnsafeMutableBytes { raw in
      while done < count {
        let got = pread(descriptor, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
        if got < 0 {
          if errno == EINTR { continue }
          throw posixError("pread", path)
        }
        if got == 0 { break }
        done += got
      }
    }
    if done < count { result.removeLast(count - done) }
    return result
  }

  func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
    var done = 0
    while done < bytes.count {
      let wrote = pwrite(
        descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
      if wrote < 0 {
        if errno == EINTR { continue }
        throw posixError("pwrite", path)
      }
      done += wrote
    }
  }

  func sync() throws {
    guard retryingOnInterrupt({ fdatasync(descriptor) }) == 0 else { throw posixError("fdatasync", path) }
  }

  func size() throws -> Int64 {
    var info = stat()
    guard fstat(descriptor, &info) == 0 else { throw posixError("fstat", path) }
    return Int64(info.st_size)
  }

  func truncate(to size: Int64) throws {
    guard retryingOnInterrupt({ ftruncate(descriptor, off_t(size)) }) == 0 else {
      throw posixError("ftruncate", path)
    }
  }

  func preallocate(size: Int64) throws {
    let result = posix_fallocate(descriptor, 0, off_t(size))
    if result == 0 { return }
    if result == EOPNOTSUPP || result == EINVAL {
      // File systems without fallocate: extend with a single zero byte at the end instead.
      if try self.size() < size { try write([0], at: size - 1) }
      return
    }
    throw FileSystemError(
      operation: "posix_fallocate", path: path, errno: result, reason: String(cString: strerror(result)))
  }

  func close() { _ = Glibc.close(descriptor) }
}

private func retryingOnInterrupt(_ call: () -> Int32) -> Int32 {
  while true {
    let result = call()
    if result < 0 && errno == EINTR { continue }
    return result
  }
}

private func posixError(_ operation: String, _ path: String) -> FileSystemError {
  let code = errno
  return FileSystemError(
    operation: operation, path: path, errno: code, reason: String(cString: strerror(code)))
}
