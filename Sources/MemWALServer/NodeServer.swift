import Hummingbird
import Logging
import MemWALCore
import MemWALNode

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

  /// Serves until SIGTERM or SIGINT, then stops accepting, lets in-flight requests finish, and
  /// closes the engine (its queued writes are flushed first).
  public static func run(
    engine: MemoryEngine, host: String, port: Int, limits: API.Limits = API.Limits(),
    tokens: [TokenGrant]? = nil,
    logger: Logger, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
  ) async throws {
    let application = makeApplication(
      engine: engine, host: host, port: port, limits: limits, tokens: tokens, logger: logger,
      onRunning: onRunning)
    do {
      try await application.runService(gracefulShutdownSignals: [.sigterm, .sigint])
    } catch {
      await engine.close()
      throw error
    }
    await engine.close()
  }
}
