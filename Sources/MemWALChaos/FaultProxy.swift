import NIOCore
import NIOPosix
import Synchronization

/// Faults on one proxied link. "Forward" is the direction from the connecting side (client) to the
/// listening side (server); "backward" the replies.
///
/// The faults model the network between two processes, not the processes: a blocked direction
/// behaves like a partition at the IP level (bytes wait in kernel buffers and the sender eventually
/// sees backpressure; nothing is refused, dropped or reset).
public struct LinkFaults: Sendable, Equatable {
  /// Client-to-server bytes are held back (not delivered, not dropped) until unblocked.
  public var blockForward: Bool = false
  /// Server-to-client bytes are held back likewise.
  public var blockBackward: Bool = false
  /// Every chunk in both directions is delivered this long after it was read; order is kept.
  public var delay: Duration = .zero
  /// A bandwidth cap per direction per connection (nil: none). Must be positive.
  public var bytesPerSecond: Int? = nil

  public init(
    blockForward: Bool = false, blockBackward: Bool = false, delay: Duration = .zero,
    bytesPerSecond: Int? = nil
  ) {
    self.blockForward = blockForward
    self.blockBackward = blockBackward
    self.delay = delay
    self.bytesPerSecond = bytesPerSecond
  }

  public static let none = LinkFaults()

  /// Whether either direction is blocked.
  public var isPartitioned: Bool { blockForward || blockBackward }
}

/// A TCP proxy on 127.0.0.1 that forwards every accepted connection to one target port and can
/// partition, delay, throttle or reset the connections it carries.
///
/// Each accepted connection gets its own upstream connection on the same event loop; everything
/// about a connection happens on that loop. Fault changes come from any thread and apply to
/// current and future connections at once.
///
/// - A direction that is blocked is not read, and nothing more is written in it: what was read
///   already (queued behind a delay or the bandwidth cap) waits, and so does the end of the stream
///   when its source closed. Unblocking delivers everything in order, then the end.
/// - A connection accepted while either direction is blocked is held: not read and not connected
///   upstream until both directions are unblocked. A held client that closes is dropped.
/// - A refused upstream connection (the target is down) closes the client connection.
/// - When one side closes, the other is closed after what was already read from the first side has
///   been delivered. What is still queued towards the side that closed is dropped.
/// - A direction with ``FlowQueue/queuedBytesLimit`` or more bytes queued stops reading its
///   source until it drains, and so does one whose destination's socket buffer is full.
public final class FaultProxy: Sendable {
  /// Counters since the proxy started.
  public struct Statistics: Sendable, Equatable {
    /// Client connections accepted.
    public var connectionsAccepted: Int = 0
    /// Connections with a client or an upstream side still open.
    public var connectionsOpen: Int = 0
    /// Bytes written to the server side.
    public var bytesForward: Int = 0
    /// Bytes written to the client side.
    public var bytesBackward: Int = 0

    public init(
      connectionsAccepted: Int = 0, connectionsOpen: Int = 0, bytesForward: Int = 0, bytesBackward: Int = 0
    ) {
      self.connectionsAccepted = connectionsAccepted
      self.connectionsOpen = connectionsOpen
      self.bytesForward = bytesForward
      self.bytesBackward = bytesBackward
    }
  }

  public let name: String
  /// The port the proxy listens on.
  public let port: Int
  /// The port every connection is forwarded to.
  public let targetPort: Int
  private let serverChannel: any Channel
  private let registry: ProxyRegistry

  private init(
    name: String, port: Int, targetPort: Int, serverChannel: any Channel, registry: ProxyRegistry
  ) {
    self.name = name
    self.port = port
    self.targetPort = targetPort
    self.serverChannel = serverChannel
    self.registry = registry
  }

  /// Listens on 127.0.0.1:`listenPort` (0: any free port) and forwards every accepted connection to
  /// 127.0.0.1:`targetPort`.
  public static func start(
    listenPort: Int, targetPort: Int, name: String, group: any EventLoopGroup
  ) async throws -> FaultProxy {
    let registry = ProxyRegistry(targetPort: targetPort)
    let bootstrap = ServerBootstrap(group: group)
      .serverChannelOption(.backlog, value: 256)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelOption(.autoRead, value: false)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture { try registry.adopt(channel) }
      }
    let serverChannel = try await bootstrap.bind(host: "127.0.0.1", port: listenPort).get()
    guard let port = serverChannel.localAddress?.port else {
      try? await serverChannel.close()
      throw FaultProxyError(message: "proxy \(name): the listening socket has no local port")
    }
    return FaultProxy(
      name: name, port: port, targetPort: targetPort, serverChannel: serverChannel, registry: registry)
  }

  /// The faults in force.
  public var faults: LinkFaults { registry.faults }

  /// Replaces the faults of every current and future connection. A byte read after this returns
  /// is subject to the new faults.
  public func setFaults(_ faults: LinkFaults) {
    precondition(faults.delay >= .zero, "proxy \(name): a negative delay \(faults.delay)")
    precondition(
      (faults.bytesPerSecond ?? 1) > 0, "proxy \(name): a bandwidth cap must be positive, not \(faults)")
    for connection in registry.setFaults(faults) {
      connection.eventLoop.execute { connection.value.applyFaults() }
    }
  }

  /// Closes every current connection on both sides with a reset (RST, not FIN), dropping what is
  /// queued. New connections are accepted as before.
  public func resetConnections() {
    for connection in registry.connections {
      connection.eventLoop.execute { connection.value.close(reset: true) }
    }
  }

  /// Stops listening and closes every connection; returns when all are closed.
  public func close() async {
    registry.markClosed()
    try? await serverChannel.close()
    let closed = registry.connections.map { connection in
      connection.eventLoop.flatSubmit { connection.value.close(reset: false) }
    }
    try? await EventLoopFuture.andAllComplete(closed, on: serverChannel.eventLoop).get()
  }

  public var statistics: Statistics { registry.statistics }
}

/// A failure of the proxy itself (not of a proxied connection).
public struct FaultProxyError: Error, CustomStringConvertible {
  public var message: String
  public var description: String { message }
}

/// What a proxy shares with its connections: the faults, the open connections and the counters.
final class ProxyRegistry: Sendable {
  private struct State {
    var faults = LinkFaults.none
    var connections: [Int: NIOLoopBound<ProxyConnection>] = [:]
    var nextID = 0
    var isClosed = false
    var statistics = FaultProxy.Statistics()
  }

  let targetPort: Int
  private let state = Mutex(State())

  init(targetPort: Int) { self.targetPort = targetPort }

  var faults: LinkFaults { state.withLock { $0.faults } }

  var connections: [NIOLoopBound<ProxyConnection>] { state.withLock { Array($0.connections.values) } }

  var statistics: FaultProxy.Statistics {
    state.withLock { state in
      var statistics = state.statistics
      statistics.connectionsOpen = state.connections.count
      return statistics
    }
  }

  /// Sets the faults and returns the connections that must hear of them.
  func setFaults(_ faults: LinkFaults) -> [NIOLoopBound<ProxyConnection>] {
    state.withLock { state in
      state.faults = faults
      return Array(state.connections.values)
    }
  }

  func markClosed() { state.withLock { $0.isClosed = true } }

  /// Takes an accepted channel on: registers its connection (under the same lock as the faults,
  /// so that it either sees a change or is among those told of it) and installs its handler. Runs
  /// on the channel's event loop.
  func adopt(_ channel: any Channel) throws {
    let connection = ProxyConnection(client: channel, registry: self)
    let bound = NIOLoopBound(connection, eventLoop: channel.eventLoop)
    let isAdopted = state.withLock { state in
      guard !state.isClosed else { return false }
      state.nextID += 1
      connection.id = state.nextID
      state.connections[state.nextID] = bound
      state.statistics.connectionsAccepted += 1
      return true
    }
    guard isAdopted else {
      channel.close(promise: nil)
      return
    }
    try channel.pipeline.syncOperations.addHandler(ProxySideHandler(side: .client, connection: connection))
  }

  func remove(_ id: Int) {
    _ = state.withLock { $0.connections.removeValue(forKey: id) }
  }

  func countDelivered(_ bytes: Int, _ direction: ProxyConnection.Direction) {
    state.withLock { state in
      switch direction {
      case .forward: state.statistics.bytesForward += bytes
      case .backward: state.statistics.bytesBackward += bytes
      }
    }
  }
}
