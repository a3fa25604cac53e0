import Foundation
import Testing

/// `memwal bench ann` on a small data set written here in the TEXMEX formats: it reads them,
/// builds, and reports recall against the exact answer.
@Suite(.serialized) struct ANNBenchTests {
  static func writeVectors(_ rows: [[Float]], to url: URL) throws {
    var data = Data()
    for row in rows {
      withUnsafeBytes(of: Int32(row.count).littleEndian) { data.append(contentsOf: $0) }
      for value in row { withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
    }
    try data.write(to: url)
  }

  static func writeIndices(_ rows: [[Int32]], to url: URL) throws {
    var data = Data()
    for row in rows {
      withUnsafeBytes(of: Int32(row.count).littleEndian) { data.append(contentsOf: $0) }
      for value in row { withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) } }
    }
    try data.write(to: url)
  }

  @Test func readsTexmexFilesAndReportsRecall() throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    var state: UInt64 = 42
    func next() -> Float {
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return Float(state >> 40) / Float(1 << 24) - 0.5
    }
    let base = (0..<600).map { _ in (0..<12).map { _ in next() } }
    let queries = (0..<40).map { _ in (0..<12).map { _ in next() } }
    let truth = queries.map { query in
      base.indices.sorted { a, b in
        zip(base[a], query).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
          < zip(base[b], query).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
      }.prefix(10).map { Int32($0) }
    }
    try Self.writeVectors(base, to: scratch.url.appendingPathComponent("base.fvecs"))
    try Self.writeVectors(queries, to: scratch.url.appendingPathComponent("q.fvecs"))
    try Self.writeIndices(truth, to: scratch.url.appendingPathComponent("gt.ivecs"))
    let result = try runMemwal([
      "bench", "ann", "--base", scratch.path + "/base.fvecs", "--queries", scratch.path + "/q.fvecs",
      "--groundtruth", scratch.path + "/gt.ivecs", "--m", "8", "--ef-construction", "64", "--ef", "16,128",
      "--json",
    ])
    #expect(result.status == 0, "\(result.stderr)")
    let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
    #expect(
      report["count"] as? Int == 600 && report["dimension"] as? Int == 12 && report["queries"] as? Int == 40)
    let runs = report["runs"] as! [[String: Any]]
    #expect(runs.map { $0["ef"] as! Int } == [16, 128])
    #expect((runs.last?["recall_at_10"] as? Double ?? 0) >= 0.95)

    // A truncated file is refused with a clear error.
    let truncated = scratch.url.appendingPathComponent("bad.fvecs")
    try Data(try Data(contentsOf: scratch.url.appendingPathComponent("base.fvecs")).prefix(30)).write(
      to: truncated)
    let bad = try runMemwal([
      "bench", "ann", "--base", truncated.path, "--queries", scratch.path + "/q.fvecs", "--groundtruth",
      scratch.path + "/gt.ivecs",
    ])
    #expect(bad.status != 0 && bad.stderr.contains("bad.fvecs"))
  }
}
