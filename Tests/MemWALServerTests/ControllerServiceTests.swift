import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import MemWALCluster
import MemWALCore
import MemWALLog
import MemWALServer
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// The controller process's shell against fake nodes: real peer-TLS control listeners in this
/// process that answer from a scripted model (`FakeCluster`), so elections, failovers, restarts
/// and the HTTP API run over real sockets with the real state file, in well under a second each.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ControllerServiceTests {
  @Test func firstStartElectsOnePrimaryAndPointsTheOthersAtIt() async throws {
    try await ControllerHarness.run { harness in
      let service = try await harness.startService()
      let (primary, epoch) = try await harness.waitForSettledPrimary(service)
      #expect(epoch >= Epoch(1))
      let persisted = try harness.stateFile.load()
      #expect(persisted?.epoch == epoch)
      #expect(persisted?.primary == primary)
      // Every follower was told to follow, and the promotion came after the record was durable.
      for name in harness.names where name != primary {
        #expect(harness.cluster.node(name).primary == primary)
      }
      let atPromotion = harness.cluster.recordsAtPromotion()
      #expect(atPromotion.last?.epoch == epoch && atPromotion.last?.primary == primary)
      // Status lines are logged at info and kept for the API.
      let snapshot = try await service.snapshot()
      #expect(snapshot.statusLines.contains { $0.text.contains("promoting \(primary) in epoch \(epoch)") })
      #expect(
        harness.logs.all.contains { $0.level == .info && $0.message.contains("promoting \(primary)") })
    }
  }

  @Test func lostPrimaryIsReplacedByTheMostAdvancedFollower() async throws {
    // n2 has the higher priority, but n3 has more of the log: n3 must win.
    try await ControllerHarness.run(priorities: ["n1": 0, "n2": 5, "n3": 0]) { harness in
      let service = try await harness.startService()
      let (primary, epoch) = try await harness.waitForSettledPrimary(service)
      let followers = harness.names.filter { $0 != primary }
      let behind = followers.max { harness.priority($0) < harness.priority($1) }!
      let ahead = followers.first { $0 != behind }!
      harness.cluster.update(behind) { $0.isReplicating = false }
      harness.cluster.write(9, on: primary)
      let target = harness.cluster.node(primary).flushedLSN
      try await harness.waitUntil("\(ahead) reports LSN \(target)") {
        try await service.snapshot().members.first { $0.member.name == ahead }?.report?.flushedLSN == target
      }
      let stuck = harness.cluster.node(behind).flushedLSN
      #expect(stuck < target)
      harness.cluster.update(primary) { $0.isSilent = true }
      try await harness.waitUntil("\(ahead) promoted") {
        let snapshot = try await service.snapshot()
        return snapshot.record.primary == ahead && snapshot.record.epoch > epoch
      }
      let record = try #require(try harness.stateFile.load())
      #expect(record.primary == ahead)
      #expect(record.epoch > epoch)
      try await harness.waitUntil("\(ahead) takes writes and \(behind) follows it") {
        harness.cluster.node(ahead).role == .primary && harness.cluster.node(behind).primary == ahead
      }
      #expect(harness.cluster.recordsAtPromotion().last == record)
      let snapshot = try await service.snapshot()
      #expect(snapshot.statusLines.contains { $0.text.contains("\(primary) lost: promoting \(ahead)") })
    }
  }

  @Test func restartFromTheStateDirectoryKeepsThePrimary() async throws {
    try await ControllerHarness.run { harness in
      let first = try await harness.startService()
      let (primary, epoch) = try await harness.waitForSettledPrimary(first)
      await first.stop()
      let mark = harness.cluster.receivedCount
      let second = try await harness.startService()
      let loaded = try await second.snapshot()
      #expect(loaded.record.epoch == epoch)
      #expect(loaded.record.primary == primary)
      // Ten heartbeat rounds (500 ms, over the 300 ms failure timeout) without an election.
      try await harness.waitUntil("10 heartbeats to every node after the restart") {
        harness.names.allSatisfy { name in
          harness.cluster.received(since: mark).filter { $0.node == name && $0.request == .heartbeat }.count
            >= 10
        }
      }
      let promises = harness.cluster.received(since: mark).filter {
        if case .promise = $0.request { return true }
        return false
      }
      #expect(promises.isEmpty)
      let snapshot = try await second.snapshot()
      #expect(snapshot.record.epoch == epoch && snapshot.record.primary == primary)
      #expect(try harness.stateFile.load()?.epoch == epoch)
    }
  }

  @Test func noFailoverWhileFollowersStillSeeThePrimary() async throws {
    try await ControllerHarness.run { harness in
      let service = try await harness.startService()
      let (primary, epoch) = try await harness.waitForSettledPrimary(service)
      let followers = harness.names.filter { $0 != primary }
      for name in followers { harness.cluster.update(name) { $0.seesPrimaryOverride = true } }
      let mark = harness.cluster.receivedCount
      harness.cluster.update(primary) { $0.isSilent = true }
      try await harness.waitUntil("a status line saying why there is no failover") {
        try await service.snapshot().lastStatus.contains("still see")
      }
      let snapshot = try await service.snapshot()
      #expect(snapshot.lastStatus.contains("primary \(primary) silent for"))
      #expect(snapshot.lastStatus.contains("\(followers.joined(separator: ", ")) still see it: no failover"))
      #expect(snapshot.record.epoch == epoch && snapshot.record.primary == primary)
      // The controller keeps checking; the repeated line is kept once, counted, and logged once.
      try await harness.waitUntil("the line repeated twice") {
        try await service.snapshot().statusLines.last.map { $0.text.contains("still see") && $0.repeats >= 2 }
          ?? false
      }
      #expect(try await service.snapshot().statusLines.filter { $0.text.contains("still see") }.count == 1)
      #expect(harness.logs.all.filter { $0.level == .info && $0.message.contains("still see") }.count == 1)
      #expect(
        !harness.cluster.received(since: mark).contains {
          if case .promise = $0.request { return true }
          return false
        })
    }
  }

  @Test func apiReportsTheClusterAndRefusesBadCommands() async throws {
    try await ControllerHarness.run { harness in
      let service = try await harness.startService()
      let (primary, epoch) = try await harness.waitForSettledPrimary(service)
      try await harness.waitUntil("every member reachable, reporting the new epoch") {
        try await service.snapshot().members.allSatisfy { $0.isReachable && $0.report?.epoch == epoch }
      }
      try await harness.withAPI(service) { api in
        let (code, cluster) = try await api.call(.get, "/v1/cluster")
        #expect(code == 200)
        #expect(cluster["cluster"] == .string("test-cluster"))
        #expect(cluster["epoch"] == .number(Double(epoch.rawValue)))
        #expect(cluster["primary"]?["name"] == .string(primary))
        #expect(cluster["primary"]?["api"] == .string(harness.apiURL(of: primary)))
        #expect(cluster["quorum"] == .number(1))
        #expect(cluster["quorum_floor"] == .number(1))
        #expect(cluster["phase"] == .string("steady"))
        #expect(cluster["controller"]?["name"] == .string("controller"))
        #expect(cluster["last_status"]?.stringValue?.isEmpty == false)
        #expect(cluster["status_lines"] == nil)
        guard case .array(let members)? = cluster["members"] else {
          Issue.record("members is not an array")
          return
        }
        #expect(members.count == 3)
        for member in members {
          let name = try #require(member["name"]?.stringValue)
          #expect(member["api"] == .string(harness.apiURL(of: name)))
          #expect(member["replication"]?.stringValue?.isEmpty == false)
          #expect(member["control"]?.stringValue?.hasPrefix("127.0.0.1:") == true)
          #expect(member["reachable"] == .bool(true))
          #expect(member["role"] == .string(name == primary ? "primary" : "follower"))
          #expect(member["epoch"] == .number(Double(epoch.rawValue)))
          #expect(member["sees_primary"] == .bool(true))
          for key in ["priority", "promised_epoch", "flushed_lsn", "applied_lsn"] {
            #expect(member[key]?.numberValue != nil, "\(key)")
          }
        }
        let (statusCode, status) = try await api.call(.get, "/v1/status")
        #expect(statusCode == 200)
        guard case .array(let lines)? = status["status_lines"], let line = lines.last else {
          Issue.record("no status lines")
          return
        }
        #expect(line["seq"]?.numberValue != nil)
        #expect(line["at"]?.stringValue.flatMap(parseRFC3339) != nil)
        #expect(line["text"]?.stringValue?.isEmpty == false)

        let other = harness.names.first { $0 != primary }!
        let refusals: [(String, String, Int, String)] = [
          ("/v1/switchover", #"{"to": "n9"}"#, 409, "unknown_member"),
          ("/v1/switchover", #"{"to": "\#(primary)"}"#, 409, "already_primary"),
          ("/v1/switchover", #"{"to": "n2""#, 400, "malformed_json"),
          ("/v1/switchover", "{}", 400, "invalid_request"),
          ("/v1/switchover", #"{"to": 2}"#, 400, "invalid_request"),
          ("/v1/switchover", #"{"to": "\#(other)", "now": true}"#, 400, "invalid_request"),
          ("/v1/switchover", "", 400, "invalid_request"),
          ("/v1/promote", #"{"node": "\#(other)"}"#, 400, "invalid_request"),
          ("/v1/promote", #"{"node": "\#(other)", "force": false}"#, 400, "invalid_request"),
          ("/v1/promote", #"{"node": "n9", "force": true}"#, 409, "unknown_member"),
          ("/v1/quorum", #"{"k": 3}"#, 409, "invalid_quorum"),
          ("/v1/quorum", #"{"k": -1}"#, 409, "invalid_quorum"),
          ("/v1/quorum", #"{"k": "one"}"#, 400, "invalid_request"),
          (
            "/v1/quorum", #"{"k": 1, "pad": "\#(String(repeating: "x", count: 20_000))"}"#, 413,
            "payload_too_large"
          ),
        ]
        for (path, body, expected, errorCode) in refusals {
          let (code, answer) = try await api.call(.post, path, body)
          #expect(code == expected, "\(path) \(body.prefix(40))")
          #expect(answer["error"]?["code"] == .string(errorCode), "\(path) \(body.prefix(40))")
          #expect(answer["error"]?["message"]?.stringValue?.isEmpty == false)
        }
        // Nothing changed.
        #expect(try await service.snapshot().record.epoch == epoch)
        #expect(try harness.stateFile.load()?.quorumFollowers == 1)

        // A silent target is refused as unreachable.
        harness.cluster.update(other) { $0.isSilent = true }
        try await harness.waitUntil("\(other) unreachable") {
          try await service.snapshot().members.first { $0.member.name == other }?.isReachable == false
        }
        let (silentCode, silent) = try await api.call(.post, "/v1/switchover", #"{"to": "\#(other)"}"#)
        #expect(silentCode == 409)
        #expect(silent["error"]?["code"] == .string("unreachable"))
        harness.cluster.update(other) { $0.isSilent = false }
      }
    }
  }

  @Test func switchoverDrainsThenPromotesAndOtherCommandsWork() async throws {
    try await ControllerHarness.run { harness in
      let service = try await harness.startService()
      let (primary, epoch) = try await harness.waitForSettledPrimary(service)
      let target = harness.names.first { $0 != primary }!
      let third = harness.names.first { $0 != primary && $0 != target }!
      try await harness.waitUntil("every member reachable") {
        try await service.snapshot().members.allSatisfy(\.isReachable)
      }
      harness.cluster.update(target) { $0.isReplicating = false }
      harness.cluster.write(5, on: primary)
      try await harness.withAPI(service) { api in
        let mark = harness.cluster.receivedCount
        let (code, started) = try await api.call(.post, "/v1/switchover", #"{"to": "\#(target)"}"#)
        #expect(code == 202)
        #expect(started["started"] == .bool(true))
        #expect(started["from"] == .string(primary))
        #expect(started["to"] == .string(target))
        #expect(started["epoch"] == .number(Double(epoch.rawValue)))
        try await harness.waitUntil("\(primary) drains") { harness.cluster.node(primary).role == .draining }
        let (busyCode, busy) = try await api.call(.post, "/v1/switchover", #"{"to": "\#(third)"}"#)
        #expect(busyCode == 409)
        #expect(busy["error"]?["code"] == .string("busy"))
        let (_, during) = try await api.call(.get, "/v1/cluster")
        #expect(during["phase"] == .string("switching_over"))
        // The target catches up; the switchover finishes.
        harness.cluster.update(target) { $0.isReplicating = true }
        try await harness.waitUntil("\(target) primary") {
          let snapshot = try await service.snapshot()
          return snapshot.record.primary == target && snapshot.record.epoch > epoch
            && harness.cluster.node(target).role == .primary
        }
        let newEpoch = try await service.snapshot().record.epoch
        let sent = harness.cluster.received(since: mark)
        let drained = try #require(
          sent.firstIndex { $0.node == primary && $0.request == .drain(epoch: epoch) })
        let promised = try #require(
          sent.firstIndex { $0.node == target && $0.request == .promise(epoch: newEpoch) })
        let promoted = try #require(
          sent.firstIndex { $0.node == target && $0.request == .promote(epoch: newEpoch) })
        #expect(drained < promised && promised < promoted)
        try await harness.waitUntil("\(primary) follows \(target)") {
          harness.cluster.node(primary).primary == target && harness.cluster.node(primary).role == .follower
        }
        #expect(harness.cluster.recordsAtPromotion().last?.primary == target)

        // set-quorum: durable, then the primary is told.
        let (quorumCode, quorum) = try await api.call(.post, "/v1/quorum", #"{"k": 2}"#)
        #expect(quorumCode == 200)
        #expect(quorum["previous_quorum"] == .number(1))
        #expect(quorum["quorum"] == .number(2))
        #expect(quorum["quorum_floor"] == .number(1))
        #expect(try harness.stateFile.load()?.quorumFollowers == 2)
        try await harness.waitUntil("\(target) told k = 2") { harness.cluster.node(target).quorum == 2 }

        // A forced promotion says what may be lost.
        let (promoteCode, promotion) = try await api.call(
          .post, "/v1/promote", #"{"node": "\#(third)", "force": true}"#)
        #expect(promoteCode == 200)
        #expect(promotion["promoted"] == .string(third))
        #expect(promotion["epoch"] == .number(Double(newEpoch.rawValue + 1)))
        #expect(promotion["status"]?.stringValue?.hasPrefix("forced promotion of \(third)") == true)
        #expect(try harness.stateFile.load()?.primary == third)
      }
    }
  }

  @Test func aRecordThatCannotBePersistedHaltsTheController() async throws {
    try await ControllerHarness.run { harness in
      let disk = SimulatedFileSystem()
      let service = try await harness.startService(fileSystem: disk)
      let (primary, _) = try await harness.waitForSettledPrimary(service)
      let mark = harness.cluster.receivedCount
      disk.setFaultPlan(.init(operationIndex: 1, fault: .ioError, kinds: [.sync]))
      await #expect(throws: ControllerUnavailableError.self) { try await service.setQuorum(0) }
      #expect(await service.untilHalted()?.contains("cannot persist") == true)
      let snapshot = try await service.snapshot()
      #expect(snapshot.phase == "halted")
      // The primary was never told of a k that a restarted controller would not know.
      #expect(
        !harness.cluster.received(since: mark).contains {
          $0.node == primary && $0.request == .setQuorum(quorumFollowers: 0, epoch: snapshot.record.epoch)
        })
      await #expect(throws: ControllerUnavailableError.self) { try await service.switchover(to: "n2") }
    }
  }

  @Test func startupRefusesAStateFileItCannotUse() async throws {
    try await ControllerHarness.run { harness in
      try FileManager.default.createDirectory(
        atPath: harness.stateDirectory, withIntermediateDirectories: true)
      try Data("{\"format\": \"memwal-controller-state\", \"version\": 1, \"epoch\": ".utf8).write(
        to: URL(fileURLWithPath: harness.stateFile.path))
      do {
        _ = try await harness.startService()
        Issue.record("a torn state file was accepted")
      } catch let error as ControllerStateError {
        #expect("\(error)".contains(harness.stateFile.path))
        #expect("\(error)".contains("not valid JSON"))
      }
      // Another membership than the configuration's.
      try ControllerStateFile(directory: harness.stateDirectory).write(
        ControllerRecord(
          epoch: Epoch(4), primary: "n1", members: ["n1", "n2", "n4"].map { ClusterMember(name: $0) },
          quorumFollowers: 1))
      do {
        _ = try await harness.startService()
        Issue.record("a record of another membership was accepted")
      } catch let error as ControllerStateError {
        #expect("\(error)".contains("n1, n2, n4"))
      }
    }
  }

  @Test func everyRefusalHasItsCode() {
    let cases: [(ControllerCommandError, String)] = [
      (.unknownMember("x"), "unknown_member"), (.alreadyPrimary("n1"), "already_primary"),
      (.noPrimary, "no_primary"), (.busy("election"), "busy"), (.unreachable("n2"), "unreachable"),
      (.invalidQuorum(requested: 5, followers: 2), "invalid_quorum"),
    ]
    for (error, code) in cases {
      let failure = ControllerAPI.apiError(for: error)
      #expect(failure.code == code)
      #expect(failure.status == .conflict)
      #expect(failure.message == error.description)
    }
  }

  @Test func settingsComeFromTheControllersConfiguration() throws {
    let text = try String(contentsOfFile: "cluster-configs/local-3/controller.yaml", encoding: .utf8)
    let cluster = try ClusterSettings.load(yaml: text)
    #expect(cluster.isController)
    let settings = try ControllerSettings(cluster: cluster)
    #expect(settings.members.map(\.name) == ["n1", "n2", "n3"])
    #expect(settings.members.map(\.control) == ["127.0.0.1:7801", "127.0.0.1:7802", "127.0.0.1:7803"])
    #expect(settings.heartbeatInterval == .milliseconds(200))
    #expect(settings.failureTimeout == .seconds(1))
    #expect(settings.requestTimeout == .milliseconds(500))
    let address = try settings.listenAddress
    #expect(address.host == "127.0.0.1" && address.port == 7690)
    // A node's configuration gives the same cluster section.
    let node = try ClusterSettings.load(
      yaml: try String(contentsOfFile: "cluster-configs/local-3/n1.yaml", encoding: .utf8))
    #expect(node.controller == cluster.controller)
    #expect(!node.isController)
    #expect(throws: ConfigurationError.self) { try ClusterSettings.load(yaml: "listen: 127.0.0.1:1\n") }
    #expect(throws: ConfigurationError.self) { try ControllerSettings.hostAndPort(ofURL: "https://a:1") }
    #expect(throws: ConfigurationError.self) { try ControllerSettings.hostAndPort(ofURL: "http://a:1/x") }
  }
}

/// The state file on its own: round trips, refusals, and a crash at every step of a write.
@Suite struct ControllerServiceStateFileTests {
  static let first = ControllerRecord(
    epoch: Epoch(3), primary: "n2",
    members: [ClusterMember(name: "n1"), ClusterMember(name: "n2", priority: 4)],
    quorumFollowers: 1, quorumFloor: 0)
  static let second = ControllerRecord(
    epoch: Epoch(4), primary: "n1",
    members: [ClusterMember(name: "n1"), ClusterMember(name: "n2", priority: 4)],
    quorumFollowers: 1)

  @Test func roundTripsAndStartsEmpty() throws {
    let disk = SimulatedFileSystem()
    let file = ControllerStateFile(directory: "/state/controller", fileSystem: disk)
    #expect(try file.load() == nil)
    #expect(disk.isDirectory("/state/controller"))
    try file.write(Self.first)
    #expect(try file.load() == Self.first)
    try file.write(Self.second)
    #expect(try file.load() == Self.second)
    let fresh = ControllerRecord(epoch: .zero, primary: nil, members: Self.first.members, quorumFollowers: 0)
    try file.write(fresh)
    #expect(try file.load() == fresh)
  }

  @Test func refusesWhatIsNotARecord() throws {
    let cases: [(String, String)] = [
      ("{\"format\": \"memwal-controller-state\"", "not valid JSON"),
      ("[]", "not a JSON object"),
      ("{\"format\": \"other\", \"version\": 1}", "format is not"),
      (
        ControllerStateFile.encodeForTests(Self.first).replacingOccurrences(
          of: "\"version\":1", with: "\"version\":2"), "version 2 is not known"
      ),
      (
        ControllerStateFile.encodeForTests(Self.first).replacingOccurrences(
          of: "\"primary\":\"n2\"", with: "\"primary\":\"n7\""), "primary must be"
      ),
      (
        ControllerStateFile.encodeForTests(Self.first).replacingOccurrences(
          of: "\"quorum\":1", with: "\"quorum\":2"), "quorum must be"
      ),
    ]
    for (text, reason) in cases {
      let disk = SimulatedFileSystem()
      try disk.createDirectory("/state")
      let handle = try disk.openFile("/state/controller-state.json", mode: .createNew)
      try handle.write(Array(text.utf8), at: 0)
      handle.close()
      let file = ControllerStateFile(directory: "/state", fileSystem: disk)
      #expect(throws: ControllerStateError.self) { try file.load() }
      do {
        _ = try file.load()
      } catch {
        #expect("\(error)".contains("/state/controller-state.json"), "\(text)")
        #expect("\(error)".contains(reason), "\(error)")
      }
    }
  }

  /// A crash at every mutating operation of a write: a restart finds the old record or the new
  /// one, and once the write returned, the new one.
  @Test func aCrashAtAnyStepLeavesTheOldOrTheNewRecord() throws {
    var step = 1
    while true {
      let disk = SimulatedFileSystem()
      let file = ControllerStateFile(directory: "/state", fileSystem: disk)
      try file.write(Self.first)
      disk.setFaultPlan(.init(operationIndex: step, fault: .crash))
      let finished = (try? file.write(Self.second)) != nil
      for mode in SimulatedFileSystem.CrashMode.allCases {
        for seed in UInt64(1)...4 {
          let restarted = ControllerStateFile(
            directory: "/state", fileSystem: disk.crashImage(mode: mode, seed: seed))
          let found = try restarted.load()
          if finished {
            #expect(found == Self.second, "step \(step) \(mode)")
          } else {
            #expect(found == Self.first || found == Self.second, "step \(step) \(mode)")
          }
          // A later write still works.
          try restarted.write(Self.second)
          #expect(try restarted.load() == Self.second)
        }
      }
      if finished { break }
      step += 1
    }
    #expect(step >= 4)
  }
}

extension ControllerStateFile {
  /// The encoded text, via a scratch simulated disk.
  static func encodeForTests(_ record: ControllerRecord) -> String {
    let disk = SimulatedFileSystem()
    let file = ControllerStateFile(directory: "/x", fileSystem: disk)
    try! file.write(record)
    let handle = try! disk.openFile(file.path, mode: .readOnly)
    defer { handle.close() }
    return String(decoding: try! handle.readAll(), as: UTF8.self)
  }
}

extension JSONValue {
  subscript(key: String) -> JSONValue? {
    guard case .object(let fields) = self else { return nil }
    return fields[key]
  }

  var stringValue: String? {
    guard case .string(let text) = self else { return nil }
    return text
  }

  var numberValue: Double? {
    guard case .number(let number) = self else { return nil }
    return number
  }
}

// MARK: - Harness

/// Certificates, fake nodes and a state directory for one test; stops everything it started.
final class ControllerHarness: @unchecked Sendable {
  let names = ["n1", "n2", "n3"]
  let certificates: String
  let stateDirectory: String
  let cluster: FakeCluster
  let logs = LogRecorder()
  private var listeners: [String: any Channel] = [:]
  private var services: [ControllerService] = []
  private let priorities: [String: Int]

  var stateFile: ControllerStateFile { ControllerStateFile(directory: stateDirectory) }

  private init(root: String, priorities: [String: Int]) {
    certificates = root + "/certs"
    stateDirectory = root + "/state/controller"
    self.priorities = priorities
    cluster = FakeCluster(names: names, stateDirectory: stateDirectory)
  }

  static func run(priorities: [String: Int] = [:], _ body: (ControllerHarness) async throws -> Void)
    async throws
  {
    let root = try TemporaryDirectory("controller")
    defer { root.remove() }
    let harness = ControllerHarness(root: root.path, priorities: priorities)
    do {
      try await harness.startFakes()
      try await body(harness)
    } catch {
      await harness.stopAll()
      throw error
    }
    await harness.stopAll()
  }

  func priority(_ name: String) -> Int { priorities[name] ?? 0 }
  func apiURL(of name: String) -> String { "http://127.0.0.1:76\(name.dropFirst())0" }

  private func startFakes() async throws {
    _ = try ClusterCertificates.initialize(directory: certificates, names: names + ["controller"])
    for name in names {
      let tls = try PeerTLS(
        nodeName: name, certificatesDirectory: certificates, membership: Set(names + ["controller"]),
        logger: logs.makeLogger("fake-\(name)"))
      let cluster = self.cluster
      let channel = try await tls.makeServerBootstrap(group: MultiThreadedEventLoopGroup.singleton) {
        channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(FakeControlHandler(name: name, cluster: cluster))
        }
      }.bind(host: "127.0.0.1", port: 0).get()
      listeners[name] = channel
    }
  }

  func settings() -> ControllerSettings {
    let members = names.map { name in
      ControllerSettings.Member(
        name: name, api: apiURL(of: name), replication: "127.0.0.1:77\(name.dropFirst())0",
        control: "127.0.0.1:\(listeners[name]!.localAddress!.port!)", priority: priority(name))
    }
    var settings = ControllerSettings(
      clusterName: "test-cluster", controllerAPI: "http://127.0.0.1:0", members: members, quorumFollowers: 1,
      stateDirectory: stateDirectory, heartbeatInterval: .milliseconds(50), failureTimeout: .milliseconds(300)
    )
    settings.switchoverTimeout = .seconds(20)
    return settings
  }

  func startService(fileSystem: any FileSystem = POSIXFileSystem()) async throws -> ControllerService {
    let tls = try PeerTLS(
      nodeName: "controller", certificatesDirectory: certificates, membership: Set(names),
      logger: logs.makeLogger("controller-tls"))
    let service = try await ControllerService.start(
      settings: settings(), tls: tls, fileSystem: fileSystem, logger: logs.makeLogger("controller"))
    services.append(service)
    return service
  }

  /// Runs `body` against the service's HTTP API (in memory, through its router).
  func withAPI(_ service: ControllerService, _ body: @Sendable (APIClient) async throws -> Void) async throws
  {
    let app = ControllerAPI.makeApplication(
      service: service, host: "127.0.0.1", port: 0,
      logger: Logger(label: "api") { _ in SwiftLogNoOpLogHandler() }
    )
    try await app.test(.router) { client in try await body(APIClient(client: client)) }
  }

  struct APIClient: Sendable {
    let client: any TestClientProtocol

    func call(_ method: HTTPRequest.Method, _ uri: String, _ body: String? = nil) async throws -> (
      Int, JSONValue
    ) {
      try await client.execute(
        uri: uri, method: method, headers: [:], body: body.map { ByteBuffer(string: $0) }
      ) {
        response in
        let bytes = Array(response.body.readableBytesView)
        return (response.status.code, bytes.isEmpty ? .null : try JSONParser.parse(bytes))
      }
    }
  }

  /// Waits until the record names a primary that the fakes agree on: it takes writes in the
  /// record's epoch and every other node follows it there.
  func waitForSettledPrimary(_ service: ControllerService) async throws -> (String, Epoch) {
    var found: (String, Epoch)?
    try await waitUntil("a primary everyone agrees on") {
      let record = try await service.snapshot().record
      guard let primary = record.primary else { return false }
      let settled = names.allSatisfy { name in
        let node = cluster.node(name)
        return node.epoch == record.epoch
          && (name == primary ? node.role == .primary : node.role == .follower && node.primary == primary)
      }
      if settled { found = (primary, record.epoch) }
      return settled
    }
    return found!
  }

  func waitUntil(_ what: String, within seconds: Double = 20, _ condition: () async throws -> Bool)
    async throws
  {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while ContinuousClock.now < deadline {
      if try await condition() { return }
      try await Task.sleep(for: .milliseconds(10))
    }
    throw TLSTestError("timed out after \(seconds) s waiting for \(what)")
  }

  private func stopAll() async {
    for service in services { await service.stop() }
    services.removeAll()
    for (_, channel) in listeners { try? await channel.close() }
    listeners.removeAll()
  }
}

/// The scripted nodes: fencing as `NodeFencing` does it, and replication reduced to "a follower
/// that sees its primary has its log".
final class FakeCluster: Sendable {
  struct Node: Sendable {
    var role: FencedRole = .follower
    var epoch: Epoch = .zero
    var promisedEpoch: Epoch = .zero
    var flushedLSN: LSN = .zero
    var lastEpochInLog: Epoch = .zero
    var primary: String?
    /// Answers nothing (its connection stays open).
    var isSilent = false
    /// Catches up with its primary whenever it sees it.
    var isReplicating = true
    var seesPrimaryOverride: Bool?
    var quorum: Int?
  }

  struct Received: Sendable {
    var node: String
    var request: ControlRequest
  }

  private struct State {
    var nodes: [String: Node]
    var received: [Received] = []
    var recordsAtPromotion: [ControllerRecord?] = []
  }

  private let state: Mutex<State>
  private let stateDirectory: String

  init(names: [String], stateDirectory: String) {
    var nodes: [String: Node] = [:]
    for name in names { nodes[name] = Node() }
    state = Mutex(State(nodes: nodes))
    self.stateDirectory = stateDirectory
  }

  func node(_ name: String) -> Node { state.withLock { $0.nodes[name]! } }
  func update(_ name: String, _ change: (inout Node) -> Void) { state.withLock { change(&$0.nodes[name]!) } }
  var receivedCount: Int { state.withLock { $0.received.count } }
  func received(since mark: Int) -> [Received] { state.withLock { Array($0.received[mark...]) } }
  /// The controller's state file as each promotion request arrived.
  func recordsAtPromotion() -> [ControllerRecord] {
    state.withLock { $0.recordsAtPromotion.compactMap { $0 } }
  }

  /// The primary logs `count` more records.
  func write(_ count: UInt64, on primary: String) {
    update(primary) { $0.flushedLSN = LSN($0.flushedLSN.rawValue + count) }
  }

  /// The node's answer, or nil when it is silent.
  func answer(_ name: String, _ request: ControlRequest) -> ControlReply? {
    guard !node(name).isSilent else { return nil }
    if case .promote = request {
      // What a restarted controller would find: the record must already name this promotion.
      let record = try? ControllerStateFile(directory: stateDirectory).load()
      state.withLock { $0.recordsAtPromotion.append(record) }
    }
    return state.withLock { state -> ControlReply? in
      guard var node = state.nodes[name], !node.isSilent else { return nil }
      state.received.append(Received(node: name, request: request))
      defer { state.nodes[name] = node }
      return Self.answer(request, by: name, &node, cluster: state.nodes)
    }
  }

  private static func answer(
    _ request: ControlRequest, by name: String, _ node: inout Node, cluster: [String: Node]
  ) -> ControlReply {
    switch request {
    case .heartbeat:
      let sees = seesPrimary(node, cluster: cluster)
      if node.role == .follower, sees, node.isReplicating, let primary = node.primary.flatMap({ cluster[$0] })
      {
        node.flushedLSN = max(node.flushedLSN, primary.flushedLSN)
        node.lastEpochInLog = max(node.lastEpochInLog, primary.lastEpochInLog)
      }
      return .report(
        NodeReport(
          role: node.role, epoch: node.epoch, promisedEpoch: node.promisedEpoch, flushedLSN: node.flushedLSN,
          appliedLSN: node.flushedLSN, lastEpochInLog: node.lastEpochInLog, primary: node.primary,
          seesPrimary: sees))
    case .promise(let epoch):
      guard epoch > node.promisedEpoch else {
        return .refused(promisedEpoch: node.promisedEpoch, message: "already promised \(node.promisedEpoch)")
      }
      node.promisedEpoch = epoch
      if node.role != .follower { node.role = .follower }
      return .promised(epoch: epoch, flushedLSN: node.flushedLSN, lastLogEpoch: node.lastEpochInLog)
    case .promote(let epoch):
      guard epoch >= node.promisedEpoch, epoch > node.epoch else {
        return .refused(promisedEpoch: node.promisedEpoch, message: "epoch \(epoch) is stale")
      }
      node.role = .primary
      node.epoch = epoch
      node.promisedEpoch = epoch
      node.primary = name
      node.flushedLSN = LSN(node.flushedLSN.rawValue + 1)
      node.lastEpochInLog = epoch
      return .promoted(epoch: epoch, lsn: node.flushedLSN)
    case .follow(let primary, let epoch):
      guard epoch >= node.promisedEpoch else {
        return .refused(promisedEpoch: node.promisedEpoch, message: "epoch \(epoch) is stale")
      }
      node.role = .follower
      node.primary = primary
      node.epoch = epoch
      node.promisedEpoch = epoch
      return .done
    case .drain(let epoch):
      guard node.role == .primary, node.epoch == epoch else {
        return .refused(promisedEpoch: node.promisedEpoch, message: "not the primary of \(epoch)")
      }
      node.role = .draining
      return .report(
        NodeReport(
          role: node.role, epoch: node.epoch, promisedEpoch: node.promisedEpoch, flushedLSN: node.flushedLSN,
          appliedLSN: node.flushedLSN, lastEpochInLog: node.lastEpochInLog, primary: node.primary,
          seesPrimary: true))
    case .resume(let epoch):
      guard node.role == .draining, node.epoch == epoch else {
        return .refused(promisedEpoch: node.promisedEpoch, message: "not draining in \(epoch)")
      }
      node.role = .primary
      return .done
    case .setQuorum(let k, _):
      node.quorum = k
      return .done
    }
  }

  private static func seesPrimary(_ node: Node, cluster: [String: Node]) -> Bool {
    if let forced = node.seesPrimaryOverride { return forced }
    guard node.role == .follower else { return true }
    guard let name = node.primary, let primary = cluster[name] else { return false }
    return !primary.isSilent && primary.role != .follower && primary.epoch == node.epoch
  }
}

/// A fake node's control listener: answers each request of the controller (and only the
/// controller) from the model, in order, on the same connection.
final class FakeControlHandler: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  let name: String
  let cluster: FakeCluster
  private var decoder = ReplicationFrameDecoder()
  private var isController = false

  init(name: String, cluster: FakeCluster) {
    self.name = name
    self.cluster = cluster
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let event = event as? PeerTLSEvent, case .verified(let peer) = event {
      isController = peer == "controller"
      if !isController { context.close(promise: nil) }
    }
    context.fireUserInboundEventTriggered(event)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard isController else { return }
    let buffer = unwrapInboundIn(data)
    buffer.withUnsafeReadableBytes { decoder.append($0) }
    do {
      while let message = try decoder.next() {
        guard case .control(let id, let request) = message else { continue }
        if let reply = cluster.answer(name, request) {
          let bytes = ReplicationMessage.controlReply(id: id, reply).encodedFrame()
          context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: bytes)), promise: nil)
        }
      }
    } catch {
      context.close(promise: nil)
    }
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }
}
