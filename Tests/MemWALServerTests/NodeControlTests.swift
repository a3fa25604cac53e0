import Logging
import MemWALCluster
import MemWALCore
import MemWALLog
import MemWALNode
import MemWALStore
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import MemWALServer

#if canImport(Glibc)
  import Glibc
#endif

/// A loopback port that was free a moment ago.
func unusedPort() throws -> Int { try LoopbackPort.reserve() }

/// A stand-in for the controller in tests: one peer-TLS connection to a node's control port with
/// the controller's certificate, requests sent with ids and answers matched by id.
final class ScriptedController: Sendable {
  private let channel: any Channel
  private let pending = Mutex<[UInt64: CheckedContinuation<ControlReply, any Error>]>([:])
  private let nextID = Atomic<UInt64>(1)

  private init(channel: any Channel) { self.channel = channel }

  static func connect(to node: String, port: Int, certificates: String) async throws -> ScriptedController {
    let tls = try PeerTLS(
      nodeName: "controller", certificatesDirectory: certificates, membership: ["n1", "n2", "n3"],
      logger: Logger(label: "test.controller"))
    let box = Mutex<ScriptedController?>(nil)
    let bootstrap = tls.makeClientBootstrap(group: MultiThreadedEventLoopGroup.singleton, connectingTo: node)
    {
      channel in
      let handler = ReplicationConnectionHandler(id: ConnectionID(1)) { event in
        guard case .message(_, .controlReply(let id, let reply)) = event else { return }
        let waiter = box.withLock { $0 }?.pending.withLock { $0.removeValue(forKey: id) }
        waiter?.resume(returning: reply)
      }
      return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
    }
    let channel = try await bootstrap.connect(host: "127.0.0.1", port: port).get()
    let controller = ScriptedController(channel: channel)
    box.withLock { $0 = controller }
    return controller
  }

  func send(_ request: ControlRequest) async throws -> ControlReply {
    let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
    return try await withCheckedThrowingContinuation { continuation in
      pending.withLock { $0[id] = continuation }
      channel.send(.control(id: id, request))
    }
  }

  func report() async throws -> NodeReport {
    guard case .report(let report) = try await send(.heartbeat) else {
      throw FencingStateFileError(path: "-", reason: "heartbeat not answered with a report")
    }
    return report
  }

  func close() async { try? await channel.close() }
}

/// Three in-process nodes managed through their control ports by a scripted controller: the node
/// side of failover (fencing state, promotion, following, a stale primary rejoining) without the
/// controller's decisions, which `FailoverController`'s simulations cover.
@Suite(.serialized, .timeLimit(.minutes(5))) struct NodeControlTests {
  static let logger = Logger(label: "test.node-control")

  final class Cluster {
    let certificates: String
    let directory: String
    var ports: [String: (api: Int, replication: Int, control: Int)] = [:]
    var nodes: [String: ClusterNode] = [:]

    init(certificates: String, directory: String) throws {
      self.certificates = certificates
      self.directory = directory
      for name in ["n1", "n2", "n3"] {
        ports[name] = (try unusedPort(), try unusedPort(), try unusedPort())
      }
    }

    func configuration(_ name: String) throws -> NodeConfiguration {
      let members = ports.keys.sorted().map { member in
        let port = ports[member]!
        return
          "    \(member): {api: \"http://127.0.0.1:\(port.api)\", replication: \"127.0.0.1:\(port.replication)\", control: \"127.0.0.1:\(port.control)\"}"
      }.joined(separator: "\n")
      return try NodeConfiguration.parse(
        yaml: """
          data_dir: \(directory)/\(name)
          development_mode: true
          cluster:
            name: control-test
            node: \(name)
            initial_primary: n1
            quorum: 1
            certificates: \(certificates)
            quorum_timeout_ms: 3000
            controller: {api: "http://127.0.0.1:1", state_directory: \(directory)/controller}
            members:
          \(members)
          """)
    }

    func start(_ name: String) async throws -> ClusterNode {
      let node = try await ClusterNode.start(
        configuration: try configuration(name), logger: NodeControlTests.logger)
      nodes[name] = node
      return node
    }

    func stop(_ name: String) async {
      await nodes.removeValue(forKey: name)?.stop()
    }

    func controller(_ name: String) async throws -> ScriptedController {
      try await ScriptedController.connect(to: name, port: ports[name]!.control, certificates: certificates)
    }

    func stopAll() async {
      for name in nodes.keys.sorted() { await stop(name) }
    }
  }

  static func scenario(_ body: (Cluster) async throws -> Void) async throws {
    let certificates = try TemporaryDirectory("control-certs")
    let directory = try TemporaryDirectory("control")
    defer {
      certificates.remove()
      directory.remove()
    }
    _ = try ClusterCertificates.initialize(
      directory: certificates.path, names: ["n1", "n2", "n3", "controller"])
    let cluster = try Cluster(certificates: certificates.path, directory: directory.path)
    var failure: (any Error)?
    do { try await body(cluster) } catch { failure = error }
    await cluster.stopAll()
    if let failure { throw failure }
  }

  static func eventually(
    _ what: String, within seconds: Double = 30, _ condition: () async throws -> Bool
  ) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
      if try await condition() { return }
      try await Task.sleep(for: .milliseconds(20))
    }
    throw FencingStateFileError(path: "-", reason: "timed out waiting for: \(what)")
  }

  static func write(_ engine: MemoryEngine, _ ids: Range<Int>, durability: Durability) async throws -> [LSN] {
    try await outcomes(engine, ids, durability: durability).map(\.lsn)
  }

  static func outcomes(_ engine: MemoryEngine, _ ids: Range<Int>, durability: Durability) async throws
    -> [WriteOutcome]
  {
    var outcomes: [WriteOutcome] = []
    for id in ids {
      outcomes.append(
        try await engine.execute(
          TransactionRequest(
            namespace: "agents",
            operations: [.upsertMemory(MemoryRecord(id: "m\(id)", vector: [Float(id), 1, 0, 0]))],
            durability: durability)))
    }
    return outcomes
  }

  @Test func failoverByControlRequestsThenTheOldPrimaryRejoinsAndConverges() async throws {
    try await Self.scenario { cluster in
      let n1 = try await cluster.start("n1")
      let n2 = try await cluster.start("n2")
      let n3 = try await cluster.start("n3")
      let c1 = try await cluster.controller("n1")
      // A managed primary takes writes only once the controller confirms it.
      #expect(try await c1.report().role == .draining)
      #expect(try await c1.send(.resume(epoch: n1.host.engine.log.currentEpoch)) == .done)
      _ = try await n1.host.engine.createNamespace(
        NamespaceConfig(name: "agents", dimension: 4, metric: .cosine), durability: .quorum)
      let acknowledged = try await Self.write(n1.host.engine, 0..<50, durability: .quorum)

      // The followers see n1; n1 reports itself primary.
      let c2 = try await cluster.controller("n2")
      let c3 = try await cluster.controller("n3")
      try await Self.eventually("followers see the primary") {
        let r2 = try await c2.report()
        let r3 = try await c3.report()
        return r2.seesPrimary && r3.seesPrimary
      }
      #expect(try await c1.report().role == .primary)

      // Election for epoch 2 while n1 still runs (it is cut off from the controller, as when it
      // hangs): both followers promise, which ends their links to n1 — a lower promise is then
      // refused, and nothing n1 writes from now on is acknowledged by them.
      await c1.close()
      let epoch = Epoch(n2.host.engine.log.currentEpoch.rawValue + 1)
      guard case .promised(_, let flushed2, _) = try await c2.send(.promise(epoch: epoch)),
        case .promised = try await c3.send(.promise(epoch: epoch))
      else {
        Issue.record("a follower refused to promise")
        return
      }
      #expect(flushed2 >= acknowledged.last!)
      try await Self.eventually("followers dropped n1") {
        let r2 = try await c2.report()
        let r3 = try await c3.report()
        return !r2.seesPrimary && !r3.seesPrimary
      }
      // n1 still takes `local` writes (its own log only), but no `quorum` write can be acknowledged.
      let stale = try await Self.write(n1.host.engine, 90..<95, durability: .local)
      await #expect(throws: WriteError.self) {
        _ = try await Self.write(n1.host.engine, 95..<96, durability: .quorum)
      }
      await cluster.stop("n1")
      guard case .refused(let promised, _) = try await c2.send(.promise(epoch: epoch)) else {
        Issue.record("a repeated promise was granted")
        return
      }
      #expect(promised == epoch)

      guard case .promoted(let promotedEpoch, _) = try await c2.send(.promote(epoch: epoch)) else {
        Issue.record("n2 was not promoted")
        return
      }
      #expect(promotedEpoch == epoch)
      #expect(try await c3.send(.follow(primary: "n2", epoch: epoch)) == .done)
      // The promotion is durable: n2's fencing state says primary in the new epoch.
      let stored = try FencingStateFile.load(
        directory: cluster.directory + "/n2", fileSystem: POSIXFileSystem())
      #expect(stored?.role == .primary && stored?.epoch == epoch)

      // n2 takes quorum writes with n3 following.
      let later = try await Self.write(n2.host.engine, 50..<80, durability: .quorum)
      #expect(later.allSatisfy { $0 > acknowledged.last! })

      // n1 comes back. (It may already have stepped down before it stopped: a follower that
      // promised epoch 2 and reconnected showed it the new epoch in its hello.) At its first
      // contact it is told to follow n2; it cuts its divergent tail and converges.
      let n1again = try await cluster.start("n1")
      let c1again = try await cluster.controller("n1")
      #expect(try await c1again.report().epoch < epoch)
      #expect(try await c1again.send(.follow(primary: "n2", epoch: epoch)) == .done)
      await #expect(throws: WriteError.self) {
        _ = try await Self.write(n1again.host.engine, 100..<101, durability: .local)
      }
      let target = n2.host.engine.log.positions.flushed.value
      try await Self.eventually("n1 and n3 caught up with n2") {
        n1again.host.engine.store.appliedLSN >= target && n3.host.engine.store.appliedLSN >= target
      }
      let digest = try n2.host.engine.store.digest(at: target)
      #expect(try n1again.host.engine.store.digest(at: target) == digest)
      #expect(try n3.host.engine.store.digest(at: target) == digest)
      #expect(try await c1again.report().role == .follower)
      // n1's un-replicated tail went to its archive, and is not in its stores.
      let archive = try POSIXFileSystem().contentsOfDirectory(cluster.directory + "/n1/archive")
      #expect(archive.contains { $0.hasPrefix("diverged-") })
      #expect(stale.allSatisfy { $0 > acknowledged.last! })
      let now = ReadPoint(lsn: n1again.host.engine.store.appliedLSN, timeMicros: .max)
      #expect(try n1again.host.engine.store.memory("m90", in: "agents", at: now) == nil)
      #expect(try n1again.host.engine.store.memory("m79", in: "agents", at: now) != nil)
      // A stale epoch is refused by the new primary's follower.
      guard case .refused = try await c3.send(.promote(epoch: Epoch(1))) else {
        Issue.record("a stale promotion was accepted")
        return
      }
      await c1again.close()
      await c2.close()
      await c3.close()
    }
  }

  /// A node configuration written out by hand: `members` maps each member to its (api,
  /// replication, control) ports as THIS node knows them; `extra` is appended to the `cluster`
  /// section, `testing` becomes the `testing` section.
  static func handWritten(
    _ cluster: Cluster, node: String, members: [String: (api: Int, replication: Int, control: Int)],
    managed: Bool, extra: String = "", testing: String? = nil
  ) throws -> NodeConfiguration {
    let entries = members.keys.sorted().map { name in
      let port = members[name]!
      return
        "    \(name): {api: \"http://127.0.0.1:\(port.api)\", replication: \"127.0.0.1:\(port.replication)\", control: \"127.0.0.1:\(port.control)\"}"
    }.joined(separator: "\n")
    let controller =
      managed
      ? "  controller: {api: \"http://127.0.0.1:1\", state_directory: \(cluster.directory)/controller}\n" : ""
    return try NodeConfiguration.parse(
      yaml: "data_dir: \(cluster.directory)/\(node)\ndevelopment_mode: true\n"
        + (testing.map { "testing: \($0)\n" } ?? "")
        + "cluster:\n  name: control-test\n  node: \(node)\n  initial_primary: n1\n  quorum: 1\n"
        + "  certificates: \(cluster.certificates)\n  quorum_timeout_ms: 300\n" + extra + controller
        + "  members:\n" + entries + "\n")
  }

  /// `replication_listen` and `control_listen`: n1 binds addresses that its own member entry does
  /// not name (that entry's ports stay unused), and is still reached by n2, whose configuration
  /// lists n1 at the addresses n1 really binds — as when a proxy sits in front of every link.
  @Test func aNodeListensWhereItsListenKeysSayAndIsReachedThroughOtherMembersAddresses() async throws {
    try await Self.scenario { cluster in
      let n1Listen = (replication: try unusedPort(), control: try unusedPort())
      let n1Advertised = (api: try unusedPort(), replication: try unusedPort(), control: try unusedPort())
      let n2Ports = cluster.ports["n2"]!
      let n1Config = try Self.handWritten(
        cluster, node: "n1", members: ["n1": n1Advertised, "n2": n2Ports], managed: true,
        extra: "  replication_listen: \"127.0.0.1:\(n1Listen.replication)\"\n"
          + "  control_listen: \"127.0.0.1:\(n1Listen.control)\"\n")
      let n2Config = try Self.handWritten(
        cluster, node: "n2",
        members: [
          "n1": (n1Advertised.api, n1Listen.replication, n1Listen.control), "n2": n2Ports,
        ], managed: true)
      let n1 = try await ClusterNode.start(configuration: n1Config, logger: Self.logger)
      cluster.nodes["n1"] = n1
      let n2 = try await ClusterNode.start(configuration: n2Config, logger: Self.logger)
      cluster.nodes["n2"] = n2

      // The controller reaches n1 on control_listen only.
      await #expect(throws: (any Error).self) {
        let wrong = try await ScriptedController.connect(
          to: "n1", port: n1Advertised.control, certificates: cluster.certificates)
        await wrong.close()
      }
      let c1 = try await ScriptedController.connect(
        to: "n1", port: n1Listen.control, certificates: cluster.certificates)
      #expect(try await c1.send(.resume(epoch: n1.host.engine.log.currentEpoch)) == .done)
      try await Self.eventually("n2 streams from n1") {
        n1.primary?.followerStatuses.contains { $0.nodeID == "n2" && $0.state == "streaming" } == true
      }
      // A quorum write needs n2's flush: it came over n1's replication_listen.
      _ = try await n1.host.engine.createNamespace(
        NamespaceConfig(name: "agents", dimension: 4, metric: .cosine), durability: .quorum)
      let written = try await Self.outcomes(n1.host.engine, 0..<5, durability: .quorum)
      #expect(written.allSatisfy { $0.durability == .quorum })
      #expect(n2.host.engine.log.positions.flushed.value >= written.last!.lsn)
      await c1.close()
    }
  }

  /// `testing.ack_quorum_before_flush`: with no follower at all, a `quorum` write is acknowledged
  /// (as `quorum`) once it is flushed on the primary; without the switch it fails with
  /// insufficient_replicas.
  @Test func ackQuorumBeforeFlushAcknowledgesQuorumWritesWithoutFollowers() async throws {
    try await Self.scenario { cluster in
      let members = ["n1": cluster.ports["n1"]!, "n2": cluster.ports["n2"]!]
      for unsafe in [false, true] {
        let configuration = try Self.handWritten(
          cluster, node: "n1", members: members, managed: false,
          testing: unsafe ? "{ack_quorum_before_flush: true}" : nil)
        let n1 = try await ClusterNode.start(configuration: configuration, logger: Self.logger)
        cluster.nodes["n1"] = n1
        let engine = n1.host.engine
        if !unsafe {
          _ = try await engine.createNamespace(NamespaceConfig(name: "agents", dimension: 4, metric: .cosine))
        }
        do {
          let written = try await Self.outcomes(engine, unsafe ? 1..<3 : 0..<1, durability: .quorum)
          #expect(unsafe, "a quorum write with no follower was acknowledged")
          #expect(
            written.allSatisfy { $0.durability == .quorum && $0.lsn <= engine.log.positions.flushed.value })
        } catch let error as WriteError {
          guard case .insufficientReplicas = error else {
            Issue.record("unexpected \(error)")
            return
          }
          #expect(!unsafe, "refused with the switch on: \(error)")
        }
        await cluster.stop("n1")
      }
    }
  }

  @Test func drainStopsWritesAndResumeRestoresThem() async throws {
    try await Self.scenario { cluster in
      let n1 = try await cluster.start("n1")
      _ = try await cluster.start("n2")
      _ = try await cluster.start("n3")
      let c1 = try await cluster.controller("n1")
      await #expect(throws: WriteError.self) {
        try await n1.host.engine.createNamespace(
          NamespaceConfig(name: "early", dimension: 4, metric: .cosine))
      }
      #expect(try await c1.send(.resume(epoch: n1.host.engine.log.currentEpoch)) == .done)
      _ = try await n1.host.engine.createNamespace(
        NamespaceConfig(name: "agents", dimension: 4, metric: .cosine), durability: .quorum)
      _ = try await Self.write(n1.host.engine, 0..<10, durability: .quorum)
      let epoch = n1.host.engine.log.currentEpoch
      // The drain's answer is the report after it: draining, with everything logged flushed.
      guard case .report(let report) = try await c1.send(.drain(epoch: epoch)) else {
        Issue.record("a drain is answered with a report")
        return
      }
      #expect(report.role == .draining)
      #expect(report.flushedLSN == n1.host.engine.log.positions.written.value)
      #expect(try await c1.report().role == .draining)
      await #expect(throws: WriteError.self) {
        _ = try await Self.write(n1.host.engine, 10..<11, durability: .quorum)
      }
      #expect(try await c1.send(.resume(epoch: epoch)) == .done)
      _ = try await Self.write(n1.host.engine, 11..<12, durability: .quorum)
      #expect(try await c1.report().role == .primary)

      // set-quorum: recorded in the WAL (and so replicated), applied by the primary, reported.
      #expect(try await c1.report().quorumFollowers == 1)
      #expect(try await c1.send(.setQuorum(quorumFollowers: 2, epoch: epoch)) == .done)
      #expect(try await c1.report().quorumFollowers == 2)
      guard
        case .refused = try await c1.send(.setQuorum(quorumFollowers: 1, epoch: Epoch(epoch.rawValue + 5)))
      else {
        Issue.record("set-quorum for another epoch was accepted")
        return
      }
      let changeLSN = n1.host.engine.log.positions.written.value
      let records = try n1.host.engine.log.records(from: changeLSN, limit: 1)
      #expect(records.first?.payload == .quorumChange(QuorumChange(quorumFollowers: 2)))
      let n2 = try #require(cluster.nodes["n2"])
      try await Self.eventually("the change reached n2") {
        n2.host.engine.log.positions.flushed.value >= changeLSN
      }
      #expect(
        try n2.host.engine.log.records(from: changeLSN, limit: 1).first?.payload == records.first?.payload)
      // Both followers must now flush a quorum write.
      _ = try await Self.write(n1.host.engine, 12..<13, durability: .quorum)
      await c1.close()
    }
  }
}
