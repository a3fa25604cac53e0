extension HNSWIndex {
  /// The `k` nearest live elements to `query` that pass `filter`, sorted by (distance, label).
  ///
  /// `ef` (k...100,000) is the candidate-list size: larger finds more of the true neighbours,
  /// more slowly. `filter` returning false keeps a label out of the results, not out of the walk;
  /// with a very selective filter the walk visits much of the graph and recall falls, which is
  /// when a caller should use `ExactSearch` instead.
  public func search(
    _ query: [Float], k: Int, ef: Int, filter: ((UInt64) -> Bool)? = nil
  ) throws(VectorIndexError) -> [SearchHit] {
    try VectorLimits.checkSearch(k: k, ef: ef)
    let probe = try prepared(query)
    structureLock.lockShared()
    defer { structureLock.unlock() }
    let graph = storage
    let entry = top.withLock { $0 }
    guard entry.node != Self.noNode else { return [] }
    let scratch = scratchPool.acquire(nodes: graph.capacity)
    defer { scratchPool.release(scratch) }
    return probe.withUnsafeBufferPointer { buffer in
      let query = buffer.baseAddress!
      var nearest = Candidate(distance: distance(query, entry.node, graph), node: entry.node)
      for layer in stride(from: entry.level, to: 0, by: -1) {
        nearest = greedyClosest(query, from: nearest, layer: layer, graph, scratch)
      }
      // hnswlib's `has_deletions`: without tombstones or a filter every node is admitted and the
      // per-node check (a likely cache miss) is skipped.
      let hasTombstones = tombstoneCounter.load(ordering: .relaxed) > 0
      if let filter {
        searchLayer(query, from: nearest, ef: ef, layer: 0, graph, scratch) { node in
          !(hasTombstones && graph.states.isDeleted(node)) && filter(graph.labels[Int(node)])
        }
      } else if hasTombstones {
        searchLayer(query, from: nearest, ef: ef, layer: 0, graph, scratch) { !graph.states.isDeleted($0) }
      } else {
        searchLayer(query, from: nearest, ef: ef, layer: 0, graph, scratch, admitsAll: true) { _ in true }
      }
      var hits = scratch.results.items.map {
        SearchHit(label: graph.labels[Int($0.node)], distance: $0.distance)
      }
      hits.sort(by: SearchHit.isOrderedBefore)
      if hits.count > k { hits.removeLast(hits.count - k) }
      return hits
    }
  }

  /// Copies `node`'s list on `layer` into `buffer` under the node's lock; returns its length.
  @inline(__always)
  @_optimize(speed)
  func copyLinks(
    _ node: UInt32, layer: Int, _ graph: GraphStorage, into buffer: UnsafeMutablePointer<UInt32>
  ) -> Int {
    graph.lock(node)
    let count = graph.count(node, layer: layer)
    buffer.update(from: graph.ids(node, layer: layer), count: count)
    graph.unlock(node)
    return count
  }

  /// Greedy descent on an upper layer: moves to a closer neighbour until none is closer.
  @_optimize(speed)
  func greedyClosest(
    _ query: UnsafePointer<Float>, from start: Candidate, layer: Int, _ graph: GraphStorage,
    _ scratch: SearchScratch
  ) -> Candidate {
    var best = start
    var moved = true
    while moved {
      moved = false
      let count = copyLinks(best.node, layer: layer, graph, into: scratch.neighbors)
      computeDistances(query, count: count, graph, scratch)
      for index in 0..<count {
        let node = scratch.neighbors[index]
        let distance = scratch.distances[index]
        if distance < best.distance {
          best = Candidate(distance: distance, node: node)
          moved = true
        }
      }
    }
    return best
  }

  /// Best-first search of one layer (hnswlib's `searchBaseLayer`): leaves in `scratch.results`
  /// (a max-heap) the `ef` closest nodes found that `accept` admits. Rejected nodes still guide
  /// the walk; while fewer than `ef` are admitted, the walk goes on.
  @_optimize(speed)
  func searchLayer(
    _ query: UnsafePointer<Float>, from entry: Candidate, ef: Int, layer: Int, _ graph: GraphStorage,
    _ scratch: SearchScratch, admitsAll: Bool = false, accept: (UInt32) -> Bool
  ) {
    let epoch = scratch.begin(nodes: graph.capacity)
    let stamps = scratch.stamps
    let neighbors = scratch.neighbors
    let distances = scratch.distances
    var candidates = scratch.candidates
    var results = scratch.results
    scratch.candidates = CandidateHeap()
    scratch.results = CandidateHeap()
    candidates.removeAll()
    results.removeAll()
    defer {
      scratch.candidates = candidates
      scratch.results = results
    }
    stamps[Int(entry.node)] = epoch
    var bound = Float.infinity
    if admitsAll || accept(entry.node) {
      results.push(entry)
      bound = entry.distance
    }
    candidates.push(Candidate(distance: -entry.distance, node: entry.node))
    while !candidates.isEmpty {
      let current = candidates.top
      if -current.distance > bound && results.count >= ef { break }
      candidates.pop()
      let count = unvisitedLinks(of: current.node, layer: layer, graph, scratch, epoch: epoch)
      computeDistances(query, count: count, graph, scratch)
      for index in 0..<count {
        let node = neighbors[index]
        let distance = distances[index]
        guard results.count < ef || distance < bound else { continue }
        candidates.push(Candidate(distance: -distance, node: node))
        if admitsAll || accept(node) {
          results.push(Candidate(distance: distance, node: node))
          if results.count > ef { results.pop() }
        }
        if !results.isEmpty { bound = results.top.distance }
      }
    }
  }

  /// Copies the not-yet-visited members of `node`'s list into `scratch.neighbors`, marking them
  /// visited; returns how many.
  @inline(__always) @_optimize(speed)
  func unvisitedLinks(
    of node: UInt32, layer: Int, _ graph: GraphStorage, _ scratch: SearchScratch, epoch: UInt16
  ) -> Int {
    let neighbors = scratch.neighbors
    let stamps = scratch.stamps
    let count = copyLinks(node, layer: layer, graph, into: neighbors)
    var kept = 0
    for index in 0..<count {
      let member = neighbors[index]
      guard Int(member) < graph.capacity, stamps[Int(member)] != epoch else { continue }
      stamps[Int(member)] = epoch
      neighbors[kept] = member
      kept &+= 1
    }
    return kept
  }

  /// Distances from `query` to the first `count` nodes of `scratch.neighbors`, into
  /// `scratch.distances`.
  @inline(__always) @_optimize(speed)
  func computeDistances(
    _ query: UnsafePointer<Float>, count: Int, _ graph: GraphStorage, _ scratch: SearchScratch
  ) {
    distances(from: query, to: scratch.neighbors, count: count, into: scratch.distances, graph)
  }

  /// Distances from `base` to `count` nodes, four at a time; a remainder of two or three is
  /// padded with repeats of its last node (a cached vector) rather than computed one by one.
  @_optimize(speed)
  func distances(
    from base: UnsafePointer<Float>, to nodes: UnsafePointer<UInt32>, count: Int,
    into distances: UnsafeMutablePointer<Float>, _ graph: GraphStorage
  ) {
    var index = 0
    while index < count {
      let left = count &- index
      if left == 1 {
        distances[index] = Distance.distance(metric, base, graph.vector(nodes[index]), count: dimension)
        return
      }
      let last = index &+ min(left, 4) &- 1
      let four = Distance.distances(
        metric, base, graph.vector(nodes[index]), graph.vector(nodes[min(index &+ 1, last)]),
        graph.vector(nodes[min(index &+ 2, last)]), graph.vector(nodes[last]), count: dimension)
      for lane in 0..<min(left, 4) { distances[index &+ lane] = four[lane] }
      index &+= 4
    }
  }
}
