import AsyncHTTPClient
import Foundation
import Glibc
import MemWALClient
import MemWALCore
import MemWALServer
import Synchronization

/// A cluster of `memwal serve` processes and a `memwal controller` on loopback, made in a scratch
/// directory with certificates and free ports, for `memwal bench failover` and `memwal chaos` (the
/// same layout as cluster-configs/local-3, so nothing collides with a cluster already running there).
final class LocalProcessCluster: @unchecked Sendable {
  /// A directed link between processes that `memwal chaos` puts a fault proxy on: `from` dials
  /// `to`'s replication (or, from the controller, control) listener at `port`, which the proxy
  /// forwards to `targetPort`, where `to` really listens.
  struct Link: Sendable, Hashable {
    enum Kind: String, Sendable { case replication, control }
    var from: String
    var to: String
    var kind: Kind
    var port: Int
    var targetPort: Int
  }

  struct Options {
    var nodes = 3
    var quorum = 1
    /// The nodes' `checkpoint.every_bytes` (nil: the default).
    var checkpointEveryBytes: Int?
    /// Every node and the controller reach each other through a port of its own per directed link
    /// (``links``) instead of the listener itself: each configuration file names the others at their
    /// link's port, and names its own listeners at their real ports.
    var proxied = false
    /// More top-level YAML for a node's configuration (before its `cluster:` section).
    var nodeYAML: (String) -> String = { _ in "" }
    /// More keys for the `cluster.controller` mapping ("failure_timeout_ms: 1000").
    var controllerKeys: [String] = []
    var name = "bench-failover"
  }

  let directory: String
  let names: [String]
  let quorum: Int
  private(set) var apiPorts: [String: Int] = [:]
  private(set) var controllerPort = 0
  private(set) var links: [Link] = []
  private var processes: [String: Process] = [:] {
    didSet {
      let pids = processes.mapValues(\.processIdentifier)
      startedPIDs.withLock { $0 = pids }
    }
  }
  /// The process ids of ``processes``, readable from a signal handler's thread.
  private let startedPIDs = Mutex<[String: pid_t]>([:])
  private let binary: String

  convenience init(directory: String, nodes count: Int = 3, quorum: Int = 1, checkpointEveryBytes: Int? = nil)
    throws
  {
    var options = Options()
    options.nodes = count
    options.quorum = quorum
    options.checkpointEveryBytes = checkpointEveryBytes
    try self.init(directory: directory, options: options)
  }

  init(directory: String, options: Options) throws {
    self.directory = directory
    self.names = (1...options.nodes).map { "n\($0)" }
    self.quorum = options.quorum
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
    if options.proxied {
      for from in names {
        for to in names where to != from {
          links.append(
            Link(
              from: from, to: to, kind: .replication, port: try Self.freePort(), targetPort: replication[to]!)
          )
        }
      }
      for to in names {
        links.append(
          Link(
            from: "controller", to: to, kind: .control, port: try Self.freePort(), targetPort: control[to]!))
      }
    }
    /// The members as `viewer` dials them.
    func members(seenBy viewer: String) -> String {
      names.map { name in
        var replicationPort = replication[name]!
        var controlPort = control[name]!
        if options.proxied && name != viewer {
          if let link = links.first(where: { $0.from == viewer && $0.to == name && $0.kind == .replication })
          {
            replicationPort = link.port
          }
          if let link = links.first(where: { $0.from == viewer && $0.to == name && $0.kind == .control }) {
            controlPort = link.port
          }
        }
        return
          "    \(name): {api: \"http://127.0.0.1:\(apiPorts[name]!)\", replication: \"127.0.0.1:\(replicationPort)\", "
          + "control: \"127.0.0.1:\(controlPort)\"}"
      }.joined(separator: "\n")
    }
    let controllerKeys =
      (["api: \"http://127.0.0.1:\(controllerPort)\"", "state_directory: \(directory)/controller"]
      + options.controllerKeys).joined(separator: ", ")
    func cluster(_ viewer: String) -> String {
      """
      cluster:
        name: \(options.name)
        node: \(viewer)
        initial_primary: n1
        quorum: \(options.quorum)
        certificates: \(certificates)
        controller: {\(controllerKeys)}
        members:
      \(members(seenBy: viewer))

      """
    }
    for name in names {
      let text =
        "data_dir: \(directory)/\(name)\nlisten: 127.0.0.1:\(apiPorts[name]!)\ndevelopment_mode: true\n"
        + (options.checkpointEveryBytes.map { "checkpoint:\n  every_bytes: \($0)\n" } ?? "")
        + options.nodeYAML(name) + cluster(name)
      try text.write(toFile: "\(directory)/\(name).yaml", atomically: true, encoding: .utf8)
    }
    try ("development_mode: true\n" + cluster("controller"))
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

  /// Whether the process was started and has not exited.
  func isRunning(_ name: String) -> Bool { processes[name]?.isRunning == true }

  /// Processes that were started and have exited on their own since (not through ``signal(_:_:)``
  /// with SIGKILL or ``stopAll()``), with their exit status; they are forgotten, so ``start(_:)``
  /// starts them again.
  func reapExited() -> [(name: String, status: Int32)] {
    var exited: [(String, Int32)] = []
    for (name, process) in processes where !process.isRunning {
      exited.append((name, process.terminationStatus))
      processes[name] = nil
    }
    return exited.sorted { $0.0 < $1.0 }
  }

  /// SIGKILL to every process this cluster started (after SIGCONT, for paused ones), from any
  /// thread: what an interrupted `memwal chaos` does before it exits, so nothing outlives it.
  func killEverything() {
    for pid in startedPIDs.withLock({ Array($0.values) }) {
      kill(pid, SIGCONT)
      kill(pid, SIGKILL)
    }
  }

  /// The process id of a running process.
  func pid(_ name: String) -> pid_t? { processes[name].flatMap { $0.isRunning ? $0.processIdentifier : nil } }

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

/// Paces one of `writers` concurrent writers so that together they make `perSecond` operations a
/// second (0: no pause). A writer that falls behind catches up without sleeping.
struct Pacer {
  let interval: Duration
  /// When the next operation is due; the first is due at the first `wait`.
  private var next: ContinuousClock.Instant?

  init(perSecond: Int, writers: Int) {
    interval = perSecond > 0 ? .nanoseconds(Int64(1e9) * Int64(writers) / Int64(perSecond)) : .zero
  }

  mutating func wait() async {
    guard interval > .zero else { return }
    let due = (next ?? ContinuousClock.now) + interval
    next = due
    if due > ContinuousClock.now { try? await Task.sleep(until: due, clock: .continuous) }
  }
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
