import Glibc
import MemWALStore
import Testing

@Suite struct VectorIndexBehaviourTests {
  static let data = ClusteredData(count: 1_200, queries: 40, dimension: 16, seed: 11)

  @Test func filterKeepsExcludedLabelsOutOfResults() throws {
    let index = try makeIndex(Self.data, metric: .l2)
    let isEven: (UInt64) -> Bool = { $0 % 2 == 0 }
    for query in Self.data.queries {
      let hits = try index.search(query, k: 10, ef: 64, filter: isEven)
      #expect(hits.count == 10)
      #expect(hits.allSatisfy { isEven($0.label) })
      #expect(
        hits
          == hits.sorted { $0.distance < $1.distance || ($0.distance == $1.distance && $0.label < $1.label) })
    }
    let value = try recall(
      index, queries: Self.data.queries, candidates: Self.data.labelled, k: 10, ef: 64, filter: isEven)
    #expect(value >= 0.95, "filtered recall \(value)")
    // A filter that admits nothing returns nothing (the walk covers the graph, then stops).
    #expect(try index.search(Self.data.queries[0], k: 5, ef: 16, filter: { _ in false }).isEmpty)
  }

  @Test func tombstonesLeaveResultsAndCleanupKeepsRecall() throws {
    let index = try makeIndex(Self.data, metric: .cosine)
    let deleted = Set((0..<UInt64(Self.data.base.count)).filter { $0 % 3 == 0 })
    for label in deleted { try index.markDeleted(label) }
    #expect(index.count == Self.data.base.count - deleted.count)
    #expect(index.tombstoneCount == deleted.count)
    #expect(!index.contains(3) && index.contains(4))
    #expect(index.vector(for: 3) == nil)
    #expect(throws: VectorIndexError.unknownLabel(3)) { try index.markDeleted(3) }
    let survivors = Self.data.labelled.filter { !deleted.contains($0.label) }
    for query in Self.data.queries {
      #expect(try index.search(query, k: 10, ef: 64).allSatisfy { !deleted.contains($0.label) })
    }
    let before = try recall(index, queries: Self.data.queries, candidates: survivors, k: 10, ef: 64)
    index.removeTombstones()
    #expect(index.tombstoneCount == 0)
    #expect(index.count == survivors.count)
    let after = try recall(index, queries: Self.data.queries, candidates: survivors, k: 10, ef: 64)
    #expect(after >= 0.95, "recall after removeTombstones \(after) (before \(before))")
    for query in Self.data.queries {
      #expect(try index.search(query, k: 10, ef: 64).allSatisfy { !deleted.contains($0.label) })
    }
    // A deleted label can come back, and the index keeps working after compaction.
    try index.insert(Self.data.base[3], label: 3)
    #expect(index.contains(3))
    #expect(try index.search(Self.data.base[3], k: 1, ef: 16).first?.label == 3)
  }

  @Test func removingEveryNodeEmptiesTheIndex() throws {
    let small = ClusteredData(count: 50, queries: 1, dimension: 8, seed: 3)
    let index = try makeIndex(small, metric: .dot)
    for label in 0..<UInt64(50) { try index.markDeleted(label) }
    #expect(try index.search(small.queries[0], k: 5, ef: 10).isEmpty)
    index.removeTombstones()
    #expect(index.count == 0 && index.tombstoneCount == 0)
    #expect(try index.search(small.queries[0], k: 5, ef: 10).isEmpty)
    try index.insert(small.base[0], label: 99)
    #expect(try index.search(small.queries[0], k: 5, ef: 10).map(\.label) == [99])
  }

  @Test func badInputIsATypedErrorAndChangesNothing() throws {
    let index = HNSWIndex(dimension: 4, metric: .cosine, capacity: 2)
    try index.insert([1, 0, 0, 0], label: 1)
    try index.insert([0, 2, 0, 0], label: 2)
    let query: [Float] = [1, 1, 0, 0]
    let before = try index.search(query, k: 2, ef: 10)
    let snapshot = index.serialize()
    #expect(throws: VectorIndexError.dimensionMismatch(expected: 4, got: 3)) {
      try index.insert([1, 2, 3], label: 9)
    }
    #expect(throws: VectorIndexError.nonFiniteComponent(index: 2)) {
      try index.insert([1, 2, .nan, 0], label: 9)
    }
    #expect(throws: VectorIndexError.nonFiniteComponent(index: 0)) {
      try index.insert([.infinity, 2, 0, 0], label: 9)
    }
    #expect(throws: VectorIndexError.zeroVector) { try index.insert([0, 0, 0, 0], label: 9) }
    #expect(throws: VectorIndexError.duplicateLabel(2)) { try index.insert([0, 0, 1, 0], label: 2) }
    #expect(throws: VectorIndexError.zeroVector) { try index.search([0, 0, 0, 0], k: 1, ef: 1) }
    #expect(throws: VectorIndexError.dimensionMismatch(expected: 4, got: 5)) {
      try index.search([1, 1, 1, 1, 1], k: 1, ef: 1)
    }
    #expect(throws: VectorIndexError.self) { try index.search(query, k: 0, ef: 10) }
    #expect(throws: VectorIndexError.self) { try index.search(query, k: 10_001, ef: 20_000) }
    #expect(throws: VectorIndexError.self) { try index.search(query, k: 5, ef: 4) }
    #expect(throws: VectorIndexError.self) { try index.search(query, k: 5, ef: 100_001) }
    // A batch with one bad vector, or a label used twice, adds nothing.
    #expect(throws: VectorIndexError.nonFiniteComponent(index: 1)) {
      try index.insert(
        batch: [(label: 5, vector: [1, 1, 1, 1]), (label: 6, vector: [1, -.infinity, 0, 0])], threads: 2)
    }
    #expect(throws: VectorIndexError.duplicateLabel(7)) {
      try index.insert(
        batch: [(label: 7, vector: [1, 1, 1, 1]), (label: 7, vector: [1, 2, 0, 0])], threads: 2)
    }
    #expect(throws: VectorIndexError.duplicateLabel(1)) {
      try index.insert(
        batch: [(label: 8, vector: [1, 1, 1, 1]), (label: 1, vector: [1, 2, 0, 0])], threads: 1)
    }
    #expect(throws: VectorIndexError.self) { try index.insert(batch: [], threads: 0) }
    #expect(index.count == 2)
    #expect(try index.search(query, k: 2, ef: 10) == before)
    #expect(index.serialize().elementsEqual(snapshot), "the snapshot is unchanged")
    #expect(!HNSWParameters(m: 1).isValid && !HNSWParameters(efConstruction: 0).isValid)
  }

  @Test func cosineStoresNormalizedVectorsAndGrowsPastItsCapacity() throws {
    let index = HNSWIndex(dimension: 2, metric: .cosine, capacity: 1)
    for label in 0..<UInt64(300) {
      let angle = Float(label) * 0.01
      try index.insert([3 * cos(angle), 3 * sin(angle)], label: label)
    }
    #expect(index.count == 300)
    let stored = try #require(index.vector(for: 0))
    #expect(abs(stored[0] - 1) < 1e-6 && abs(stored[1]) < 1e-6)
    let hits = try index.search([10, 0], k: 3, ef: 20)
    #expect(hits.map(\.label) == [0, 1, 2])
    #expect(abs(hits[0].distance) < 1e-5)
  }

  @Test func exactSearchOrdersByDistanceThenLabel() {
    let candidates: [(label: UInt64, vector: [Float])] = [
      (label: 9, vector: [1, 0]), (label: 4, vector: [0, 1]), (label: 2, vector: [1, 0]),
      (label: 7, vector: [2, 0]), (label: 5, vector: [1, 0, 0]),
    ]
    let l2 = ExactSearch.search(query: [1, 0], k: 3, metric: .l2, candidates: candidates)
    #expect(
      l2 == [
        SearchHit(label: 2, distance: 0), SearchHit(label: 9, distance: 0), SearchHit(label: 7, distance: 1),
      ])
    let cosine = ExactSearch.search(query: [5, 0], k: 4, metric: .cosine, candidates: candidates)
    #expect(cosine.map(\.label) == [2, 7, 9, 4])
    let dot = ExactSearch.search(query: [1, 0], k: 1, metric: .dot, candidates: candidates)
    #expect(dot == [SearchHit(label: 7, distance: -2)])
    #expect(ExactSearch.search(query: [1, 0], k: 0, metric: .l2, candidates: candidates).isEmpty)
  }

  @Test func distanceKernelsMatchScalarSums() {
    var random = SeededGenerator(seed: 5)
    for count in [1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 100, 384, 385] {
      let a = (0..<count).map { _ in Float.random(in: -1...1, using: &random) }
      let b = (0..<count).map { _ in Float.random(in: -1...1, using: &random) }
      let dot = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
      let l2 = zip(a, b).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
      a.withUnsafeBufferPointer { x in
        b.withUnsafeBufferPointer { y in
          #expect(abs(Double(Distance.dot(x.baseAddress!, y.baseAddress!, count: count)) - dot) < 1e-4)
          #expect(abs(Double(Distance.squaredL2(x.baseAddress!, y.baseAddress!, count: count)) - l2) < 1e-4)
        }
      }
    }
  }
}

@Suite struct VectorLargeBufferTests {
  /// A capacity whose node blocks exceed 4 MiB takes the mmap + huge-page path; growing moves them.
  @Test func largeCapacityUsesMappedMemoryAndGrows() throws {
    let data = ClusteredData(count: 40, queries: 3, dimension: 64, seed: 8)
    let index = HNSWIndex(dimension: 64, metric: .l2, capacity: 20_000)
    try index.insert(batch: Array(data.labelled[0..<20]), threads: 2)
    let loaded = try HNSWIndex.deserialize(index.serialize())
    try loaded.insert(batch: Array(data.labelled[20...]), threads: 1)
    #expect(loaded.count == 40)
    for query in data.queries {
      let exact = ExactSearch.search(query: query, k: 5, metric: .l2, candidates: data.labelled)
      #expect(try loaded.search(query, k: 5, ef: 40).map(\.label) == exact.map(\.label))
    }
  }
}
