import MemWALStore
import Testing

@Suite struct VectorIndexTests {
  static let data = ClusteredData(count: 3_000, queries: 60, dimension: 32, seed: 7)

  @Test(arguments: DistanceMetric.allCases)
  func recallAtTenAgainstExactSearch(metric: DistanceMetric) throws {
    let clock = ContinuousClock()
    let start = clock.now
    let index = try makeIndex(Self.data, metric: metric, m: 8, efConstruction: 32)
    let built = clock.now - start
    #expect(index.count == 3_000)
    let value = try recall(index, queries: Self.data.queries, candidates: Self.data.labelled, k: 10, ef: 64)
    print("\(metric): recall@10 \(value), built in \(built), searched in \(clock.now - start - built)")
    #expect(value >= 0.95, "recall@10 for \(metric) is \(value)")
  }
}
