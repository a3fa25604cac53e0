import Foundation
import Glibc
import MemWALChaos
import MemWALCore

/// The faults `memwal chaos` injects, by the names `--faults` takes.
enum FaultKind: String, CaseIterable, Sendable {
  case killPrimary = "kill-primary"
  case killFollower = "kill-follower"
  case killController = "kill-controller"
  case pausePrimary = "pause-primary"
  case pauseFollower = "pause-follower"
  /// Every link to and from one node blocked both ways (the controller's included).
  case partition
  /// One node's outgoing traffic blocked; what others send it still arrives.
  case partitionOneWay = "partition-one-way"
  /// The controller cut off from one node; the nodes still reach each other.
  case partitionController = "partition-controller"
  /// Every link of one node delayed by 50–300 ms each way.
  case slow
  /// Every link of one node capped at 32 KiB/s each way.
  case bandwidth
  /// The primary's links delayed by 300 ms, then the primary killed and what its links still carry
  /// dropped (a machine that dies takes its unsent bytes with it): acknowledged writes that only
  /// the primary had are lost unless acknowledgements wait for the followers.
  case slowThenKillPrimary = "slow-kill-primary"
  /// Every write (and file creation) on one node fails with ENOSPC.
  case diskFull = "disk-full"
  /// Every fsync on one node fails with EIO.
  case fsyncError = "fsync-error"
}

/// One injected fault, for the report.
struct FaultEvent: Sendable {
  var at: Double
  var kind: FaultKind
  var target: String
  var seconds: Double
  var note: String
}

/// Applies faults on a seeded schedule: which fault, on which kind of target, for how long and
/// with what pause after it all come from the seed; which node is primary at that moment comes from
/// the cluster, so two runs with one seed inject the same sequence of faults, not the same
/// interleaving.
final class Nemesis: @unchecked Sendable {
  let cluster: LocalProcessCluster
  let proxies: [LocalProcessCluster.Link: FaultProxy]
  let kinds: [FaultKind]
  private var generator: SplitMix64
  private let startedAt: ContinuousClock.Instant
  private let log: (String) -> Void
  private(set) var events: [FaultEvent] = []
  /// Processes that exited without the nemesis killing them and without a disk fault on them.
  private(set) var crashes: [String] = []
  /// Processes that stopped themselves because of an injected disk fault (fail-stop).
  private(set) var failStops: [String] = []
  /// Nodes that had a disk fault injected since they last started: their exit with status 70 is
  /// the expected fail-stop.
  private var diskFaultedSinceStart: Set<String> = []

  init(
    cluster: LocalProcessCluster, proxies: [LocalProcessCluster.Link: FaultProxy], kinds: [FaultKind],
    seed: UInt64, startedAt: ContinuousClock.Instant, log: @escaping (String) -> Void
  ) {
    self.cluster = cluster
    self.proxies = proxies
    self.kinds = kinds
    generator = SplitMix64(seed: seed ^ 0x6e65_6d65_7369_7321)
    self.startedAt = startedAt
    self.log = log
  }

  static func faultFile(_ directory: String, _ node: String) -> String { "\(directory)/\(node).faults" }

  private var seconds: Double {
    let elapsed = ContinuousClock.now - startedAt
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
  }

  private func uniform(_ low: Double, _ high: Double) -> Double {
    low + (high - low) * generator.nextUnitInterval()
  }

  private func pick<T>(_ items: [T]) -> T { items[Int(generator.next() % UInt64(items.count))] }

  /// Runs faults until `deadline`, each followed by a heal and a quiet pause.
  func run(until deadline: ContinuousClock.Instant) async throws {
    guard !kinds.isEmpty else {
      try await Task.sleep(until: deadline, clock: .continuous)
      return
    }
    try await Task.sleep(for: .seconds(uniform(1, 2)))
    while ContinuousClock.now < deadline - .seconds(3) {
      let kind = pick(kinds)
      let hold = uniform(1.5, 4)
      let quiet = uniform(1, 3)
      let nodeChoice = pick(cluster.names)
      let followerIndex = Int(generator.next() % 8)
      let delay = uniform(0.05, 0.3)
      try await inject(kind, hold: hold, anyNode: nodeChoice, followerIndex: followerIndex, delay: delay)
      try await healAll()
      try await Task.sleep(for: .seconds(min(quiet, max(0, deadlineSeconds(deadline)))))
    }
  }

  private func deadlineSeconds(_ deadline: ContinuousClock.Instant) -> Double {
    let left = deadline - ContinuousClock.now
    return Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18
  }

  /// The primary as the controller names it, or as the nodes report it when the controller does not
  /// answer.
  func currentPrimary() async -> String? {
    if let view = await cluster.controllerView(), let primary = view.primary { return primary }
    for name in cluster.names {
      if let status = try? await getJSON(cluster.apiURL(name) + "/v1/status"),
        case .object(let fields) = status,
        case .string("primary")? = fields["role"]
      {
        return name
      }
    }
    return nil
  }

  private func inject(_ kind: FaultKind, hold: Double, anyNode: String, followerIndex: Int, delay: Double)
    async throws
  {
    let at = seconds
    let primary = await currentPrimary()
    let followers = cluster.names.filter { $0 != primary }
    let follower = followers.isEmpty ? anyNode : followers[followerIndex % followers.count]
    var target = anyNode
    var note = ""
    switch kind {
    case .killPrimary, .killFollower, .killController:
      target = kind == .killController ? "controller" : kind == .killPrimary ? (primary ?? anyNode) : follower
      cluster.signal(target, SIGKILL)
      log("fault: kill -9 \(target)")
      try await Task.sleep(for: .seconds(hold))
      try cluster.start(target)
      diskFaultedSinceStart.remove(target)
      note = "restarted after \(String(format: "%.1f", hold)) s"
    case .pausePrimary, .pauseFollower:
      target = kind == .pausePrimary ? (primary ?? anyNode) : follower
      cluster.signal(target, SIGSTOP)
      log("fault: SIGSTOP \(target)")
      try await Task.sleep(for: .seconds(hold))
      cluster.signal(target, SIGCONT)
      note = "SIGCONT after \(String(format: "%.1f", hold)) s"
    case .partition:
      setLinks(
        where: { $0.from == target || $0.to == target }, LinkFaults(blockForward: true, blockBackward: true))
      log("fault: partition \(target) from everyone")
      try await Task.sleep(for: .seconds(hold))
    case .partitionOneWay:
      // What `target` sends: forward on the links it dials, backward on the links dialled to it.
      for (link, proxy) in proxies {
        if link.from == target { proxy.setFaults(LinkFaults(blockForward: true)) }
        if link.to == target { proxy.setFaults(LinkFaults(blockBackward: true)) }
      }
      note = "\(target) sends nothing, receives everything"
      log("fault: one-way partition, \(note)")
      try await Task.sleep(for: .seconds(hold))
    case .partitionController:
      setLinks(
        where: { $0.from == "controller" && $0.to == target },
        LinkFaults(blockForward: true, blockBackward: true))
      log("fault: controller cut off from \(target)")
      try await Task.sleep(for: .seconds(hold))
    case .slow:
      setLinks(
        where: { $0.from == target || $0.to == target }, LinkFaults(delay: .milliseconds(Int(delay * 1000))))
      note = "\(Int(delay * 1000)) ms each way"
      log("fault: slow links of \(target), \(note)")
      try await Task.sleep(for: .seconds(hold))
    case .bandwidth:
      setLinks(where: { $0.from == target || $0.to == target }, LinkFaults(bytesPerSecond: 32 << 10))
      note = "32 KiB/s each way"
      log("fault: bandwidth of \(target) capped, \(note)")
      try await Task.sleep(for: .seconds(hold))
    case .slowThenKillPrimary:
      target = primary ?? anyNode
      setLinks(where: { $0.to == target && $0.kind == .replication }, LinkFaults(delay: .milliseconds(300)))
      try await Task.sleep(for: .seconds(1))
      // The machine dies with what it had not yet delivered: what the links still hold is dropped.
      cluster.signal(target, SIGKILL)
      for (link, proxy) in proxies where link.to == target && link.kind == .replication {
        proxy.resetConnections()
      }
      log(
        "fault: replication from \(target) delayed 300 ms, then kill -9 \(target) (bytes in flight dropped)")
      try await Task.sleep(for: .seconds(hold))
      setLinks(where: { _ in true }, .none)
      try cluster.start(target)
      diskFaultedSinceStart.remove(target)
      note = "300 ms delay for 1 s, then killed; restarted after \(String(format: "%.1f", hold)) s"
    case .diskFull, .fsyncError:
      let mode = kind == .diskFull ? "disk_full" : "fsync_error"
      try setDisk(target, mode)
      log("fault: \(mode) on \(target)")
      try await Task.sleep(for: .seconds(hold))
    }
    events.append(FaultEvent(at: at, kind: kind, target: target, seconds: seconds - at, note: note))
  }

  private func setLinks(where matches: (LocalProcessCluster.Link) -> Bool, _ faults: LinkFaults) {
    for (link, proxy) in proxies where matches(link) { proxy.setFaults(faults) }
  }

  private func setDisk(_ node: String, _ mode: String) throws {
    try (mode + "\n").write(
      toFile: Self.faultFile(cluster.directory, node), atomically: true, encoding: .utf8)
    if mode != "none" { diskFaultedSinceStart.insert(node) }
  }

  /// Ends every fault: links clear, disks work, paused processes continue, and processes that are
  /// down are started again.
  func healAll() async throws {
    setLinks(where: { _ in true }, .none)
    for name in cluster.names { try setDisk(name, "none") }
    for name in cluster.names + ["controller"] { cluster.signal(name, SIGCONT) }
    try supervise()
  }

  /// Reaps processes that exited, classifies each (a node's status 70 after a disk fault injected
  /// since it last started is its fail-stop; anything else is a crash), and starts them again.
  func supervise() throws {
    for (name, status) in cluster.reapExited() {
      if diskFaultedSinceStart.contains(name) && status == 70 {
        failStops.append("\(name) exited with status \(status) at \(String(format: "%.1f", seconds)) s")
        log("\(name) stopped itself (status \(status)) on the disk fault; restarting")
      } else {
        crashes.append("\(name) exited with status \(status) at \(String(format: "%.1f", seconds)) s")
        log("\(name) exited unexpectedly (status \(status)); restarting")
      }
    }
    for name in cluster.names + ["controller"] where !cluster.isRunning(name) {
      try cluster.start(name)
      diskFaultedSinceStart.remove(name)
    }
  }
}
