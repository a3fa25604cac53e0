import MemWALCore

/// The HNSW snapshot: the graph exactly as it is in memory, so loading it rebuilds nothing.
///
/// All integers little-endian; floats IEEE-754 binary32, little-endian.
///
/// | bytes | field |
/// |---|---|
/// | 8 | magic `MWHNSW\0\u{1}` |
/// | 4 | format version (1) |
/// | 4 | dimension (1...4096) |
/// | 4 | metric: 0 cosine, 1 dot, 2 l2 |
/// | 4 | M (2...128) |
/// | 4 | efConstruction (1...100,000) |
/// | 8 | level-generator seed |
/// | 8 | level-generator state |
/// | 4 | N: nodes, tombstones included (≤ 2³⁰) |
/// | 4 | B: upper-layer blocks (= Σ levels) |
/// | 4 | entry node (0xFFFFFFFF when N = 0) |
/// | 4 | top level as Int32 (−1 when N = 0) |
/// | N × 8 | labels |
/// | N × 1 | levels (≤ 24) |
/// | N × 1 | flags: bit 0 = tombstone |
/// | N × dimension × 4 | vectors (cosine: normalized) |
/// | N × (1 + 2M) × 4 | layer-0 lists `[count, ids…]` |
/// | B × (1 + M) × 4 | upper lists, node by node, layers 1...level |
/// | 4 | CRC-32C of everything before it |
///
/// `deserialize` checks the length against the header before allocating, the checksum, and then
/// every field: a list's count against its limit, every id against N, that a neighbour on layer l
/// has a level ≥ l, finite vectors, unique live labels, and that the entry point holds the top
/// level. Any failure is `.corruptSnapshot` naming the field and its byte offset.
extension HNSWIndex {
  static let snapshotMagic: [UInt8] = Array("MWHNSW".utf8) + [0, 1]
  static let snapshotVersion: UInt32 = 1
  static let snapshotHeaderSize = 60

  /// The graph as it is (levels, links, vectors, labels, tombstones, entry point). Takes the
  /// exclusive lock, so inserts and searches wait while it copies.
  public func serialize() -> [UInt8] {
    structureLock.withExclusive {
      let state = allocation.withLock { $0 }
      let entry = top.withLock { $0 }
      let graph = storage
      let nodes = state.nodes
      let size = Self.snapshotSize(
        nodes: nodes, upperBlocks: state.upperBlocks, dimension: dimension, m: parameters.m)
      var writer = ByteWriter(capacity: size)
      writer.write(bytes: Self.snapshotMagic)
      writer.write(Self.snapshotVersion)
      writer.write(UInt32(dimension))
      writer.write(UInt32(Self.metricCode(metric)))
      writer.write(UInt32(parameters.m))
      writer.write(UInt32(parameters.efConstruction))
      writer.write(parameters.seed)
      writer.write(state.random.state)
      writer.write(UInt32(nodes))
      writer.write(UInt32(state.upperBlocks))
      writer.write(entry.node)
      writer.write(Int32(entry.level))
      precondition(writer.count == Self.snapshotHeaderSize)
      Self.append(&writer, graph.labels, count: nodes)
      Self.append(&writer, graph.levels, count: nodes)
      for node in 0..<nodes { writer.write(UInt8(graph.states.isDeleted(UInt32(node)) ? 1 : 0)) }
      for node in 0..<nodes { Self.append(&writer, graph.vector(UInt32(node)), count: dimension) }
      for node in 0..<UInt32(nodes) {
        writer.write(UInt32(graph.count(node, layer: 0)))
        Self.append(&writer, graph.ids(node, layer: 0), count: graph.maxLinks0)
      }
      for node in 0..<nodes where graph.levels[node] > 0 {
        Self.append(
          &writer, graph.ids(UInt32(node), layer: 1) - 1, count: Int(graph.levels[node]) * graph.upperStride)
      }
      writer.write(CRC32C.checksum(writer.bytes))
      precondition(writer.count == size, "snapshot size \(writer.count) != \(size)")
      return writer.bytes
    }
  }

  static func snapshotSize(nodes: Int, upperBlocks: Int, dimension: Int, m: Int) -> Int {
    snapshotHeaderSize + nodes * (8 + 1 + 1) + nodes * dimension * 4 + nodes * (1 + 2 * m) * 4
      + upperBlocks * (1 + m) * 4 + 4
  }

  static func metricCode(_ metric: DistanceMetric) -> Int {
    switch metric {
    case .cosine: return 0
    case .dot: return 1
    case .l2: return 2
    }
  }

  /// Appends `count` values in little-endian byte order.
  private static func append<T>(_ writer: inout ByteWriter, _ values: UnsafeMutablePointer<T>, count: Int) {
    #if _endian(little)
      writer.write(bytes: UnsafeRawBufferPointer(start: values, count: count * MemoryLayout<T>.stride))
    #else
      #error("snapshots assume a little-endian host")
    #endif
  }

  /// An index from `serialize`'s bytes, used as is (no rebuild). Corrupt or truncated input
  /// throws `.corruptSnapshot`; nothing in it can make this trap.
  public static func deserialize(_ bytes: [UInt8]) throws(VectorIndexError) -> HNSWIndex {
    let result = bytes.withUnsafeBytes { raw -> Result<HNSWIndex, VectorIndexError> in
      do throws(VectorIndexError) { return .success(try deserialize(raw)) } catch { return .failure(error) }
    }
    return try result.get()
  }

  /// The same from memory the caller owns (for example a memory-mapped snapshot file), which is
  /// only read during the call.
  public static func deserialize(_ raw: UnsafeRawBufferPointer) throws(VectorIndexError) -> HNSWIndex {
    var decoder = SnapshotDecoder(raw)
    return try decoder.decode()
  }
}
