import MemWALCore
import Synchronization

/// Reads an HNSW snapshot (format in `HNSWIndex+Snapshot.swift`), checking every length and
/// bound before using it.
struct SnapshotDecoder {
  let raw: UnsafeRawBufferPointer

  init(_ raw: UnsafeRawBufferPointer) { self.raw = raw }

  struct Header {
    var dimension: Int
    var metric: DistanceMetric
    var parameters: HNSWParameters
    var randomState: UInt64
    var nodes: Int
    var upperBlocks: Int
    var entry: UInt32
    var topLevel: Int
  }

  static func corrupt(_ field: String, at offset: Int, _ detail: String) -> VectorIndexError {
    .corruptSnapshot("\(field) at byte \(offset): \(detail)")
  }

  mutating func decode() throws(VectorIndexError) -> HNSWIndex {
    let header = try readHeader()
    let expected = HNSWIndex.snapshotSize(
      nodes: header.nodes, upperBlocks: header.upperBlocks, dimension: header.dimension,
      m: header.parameters.m)
    guard raw.count == expected else {
      throw .corruptSnapshot("length is \(raw.count) bytes, the header implies \(expected)")
    }
    let stored = raw.loadUnaligned(fromByteOffset: expected - 4, as: UInt32.self).littleEndian
    let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<expected - 4]))
    guard stored == computed else {
      throw Self.corrupt("checksum", at: expected - 4, "stored \(stored), computed \(computed)")
    }
    var graph = GraphStorage(
      dimension: header.dimension, maxLinks: header.parameters.m, capacity: max(1, header.nodes),
      upperCapacity: max(16, header.upperBlocks))
    do throws(VectorIndexError) {
      let allocation = try fill(&graph, header)
      return HNSWIndex(
        restoring: graph, metric: header.metric, parameters: header.parameters, allocation: allocation,
        entry: HNSWIndex.EntryPoint(node: header.entry, level: header.topLevel))
    } catch {
      graph.deallocate()
      throw error
    }
  }

  private func readHeader() throws(VectorIndexError) -> Header {
    guard raw.count >= HNSWIndex.snapshotHeaderSize + 4 else {
      throw .corruptSnapshot("\(raw.count) bytes is shorter than a header")
    }
    guard Array(raw[0..<8]) == HNSWIndex.snapshotMagic else {
      throw Self.corrupt("magic", at: 0, "not an HNSW snapshot")
    }
    func word(_ offset: Int) -> UInt32 {
      raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian
    }
    func long(_ offset: Int) -> UInt64 {
      raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self).littleEndian
    }
    guard word(8) == HNSWIndex.snapshotVersion else {
      throw Self.corrupt("format version", at: 8, "\(word(8)) is not \(HNSWIndex.snapshotVersion)")
    }
    let dimension = Int(word(12))
    guard VectorLimits.dimension.contains(dimension) else {
      throw Self.corrupt("dimension", at: 12, "\(dimension) is outside 1...4096")
    }
    let metrics: [DistanceMetric] = [.cosine, .dot, .l2]
    guard word(16) < 3 else { throw Self.corrupt("metric", at: 16, "unknown code \(word(16))") }
    let parameters = HNSWParameters(m: Int(word(20)), efConstruction: Int(word(24)), seed: long(28))
    do throws(VectorIndexError) { try parameters.validate() } catch {
      throw Self.corrupt("parameters", at: 20, error.description)
    }
    let nodes = Int(word(44))
    guard nodes <= VectorLimits.elementsMaximum else {
      throw Self.corrupt("node count", at: 44, "\(nodes) exceeds \(VectorLimits.elementsMaximum)")
    }
    let upperBlocks = Int(word(48))
    guard upperBlocks <= nodes * HNSWIndex.levelMaximum else {
      throw Self.corrupt("upper block count", at: 48, "\(upperBlocks) for \(nodes) nodes")
    }
    return Header(
      dimension: dimension, metric: metrics[Int(word(16))], parameters: parameters, randomState: long(36),
      nodes: nodes, upperBlocks: upperBlocks, entry: word(52), topLevel: Int(Int32(bitPattern: word(56))))
  }

  /// Copies the sections into `graph`, checking each; returns the allocation state.
  private func fill(_ graph: inout GraphStorage, _ header: Header) throws(VectorIndexError)
    -> HNSWIndex.Allocation
  {
    let nodes = header.nodes
    var offset = HNSWIndex.snapshotHeaderSize
    copy(into: graph.labels, count: nodes, at: &offset)
    let levelsOffset = offset
    copy(into: graph.levels, count: nodes, at: &offset)
    let flagsOffset = offset
    offset += nodes
    var blocks = 0
    var topLevel = -1
    for node in 0..<nodes {
      let level = Int(graph.levels[node])
      guard level <= HNSWIndex.levelMaximum else {
        throw Self.corrupt("level of node \(node)", at: levelsOffset + node, "\(level) exceeds 24")
      }
      graph.upperStart[node] = UInt32(blocks)
      blocks += level
      topLevel = max(topLevel, level)
    }
    guard blocks == header.upperBlocks else {
      throw Self.corrupt("upper block count", at: 48, "\(header.upperBlocks), levels sum to \(blocks)")
    }
    let allocation = try readFlags(graph, header, at: flagsOffset)
    let vectorsOffset = offset
    for node in 0..<nodes { copy(into: graph.vector(UInt32(node)), count: header.dimension, at: &offset) }
    for node in 0..<nodes {
      let vector = graph.vector(UInt32(node))
      if let bad = (0..<header.dimension).first(where: { !vector[$0].isFinite }) {
        throw Self.corrupt(
          "vector of node \(node)", at: vectorsOffset + (node * header.dimension + bad) * 4, "not finite")
      }
    }
    let layer0Offset = offset
    for node in 0..<UInt32(nodes) {
      let count = raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian
      guard count <= graph.maxLinks0 else {
        throw Self.corrupt("link count of node \(node) layer 0", at: offset, "\(count)")
      }
      graph.header(node).initialize(to: Atomic(count))
      offset += 4
      copy(into: graph.ids(node, layer: 0), count: graph.maxLinks0, at: &offset)
    }
    let upperOffset = offset
    copy(into: graph.upperPool, count: blocks * graph.upperStride, at: &offset)
    for node in 0..<nodes {
      try checkList(graph, node: node, layer: 0, offset: layer0Offset + node * graph.stride0 * 4, header)
      for layer in stride(from: 1, through: Int(graph.levels[node]), by: 1) {
        let block = Int(graph.upperStart[node]) + layer - 1
        try checkList(
          graph, node: node, layer: layer, offset: upperOffset + block * graph.upperStride * 4, header)
      }
    }
    let entryIsValid =
      nodes == 0
      ? header.entry == HNSWIndex.noNode && header.topLevel == -1
      : Int(header.entry) < nodes && header.topLevel == topLevel
        && Int(graph.levels[Int(header.entry)]) == topLevel
    guard entryIsValid else {
      throw Self.corrupt(
        "entry point", at: 52, "node \(header.entry) at level \(header.topLevel) of \(nodes) nodes")
    }
    return allocation
  }

  /// Tombstone flags into the node states, and the live label map (labels must be unique).
  private func readFlags(
    _ graph: GraphStorage, _ header: Header, at offset: Int
  ) throws(VectorIndexError) -> HNSWIndex.Allocation {
    var allocation = HNSWIndex.Allocation(random: SplitMix64(seed: 0))
    allocation.random.state = header.randomState
    allocation.nodes = header.nodes
    allocation.upperBlocks = header.upperBlocks
    allocation.labels.reserveCapacity(header.nodes)
    for node in 0..<header.nodes {
      let flag = raw[offset + node]
      guard flag <= 1 else { throw Self.corrupt("flags of node \(node)", at: offset + node, "\(flag)") }
      if flag == 1 {
        graph.states.store(node, NodeStates.deletedBit)
        allocation.tombstones += 1
      } else {
        let label = graph.labels[node]
        guard allocation.labels.updateValue(UInt32(node), forKey: label) == nil else {
          throw Self.corrupt(
            "label of node \(node)", at: HNSWIndex.snapshotHeaderSize + node * 8, "duplicate \(label)")
        }
      }
    }
    return allocation
  }

  /// A list's count must fit its layer, and each member must exist at that layer.
  private func checkList(
    _ graph: GraphStorage, node: Int, layer: Int, offset: Int, _ header: Header
  ) throws(VectorIndexError) {
    let list = graph.ids(UInt32(node), layer: layer)
    let count =
      layer == 0
      ? Int(graph.header(UInt32(node)).pointee.load(ordering: .relaxed)) : Int((list - 1).pointee)
    guard count <= graph.maxLinks(layer: layer) else {
      throw Self.corrupt("link count of node \(node) layer \(layer)", at: offset, "\(count)")
    }
    for index in 0..<count {
      let member = Int(list[index])
      guard member < header.nodes, Int(graph.levels[member]) >= layer else {
        throw Self.corrupt(
          "link \(index) of node \(node) layer \(layer)", at: offset + 4 + index * 4,
          "node \(member) does not exist on that layer")
      }
    }
  }

  /// Copies `count` little-endian values from `offset` (already bounds-checked by the length).
  private func copy<T>(into target: UnsafeMutablePointer<T>, count: Int, at offset: inout Int) {
    let bytes = count * MemoryLayout<T>.stride
    precondition(offset + bytes <= raw.count)
    UnsafeMutableRawPointer(target).copyMemory(from: raw.baseAddress! + offset, byteCount: bytes)
    offset += bytes
  }
}
