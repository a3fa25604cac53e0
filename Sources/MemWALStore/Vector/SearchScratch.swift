import Synchronization

/// A node and its distance to the query.
struct Candidate {
  var distance: Float
  var node: UInt32
}

/// A binary max-heap of candidates by distance (a min-heap is kept with negated distances, as
/// hnswlib does). Storage is kept between searches by `SearchScratch`.
struct CandidateHeap {
  var items: [Candidate]

  init(items: [Candidate] = []) { self.items = items }

  var count: Int { items.count }
  var isEmpty: Bool { items.isEmpty }
  var top: Candidate { items[0] }

  mutating func removeAll() { items.removeAll(keepingCapacity: true) }

  @_optimize(speed)
  mutating func push(_ candidate: Candidate) {
    items.append(candidate)
    var child = items.count - 1
    items.withUnsafeMutableBufferPointer { heap in
      while child > 0 {
        let parent = (child &- 1) >> 1
        guard heap[parent].distance < candidate.distance else { break }
        heap[child] = heap[parent]
        child = parent
      }
      heap[child] = candidate
    }
  }

  @discardableResult
  @_optimize(speed)
  mutating func pop() -> Candidate {
    let top = items[0]
    let last = items.removeLast()
    if items.isEmpty { return top }
    items.withUnsafeMutableBufferPointer { heap in
      let count = heap.count
      var parent = 0
      while true {
        let left = 2 &* parent &+ 1
        if left >= count { break }
        let right = left &+ 1
        let larger = right < count && heap[right].distance > heap[left].distance ? right : left
        guard heap[larger].distance > last.distance else { break }
        heap[parent] = heap[larger]
        parent = larger
      }
      heap[parent] = last
    }
    return top
  }
}

/// Per-search working memory, pooled so that no search allocates its visited set: an array of
/// epoch stamps (a node is visited when its stamp equals the current epoch), the two heaps, and a
/// buffer that receives a copy of one neighbour list.
final class SearchScratch: @unchecked Sendable {
  private(set) var stamps: UnsafeMutablePointer<UInt16>
  private(set) var stampCapacity: Int
  private(set) var epoch: UInt16 = 0
  let neighbors: UnsafeMutablePointer<UInt32>
  /// Distances to `neighbors`, filled by the batched kernels.
  let distances: UnsafeMutablePointer<Float>
  var candidates = CandidateHeap()
  var results = CandidateHeap()

  init(nodes: Int, listWords: Int) {
    stampCapacity = nodes
    stamps = .allocate(capacity: nodes)
    stamps.initialize(repeating: 0, count: nodes)
    neighbors = .allocate(capacity: listWords)
    distances = .allocate(capacity: listWords)
  }

  deinit {
    stamps.deallocate()
    neighbors.deallocate()
    distances.deallocate()
  }

  /// Starts a new search over `nodes` node ids; returns the epoch that marks "visited".
  func begin(nodes: Int) -> UInt16 {
    if nodes > stampCapacity {
      stamps.deallocate()
      stampCapacity = max(nodes, stampCapacity * 2)
      stamps = .allocate(capacity: stampCapacity)
      stamps.initialize(repeating: 0, count: stampCapacity)
      epoch = 0
    }
    epoch &+= 1
    if epoch == 0 {
      stamps.update(repeating: 0, count: stampCapacity)
      epoch = 1
    }
    return epoch
  }
}

/// A pool of scratch spaces, one per concurrent search or insert.
final class ScratchPool: Sendable {
  private let free = Mutex<[SearchScratch]>([])
  private let listWords: Int
  static let keptMaximum = 64

  init(listWords: Int) { self.listWords = listWords }

  func acquire(nodes: Int) -> SearchScratch {
    if let scratch = free.withLock({ $0.popLast() }) { return scratch }
    return SearchScratch(nodes: nodes, listWords: listWords)
  }

  func release(_ scratch: SearchScratch) {
    free.withLock { pool in
      if pool.count < Self.keptMaximum { pool.append(scratch) }
    }
  }

  func removeAll() { free.withLock { $0.removeAll() } }
}
