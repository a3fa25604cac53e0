import Foundation
import MemWALClient
import MemWALCore
import Synchronization
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Three `memwal serve` processes and a `memwal controller` on loopback (issue 6), configured
/// like cluster-configs/local-3 with free ports and the controller's defaults (heartbeat 200 ms,
/// failure timeout 1 s).
final class ManagedCluster {
  let directory: ScratchDirectory
  let names: [String]
  var apiPorts: [String: Int] = [:]
  var controllerPort = 0
  var processes: [String: ServerProcess] = [:]

  init(names: [String] = ["n1", "n2", "n3"], quorum: Int = 1, extra: String = "") throws {
    self.names = names
    directory = try ScratchDirectory()
    let certificates = directory.path + "/certs"
    let made = try runMemwal([
      "certs", "init", "--out", certificates, "--nodes", names.joined(separator: ","), "--controller",
    ])
    guard made.status == 0 else { throw CLIError("certs init failed: \(made.stderr)") }
    var replication: [String: Int] = [:]
    var control: [String: Int] = [:]
    for name in names {
      apiPorts[name] = try freePort()
      replication[name] = try freePort()
      control[name] = try freePort()
    }
    controllerPort = try freePort()
    let members = names.map { name in
      "    \(name): {api: \"http://127.0.0.1:\(apiPorts[name]!)\", replication: \"127.0.0.1:\(replication[name]!)\", "
        + "control: \"127.0.0.1:\(control[name]!)\"}"
    }.joined(separator: "\n")
    let cluster = """
      cluster:
        name: failover-test
        node: NODE
        initial_primary: n1
        quorum: \(quorum)
        certificates: \(certificates)
      \(extra)
        controller: {api: "http://127.0.0.1:\(controllerPort)", state_directory: \(directory.path)/controller}
        members:
      \(members)

      """
    for name in names {
      let text =
        "data_dir: \(directory.path)/\(name)\nlisten: 127.0.0.1:\(apiPorts[name]!)\ndevelopment_mode: true\n"
        + cluster.replacingOccurrences(of: "NODE", with: name)
      try text.write(toFile: configPath(name), atomically: true, encoding: .utf8)
    }
    try ("development_mode: true\n" + cluster.replacingOccurrences(of: "NODE", with: "controller"))
      .write(toFile: configPath("controller"), atomically: true, encoding: .utf8)
  }

  func configPath(_ name: String) -> String { directory.path + "/\(name).yaml" }
  func apiURL(_ name: String) -> String { "http://127.0.0.1:\(apiPorts[name]!)" }

  func start(_ name: String) throws {
    let command = name == "controller" ? "controller" : "serve"
    processes[name] = try ServerProcess(arguments: [command, "--config", configPath(name)])
  }

  func startAll() throws {
    for name in names { try start(name) }
    try start("controller")
  }

  func kill(_ name: String, _ signal: Int32 = SIGKILL) {
    processes.removeValue(forKey: name)?.kill(signal)
  }

  /// SIGSTOP or SIGCONT, without waiting for an exit.
  func pause(_ name: String, _ signal: Int32) {
    if let process = processes[name] { Glibc.kill(process.process.processIdentifier, signal) }
  }

  func json(port: Int, _ path: String) throws -> [String: JSONValue] {
    let (code, body) = try http("GET", port: port, path)
    guard code == 200, case .object(let fields) = try JSONParser.parse(Array(body.utf8)) else {
      throw CLIError("GET \(path) on \(port): \(code) \(body)")
    }
    return fields
  }

  func status(_ name: String) throws -> [String: JSONValue] { try json(port: apiPorts[name]!, "/v1/status") }

  /// The controller's primary and epoch.
  func controllerView() throws -> (primary: String?, epoch: Int) {
    let fields = try json(port: controllerPort, "/v1/cluster")
    var primary: String?
    if case .object(let entry)? = fields["primary"], case .string(let name)? = entry["name"] {
      primary = name
    }
    guard case .number(let epoch)? = fields["epoch"] else { throw CLIError("no epoch in \(fields)") }
    return (primary, Int(epoch))
  }

  func number(_ fields: [String: JSONValue], _ key: String) -> Int {
    if case .number(let value)? = fields[key] { return Int(value) }
    return -1
  }

  /// Whether `name` is primary with `followers` (default: all the others) streaming.
  func isServing(_ name: String, followers: Int? = nil) throws -> Bool {
    let followers = followers ?? names.count - 1
    let fields = try status(name)
    guard fields["role"] == .string("primary"), case .object(let replication)? = fields["replication"],
      case .array(let list)? = replication["followers"]
    else { return false }
    return list.filter {
      if case .object(let f) = $0 { return f["state"] == .string("streaming") }
      return false
    }.count >= followers
  }

  /// Waits for the controller's primary to serve with both followers streaming; returns it.
  func servingPrimary(seconds: Double = 60, followers: Int? = nil) async throws -> String {
    var found: String?
    try await eventually("a primary with its followers streaming", seconds: seconds) {
      guard let primary = try controllerView().primary, try isServing(primary, followers: followers) else {
        return false
      }
      found = primary
      return true
    }
    return found!
  }

  func digest(_ name: String, at lsn: Int) throws -> String {
    let fields = try json(port: apiPorts[name]!, "/v1/digest?as_of_lsn=\(lsn)")
    guard case .string(let digest)? = fields["digest"] else { throw CLIError("no digest: \(fields)") }
    return digest
  }

  /// Every node applied everything the primary holds, and all report the same digest there.
  func converge(primary: String) async throws {
    let last = number(try status(primary), "durable_lsn")
    try await eventually("every node applied LSN \(last)") {
      try names.allSatisfy { number(try status($0), "applied_lsn") >= last }
    }
    let digests = try names.map { try digest($0, at: last) }
    #expect(Set(digests).count == 1, "digests at LSN \(last): \(digests)")
  }

  /// Whether memory `id` is readable on `name` (204/404 → false).
  func has(_ id: String, on name: String) throws -> Bool {
    let (code, body) = try http("GET", port: apiPorts[name]!, "/v1/namespaces/agents/memories/\(id)")
    guard code == 200 || code == 404 else { throw CLIError("read \(id) on \(name): \(code) \(body)") }
    return code == 200
  }

  func eventually(_ what: String, seconds: Double = 60, _ condition: () throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
      if (try? condition()) == true { return }
      try await Task.sleep(for: .milliseconds(20))
    }
    throw CLIError("timed out waiting for \(what)")
  }

  func stopAll() {
    for name in ["controller"] + names {
      pause(name, SIGCONT)
      kill(name, SIGTERM)
    }
    directory.remove()
  }
}

/// What a workload saw: each write acknowledged, failed or indeterminate.
final class Outcomes: Sendable {
  private let state = Mutex<(acknowledged: [String], failed: [String], indeterminate: [String])>(([], [], []))
  func record(_ id: String, _ outcome: Result<WriteResult, any Error>) {
    state.withLock { state in
      switch outcome {
      case .success: state.acknowledged.append(id)
      case .failure(let error as MemWALClientError) where error.isIndeterminate:
        state.indeterminate.append(id)
      case .failure: state.failed.append(id)
      }
    }
  }
  var acknowledged: [String] { state.withLock { $0.acknowledged } }
  var failed: [String] { state.withLock { $0.failed } }
  var indeterminate: [String] { state.withLock { $0.indeterminate } }
}

@Suite(.serialized, .timeLimit(.minutes(5))) struct FailoverProcessTests {
  /// Writers at `quorum` with idempotency keys through MemWALClient, `count` writes each.
  static func load(_ client: MemWALClient, writers: Int, count: Int, prefix: String, outcomes: Outcomes) async
  {
    await withTaskGroup(of: Void.self) { group in
      for writer in 0..<writers {
        group.addTask {
          for index in 0..<count {
            let id = "\(prefix)-\(writer)-\(index)"
            do {
              let result = try await client.upsert(
                [MemoryRecord(id: id, vector: [Float(writer), Float(index), 1, 2])], in: "agents",
                durability: .quorum, idempotencyKey: id)
              outcomes.record(id, .success(result))
            } catch {
              outcomes.record(id, .failure(error))
            }
          }
        }
      }
    }
  }

  static func setUp(_ cluster: ManagedCluster) async throws -> (primary: String, client: MemWALClient) {
    try cluster.startAll()
    let primary = try await cluster.servingPrimary()
    let client = MemWALClient(endpoints: cluster.names.map(cluster.apiURL), timeout: .seconds(10))
    try await client.createNamespace("agents", dimension: 4, metric: .l2, durability: .quorum)
    return (primary, client)
  }

  /// (a) `kill -9` of the primary under load: a follower is promoted, the load goes on through
  /// the client, the old primary rejoins as a follower, the three digests agree and every
  /// acknowledged write is on every node.
  @Test func killingThePrimaryUnderLoadLosesNoAcknowledgedWrite() async throws {
    let cluster = try ManagedCluster()
    defer { cluster.stopAll() }
    let (primary, client) = try await Self.setUp(cluster)
    let before = try cluster.controllerView()
    let outcomes = Outcomes()
    async let running: Void = Self.load(client, writers: 4, count: 150, prefix: "a", outcomes: outcomes)
    try await cluster.eventually("100 writes acknowledged") { outcomes.acknowledged.count >= 100 }
    cluster.kill(primary)
    await running
    let after = try cluster.controllerView()
    #expect(after.primary != nil && after.primary != primary && after.epoch > before.epoch)
    #expect(outcomes.acknowledged.count > 100, "only \(outcomes.acknowledged.count) acknowledged")

    try cluster.start(primary)
    let newPrimary = try await cluster.servingPrimary()
    #expect(newPrimary == after.primary)
    try await cluster.eventually("\(primary) follows again") {
      try cluster.status(primary)["role"] == .string("follower")
    }
    try await cluster.converge(primary: newPrimary)
    for name in cluster.names {
      let missing = try outcomes.acknowledged.filter { !(try cluster.has($0, on: name)) }
      #expect(missing.isEmpty, "\(name) lacks acknowledged writes \(missing.prefix(10))")
    }
  }

  /// (b) SIGSTOP of the primary for longer than the failure timeout, then SIGCONT: it is fenced
  /// (no `quorum` write is acknowledged by it in the old epoch any more), it rejoins as a follower,
  /// and a `local` write it acknowledged after the new epoch began is not in the final state.
  @Test func aPausedPrimaryIsFencedAndRejoins() async throws {
    let cluster = try ManagedCluster()
    defer { cluster.stopAll() }
    let (primary, client) = try await Self.setUp(cluster)
    let before = try cluster.controllerView()
    let outcomes = Outcomes()
    await Self.load(client, writers: 2, count: 50, prefix: "b", outcomes: outcomes)
    #expect(outcomes.acknowledged.count == 100)

    cluster.pause(primary, SIGSTOP)
    try await cluster.eventually("a new primary in a new epoch", seconds: 30) {
      let view = try cluster.controllerView()
      return view.primary != nil && view.primary != primary && view.epoch > before.epoch
    }
    let newEpoch = try cluster.controllerView().epoch
    cluster.pause(primary, SIGCONT)
    // Pinned to the old primary (no rediscovery): anything it acknowledges in an epoch below the
    // new one must not survive.
    let pinned = MemWALClient(baseURL: cluster.apiURL(primary), timeout: .seconds(5))
    var staleLocal: [String] = []
    for index in 0..<20 {
      let id = "stale-\(index)"
      if let result = try? await pinned.upsert(
        [MemoryRecord(id: id, vector: [9, Float(index), 9, 9])], in: "agents", durability: .local),
        result.epoch.rawValue < newEpoch
      {
        staleLocal.append(id)
      }
      do {
        let result = try await pinned.upsert(
          [MemoryRecord(id: "q-\(index)", vector: [8, Float(index), 8, 8])], in: "agents", durability: .quorum
        )
        #expect(
          result.epoch.rawValue >= newEpoch,
          "the fenced primary acknowledged a quorum write in \(result.epoch)")
      } catch {}
    }
    let newPrimary = try await cluster.servingPrimary()
    try await cluster.eventually("\(primary) follows again") {
      try cluster.status(primary)["role"] == .string("follower")
    }
    await Self.load(client, writers: 2, count: 20, prefix: "b2", outcomes: outcomes)
    try await cluster.converge(primary: newPrimary)
    for name in cluster.names {
      for id in staleLocal { #expect(!(try cluster.has(id, on: name)), "\(id) survived on \(name)") }
      let missing = try outcomes.acknowledged.filter { !(try cluster.has($0, on: name)) }
      #expect(missing.isEmpty, "\(name) lacks acknowledged writes \(missing.prefix(10))")
    }
  }

  /// The lone survivor of a 2-node cluster (k = 1): it is promoted (N − k + 1 = 1 promise), but
  /// with no follower left a `quorum` write waits `quorum_timeout_ms` and fails with
  /// `insufficient_replicas` — never a silent downgrade — until `ctl set-quorum 0`; the change is in
  /// the WAL; the old primary rejoins and `set-quorum 1` restores k.
  @Test func theLoneSurvivorOfATwoNodeClusterRefusesQuorumWritesUntilKIsLowered() async throws {
    let cluster = try ManagedCluster(names: ["n1", "n2"], extra: "  quorum_timeout_ms: 1000\n")
    defer { cluster.stopAll() }
    let (primary, client) = try await Self.setUp(cluster)
    let survivor = cluster.names.first { $0 != primary }!
    let before = try cluster.controllerView()
    _ = try await client.upsert(
      [MemoryRecord(id: "before", vector: [1, 1, 1, 1])], in: "agents", durability: .quorum,
      idempotencyKey: "before")
    cluster.kill(primary)
    try await cluster.eventually("\(survivor) promoted", seconds: 30) {
      let view = try cluster.controllerView()
      return view.primary == survivor && view.epoch > before.epoch
    }
    try await cluster.eventually("\(survivor) takes writes") {
      try cluster.status(survivor)["role"] == .string("primary")
    }
    let port = cluster.apiPorts[survivor]!
    let (code, body) = try http(
      "POST", port: port, "/v1/namespaces/agents/memories",
      #"{"memories":[{"id":"alone","vector":[1,2,3,4]}],"durability":"quorum"}"#)
    #expect(code == 503 && body.contains("insufficient_replicas"), "\(code) \(body)")
    let (localCode, _) = try http(
      "POST", port: port, "/v1/namespaces/agents/memories",
      #"{"memories":[{"id":"alone-local","vector":[1,2,3,4]}],"durability":"local"}"#)
    #expect(localCode == 200)

    let lowered = try runMemwal(["ctl", "set-quorum", "0", "--config", cluster.configPath(survivor)])
    #expect(lowered.status == 0, "\(lowered.stdout)\(lowered.stderr)")
    try await cluster.eventually("k = 0 on \(survivor)") {
      guard case .object(let replication)? = try cluster.status(survivor)["replication"] else { return false }
      return replication["quorum"] == .number(0)
    }
    let (quorumCode, quorumBody) = try http(
      "POST", port: port, "/v1/namespaces/agents/memories",
      #"{"memories":[{"id":"k0","vector":[1,2,3,4]}],"durability":"quorum"}"#)
    #expect(quorumCode == 200, "\(quorumBody)")
    let dump = try runMemwal(["wal", "dump", cluster.directory.path + "/" + survivor])
    #expect(dump.stdout.contains("quorum-change k=0"), "\(dump.stdout.suffix(500))")

    try cluster.start(primary)
    let raised = try runMemwal(["ctl", "set-quorum", "1", "--config", cluster.configPath(survivor)])
    #expect(raised.status == 0, "\(raised.stdout)\(raised.stderr)")
    _ = try await cluster.servingPrimary()
    let result = try await client.upsert(
      [MemoryRecord(id: "after", vector: [2, 2, 2, 2])], in: "agents", durability: .quorum,
      idempotencyKey: "after")
    #expect(result.durability == .quorum)
    try await cluster.converge(primary: survivor)
  }

  /// (c) `memwal ctl switchover --to NODE` under load: the target becomes primary in a new epoch,
  /// the old primary follows, and no acknowledged write is lost.
  @Test func aSwitchoverLosesNothing() async throws {
    let cluster = try ManagedCluster()
    defer { cluster.stopAll() }
    let (primary, client) = try await Self.setUp(cluster)
    let target = cluster.names.first { $0 != primary }!
    let before = try cluster.controllerView()
    let outcomes = Outcomes()
    async let running: Void = Self.load(client, writers: 4, count: 100, prefix: "c", outcomes: outcomes)
    try await cluster.eventually("50 writes acknowledged") { outcomes.acknowledged.count >= 50 }
    let switched = try runMemwal([
      "ctl", "switchover", "--to", target, "--config", cluster.configPath(target),
    ])
    #expect(switched.status == 0, "\(switched.stdout)\(switched.stderr)")
    await running
    let after = try cluster.controllerView()
    #expect(after.primary == target && after.epoch > before.epoch)
    try await cluster.eventually("\(primary) follows \(target)") {
      try cluster.status(primary)["role"] == .string("follower")
    }
    _ = try await cluster.servingPrimary()
    try await cluster.converge(primary: target)
    #expect(outcomes.acknowledged.count + outcomes.indeterminate.count + outcomes.failed.count == 400)
    for name in cluster.names {
      let missing = try outcomes.acknowledged.filter { !(try cluster.has($0, on: name)) }
      #expect(missing.isEmpty, "\(name) lacks acknowledged writes \(missing.prefix(10))")
    }
  }
}

/// The last lines of every `*.log` in `directory`, for a failure message.
func logTails(_ directory: String, lines: Int = 15) -> String {
  let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter {
    $0.hasSuffix(".log")
  }
  return files.sorted().map { file in
    let text = (try? String(contentsOfFile: directory + "/" + file, encoding: .utf8)) ?? ""
    return "--- \(file)\n" + text.split(separator: "\n").suffix(lines).joined(separator: "\n")
  }.joined(separator: "\n")
}

/// Runs `bash SCRIPT ARGS` with its output in files, reaping it with `waitpid` (the script leaves
/// background processes behind; Foundation's `Process` waits on its pipes and its reaper, neither of
/// which is safe here). Returns the exit status and the output, or throws after `timeout`.
func runScript(_ script: String, _ arguments: [String], environment: [String: String], timeout: Double)
  async throws
  -> CommandResult
{
  let scratch = try ScratchDirectory()
  defer { scratch.remove() }
  let outPath = scratch.path + "/out"
  let errPath = scratch.path + "/err"
  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
  posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
  posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
  let argv = ["/bin/bash", script] + arguments
  let env = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { "\($0)=\($1)" }
  var cArgv = argv.map { strdup($0) } + [nil]
  var cEnv = env.map { strdup($0) } + [nil]
  defer {
    for pointer in cArgv { free(pointer) }
    for pointer in cEnv { free(pointer) }
  }
  var pid: pid_t = 0
  let spawned = posix_spawn(&pid, "/bin/bash", &actions, nil, &cArgv, &cEnv)
  guard spawned == 0 else { throw CLIError("posix_spawn failed: \(spawned)") }
  let deadline = Date().addingTimeInterval(timeout)
  var status: Int32 = 0
  while waitpid(pid, &status, WNOHANG) == 0 {
    guard Date() < deadline else {
      kill(pid, SIGKILL)
      _ = waitpid(pid, &status, 0)
      throw CLIError("\(script) \(arguments.joined(separator: " ")) did not finish within \(timeout) s")
    }
    try await Task.sleep(for: .milliseconds(20))
  }
  let exit = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
  return CommandResult(
    status: exit, stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
    stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
}

/// `scripts/cluster.sh` (the README's first command runs its `demo`): up, a quorum write, a read on
/// a follower, a kill -9 of the primary and a write on the new one, the old primary's rejoin, and
/// `down` — on configurations like cluster-configs/local-3 with free ports in a scratch directory.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ClusterScriptTests {
  @Test func theDemoFailsOverAndDownStopsEverything() async throws {
    let cluster = try ManagedCluster()
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("scripts/cluster.sh").path
    let environment = [
      "MEMWAL_CLUSTER_CONFIGS": cluster.directory.path, "MEMWAL_RUN_DIR": cluster.directory.path + "/run",
      "MEMWAL_BINARY": try memwalBinary().path,
    ]
    var failure: (any Error)?
    do {
      let demo = try await runScript(script, ["demo"], environment: environment, timeout: 240)
      #expect(
        demo.status == 0, "\(demo.stdout)\n\(demo.stderr)\n\(logTails(cluster.directory.path + "/run"))")
      let lines = demo.stdout.split(separator: "\n").map(String.init)
      let nodes = lines.filter { $0.hasPrefix("node ") }
      // `up` prints the three nodes and the controller, then the demo's final status does again.
      #expect(nodes.filter { $0.hasSuffix(" primary") }.count == 2, "\(demo.stdout)")
      #expect(lines.contains("controller http://127.0.0.1:\(cluster.controllerPort)"), "\(demo.stdout)")
      #expect(demo.stderr.contains("new primary: n"), "\(demo.stderr)")
      #expect(demo.stderr.contains("first quorum write acknowledged"), "\(demo.stderr)")
      #expect(demo.stdout.contains("\"durability\":\"quorum\""), "\(demo.stdout)")
      let finalLines = Array(nodes.suffix(3))
      #expect(finalLines.filter { $0.hasSuffix(" follower") }.count == 2, "\(demo.stdout)")
    } catch {
      failure = error
    }
    let down = try await runScript(script, ["down"], environment: environment, timeout: 120)
    #expect(down.status == 0, "\(down.stderr)")
    let status = try await runScript(script, ["status"], environment: environment, timeout: 60)
    #expect(status.stdout.split(separator: "\n").allSatisfy { $0.hasSuffix(" down") }, "\(status.stdout)")
    cluster.directory.remove()
    if let failure { throw failure }
  }
}
