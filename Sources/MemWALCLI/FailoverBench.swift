import ArgumentParser
import Foundation
import Glibc
import MemWALClient
import MemWALCore
import Synchronization

/// `memwal bench failover`: the time from a SIGKILL of the primary to the first write the new
/// primary acknowledges, under a steady `quorum` write load through MemWALClient, over N trials —
/// and the acknowledged writes lost (which must be 0).
struct FailoverBench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "failover",
    abstract: "Kill the primary under load N times; report failover time p50/p99 and lost writes.",
    discussion:
      "Starts a 3-node cluster and its controller (defaults: heartbeat 200 ms, failure timeout 1 s) on "
      + "free loopback ports in a scratch directory, runs writers at `quorum` with idempotency keys, and "
      + "per trial SIGKILLs the primary, measures until the first write acknowledged in the new epoch, then "
      + "restarts the old primary and waits for it to rejoin. At the end every acknowledged write is read "
      + "back from the final primary. The nodes checkpoint every 2 MiB of WAL (--checkpoint-every-bytes) so "
      + "a restart replays little.")

  @Option(help: "Directory to run in (a fresh subdirectory is made and removed).")
  var dir: String = "/tmp"

  @Option(help: "Failovers to measure.")
  var trials: Int = 20

  @Option(help: "Concurrent writers.")
  var writers: Int = 4

  @Option(help: "Writes per second, all writers together (0: as fast as they go).")
  var rate: Int = 1_000

  @Option(
    name: .customLong("checkpoint-every-bytes"),
    help: "The nodes' checkpoint.every_bytes: a restarted node replays the log after its last checkpoint.")
  var checkpointEveryBytes: Int = 2 << 20

  @Flag(help: "Print one JSON object.")
  var json = false

  @Flag(name: .customLong("keep"), help: "Keep the scratch directory (logs, data) for inspection.")
  var keep = false

  func validate() throws {
    guard (1...1_000).contains(trials) else { throw ValidationError("--trials must be within 1...1000") }
    guard (1...64).contains(writers) else { throw ValidationError("--writers must be within 1...64") }
    guard (0...1_000_000).contains(rate) else { throw ValidationError("--rate must be within 0...1000000") }
    guard checkpointEveryBytes >= 0 else { throw ValidationError("--checkpoint-every-bytes must be ≥ 0") }
  }

  func run() async throws {
    let root = "\(dir)/memwal-failover-\(getpid())-\(UInt64(Date().timeIntervalSince1970))"
    let cluster = try LocalProcessCluster(directory: root, checkpointEveryBytes: checkpointEveryBytes)
    defer {
      cluster.stopAll()
      if !keep { try? FileManager.default.removeItem(atPath: root) }
    }
    try cluster.startAll()
    let load = FailoverLoad(cluster: cluster, pacer: Pacer(perSecond: rate, writers: writers))
    guard let first = try await waitForServingPrimary(cluster, timeout: 60) else {
      throw CLIError("the cluster did not elect a serving primary within 60 s; logs in \(root)")
    }
    try await load.prepare(primary: cluster.apiURL(first))
    let writerTasks = (0..<writers).map { index in Task { await load.runWriter(index) } }
    var durations: [Double] = []
    var failures: [String] = []
    for trial in 1...trials {
      guard let primary = try await waitForServingPrimary(cluster, timeout: 60),
        let before = await cluster.controllerView()
      else {
        failures.append("trial \(trial): no serving primary within 60 s")
        break
      }
      try await load.waitForProgress(count: 20, timeout: 30)
      let killedAt = ContinuousClock.now
      cluster.signal(primary, SIGKILL)
      let acknowledged = await load.firstAcknowledgement(
        after: killedAt, aboveEpoch: before.epoch, timeout: 30)
      if let acknowledged {
        let seconds =
          Double((acknowledged - killedAt).components.attoseconds) / 1e18
          + Double((acknowledged - killedAt).components.seconds)
        durations.append(seconds)
        if !json {
          emit(
            String(
              format: "trial %d: %@ killed, first acknowledged write in the new epoch after %.3f s", trial,
              primary, seconds))
        }
      } else {
        failures.append(
          "trial \(trial): no write acknowledged in a new epoch within 30 s of killing \(primary)")
      }
      let restarted = ContinuousClock.now
      try cluster.start(primary)
      try await waitForRejoin(cluster, node: primary, timeout: 180)
      if !json {
        emit("trial \(trial): \(primary) restarted and caught up in \(ContinuousClock.now - restarted)")
      }
    }
    await load.stop()
    for task in writerTasks { await task.value }
    guard let final = try await waitForServingPrimary(cluster, timeout: 60) else {
      throw CLIError("no primary at the end to check the writes against; logs in \(root)")
    }
    let check = try await load.verify(primary: cluster.apiURL(final))
    let sorted = durations.sorted()
    func percentile(_ p: Double) -> Double {
      guard !sorted.isEmpty else { return .nan }
      return sorted[min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.up)) - 1)]
    }
    let counts = load.counts
    if json {
      emit(
        "{\"trials\":\(trials),\"measured\":\(sorted.count),\"p50_seconds\":\(jsonNumber(percentile(0.5))),"
          + "\"p99_seconds\":\(jsonNumber(percentile(0.99))),\"max_seconds\":\(jsonNumber(sorted.last ?? .nan)),"
          + "\"acknowledged\":\(counts.acknowledged),\"indeterminate\":\(counts.indeterminate),"
          + "\"failed\":\(counts.failed),\"lost\":\(check.lost),\"failures\":\(failures.count)}")
    } else {
      emit(
        String(
          format: "failover over %d trials: p50 %.3f s, p99 %.3f s, max %.3f s", sorted.count,
          percentile(0.5),
          percentile(0.99), sorted.last ?? .nan))
      emit(
        "writes: \(counts.acknowledged) acknowledged, \(counts.indeterminate) indeterminate, \(counts.failed) failed; "
          + "acknowledged but lost: \(check.lost) (checked \(check.checked) on \(final))")
      for failure in failures { emit("failure: \(failure)") }
    }
    if check.lost > 0 || !failures.isEmpty { throw ExitCode(1) }
  }

  func waitForServingPrimary(_ cluster: LocalProcessCluster, timeout: Double) async throws -> String? {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
      if let view = await cluster.controllerView(), let primary = view.primary,
        await cluster.isServing(primary)
      {
        return primary
      }
      try await Task.sleep(for: .milliseconds(20))
    }
    return nil
  }

  /// Waits until the restarted node follows the primary and has applied what the primary had
  /// durable when the wait began.
  func waitForRejoin(_ cluster: LocalProcessCluster, node: String, timeout: Double) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    var target: UInt64?
    while Date() < deadline {
      if let view = await cluster.controllerView(), let primary = view.primary, primary != node {
        if target == nil { target = await cluster.appliedLSN(primary) }
        if let target, let applied = await cluster.appliedLSN(node), applied >= target,
          await cluster.isServing(primary)
        {
          return
        }
      }
      try await Task.sleep(for: .milliseconds(20))
    }
    throw CLIError("\(node) did not rejoin within \(Int(timeout)) s (logs in \(cluster.directory))")
  }
}

/// The write load of the failover benchmark: writers upsert one small memory per request at
/// `quorum`, each with its own idempotency key, retried (same key) against the primary the cluster
/// names until acknowledged or refused.
final class FailoverLoad: Sendable {
  struct Counts: Sendable {
    var acknowledged = 0
    var indeterminate = 0
    var failed = 0
  }

  struct Acknowledgement: Sendable {
    var at: ContinuousClock.Instant
    var epoch: UInt64
  }

  let cluster: LocalProcessCluster
  let namespace = "failover"
  private let state = Mutex<
    (counts: Counts, acknowledged: [String], recent: [Acknowledgement], stopped: Bool)
  >(
    (Counts(), [], [], false))
  private let client: MemWALClient

  /// Each writer's pace (every writer starts from a copy).
  let pacer: Pacer

  init(cluster: LocalProcessCluster, pacer: Pacer) {
    self.cluster = cluster
    self.pacer = pacer
    client = MemWALClient(endpoints: cluster.apiURLs, timeout: .seconds(5))
  }

  var counts: Counts { state.withLock { $0.counts } }

  func prepare(primary: String) async throws {
    _ = try await client.createNamespace(namespace, dimension: 4, metric: .cosine, durability: .quorum)
  }

  func stop() async { state.withLock { $0.stopped = true } }

  func runWriter(_ index: Int) async {
    var sequence = 0
    var pacer = self.pacer
    while !state.withLock({ $0.stopped }) {
      await pacer.wait()
      sequence += 1
      let id = "w\(index)-\(sequence)"
      let record = MemoryRecord(id: id, vector: [Float(index + 1), Float(sequence % 97), 1, 0.5])
      do {
        let result = try await client.upsert(
          [record], in: namespace, durability: .quorum, idempotencyKey: id)
        let now = ContinuousClock.now
        state.withLock { state in
          state.counts.acknowledged += 1
          state.acknowledged.append(id)
          state.recent.append(Acknowledgement(at: now, epoch: result.epoch.rawValue))
          if state.recent.count > 4_096 { state.recent.removeFirst(2_048) }
        }
      } catch let error as MemWALClientError where error.isIndeterminate {
        state.withLock { $0.counts.indeterminate += 1 }
      } catch {
        state.withLock { $0.counts.failed += 1 }
      }
    }
  }

  /// Returns once `count` more writes have been acknowledged.
  func waitForProgress(count: Int, timeout: Double) async throws {
    let start = state.withLock { $0.counts.acknowledged }
    let deadline = Date().addingTimeInterval(timeout)
    while state.withLock({ $0.counts.acknowledged }) < start + count {
      guard Date() < deadline else {
        throw CLIError("the write load stalled (no progress in \(Int(timeout)) s)")
      }
      try await Task.sleep(for: .milliseconds(5))
    }
  }

  /// The first acknowledgement after `instant` in an epoch above `epoch`, polled until `timeout`.
  func firstAcknowledgement(after instant: ContinuousClock.Instant, aboveEpoch epoch: UInt64, timeout: Double)
    async -> ContinuousClock.Instant?
  {
    let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
    while ContinuousClock.now < deadline {
      let found = state.withLock { state in
        state.recent.filter { $0.at > instant && $0.epoch > epoch }.map(\.at).min()
      }
      if let found { return found }
      try? await Task.sleep(for: .milliseconds(2))
    }
    return nil
  }

  /// Reads every acknowledged write back from the primary at `url`.
  func verify(primary url: String) async throws -> (checked: Int, lost: Int) {
    let ids = state.withLock { $0.acknowledged }
    let reader = MemWALClient(baseURL: url, timeout: .seconds(10))
    var lost = 0
    for chunk in stride(from: 0, to: ids.count, by: 64) {
      let slice = ids[chunk..<min(chunk + 64, ids.count)]
      let missing = try await withThrowingTaskGroup(of: Bool.self) { group in
        for id in slice {
          group.addTask { try await reader.memory(id, in: self.namespace, consistency: .latest) == nil }
        }
        var missing = 0
        for try await absent in group where absent { missing += 1 }
        return missing
      }
      lost += missing
    }
    return (ids.count, lost)
  }
}
