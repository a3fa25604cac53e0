import Glibc
import Synchronization

/// Loopback ports for processes started by tests, benchmarks and the chaos harness, which must
/// write a port into a configuration file before the process that binds it exists.
///
/// Asking the kernel for port 0 and closing the socket is not enough: such ports come from the
/// ephemeral range, the same range every outgoing connection takes its local port from, so a
/// follower or controller connecting somewhere can occupy the port before the node meant to
/// listen on it starts (a node that then cannot bind is "down" and the cluster fails over). These
/// ports are drawn below the ephemeral range instead, tested by binding them without
/// `SO_REUSEADDR` (which also refuses a port with connections lingering in TIME_WAIT), and never
/// handed out twice by one process.
public enum LoopbackPort {
  private static let handedOut = Mutex<Set<Int>>([])

  /// The lowest port of the kernel's ephemeral range (`ip_local_port_range`), 32768 if unknown.
  public static var ephemeralLow: Int {
    var buffer = [UInt8](repeating: 0, count: 64)
    let fd = open("/proc/sys/net/ipv4/ip_local_port_range", O_RDONLY)
    guard fd >= 0 else { return 32_768 }
    defer { close(fd) }
    let count = read(fd, &buffer, buffer.count)
    guard count > 0 else { return 32_768 }
    let text = String(decoding: buffer[..<count], as: UTF8.self)
    guard let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).first,
      let low = Int(first), low > 11_000
    else { return 32_768 }
    return low
  }

  /// A port on 127.0.0.1 that nothing uses now, outside the ephemeral range when there is room.
  public static func reserve() throws(LoopbackPortError) -> Int {
    let high = ephemeralLow - 1
    let low = 10_000
    var generator = SystemRandomNumberGenerator()
    for _ in 0..<2_000 {
      let port = Int.random(in: low...high, using: &generator)
      if claim(port) { return port }
    }
    throw LoopbackPortError(message: "no free loopback port in \(low)-\(high) after 2000 tries")
  }

  private static func claim(_ port: Int) -> Bool {
    let fresh = handedOut.withLock { $0.insert(port).inserted }
    guard fresh else { return false }
    guard isFree(port) else { return false }
    return true
  }

  /// Whether a listening socket could bind 127.0.0.1:`port` now.
  public static func isFree(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let length = socklen_t(MemoryLayout<sockaddr_in>.size)
    return withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 }
    }
  }
}

public struct LoopbackPortError: Error, CustomStringConvertible {
  public var message: String
  public var description: String { message }
}
