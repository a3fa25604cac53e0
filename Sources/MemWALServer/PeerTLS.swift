import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import X509

/// Mutual TLS for every link between members of a cluster (node to node, controller to node), as
/// DESIGN G7 asks: TLS 1.3 only; each side presents the certificate the cluster CA issued to it
/// (`memwal certs init`) and requires and verifies the other's against that CA alone (never the
/// system's trust store); and the peer's node name, read from its certificate's DNS subject
/// alternative names, must belong to the cluster's membership. A plaintext peer, a certificate from
/// another CA, a missing client certificate or an unknown node name fails the handshake and is
/// logged with the peer's address and the reason.
///
/// A transport builds its pipelines with ``makeServerBootstrap(group:childChannelInitializer:)`` and
/// ``makeClientBootstrap(group:connectingTo:channelInitializer:)`` (or adds the handlers itself with
/// ``addServerHandlers(to:)`` and ``addClientHandlers(to:connectingTo:)``), starts talking when its
/// handlers see ``PeerTLSEvent/verified(nodeName:)``, and asks
/// ``verifiedPeerNodeName(of:)`` who is at the other end. The membership check lives in those
/// handlers: ``serverConfiguration`` and ``clientConfiguration`` used on their own check the CA and
/// the TLS version, not the node name. A peer that has not finished its handshake within
/// ``handshakeTimeout`` is dropped, so idle connections cannot pile up.
public final class PeerTLS: Sendable {
  /// This member's name (the DNS name its own certificate carries).
  public let nodeName: String
  /// The names a peer may have.
  public let membership: Set<String>
  /// The configuration every accepted link uses: TLS 1.3, this member's certificate, client
  /// certificates required.
  public let serverConfiguration: TLSConfiguration
  /// The configuration every outgoing link uses: TLS 1.3, this member's certificate, the server's
  /// certificate verified against the cluster CA and the expected node name.
  public let clientConfiguration: TLSConfiguration
  /// How long a peer may take from connecting to a verified handshake.
  public let handshakeTimeout: TimeAmount

  let authority: Certificate
  let serverContext: NIOSSLContext
  let clientContext: NIOSSLContext
  let logger: Logger

  /// Loads this member's identity from a certificates directory as `memwal certs init` lays it out
  /// (`ca.pem`, `NAME.pem`, `NAME-key.pem`).
  public convenience init(
    nodeName: String, certificatesDirectory directory: String, membership: Set<String>,
    handshakeTimeout: TimeAmount = .seconds(10), logger: Logger
  ) throws(PeerTLSError) {
    try self.init(
      nodeName: nodeName, certificateFile: directory + "/" + CertificateFiles.certificate(of: nodeName),
      keyFile: directory + "/" + CertificateFiles.key(of: nodeName),
      authorityFile: directory + "/" + CertificateFiles.authorityCertificate, membership: membership,
      handshakeTimeout: handshakeTimeout, logger: logger)
  }

  /// Loads this member's certificate and key and the cluster CA from PEM files. `nodeName` must be
  /// one of the certificate's DNS names; every name in `membership` must be a valid node name.
  public init(
    nodeName: String, certificateFile: String, keyFile: String, authorityFile: String,
    membership: Set<String>, handshakeTimeout: TimeAmount = .seconds(10), logger: Logger
  ) throws(PeerTLSError) {
    for name in membership.sorted() {
      do {
        try ClusterCertificates.checkNodeName(name)
      } catch {
        throw .invalidMembership(name: name, reason: "\(error)")
      }
    }
    let chain = try Self.loadCertificates(certificateFile)
    let authorities = try Self.loadCertificates(authorityFile)
    let privateKey: NIOSSLPrivateKey
    do {
      privateKey = try NIOSSLPrivateKey(file: keyFile, format: .pem)
    } catch {
      throw .unusableFile(path: keyFile, reason: "not a PEM private key (\(error))")
    }
    guard authorities.count == 1, let authorityCertificate = authorities.first else {
      throw .unusableFile(path: authorityFile, reason: "must hold exactly one certificate, the cluster CA")
    }
    let authority = try Self.parse(authorityCertificate, file: authorityFile)
    guard case .isCertificateAuthority = try? authority.extensions.basicConstraints else {
      throw .unusableFile(path: authorityFile, reason: "is not a CA certificate (basicConstraints)")
    }
    let leaf = try Self.parse(chain[0], file: certificateFile)
    guard PeerIdentityCheck.dnsNames(of: leaf).contains(nodeName) else {
      throw .unusableFile(
        path: certificateFile, reason: "it does not name \(nodeName) in its subject alternative names")
    }
    if let text = try? String(contentsOfFile: keyFile, encoding: .utf8),
      let key = try? Certificate.PrivateKey(pemEncoded: text), key.publicKey != leaf.publicKey
    {
      throw .unusableFile(
        path: keyFile, reason: "the key does not match the certificate in \(certificateFile)")
    }
    self.nodeName = nodeName
    self.membership = membership
    self.authority = authority
    self.handshakeTimeout = handshakeTimeout
    self.logger = logger
    serverConfiguration = Self.makeServerConfiguration(
      certificateChain: chain, privateKey: privateKey, authority: authorityCertificate)
    clientConfiguration = Self.makeClientConfiguration(
      certificateChain: chain, privateKey: privateKey, authority: authorityCertificate)
    do {
      serverContext = try NIOSSLContext(configuration: serverConfiguration)
      clientContext = try NIOSSLContext(configuration: clientConfiguration)
    } catch {
      throw .unusableFile(path: keyFile, reason: "does not fit \(certificateFile) (\(error))")
    }
  }

  /// The accepting side's configuration: TLS 1.3 only, `certificateChain` presented, a client
  /// certificate required and checked against `authority` only.
  public static func makeServerConfiguration(
    certificateChain: [NIOSSLCertificate], privateKey: NIOSSLPrivateKey, authority: NIOSSLCertificate
  ) -> TLSConfiguration {
    var configuration = TLSConfiguration.makeServerConfigurationWithMTLS(
      certificateChain: certificateChain.map { .certificate($0) }, privateKey: .privateKey(privateKey),
      trustRoots: .certificates([authority]))
    configuration.minimumTLSVersion = .tlsv13
    configuration.maximumTLSVersion = .tlsv13
    configuration.certificateVerification = .noHostnameVerification
    configuration.sendCANameList = true
    return configuration
  }

  /// The connecting side's configuration: TLS 1.3 only, `certificateChain` presented, the server's
  /// certificate checked against `authority` only and against the expected node name (given per
  /// connection as the server name).
  public static func makeClientConfiguration(
    certificateChain: [NIOSSLCertificate], privateKey: NIOSSLPrivateKey, authority: NIOSSLCertificate
  ) -> TLSConfiguration {
    var configuration = TLSConfiguration.makeClientConfiguration()
    configuration.minimumTLSVersion = .tlsv13
    configuration.maximumTLSVersion = .tlsv13
    configuration.certificateVerification = .fullVerification
    configuration.trustRoots = .certificates([authority])
    configuration.certificateChain = certificateChain.map { .certificate($0) }
    configuration.privateKey = .privateKey(privateKey)
    return configuration
  }

  // MARK: pipelines

  /// Adds the accepting side's TLS handler and the handler that checks and logs the peer, first in
  /// `channel`'s pipeline. Call it on the channel's event loop (a channel initializer runs there).
  public func addServerHandlers(to channel: any Channel) throws {
    let connection = PeerConnection()
    let check = PeerIdentityCheck(authority: authority, membership: membership, expectedName: nil)
    let tls = NIOSSLServerHandler(context: serverContext) { certificates, promise in
      promise.completeWithTask { await check.verify(certificates, recordingIn: connection) }
    }
    try channel.pipeline.syncOperations.addHandlers([
      tls,
      PeerVerificationHandler(
        connection: connection, side: "accepted", handshakeTimeout: handshakeTimeout, logger: logger),
    ])
  }

  /// Adds the connecting side's TLS handler, which sends `expectedNodeName` as the server name and
  /// accepts only a server whose certificate carries it, and the handler that checks and logs the
  /// peer. Call it on the channel's event loop.
  public func addClientHandlers(to channel: any Channel, connectingTo expectedNodeName: String) throws {
    guard membership.contains(expectedNodeName) else {
      throw PeerTLSError.unknownPeer(expectedNodeName, membership: membership.sorted())
    }
    let connection = PeerConnection()
    let check = PeerIdentityCheck(
      authority: authority, membership: membership, expectedName: expectedNodeName)
    let tls = try NIOSSLClientHandler(context: clientContext, serverHostname: expectedNodeName) {
      certificates, promise in
      promise.completeWithTask { await check.verify(certificates, recordingIn: connection) }
    }
    try channel.pipeline.syncOperations.addHandlers([
      tls,
      PeerVerificationHandler(
        connection: connection, side: "connected", handshakeTimeout: handshakeTimeout, logger: logger),
    ])
  }

  /// A server bootstrap whose accepted channels start with the peer-TLS handlers; `childChannelInitializer`
  /// adds the transport's own handlers after them.
  public func makeServerBootstrap(
    group: any EventLoopGroup,
    childChannelInitializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
  ) -> ServerBootstrap {
    ServerBootstrap(group: group)
      .serverChannelOption(.backlog, value: 256)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture { try self.addServerHandlers(to: channel) }
          .flatMap { childChannelInitializer(channel) }
      }
  }

  /// A client bootstrap whose channels start with the peer-TLS handlers and accept only the member
  /// named `expectedNodeName`, whatever address they connect to.
  public func makeClientBootstrap(
    group: any EventLoopGroup, connectingTo expectedNodeName: String,
    channelInitializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
  ) -> ClientBootstrap {
    ClientBootstrap(group: group)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try self.addClientHandlers(to: channel, connectingTo: expectedNodeName)
        }.flatMap { channelInitializer(channel) }
      }
  }

  /// The node name of the peer at the other end of `channel`, once its certificate has been
  /// verified; nil before that, or when the channel has no peer-TLS handlers.
  public static func verifiedPeerNodeName(of channel: any Channel) -> EventLoopFuture<String?> {
    channel.eventLoop.submit {
      (try? channel.pipeline.syncOperations.handler(type: PeerVerificationHandler.self))?.connection
        .verifiedNodeName
    }
  }

  // MARK: loading

  static func loadCertificates(_ path: String) throws(PeerTLSError) -> [NIOSSLCertificate] {
    let certificates: [NIOSSLCertificate]
    do {
      certificates = try NIOSSLCertificate.fromPEMFile(path)
    } catch {
      let reason =
        FileManager.default.isReadableFile(atPath: path)
        ? "not PEM certificates (\(error))" : "cannot read it"
      throw .unusableFile(path: path, reason: reason)
    }
    guard !certificates.isEmpty else { throw .unusableFile(path: path, reason: "holds no certificate") }
    return certificates
  }

  static func parse(_ certificate: NIOSSLCertificate, file: String) throws(PeerTLSError) -> Certificate {
    do {
      return try Certificate(derEncoded: try certificate.toDERBytes())
    } catch {
      throw .unusableFile(path: file, reason: "not a valid X.509 certificate (\(error))")
    }
  }
}

/// A user event the peer-TLS handlers send down the pipeline once the handshake is complete and
/// the peer's certificate and node name have been verified: the transport may start talking.
public enum PeerTLSEvent: Sendable, Equatable {
  case verified(nodeName: String)
}

/// Why peer TLS cannot be set up.
public enum PeerTLSError: Error, Equatable, Sendable, CustomStringConvertible {
  case unusableFile(path: String, reason: String)
  case invalidMembership(name: String, reason: String)
  case unknownPeer(String, membership: [String])

  public var description: String {
    switch self {
    case .unusableFile(let path, let reason):
      return "peer TLS: \(path): \(reason)"
    case .invalidMembership(let name, let reason):
      return "peer TLS: membership: \(name): \(reason)"
    case .unknownPeer(let name, let membership):
      return "peer TLS: \(name) is not a member (members: \(membership.joined(separator: ", ")))"
    }
  }
}

/// What one connection learnt during its handshake: the verified node name, or why it was refused.
/// Written by the verification callback (off the event loop), read by the channel's handlers.
final class PeerConnection: Sendable {
  private let state = Mutex<(name: String?, refusal: String?)>((nil, nil))

  var verifiedNodeName: String? { state.withLock { $0.name } }
  var refusal: String? { state.withLock { $0.refusal } }

  func record(_ outcome: Result<String, PeerRefusal>) {
    state.withLock { state in
      switch outcome {
      case .success(let name): state = (name, nil)
      case .failure(let refusal): state = (nil, refusal.reason)
      }
    }
  }
}

/// Why a peer's certificate was not accepted.
struct PeerRefusal: Error, Equatable {
  var reason: String
}

/// The check of a peer's certificate chain: issued by the cluster CA (RFC 5280 path validation with
/// swift-certificates, the CA as the only root), valid now, for the right use, and naming a member.
struct PeerIdentityCheck: Sendable {
  var authority: Certificate
  var membership: Set<String>
  /// On the connecting side, the member the client meant to reach; nil on the accepting side.
  var expectedName: String?

  func verify(_ presented: [NIOSSLCertificate], recordingIn connection: PeerConnection) async
    -> NIOSSLVerificationResult
  {
    let outcome = await verify(presented)
    connection.record(outcome)
    if case .success = outcome { return .certificateVerified }
    return .failed
  }

  func verify(_ presented: [NIOSSLCertificate]) async -> Result<String, PeerRefusal> {
    let certificates: [Certificate]
    do {
      certificates = try presented.map { try Certificate(derEncoded: try $0.toDERBytes()) }
    } catch {
      return .failure(PeerRefusal(reason: "the peer's certificate cannot be parsed (\(error))"))
    }
    guard let leaf = certificates.first else {
      return .failure(PeerRefusal(reason: "the peer presented no certificate"))
    }
    var verifier = Verifier(rootCertificates: CertificateStore([authority])) {
      RFC5280Policy()
    }
    let result = await verifier.validate(
      leaf: leaf, intermediates: CertificateStore(certificates.dropFirst()))
    guard case .validCertificate = result else {
      return .failure(
        PeerRefusal(
          reason:
            "certificate \"\(leaf.subject)\" (issuer \"\(leaf.issuer)\") is not issued by the cluster CA "
            + "or is not valid now"))
    }
    let usage: ExtendedKeyUsage.Usage = expectedName == nil ? .clientAuth : .serverAuth
    guard let usages = try? leaf.extensions.extendedKeyUsage, usages.contains(usage) else {
      return .failure(PeerRefusal(reason: "certificate \"\(leaf.subject)\" is not for \(usage)"))
    }
    let names = Self.dnsNames(of: leaf)
    if let expectedName {
      guard names.contains(expectedName) else {
        return .failure(
          PeerRefusal(
            reason: "expected node \(expectedName), the certificate names \(names.joined(separator: ", "))"))
      }
      return .success(expectedName)
    }
    let members = names.filter { membership.contains($0) }
    guard members.count == 1, let name = members.first else {
      return .failure(
        PeerRefusal(
          reason: members.isEmpty
            ? "unknown node name \(names.joined(separator: ", ")) (members: \(membership.sorted().joined(separator: ", ")))"
            : "the certificate names several members (\(members.joined(separator: ", ")))"))
    }
    return .success(name)
  }

  static func dnsNames(of certificate: Certificate) -> [String] {
    guard let names = try? certificate.extensions.subjectAlternativeNames else { return [] }
    return names.compactMap { name in
      if case .dnsName(let dns) = name { return dns }
      return nil
    }
  }
}

/// Sits right after the TLS handler: logs each peer accepted or refused (with its address and the
/// reason) and closes a refused connection; tells the handlers after it once the peer is verified.
final class PeerVerificationHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer

  let connection: PeerConnection
  private let side: String
  private let handshakeTimeout: TimeAmount
  private var handshakeDeadline: Scheduled<Void>?
  private let logger: Logger
  private var isVerified = false
  private var isRefused = false
  /// The peer's address, known once the channel is connected (kept for the log after it closes).
  private var remoteAddress = "unknown"

  init(connection: PeerConnection, side: String, handshakeTimeout: TimeAmount, logger: Logger) {
    self.connection = connection
    self.side = side
    self.handshakeTimeout = handshakeTimeout
    self.logger = logger
  }

  func handlerAdded(context: ChannelHandlerContext) {
    noteRemoteAddress(context)
    if context.channel.isActive { startHandshakeDeadline(context) }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    handshakeDeadline?.cancel()
  }

  func channelActive(context: ChannelHandlerContext) {
    noteRemoteAddress(context)
    startHandshakeDeadline(context)
    context.fireChannelActive()
  }

  private func startHandshakeDeadline(_ context: ChannelHandlerContext) {
    guard handshakeDeadline == nil else { return }
    let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
    let timeout = handshakeTimeout
    handshakeDeadline = context.eventLoop.scheduleTask(in: timeout) {
      let (handler, context) = loopBound.value
      guard !handler.isVerified else { return }
      handler.refuse(context: context, reason: "the TLS handshake did not finish within \(timeout)")
    }
  }

  private func noteRemoteAddress(_ context: ChannelHandlerContext) {
    if let address = context.channel.remoteAddress { remoteAddress = "\(address)" }
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
      guard let name = connection.verifiedNodeName else {
        refuse(context: context, reason: "the handshake finished without a verified peer certificate")
        return
      }
      isVerified = true
      handshakeDeadline?.cancel()
      logger.info(
        "peer TLS: \(side) peer \(name)",
        metadata: ["peer": "\(remoteAddress)", "node": "\(name)"])
      context.fireUserInboundEventTriggered(event)
      context.fireUserInboundEventTriggered(PeerTLSEvent.verified(nodeName: name))
      return
    }
    context.fireUserInboundEventTriggered(event)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard isVerified else { return }
    context.fireChannelRead(data)
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    guard isVerified else {
      refuse(context: context, reason: connection.refusal ?? Self.describe(error))
      return
    }
    context.fireErrorCaught(error)
  }

  func channelInactive(context: ChannelHandlerContext) {
    handshakeDeadline?.cancel()
    if !isVerified && !isRefused {
      isRefused = true
      logger.warning(
        "peer TLS: \(side) peer refused: closed before the TLS handshake finished",
        metadata: [
          "peer": "\(remoteAddress)",
          "reason": "\(connection.refusal ?? "closed before the TLS handshake finished")",
        ])
    }
    context.fireChannelInactive()
  }

  private func refuse(context: ChannelHandlerContext, reason: String) {
    if !isRefused {
      isRefused = true
      logger.warning(
        "peer TLS: \(side) peer refused: \(reason)",
        metadata: ["peer": "\(remoteAddress)", "reason": "\(reason)"])
    }
    context.close(promise: nil)
  }

  static func describe(_ error: any Error) -> String {
    let text = "\(error)"
    if text.contains("WRONG_VERSION_NUMBER") || text.contains("HTTP_REQUEST")
      || text.contains("UNKNOWN_PROTOCOL")
    {
      return "not TLS (a plaintext peer?): \(text)"
    }
    if text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") || text.contains("CERTIFICATE_REQUIRED") {
      return "no client certificate: \(text)"
    }
    return text
  }
}
