import MemWALCore
import MemWALStore
import Testing

@Suite struct VectorSnapshotTests {
  static let data = ClusteredData(count: 800, queries: 30, dimension: 12, seed: 21)

  @Test(arguments: DistanceMetric.allCases)
  func roundTripGivesIdenticalResults(metric: DistanceMetric) throws {
    let index = try makeIndex(Self.data, metric: metric)
    for label in stride(from: UInt64(0), to: 800, by: 7) { try index.markDeleted(label) }
    let bytes = index.serialize()
    let loaded = try HNSWIndex.deserialize(bytes)
    #expect(loaded.dimension == index.dimension && loaded.metric == metric)
    #expect(loaded.count == index.count && loaded.tombstoneCount == index.tombstoneCount)
    #expect(loaded.serialize().elementsEqual(bytes), "a loaded snapshot re-serializes to the same bytes")
    for query in Self.data.queries {
      #expect(try loaded.search(query, k: 10, ef: 40) == index.search(query, k: 10, ef: 40))
      let filter: (UInt64) -> Bool = { $0 % 5 != 0 }
      #expect(
        try loaded.search(query, k: 10, ef: 40, filter: filter)
          == index.search(query, k: 10, ef: 40, filter: filter))
    }
    // Both keep evolving the same way: the level generator's state is in the snapshot.
    try index.insert(Self.data.queries[0], label: 10_000)
    try loaded.insert(Self.data.queries[0], label: 10_000)
    #expect(loaded.serialize().elementsEqual(index.serialize()), "equal graphs stay equal")
    let empty = HNSWIndex(dimension: 3, metric: metric)
    #expect(try HNSWIndex.deserialize(empty.serialize()).count == 0)
  }

  @Test func truncatedSnapshotsAreRejected() throws {
    let small = ClusteredData(count: 60, queries: 1, dimension: 4, seed: 2)
    let bytes = try makeIndex(small, metric: .l2).serialize()
    for length in 0..<bytes.count {
      #expect(throws: VectorIndexError.self) { try HNSWIndex.deserialize(Array(bytes[0..<length])) }
    }
    #expect(throws: VectorIndexError.self) { try HNSWIndex.deserialize(bytes + [0]) }
  }

  /// 10,000 seeded random mutations (flipped bits, overwritten bytes and words, cuts), half with
  /// the checksum left wrong and half with it recomputed so the structural checks must catch them.
  @Test func randomMutationsNeverCrash() throws {
    let small = ClusteredData(count: 40, queries: 1, dimension: 3, seed: 4)
    let index = try makeIndex(small, metric: .cosine, m: 4, efConstruction: 16)
    try index.markDeleted(5)
    let bytes = index.serialize()
    var random = SeededGenerator(seed: 99)
    var accepted = 0
    for round in 0..<10_000 {
      var mutated = bytes
      for _ in 0..<Int.random(in: 1...3, using: &random) {
        let position = Int.random(in: 0..<mutated.count, using: &random)
        switch Int.random(in: 0..<4, using: &random) {
        case 0: mutated[position] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &random)
        case 1: mutated[position] = UInt8.random(in: 0...255, using: &random)
        case 2:
          for offset in 0..<4 where position + offset < mutated.count { mutated[position + offset] = 0xFF }
        default:
          mutated.removeSubrange(
            position..<min(mutated.count, position + Int.random(in: 1...8, using: &random)))
        }
      }
      if round % 2 == 1 && mutated.count > 4 {
        let crc = CRC32C.checksum(mutated[0..<mutated.count - 4])
        withUnsafeBytes(of: crc.littleEndian) {
          mutated.replaceSubrange(mutated.count - 4..<mutated.count, with: $0)
        }
      }
      do {
        let loaded = try HNSWIndex.deserialize(mutated)
        // A mutation the checks cannot see (a vector component, a label) must still give an index
        // that works.
        accepted += 1
        _ = try loaded.search([1, 0, 0], k: 3, ef: 8)
      } catch {
        // The catch is typed (VectorIndexError): anything else would not compile.
        guard case .corruptSnapshot = error else {
          Issue.record("mutation \(round): \(error)")
          continue
        }
      }
    }
    #expect(accepted < 5_000)
  }
}
