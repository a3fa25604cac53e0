import Glibc
import MemWALStore

/// Points around `clusters` random centres: the shape of real embeddings, where recall is harder
/// than on uniform noise.
struct ClusteredData {
  var base: [[Float]]
  var queries: [[Float]]

  init(count: Int, queries queryCount: Int, dimension: Int, clusters: Int = 24, seed: UInt64) {
    var random = SeededGenerator(seed: seed)
    let centres = (0..<clusters).map { _ in
      (0..<dimension).map { _ in Float.random(in: -1...1, using: &random) }
    }
    func point() -> [Float] {
      let centre = centres[Int.random(in: 0..<clusters, using: &random)]
      return centre.map { $0 + 0.25 * random.gaussian() }
    }
    base = (0..<count).map { _ in point() }
    queries = (0..<queryCount).map { _ in point() }
  }

  var labelled: [(label: UInt64, vector: [Float])] {
    base.enumerated().map { (label: UInt64($0.offset), vector: $0.element) }
  }
}

/// Fraction of the exact top-k labels that the index returned.
func recall(
  _ index: HNSWIndex, queries: [[Float]], candidates: [(label: UInt64, vector: [Float])], k: Int, ef: Int,
  filter: ((UInt64) -> Bool)? = nil
) throws -> Double {
  var found = 0
  var total = 0
  let allowed = filter.map { keep in candidates.filter { keep($0.label) } } ?? candidates
  for query in queries {
    let truth = ExactSearch.search(query: query, k: k, metric: index.metric, candidates: allowed)
    let hits = try index.search(query, k: k, ef: ef, filter: filter)
    let returned = Set(hits.map(\.label))
    found += truth.filter { returned.contains($0.label) }.count
    total += truth.count
  }
  return Double(found) / Double(max(total, 1))
}

func makeIndex(
  _ data: ClusteredData, metric: DistanceMetric, m: Int = 12, efConstruction: Int = 64, threads: Int = 1
) throws -> HNSWIndex {
  let index = HNSWIndex(
    dimension: data.base[0].count, metric: metric,
    parameters: HNSWParameters(m: m, efConstruction: efConstruction), capacity: 64)
  try index.insert(batch: data.labelled, threads: threads)
  return index
}

/// Runs `body` on a new OS thread (not a Swift-concurrency pool thread, which a busy test loop
/// could starve on a two-core machine); `join` waits for it.
final class TestThread: @unchecked Sendable {
  private var thread = pthread_t()
  private let body: @Sendable () -> Void

  init(_ body: @escaping @Sendable () -> Void) {
    self.body = body
    let context = Unmanaged.passRetained(self).toOpaque()
    let result = pthread_create(
      &thread, nil,
      { raw in
        let me = Unmanaged<TestThread>.fromOpaque(raw!).takeRetainedValue()
        me.body()
        return nil
      }, context)
    precondition(result == 0)
  }

  func join() { pthread_join(thread, nil) }
}

/// The core's seeded generator, under the name these tests use.
typealias SeededGenerator = SplitMix64

extension SplitMix64 {
  /// A standard normal sample (Box–Muller).
  mutating func gaussian() -> Float {
    let u = Double.random(in: Double.ulpOfOne..<1, using: &self)
    let v = Double.random(in: 0..<1, using: &self)
    return Float((-2 * log(u)).squareRoot() * cos(2 * Double.pi * v))
  }
}
