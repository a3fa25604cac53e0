import NIOCore
import NIOPosix
import Synchronization
import Testing

/// What one end of a test connection received, and whether that connection closed.
final class Inbox: Sendable {
  private struct State {
    var bytes: [UInt8] = []
    var isClosed = false
    var errors: [String] = []
  }

  private let state = Mutex(State())

  var bytes: [UInt8] { state.withLock { $0.bytes } }
  var count: Int { state.withLock { $0.bytes.count } }
  var isClosed: Bool { state.withLock { $0.isClosed } }
  /// The socket errors seen, such as a reset.
  var errors: [String] { state.withLock { $0.errors } }

  func append(_ buffer: ByteBuffer) {
    state.withLock { $0.bytes.append(contentsOf: buffer.readableBytesView) }
  }
  func markClosed() { state.withLock { $0.isClosed = true } }
  func recordError(_ error: any Error) { state.withLock { $0.errors.append(String(describing: error)) } }
}

/// Records what a connection receives into an ``Inbox`` and, for an echo server, sends it back.
final class InboxHandler: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private let inbox: Inbox
  private let echoes: Bool

  init(inbox: Inbox, echoes: Bool) {
    self.inbox = inbox
    self.echoes = echoes
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let buffer = unwrapInboundIn(data)
    inbox.append(buffer)
    if echoes { context.writeAndFlush(wrapOutboundOut(buffer), promise: nil) }
  }

  func channelInactive(context: ChannelHandlerContext) {
    inbox.markClosed()
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    inbox.recordError(error)
    context.close(promise: nil)
  }
}

/// The server behind the proxy: records every connection's bytes, and echoes them if asked.
final class TestServer: Sendable {
  private final class Connections: Sendable {
    let accepted = Mutex<[(channel: any Channel, inbox: Inbox)]>([])
  }

  let port: Int
  private let channel: any Channel
  private let connections: Connections

  private init(port: Int, channel: any Channel, connections: Connections) {
    self.port = port
    self.channel = channel
    self.connections = connections
  }

  static func start(echoes: Bool) async throws -> TestServer {
    let connections = Connections()
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { child in
        child.eventLoop.makeCompletedFuture {
          let inbox = Inbox()
          connections.accepted.withLock { $0.append((child, inbox)) }
          try child.pipeline.syncOperations.addHandler(InboxHandler(inbox: inbox, echoes: echoes))
        }
      }
      .bind(host: "127.0.0.1", port: 0).get()
    return TestServer(port: channel.localAddress!.port!, channel: channel, connections: connections)
  }

  var connectionsAccepted: Int { connections.accepted.withLock { $0.count } }
  var connectionsOpen: Int { connections.accepted.withLock { $0.count(where: { !$0.inbox.isClosed }) } }
  /// Every byte received, connection after connection in the order they were accepted.
  var received: [UInt8] { connections.accepted.withLock { $0.flatMap(\.inbox.bytes) } }
  var receivedCount: Int { connections.accepted.withLock { $0.reduce(0) { $0 + $1.inbox.count } } }

  /// Sends `bytes` on every open connection.
  func send(_ bytes: [UInt8]) async throws {
    for channel in connections.accepted.withLock({ $0.map(\.channel) }) where channel.isActive {
      try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }
  }

  func close() async {
    try? await channel.close()
    for child in connections.accepted.withLock({ $0.map(\.channel) }) {
      try? await child.close()
    }
  }
}

/// A client connection with what it received.
final class TestClient: Sendable {
  let channel: any Channel
  let inbox: Inbox

  private init(channel: any Channel, inbox: Inbox) {
    self.channel = channel
    self.inbox = inbox
  }

  static func connect(port: Int) async throws -> TestClient {
    let inbox = Inbox()
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .connectTimeout(.seconds(5))
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(InboxHandler(inbox: inbox, echoes: false))
        }
      }
      .connect(host: "127.0.0.1", port: port).get()
    return TestClient(channel: channel, inbox: inbox)
  }

  func send(_ bytes: [UInt8]) async throws {
    try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
  }

  func send(_ text: String) async throws { try await send(Array(text.utf8)) }

  func close() async { try? await channel.close() }
}

extension TestServer {
  func send(_ text: String) async throws { try await send(Array(text.utf8)) }
}

struct TimedOut: Error, CustomStringConvertible {
  var description: String
}

/// Polls `condition` until it holds; throws when `timeout` passes first.
func waitUntil(
  _ what: String, within timeout: Duration = .seconds(5), _ condition: () -> Bool
) async throws {
  let deadline = ContinuousClock.now + timeout
  while !condition() {
    guard ContinuousClock.now < deadline else {
      throw TimedOut(description: "timed out waiting until \(what)")
    }
    try await Task.sleep(for: .milliseconds(5))
  }
}

/// Polls `condition` for `window` and records an issue if it ever holds: the one bounded negative
/// check (something must not happen while a fault is on).
func expectNever(
  _ what: String, for window: Duration = .milliseconds(300), _ condition: () -> Bool,
  sourceLocation: SourceLocation = #_sourceLocation
) async throws {
  let deadline = ContinuousClock.now + window
  while ContinuousClock.now < deadline {
    if condition() {
      Issue.record("\(what) happened", sourceLocation: sourceLocation)
      return
    }
    try await Task.sleep(for: .milliseconds(5))
  }
}
