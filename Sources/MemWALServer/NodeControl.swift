import Logging
import MemWALCluster
import MemWALCore
import NIOCore
import NIOPosix
import Synchronization

/// The node's control port: the failover controller connects here over peer TLS (only a
/// certificate with the controller's name gets through the handshake) and sends `control`
/// requests. Heartbeats are answered at once from the node's published state; every other request
/// goes to `NodeRoles`, one at a time. Replies carry the request's id (a heartbeat's reply may
/// overtake a slow promotion's).
final class NodeControlListener: @unchecked Sendable {
  enum Event: Sendable {
    case accepted(ConnectionID, any Channel)
    case connection(ConnectionEvent)
  }

  let roles: NodeRoles
  let tls: PeerTLS
  let logger: Logger
  private let group: any EventLoopGroup
  private let events = EventQueue<Event>()
  private let nextConnection = ConnectionCounter()
  private let serverChannel = Mutex<(any Channel)?>(nil)
  private let task = Mutex<Task<Void, Never>?>(nil)

  // Owned by the event task.
  private var channels: [ConnectionID: any Channel] = [:]
  private var peers: [ConnectionID: String] = [:]

  init(roles: NodeRoles, tls: PeerTLS, group: any EventLoopGroup, logger: Logger) {
    self.roles = roles
    self.tls = tls
    self.group = group
    self.logger = logger
  }

  /// Binds the control port; returns the bound port.
  @discardableResult
  func start(host: String, port: Int) async throws -> Int {
    let events = self.events
    let nextConnection = self.nextConnection
    let bootstrap = tls.makeServerBootstrap(group: group) { channel in
      let id = nextConnection.next()
      let handler = ReplicationConnectionHandler(id: id) { events.post(.connection($0)) }
      return channel.eventLoop.makeCompletedFuture {
        try channel.pipeline.syncOperations.addHandler(handler)
        events.post(.accepted(id, channel))
      }
    }
    let channel = try await bootstrap.bind(host: host, port: port).get()
    serverChannel.withLock { $0 = channel }
    let consumer = Task { [self] in
      for await event in events.stream { handle(event) }
    }
    task.withLock { $0 = consumer }
    let bound = channel.localAddress?.port ?? port
    logger.info("control: listening for the controller", metadata: ["address": "\(host):\(bound)"])
    return bound
  }

  func stop() async {
    try? await serverChannel.withLock { $0 }?.close()
    events.finish()
    await task.withLock { $0 }?.value
    for (_, channel) in channels { try? await channel.close() }
    channels.removeAll()
  }

  private func handle(_ event: Event) {
    switch event {
    case .accepted(let id, let channel):
      channels[id] = channel
    case .connection(.verified(let id, let peer)):
      peers[id] = peer
      logger.info("control: controller connected", metadata: ["peer": "\(peer)"])
    case .connection(.message(let id, let message)):
      guard let channel = channels[id] else { return }
      guard peers[id] != nil, case .control(let requestID, let request) = message else {
        channel.send(
          .refuse(code: .protocolViolation, message: "the control port takes control requests only"))
        channel.close(promise: nil)
        return
      }
      if case .heartbeat = request {
        channel.send(.controlReply(id: requestID, .report(roles.report())))
      } else {
        logger.info("control: request", metadata: ["request": "\(request)"])
        roles.submit(request) { reply in
          channel.send(.controlReply(id: requestID, reply))
        }
      }
    case .connection(.malformed(let id, let error)):
      logger.warning(
        "control: malformed frame", metadata: ["peer": "\(peers[id] ?? "?")", "error": "\(error)"])
    case .connection(.closed(let id)):
      channels[id] = nil
      peers[id] = nil
    }
  }
}
