import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// A bare HTTP/1.1 server on a loopback port that answers `GET /v1/cluster` as the primary of epoch
/// 1 and reads every other request in full, then closes the connection without a word: a node that
/// died after the request reached it. One connection at a time, on a thread of its own (accept and
/// read block).
final class DroppingServer: Sendable {
  let port: Int
  var url: String { "http://127.0.0.1:\(port)" }
  private let listener: Int32
  /// The request line of every request dropped.
  private let dropped = Mutex<[String]>([])
  /// What the server did, with times, for failure messages.
  private let log = Mutex<[String]>([])
  private let started = ContinuousClock.now
  private let finished = DispatchSemaphore(value: 0)

  init() throws {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard listener >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
        bind(listener, address, length) == 0 && listen(listener, 16) == 0
          && getsockname(listener, address, &length) == 0
      }
    }
    guard bound else {
      close(listener)
      throw POSIXError(.init(rawValue: errno) ?? .EIO)
    }
    self.listener = listener
    self.port = Int(UInt16(bigEndian: address.sin_port))
    note("listening")
    let thread = Thread { [self] in serve() }
    thread.start()
  }

  var droppedRequests: [String] { dropped.withLock { $0 } }
  var events: [String] { log.withLock { $0 } }

  private func note(_ event: String) {
    let elapsed = ContinuousClock.now - started
    log.withLock { $0.append("\(elapsed): \(event)") }
  }

  /// Stops accepting and waits for the serving thread to end. The descriptor is closed only then:
  /// closed earlier, its number could be reused by another test's socket while this thread still
  /// calls `accept` on it.
  func stop() {
    shutdown(listener, Int32(SHUT_RDWR))
    finished.wait()
    close(listener)
  }

  private func serve() {
    defer { finished.signal() }
    while true {
      let connection = accept(listener, nil, nil)
      guard connection >= 0 else { return }
      note("accepted")
      // A connection that never sends a whole request must not hold up `stop()`.
      var limit = timeval(tv_sec: 5, tv_usec: 0)
      setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
      handle(connection)
      close(connection)
    }
  }

  private func handle(_ connection: Int32) {
    guard let (requestLine, _) = readRequest(connection) else {
      note("closed before a whole request")
      return
    }
    note(requestLine)
    if requestLine.hasPrefix("GET /v1/cluster") {
      let body =
        #"{"cluster":"fake","epoch":1,"node":"dropper","role":"primary","primary":{"name":"dropper","api":""#
        + url + #""},"quorum":1,"members":[{"name":"dropper","api":""# + url + #""}]}"#
      let response =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
        + "Connection: close\r\n\r\n" + body
      _ = Array(response.utf8).withUnsafeBytes {
        send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
      }
      return
    }
    dropped.withLock { $0.append(requestLine) }
  }

  /// Reads one request (head and `Content-Length` body): its request line and body.
  private func readRequest(_ connection: Int32) -> (String, [UInt8])? {
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    let separator = Array("\r\n\r\n".utf8)
    var headEnd: Int?
    var bodyLength = 0
    while headEnd == nil || bytes.count < headEnd! + bodyLength {
      let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
      guard count > 0 else { return nil }
      bytes += buffer[..<count]
      if headEnd == nil, let index = bytes.indices.first(where: { bytes[$0...].starts(with: separator) }) {
        headEnd = index + separator.count
        let head = String(decoding: bytes[..<index], as: UTF8.self).lowercased()
        for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
          bodyLength = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
        }
      }
    }
    let head = String(decoding: bytes[..<headEnd!], as: UTF8.self)
    let requestLine = String(head.split(separator: "\r\n", maxSplits: 1).first ?? "")
    return (requestLine, Array(bytes[headEnd!...]))
  }
}
