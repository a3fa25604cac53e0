import Foundation
import Logging
import MemWALServer
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing

/// Peer links (DESIGN G7): a listener built with the peer server configuration, probed with Debian's
/// `openssl s_client` (a TLS client nobody here wrote), with raw TCP bytes, and with the peer client
/// configuration. The members are n1, n2 and n3; `stranger` has a certificate from the same CA but is
/// not a member; the foreign CA issued its own `n2`.
@Suite struct PeerTLSTests {
  static let membership: Set<String> = ["n1", "n2", "n3"]

  /// Runs `body` with n1's listener, the certificates, and the listener's log.
  func withListener(
    _ body: (_ listener: GreetingListener, _ cluster: String, _ foreign: String, _ log: LogRecorder)
      async throws
      -> Void
  ) async throws {
    try await withClusterCertificates { cluster, foreign in
      let log = LogRecorder()
      let peerTLS = try PeerTLS(
        nodeName: "n1", certificatesDirectory: cluster, membership: Self.membership,
        logger: log.makeLogger("n1"))
      let listener = try await GreetingListener.start(peerTLS)
      do {
        try await body(listener, cluster, foreign, log)
      } catch {
        try await listener.stop()
        throw error
      }
      try await listener.stop()
    }
  }

  /// `openssl s_client` against the listener, as member-to-be `certificate` (nil: no certificate).
  func sClient(port: Int, cluster: String, certificate: (directory: String, name: String)?) async throws
    -> OpenSSL.Run
  {
    try await OpenSSL.sClient(
      port: port, authority: cluster + "/ca.pem", serverName: "n1", certificate: certificate)
  }

  /// openssl as `certificate` (picked from the cluster's and the foreign CA's folders) gets no
  /// greeting, its connection ends before the deadline, and n1 logs a refusal giving `reason` and
  /// the peer's address.
  func expectRefused(
    as certificate: (_ cluster: String, _ foreign: String) -> (directory: String, name: String)?,
    reason: String
  ) async throws {
    try await withListener { listener, cluster, foreign, log in
      let run = try await sClient(
        port: listener.port, cluster: cluster, certificate: certificate(cluster, foreign))
      #expect(!run.standardOutput.contains("hello"), "\(run.all)")
      #expect(!run.timedOut, "\(run.all)")
      let refusal = await log.refusal(containing: reason)
      #expect(refusal?.metadata["peer"]?.contains("127.0.0.1") == true, "\(log.all)")
    }
  }

  @Test
  func opensslWithAValidMemberCertificateIsAccepted() async throws {
    try await withListener { listener, cluster, _, log in
      let run = try await sClient(port: listener.port, cluster: cluster, certificate: (cluster, "n2"))
      #expect(run.standardOutput.contains("hello n2, this is n1"), "\(run.all)")
      #expect(run.standardOutput.contains("Verify return code: 0 (ok)"), "\(run.all)")
      #expect(run.standardOutput.contains("TLSv1.3"), "\(run.all)")
      #expect(
        log.all.contains { $0.level == .info && $0.metadata["node"] == "n2" && $0.metadata["peer"] != nil })
    }
  }

  @Test func opensslWithoutAClientCertificateIsRefused() async throws {
    try await expectRefused(as: { _, _ in nil }, reason: "no client certificate")
  }

  @Test func opensslWithACertificateFromAnotherCAIsRefused() async throws {
    try await expectRefused(as: { _, foreign in (foreign, "n2") }, reason: "not issued by the cluster CA")
  }

  @Test func opensslWithANodeNameOutsideTheMembershipIsRefused() async throws {
    try await expectRefused(as: { cluster, _ in (cluster, "stranger") }, reason: "unknown node name stranger")
  }

  @Test func plaintextBytesAreRefusedWithoutAGreeting() async throws {
    try await withListener { listener, _, _, log in
      let done = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: CollectingHandler.Outcome.self)
      let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(CollectingHandler(done: done))
          }
        }.connect(host: "127.0.0.1", port: listener.port).get()
      let deadline = channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
      try await channel.writeAndFlush(ByteBuffer(string: "HELLO n1, I am n2, in plain text\r\n\r\n"))
      let outcome = try await done.futureResult.get()
      deadline.cancel()
      #expect(!outcome.text.contains("hello"), "\(outcome.text)")
      let refusal = await log.refusal(containing: "not TLS")
      #expect(refusal?.metadata["peer"]?.contains("127.0.0.1") == true, "\(log.all)")
    }
  }

  @Test func aPeerThatNeverFinishesItsHandshakeIsDropped() async throws {
    try await withClusterCertificates { cluster, _ in
      let log = LogRecorder()
      let peerTLS = try PeerTLS(
        nodeName: "n1", certificatesDirectory: cluster, membership: Self.membership,
        handshakeTimeout: .milliseconds(200), logger: log.makeLogger("n1"))
      let listener = try await GreetingListener.start(peerTLS)
      let done = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: CollectingHandler.Outcome.self)
      let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(CollectingHandler(done: done))
          }
        }.connect(host: "127.0.0.1", port: listener.port).get()
      // Silent: no ClientHello. The listener closes the connection at its deadline.
      let deadline = channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
      let outcome = try await done.futureResult.get()
      deadline.cancel()
      try await listener.stop()
      #expect(outcome.text.isEmpty)
      let refusal = await log.refusal(containing: "did not finish within")
      #expect(refusal?.metadata["peer"]?.contains("127.0.0.1") == true, "\(log.all)")
    }
  }

  /// Connects to the listener with the peer client configuration as `me`, expecting `expected`.
  func connect(port: Int, cluster: String, as me: String, expecting expected: String, log: LogRecorder)
    async throws -> CollectingHandler.Outcome
  {
    let peerTLS = try PeerTLS(
      nodeName: me, certificatesDirectory: cluster, membership: Self.membership, logger: log.makeLogger(me))
    let done = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: CollectingHandler.Outcome.self)
    let channel = try await peerTLS.makeClientBootstrap(
      group: MultiThreadedEventLoopGroup.singleton, connectingTo: expected
    ) { channel in
      channel.eventLoop.makeCompletedFuture {
        try channel.pipeline.syncOperations.addHandler(CollectingHandler(done: done))
      }
    }.connect(host: "127.0.0.1", port: port).get()
    let deadline = channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
    let outcome = try await done.futureResult.get()
    deadline.cancel()
    return outcome
  }

  @Test func peerClientReachingTheExpectedNodeIsAccepted() async throws {
    try await withListener { listener, cluster, _, _ in
      let log = LogRecorder()
      let outcome = try await connect(
        port: listener.port, cluster: cluster, as: "n2", expecting: "n1", log: log)
      #expect(outcome.text == "hello n2, this is n1\n")
      #expect(outcome.verifiedName == "n1")
      #expect(log.all.contains { $0.level == .info && $0.metadata["node"] == "n1" })
    }
  }

  @Test func peerClientExpectingAnotherNodeRefusesTheServer() async throws {
    try await withListener { listener, cluster, _, _ in
      let log = LogRecorder()
      // n1 answers on this port, but the client means to reach n3: 127.0.0.1 is not proof enough.
      let outcome = try await connect(
        port: listener.port, cluster: cluster, as: "n2", expecting: "n3", log: log)
      #expect(outcome.text.isEmpty && outcome.verifiedName == nil)
      let refusal = await log.refusal(containing: "expected node n3")
      #expect(refusal?.metadata["peer"]?.contains("127.0.0.1") == true, "\(log.all)")
    }
  }

  @Test func verifiedPeerNodeNameOfAChannel() async throws {
    try await withClusterCertificates { cluster, _ in
      let log = LogRecorder()
      let server = try PeerTLS(
        nodeName: "n1", certificatesDirectory: cluster, membership: Self.membership,
        logger: log.makeLogger("n1"))
      let (names, continuation) = AsyncStream<String?>.makeStream()
      let listener = try await server.makeServerBootstrap(group: MultiThreadedEventLoopGroup.singleton) {
        channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(
            NameReporter { channel in
              PeerTLS.verifiedPeerNodeName(of: channel).whenComplete { result in
                continuation.yield(try? result.get())
                channel.close(promise: nil)
              }
            })
        }
      }.bind(host: "127.0.0.1", port: 0).get()
      let port = listener.localAddress?.port ?? 0
      let outcome = try await connect(port: port, cluster: cluster, as: "n3", expecting: "n1", log: log)
      var iterator = names.makeAsyncIterator()
      let name = await iterator.next()
      try await listener.close()
      #expect(name == "n3")
      #expect(outcome.verifiedName == "n1")
    }
  }

  /// What making a `PeerTLS` threw, as text.
  static func failure(_ make: () throws -> PeerTLS) -> String {
    do {
      _ = try make()
      return "no error"
    } catch {
      return "\(error)"
    }
  }

  @Test func setupErrorsNameTheFile() throws {
    let directory = try TemporaryDirectory("setup")
    defer { directory.remove() }
    let cluster = directory.path
    _ = try ClusterCertificates.initialize(directory: cluster, names: ["n1", "n2"])
    let notAMember = Self.failure {
      try PeerTLS(
        nodeName: "n9", certificatesDirectory: cluster, membership: Self.membership, logger: quietLogger)
    }
    #expect(notAMember.contains("n9.pem") && notAMember.contains("cannot read"), "\(notAMember)")
    let notACA = Self.failure {
      try PeerTLS(
        nodeName: "n1", certificateFile: cluster + "/n1.pem", keyFile: cluster + "/n1-key.pem",
        authorityFile: cluster + "/n2.pem", membership: Self.membership, logger: quietLogger)
    }
    #expect(notACA.contains("n2.pem") && notACA.contains("not a CA"), "\(notACA)")
    let wrongName = Self.failure {
      try PeerTLS(
        nodeName: "n2", certificateFile: cluster + "/n1.pem", keyFile: cluster + "/n1-key.pem",
        authorityFile: cluster + "/ca.pem", membership: Self.membership, logger: quietLogger)
    }
    #expect(wrongName.contains("n1.pem") && wrongName.contains("does not name n2"), "\(wrongName)")
    let wrongKey = Self.failure {
      try PeerTLS(
        nodeName: "n1", certificateFile: cluster + "/n1.pem", keyFile: cluster + "/n2-key.pem",
        authorityFile: cluster + "/ca.pem", membership: Self.membership, logger: quietLogger)
    }
    #expect(wrongKey.contains("n2-key.pem") && wrongKey.contains("does not match"), "\(wrongKey)")
    let badMembership = Self.failure {
      try PeerTLS(
        nodeName: "n1", certificatesDirectory: cluster, membership: ["n1", "Bad_Name"], logger: quietLogger)
    }
    #expect(badMembership.contains("Bad_Name"), "\(badMembership)")
    let server = try PeerTLS(
      nodeName: "n1", certificatesDirectory: cluster, membership: Self.membership, logger: quietLogger)
    let channel = EmbeddedChannel()
    #expect(throws: PeerTLSError.unknownPeer("stranger", membership: ["n1", "n2", "n3"])) {
      try server.addClientHandlers(to: channel, connectingTo: "stranger")
    }
    _ = try? channel.finish()
  }
}

/// Calls `onVerified` with the channel once the peer is verified.
final class NameReporter: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  let onVerified: (any Channel) -> Void

  init(onVerified: @escaping (any Channel) -> Void) { self.onVerified = onVerified }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is PeerTLSEvent { onVerified(context.channel) }
    context.fireUserInboundEventTriggered(event)
  }
}
