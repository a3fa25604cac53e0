import Foundation
import Testing

/// G1 with a real process: `memwal bench wal` is killed with SIGKILL mid-run; every LSN it printed as
/// acknowledged must be in the log afterwards, and the log must verify (after the torn-tail repair
/// a kill can call for).
@Suite(.serialized) struct KillTests {
  @Test func killedWriterLosesNoAcknowledgedAppend() throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let process = Process()
    process.executableURL = try memwalBinary()
    process.arguments = [
      "bench", "wal", "--dir", scratch.path, "--writers", "8", "--seconds", "60", "--record-bytes", "600",
      "--print-acks", "--skip-baseline", "--keep",
    ]
    let out = Pipe()
    process.standardOutput = out
    process.standardError = FileHandle.nullDevice
    try process.run()
    defer {
      if process.isRunning { kill(process.processIdentifier, SIGKILL) }
      process.waitUntilExit()
    }

    // Read acknowledgements until enough have arrived (polling with a deadline), then kill.
    var buffer = Data()
    var acknowledged = Set<Int>()
    let reader = out.fileHandleForReading
    let deadline = Date().addingTimeInterval(60)
    while acknowledged.count < 3_000 && Date() < deadline && process.isRunning {
      let chunk = reader.availableData
      if chunk.isEmpty { break }
      buffer.append(chunk)
      parseAcks(&buffer, into: &acknowledged)
    }
    #expect(acknowledged.count >= 3_000, "the child acknowledged only \(acknowledged.count) appends")
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
    #expect(process.terminationReason == .uncaughtSignal)
    // Lines already in the pipe were printed (so acknowledged) before the kill.
    buffer.append(reader.readDataToEndOfFile())
    parseAcks(&buffer, into: &acknowledged)

    let logDirectory = try FileManager.default.contentsOfDirectory(atPath: scratch.path).first {
      $0.hasPrefix("wal-8-writers-")
    }
    let log = scratch.url.appendingPathComponent(try #require(logDirectory)).path
    var verify = try runMemwal(["wal", "verify", log])
    if verify.status == 1 {
      let repair = try runMemwal(["wal", "repair", log])
      #expect(repair.status == 0, "repair: \(repair.stderr)")
      verify = try runMemwal(["wal", "verify", log])
    }
    #expect(verify.status == 0, "verify after kill: \(verify.stderr)")

    let dump = try runMemwal(["wal", "dump", log, "--json"])
    #expect(dump.status == 0)
    var logged = Set<Int>()
    for line in dump.stdout.split(separator: "\n") {
      let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
      logged.insert(object["lsn"] as! Int)
    }
    let missing = acknowledged.subtracting(logged)
    #expect(missing.isEmpty, "\(missing.count) acknowledged LSNs missing, e.g. \(missing.sorted().prefix(5))")
    #expect(logged.count >= acknowledged.count)
  }

  private func parseAcks(_ buffer: inout Data, into acknowledged: inout Set<Int>) {
    while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
      let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
      buffer.removeSubrange(buffer.startIndex...newline)
      if line.hasPrefix("ack "), let lsn = Int(line.dropFirst(4)) { acknowledged.insert(lsn) }
    }
  }
}
