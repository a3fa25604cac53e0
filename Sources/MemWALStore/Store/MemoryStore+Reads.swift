import MemWALCore

/// A memory as a read returns it, with the version that made it.
public struct StoredMemory: Sendable, Equatable {
  public var record: MemoryRecord
  public var version: LSN
  public var timestampMicros: Int64

  public init(record: MemoryRecord, version: LSN, timestampMicros: Int64) {
    self.record = record
    self.version = version
    self.timestampMicros = timestampMicros
  }
}

/// One search result.
public struct MemoryHit: Sendable, Equatable {
  public var id: String
  public var distance: Float
  public var memory: StoredMemory
}

/// How a search was answered (for metrics and tests).
public enum SearchPath: String, Sendable {
  case exact
  case hnsw
}

extension MemoryStore {
  // MARK: read points

  /// The read point for the newest applied state, expiry judged at `nowMicros`.
  public func latest(nowMicros: Int64) -> ReadPoint {
    ReadPoint(lsn: appliedLSN, timeMicros: nowMicros)
  }

  /// The read point as of `lsn` (expiry judged at that record's commit time).
  public func readPoint(asOf lsn: LSN) throws(StoreError) -> ReadPoint {
    try lock.withReadLock { () throws(StoreError) -> ReadPoint in
      guard lsn <= publishedLSN else { throw .notYetApplied(requested: lsn, applied: publishedLSN) }
      guard lsn >= historyFloor else { throw .historyNotRetained(requested: lsn, oldest: historyFloor) }
      return ReadPoint(lsn: lsn, timeMicros: commitTime(of: lsn) ?? 0)
    }
  }

  /// The read point as of wall-clock time `micros`: the last record committed at or before it.
  public func readPoint(asOfTime micros: Int64) throws(StoreError) -> ReadPoint {
    try lock.withReadLock { () throws(StoreError) -> ReadPoint in
      let retained = times[timesHead...].prefix { $0.lsn <= publishedLSN }
      guard let first = retained.first else { return ReadPoint(lsn: publishedLSN, timeMicros: micros) }
      guard micros >= first.micros || historyFloor == .zero else {
        throw .historyNotRetained(requested: first.lsn, oldest: historyFloor)
      }
      // Binary search for the last time ≤ micros.
      var low = retained.startIndex
      var high = retained.endIndex
      while low < high {
        let middle = (low + high) / 2
        if times[middle].micros <= micros { low = middle + 1 } else { high = middle }
      }
      let lsn = low == retained.startIndex ? historyFloor : times[low - 1].lsn
      return ReadPoint(lsn: lsn, timeMicros: micros)
    }
  }

  func commitTime(of lsn: LSN) -> Int64? {
    guard timesHead < times.count, lsn >= times[timesHead].lsn else { return nil }
    let index = timesHead + Int(lsn.rawValue - times[timesHead].lsn.rawValue)
    return index < times.count ? times[index].micros : nil
  }

  func namespace(_ name: String, at lsn: LSN) throws(StoreError) -> NamespaceState {
    guard let found = namespaces[name]?.last(where: { $0.isAlive(at: lsn) }) else {
      throw .unknownNamespace(name)
    }
    return found
  }

  // MARK: namespaces

  /// Namespaces alive at the point, by name.
  public func namespaceConfigs(at point: ReadPoint) -> [NamespaceConfig] {
    lock.withReadLock {
      namespaces.values.compactMap { $0.last(where: { $0.isAlive(at: point.lsn) })?.config }.sorted {
        $0.name < $1.name
      }
    }
  }

  public func namespaceConfig(_ name: String, at point: ReadPoint) throws(StoreError) -> NamespaceConfig {
    try lock.withReadLock { () throws(StoreError) -> NamespaceConfig in
      try namespace(name, at: point.lsn).config
    }
  }

  // MARK: memories

  static func isVisible(_ version: Version<MemoryRecord>, at point: ReadPoint) -> Bool {
    guard let memory = version.value, version.isVisible(at: point.lsn) else { return false }
    return memory.expiresAtMicros.map { $0 > point.timeMicros } ?? true
  }

  public func memory(_ id: String, in name: String, at point: ReadPoint) throws(StoreError) -> StoredMemory? {
    try lock.withReadLock { () throws(StoreError) -> StoredMemory? in
      let state = try namespace(name, at: point.lsn)
      guard let version = state.memories[id]?.version(at: point.lsn), Self.isVisible(version, at: point)
      else { return nil }
      return StoredMemory(
        record: version.value!, version: version.lsn, timestampMicros: version.timestampMicros)
    }
  }

  /// The `k` nearest memories to `query` visible at `point` and matching `filter`.
  public func search(
    _ query: [Float], k: Int, in name: String, filter: Filter? = nil, ef: Int? = nil, at point: ReadPoint
  ) throws(StoreError) -> (hits: [MemoryHit], path: SearchPath) {
    guard k >= 1, k <= options.maximumK else {
      throw .limitExceeded("k must be within 1...\(options.maximumK)")
    }
    if let ef, ef < 1 || ef > 100_000 { throw .limitExceeded("ef must be within 1...100000") }
    do { try filter?.validate() } catch { throw .invalid(error) }
    return try lock.withReadLock { () throws(StoreError) -> (hits: [MemoryHit], path: SearchPath) in
      let state = try namespace(name, at: point.lsn)
      guard query.count == state.config.dimension else {
        throw .invalid(
          .dimensionMismatch(namespace: name, expected: state.config.dimension, got: query.count))
      }
      if let index = query.firstIndex(where: { !$0.isFinite }) {
        throw .invalid(.invalid(field: "vector", reason: "component \(index) is not a finite number"))
      }
      if state.config.metric == .cosine && query.allSatisfy({ $0 == 0 }) {
        throw .invalid(
          .invalid(field: "vector", reason: "a zero vector has no direction under the cosine metric"))
      }
      let matches: (Version<MemoryRecord>) -> Bool = { version in
        Self.isVisible(version, at: point) && (filter?.matches(version.value!.metadata) ?? true)
      }
      if useExactSearch(state, k: k, filter: filter, at: point) {
        return (exactSearch(query, k: k, in: state, at: point, matches: matches), .exact)
      }
      let accept: (UInt64) -> Bool = { label in
        guard let entry = state.labels[label], let version = state.memories[entry.id]?.version(at: point.lsn)
        else { return false }
        return version.label == label && matches(version)
      }
      let hits = (try? state.index.search(query, k: k, ef: max(ef ?? 64, k), filter: accept)) ?? []
      if hits.count < k && filter != nil {
        // A filter the estimate thought broad turned out narrow: answer exactly rather than short.
        return (exactSearch(query, k: k, in: state, at: point, matches: matches), .exact)
      }
      return (hits.compactMap { hit in memoryHit(hit, in: state, at: point) }, .hnsw)
    }
  }

  private func memoryHit(_ hit: SearchHit, in state: NamespaceState, at point: ReadPoint) -> MemoryHit? {
    guard let entry = state.labels[hit.label], let version = state.memories[entry.id]?.version(at: point.lsn)
    else { return nil }
    return MemoryHit(
      id: entry.id, distance: hit.distance,
      memory: StoredMemory(
        record: version.value!, version: version.lsn, timestampMicros: version.timestampMicros))
  }

  /// Exact search for small namespaces, as-of reads far enough back that the index holds many
  /// versions, and filters that match few memories.
  private func useExactSearch(_ state: NamespaceState, k: Int, filter: Filter?, at point: ReadPoint) -> Bool {
    if state.liveMemories <= options.exactSearchThreshold { return true }
    guard let filter else { return false }
    var sampled = 0
    var matched = 0
    for chain in state.memories.values.prefix(256) {
      guard let version = chain.version(at: point.lsn), let memory = version.value else { continue }
      sampled += 1
      if filter.matches(memory.metadata) { matched += 1 }
    }
    guard sampled > 0 else { return true }
    let expected = Double(matched) / Double(sampled) * Double(state.liveMemories)
    return expected < Double(k * 20) || matched * 50 < sampled
  }

  private func exactSearch(
    _ query: [Float], k: Int, in state: NamespaceState, at point: ReadPoint,
    matches: (Version<MemoryRecord>) -> Bool
  ) -> [MemoryHit] {
    var candidates: [(label: UInt64, vector: [Float])] = []
    var byLabel: [UInt64: (String, Version<MemoryRecord>)] = [:]
    for (id, chain) in state.memories {
      guard let visible = chain.version(at: point.lsn), matches(visible) else { continue }
      candidates.append((visible.label, visible.value!.vector))
      byLabel[visible.label] = (id, visible)
    }
    return ExactSearch.search(query: query, k: k, metric: state.config.metric, candidates: candidates)
      .compactMap { hit in
        guard let (id, version) = byLabel[hit.label] else { return nil }
        return MemoryHit(
          id: id, distance: hit.distance,
          memory: StoredMemory(
            record: version.value!, version: version.lsn, timestampMicros: version.timestampMicros))
      }
  }

  /// A memory's audit trail: every retained version with the value before and after it.
  public func memoryHistory(_ id: String, in name: String) throws(StoreError) -> [HistoryEntry<MemoryRecord>]
  {
    try lock.withReadLock { () throws(StoreError) -> [HistoryEntry<MemoryRecord>] in
      guard let state = namespaces[name]?.last else { throw .unknownNamespace(name) }
      return state.memories[id]?.history ?? []
    }
  }
}
