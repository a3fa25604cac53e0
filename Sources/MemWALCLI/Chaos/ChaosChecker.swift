import Foundation
import MemWALClient
import MemWALCore
import MemWALLog

/// What the checker found. Every list is a violation when not empty; `notes` are not.
struct ChaosFindings: Sendable {
  var converged = false
  var convergedLSN: UInt64 = 0
  var finalPrimary: String?
  /// Acknowledged operations missing on some node ("c0-12 on n2").
  var lost: [String] = []
  var lostOperations = 0
  /// Acknowledgements of `quorum` writes at a lower durability.
  var downgraded: [String] = []
  /// Failed operations found on some node.
  var failedPresent: [String] = []
  /// Indeterminate operations present on some nodes and absent on others.
  var divergent: [String] = []
  var indeterminatePresent = 0
  var indeterminateAbsent = 0
  /// Node → digest at `convergedLSN`.
  var digests: [String: String] = [:]
  var digestMismatch = false
  /// Epoch → leaders named by epoch-change records in any node's log or archive.
  var epochLeaders: [UInt64: Set<String>] = [:]
  /// Distinct (epoch, LSN) positions compared across every node's log and archive.
  var recordsCompared = 0
  /// Acknowledgements whose (epoch, LSN) was cut or holds another record.
  var misplacedAcknowledgements = 0
  var searchMismatches: [String] = []
  var searchesChecked = 0
  var graphMismatches: [String] = []
  var unreadable: [String] = []
  var violations: [String] = []
  var notes: [String] = []
}

/// Heals nothing itself: runs after the nemesis has healed every fault and the workload stopped,
/// waits for the cluster to converge, then checks it against what the clients were told.
struct ChaosChecker {
  let cluster: LocalProcessCluster
  let operations: [ChaosOperation]
  let seed: UInt64
  let log: (String) -> Void
  /// Reaps, classifies and restarts processes that exit while the checker waits (the nemesis's).
  var supervise: () -> Void = {}

  /// Waits until a primary serves with its quorum, every node runs, and every node has applied the
  /// same LSN (the primary's durable LSN) twice in a row.
  func awaitConvergence(timeout: Duration) async -> (primary: String, lsn: UInt64)? {
    let deadline = ContinuousClock.now + timeout
    var previous: UInt64?
    while ContinuousClock.now < deadline {
      supervise()
      if let view = await cluster.controllerView(), let primary = view.primary,
        await cluster.isServing(primary),
        cluster.names.allSatisfy(cluster.isRunning)
      {
        var applied: [UInt64] = []
        for name in cluster.names {
          if let lsn = await cluster.appliedLSN(name) { applied.append(lsn) }
        }
        if applied.count == cluster.names.count, let first = applied.first,
          applied.allSatisfy({ $0 == first })
        {
          if previous == first { return (primary, first) }
          previous = first
        } else {
          previous = nil
        }
      }
      try? await Task.sleep(for: .milliseconds(250))
    }
    return nil
  }

  func check(convergenceTimeout: Duration) async -> ChaosFindings {
    var findings = ChaosFindings()
    // Every write asks for `quorum`; a cluster answering less has downgraded it silently (G2). This
    // needs only what the clients were told, so it runs even if the cluster never converges.
    for operation in operations {
      if case .acknowledged(let lsn, let epoch, let durability, _) = operation.outcome,
        durability != "quorum" && durability != "all_applied"
      {
        findings.downgraded.append("\(operation.id) answered \(durability) at LSN \(lsn) in epoch \(epoch)")
      }
    }
    if !findings.downgraded.isEmpty {
      findings.violations.append(
        "\(findings.downgraded.count) quorum writes answered at a lower durability (\(findings.downgraded.prefix(3).joined(separator: ", ")))"
      )
    }
    guard let converged = await awaitConvergence(timeout: convergenceTimeout) else {
      findings.violations.append(
        "the cluster did not converge within \(convergenceTimeout) after every fault was healed "
          + "(no serving primary with equal applied LSNs on every node)")
      return findings
    }
    findings.converged = true
    findings.finalPrimary = converged.primary
    findings.convergedLSN = converged.lsn
    log("converged: primary \(converged.primary), every node at LSN \(converged.lsn)")
    await checkDigests(&findings, lsn: converged.lsn)
    await checkRecords(&findings)
    await checkSearch(&findings, primary: converged.primary)
    if !findings.lost.isEmpty {
      findings.violations.append(
        "\(findings.lostOperations) acknowledged operations lost (\(findings.lost.prefix(5).joined(separator: ", "))…)"
      )
    }
    if !findings.failedPresent.isEmpty {
      findings.violations.append(
        "\(findings.failedPresent.count) failed operations present (\(findings.failedPresent.prefix(5).joined(separator: ", ")))"
      )
    }
    if !findings.divergent.isEmpty {
      findings.violations.append(
        "\(findings.divergent.count) indeterminate operations differ between nodes (\(findings.divergent.prefix(5).joined(separator: ", ")))"
      )
    }
    if !findings.unreadable.isEmpty {
      findings.violations.append(
        "\(findings.unreadable.count) reads failed during the check (\(findings.unreadable.prefix(3).joined(separator: "; ")))"
      )
    }
    if !findings.searchMismatches.isEmpty {
      findings.violations.append(
        "\(findings.searchMismatches.count) searches differ from the model (\(findings.searchMismatches.prefix(3).joined(separator: "; ")))"
      )
    }
    if !findings.graphMismatches.isEmpty {
      findings.violations.append(
        "\(findings.graphMismatches.count) graph reads differ from the model (\(findings.graphMismatches.prefix(3).joined(separator: "; ")))"
      )
    }
    return findings
  }

  /// Every node's state digest at the same LSN.
  func checkDigests(_ findings: inout ChaosFindings, lsn: UInt64) async {
    for name in cluster.names {
      let url = cluster.apiURL(name) + "/v1/digest?as_of_lsn=\(lsn)&min_lsn=\(lsn)"
      if let answer = try? await getJSON(url), case .object(let fields) = answer,
        case .string(let digest)? = fields["digest"]
      {
        findings.digests[name] = digest
      } else {
        findings.unreadable.append("digest of \(name) at LSN \(lsn)")
      }
    }
    if Set(findings.digests.values).count > 1 {
      findings.digestMismatch = true
      findings.violations.append(
        "state digests differ at LSN \(lsn): "
          + findings.digests.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.prefix(16))" }.joined(
            separator: ", "))
    }
  }

  /// Presence of every operation's record on every node.
  func checkRecords(_ findings: inout ChaosFindings) async {
    let records = operations.filter { $0.kind != .edge }
    let edges = operations.filter { $0.kind == .edge }
    var present: [String: [String: Bool]] = [:]  // node → operation id → present
    for name in cluster.names {
      let reader = MemWALClient(baseURL: cluster.apiURL(name), timeout: .seconds(10))
      var found: [String: Bool] = [:]
      var unreadable: [String] = []
      var graphMismatches: [String] = []
      for chunk in stride(from: 0, to: records.count, by: 32) {
        let slice = Array(records[chunk..<min(chunk + 32, records.count)])
        let answers = await withTaskGroup(of: (String, Bool?).self) { group in
          for operation in slice {
            group.addTask { (operation.id, await Self.exists(operation, reader: reader)) }
          }
          var answers: [(String, Bool?)] = []
          for await answer in group { answers.append(answer) }
          return answers
        }
        for (id, answer) in answers {
          if let answer { found[id] = answer } else { unreadable.append("\(id) on \(name)") }
        }
      }
      // Edges: the out-neighbours of every node an edge starts from.
      let sources = Set(edges.compactMap(\.from))
      for source in sources.sorted() {
        var attempt = 0
        while true {
          do {
            let neighbours = try await reader.neighbors(
              of: source, in: ChaosWorkload.namespace, consistency: .latest)
            let targets = Dictionary(
              neighbours.map { ($0.edge, $0.node) }, uniquingKeysWith: { first, _ in first })
            for edge in edges where edge.from == source {
              found[edge.id] = targets[edge.id] != nil
              if let target = targets[edge.id], target != edge.to {
                graphMismatches.append("edge \(edge.id) on \(name) leads to \(target), not \(edge.to ?? "?")")
              }
            }
            break
          } catch let error as MemWALClientError where error.status == 404 {
            for edge in edges where edge.from == source { found[edge.id] = false }
            break
          } catch {
            attempt += 1
            if attempt >= 3 {
              unreadable.append("neighbours of \(source) on \(name): \(error)")
              break
            }
          }
        }
      }
      findings.unreadable += unreadable
      findings.graphMismatches += graphMismatches
      present[name] = found
    }
    var lostIDs: Set<String> = []
    for operation in operations where operation.kind == .invalidMemory {
      // These writes are invalid: acknowledging one, or finding it anywhere, is a bug.
      if operation.isAcknowledged || cluster.names.contains(where: { present[$0]?[operation.id] == true }) {
        findings.failedPresent.append("\(operation.id) (an invalid write) was acknowledged or stored")
      }
    }
    for operation in operations {
      let answers = cluster.names.compactMap { present[$0]?[operation.id] }
      guard answers.count == cluster.names.count else { continue }
      switch operation.outcome {
      case .acknowledged(let lsn, let epoch, _, let isRepeat):
        for name in cluster.names where present[name]?[operation.id] == false {
          findings.lost.append(
            "\(operation.id) on \(name) (acknowledged at LSN \(lsn) in epoch \(epoch)\(isRepeat ? " as a repeat" : ""))"
          )
          lostIDs.insert(operation.id)
        }
      case .failed:
        for name in cluster.names where present[name]?[operation.id] == true {
          findings.failedPresent.append("\(operation.id) on \(name)")
        }
      case .indeterminate:
        if Set(answers).count > 1 {
          findings.divergent.append(operation.id)
        } else if answers.first == true {
          findings.indeterminatePresent += 1
        } else {
          findings.indeterminateAbsent += 1
        }
      }
    }
    findings.lostOperations = lostIDs.count
  }

  /// Whether the record an operation wrote exists (nil: the node did not answer, three tries).
  static func exists(_ operation: ChaosOperation, reader: MemWALClient) async -> Bool? {
    for _ in 0..<3 {
      do {
        switch operation.kind {
        case .memory, .invalidMemory:
          return try await reader.memory(operation.id, in: ChaosWorkload.namespace, consistency: .latest)
            != nil
        case .node:
          return try await reader.node(operation.id, in: ChaosWorkload.namespace, consistency: .latest) != nil
        case .edge:
          return nil
        }
      } catch {
        try? await Task.sleep(for: .milliseconds(100))
      }
    }
    return nil
  }

  /// Vector searches on the final primary against the model: the memories that exist (acknowledged,
  /// plus indeterminate ones found on every node), their vectors derived from their ids, searched
  /// exactly (the nodes run with `search.exact_below` above the run's size).
  func checkSearch(_ findings: inout ChaosFindings, primary: String) async {
    let reader = MemWALClient(baseURL: cluster.apiURL(primary), timeout: .seconds(10))
    var model: [(id: String, vector: [Float])] = []
    for operation in operations where operation.kind == .memory {
      var exists = operation.isAcknowledged
      if case .indeterminate = operation.outcome {
        guard let found = await Self.exists(operation, reader: reader) else {
          findings.unreadable.append("\(operation.id) on \(primary) (for the search model)")
          continue
        }
        exists = found
      }
      if exists { model.append((operation.id, ChaosWorkload.vector(for: operation.id))) }
    }
    guard !model.isEmpty else { return }
    var generator = SplitMix64(seed: seed ^ 0x7365_6172_6368)
    for index in 0..<40 {
      let query: [Float]
      if index % 2 == 0 {
        query = model[Int(generator.next() % UInt64(model.count))].vector
      } else {
        query = (0..<ChaosWorkload.dimension).map { _ in Float(generator.nextUnitInterval() * 2 - 1) }
      }
      var distances: [(id: String, distance: Float)] = []
      distances.reserveCapacity(model.count)
      for entry in model {
        var sum: Float = 0
        for (a, b) in zip(entry.vector, query) { sum += (a - b) * (a - b) }
        distances.append((entry.id, sum))
      }
      distances.sort { $0.distance < $1.distance || ($0.distance == $1.distance && $0.id < $1.id) }
      let expected = Array(distances.prefix(10))
      do {
        let hits = try await reader.search(query, k: 10, in: ChaosWorkload.namespace, consistency: .latest)
        findings.searchesChecked += 1
        let expectedIDs = expected.map { $0.id }
        let gotIDs = hits.map(\.id)
        if gotIDs != expectedIDs {
          // Equal distances may come in either order; compare the distances, then the sets.
          let sameDistances = zip(hits.map { $0.distance }, expected.map { $0.distance }).allSatisfy {
            abs($0 - $1) <= 1e-4 * max(1, abs($1))
          }
          if !(sameDistances && hits.count == expected.count
            && Set(gotIDs).isSubset(of: Set(model.map { $0.id })))
          {
            findings.searchMismatches.append(
              "query \(index): got \(gotIDs.prefix(4)) expected \(expectedIDs.prefix(4))")
          }
        }
      } catch {
        findings.unreadable.append("search \(index) on \(primary): \(error)")
      }
    }
  }

  /// Every node's log and archived divergent tails, read after the processes stopped:
  /// - each epoch has one leader (its epoch-change records);
  /// - every copy of an (epoch, LSN) position is the same record (two writers in one epoch would
  ///   collide there even without a second epoch-change record);
  /// - every acknowledgement's (epoch, LSN) holds that operation's record where the logs still have
  ///   it, and was never cut as a divergent tail (an acknowledged record that was cut is lost, even
  ///   when another attempt of the same operation wrote its id again elsewhere).
  /// A log that cannot be read is a violation: the comparison would silently miss it.
  static func checkLogs(
    _ findings: inout ChaosFindings, directory: String, nodes: [String], operations: [ChaosOperation]
  ) {
    let fileSystem = POSIXFileSystem()
    var identities: [RecordPosition: (identity: String, source: String)] = [:]
    var recordIDs: [RecordPosition: Set<String>] = [:]
    var archived: Set<RecordPosition> = []
    var conflicts: [String] = []
    func scan(_ walDirectory: String, isArchive: Bool) {
      let scanner = LogScanner(walDirectory: walDirectory, fileSystem: fileSystem)
      // Gathered by the scan's visitor (called synchronously), merged once it returns.
      var found: [(UInt64, String)] = []
      var records: [(RecordPosition, String, Set<String>)] = []
      var failure: (any Error)?
      do {
        try scanner.scan { frame, _, _ in
          let record = frame.record
          var ids: Set<String> = []
          var identity = "txn \(record.transactionID) at \(record.timestampMicros)"
          switch record.payload {
          case .epochChange(let change):
            found.append((record.epoch.rawValue, change.leader))
            identity += " epoch-change \(change.leader)"
          case .transaction(let transaction):
            ids = Set(transaction.operations.map(\.id))
            identity +=
              " \(transaction.namespace) "
              + transaction.operations.map { "\($0.kind) \($0.id) \($0.after?.count ?? -1)" }.joined(
                separator: ",")
          case .quorumChange(let change):
            identity += " quorum-change \(change.quorumFollowers)"
          }
          records.append(
            (RecordPosition(epoch: record.epoch.rawValue, lsn: record.lsn.rawValue), identity, ids))
          return true
        }
      } catch {
        failure = error
      }
      // What was read before an error still counts.
      for (epoch, leader) in found { findings.epochLeaders[epoch, default: []].insert(leader) }
      for (position, identity, ids) in records {
        if let seen = identities[position], seen.identity != identity {
          conflicts.append(
            "epoch \(position.epoch) LSN \(position.lsn): \(seen.identity) in \(seen.source), \(identity) in \(walDirectory)"
          )
        } else {
          identities[position] = (identity, walDirectory)
        }
        if isArchive { archived.insert(position) } else { recordIDs[position] = ids }
      }
      if let failure { findings.violations.append("could not read the log in \(walDirectory): \(failure)") }
    }
    for node in nodes {
      let data = "\(directory)/\(node)"
      scan(LogLayout.resolve(data, fileSystem: fileSystem).walDirectory, isArchive: false)
      // Archived divergent tails are segment files; scan each on its own through a link in a
      // scratch directory under the name a segment has.
      let archive = data + "/archive"
      let entries = (try? FileManager.default.contentsOfDirectory(atPath: archive)) ?? []
      for entry in entries.sorted() where entry.hasPrefix("diverged-") && entry.hasSuffix(".wal") {
        // `diverged-<epoch>-<lsn>.wal`, or `….<n>.wal` for another tail with the same start.
        let parts = (entry.split(separator: "-").last.map(String.init) ?? "").split(separator: ".")
        let segmentName = (parts.first.map(String.init) ?? "") + ".wal"
        guard parts.count <= 3, LogFileNames.segmentLSN(segmentName) != nil else {
          findings.violations.append("an archive in \(archive) has a name no truncation makes: \(entry)")
          continue
        }
        let scratch = "\(directory)/epoch-scan-\(node)-\(entry)"
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        try? FileManager.default.createSymbolicLink(
          atPath: scratch + "/" + segmentName, withDestinationPath: archive + "/" + entry)
        scan(scratch, isArchive: true)
        try? FileManager.default.removeItem(atPath: scratch)
      }
    }
    for (epoch, leaders) in findings.epochLeaders where leaders.count > 1 {
      findings.violations.append("epoch \(epoch) has \(leaders.count) leaders: \(leaders.sorted())")
    }
    findings.recordsCompared = identities.count
    if !conflicts.isEmpty {
      findings.violations.append(
        "\(conflicts.count) log positions hold different records on different nodes (two writers in one epoch): "
          + conflicts.prefix(3).joined(separator: "; "))
    }
    var misplaced: [String] = []
    for operation in operations {
      guard case .acknowledged(let lsn, let epoch, _, _) = operation.outcome else { continue }
      let position = RecordPosition(epoch: epoch, lsn: lsn)
      if archived.contains(position) {
        misplaced.append("\(operation.id) acknowledged at LSN \(lsn) in epoch \(epoch), a record later cut")
      } else if let ids = recordIDs[position], !ids.contains(operation.id) {
        misplaced.append(
          "\(operation.id) acknowledged at LSN \(lsn) in epoch \(epoch), which holds \(ids.sorted())")
      }
    }
    findings.misplacedAcknowledgements = misplaced.count
    if !misplaced.isEmpty {
      findings.violations.append(
        "\(misplaced.count) acknowledgements name a log position that does not hold the write (\(misplaced.prefix(3).joined(separator: "; ")))"
      )
    }
  }
}

/// A record's place in the history: its epoch and LSN.
struct RecordPosition: Hashable {
  var epoch: UInt64
  var lsn: UInt64
}
