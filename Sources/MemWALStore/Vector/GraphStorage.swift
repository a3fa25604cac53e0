/// The flat buffers of an HNSW graph. Internal ids are dense `UInt32`s, 0..<count.
///
/// - vectors: `capacity × dimension` floats, one row per node (cosine: normalized);
/// - layer 0: `capacity × (1 + maxLinks0)` words per node, `[count, id, id, …]`;
/// - upper layers: a pool of blocks of `1 + maxLinks` words; a node of level L owns L consecutive
///   blocks starting at `upperStart[node]` (its lists for layers 1...L);
/// - labels, levels and the per-node state words (lock and tombstone bits).
///
/// A struct of raw pointers: copying it copies no data. Resizing happens only under the index's
/// exclusive lock, so a copy taken under the shared lock stays valid while that lock is held.
struct GraphStorage {
  let dimension: Int
  let maxLinks0: Int
  let maxLinks: Int
  private(set) var capacity: Int
  private(set) var upperCapacity: Int
  private(set) var vectors: UnsafeMutablePointer<Float>
  private(set) var layer0: UnsafeMutablePointer<UInt32>
  private(set) var upperPool: UnsafeMutablePointer<UInt32>
  private(set) var upperStart: UnsafeMutablePointer<UInt32>
  private(set) var labels: UnsafeMutablePointer<UInt64>
  private(set) var levels: UnsafeMutablePointer<UInt8>
  private(set) var states: NodeStates

  var stride0: Int { 1 + maxLinks0 }
  var upperStride: Int { 1 + maxLinks }

  init(dimension: Int, maxLinks: Int, capacity: Int, upperCapacity: Int) {
    precondition(capacity >= 1 && upperCapacity >= 1)
    self.dimension = dimension
    self.maxLinks = maxLinks
    self.maxLinks0 = 2 * maxLinks
    self.capacity = capacity
    self.upperCapacity = upperCapacity
    vectors = .allocate(capacity: capacity * dimension)
    layer0 = .allocate(capacity: capacity * (1 + 2 * maxLinks))
    upperPool = .allocate(capacity: upperCapacity * (1 + maxLinks))
    upperStart = .allocate(capacity: capacity)
    labels = .allocate(capacity: capacity)
    levels = .allocate(capacity: capacity)
    states = NodeStates(capacity: capacity)
  }

  func deallocate() {
    vectors.deallocate()
    layer0.deallocate()
    upperPool.deallocate()
    upperStart.deallocate()
    labels.deallocate()
    levels.deallocate()
    states.deallocate()
  }

  @inline(__always)
  func vector(_ node: UInt32) -> UnsafeMutablePointer<Float> { vectors + Int(node) &* dimension }

  /// The list `[count, ids…]` of `node` on `layer`; the node's level must be ≥ `layer`.
  @inline(__always)
  func links(_ node: UInt32, layer: Int) -> UnsafeMutablePointer<UInt32> {
    if layer == 0 { return layer0 + Int(node) &* stride0 }
    return upperPool + (Int(upperStart[Int(node)]) &+ layer &- 1) &* upperStride
  }

  @inline(__always)
  func maxLinks(layer: Int) -> Int { layer == 0 ? maxLinks0 : maxLinks }

  /// Grows the node arrays to `newCapacity` and the upper pool to `newUpperCapacity` blocks,
  /// keeping `used` nodes and `upperUsed` blocks. Exclusive access required.
  mutating func grow(toNodes newCapacity: Int, upperBlocks newUpperCapacity: Int, used: Int, upperUsed: Int) {
    if newCapacity > capacity {
      vectors = Self.moved(vectors, count: used * dimension, into: newCapacity * dimension)
      layer0 = Self.moved(layer0, count: used * stride0, into: newCapacity * stride0)
      upperStart = Self.moved(upperStart, count: used, into: newCapacity)
      labels = Self.moved(labels, count: used, into: newCapacity)
      levels = Self.moved(levels, count: used, into: newCapacity)
      states.grow(to: newCapacity, used: used)
      capacity = newCapacity
    }
    if newUpperCapacity > upperCapacity {
      upperPool = Self.moved(
        upperPool, count: upperUsed * upperStride, into: newUpperCapacity * upperStride)
      upperCapacity = newUpperCapacity
    }
  }

  /// Replaces the upper pool (compaction builds a new one).
  mutating func replaceUpperPool(_ pool: UnsafeMutablePointer<UInt32>, capacity blocks: Int) {
    upperPool.deallocate()
    upperPool = pool
    upperCapacity = blocks
  }

  private static func moved<T>(
    _ old: UnsafeMutablePointer<T>, count: Int, into newCount: Int
  ) -> UnsafeMutablePointer<T> {
    let fresh = UnsafeMutablePointer<T>.allocate(capacity: newCount)
    fresh.initialize(from: old, count: count)
    old.deallocate()
    return fresh
  }
}
