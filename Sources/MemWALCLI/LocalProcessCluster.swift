import AsyncHTTPClient
import Foundation
import Glibc
import MemWALClient
import MemWALCore
import MemWALServer

/// A cluster of `memwal serve` processes and a `memwal controller` on loopback, made in a scratch
/// directory with certificates and free ports, for `memwal bench failover` (the same layout as
/// cluster-configs/local-3, so nothing collides with a cluster already running there).
final class LocalProcessCluster: @unchecked Sendable {
  let directory: String
  let names: [String]
  let quorum: Int
  private(set) var apiPorts: [String: Int] = [:]
  private(set) var controllerPort = 0
  private var processes: [String: Process] = [:]
  private let binary: String

  /// - Parameter checkpointEveryBytes: the nodes' `checkpoint.every_bytes` (nil: the default).
  init(directory: String, nodes count: Int = 3, quorum: Int = 1, checkpointEveryBytes: Int? = nil) throws {
    self.directory = directory
    self.names = (1...count).map { "n\($0)" }
    self.quorum = quorum
    binary = try Self.ownExecutable()
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let certificates = directory + "/certs"
    _ = try ClusterCertificates.initialize(directory: certificates, names: names + ["controller"])
    var replication: [String: Int] = [:]
    var control: [String: Int] = [:]
    for name in names {
      apiPorts[name] = try Self.freePort()
      replication[name] = try Self.freePort()
      control[name] = try Self.freePort()
    }
    controllerPort = try Self.freePort()
    let members = names.map { name in
      "    \(name): {api: \"http://127.0.0.1:\(apiPorts[name]!)\", replication: \"127.0.0.1:\(replication[name]!)\", "
        + "control: \"127.0.0.1:\(control[name]!)\"}"
    }.joined(separator: "\n")
    let cluster = """
      cluster:
        name: bench-failover
        node: NODE
        initial_primary: n1
        quorum: \(quorum)
        certificates: \(certificates)
        controller: {api: "http://127.0.0.1:\(controllerPort)", state_directory: \(directory)/controller}
        members:
      \(members)

      """
    for name in names {
      let text =
        "data_dir: \(directory)/\(name)\nlisten: 127.0.0.1:\(apiPorts[name]!)\ndevelopment_mode: true\n"
        + (checkpointEveryBytes.map { "checkpoint:\n  every_bytes: \($0)\n" } ?? "")
        + cluster.replacingOccurrences(of: "NODE", with: name)
      try text.write(toFile: "\(directory)/\(name).yaml", atomically: true, encoding: .utf8)
    }
    try ("development_mode: true\n" + cluster.replacingOccurrences(of: "NODE", with: "controller"))
      .write(toFile: "\(directory)/controller.yaml", atomically: true, encoding: .utf8)
  }

  var controllerURL: String { "http://127.0.0.1:\(controllerPort)" }
  func apiURL(_ name: String) -> String { "http://127.0.0.1:\(apiPorts[name]!)" }
  var apiURLs: [String] { names.map(apiURL) }

  /// Starts a node (or `controller`), its output appended to NAME.log in the directory.
  func start(_ name: String) throws {
    guard processes[name]?.isRunning != true else { return }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binary)
    process.arguments = [
      name == "controller" ? "controller" : "serve", "--config", "\(directory)/\(name).yaml",
    ]
    let logPath = "\(directory)/\(name).log"
    if !FileManager.default.fileExists(atPath: logPath) {
      _ = FileManager.default.createFile(atPath: logPath, contents: nil)
    }
    let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
    log.seekToEndOfFile()
    process.standardOutput = log
    process.standardError = log
    try process.run()
    processes[name] = process
  }

  func startAll() throws {
    for name in names { try start(name) }
    try start("controller")
  }

  /// Sends `signal` (SIGKILL by default) and, unless it is SIGSTOP/SIGCONT, waits for the exit.
  func signal(_ name: String, _ signal: Int32 = SIGKILL) {
    guard let process = processes[name], process.isRunning else { return }
    kill(process.processIdentifier, signal)
    if signal != SIGSTOP && signal != SIGCONT {
      process.waitUntilExit()
      processes[name] = nil
    }
  }

  /// SIGTERM to everything (SIGKILL after 20 s), controller first.
  func stopAll() {
    for name in ["controller"] + names {
      guard let process = processes[name], process.isRunning else { continue }
      kill(process.processIdentifier, SIGCONT)
      kill(process.processIdentifier, SIGTERM)
      let deadline = Date().addingTimeInterval(20)
      while process.isRunning && Date() < deadline { usleep(20_000) }
      if process.isRunning { kill(process.processIdentifier, SIGKILL) }
      process.waitUntilExit()
    }
    processes.removeAll()
  }

  /// The controller's view: the primary's name and the epoch, when it has one.
  func controllerView() async -> (primary: String?, epoch: UInt64)? {
    guard let cluster = try? await getJSON(controllerURL + "/v1/cluster"),
      case .object(let fields) = cluster
    else { return nil }
    var primary: String?
    if case .object(let entry)? = fields["primary"], case .string(let name)? = entry["name"] {
      primary = name
    }
    guard case .number(let epoch)? = fields["epoch"] else { return nil }
    return (primary, UInt64(epoch))
  }

  /// Whether `name` answers `/v1/status` as a primary with at least k followers streaming.
  func isServing(_ name: String) async -> Bool {
    guard let status = try? await getJSON(apiURL(name) + "/v1/status"), case .object(let fields) = status,
      case .string("primary")? = fields["role"], case .object(let replication)? = fields["replication"],
      case .array(let followers)? = replication["followers"]
    else { return false }
    let streaming = followers.filter {
      if case .object(let entry) = $0, case .string("streaming")? = entry["state"] { return true }
      return false
    }
    return streaming.count >= quorum
  }

  /// The node's applied LSN from `/v1/status`, if it answers.
  func appliedLSN(_ name: String) async -> UInt64? {
    guard let status = try? await getJSON(apiURL(name) + "/v1/status"), case .object(let fields) = status,
      case .number(let applied)? = fields["applied_lsn"]
    else { return nil }
    return UInt64(applied)
  }

  static func ownExecutable() throws -> String {
    var buffer = [CChar](repeating: 0, count: 4_096)
    let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard count > 0 else { throw CLIError("cannot find this executable (/proc/self/exe)") }
    return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  static func freePort() throws -> Int { try LoopbackPort.reserve() }
}

/// A tool's error with a message for the operator.
struct CLIError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// GET `url` and parse the JSON body (3 s timeout); throws on a non-2xx answer.
func getJSON(_ url: String) async throws -> JSONValue {
  let request = HTTPClientRequest(url: url)
  let response = try await HTTPClient.shared.execute(request, timeout: .seconds(3))
  let body = try await response.body.collect(upTo: 16 << 20)
  guard (200..<300).contains(response.status.code) else {
    throw CLIError("GET \(url): HTTP \(response.status.code)")
  }
  return try JSONParser.parse(Array(buffer: body))
}
