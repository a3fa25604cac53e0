import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// A `memwal serve` child whose standard output and error are both kept, for tests that read its
/// log; it reports its exit through a semaphore, so waiting for it needs no polling.
final class LoggedServerProcess {
  let process = Process()
  let port: Int
  private let stdout = LockedData()
  private let stderr = LockedData()
  private let exited = DispatchSemaphore(value: 0)

  init(arguments: [String], startupSeconds: Double = 60) throws {
    process.executableURL = try memwalBinary()
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let exited = self.exited
    process.terminationHandler = { _ in exited.signal() }
    for (pipe, sink) in [(out, stdout), (err, stderr)] {
      pipe.fileHandleForReading.readabilityHandler = { handle in
        let chunk = handle.availableData
        if chunk.isEmpty {
          handle.readabilityHandler = nil
        } else {
          sink.append(chunk)
        }
      }
    }
    try process.run()
    let deadline = Date().addingTimeInterval(startupSeconds)
    var found: Int?
    while Date() < deadline {
      found = Self.reportedPort(in: String(decoding: stdout.get(), as: UTF8.self))
      if found != nil { break }
      // Waits a little for more output, and stops at once if the child exits.
      if exited.wait(timeout: .now() + .milliseconds(10)) == .success {
        exited.signal()
        break
      }
    }
    guard let found else {
      if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
      throw CLIError(
        "memwal serve did not report its port; stderr: \(String(decoding: stderr.get(), as: UTF8.self))")
    }
    port = found
  }

  /// The port in the "serving http://127.0.0.1:PORT as …" line, once the whole line is there.
  static func reportedPort(in text: String) -> Int? {
    guard let range = text.range(of: "http://127.0.0.1:") else { return nil }
    let digits = text[range.upperBound...].prefix { $0.isNumber }
    guard text[range.upperBound...].dropFirst(digits.count).first == " " else { return nil }
    return Int(digits)
  }

  var errorOutput: String { String(decoding: stderr.get(), as: UTF8.self) }

  /// Waits up to `seconds` for the child to exit; true if it did.
  func waitForExit(seconds: Double) -> Bool {
    guard exited.wait(timeout: .now() + seconds) == .success else { return false }
    exited.signal()
    process.waitUntilExit()
    return true
  }

  /// Kills the child if it still runs, and waits for it.
  func stop() {
    if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    _ = waitForExit(seconds: 30)
  }
}

/// Fail-stop on a WAL failure: when the log of a running `memwal serve` stops after an I/O error
/// (injected through `testing.fault_file`), the process exits with status 70 after a `critical`
/// line, instead of staying up refusing writes (a primary doing so would keep answering the
/// controller's heartbeats, and the cluster would never fail over).
@Suite(.serialized) struct FailStopTests {
  static let exitStatus: Int32 = 70

  static func runUntilTheNodeExits(fault: String) throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let faultFile = scratch.path + "/fault"
    try "none\n".write(toFile: faultFile, atomically: true, encoding: .utf8)
    let config = scratch.path + "/node.yaml"
    try """
    data_dir: \(scratch.path)/data
    listen: 127.0.0.1:0
    development_mode: true
    wal: {segment_bytes: 1048576}
    testing:
      fault_file: \(faultFile)
    """.write(toFile: config, atomically: true, encoding: .utf8)
    let server = try LoggedServerProcess(arguments: ["serve", "--config", config])
    defer { server.stop() }
    #expect(server.errorOutput.contains("TESTING"), "the testing switch is announced: \(server.errorOutput)")

    var (status, body) = try http(
      "POST", port: server.port, "/v1/namespaces", #"{"name":"agents","dimension":2,"metric":"l2"}"#)
    #expect(status == 201, "\(body)")
    func write(_ n: Int) throws -> (status: Int, body: String) {
      try http(
        "POST", port: server.port, "/v1/namespaces/agents/memories",
        #"{"memories":[{"id":"m\#(n)","vector":[\#(n),1]}],"durability":"local"}"#)
    }
    (status, body) = try write(0)
    #expect(status == 200 && body.contains(#""durability":"local""#), "\(body)")

    try "\(fault)\n".write(toFile: faultFile, atomically: true, encoding: .utf8)
    // The node re-reads the fault file every 50 ms: writes go on succeeding until it notices. The
    // write that meets the fault fails (an error, or the connection drops as the process exits).
    let deadline = Date().addingTimeInterval(30)
    var n = 1
    while Date() < deadline, server.process.isRunning, let answer = try? write(n), answer.status == 200 {
      n += 1
    }
    guard server.waitForExit(seconds: 30) else {
      Issue.record("the node is still running after its WAL failed (\(fault))")
      return
    }
    #expect(server.process.terminationReason == .exit)
    #expect(server.process.terminationStatus == Self.exitStatus)
    let log = server.errorOutput
    #expect(
      log.contains("critical") && log.contains("the write-ahead log failed"),
      "no critical line: \(log.suffix(2_000))")
  }

  @Test func anFsyncErrorEndsTheServeProcess() throws {
    try Self.runUntilTheNodeExits(fault: "fsync_error")
  }

  @Test func aFullDiskEndsTheServeProcess() throws {
    try Self.runUntilTheNodeExits(fault: "disk_full")
  }
}
