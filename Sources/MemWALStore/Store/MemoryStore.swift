import Glibc
import MemWALCore
import Synchronization

/// The in-memory stores — vector index, graph, versions — built by applying WAL records in LSN
/// order (DESIGN §4). Apply is idempotent by LSN: a record at or below `appliedLSN` changes nothing.
/// Reads see the state as of an applied LSN and never block on the vector index's inserts.
public final class MemoryStore: @unchecked Sendable {
  public struct Options: Sendable {
    /// History kept for `as_of` reads and audit trails, in LSNs behind the applied one.
    public var retentionLSNs: UInt64 = 100_000
    /// History kept in time, if set (whichever of the two keeps less wins).
    public var retentionMicros: Int64?
    public var hnsw = HNSWParameters()
    /// Namespaces with at most this many live memories are searched exactly.
    public var exactSearchThreshold = 2_000
    /// Threads for vector inserts when applying a batch (default: every core).
    public var applyThreads = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    public var maximumTraversalDepth = 8
    public var maximumResults = 10_000
    public var maximumK = 1_000
    /// Idempotency keys remembered (the oldest are forgotten first).
    public var idempotencyKeys = 100_000
    public var limits = RecordLimits()

    public init() {}
  }

  /// What a transaction with an idempotency key produced, for answering a repeat.
  public struct IdempotentOutcome: Sendable, Equatable {
    public var lsn: LSN
    public var epoch: Epoch
    public var transactionID: TransactionID
    /// The digest of the request that used the key (nil for records logged before digests).
    public var requestDigest: [UInt8]?
  }

  public let options: Options
  let lock = ReadWriteLock()
  /// The LSN readers see: everything at or below it is fully applied, vector index included.
  public let applied: LSNWatermark

  // Guarded by `lock`.
  var namespaces: [String: [NamespaceState]] = [:]
  /// Applied in the bookkeeping sense (versions recorded); `applied` follows once vectors are in.
  var recordedLSN: LSN
  var publishedLSN: LSN
  var historyFloor: LSN
  /// (LSN, commit time) of every retained applied record, for `as_of` by time.
  var times: [(lsn: LSN, micros: Int64)] = []
  var timesHead = 0
  var idempotency: [String: IdempotentOutcome] = [:]
  var idempotencyOrder: [String] = []
  var idempotencyHead = 0
  var nextLabel: UInt64 = 1
  /// Versions that have ended, in end-LSN order, for pruning.
  var ended: [EndedVersion] = []
  var endedHead = 0

  struct EndedVersion {
    var endLSN: LSN
    var namespace: NamespaceState
    var target: TargetType
    var id: String
  }

  public init(options: Options = Options(), appliedLSN: LSN = .zero) {
    self.options = options
    self.recordedLSN = appliedLSN
    self.publishedLSN = appliedLSN
    self.historyFloor = appliedLSN
    self.applied = LSNWatermark(appliedLSN)
  }

  /// The LSN reads see by default.
  public var appliedLSN: LSN { lock.withReadLock { publishedLSN } }
  /// The oldest LSN `as_of` reads can ask for.
  public var oldestReadableLSN: LSN { lock.withReadLock { historyFloor } }

  // MARK: applying

  /// Applies records in LSN order. Records at or below the applied LSN are skipped; a gap is a bug
  /// in the caller and stops the process (the log hands out records densely).
  public func apply(_ records: [WALRecord]) {
    var inserts: [ObjectIdentifier: (NamespaceState, [(label: UInt64, vector: [Float])])] = [:]
    var last: LSN?
    lock.withWriteLock {
      for record in records where record.lsn > recordedLSN {
        precondition(record.lsn == recordedLSN.next, "apply gap: record \(record.lsn) after \(recordedLSN)")
        if case .transaction(let transaction) = record.payload {
          applyTransaction(transaction, of: record, inserts: &inserts)
        }
        recordedLSN = record.lsn
        times.append((record.lsn, record.timestampMicros))
        last = record.lsn
      }
    }
    guard let last else { return }
    // Vectors go in outside the store lock; searches keep running meanwhile and cannot see these
    // versions yet (they are above the published LSN).
    for (namespace, batch) in inserts.values where !batch.isEmpty {
      do {
        try namespace.index.insert(batch: batch, threads: options.applyThreads)
      } catch {
        preconditionFailure("vector insert of validated records failed: \(error)")
      }
    }
    lock.withWriteLock {
      publishedLSN = last
      pruneHistory()
    }
    applied.advance(to: last)
  }

  private func applyTransaction(
    _ transaction: WALTransaction, of record: WALRecord,
    inserts: inout [ObjectIdentifier: (NamespaceState, [(label: UInt64, vector: [Float])])]
  ) {
    if let key = transaction.idempotencyKey {
      remember(
        idempotencyKey(namespace: transaction.namespace, key: key),
        IdempotentOutcome(
          lsn: record.lsn, epoch: record.epoch, transactionID: record.transactionID,
          requestDigest: transaction.requestDigest))
    }
    for operation in transaction.operations {
      let value: RecordValue?
      if let image = operation.after {
        guard let decoded = try? RecordCodec.decode(image, as: operation.target) else {
          // The write path only logs images it encoded; a bad one is skipped the same way on every node.
          continue
        }
        value = decoded
      } else {
        value = nil
      }
      switch operation.target {
      case .namespace:
        applyNamespace(name: operation.id, value: value, lsn: record.lsn)
      case .memory, .node, .edge:
        guard let namespace = namespaces[transaction.namespace]?.last, namespace.deletedLSN == nil else {
          continue
        }
        let base = Version<Void>(
          value: nil, lsn: record.lsn, timestampMicros: record.timestampMicros,
          transactionID: record.transactionID)
        switch (operation.target, value) {
        case (.memory, .memory(let memory)?):
          // The write path checked it; a record that breaks the namespace's shape anyway (a damaged
          // or foreign log) is skipped, the same way on every node, rather than trap the index.
          guard memory.vector.count == namespace.config.dimension, memory.vector.allSatisfy(\.isFinite),
            namespace.config.metric != .cosine || memory.vector.contains(where: { $0 != 0 })
          else { continue }
          let label = nextLabel
          nextLabel += 1
          namespace.labels[label] = (memory.id, record.lsn)
          var entry = inserts[ObjectIdentifier(namespace)] ?? (namespace, [])
          entry.1.append((label, memory.vector))
          inserts[ObjectIdentifier(namespace)] = entry
          appendMemory(memory.id, memory, label: label, base: base, in: namespace)
        case (.memory, nil):
          appendMemory(operation.id, nil, label: 0, base: base, in: namespace)
        case (.node, .node(let node)?):
          append(node.id, node, base: base, to: \.nodes, target: .node, in: namespace)
        case (.node, nil):
          append(operation.id, nil as GraphNode?, base: base, to: \.nodes, target: .node, in: namespace)
        case (.edge, .edge(let edge)?):
          namespace.link(edge)
          append(edge.id, edge, base: base, to: \.edges, target: .edge, in: namespace)
        case (.edge, nil):
          append(operation.id, nil as GraphEdge?, base: base, to: \.edges, target: .edge, in: namespace)
        default:
          continue
        }
      }
    }
  }

  private func applyNamespace(name: String, value: RecordValue?, lsn: LSN) {
    if case .namespace(let config)? = value {
      guard namespaces[name]?.last.map({ $0.deletedLSN != nil }) ?? true else { return }
      namespaces[name, default: []].append(
        NamespaceState(config: config, createdLSN: lsn, parameters: options.hnsw))
    } else if let current = namespaces[name]?.last, current.deletedLSN == nil {
      current.deletedLSN = lsn
    }
  }

  private func appendMemory(
    _ id: String, _ memory: MemoryRecord?, label: UInt64, base: Version<Void>, in namespace: NamespaceState
  ) {
    var version = Version<MemoryRecord>(
      value: memory, lsn: base.lsn, timestampMicros: base.timestampMicros, transactionID: base.transactionID)
    version.label = label
    var chain = namespace.memories[id] ?? VersionChain()
    let wasLive = chain.latest?.value != nil
    if !chain.versions.isEmpty {
      ended.append(EndedVersion(endLSN: base.lsn, namespace: namespace, target: .memory, id: id))
    }
    chain.append(version)
    namespace.memories[id] = chain
    namespace.liveMemories += (memory != nil ? 1 : 0) - (wasLive ? 1 : 0)
    if memory == nil {
      ended.append(EndedVersion(endLSN: base.lsn, namespace: namespace, target: .memory, id: id))
    }
  }

  private func append<Value>(
    _ id: String, _ value: Value?, base: Version<Void>,
    to path: ReferenceWritableKeyPath<NamespaceState, [String: VersionChain<Value>]>,
    target: TargetType, in namespace: NamespaceState
  ) {
    let version = Version<Value>(
      value: value, lsn: base.lsn, timestampMicros: base.timestampMicros, transactionID: base.transactionID)
    var chain = namespace[keyPath: path][id] ?? VersionChain()
    if !chain.versions.isEmpty || value == nil {
      ended.append(EndedVersion(endLSN: base.lsn, namespace: namespace, target: target, id: id))
    }
    chain.append(version)
    namespace[keyPath: path][id] = chain
  }

  func idempotencyKey(namespace: String, key: String) -> String { namespace + "\u{0}" + key }

  private func remember(_ key: String, _ outcome: IdempotentOutcome) {
    if idempotency.updateValue(outcome, forKey: key) == nil { idempotencyOrder.append(key) }
    while idempotency.count > options.idempotencyKeys, idempotencyHead < idempotencyOrder.count {
      idempotency[idempotencyOrder[idempotencyHead]] = nil
      idempotencyHead += 1
    }
    if idempotencyHead > 4096 && idempotencyHead * 2 > idempotencyOrder.count {
      idempotencyOrder.removeFirst(idempotencyHead)
      idempotencyHead = 0
    }
  }

  /// The outcome of an applied transaction with this idempotency key, if still remembered.
  public func idempotentOutcome(namespace: String, key: String) -> IdempotentOutcome? {
    lock.withReadLock { idempotency[idempotencyKey(namespace: namespace, key: key)] }
  }

  // MARK: retention

  /// Drops history older than the retention window (write lock held).
  private func pruneHistory() {
    var floor = LSN(
      publishedLSN.rawValue > options.retentionLSNs ? publishedLSN.rawValue - options.retentionLSNs : 0)
    if let window = options.retentionMicros, let newest = times.last {
      let cutoff = newest.micros - window
      if let index = times[timesHead...].lastIndex(where: { $0.micros <= cutoff }) {
        floor = max(floor, times[index].lsn)
      }
    }
    guard floor > historyFloor else { return }
    historyFloor = floor
    while timesHead < times.count, times[timesHead].lsn < floor { timesHead += 1 }
    if timesHead > 4096 && timesHead * 2 > times.count {
      times.removeFirst(timesHead)
      timesHead = 0
    }
    while endedHead < ended.count, ended[endedHead].endLSN <= floor {
      let entry = ended[endedHead]
      endedHead += 1
      prune(entry, floor: floor)
    }
    if endedHead > 4096 && endedHead * 2 > ended.count {
      ended.removeFirst(endedHead)
      endedHead = 0
    }
    for (name, incarnations) in namespaces {
      let kept = incarnations.filter { ($0.deletedLSN.map { $0 > floor } ?? true) }
      if kept.count != incarnations.count { namespaces[name] = kept.isEmpty ? nil : kept }
    }
    for incarnations in namespaces.values {
      for namespace in incarnations
      where namespace.index.tombstoneCount > max(1_000, namespace.index.count / 5) {
        namespace.index.removeTombstones()
      }
    }
  }

  private func prune(_ entry: EndedVersion, floor: LSN) {
    let namespace = entry.namespace
    switch entry.target {
    case .memory:
      guard var chain = namespace.memories[entry.id] else { return }
      for version in chain.prune(endedAtOrBefore: floor) where version.label != 0 {
        namespace.labels[version.label] = nil
        try? namespace.index.markDeleted(version.label)
      }
      namespace.memories[entry.id] = chain.versions.isEmpty ? nil : chain
    case .node:
      guard var chain = namespace.nodes[entry.id] else { return }
      _ = chain.prune(endedAtOrBefore: floor)
      namespace.nodes[entry.id] = chain.versions.isEmpty ? nil : chain
    case .edge:
      guard var chain = namespace.edges[entry.id] else { return }
      let endpoints = chain.versions.compactMap(\.value).map { ($0.from, $0.to) }
      _ = chain.prune(endedAtOrBefore: floor)
      namespace.edges[entry.id] = chain.versions.isEmpty ? nil : chain
      for (from, to) in endpoints { namespace.unlinkIfGone(entry.id, from: from, to: to) }
    case .namespace:
      return
    }
  }
}
