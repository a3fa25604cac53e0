import Foundation
import Logging
import Testing

/// The `memwal` binary built next to this test bundle.
func memwalBinary() throws -> URL {
  if let override = ProcessInfo.processInfo.environment["MEMWAL_BINARY"] {
    return URL(fileURLWithPath: override)
  }
  let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
  var directory = bundle.deletingLastPathComponent()
  for _ in 0..<4 {
    let candidate = directory.appendingPathComponent("memwal")
    if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
    directory = directory.deletingLastPathComponent()
  }
  throw CLIError("memwal binary not found near \(bundle.path); set MEMWAL_BINARY")
}

struct CLIError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

struct CommandResult {
  var status: Int32
  var stdout: String
  var stderr: String
}

/// Runs `memwal ARGS` to completion (bounded by `timeout`) and returns its exit status and output.
func runMemwal(_ arguments: [String], timeout: TimeInterval = 120) throws -> CommandResult {
  try runProgram(try memwalBinary(), arguments, timeout: timeout)
}

/// Runs a program to completion (bounded by `timeout`), with `environment` added to this process's.
func runProgram(
  _ executable: URL, _ arguments: [String], environment: [String: String] = [:], timeout: TimeInterval = 120
) throws -> CommandResult {
  let process = Process()
  process.executableURL = executable
  process.arguments = arguments
  process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
  let out = Pipe()
  let err = Pipe()
  process.standardOutput = out
  process.standardError = err
  try process.run()
  // Read both pipes fully while the child runs, so a chatty child never blocks on a full pipe.
  let outData = LockedData()
  let errData = LockedData()
  let group = DispatchGroup()
  for (pipe, sink) in [(out, outData), (err, errData)] {
    group.enter()
    DispatchQueue.global().async {
      sink.set(pipe.fileHandleForReading.readDataToEndOfFile())
      group.leave()
    }
  }
  if group.wait(timeout: .now() + timeout) == .timedOut {
    process.terminate()
    kill(process.processIdentifier, SIGKILL)
    throw CLIError(
      "\(executable.lastPathComponent) \(arguments.joined(separator: " ")) did not finish within \(timeout) s"
    )
  }
  process.waitUntilExit()
  return CommandResult(
    status: process.terminationStatus, stdout: String(decoding: outData.get(), as: UTF8.self),
    stderr: String(decoding: errData.get(), as: UTF8.self))
}

final class LockedData: @unchecked Sendable {
  private let lock = NSLock()
  private var data = Data()
  func set(_ value: Data) { lock.withLock { data = value } }
  func append(_ value: Data) { lock.withLock { data.append(value) } }
  func get() -> Data { lock.withLock { data } }
}

/// A fresh temporary directory, removed by `remove()`.
struct ScratchDirectory {
  let url: URL
  init() throws {
    url = FileManager.default.temporaryDirectory.appendingPathComponent("memwal-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  }
  var path: String { url.path }
  func remove() { try? FileManager.default.removeItem(at: url) }
}

/// Discards log output.
let quietLogger = Logger(label: "quiet") { _ in SwiftLogNoOpLogHandler() }
