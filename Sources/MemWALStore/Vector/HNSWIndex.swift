import Glibc
import MemWALCore
import Synchronization

/// A hierarchical navigable small-world graph (Malkov & Yashunin 2016), after hnswlib: levels
/// drawn with mult = 1/ln(M), M links per node on upper layers and 2M on layer 0, neighbours
/// chosen by the diversity heuristic, tombstones for deletes.
///
/// Thread safety: inserts, searches and deletes run concurrently. Each takes a shared
/// readers–writer lock; growing the buffers, compaction, and snapshots take it exclusively.
/// A node's link lists are guarded by that node's spin lock (held only to copy or rewrite a
/// list), so a search sees each list either before or after a concurrent insert changed it.
/// A `filter` closure runs under the shared lock and must not call back into the index.
public final class HNSWIndex: @unchecked Sendable {
  public let dimension: Int
  public let metric: DistanceMetric
  public let parameters: HNSWParameters

  /// Levels above this are clamped (reached with probability M^-24).
  static let levelMaximum = 24
  static let noNode = UInt32.max

  /// Guards `storage`'s buffers: shared to read or link, exclusive to move them.
  let structureLock = ReadersWriterLock()
  /// Written only under the exclusive `structureLock`; copied to a local under the shared one.
  var storage: GraphStorage
  /// Allocation state: slots, labels, the level generator.
  let allocation: Mutex<Allocation>
  /// The entry point and the top level, read at the start of every search.
  let top: Mutex<EntryPoint>
  /// Held for a whole insertion by the thread whose new node raises the top level (hnswlib's
  /// `global` lock), so that two such insertions cannot race for the entry point.
  let topInsertionLock = PlainMutex()
  /// Serializes `removeTombstones` calls.
  let cleanupLock = PlainMutex()
  let scratchPool: ScratchPool
  /// Tombstones in the graph, readable without a lock (searches skip deletion checks at zero).
  let tombstoneCounter = Atomic<Int>(0)
  let levelMultiplier: Double

  struct EntryPoint {
    var node: UInt32 = HNSWIndex.noNode
    var level: Int = -1
  }

  struct Allocation {
    /// Slots in use, tombstones included.
    var nodes = 0
    /// Upper-layer blocks in use.
    var upperBlocks = 0
    /// Live labels (tombstones are not here) → node; a label appears when its insert returns.
    var labels: [UInt64: UInt32] = [:]
    /// Labels whose insertion is under way (reserved against duplicates, not yet visible).
    var pending: Set<UInt64> = []
    var tombstones = 0
    var random: SplitMix64
    /// A level drawn for an insertion that had to wait for the buffers to grow.
    var pendingLevel: Int?
  }

  /// An empty index. `capacity` is where the buffers start (they grow as needed).
  ///
  /// Preconditions: `dimension` within `VectorLimits.dimension` and `parameters.isValid`. Both
  /// come from a namespace's configuration, which its creator checks first with
  /// `parameters.validate()` (a typed error) before it reaches here.
  public init(
    dimension: Int, metric: DistanceMetric, parameters: HNSWParameters = .init(), capacity: Int = 1024
  ) {
    precondition(VectorLimits.dimension.contains(dimension), "dimension \(dimension) outside 1...4096")
    precondition((try? parameters.validate()) != nil, "HNSW parameters outside their limits")
    self.dimension = dimension
    self.metric = metric
    self.parameters = parameters
    let nodes = min(max(capacity, 1), VectorLimits.elementsMaximum)
    storage = GraphStorage(
      dimension: dimension, maxLinks: parameters.m, capacity: nodes,
      upperCapacity: max(16, nodes / max(1, parameters.m - 1) + 16))
    allocation = Mutex(Allocation(random: SplitMix64(seed: parameters.seed)))
    top = Mutex(EntryPoint())
    scratchPool = ScratchPool(listWords: 2 * parameters.m + 1)
    levelMultiplier = 1 / log(Double(parameters.m))
  }

  /// An index around restored buffers (see `deserialize`).
  init(
    restoring storage: GraphStorage, metric: DistanceMetric, parameters: HNSWParameters,
    allocation: Allocation, entry: EntryPoint
  ) {
    self.dimension = storage.dimension
    self.metric = metric
    self.parameters = parameters
    self.storage = storage
    self.allocation = Mutex(allocation)
    top = Mutex(entry)
    scratchPool = ScratchPool(listWords: 2 * parameters.m + 1)
    levelMultiplier = 1 / log(Double(parameters.m))
    tombstoneCounter.store(allocation.tombstones, ordering: .relaxed)
  }

  deinit { storage.deallocate() }

  /// Live (not deleted) elements.
  public var count: Int { allocation.withLock { $0.labels.count } }

  /// Deleted elements still in the graph, waiting for `removeTombstones`.
  public var tombstoneCount: Int { allocation.withLock { $0.tombstones } }

  /// Checks `vector` for this index: its dimension, finite components, and (cosine) a length.
  public func validate(_ vector: [Float]) throws(VectorIndexError) {
    guard vector.count == dimension else { throw .dimensionMismatch(expected: dimension, got: vector.count) }
    if let bad = vector.firstIndex(where: { !$0.isFinite }) { throw .nonFiniteComponent(index: bad) }
    if metric == .cosine {
      let length = vector.withUnsafeBufferPointer { Distance.norm($0) }
      guard length > 0 else { throw .zeroVector }
    }
  }

  /// `vector` validated and, for cosine, normalized: the form that is stored and compared.
  func prepared(_ vector: [Float]) throws(VectorIndexError) -> [Float] {
    try validate(vector)
    guard metric == .cosine else { return vector }
    guard let unit = Distance.normalized(vector) else { throw .zeroVector }
    return unit
  }

  public func contains(_ label: UInt64) -> Bool {
    allocation.withLock { $0.labels[label] } != nil
  }

  /// The vector stored under `label` (cosine: normalized); nil for unknown or deleted labels.
  public func vector(for label: UInt64) -> [Float]? {
    structureLock.withShared {
      guard let node = allocation.withLock({ $0.labels[label] }) else { return nil }
      return Array(UnsafeBufferPointer(start: storage.vector(node), count: dimension))
    }
  }

  /// Marks `label` deleted: it leaves search results at once, and its node keeps serving as a
  /// waypoint until `removeTombstones` drops it. The label may then be inserted again.
  public func markDeleted(_ label: UInt64) throws(VectorIndexError) {
    try structureLock.withShared { () throws(VectorIndexError) in
      try allocation.withLock { state throws(VectorIndexError) in
        guard let node = state.labels.removeValue(forKey: label) else { throw .unknownLabel(label) }
        let wasDeleted = storage.states.setDeleted(node, true)
        precondition(!wasDeleted, "a live label mapped to a tombstone")
        state.tombstones += 1
        tombstoneCounter.add(1, ordering: .relaxed)
      }
    }
  }

  @inline(__always)
  func distance(_ query: UnsafePointer<Float>, _ node: UInt32, _ graph: GraphStorage) -> Float {
    Distance.distance(metric, query, graph.vector(node), count: dimension)
  }

  @inline(__always)
  func distance(between a: UInt32, _ b: UInt32, _ graph: GraphStorage) -> Float {
    Distance.distance(metric, graph.vector(a), graph.vector(b), count: dimension)
  }
}
