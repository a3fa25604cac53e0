import ArgumentParser
import Crypto
import Foundation
import Logging
import MemWALCore
import MemWALLog
import MemWALNode
import MemWALServer
import NIOSSL

/// `memwal serve`: one node. With no arguments, the embedded default: data in `./memwal-data`,
/// the API on `127.0.0.1:7600`, development mode (no tokens; says so loudly).
struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "serve", abstract: "Run one MemWAL node with its HTTP/JSON API.",
    discussion: "Every configuration key and its default: docs/configuration.md.")

  @Option(help: "YAML configuration file (without one: the embedded default).")
  var config: String?

  @Option(name: .customLong("data-dir"), help: "Data directory (overrides the configuration's data_dir).")
  var dataDirectory: String?

  @Option(help: "Address to listen on (overrides the configuration's listen host).")
  var host: String?

  @Option(help: "Port to listen on; 0 picks a free port, printed at start (overrides the configuration).")
  var port: Int?

  func validate() throws {
    if let port, !(0...65_535).contains(port) { throw ValidationError("--port must be within 0...65535") }
  }

  func run() async throws {
    var logger = Logger(label: "memwal")
    logger.logLevel = .info
    var node: NodeConfiguration
    if let config {
      node = try loadConfiguration(config)
    } else {
      node = .embeddedDefault
    }
    if let dataDirectory { node.dataDirectory = dataDirectory }
    if let host { node.host = host }
    if let port { node.port = port }
    do {
      try node.validate()
    } catch {
      warn("error: \(error)")
      throw ExitCode(2)
    }
    // The TLS files are read before the data directory is opened, so a bad path or a key that
    // does not match its certificate stops start-up with the key's name and nothing else happens.
    let tls: TLSConfiguration?
    do {
      tls = try node.makeAPITLSConfiguration()
    } catch {
      warn("error: \(error)")
      throw ExitCode(2)
    }
    node.engine.log.failureHandler = { [logger] error in
      // Fail-stop, as PostgreSQL PANICs: after a failed write or fsync the page cache's state is
      // unknown, and a primary that stays up refusing writes would keep answering the controller's
      // heartbeats, so the cluster would never fail over. `_exit` waits for nothing.
      logger.critical(
        "memwal: the write-ahead log failed; exiting (status \(walFailureExitStatus)) so the cluster can fail over",
        metadata: ["error": "\(error)"])
      _exit(walFailureExitStatus)
    }
    let member: ClusterNode
    do {
      member = try await ClusterNode.start(configuration: node, logger: logger)
    } catch let error as PeerTLSError {
      warn("error: cluster.certificates: \(error)")
      throw ExitCode(2)
    }
    if node.developmentMode {
      warn(
        """
        *** memwal: DEVELOPMENT MODE: no authentication\(tls == nil ? ", no TLS" : ""). Anyone who can reach \(node.host):\(node.port) can read and
        *** write every namespace. Give a configuration with tokens for anything else.
        """)
    }
    if node.testing.isEnabled {
      warn(
        """
        *** memwal: TESTING SWITCHES ON (the `testing` section): \(testingSwitches(node.testing)).
        *** This node breaks MemWAL's guarantees on purpose, for fault-injection tests. Never use it in production.
        """)
    }
    let host = node.host
    let dataDirectory = node.dataDirectory
    let scheme = tls == nil ? "http" : "https"
    let role = member.host.engine.role
    let cluster = node.cluster.map { " in cluster \($0.name) as \($0.node)" } ?? ""
    try await NodeServer.run(
      node: member, host: node.host, port: node.port, limits: node.limits,
      tokens: node.developmentMode ? nil : node.tokens, tls: tls,
      logger: logger
    ) { bound in
      emit(
        "memwal: serving \(scheme)://\(host):\(bound) as \(role)\(cluster) (data: \(dataDirectory), applied LSN \(member.host.engine.store.appliedLSN))"
      )
    }
    emit("memwal: stopped cleanly")
  }
}

/// The exit status of `memwal serve` when its write-ahead log stops after an I/O failure
/// (EX_SOFTWARE of sysexits.h).
let walFailureExitStatus: Int32 = 70

/// The `testing` switches that are set, for the start-up warning.
private func testingSwitches(_ testing: TestingSettings) -> String {
  var switches: [String] = []
  if let file = testing.faultFile { switches.append("disk faults from fault_file \(file)") }
  if testing.acknowledgeQuorumBeforeFollowersFlush {
    switches.append("ack_quorum_before_flush (quorum writes acknowledged without followers)")
  }
  return switches.joined(separator: ", ")
}

/// Reads and parses a node's configuration file; an unreadable file or a bad key is reported on
/// standard error and ends the command with exit status 2.
func loadConfiguration(_ path: String) throws -> NodeConfiguration {
  try loadConfigurationFile(path) { try NodeConfiguration.parse(yaml: $0) }
}

/// Reads `path` and parses it with `parse`; an unreadable file or a parse error is reported on
/// standard error and ends the command with exit status 2.
func loadConfigurationFile<Value>(_ path: String, _ parse: (String) throws -> Value) throws -> Value {
  let text: String
  do {
    text = try String(contentsOfFile: path, encoding: .utf8)
  } catch {
    warn("error: cannot read configuration \(path): \(error.localizedDescription)")
    throw ExitCode(2)
  }
  do {
    return try parse(text)
  } catch {
    warn("error: \(path): \(error)")
    throw ExitCode(2)
  }
}

/// `memwal token create`: a new random bearer token and the configuration entry that grants it.
struct TokenCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "token", abstract: "Make API tokens.", subcommands: [TokenCreate.self])
}

struct TokenCreate: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "create",
    abstract:
      "Print a new token and the `tokens:` entry for the configuration (which stores only its SHA-256).")

  @Option(
    name: .customLong("namespace"), help: "A namespace the token covers (repeat for several; * for all).")
  var namespaces: [String]

  @Option(help: "read, write or admin.")
  var role: String

  @Option(help: "A name for the token in logs and errors.")
  var name: String = "agent"

  func validate() throws {
    guard Role(rawValue: role) != nil else { throw ValidationError("--role must be read, write or admin") }
    guard !namespaces.isEmpty else { throw ValidationError("give at least one --namespace") }
  }

  func run() throws {
    var random = SystemRandomNumberGenerator()
    let raw = (0..<32).map { _ in UInt8.random(in: 0...255, using: &random) }
    let token = "mw_" + hex(raw)
    emit("token: \(token)")
    emit("# add to the configuration's tokens: list (the token itself is not stored):")
    emit("- name: \(name)")
    emit("  sha256: \(TokenGrant.digest(of: token))")
    emit("  namespaces: [\(namespaces.map { "\"\($0)\"" }.joined(separator: ", "))]")
    emit("  role: \(role)")
  }
}
