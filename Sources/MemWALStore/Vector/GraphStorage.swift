import Glibc
import Synchronization

/// The flat buffers of an HNSW graph. Internal ids are dense `UInt32`s, 0..<count.
///
/// Layer 0 is stored as hnswlib stores it, one fixed-size block per node holding its list and
/// its vector side by side: `[header, id × maxLinks0, float × dimension]`. Computing a node's
/// distance brings the start of its block into cache, so expanding it later usually finds its
/// list there. The header word is the list's count (bits 0–15) and the node's spin lock (bit 31),
/// which guards all of the node's lists; it is only touched atomically.
///
/// Upper layers live in a pool of blocks of `1 + maxLinks` words `[count, ids…]`; a node of level
/// L owns L consecutive blocks from `upperStart[node]` (its lists for layers 1...L). Labels,
/// levels and tombstone flags are separate arrays.
///
/// A struct of raw pointers: copying it copies no data. Resizing happens only under the index's
/// exclusive lock, so a copy taken under the shared lock stays valid while that lock is held.
struct GraphStorage {
  static let countMask: UInt32 = 0xFFFF
  static let lockedBit: UInt32 = 1 << 31

  let dimension: Int
  let maxLinks0: Int
  let maxLinks: Int
  /// Bytes of a layer-0 list (header and ids), where the vector starts in a block.
  let listBytes: Int
  let blockStride: Int
  private(set) var capacity: Int
  private(set) var upperCapacity: Int
  private(set) var blocks: UnsafeMutableRawPointer
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
    listBytes = 4 * (1 + 2 * maxLinks)
    blockStride = listBytes + 4 * dimension
    self.capacity = capacity
    self.upperCapacity = upperCapacity
    blocks = PageMemory.allocate(byteCount: capacity * blockStride)
    upperPool = .allocate(capacity: upperCapacity * (1 + maxLinks))
    upperStart = .allocate(capacity: capacity)
    labels = .allocate(capacity: capacity)
    levels = .allocate(capacity: capacity)
    states = NodeStates(capacity: capacity)
  }

  func deallocate() {
    PageMemory.deallocate(blocks, byteCount: capacity * blockStride)
    upperPool.deallocate()
    upperStart.deallocate()
    labels.deallocate()
    levels.deallocate()
    states.deallocate()
  }

  @inline(__always)
  func vector(_ node: UInt32) -> UnsafeMutablePointer<Float> {
    (blocks + (Int(node) &* blockStride &+ listBytes)).assumingMemoryBound(to: Float.self)
  }

  @inline(__always)
  func header(_ node: UInt32) -> UnsafeMutablePointer<Atomic<UInt32>> {
    (blocks + Int(node) &* blockStride).assumingMemoryBound(to: Atomic<UInt32>.self)
  }

  /// The ids of `node`'s list on `layer` (the node's level must be ≥ `layer`).
  @inline(__always)
  func ids(_ node: UInt32, layer: Int) -> UnsafeMutablePointer<UInt32> {
    if layer == 0 { return (blocks + (Int(node) &* blockStride &+ 4)).assumingMemoryBound(to: UInt32.self) }
    return upperPool + ((Int(upperStart[Int(node)]) &+ layer &- 1) &* upperStride &+ 1)
  }

  /// The length of `node`'s list on `layer`, clamped to the layer's limit.
  @inline(__always)
  func count(_ node: UInt32, layer: Int) -> Int {
    let raw =
      layer == 0
      ? header(node).pointee.load(ordering: .relaxed) & Self.countMask
      : upperPool[(Int(upperStart[Int(node)]) &+ layer &- 1) &* upperStride]
    return min(Int(raw), maxLinks(layer: layer))
  }

  /// Sets the length of `node`'s list on `layer`. `isLocked` says whether the caller holds the
  /// node's lock (which the header then keeps); false only under exclusive access.
  @inline(__always)
  func setCount(_ node: UInt32, layer: Int, _ count: Int, isLocked: Bool = true) {
    if layer == 0 {
      header(node).pointee.store(UInt32(count) | (isLocked ? Self.lockedBit : 0), ordering: .relaxed)
    } else {
      upperPool[(Int(upperStart[Int(node)]) &+ layer &- 1) &* upperStride] = UInt32(count)
    }
  }

  @inline(__always)
  func maxLinks(layer: Int) -> Int { layer == 0 ? maxLinks0 : maxLinks }

  /// Takes `node`'s lock, which guards all of its lists.
  @inline(__always)
  func lock(_ node: UInt32) {
    let word = header(node)
    var spins = 0
    while true {
      let current = word.pointee.load(ordering: .relaxed)
      if current & Self.lockedBit == 0 {
        let (exchanged, _) = word.pointee.compareExchange(
          expected: current, desired: current | Self.lockedBit, successOrdering: .acquiring,
          failureOrdering: .relaxed)
        if exchanged { return }
      }
      spins += 1
      if spins >= 64 {
        sched_yield()
        spins = 0
      }
    }
  }

  @inline(__always)
  func unlock(_ node: UInt32) {
    let previous = header(node).pointee.bitwiseAnd(~Self.lockedBit, ordering: .releasing).oldValue
    precondition(previous & Self.lockedBit != 0, "unlocking node \(node), which is not locked")
  }

  /// Empties all of a new node's lists (whole lists, so snapshots of equal graphs are equal bytes).
  func clearLists(_ node: UInt32, level: Int) {
    header(node).initialize(to: Atomic(0))
    ids(node, layer: 0).update(repeating: 0, count: maxLinks0)
    if level > 0 {
      upperPool.advanced(by: Int(upperStart[Int(node)]) * upperStride).update(
        repeating: 0, count: level * upperStride)
    }
  }

  /// Grows the node arrays to `newCapacity` and the upper pool to `newUpperCapacity` blocks,
  /// keeping `used` nodes and `upperUsed` blocks. Exclusive access required.
  mutating func grow(toNodes newCapacity: Int, upperBlocks newUpperCapacity: Int, used: Int, upperUsed: Int) {
    if newCapacity > capacity {
      let bigger = PageMemory.allocate(byteCount: newCapacity * blockStride)
      bigger.copyMemory(from: blocks, byteCount: used * blockStride)
      PageMemory.deallocate(blocks, byteCount: capacity * blockStride)
      blocks = bigger
      upperStart = Self.moved(upperStart, count: used, into: newCapacity)
      labels = Self.moved(labels, count: used, into: newCapacity)
      levels = Self.moved(levels, count: used, into: newCapacity)
      states.grow(to: newCapacity, used: used)
      capacity = newCapacity
    }
    if newUpperCapacity > upperCapacity {
      upperPool = Self.moved(upperPool, count: upperUsed * upperStride, into: newUpperCapacity * upperStride)
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
