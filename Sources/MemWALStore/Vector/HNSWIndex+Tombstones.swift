extension HNSWIndex {
  /// Drops every node deleted so far from the graph, in two phases:
  ///
  /// 1. Repair, under the shared lock (searches and inserts go on): every live node that links to
  ///    a tombstone gets a new list chosen by the neighbour heuristic from its live neighbours and
  ///    the live neighbours of its deleted ones (as FreshDiskANN consolidates deletes). Each list
  ///    is swapped under its node's lock, so a search sees the old list or the new one.
  /// 2. Compaction, under the exclusive lock (a pass over memory, no distance computations): the
  ///    tombstones' slots are squeezed out, ids renumbered, links to dropped nodes removed, and the
  ///    entry point moved to a surviving node of the highest level if it was dropped.
  ///
  /// Nodes deleted while this runs stay tombstones until the next call.
  public func removeTombstones() {
    // One cleanup at a time: a second one's tombstone map would be stale after the first compacts.
    cleanupLock.lock()
    defer { cleanupLock.unlock() }
    let doomed: [Bool] = structureLock.withShared {
      let nodes = allocation.withLock { $0.nodes }
      var doomed = [Bool](repeating: false, count: nodes)
      for node in 0..<nodes where storage.states.isDeleted(UInt32(node)) { doomed[node] = true }
      guard doomed.contains(true) else { return [] }
      repairLinks(around: doomed)
      return doomed
    }
    guard !doomed.isEmpty else { return }
    structureLock.withExclusive { compact(dropping: doomed) }
  }

  /// Phase 1: rewrites every live list that names a doomed node. Shared lock held.
  private func repairLinks(around doomed: [Bool]) {
    let graph = storage
    var list = [UInt32](repeating: 0, count: graph.maxLinks0 + 1)
    for node in 0..<doomed.count where !doomed[node] {
      let id = UInt32(node)
      for layer in 0...Int(graph.levels[node]) {
        // A concurrent insert may change the list between reading and writing it: retry then.
        for _ in 0..<8 {
          let count = list.withUnsafeMutableBufferPointer {
            copyLinks(id, layer: layer, graph, into: $0.baseAddress!)
          }
          let current = Array(list[0..<count])
          // Nodes inserted after `doomed` was sized have higher ids: they are live.
          guard current.contains(where: { Int($0) < doomed.count && doomed[Int($0)] }) else { break }
          let replacement = repairedList(of: id, layer: layer, current: current, doomed: doomed, graph)
          if swapList(of: id, layer: layer, expecting: current, with: replacement, graph) { break }
        }
      }
    }
  }

  /// The heuristic's choice from the live neighbours of `node` and of its doomed neighbours.
  private func repairedList(
    of node: UInt32, layer: Int, current: [UInt32], doomed: [Bool], _ graph: GraphStorage
  ) -> [UInt32] {
    var pool = Set<UInt32>()
    var buffer = [UInt32](repeating: 0, count: graph.maxLinks0 + 1)
    for member in current {
      if Int(member) >= doomed.count || !doomed[Int(member)] {
        pool.insert(member)
        continue
      }
      let count = buffer.withUnsafeMutableBufferPointer {
        copyLinks(member, layer: layer, graph, into: $0.baseAddress!)
      }
      for second in buffer[0..<count] where Int(second) < doomed.count && !doomed[Int(second)] {
        pool.insert(second)
      }
    }
    pool.remove(node)
    var candidates = pool.map { Candidate(distance: distance(between: node, $0, graph), node: $0) }
    candidates.sort { $0.distance < $1.distance || ($0.distance == $1.distance && $0.node < $1.node) }
    return selectNeighbors(candidates, limit: graph.maxLinks(layer: layer), graph).map(\.node)
  }

  /// Replaces the list if it still equals `expected`; false if it changed meanwhile.
  private func swapList(
    of node: UInt32, layer: Int, expecting expected: [UInt32], with replacement: [UInt32],
    _ graph: GraphStorage
  ) -> Bool {
    let list = graph.ids(node, layer: layer)
    graph.lock(node)
    defer { graph.unlock(node) }
    let count = graph.count(node, layer: layer)
    guard count == expected.count, (0..<count).allSatisfy({ list[$0] == expected[$0] }) else {
      return false
    }
    for (index, member) in replacement.enumerated() { list[index] = member }
    graph.setCount(node, layer: layer, replacement.count)
    return true
  }

  /// Phase 2: squeezes the doomed slots out. Exclusive lock held.
  private func compact(dropping doomed: [Bool]) {
    let graph = storage
    let nodes = allocation.withLock { $0.nodes }
    var renumbered = [UInt32](repeating: Self.noNode, count: nodes)
    var kept = 0
    var keptUpperBlocks = 0
    for node in 0..<nodes where !(node < doomed.count && doomed[node]) {
      renumbered[node] = UInt32(kept)
      kept += 1
      keptUpperBlocks += Int(graph.levels[node])
    }
    let pool = UnsafeMutablePointer<UInt32>.allocate(capacity: max(16, keptUpperBlocks) * graph.upperStride)
    var nextBlock = 0
    var live: [UInt64: UInt32] = [:]
    live.reserveCapacity(kept)
    var bestEntry = (node: Self.noNode, level: -1)
    for old in 0..<nodes {
      let new = renumbered[old]
      guard new != Self.noNode else { continue }
      let level = Int(graph.levels[old])
      // Upper lists first: they are read from the old pool (through `upperStart[old]`, which is
      // overwritten only after), into the new one.
      for layer in stride(from: 1, through: level, by: 1) {
        let target = pool + (nextBlock + layer - 1) * graph.upperStride
        target[0] = UInt32(
          renumber(
            graph.ids(UInt32(old), layer: layer), count: graph.count(UInt32(old), layer: layer),
            into: target + 1,
            renumbered))
      }
      graph.upperStart[Int(new)] = UInt32(nextBlock)
      nextBlock += level
      // Slots only move down (new ≤ old), so an old slot is read before anything overwrites it.
      if Int(new) != old {
        (graph.blocks + Int(new) * graph.blockStride).copyMemory(
          from: graph.blocks + old * graph.blockStride, byteCount: graph.blockStride)
        graph.labels[Int(new)] = graph.labels[old]
        graph.levels[Int(new)] = graph.levels[old]
        graph.states.store(Int(new), graph.states.load(old))
      }
      let list = graph.ids(new, layer: 0)
      let kept0 = renumber(list, count: graph.count(new, layer: 0), into: list, renumbered)
      graph.setCount(new, layer: 0, kept0, isLocked: false)
      if !graph.states.isDeleted(new) { live[graph.labels[Int(new)]] = new }
      if level > bestEntry.level { bestEntry = (new, level) }
    }
    for node in kept..<nodes { graph.states.store(node, 0) }
    storage.replaceUpperPool(pool, capacity: max(16, keptUpperBlocks))
    top.withLock { entry in
      if entry.node != Self.noNode, renumbered[Int(entry.node)] != Self.noNode {
        entry.node = renumbered[Int(entry.node)]
      } else {
        entry = EntryPoint(node: bestEntry.node, level: bestEntry.level)
      }
    }
    let dropped = nodes - kept
    allocation.withLock { state in
      state.nodes = kept
      state.upperBlocks = keptUpperBlocks
      state.tombstones -= dropped
      tombstoneCounter.subtract(dropped, ordering: .relaxed)
      precondition(state.labels.count == live.count, "compaction lost or invented a live label")
      state.labels = live
    }
  }

  /// Copies `count` ids, dropping those that did not survive and renumbering the rest; returns
  /// how many were written (`target` may equal `source`: writes never pass reads).
  private func renumber(
    _ source: UnsafeMutablePointer<UInt32>, count: Int, into target: UnsafeMutablePointer<UInt32>,
    _ renumbered: [UInt32]
  ) -> Int {
    var written = 0
    for index in 0..<count {
      let member = Int(source[index])
      guard member < renumbered.count, renumbered[member] != Self.noNode else { continue }
      target[written] = renumbered[member]
      written += 1
    }
    return written
  }
}
