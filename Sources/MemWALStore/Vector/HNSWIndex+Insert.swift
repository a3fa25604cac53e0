import Glibc
import Synchronization

extension HNSWIndex {
  /// A reserved slot for one insertion.
  struct Slot {
    var node: UInt32
    var level: Int
    var upperStart: Int
  }

  /// Adds `vector` under `label`. Throws, changing nothing, for a bad vector or a label that is
  /// already live (a deleted label may be inserted again).
  public func insert(_ vector: [Float], label: UInt64) throws(VectorIndexError) {
    let stored = try prepared(vector)
    try insertPrepared(stored, label: label)
  }

  /// Adds many vectors on `threads` threads (1...256; `activeProcessorCount()` uses every core).
  /// Every vector and label is checked before the first is added, so bad input changes nothing.
  public func insert(batch: [(label: UInt64, vector: [Float])], threads: Int) throws(VectorIndexError) {
    guard (1...VectorLimits.threadsMaximum).contains(threads) else {
      throw .limit("threads \(threads) is outside 1...\(VectorLimits.threadsMaximum)")
    }
    var vectors: [[Float]] = []
    vectors.reserveCapacity(batch.count)
    var seen = Set<UInt64>(minimumCapacity: batch.count)
    for item in batch {
      vectors.append(try prepared(item.vector))
      guard seen.insert(item.label).inserted else { throw .duplicateLabel(item.label) }
    }
    let nodes = try allocation.withLock { state throws(VectorIndexError) -> Int in
      for item in batch where state.labels[item.label] != nil || state.pending.contains(item.label) {
        throw .duplicateLabel(item.label)
      }
      guard state.nodes + batch.count <= VectorLimits.elementsMaximum else {
        throw .limit("an index holds at most \(VectorLimits.elementsMaximum) elements")
      }
      return state.nodes
    }
    let expectedUpper = (nodes + batch.count) / max(1, parameters.m - 1) * 3 / 2 + 64
    grow(minimumNodes: nodes + batch.count, minimumUpperBlocks: expectedUpper)
    let labels = batch.map(\.label)
    let items = vectors
    if threads == 1 || batch.count < 4 * threads {
      for (label, vector) in zip(labels, vectors) { try insertPrepared(vector, label: label) }
      return
    }
    let work = BatchWork()
    runOnThreads(threads) { _ in
      while true {
        let index = work.next.add(1, ordering: .relaxed).oldValue
        guard index < items.count else { return }
        do throws(VectorIndexError) {
          try self.insertPrepared(items[index], label: labels[index])
        } catch {
          work.firstError.withLock { $0 = $0 ?? error }
        }
      }
    }
    if let error = work.firstError.withLock({ $0 }) { throw error }
  }

  final class BatchWork: Sendable {
    let next = Atomic<Int>(0)
    let firstError = Mutex<VectorIndexError?>(nil)
  }

  /// Inserts a validated (and for cosine normalized) vector.
  func insertPrepared(_ stored: [Float], label: UInt64) throws(VectorIndexError) {
    precondition(stored.count == dimension)
    while true {
      structureLock.lockShared()
      let reserved: Slot?
      do throws(VectorIndexError) {
        reserved = try reserveSlot(label: label)
      } catch {
        structureLock.unlock()
        throw error
      }
      if let slot = reserved {
        link(slot, stored, label: label)
        // Published before the shared lock is released, so compaction never sees a node whose
        // label is still pending.
        allocation.withLock { state in
          state.pending.remove(label)
          state.labels[label] = slot.node
        }
        structureLock.unlock()
        return
      }
      structureLock.unlock()
      let (nodes, upperBlocks) = allocation.withLock { ($0.nodes, $0.upperBlocks + ($0.pendingLevel ?? 0)) }
      grow(minimumNodes: nodes + 1, minimumUpperBlocks: upperBlocks)
    }
  }

  /// Reserves a slot and the upper-layer blocks for `label`; nil when the buffers must grow first.
  /// The shared structure lock must be held.
  private func reserveSlot(label: UInt64) throws(VectorIndexError) -> Slot? {
    let capacity = storage.capacity
    let upperCapacity = storage.upperCapacity
    return try allocation.withLock { state throws(VectorIndexError) -> Slot? in
      guard state.labels[label] == nil, !state.pending.contains(label) else { throw .duplicateLabel(label) }
      guard state.nodes < VectorLimits.elementsMaximum else {
        throw .limit("an index holds at most \(VectorLimits.elementsMaximum) elements")
      }
      let level = state.pendingLevel ?? drawLevel(&state.random)
      guard state.nodes < capacity, state.upperBlocks + level <= upperCapacity else {
        state.pendingLevel = level
        return nil
      }
      state.pendingLevel = nil
      let slot = Slot(node: UInt32(state.nodes), level: level, upperStart: state.upperBlocks)
      state.nodes += 1
      state.upperBlocks += level
      state.pending.insert(label)
      storage.states.store(Int(slot.node), 0)
      return slot
    }
  }

  /// hnswlib's level: ⌊−ln(U) · mult⌋, mult = 1/ln(M), clamped to `levelMaximum`.
  func drawLevel(_ random: inout SplitMix64) -> Int {
    let level = -log(random.nextUnitInterval()) * levelMultiplier
    return min(Int(level), Self.levelMaximum)
  }

  /// Grows the buffers (exclusive lock) to hold at least the given nodes and upper blocks.
  func grow(minimumNodes: Int, minimumUpperBlocks: Int) {
    structureLock.withExclusive {
      let (used, upperUsed) = allocation.withLock { ($0.nodes, $0.upperBlocks) }
      var nodes = storage.capacity
      while nodes < minimumNodes { nodes = min(nodes * 2, VectorLimits.elementsMaximum) }
      var blocks = storage.upperCapacity
      while blocks < minimumUpperBlocks { blocks *= 2 }
      storage.grow(toNodes: nodes, upperBlocks: blocks, used: used, upperUsed: upperUsed)
    }
  }

  /// Writes the node's data, then links it layer by layer from its level down to 0.
  private func link(_ slot: Slot, _ stored: [Float], label: UInt64) {
    let graph = storage
    let node = slot.node
    stored.withUnsafeBufferPointer { graph.vector(node).update(from: $0.baseAddress!, count: dimension) }
    graph.labels[Int(node)] = label
    graph.levels[Int(node)] = UInt8(slot.level)
    graph.upperStart[Int(node)] = UInt32(slot.upperStart)
    graph.clearLists(node, level: slot.level)

    topInsertionLock.lock()
    let entry = top.withLock { $0 }
    let raisesTop = slot.level > entry.level
    if !raisesTop { topInsertionLock.unlock() }
    if entry.node != Self.noNode {
      let scratch = scratchPool.acquire(nodes: graph.capacity)
      let query = UnsafePointer(graph.vector(node))
      var nearest = Candidate(distance: distance(query, entry.node, graph), node: entry.node)
      for layer in stride(from: entry.level, to: slot.level, by: -1) {
        nearest = greedyClosest(query, from: nearest, layer: layer, graph, scratch)
      }
      // Neighbours are chosen top-down (each layer's search starts from the closest choice of the
      // layer above), then linked bottom-up: a search that reaches the new node on some layer
      // always finds its lists on the layers below complete.
      let hasTombstones = tombstoneCounter.load(ordering: .relaxed) > 0
      var plan: [[Candidate]] = []
      for layer in stride(from: min(slot.level, entry.level), through: 0, by: -1) {
        searchLayer(
          query, from: nearest, ef: parameters.efConstruction, layer: layer, graph, scratch
        ) { $0 != node && !(hasTombstones && graph.states.isDeleted($0)) }
        var found = scratch.results.items
        if found.isEmpty { found = [nearest] }
        found.sort { $0.distance < $1.distance }
        let chosen = selectNeighbors(found, limit: parameters.m, graph)
        plan.append(chosen)
        nearest = chosen.first ?? nearest
      }
      scratchPool.release(scratch)
      for (layer, chosen) in plan.reversed().enumerated() { connect(node, layer: layer, chosen, graph) }
    }
    if raisesTop {
      top.withLock { $0 = EntryPoint(node: node, level: slot.level) }
      topInsertionLock.unlock()
    }
  }

  /// Gives `node` its `chosen` neighbours on `layer` and adds it to each of theirs, pruning a full
  /// list with the neighbour heuristic.
  @_optimize(speed)
  private func connect(_ node: UInt32, layer: Int, _ chosen: [Candidate], _ graph: GraphStorage) {
    let list = graph.ids(node, layer: layer)
    graph.lock(node)
    for (index, candidate) in chosen.enumerated() { list[index] = candidate.node }
    graph.setCount(node, layer: layer, chosen.count)
    graph.unlock(node)

    let limit = graph.maxLinks(layer: layer)
    for neighbor in chosen where neighbor.node != node {
      let other = graph.ids(neighbor.node, layer: layer)
      graph.lock(neighbor.node)
      let count = graph.count(neighbor.node, layer: layer)
      if count < limit {
        other[count] = node
        graph.setCount(neighbor.node, layer: layer, count + 1)
      } else {
        var memberDistances = [Float](repeating: 0, count: count)
        memberDistances.withUnsafeMutableBufferPointer {
          distances(from: graph.vector(neighbor.node), to: other, count: count, into: $0.baseAddress!, graph)
        }
        var pool = [Candidate(distance: neighbor.distance, node: node)]
        pool.reserveCapacity(count + 1)
        for index in 0..<count {
          pool.append(Candidate(distance: memberDistances[index], node: other[index]))
        }
        pool.sort { $0.distance < $1.distance }
        let kept = selectNeighbors(pool, limit: limit, graph)
        for (index, candidate) in kept.enumerated() { other[index] = candidate.node }
        graph.setCount(neighbor.node, layer: layer, kept.count)
      }
      graph.unlock(neighbor.node)
    }
  }

  /// hnswlib's `getNeighborsByHeuristic2`: walking `sorted` from the closest, keeps a candidate
  /// only if it is closer to the base than to every candidate kept so far (diverse directions).
  @_optimize(speed)
  func selectNeighbors(_ sorted: [Candidate], limit: Int, _ graph: GraphStorage) -> [Candidate] {
    guard sorted.count > limit else { return sorted }
    var chosen: [Candidate] = []
    chosen.reserveCapacity(limit)
    var chosenNodes = [UInt32](repeating: 0, count: limit)
    var distances = [Float](repeating: 0, count: limit)
    for candidate in sorted {
      if chosen.count >= limit { break }
      // Distances from the candidate to everything kept, four at a time.
      chosenNodes.withUnsafeBufferPointer { nodes in
        distances.withUnsafeMutableBufferPointer { out in
          self.distances(
            from: graph.vector(candidate.node), to: nodes.baseAddress!, count: chosen.count,
            into: out.baseAddress!, graph)
        }
      }
      if !distances[0..<chosen.count].contains(where: { $0 < candidate.distance }) {
        chosenNodes[chosen.count] = candidate.node
        chosen.append(candidate)
      }
    }
    return chosen
  }

}
