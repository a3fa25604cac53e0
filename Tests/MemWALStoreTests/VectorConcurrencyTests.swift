import MemWALStore
import Synchronization
import Testing

@Suite struct VectorConcurrencyTests {
  @Test func searchesDuringAParallelBatchInsertReturnValidLabels() throws {
    let data = ClusteredData(count: 2_000, queries: 20, dimension: 16, seed: 31)
    let index = HNSWIndex(
      dimension: 16, metric: .l2, parameters: HNSWParameters(m: 8, efConstruction: 40), capacity: 16)
    try index.insert(batch: Array(data.labelled[0..<100]), threads: 1)
    let done = Atomic<Bool>(false)
    let rest = Array(data.labelled[100...])
    let failure = Mutex<VectorIndexError?>(nil)
    let writer = TestThread {
      defer { done.store(true, ordering: .releasing) }
      do throws(VectorIndexError) {
        try index.insert(batch: rest, threads: 2)
      } catch {
        failure.withLock { $0 = error }
      }
    }
    var searches = 0
    var invalid = 0
    repeat {
      for query in data.queries {
        let hits = try index.search(query, k: 10, ef: 32)
        invalid += hits.filter { $0.label >= 2_000 }.count
        searches += 1
        if hits.count != 10 { invalid += 1 }
      }
      if searches % 40 == 0 && searches / 40 < 100 { try index.markDeleted(UInt64(searches / 40)) }
    } while !done.load(ordering: .acquiring)
    writer.join()
    #expect(failure.withLock { $0 } == nil)
    #expect(invalid == 0)
    #expect(searches > 0)
    #expect(index.count + index.tombstoneCount == 2_000)
    let value = try recall(
      index, queries: data.queries, candidates: data.labelled.filter { index.contains($0.label) }, k: 10,
      ef: 64)
    #expect(value >= 0.9, "recall after concurrent build \(value)")
  }

  @Test func cleanupRunsWhileSearching() throws {
    let data = ClusteredData(count: 1_000, queries: 10, dimension: 8, seed: 41)
    let index = try makeIndex(data, metric: .l2, m: 8, efConstruction: 32)
    for label in stride(from: UInt64(0), to: 1_000, by: 2) { try index.markDeleted(label) }
    let done = Atomic<Bool>(false)
    let cleaner = TestThread {
      index.removeTombstones()
      done.store(true, ordering: .releasing)
    }
    var odd = true
    repeat {
      for query in data.queries {
        odd =
          try odd && index.search(query, k: 5, ef: 16).allSatisfy { $0.label % 2 == 1 && $0.label < 1_000 }
      }
    } while !done.load(ordering: .acquiring)
    cleaner.join()
    #expect(odd)
    #expect(index.tombstoneCount == 0 && index.count == 500)
  }

  /// Cleanup, inserts and deletes at once; afterwards the graph must pass every snapshot check
  /// (counts, ids, layers, labels, entry point) and still find what it holds.
  @Test func cleanupDuringInsertsLeavesAConsistentGraph() throws {
    let data = ClusteredData(count: 1_200, queries: 10, dimension: 8, seed: 51)
    let index = HNSWIndex(dimension: 8, metric: .l2, parameters: HNSWParameters(m: 6, efConstruction: 24))
    try index.insert(batch: Array(data.labelled[0..<600]), threads: 1)
    for label in stride(from: UInt64(0), to: 600, by: 3) { try index.markDeleted(label) }
    let failure = Mutex<VectorIndexError?>(nil)
    let writer = TestThread {
      do throws(VectorIndexError) {
        try index.insert(batch: Array(data.labelled[600...]), threads: 2)
        for label in stride(from: UInt64(601), to: 1_200, by: 5) { try index.markDeleted(label) }
      } catch {
        failure.withLock { $0 = error }
      }
    }
    index.removeTombstones()
    writer.join()
    index.removeTombstones()
    #expect(failure.withLock { $0 } == nil)
    #expect(index.tombstoneCount == 0)
    let live = data.labelled.filter { index.contains($0.label) }
    #expect(index.count == live.count && live.count == 1_200 - 200 - 120)
    let reloaded = try HNSWIndex.deserialize(index.serialize())
    #expect(reloaded.count == live.count)
    let value = try recall(reloaded, queries: data.queries, candidates: live, k: 10, ef: 64)
    #expect(value >= 0.9, "recall after concurrent cleanup \(value)")
  }
}
