import Foundation
import MemWALClient
import MemWALCore
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// A free loopback port for a process this test starts (see `LoopbackPort`).
func freePort() throws -> Int { try LoopbackPort.reserve() }

/// Three `memwal serve` processes of one cluster on loopback, with certificates from
/// `memwal certs init` and configurations written like cluster-configs/local-3.
final class LocalCluster {
  let directory: ScratchDirectory
  let names = ["n1", "n2", "n3"]
  var apiPorts: [String: Int] = [:]
  var replicationPorts: [String: Int] = [:]
  var processes: [String: ServerProcess] = [:]

  init(quorum: Int = 1, extra: String = "") throws {
    directory = try ScratchDirectory()
    let certificates = directory.path + "/certs"
    let made = try runMemwal([
      "certs", "init", "--out", certificates, "--nodes", names.joined(separator: ","),
    ])
    guard made.status == 0 else { throw CLIError("certs init failed: \(made.stderr)") }
    for name in names {
      apiPorts[name] = try freePort()
      replicationPorts[name] = try freePort()
    }
    let members = names.map { name in
      "    \(name): {api: \"http://127.0.0.1:\(apiPorts[name]!)\", replication: \"127.0.0.1:\(replicationPorts[name]!)\"}"
    }.joined(separator: "\n")
    for name in names {
      let text = """
        data_dir: \(directory.path)/\(name)
        listen: 127.0.0.1:\(apiPorts[name]!)
        development_mode: true
        cluster:
          name: test-cluster
          node: \(name)
          initial_primary: n1
          quorum: \(quorum)
          certificates: \(certificates)
          heartbeat_ms: 50
          peer_timeout_ms: 1500
        \(extra)
          members:
        \(members)

        """
      try text.write(toFile: configPath(name), atomically: true, encoding: .utf8)
    }
  }

  func configPath(_ name: String) -> String { directory.path + "/\(name).yaml" }

  func start(_ name: String) throws {
    processes[name] = try ServerProcess(arguments: ["serve", "--config", configPath(name)])
  }

  func kill(_ name: String, _ signal: Int32 = SIGKILL) {
    processes.removeValue(forKey: name)?.kill(signal)
  }

  func status(_ name: String) throws -> [String: JSONValue] {
    let (code, body) = try http("GET", port: apiPorts[name]!, "/v1/status")
    guard code == 200, case .object(let fields) = try JSONParser.parse(Array(body.utf8)) else {
      throw CLIError("status of \(name): \(code) \(body)")
    }
    return fields
  }

  func number(_ fields: [String: JSONValue], _ key: String) -> Int {
    if case .number(let value)? = fields[key] { return Int(value) }
    return -1
  }

  func digest(_ name: String, at lsn: Int) throws -> String {
    let (code, body) = try http("GET", port: apiPorts[name]!, "/v1/digest?as_of_lsn=\(lsn)")
    guard code == 200, case .object(let fields) = try JSONParser.parse(Array(body.utf8)),
      case .string(let digest)? = fields["digest"]
    else { throw CLIError("digest of \(name): \(code) \(body)") }
    return digest
  }

  /// Polls until `condition` holds or fails after `seconds`.
  func eventually(_ what: String, seconds: Double = 60, _ condition: () throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
      if (try? condition()) == true { return }
      try await Task.sleep(for: .milliseconds(20))
    }
    throw CLIError("timed out waiting for \(what)")
  }

  func stopAll() {
    for name in Array(processes.keys) { kill(name, SIGTERM) }
    directory.remove()
  }
}

@Suite(.serialized, .timeLimit(.minutes(5))) struct ClusterProcessTests {
  /// Issue 5: a primary and two followers as real processes over mutual TLS; 10,000 transactions
  /// at `quorum`; one follower `kill -9`ed halfway and restarted; at the end all three report the
  /// same state digest at the same LSN.
  @Test func quorumWritesSurviveAFollowerKilledHalfway() async throws {
    let cluster = try LocalCluster()
    defer { cluster.stopAll() }
    for name in cluster.names { try cluster.start(name) }
    try await cluster.eventually("both followers streaming") {
      guard case .object(let replication)? = try cluster.status("n1")["replication"],
        case .array(let followers)? = replication["followers"]
      else { return false }
      return followers.filter {
        if case .object(let f) = $0 { return f["state"] == .string("streaming") }
        return false
      }.count == 2
    }
    let client = MemWALClient(baseURL: "http://127.0.0.1:\(cluster.apiPorts["n1"]!)")
    try await client.createNamespace("agents", dimension: 4, metric: .l2, durability: .quorum)

    // A write sent to a follower is redirected to the primary, and MemWALClient follows it.
    let (code, body) = try http(
      "POST", port: cluster.apiPorts["n2"]!, "/v1/namespaces/agents/memories",
      #"{"memories":[{"id":"r","vector":[1,2,3,4]}]}"#)
    #expect(code == 307, "\(body)")
    #expect(body.contains("http://127.0.0.1:\(cluster.apiPorts["n1"]!)") && body.contains("not_primary"))
    let viaFollower = MemWALClient(baseURL: "http://127.0.0.1:\(cluster.apiPorts["n2"]!)")
    let redirected = try await viaFollower.upsert(
      [MemoryRecord(id: "r", vector: [1, 2, 3, 4])], in: "agents", durability: .quorum)
    #expect(redirected.durability == .quorum)

    let total = 10_000
    let writers = 16
    let acknowledged = LockedCounter()
    func run(_ range: Range<Int>) async throws {
      try await withThrowingTaskGroup(of: Void.self) { group in
        for writer in 0..<writers {
          group.addTask {
            for index in stride(from: range.lowerBound + writer, to: range.upperBound, by: writers) {
              let result = try await client.upsert(
                [MemoryRecord(id: "m\(index)", vector: [Float(index), Float(index % 7), 1, 2])], in: "agents",
                durability: .quorum)
              #expect(result.durability == .quorum)
              acknowledged.add(1)
            }
          }
        }
        try await group.waitForAll()
      }
    }
    try await run(0..<total / 2)
    cluster.kill("n3")
    try await run(total / 2..<total * 3 / 4)
    try cluster.start("n3")
    try await run(total * 3 / 4..<total)
    #expect(acknowledged.value == total)

    let last = cluster.number(try cluster.status("n1"), "durable_lsn")
    try await cluster.eventually("every node applied LSN \(last)") {
      try cluster.names.allSatisfy { cluster.number(try cluster.status($0), "applied_lsn") >= last }
    }
    let digests = try cluster.names.map { try cluster.digest($0, at: last) }
    #expect(Set(digests).count == 1, "digests at LSN \(last): \(digests)")
    // Any member names the primary and the membership (`GET /v1/cluster`).
    let (topologyCode, topology) = try http("GET", port: cluster.apiPorts["n3"]!, "/v1/cluster")
    #expect(topologyCode == 200, "\(topology)")
    #expect(
      topology.contains(#""primary":{"api":"http://127.0.0.1:\#(cluster.apiPorts["n1"]!)","name":"n1"}"#)
        && topology.contains(#""role":"follower""#), "\(topology)")
    // `memwal ctl status` shows every member with its role and the followers streaming.
    let table = try runMemwal(["ctl", "status", "--config", cluster.configPath("n2")])
    #expect(table.status == 0, "\(table.stderr)")
    let rows = table.stdout.split(separator: "\n").map(String.init)
    #expect(rows.count == 4 && rows[0].hasPrefix("NODE"), "\(table.stdout)")
    #expect(rows[1].hasPrefix("n1") && rows[1].contains("primary"), "\(table.stdout)")
    #expect(rows[2...].allSatisfy { $0.contains("follower") && $0.contains("streaming") }, "\(table.stdout)")
    // Every acknowledged memory is readable on the restarted follower.
    let (readCode, readBody) = try http(
      "GET", port: cluster.apiPorts["n3"]!, "/v1/namespaces/agents/memories/m\(total - 1)")
    #expect(readCode == 200, "\(readBody)")
  }
}

final class LockedCounter: @unchecked Sendable {
  private let lock = NSLock()
  private var count = 0
  func add(_ amount: Int) { lock.withLock { count += amount } }
  var value: Int { lock.withLock { count } }
}
