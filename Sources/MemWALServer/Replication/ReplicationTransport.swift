import Logging
import MemWALCluster
import MemWALCore
import NIOCore
import Synchronization

/// What a replication connection tells its owner, in the order it happened on that connection.
enum ConnectionEvent: Sendable {
  /// TLS is up and the peer's certificate names `peer` (a member).
  case verified(ConnectionID, peer: String)
  case message(ConnectionID, ReplicationMessage)
  /// A frame could not be decoded: the connection is being closed.
  case malformed(ConnectionID, ReplicationDecodingError)
  case closed(ConnectionID)
}

/// The last handler of a replication channel: decodes frames (DESIGN §5 wire format, see
/// docs/replication-protocol.md) and hands every event to `sink`. Writes go straight to the channel
/// as encoded frames.
final class ReplicationConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer

  let id: ConnectionID
  let sink: @Sendable (ConnectionEvent) -> Void
  private var decoder = ReplicationFrameDecoder()
  private var isBroken = false

  init(id: ConnectionID, sink: @escaping @Sendable (ConnectionEvent) -> Void) {
    self.id = id
    self.sink = sink
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard !isBroken else { return }
    let buffer = unwrapInboundIn(data)
    buffer.withUnsafeReadableBytes { decoder.append($0) }
    do {
      while let message = try decoder.next() { sink(.message(id, message)) }
    } catch {
      isBroken = true
      sink(.malformed(id, error))
      context.close(promise: nil)
    }
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let verified = event as? PeerTLSEvent, case .verified(let name) = verified {
      sink(.verified(id, peer: name))
    }
    context.fireUserInboundEventTriggered(event)
  }

  func channelInactive(context: ChannelHandlerContext) {
    sink(.closed(id))
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }
}

extension Channel {
  /// Sends one replication message as a frame.
  func send(_ message: ReplicationMessage) {
    let bytes = message.encodedFrame()
    writeAndFlush(ByteBuffer(bytes: bytes), promise: nil)
  }
}

/// A single-consumer queue of events: everything a replicator does to its state machine happens on
/// one task, in the order the events were posted.
final class EventQueue<Event: Sendable>: Sendable {
  private let continuation: AsyncStream<Event>.Continuation
  let stream: AsyncStream<Event>

  init() {
    (stream, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .unbounded)
  }

  func post(_ event: Event) { continuation.yield(event) }
  func finish() { continuation.finish() }
}

/// Splits "HOST:PORT".
func splitHostPort(_ text: String) -> (host: String, port: Int)? {
  guard let colon = text.lastIndex(of: ":"), colon != text.startIndex,
    let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port)
  else { return nil }
  return (String(text[..<colon]), port)
}

/// Bytes a record takes on the wire, roughly (the primary batches by it).
func approximateWireBytes(_ record: WALRecord) -> Int {
  guard case .transaction(let transaction) = record.payload else { return 64 }
  return transaction.operations.reduce(64 + transaction.namespace.utf8.count) {
    $0 + 24 + $1.id.utf8.count + ($1.before?.count ?? 0) + ($1.after?.count ?? 0)
  }
}
