import Hummingbird
import HummingbirdTLS
import Logging
import MemWALCore
import MemWALNode
import NIOCore
import NIOSSL

/// One node serving the client API: the engine plus the HTTP listener.
public enum NodeServer {
  /// Builds the Hummingbird application for `engine` on `host:port` (port 0: any free port; the
  /// bound port is reported through `onRunning`). `tokens` nil is development mode.
  public static func makeApplication(
    engine: MemoryEngine, host: String, port: Int, limits: API.Limits = API.Limits(),
    tokens: [TokenGrant]? = nil,
    logger: Logger, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
  ) -> some ApplicationProtocol {
    let router = API(engine: engine, limits: limits, tokens: tokens).makeRouter()
    return Application(
      router: router, configuration: .init(address: .hostname(host, port: port), serverName: "memwal"),
      onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) }, logger: logger)
  }

  /// Builds the application as ``makeApplication(engine:host:port:limits:tokens:logger:onRunning:)``
  /// does, serving HTTPS with `tls` when it is given (``APITLS/makeServerConfiguration(certificateFile:keyFile:)``
  /// makes one from the configuration's files) and plain HTTP when it is nil.
  public static func makeApplication(
    engine: MemoryEngine, host: String, port: Int, limits: API.Limits = API.Limits(),
    tokens: [TokenGrant]? = nil, tls: TLSConfiguration?,
    logger: Logger, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
  ) throws -> some ApplicationProtocol {
    try makeApplication(
      node: ClusterNode(single: engine), host: host, port: port, limits: limits, tokens: tokens, tls: tls,
      logger: logger, onRunning: onRunning)
  }

  /// The application serving `node` (a cluster member or a single node), HTTPS with `tls`.
  public static func makeApplication(
    node: ClusterNode, host: String, port: Int, limits: API.Limits = API.Limits(),
    tokens: [TokenGrant]? = nil, tls: TLSConfiguration?,
    logger: Logger, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
  ) throws -> some ApplicationProtocol {
    let router = API(node: node, limits: limits, tokens: tokens).makeRouter()
    let configuration = ApplicationConfiguration(address: .hostname(host, port: port), serverName: "memwal")
    let onServerRunning: @Sendable (any Channel) async -> Void = { channel in
      await onRunning(channel.localAddress?.port ?? port)
    }
    guard let tls else {
      return Application(
        router: router, server: .http1(), configuration: configuration, onServerRunning: onServerRunning,
        logger: logger)
    }
    return Application(
      router: router, server: try .tls(.http1(), tlsConfiguration: tls), configuration: configuration,
      onServerRunning: onServerRunning, logger: logger)
  }

  /// Serves `node` (a cluster member or a single node) until SIGTERM or SIGINT, then stops
  /// accepting, lets in-flight requests finish, stops replication and closes the engine (its queued
  /// writes are flushed first). With `tls`, the API is HTTPS only.
  public static func run(
    node: ClusterNode, host: String, port: Int, limits: API.Limits = API.Limits(),
    tokens: [TokenGrant]? = nil, tls: TLSConfiguration? = nil,
    logger: Logger, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
  ) async throws {
    do {
      let application = try makeApplication(
        node: node, host: host, port: port, limits: limits, tokens: tokens, tls: tls, logger: logger,
        onRunning: onRunning)
      try await application.runService(gracefulShutdownSignals: [.sigterm, .sigint])
    } catch {
      await node.stop()
      throw error
    }
    await node.stop()
  }

  /// Serves a single node's `engine` as ``run(node:host:port:limits:tokens:tls:logger:onRunning:)`` does.
  public static func run(
    engine: MemoryEngine, host: String, port: Int, limits: API.Limits = API.Limits(),
    tokens: [TokenGrant]? = nil, tls: TLSConfiguration? = nil,
    logger: Logger, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
  ) async throws {
    try await run(
      node: ClusterNode(single: engine), host: host, port: port, limits: limits, tokens: tokens, tls: tls,
      logger: logger, onRunning: onRunning)
  }
}
