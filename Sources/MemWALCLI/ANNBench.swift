import ArgumentParser
import Glibc
import MemWALCore
import MemWALLog
import MemWALStore

/// `memwal bench ann`: builds the HNSW index from TEXMEX `.fvecs` files on every core, then per
/// `ef` measures recall@10 against the ground truth and single-thread queries per second; also
/// the snapshot's size and load time and the resident memory the index adds per vector.
/// `scripts/bench/ann_compare.py` runs hnswlib on the same files for the ratios in
/// docs/benchmarks.md.
struct ANNBench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ann",
    abstract: "Measure HNSW build time, recall@10 and QPS per ef, snapshot load time and memory per vector.")

  @Option(help: "Base vectors (.fvecs: per row an int32 dimension, then that many float32).")
  var base: String

  @Option(help: "Query vectors (.fvecs).")
  var queries: String

  @Option(help: "Exact neighbours of each query, nearest first (.ivecs, at least 10 per row).")
  var groundtruth: String

  @Option(help: "Links per node (layer 0 keeps 2M).")
  var m: Int = 16

  @Option(name: .customLong("ef-construction"), help: "Candidate-list size while building.")
  var efConstruction: Int = 200

  @Option(help: "Comma-separated candidate-list sizes to search with.")
  var ef: String = "16,32,64,128,256"

  @Option(help: "Threads for the build (default: every core).")
  var threads: Int?

  @Option(help: "Distance: l2, dot or cosine (the ground truth must match).")
  var metric: String = "l2"

  @Option(help: "Where to write the snapshot for the load timing (removed afterwards).")
  var snapshot: String?

  @Flag(help: "Print one JSON object instead of a table.")
  var json = false

  static let k = 10
  static let rowsMaximum = 50_000_000

  var efValues: [Int]? {
    let parts = ef.split(separator: ",").map { Int($0.filter { $0 != " " }) }
    return parts.contains(where: { $0 == nil }) ? nil : parts.map { $0! }
  }

  func validate() throws {
    guard HNSWParameters(m: m, efConstruction: efConstruction).isValid else {
      throw ValidationError(
        "--m must be within \(HNSWParameters.mRange) and --ef-construction within \(HNSWParameters.efConstructionRange)"
      )
    }
    guard let values = efValues, !values.isEmpty,
      values.allSatisfy({ $0 >= Self.k && $0 <= VectorLimits.efMaximum })
    else {
      throw ValidationError(
        "--ef must be a comma-separated list of values within \(Self.k)...\(VectorLimits.efMaximum)")
    }
    if let threads, !(1...VectorLimits.threadsMaximum).contains(threads) {
      throw ValidationError("--threads must be within 1...\(VectorLimits.threadsMaximum)")
    }
    guard DistanceMetric(rawValue: metric) != nil else {
      throw ValidationError("--metric must be l2, dot or cosine")
    }
  }

  struct Run {
    var ef: Int
    var recall: Double
    var queriesPerSecond: Double
  }

  func run() async throws {
    let baseRows = try VectorFile.read(base, as: Float.self)
    let queryRows = try VectorFile.read(queries, as: Float.self)
    let truth = try VectorFile.read(groundtruth, as: Int32.self)
    try checkShapes(base: baseRows, queries: queryRows, truth: truth)
    let threads = self.threads ?? activeProcessorCount()
    let index = HNSWIndex(
      dimension: baseRows.dimension, metric: DistanceMetric(rawValue: metric)!,
      parameters: HNSWParameters(m: m, efConstruction: efConstruction), capacity: baseRows.count)
    let batch = baseRows.rows.enumerated().map { (label: UInt64($0.offset), vector: $0.element) }
    let residentBefore = residentBytes()
    let buildStart = ContinuousClock.now
    try index.insert(batch: batch, threads: threads)
    let buildSeconds = seconds(since: buildStart)
    let residentAfter = residentBytes()
    let bytesPerVector = Double(residentAfter - residentBefore) / Double(baseRows.count)

    // One untimed pass first: the first timed ef would otherwise pay for cold caches and pages.
    for query in queryRows.rows { _ = try index.search(query, k: Self.k, ef: efValues![0]) }
    var runs: [Run] = []
    for ef in efValues! {
      runs.append(try measure(index, ef: ef, queries: queryRows.rows, truth: truth.rows))
    }
    let (snapshotBytes, serializeSeconds, loadSeconds) = try measureSnapshot(index, probe: queryRows.rows[0])
    report(
      Report(
        count: baseRows.count, dimension: baseRows.dimension, queries: queryRows.count, threads: threads,
        buildSeconds: buildSeconds, bytesPerVector: bytesPerVector, snapshotBytes: snapshotBytes,
        serializeSeconds: serializeSeconds, loadSeconds: loadSeconds, runs: runs))
  }

  func checkShapes(base: VectorFile<Float>, queries: VectorFile<Float>, truth: VectorFile<Int32>) throws {
    guard base.count > 0, queries.count > 0 else {
      throw ValidationError("\(base.count == 0 ? self.base : self.queries) holds no vectors")
    }
    guard queries.dimension == base.dimension else {
      throw ValidationError(
        "\(self.queries) has dimension \(queries.dimension), \(self.base) has \(base.dimension)")
    }
    guard VectorLimits.dimension.contains(base.dimension) else {
      throw ValidationError("\(self.base): dimension \(base.dimension) is outside 1...4096")
    }
    guard truth.count == queries.count, truth.dimension >= Self.k else {
      throw ValidationError(
        "\(groundtruth) must hold \(queries.count) rows of at least \(Self.k) ids; it holds \(truth.count) of \(truth.dimension)"
      )
    }
    for (row, ids) in truth.rows.enumerated() {
      if let bad = ids.prefix(Self.k).first(where: { $0 < 0 || Int($0) >= base.count }) {
        throw ValidationError("\(groundtruth) row \(row): id \(bad) is not a row of \(self.base)")
      }
    }
  }

  /// Recall@10 and single-thread QPS at one `ef` (one warm-up pass over the first 100 queries).
  func measure(_ index: HNSWIndex, ef: Int, queries: [[Float]], truth: [[Int32]]) throws -> Run {
    for query in queries.prefix(100) { _ = try index.search(query, k: Self.k, ef: ef) }
    var results: [[SearchHit]] = []
    results.reserveCapacity(queries.count)
    let start = ContinuousClock.now
    for query in queries { results.append(try index.search(query, k: Self.k, ef: ef)) }
    let elapsed = seconds(since: start)
    var found = 0
    for (hits, exact) in zip(results, truth) {
      let expected = Set(exact.prefix(Self.k).map { UInt64($0) })
      found += hits.filter { expected.contains($0.label) }.count
    }
    return Run(
      ef: ef, recall: Double(found) / Double(queries.count * Self.k),
      queriesPerSecond: Double(queries.count) / elapsed)
  }

  /// Serializes, writes the file, then times reading it back and `deserialize` (no rebuild).
  func measureSnapshot(_ index: HNSWIndex, probe: [Float]) throws -> (Int, Double, Double) {
    let path = snapshot ?? "/tmp/memwal-ann-\(getpid()).hnsw"
    let serializeStart = ContinuousClock.now
    let bytes = index.serialize()
    let serializeSeconds = seconds(since: serializeStart)
    try RawFile.write(bytes, to: path)
    defer { unlink(path) }
    let loadStart = ContinuousClock.now
    let loaded = try RawFile.withMapped(path) { raw in try HNSWIndex.deserialize(raw) }
    let loadSeconds = seconds(since: loadStart)
    guard try loaded.search(probe, k: Self.k, ef: 64) == index.search(probe, k: Self.k, ef: 64) else {
      throw ValidationError("the loaded snapshot answers differently from the index it was taken from")
    }
    return (bytes.count, serializeSeconds, loadSeconds)
  }

  struct Report {
    var count: Int
    var dimension: Int
    var queries: Int
    var threads: Int
    var buildSeconds: Double
    var bytesPerVector: Double
    var snapshotBytes: Int
    var serializeSeconds: Double
    var loadSeconds: Double
    var runs: [Run]
  }

  func report(_ report: Report) {
    if json {
      let runs = report.runs.map {
        "{\"ef\":\($0.ef),\"recall_at_10\":\(String(($0.recall * 10_000).rounded() / 10_000))"
          + ",\"qps\":\(jsonNumber($0.queriesPerSecond))}"
      }
      let fields = [
        "\"benchmark\":\"ann\"", "\"metric\":\(jsonString(metric))", "\"count\":\(report.count)",
        "\"dimension\":\(report.dimension)", "\"queries\":\(report.queries)", "\"m\":\(m)",
        "\"ef_construction\":\(efConstruction)", "\"threads\":\(report.threads)",
        "\"build_seconds\":\(jsonNumber(report.buildSeconds))",
        "\"inserts_per_second\":\(jsonNumber(Double(report.count) / report.buildSeconds))",
        "\"resident_bytes_per_vector\":\(jsonNumber(report.bytesPerVector))",
        "\"snapshot_bytes\":\(report.snapshotBytes)",
        "\"serialize_seconds\":\(jsonNumber(report.serializeSeconds))",
        "\"load_seconds\":\(jsonNumber(report.loadSeconds))", "\"runs\":[\(runs.joined(separator: ","))]",
      ]
      emit("{" + fields.joined(separator: ",") + "}")
      return
    }
    emit(
      "memwal bench ann: \(report.count) × \(report.dimension) \(metric), \(report.queries) queries, "
        + "M \(m), efConstruction \(efConstruction), \(report.threads) build threads")
    emit(
      "build \(format3(report.buildSeconds)) s (\(format3((Double(report.count) / report.buildSeconds).rounded())) "
        + "inserts/s); resident \(format3(report.bytesPerVector.rounded())) bytes/vector "
        + "(vector alone \(report.dimension * 4))")
    emit(
      "snapshot \(report.snapshotBytes) bytes, serialize \(format3(report.serializeSeconds)) s, "
        + "load \(format3(report.loadSeconds)) s")
    emit("    ef  recall@10   QPS (1 thread)")
    for run in report.runs {
      emit(
        String(run.ef).leftPadded(to: 6, with: " ") + format3(run.recall).leftPadded(to: 11, with: " ")
          + format3(run.queriesPerSecond.rounded()).leftPadded(to: 17, with: " "))
    }
  }
}

func seconds(since start: ContinuousClock.Instant) -> Double {
  let elapsed = ContinuousClock.now - start
  return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
}

/// Resident set size from /proc/self/status (VmRSS), in bytes; 0 where there is no /proc.
func residentBytes() -> Int {
  guard let text = try? RawFile.readBytes("/proc/self/status") else { return 0 }
  for line in String(decoding: text, as: UTF8.self).split(separator: "\n") where line.hasPrefix("VmRSS:") {
    let digits = line.dropFirst(6).filter { $0.isNumber }
    return (Int(digits) ?? 0) * 1024
  }
  return 0
}

/// A TEXMEX `.fvecs` / `.ivecs` file: rows of a little-endian int32 dimension followed by that
/// many 4-byte values; every row must have the same dimension.
struct VectorFile<Element: BitwiseCopyable> {
  var dimension: Int
  var rows: [[Element]]
  var count: Int { rows.count }

  static func read(_ path: String, as: Element.Type) throws -> VectorFile {
    let bytes = try RawFile.readBytes(path)
    guard bytes.count >= 4 else { throw ValidationError("\(path): \(bytes.count) bytes is not even one row") }
    return try bytes.withUnsafeBytes { raw in
      let dimension = Int(Int32(littleEndian: raw.loadUnaligned(as: Int32.self)))
      guard (1...VectorLimits.dimension.upperBound).contains(dimension) else {
        throw ValidationError("\(path): first row's dimension \(dimension) is outside 1...4096")
      }
      let rowBytes = 4 + 4 * dimension
      guard bytes.count % rowBytes == 0 else {
        throw ValidationError(
          "\(path): \(bytes.count) bytes is not a whole number of \(rowBytes)-byte rows of dimension \(dimension)"
        )
      }
      let count = bytes.count / rowBytes
      guard count <= ANNBench.rowsMaximum else {
        throw ValidationError("\(path): more than \(ANNBench.rowsMaximum) rows")
      }
      var rows: [[Element]] = []
      rows.reserveCapacity(count)
      for row in 0..<count {
        let offset = row * rowBytes
        let rowDimension = Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int32.self)))
        guard rowDimension == dimension else {
          throw ValidationError(
            "\(path): row \(row) at byte \(offset) has dimension \(rowDimension), not \(dimension)")
        }
        rows.append(
          [Element](unsafeUninitializedCapacity: dimension) { buffer, initialized in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(
              from: UnsafeRawBufferPointer(rebasing: raw[offset + 4..<offset + rowBytes]))
            initialized = dimension
          })
      }
      return VectorFile(dimension: dimension, rows: rows)
    }
  }
}

/// Whole-file reads and writes for the benchmark's inputs and snapshot.
enum RawFile {
  /// The whole file. Regular files are read into an array of their size; files whose size reads
  /// as 0 (/proc) are read in chunks until end of file.
  static func readBytes(_ path: String) throws -> [UInt8] {
    let descriptor = open(path, O_RDONLY)
    guard descriptor >= 0 else { throw ValidationError("\(path): \(String(cString: strerror(errno)))") }
    defer { close(descriptor) }
    var status = stat()
    guard fstat(descriptor, &status) == 0 else {
      throw ValidationError("\(path): \(String(cString: strerror(errno)))")
    }
    let size = Int(status.st_size)
    var bytes = try [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
      while initialized < size {
        let got = Glibc.read(descriptor, buffer.baseAddress! + initialized, size - initialized)
        guard got > 0 else { throw ValidationError("\(path): read failed at byte \(initialized)") }
        initialized += got
      }
    }
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
      let got = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress!, $0.count) }
      guard got >= 0 else { throw ValidationError("\(path): read failed at byte \(bytes.count)") }
      if got == 0 { return bytes }
      bytes.append(contentsOf: chunk[0..<got])
    }
  }

  /// Runs `body` on the file mapped read-only into memory (no copy through a buffer).
  static func withMapped<T>(_ path: String, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
    let descriptor = open(path, O_RDONLY)
    guard descriptor >= 0 else { throw ValidationError("\(path): \(String(cString: strerror(errno)))") }
    defer { close(descriptor) }
    var status = stat()
    guard fstat(descriptor, &status) == 0, status.st_size > 0 else {
      throw ValidationError("\(path): empty or unreadable")
    }
    let size = Int(status.st_size)
    guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, descriptor, 0),
      address != MAP_FAILED
    else { throw ValidationError("\(path): mmap failed: \(String(cString: strerror(errno)))") }
    defer { munmap(address, size) }
    return try body(UnsafeRawBufferPointer(start: address, count: size))
  }

  static func write(_ bytes: [UInt8], to path: String) throws {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard descriptor >= 0 else { throw ValidationError("\(path): \(String(cString: strerror(errno)))") }
    defer { close(descriptor) }
    var done = 0
    try bytes.withUnsafeBytes { raw in
      while done < raw.count {
        let wrote = Glibc.write(descriptor, raw.baseAddress! + done, raw.count - done)
        guard wrote > 0 else { throw ValidationError("\(path): write failed at byte \(done)") }
        done += wrote
      }
    }
  }
}
