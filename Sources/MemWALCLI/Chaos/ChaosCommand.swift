import ArgumentParser
import Foundation
import Glibc
import MemWALChaos
import MemWALCore
import NIOPosix

/// `memwal chaos`: a local cluster as real processes, a seeded nemesis, a workload through
/// MemWALClient, and a checker of what the clients were told against what the cluster holds
/// (docs/reliability.md).
struct ChaosCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "chaos",
    abstract: "Run a cluster under injected faults and check that no acknowledged write is lost.",
    discussion:
      "Starts 3 nodes and a controller on free loopback ports in a scratch directory, with a fault "
      + "proxy on every link between them, then runs --clients writers at `quorum` (memories, graph "
      + "nodes and edges, and writes the nodes must refuse) while the nemesis injects --faults on a "
      + "schedule drawn from --seed. At the end it heals every fault, waits for the cluster to "
      + "converge and checks: every acknowledged write on every node, no failed write anywhere, "
      + "indeterminate writes the same on every node, equal state digests at one LSN, one leader per "
      + "epoch in the logs, and searches and graph reads against a model. Prints one summary line; "
      + "exits 1 on any violation (with the command that reruns the seed), 2 if the harness itself "
      + "failed.")

  @Option(help: "Seconds of faults and load (the check comes after).")
  var seconds: Int?

  @Option(help: "Minutes of faults and load; --seconds wins when both are given.")
  var minutes: Double?

  @Option(help: "The seed of the fault schedule and the workload (default: random, printed).")
  var seed: UInt64?

  @Option(help: "Concurrent clients.")
  var clients: Int = 4

  @Option(help: "Operations per second, all clients together (0: as fast as they go).")
  var rate: Int = 100

  @Option(
    help: ArgumentHelp(
      "Comma-separated faults to inject, or `all` or `none`.",
      discussion: "Faults: " + FaultKind.allCases.map(\.rawValue).joined(separator: ", ")))
  var faults: String = "all"

  @Option(name: .customLong("report"), help: "Write the JSON report to this file.")
  var reportPath: String?

  @Option(help: "Directory to run in (a fresh subdirectory is made, and removed unless --keep).")
  var dir: String = "/tmp"

  @Flag(help: "Keep the run directory (logs, data, configurations).")
  var keep = false

  @Option(name: .customLong("convergence-timeout"), help: "Seconds to wait for convergence after healing.")
  var convergenceTimeout: Int = 120

  @Flag(
    name: .customLong("unsafe-ack-before-flush"),
    help: "TEST ONLY: nodes acknowledge `quorum` writes before any follower flushed them (loses writes).")
  var unsafeAckBeforeFlush = false

  func validate() throws {
    if let seconds, !(5...86_400).contains(seconds) {
      throw ValidationError("--seconds must be within 5...86400")
    }
    if let minutes, !(0.1...1_440).contains(minutes) {
      throw ValidationError("--minutes must be within 0.1...1440")
    }
    guard (1...64).contains(clients) else { throw ValidationError("--clients must be within 1...64") }
    guard (0...100_000).contains(rate) else { throw ValidationError("--rate must be within 0...100000") }
    guard (10...3_600).contains(convergenceTimeout) else {
      throw ValidationError("--convergence-timeout must be within 10...3600")
    }
    _ = try Self.parseFaults(faults)
  }

  static func parseFaults(_ text: String) throws -> [FaultKind] {
    switch text {
    case "all": return FaultKind.allCases
    case "none", "": return []
    default:
      return try text.split(separator: ",").map { name in
        guard let kind = FaultKind(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
          throw ValidationError(
            "unknown fault \(name); known: \(FaultKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return kind
      }
    }
  }

  var durationSeconds: Int { seconds ?? Int(((minutes ?? 3) * 60).rounded()) }

  func run() async throws {
    let seed = self.seed ?? UInt64.random(in: 1...UInt64(Int64.max))
    let kinds = try Self.parseFaults(faults)
    let rerun =
      "memwal chaos --seed \(seed) --seconds \(durationSeconds) --faults \(faults) --clients \(clients) --rate \(rate)"
      + (unsafeAckBeforeFlush ? " --unsafe-ack-before-flush" : "")
    let root = "\(dir)/memwal-chaos-\(seed)-\(getpid())"
    let began = ContinuousClock.now
    func log(_ line: String) {
      let elapsed = ContinuousClock.now - began
      warn(
        String(
          format: "[%7.1f s] ",
          Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18) + line)
    }
    log(
      "chaos seed \(seed): \(durationSeconds) s, faults \(kinds.map(\.rawValue).joined(separator: ",")), run directory \(root)"
    )

    var options = LocalProcessCluster.Options()
    options.name = "chaos"
    options.proxied = true
    options.checkpointEveryBytes = 1 << 20
    let unsafe = unsafeAckBeforeFlush
    let diskFaults = kinds.contains(.diskFull) || kinds.contains(.fsyncError)
    options.nodeYAML = { name in
      var testing: [String] = []
      if diskFaults { testing.append("  fault_file: \(Nemesis.faultFile(root, name))\n") }
      if unsafe { testing.append("  ack_quorum_before_flush: true\n") }
      return "search:\n  exact_below: 1000000\n" + (testing.isEmpty ? "" : "testing:\n" + testing.joined())
    }
    let cluster = try LocalProcessCluster(directory: root, options: options)
    // Interrupted (Ctrl-C, SIGTERM): no node or controller may outlive the harness.
    signal(SIGINT, SIG_IGN)
    signal(SIGTERM, SIG_IGN)
    let interrupts = [SIGINT, SIGTERM].map { (number: Int32) -> any DispatchSourceSignal in
      let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
      source.setEventHandler {
        cluster.killEverything()
        warn("chaos: interrupted; every process of the run killed; run directory \(root) kept")
        Glibc.exit(130)
      }
      source.resume()
      return source
    }
    defer { for source in interrupts { source.cancel() } }
    for name in cluster.names {
      try "none\n".write(toFile: Nemesis.faultFile(root, name), atomically: true, encoding: .utf8)
    }
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    var proxies: [LocalProcessCluster.Link: FaultProxy] = [:]
    var outcome: (findings: ChaosFindings, workload: ChaosWorkload, nemesis: Nemesis)?
    var harnessError: (any Error)?
    do {
      for link in cluster.links {
        proxies[link] = try await FaultProxy.start(
          listenPort: link.port, targetPort: link.targetPort,
          name: "\(link.from)->\(link.to)/\(link.kind.rawValue)",
          group: group)
      }
      try cluster.startAll()
      let startedAt = ContinuousClock.now
      let workload = ChaosWorkload(
        endpoints: cluster.apiURLs, clients: clients, operationsPerSecond: rate, seed: seed,
        startedAt: startedAt)
      try await workload.prepare(timeout: .seconds(60))
      log("cluster up; \(clients) clients writing at quorum")
      let nemesis = Nemesis(
        cluster: cluster, proxies: proxies, kinds: kinds, seed: seed, startedAt: startedAt, log: log)
      let writers = (0..<clients).map { index in Task { await workload.run(client: index) } }
      do {
        try await nemesis.run(until: startedAt + .seconds(durationSeconds))
      } catch {
        workload.stop()
        for writer in writers { await writer.value }
        throw error
      }
      workload.stop()
      for writer in writers { await writer.value }
      try await nemesis.healAll()
      log("faults healed; \(workload.count) operations; checking")
      // Every operation as the client saw it, for the investigation of a failed run.
      try workload.operations.map(\.json).joined(separator: "\n").appending("\n")
        .write(toFile: root + "/operations.jsonl", atomically: true, encoding: .utf8)
      var checker = ChaosChecker(cluster: cluster, operations: workload.operations, seed: seed, log: log)
      checker.supervise = { try? nemesis.supervise() }
      var findings = await checker.check(convergenceTimeout: .seconds(convergenceTimeout))
      findings.violations += nemesis.crashes.map { "process crashed: \($0)" }
      cluster.stopAll()
      ChaosChecker.checkLogs(
        &findings, directory: root, nodes: cluster.names, operations: workload.operations)
      outcome = (findings, workload, nemesis)
    } catch {
      harnessError = error
    }
    cluster.stopAll()
    for proxy in proxies.values { await proxy.close() }
    try? await group.shutdownGracefully()

    guard let outcome else {
      warn(
        "chaos: the harness failed: \(harnessError.map { "\($0)" } ?? "unknown"); run directory \(root) kept")
      emit("chaos seed=\(seed) result=harness-error rerun: \(rerun)")
      throw ExitCode(2)
    }
    let elapsed = ContinuousClock.now - began
    let report = ChaosReport(
      seed: seed, seconds: durationSeconds,
      wallSeconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18,
      kinds: kinds, unsafe: unsafeAckBeforeFlush, operations: outcome.workload.operations,
      events: outcome.nemesis.events, failStops: outcome.nemesis.failStops, findings: outcome.findings,
      rerun: rerun)
    if let reportPath {
      try report.json.write(toFile: reportPath, atomically: true, encoding: .utf8)
      log("report written to \(reportPath)")
    }
    for violation in outcome.findings.violations { log("VIOLATION: \(violation)") }
    for note in outcome.findings.notes { log("note: \(note)") }
    emit(report.summary)
    if !outcome.findings.violations.isEmpty {
      emit("rerun: \(rerun)")
      warn("run directory kept: \(root)")
      throw ExitCode(1)
    }
    if !keep { try? FileManager.default.removeItem(atPath: root) }
  }
}

/// The run's outcome: the summary line and the JSON report.
struct ChaosReport {
  var seed: UInt64
  var seconds: Int
  var wallSeconds: Double
  var kinds: [FaultKind]
  var unsafe: Bool
  var operations: [ChaosOperation]
  var events: [FaultEvent]
  var failStops: [String]
  var findings: ChaosFindings
  var rerun: String

  var acknowledged: Int { operations.filter(\.isAcknowledged).count }
  var failed: Int { operations.filter(\.isFailed).count }
  var indeterminate: Int { operations.count - acknowledged - failed }

  var summary: String {
    "chaos seed=\(seed) duration=\(seconds)s faults=\(events.count) operations=\(operations.count) "
      + "acknowledged=\(acknowledged) failed=\(failed) indeterminate=\(indeterminate) "
      + "lost=\(findings.lostOperations) divergent=\(findings.divergent.count + (findings.digestMismatch ? 1 : 0)) "
      + "result=\(findings.violations.isEmpty ? "ok" : "FAILED")"
  }

  var json: String {
    func string(_ text: String) -> String { jsonString(text) }
    func strings(_ list: [String]) -> String { "[" + list.map(string).joined(separator: ",") + "]" }
    var byKind: [String: Int] = [:]
    for event in events { byKind[event.kind.rawValue, default: 0] += 1 }
    var operationKinds: [String: [String: Int]] = [:]
    for operation in operations {
      let outcome =
        operation.isAcknowledged ? "acknowledged" : operation.isFailed ? "failed" : "indeterminate"
      operationKinds[operation.kind.rawValue, default: [:]][outcome, default: 0] += 1
    }
    let eventsJSON = events.map { event in
      String(
        format: "{\"at_seconds\":%.3f,\"kind\":%@,\"target\":%@,\"seconds\":%.3f,\"note\":%@}", event.at,
        string(event.kind.rawValue), string(event.target), event.seconds, string(event.note))
    }
    let epochs = findings.epochLeaders.keys.sorted().map { epoch in
      "\(string(String(epoch))):\(strings(findings.epochLeaders[epoch]!.sorted()))"
    }
    let kindsJSON = operationKinds.keys.sorted().map { kind in
      "\(string(kind)):{"
        + operationKinds[kind]!.keys.sorted().map { "\(string($0)):\(operationKinds[kind]![$0]!)" }.joined(
          separator: ",") + "}"
    }
    let fields = [
      "\"seed\":\(seed)", "\"duration_seconds\":\(seconds)",
      String(format: "\"wall_seconds\":%.1f", wallSeconds),
      "\"fault_kinds\":\(strings(kinds.map(\.rawValue)))", "\"unsafe_ack_before_flush\":\(unsafe)",
      "\"faults\":\(events.count)",
      "\"faults_by_kind\":{"
        + byKind.keys.sorted().map { "\(string($0)):\(byKind[$0]!)" }.joined(separator: ",") + "}",
      "\"operations\":\(operations.count)", "\"acknowledged\":\(acknowledged)", "\"failed\":\(failed)",
      "\"indeterminate\":\(indeterminate)", "\"indeterminate_present\":\(findings.indeterminatePresent)",
      "\"indeterminate_absent\":\(findings.indeterminateAbsent)",
      "\"operations_by_kind\":{" + kindsJSON.joined(separator: ",") + "}",
      "\"lost\":\(findings.lostOperations)", "\"lost_examples\":\(strings(Array(findings.lost.prefix(50))))",
      "\"failed_present\":\(strings(Array(findings.failedPresent.prefix(50))))",
      "\"downgraded\":\(strings(Array(findings.downgraded.prefix(50))))",
      "\"divergent\":\(strings(Array(findings.divergent.prefix(50))))",
      "\"converged\":\(findings.converged)", "\"converged_lsn\":\(findings.convergedLSN)",
      "\"final_primary\":\(findings.finalPrimary.map(string) ?? "null")",
      "\"digests\":{"
        + findings.digests.keys.sorted().map { "\(string($0)):\(string(findings.digests[$0]!))" }
        .joined(separator: ",") + "}",
      "\"epoch_leaders\":{" + epochs.joined(separator: ",") + "}",
      "\"log_positions_compared\":\(findings.recordsCompared)",
      "\"misplaced_acknowledgements\":\(findings.misplacedAcknowledgements)",
      "\"searches_checked\":\(findings.searchesChecked)",
      "\"fail_stops\":\(strings(failStops))",
      "\"violations\":\(strings(findings.violations))", "\"notes\":\(strings(findings.notes))",
      "\"events\":[" + eventsJSON.joined(separator: ",") + "]",
      "\"result\":\(string(findings.violations.isEmpty ? "ok" : "failed"))", "\"rerun\":\(string(rerun))",
    ]
    return "{" + fields.joined(separator: ",") + "}\n"
  }
}
