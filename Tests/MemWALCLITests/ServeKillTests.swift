import Foundation
import MemWALCore
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// A TCP connection to 127.0.0.1:`port`; the caller closes it.
func connectLoopback(port: Int) throws -> Int32 {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  guard fd >= 0 else { throw CLIError("socket failed") }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_port = in_port_t(UInt16(port).bigEndian)
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  let connected = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
    }
  }
  guard connected == 0 else {
    close(fd)
    throw CLIError("connect to 127.0.0.1:\(port) failed")
  }
  return fd
}

/// A blocking HTTP/1.1 exchange over a fresh loopback connection (no client library, so the test
/// depends on nothing but the server).
func http(_ method: String, port: Int, _ path: String, _ body: String = "") throws -> (
  status: Int, body: String
) {
  let fd = try connectLoopback(port: port)
  defer { close(fd) }
  let payload = Array(body.utf8)
  let request =
    "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(payload.count)\r\nConnection: close\r\n\r\n"
  let bytes = Array(request.utf8) + payload
  var sent = 0
  while sent < bytes.count {
    let wrote = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
    guard wrote > 0 else { throw CLIError("send failed") }
    sent += wrote
  }
  var response: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 65_536)
  while true {
    let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
    if got <= 0 { break }
    response += buffer[0..<got]
  }
  let text = String(decoding: response, as: UTF8.self)
  guard let statusLine = text.split(separator: "\r\n").first,
    let code = Int(statusLine.split(separator: " ")[1])
  else {
    throw CLIError("no HTTP response")
  }
  let bodyText = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
  return (code, bodyText)
}

/// A `memwal serve` child on a free port, stopped by `kill`.
final class ServerProcess {
  let process = Process()
  let port: Int

  convenience init(dataDirectory: String) throws {
    try self.init(arguments: ["serve", "--data-dir", dataDirectory, "--port", "0"])
  }

  init(arguments: [String]) throws {
    process.executableURL = try memwalBinary()
    process.arguments = arguments
    let out = Pipe()
    process.standardOutput = out
    process.standardError = FileHandle.nullDevice
    try process.run()
    // Wait (bounded by the child's own start-up) for the line naming the bound port.
    var text = ""
    let reader = out.fileHandleForReading
    while !text.contains("\n") {
      let chunk = reader.availableData
      if chunk.isEmpty { break }
      text += String(decoding: chunk, as: UTF8.self)
    }
    guard let range = text.range(of: "http://127.0.0.1:"),
      let port = Int(text[range.upperBound...].prefix { $0.isNumber })
    else {
      process.terminate()
      throw CLIError("memwal serve did not report its port: \(text)")
    }
    self.port = port
  }

  /// Sends `signal` and waits for the child to exit; one that has not exited 30 s after a gentler
  /// signal is killed, so a stuck child cannot hang the test run.
  func kill(_ signal: Int32) {
    Glibc.kill(process.processIdentifier, signal)
    let deadline = Date().addingTimeInterval(30)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
  }

  deinit {
    if process.isRunning { kill(SIGKILL) }
  }
}

@Suite(.serialized) struct ServeKillTests {
  /// G1 through the API: 2,000 memories acknowledged at `local`, then `kill -9`; after a restart
  /// every one is there and search finds them.
  @Test func acknowledgedMemoriesSurviveKill9() throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let data = scratch.path + "/data"
    var server = try ServerProcess(dataDirectory: data)
    var (status, body) = try http(
      "POST", port: server.port, "/v1/namespaces", #"{"name":"agents","dimension":4,"metric":"l2"}"#)
    #expect(status == 201)
    var lastLSN = 0
    for batch in 0..<20 {
      let memories = (0..<100).map { index in
        let n = batch * 100 + index
        return #"{"id":"m\#(n)","vector":[\#(n),\#(n % 7),\#(n % 13),1],"metadata":{"batch":\#(batch)}}"#
      }
      (status, body) = try http(
        "POST", port: server.port, "/v1/namespaces/agents/memories",
        #"{"memories":[\#(memories.joined(separator: ","))],"durability":"local"}"#)
      #expect(status == 200 && body.contains(#""durability":"local""#), "\(body)")
      let parsed = try JSONParser.parse(Array(body.utf8))
      if case .object(let fields) = parsed, case .number(let lsn)? = fields["lsn"] { lastLSN = Int(lsn) }
    }
    server.kill(SIGKILL)
    #expect(server.process.terminationReason == .uncaughtSignal)

    server = try ServerProcess(dataDirectory: data)
    for n in stride(from: 0, to: 2_000, by: 1) {
      (status, body) = try http(
        "GET", port: server.port, "/v1/namespaces/agents/memories/m\(n)?min_lsn=\(lastLSN)")
      #expect(
        status == 200 && body.contains(#""id":"m\#(n)""#),
        "m\(n) after restart: \(status) \(body.prefix(120))")
      if status != 200 { break }
    }
    (status, body) = try http(
      "POST", port: server.port, "/v1/namespaces/agents/search", #"{"vector":[1234,2,12,1],"k":3}"#)
    #expect(status == 200 && body.contains(#""id":"m1234""#))
    server.kill(SIGTERM)
    #expect(server.process.terminationStatus == 0, "SIGTERM stops the server cleanly")
  }
}

/// Opens a GET and reads until `count` non-empty lines of the body have arrived (or `seconds` pass),
/// then closes the connection: for streaming responses.
func streamLines(
  port: Int, _ path: String, count: Int, seconds: Double = 20, onLines: (Int) throws -> Void = { _ in }
) throws -> [String] {
  let fd = try connectLoopback(port: port)
  defer { close(fd) }
  var timeout = timeval(tv_sec: 1, tv_usec: 0)
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
  let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8)
  _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
  var received: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 65_536)
  let deadline = Date().addingTimeInterval(seconds)
  while Date() < deadline {
    let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
    if got == 0 { break }
    if got > 0 { received += buffer[0..<got] }
    let text = String(decoding: received, as: UTF8.self)
    // "\r\n" is one Character in Swift: split on both.
    let lines = text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }).map(String.init).filter {
      $0.hasPrefix("{")
    }
    if lines.count >= count { return lines }
    if got > 0 { try onLines(lines.count) }
  }
  return String(decoding: received, as: UTF8.self).split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }).map(
    String.init
  )
  .filter { $0.hasPrefix("{") }
}

@Suite(.serialized) struct ChangeFeedTests {
  @Test func feedReplaysThenFollowsLive() throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let server = try ServerProcess(dataDirectory: scratch.path + "/data")
    defer { server.kill(SIGTERM) }
    _ = try http("POST", port: server.port, "/v1/namespaces", #"{"name":"n","dimension":2,"metric":"l2"}"#)
    _ = try http(
      "POST", port: server.port, "/v1/namespaces/n/memories", #"{"memories":[{"id":"a","vector":[1,2]}]}"#)
    // Once the feed has replayed both existing records, a new write must arrive on it live.
    var wrote = false
    let lines = try streamLines(port: server.port, "/v1/changes?from_lsn=1", count: 3) { seen in
      if seen == 2 && !wrote {
        wrote = true
        _ = try http(
          "POST", port: server.port, "/v1/namespaces/n/memories", #"{"memories":[{"id":"b","vector":[3,4]}]}"#
        )
      }
    }
    #expect(lines.count == 3, "\(lines)")
    let records = try lines.map { try JSONParser.parse(Array($0.utf8)) }
    #expect(records.map { $0.jsonText.contains(#""type":"transaction""#) } == [true, true, true])
    #expect(
      lines[1].contains(#""id":"a""#) && lines[1].contains(#""kind":"insert""#)
        && lines[1].contains(#""before":null"#))
    #expect(lines[2].contains(#""id":"b""#), "the live record arrived")
    let (status, _) = try http("GET", port: server.port, "/v1/changes?from_lsn=x")
    #expect(status == 400)
  }
}
