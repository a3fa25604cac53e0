import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import MemWALCore
import MemWALServer
import NIOCore
import NIOHTTP1

/// `memwal controller --config FILE`: the cluster's failover controller (docs/failover.md,
/// "Running the controller").
struct ControllerCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "controller",
    abstract: "Run the cluster's failover controller until SIGINT or SIGTERM.",
    discussion:
      "The configuration's cluster.node must be the controller's name (cluster.controller.name, default "
      + "controller), with that certificate in cluster.certificates (memwal certs init --controller). It "
      + "heartbeats every member's control address, replaces a lost primary, keeps its record in "
      + "cluster.controller.state_directory and serves its API on cluster.controller.api.")

  @Option(help: "The controller's YAML configuration (e.g. cluster-configs/local-3/controller.yaml).")
  var config: String

  func run() async throws {
    var logger = Logger(label: "memwal-controller")
    logger.logLevel = .info
    let cluster = try loadClusterSettings(config)
    guard let controller = cluster.controller else {
      warn("error: \(config): cluster.controller is required to run a controller")
      throw ExitCode(2)
    }
    guard cluster.isController else {
      warn(
        "error: \(config): cluster.node is \(cluster.node), not the controller's name \(controller.name) "
          + "(give the controller's configuration, or set cluster.controller.name)")
      throw ExitCode(2)
    }
    let settings: ControllerSettings
    let address: (host: String, port: Int)
    do {
      settings = try ControllerSettings(cluster: cluster)
      address = try settings.listenAddress
    } catch {
      warn("error: \(config): \(error)")
      throw ExitCode(2)
    }
    let tls: PeerTLS
    do {
      tls = try PeerTLS(
        nodeName: controller.name, certificatesDirectory: cluster.certificates,
        membership: Set(cluster.members.keys), logger: logger)
    } catch {
      warn("error: cluster.certificates: \(error)")
      throw ExitCode(2)
    }
    let service: ControllerService
    do {
      service = try await ControllerService.start(settings: settings, tls: tls, logger: logger)
    } catch {
      warn("error: \(error)")
      throw ExitCode(2)
    }
    let host = address.host
    do {
      try await ControllerAPI.run(service: service, host: host, port: address.port, logger: logger) { port in
        emit("controller listening on http://\(host):\(port)")
      }
    } catch {
      warn("error: \(error)")
      throw ExitCode(1)
    }
    emit("controller: stopped cleanly")
  }
}

/// `memwal ctl switchover --to NODE`: a planned change of primary that loses nothing.
struct CtlSwitchover: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "switchover",
    abstract: "Move the primary to NODE without losing acknowledged writes, and wait until it is done.",
    discussion:
      "The controller drains the primary, waits for NODE to catch up, then promotes it in a new epoch. "
      + "Exits 0 once NODE is primary, 1 if the controller refuses or abandons the switchover or the "
      + "timeout passes.")

  @Option(help: "The node to make primary.")
  var to: String

  @Option(help: "A configuration with cluster.controller (any member's, or the controller's).")
  var config: String

  @Option(help: "Seconds to wait for the switchover to finish.")
  var timeout: Double = 30

  func validate() throws {
    guard timeout > 0 && timeout <= 3_600 else { throw ValidationError("--timeout must be within (0, 3600]") }
  }

  func run() async throws {
    let controller = try ControllerEndpoint(config: config)
    let before = try await controller.require(.GET, "/v1/status")
    let lastSequence = Self.statusLines(before).map(\.sequence).max() ?? 0
    let started = try await controller.require(.POST, "/v1/switchover", body: .object(["to": .string(to)]))
    let epoch = ControllerEndpoint.integer(started, "epoch") ?? 0
    let from = ControllerEndpoint.string(started, "from") ?? "?"
    emit("switchover from \(from) to \(to) started (epoch \(epoch)); waiting for \(to) to catch up")
    let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1_000))
    var lastStatus = ""
    while ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(100))
      guard let (code, status) = try? await controller.call(.GET, "/v1/status"), code == 200 else { continue }
      lastStatus = ControllerEndpoint.string(status, "last_status") ?? lastStatus
      let newEpoch = ControllerEndpoint.integer(status, "epoch") ?? 0
      if ControllerEndpoint.primaryName(status) == to && newEpoch > epoch {
        emit("switchover to \(to) done: epoch \(newEpoch)")
        return
      }
      let abandoned = Self.statusLines(status).first {
        $0.sequence > lastSequence && $0.text.hasPrefix("switchover to \(to) abandoned")
      }
      if let abandoned {
        warn("error: \(abandoned.text)")
        throw ExitCode(1)
      }
    }
    warn(
      "error: the switchover to \(to) did not finish within \(timeout) s; the controller's last status: \(lastStatus)"
    )
    throw ExitCode(1)
  }

  static func statusLines(_ value: JSONValue) -> [(sequence: Int, text: String)] {
    guard case .object(let fields) = value, case .array(let lines)? = fields["status_lines"] else {
      return []
    }
    return lines.compactMap { line in
      guard let sequence = ControllerEndpoint.integer(line, "seq"),
        let text = ControllerEndpoint.string(line, "text")
      else { return nil }
      return (sequence, text)
    }
  }
}

/// `memwal ctl promote NODE --force`: promotion without a quorum of promises.
struct CtlPromote: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "promote",
    abstract: "Make NODE primary in a new epoch without a quorum of promises (may lose writes).",
    discussion:
      "For when too few nodes are left to elect a primary safely. Writes that only other nodes hold may "
      + "be lost; the controller's status line, printed here, names them.")

  @Argument(help: "The node to promote.")
  var node: String

  @Flag(help: "Required: confirms that acknowledged writes may be lost.")
  var force = false

  @Option(help: "A configuration with cluster.controller (any member's, or the controller's).")
  var config: String

  func validate() throws {
    guard force else {
      throw ValidationError(
        "a promotion without promises may lose acknowledged writes; give --force to do it anyway "
          + "(or use memwal ctl switchover for a planned change)")
    }
  }

  func run() async throws {
    let controller = try ControllerEndpoint(config: config)
    let answer = try await controller.require(
      .POST, "/v1/promote", body: .object(["node": .string(node), "force": .bool(true)]))
    emit("promoted \(node) in epoch \(ControllerEndpoint.integer(answer, "epoch").map(String.init) ?? "?")")
    if let status = ControllerEndpoint.string(answer, "status") { emit(status) }
  }
}

/// `memwal ctl set-quorum K`: change k on purpose.
struct CtlSetQuorum: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "set-quorum",
    abstract: "Set k, the followers that must flush a write before the primary acknowledges it at quorum.",
    discussion:
      "k is never lowered silently: this persists the change on the controller and tells the primary. "
      + "Until the next promotion, elections still count promises against the smallest k of the epoch.")

  @Argument(help: "The new k (0 to members − 1).")
  var k: Int

  @Option(help: "A configuration with cluster.controller (any member's, or the controller's).")
  var config: String

  func run() async throws {
    let controller = try ControllerEndpoint(config: config)
    let answer = try await controller.require(.POST, "/v1/quorum", body: .object(["k": .number(Double(k))]))
    let previous = ControllerEndpoint.integer(answer, "previous_quorum").map(String.init) ?? "?"
    let quorum = ControllerEndpoint.integer(answer, "quorum").map(String.init) ?? "?"
    let floor = ControllerEndpoint.integer(answer, "quorum_floor").map(String.init) ?? "?"
    emit("k: \(previous) -> \(quorum) (elections count against k = \(floor) until the next promotion)")
    if let status = ControllerEndpoint.string(answer, "status") { emit(status) }
  }
}

/// The controller's HTTP API as the `ctl` commands reach it: the URL from `cluster.controller.api`.
struct ControllerEndpoint {
  let baseURL: String

  init(baseURL: String) {
    self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
  }

  init(config: String) throws {
    let cluster = try loadClusterSettings(config)
    guard let controller = cluster.controller else {
      warn("error: \(config) has no cluster.controller section: this cluster has no failover controller")
      throw ExitCode(2)
    }
    self.init(baseURL: controller.api)
  }

  /// The status and JSON body of a request (null for an empty body).
  func call(_ method: HTTPMethod, _ path: String, body: JSONValue? = nil, timeout: TimeAmount = .seconds(5))
    async throws -> (Int, JSONValue)
  {
    var request = HTTPClientRequest(url: baseURL + path)
    request.method = method
    if let body {
      request.headers.add(name: "Content-Type", value: "application/json")
      request.body = .bytes(ByteBuffer(string: body.jsonText))
    }
    let response = try await HTTPClient.shared.execute(request, timeout: timeout)
    let bytes = try await response.body.collect(upTo: 4 << 20)
    let value =
      bytes.readableBytes == 0 ? JSONValue.null : try JSONParser.parse(Array(bytes.readableBytesView))
    return (Int(response.status.code), value)
  }

  /// The body of a successful answer; otherwise the controller's error (or why it could not be
  /// reached) is printed and the command exits with status 1.
  func require(_ method: HTTPMethod, _ path: String, body: JSONValue? = nil) async throws -> JSONValue {
    let status: Int
    let value: JSONValue
    do {
      (status, value) = try await call(method, path, body: body)
    } catch {
      warn("error: cannot reach the controller at \(baseURL): \(error)")
      throw ExitCode(1)
    }
    guard (200..<300).contains(status) else {
      if case .object(let top) = value, case .object(let error)? = top["error"] {
        let code = Self.string(.object(error), "code") ?? "error"
        warn(
          "error: the controller refused (\(status) \(code)): \(Self.string(.object(error), "message") ?? "")"
        )
      } else {
        warn("error: the controller answered \(status): \(value.jsonText)")
      }
      throw ExitCode(1)
    }
    return value
  }

  static func string(_ value: JSONValue, _ key: String) -> String? {
    guard case .object(let fields) = value, case .string(let text)? = fields[key] else { return nil }
    return text
  }

  static func integer(_ value: JSONValue, _ key: String) -> Int? {
    guard case .object(let fields) = value, case .number(let number)? = fields[key],
      number == number.rounded(), abs(number) < 9e15
    else { return nil }
    return Int(number)
  }

  static func primaryName(_ value: JSONValue) -> String? {
    guard case .object(let fields) = value, let primary = fields["primary"] else { return nil }
    return string(primary, "name")
  }

  /// The line `memwal ctl status` prints for the controller (and its last status line), or why it
  /// could not be reached.
  func statusLines() async -> (lines: [String], json: JSONValue) {
    do {
      let (code, value) = try await call(.GET, "/v1/cluster", timeout: .seconds(3))
      guard code == 200 else { throw ControllerAnswerError(status: code) }
      let epoch = Self.integer(value, "epoch").map(String.init) ?? "?"
      let primary = Self.primaryName(value) ?? "none"
      let phase = Self.string(value, "phase") ?? "?"
      let quorum = Self.integer(value, "quorum").map(String.init) ?? "?"
      let floor = Self.integer(value, "quorum_floor").map(String.init) ?? "?"
      var lines = [
        "controller \(baseURL) epoch \(epoch) primary \(primary) k \(quorum) (floor \(floor)) phase \(phase)"
      ]
      if let last = Self.string(value, "last_status"), !last.isEmpty {
        lines.append("  last status: \(last)")
      }
      return (lines, value)
    } catch {
      return (
        ["controller \(baseURL) unreachable: \("\(error)".prefix(120))"],
        .object(["api": .string(baseURL), "error": .string("\(error)")])
      )
    }
  }
}

struct ControllerAnswerError: Error, CustomStringConvertible {
  var status: Int
  var description: String { "HTTP status \(status)" }
}

/// Reads the cluster section of a configuration file (any member's, or the controller's); an
/// unreadable file or a bad key is reported on standard error and ends the command with status 2.
func loadClusterSettings(_ path: String) throws -> ClusterSettings {
  try loadConfigurationFile(path) { try ClusterSettings.load(yaml: $0) }
}
