import ArgumentParser
import Logging
import MemWALCore
import MemWALLog
import MemWALNode
import MemWALServer

/// `memwal serve`: one node. With no arguments, the embedded default: data in `./memwal-data`,
/// the API on `127.0.0.1:7600`, development mode (no tokens; says so loudly).
struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "serve", abstract: "Run one MemWAL node with its HTTP/JSON API.")

  @Option(name: .customLong("data-dir"), help: "Data directory (WAL, checkpoints).")
  var dataDirectory = "./memwal-data"

  @Option(help: "Address to listen on.")
  var host = "127.0.0.1"

  @Option(help: "Port to listen on (0: any free port, printed at start).")
  var port = 7600

  func validate() throws {
    guard (0...65_535).contains(port) else { throw ValidationError("--port must be within 0...65535") }
  }

  func run() async throws {
    var logger = Logger(label: "memwal")
    logger.logLevel = .info
    let engine = try await MemoryEngine.open(directory: dataDirectory, logger: logger)
    warn(
      """
      *** memwal: DEVELOPMENT MODE: no authentication, no TLS. Anyone who can reach \(host):\(port) can read and write
      *** every namespace. Use a configuration with tokens and TLS for anything else.
      """)
    try await NodeServer.run(engine: engine, host: host, port: port, logger: logger) { bound in
      emit(
        "memwal: serving http://\(host):\(bound) (data: \(dataDirectory), applied LSN \(engine.store.appliedLSN))"
      )
    }
    emit("memwal: stopped cleanly")
  }
}
