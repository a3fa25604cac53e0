import NIOCore
import NIOPosix

#if canImport(Glibc)
  import Glibc
#endif

/// One accepted client connection and its upstream connection, both on the client's event loop.
/// Every method runs on that loop; other threads reach it through `NIOLoopBound`.
///
/// Reading is explicit (`autoRead` is off on both channels): a side is read only while the
/// direction it feeds wants bytes (``FlowQueue/wantsRead``), which is how a block or a full queue
/// turns into backpressure on the sender.
final class ProxyConnection {
  enum Side {
    case client
    case upstream
  }

  enum Direction {
    /// Client to upstream.
    case forward
    /// Upstream to client.
    case backward
  }

  /// The loop-side state of one direction around its queue.
  private struct Lane {
    var queue = FlowQueue()
    var timer: Scheduled<Void>?
    var timerDeadline: NIODeadline?
    /// The last write to the destination; the destination closes once it completed.
    var lastWrite: EventLoopFuture<Void>?
    /// A `read()` was issued on the source and its read cycle has not completed yet.
    var isReadOutstanding = false
  }

  /// Set once when the registry adopts the connection, before any event.
  var id = 0
  let eventLoop: any EventLoop
  private let client: any Channel
  private var upstream: (any Channel)?
  /// The upstream channel while it connects, so that closing can abandon a connect that hangs.
  private var connectingUpstream: (any Channel)?
  private let registry: ProxyRegistry
  private var appliedFaults: LinkFaults?
  private var forward = Lane()
  private var backward = Lane()
  /// The upstream connection was asked for (the connection is no longer held).
  private var isStarted = false
  private var isConnecting = false
  /// Closing for good (reset, proxy closed, upstream refused): nothing more is forwarded.
  private var isClosing = false
  private var isClientOpen = true
  private var isUpstreamOpen = false
  private var isDone = false
  private let closed: EventLoopPromise<Void>

  init(client: any Channel, registry: ProxyRegistry) {
    self.client = client
    self.eventLoop = client.eventLoop
    self.registry = registry
    self.closed = client.eventLoop.makePromise()
  }

  // MARK: Events

  func clientBecameActive() {
    applyFaults()
  }

  /// Takes up the proxy's current faults if they changed since last time. Called on every event,
  /// so that a change is seen by the first read after `setFaults` returned even before the task
  /// that announces it runs.
  func applyFaults() {
    let faults = registry.faults
    guard faults != appliedFaults else { return }
    appliedFaults = faults
    let now = NIODeadline.now()
    let delay = TimeAmount(faults.delay)
    forward.queue.configure(
      isBlocked: faults.blockForward, delay: delay, bytesPerSecond: faults.bytesPerSecond, now: now)
    backward.queue.configure(
      isBlocked: faults.blockBackward, delay: delay, bytesPerSecond: faults.bytesPerSecond, now: now)
    if !isStarted && !faults.isPartitioned && !isClosing && isClientOpen {
      connectUpstream()
    }
    pump(.forward)
    pump(.backward)
  }

  func received(_ bytes: ByteBuffer, from side: Side) {
    applyFaults()
    let direction = Self.direction(from: side)
    self[direction].queue.enqueue(bytes, now: .now())
    pump(direction)
  }

  func readCompleted(on side: Side) {
    self[Self.direction(from: side)].isReadOutstanding = false
    applyFaults()
    resumeReading()
  }

  func writabilityChanged(on side: Side) {
    applyFaults()
    pump(Self.direction(to: side))
  }

  func upstreamCreated(_ channel: any Channel) {
    connectingUpstream = channel
  }

  func upstreamBecameActive(_ channel: any Channel) {
    isConnecting = false
    connectingUpstream = nil
    upstream = channel
    isUpstreamOpen = true
    guard !isClosing else {
      channel.close(promise: nil)
      return
    }
    applyFaults()
    pump(.forward)
    pump(.backward)
  }

  /// The upstream connection could not be made: the target is down, so the client is closed.
  func upstreamConnectFailed() {
    isConnecting = false
    connectingUpstream = nil
    guard upstream == nil else { return }
    isClosing = true
    client.close(promise: nil)
    finishIfClosed()
  }

  func channelBecameInactive(_ side: Side) {
    switch side {
    case .client:
      isClientOpen = false
      if !isStarted { isClosing = true }
    case .upstream:
      guard isUpstreamOpen else { return }
      isUpstreamOpen = false
    }
    // The closed side's own direction ends after its bytes; the direction towards it is dropped.
    let ended = Self.direction(from: side)
    let dropped = Self.direction(to: side)
    self[ended].queue.endSource()
    self[dropped].queue.abandon()
    cancelTimer(dropped)
    pump(ended)
    finishIfClosed()
  }

  /// Closes both sides now. With `reset`, each socket closes with a zero linger time, so the peer
  /// sees a reset rather than an orderly end. Returns when both sides are closed.
  @discardableResult
  func close(reset: Bool) -> EventLoopFuture<Void> {
    isClosing = true
    forward.queue.abandon()
    backward.queue.abandon()
    cancelTimer(.forward)
    cancelTimer(.backward)
    if isClientOpen { Self.close(client, reset: reset) }
    if isUpstreamOpen, let upstream { Self.close(upstream, reset: reset) }
    // A connect in progress fails at once (and finishes the connection) instead of running to its
    // timeout, say towards a target that stopped accepting.
    connectingUpstream?.close(promise: nil)
    finishIfClosed()
    return closed.futureResult
  }

  // MARK: Forwarding

  private func connectUpstream() {
    isStarted = true
    isConnecting = true
    let bound = NIOLoopBound(self, eventLoop: eventLoop)
    ClientBootstrap(group: eventLoop)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelOption(.autoRead, value: false)
      .connectTimeout(.seconds(10))
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          bound.value.upstreamCreated(channel)
          try channel.pipeline.syncOperations.addHandler(
            ProxySideHandler(side: .upstream, connection: bound.value))
        }
      }
      .connect(host: "127.0.0.1", port: registry.targetPort)
      .assumeIsolated()
      .whenFailure { _ in self.upstreamConnectFailed() }
  }

  /// Writes out whatever the direction allows now, then arranges the next step: a timer when the
  /// next chunk is not due yet, the destination's close when the source ended.
  private func pump(_ direction: Direction) {
    guard let destination = self.destination(of: direction) else { return }
    var wroteBytes = false
    loop: while true {
      switch self[direction].queue.next(now: .now(), destinationIsWritable: destination.isWritable) {
      case .deliver(let bytes):
        registry.countDelivered(bytes.readableBytes, direction)
        self[direction].lastWrite = destination.write(bytes)
        wroteBytes = true
      case .wait(let deadline):
        schedulePump(direction, at: deadline)
        break loop
      case .finish:
        let closeDestination = { destination.close(promise: nil) }
        if let lastWrite = self[direction].lastWrite {
          lastWrite.assumeIsolated().whenComplete { _ in closeDestination() }
        } else {
          closeDestination()
        }
        break loop
      case .idle:
        break loop
      }
    }
    if wroteBytes { destination.flush() }
    resumeReading()
  }

  /// Issues a `read()` on each side whose direction wants bytes and has none asked for yet.
  private func resumeReading() {
    guard !isClosing, let upstream, isUpstreamOpen, isClientOpen else { return }
    if forward.queue.wantsRead && !forward.isReadOutstanding {
      forward.isReadOutstanding = true
      client.read()
    }
    if backward.queue.wantsRead && !backward.isReadOutstanding {
      backward.isReadOutstanding = true
      upstream.read()
    }
  }

  private func schedulePump(_ direction: Direction, at deadline: NIODeadline) {
    // An earlier timer can stay: when it fires, the pump asks again and schedules the later one.
    if let scheduled = self[direction].timerDeadline, scheduled <= deadline { return }
    self[direction].timer?.cancel()
    self[direction].timerDeadline = deadline
    self[direction].timer = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
      self[direction].timer = nil
      self[direction].timerDeadline = nil
      self.applyFaults()
      self.pump(direction)
    }
  }

  private func cancelTimer(_ direction: Direction) {
    self[direction].timer?.cancel()
    self[direction].timer = nil
    self[direction].timerDeadline = nil
  }

  private func finishIfClosed() {
    guard !isDone, !isClientOpen, !isUpstreamOpen, !isConnecting else { return }
    isDone = true
    cancelTimer(.forward)
    cancelTimer(.backward)
    registry.remove(id)
    closed.succeed()
  }

  // MARK: Helpers

  private subscript(direction: Direction) -> Lane {
    get {
      switch direction {
      case .forward: forward
      case .backward: backward
      }
    }
    set {
      switch direction {
      case .forward: forward = newValue
      case .backward: backward = newValue
      }
    }
  }

  private func destination(of direction: Direction) -> (any Channel)? {
    switch direction {
    case .forward: isUpstreamOpen ? upstream : nil
    case .backward: isClientOpen ? client : nil
    }
  }

  private static func direction(from side: Side) -> Direction {
    side == .client ? .forward : .backward
  }

  private static func direction(to side: Side) -> Direction {
    side == .client ? .backward : .forward
  }

  private static func close(_ channel: any Channel, reset: Bool) {
    guard reset, let socket = channel as? any SocketOptionProvider else {
      channel.close(promise: nil)
      return
    }
    socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).assumeIsolated().whenComplete { _ in
      channel.close(promise: nil)
    }
  }
}

/// The handler at the end of each side's pipeline: hands that side's events to its connection.
final class ProxySideHandler: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer

  private let side: ProxyConnection.Side
  private let connection: ProxyConnection

  init(side: ProxyConnection.Side, connection: ProxyConnection) {
    self.side = side
    self.connection = connection
  }

  func channelActive(context: ChannelHandlerContext) {
    switch side {
    case .client: connection.clientBecameActive()
    case .upstream: connection.upstreamBecameActive(context.channel)
    }
    context.fireChannelActive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    connection.received(unwrapInboundIn(data), from: side)
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    connection.readCompleted(on: side)
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    connection.writabilityChanged(on: side)
    context.fireChannelWritabilityChanged()
  }

  func channelInactive(context: ChannelHandlerContext) {
    connection.channelBecameInactive(side)
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    // A reset or any other socket error ends this side like a close does.
    context.close(promise: nil)
  }
}
