/// Brute-force nearest neighbours: the exact answer, for small namespaces, for filters so
/// selective that a graph walk would miss matches, and as the yardstick for HNSW recall.
public enum ExactSearch {
  /// The `k` candidates closest to `query` under `metric`, sorted by (distance, label).
  ///
  /// Distances are those of `HNSWIndex.search` (cosine: 1 − cos, computed without requiring
  /// candidates to be normalized; dot: −dot; l2: squared L2). Candidates whose dimension differs
  /// from the query's, zero vectors under cosine, and non-finite distances are skipped. `k` is
  /// clamped to `VectorLimits.k`; k ≤ 0 gives no results.
  public static func search(
    query: [Float], k: Int, metric: DistanceMetric,
    candidates: some Sequence<(label: UInt64, vector: [Float])>
  ) -> [SearchHit] {
    let limit = min(k, VectorLimits.k.upperBound)
    guard limit > 0, !query.isEmpty else { return [] }
    var probe = query
    if metric == .cosine {
      guard let unit = Distance.normalized(query) else { return [] }
      probe = unit
    }
    var best = BoundedHits(capacity: limit)
    probe.withUnsafeBufferPointer { q in
      for candidate in candidates where candidate.vector.count == q.count {
        let distance = candidate.vector.withUnsafeBufferPointer { v -> Float in
          switch metric {
          case .l2: return Distance.squaredL2(q.baseAddress!, v.baseAddress!, count: q.count)
          case .dot: return -Distance.dot(q.baseAddress!, v.baseAddress!, count: q.count)
          case .cosine:
            let length = Distance.norm(v)
            guard length > 0 else { return .nan }
            let dot = Double(Distance.dot(q.baseAddress!, v.baseAddress!, count: q.count))
            return Float(1 - dot / length)
          }
        }
        if distance.isFinite { best.offer(SearchHit(label: candidate.label, distance: distance)) }
      }
    }
    return best.sorted()
  }
}

/// The `capacity` smallest hits seen so far, in a max-heap ordered by (distance, label).
struct BoundedHits {
  private(set) var heap: [SearchHit] = []
  let capacity: Int

  init(capacity: Int) {
    precondition(capacity > 0)
    self.capacity = capacity
    heap.reserveCapacity(min(capacity, 4096))
  }

  mutating func offer(_ hit: SearchHit) {
    if heap.count < capacity {
      heap.append(hit)
      siftUp(heap.count - 1)
    } else if SearchHit.isOrderedBefore(hit, heap[0]) {
      heap[0] = hit
      siftDown(0)
    }
  }

  func sorted() -> [SearchHit] { heap.sorted(by: SearchHit.isOrderedBefore) }

  private mutating func siftUp(_ start: Int) {
    var child = start
    while child > 0 {
      let parent = (child - 1) / 2
      guard SearchHit.isOrderedBefore(heap[parent], heap[child]) else { return }
      heap.swapAt(parent, child)
      child = parent
    }
  }

  private mutating func siftDown(_ start: Int) {
    var parent = start
    while true {
      var largest = parent
      let left = 2 * parent + 1
      let right = left + 1
      if left < heap.count && SearchHit.isOrderedBefore(heap[largest], heap[left]) { largest = left }
      if right < heap.count && SearchHit.isOrderedBefore(heap[largest], heap[right]) { largest = right }
      if largest == parent { return }
      heap.swapAt(parent, largest)
      parent = largest
    }
  }
}
