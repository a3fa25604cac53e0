import ArgumentParser
import Glibc
import Logging
import MemWALCore
import MemWALLog
import Synchronization

/// `memwal bench wal`: the log's durable append rate and ack latency at several writer counts,
/// next to a raw `pwrite` + `fdatasync` loop run in the same process and run as the baseline.
struct WALBench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "wal",
    abstract: "Measure durable appends/s, MB/s and ack latency against a raw write+fdatasync loop.")

  @Option(help: "Directory to run in (a fresh subdirectory is made per phase).")
  var dir: String

  @Option(help: "Comma-separated concurrent writer counts for the log phases.")
  var writers: String = "1,16,64"

  @Option(name: .customLong("record-bytes"), help: "Size of each record on disk, frame included.")
  var recordBytes: Int = 1536

  @Option(help: "Seconds per phase.")
  var seconds: Double = 5

  @Flag(help: "Print one JSON object instead of a table.")
  var json = false

  @Flag(name: .customLong("print-acks"), help: "Print `ack LSN` for every acknowledged append as it happens.")
  var printAcks = false

  @Flag(name: .customLong("skip-baseline"), help: "Run only the log phases.")
  var skipBaseline = false

  @Flag(help: "Keep the phase directories (removed by default).")
  var keep = false

  struct Phase {
    var name: String
    var writers: Int
    var appends: Int
    var seconds: Double
    var latenciesMicros: [Double]
    var syncs: Int
    var recordsPerBatch: Double = 1
    var syncMicrosMean: Double = .nan

    var appendsPerSecond: Double { Double(appends) / seconds }
    func percentile(_ fraction: Double) -> Double {
      guard !latenciesMicros.isEmpty else { return .nan }
      return latenciesMicros[min(latenciesMicros.count - 1, Int(Double(latenciesMicros.count) * fraction))]
    }
  }

  func validate() throws {
    guard recordBytes >= 128, recordBytes <= 1 << 20 else {
      throw ValidationError("--record-bytes must be within 128...1048576")
    }
    guard seconds > 0, seconds <= 3600 else { throw ValidationError("--seconds must be within (0, 3600]") }
    guard let counts = writerCounts, !counts.isEmpty, counts.allSatisfy({ $0 >= 1 && $0 <= 4096 }) else {
      throw ValidationError("--writers must be a comma-separated list of counts within 1...4096")
    }
  }

  var writerCounts: [Int]? {
    let parts = writers.split(separator: ",").map { Int($0.filter { $0 != " " }) }
    return parts.contains(where: { $0 == nil }) ? nil : parts.map { $0! }
  }

  func run() async throws {
    let fileSystem = POSIXFileSystem()
    try fileSystem.createDirectory(dir)
    var phases: [Phase] = []
    if !skipBaseline { phases.append(try runBaseline()) }
    for count in writerCounts! { phases.append(try await runLog(writers: count)) }
    report(phases)
  }

  /// One writer, `pwrite` + `fdatasync` of `recordBytes` in a loop.
  func runBaseline() throws -> Phase {
    let path = joinPath(dir, "baseline-\(getpid()).dat")
    let fileSystem = POSIXFileSystem()
    if fileSystem.fileExists(path) { try fileSystem.removeFile(path) }
    let file = try fileSystem.openFile(path, mode: .createNew)
    defer {
      file.close()
      if !keep { try? fileSystem.removeFile(path) }
    }
    let capacity = 256 << 20
    // Prepared as the log prepares its segments (preallocated, zero-filled, synced), so that the
    // comparison isolates what the log's code adds.
    try file.preallocate(size: Int64(capacity))
    if getenv("MEMWAL_BENCH_NOZERO") == nil { try file.writeZeros(from: 0, to: Int64(capacity)) }
    try file.sync()
    let record = [UInt8](repeating: 0xAB, count: recordBytes)
    var latencies: [Double] = []
    var offset = 0
    let start = monotonicNanoseconds()
    let deadline = start + UInt64(seconds * 1e9)
    var now = start
    while now < deadline {
      let begin = now
      if offset + recordBytes > capacity { offset = 0 }
      try file.write(record, at: Int64(offset))
      try file.sync()
      offset += recordBytes
      now = monotonicNanoseconds()
      latencies.append(Double(now - begin) / 1000)
    }
    latencies.sort()
    return Phase(
      name: "raw write+fdatasync", writers: 1, appends: latencies.count, seconds: Double(now - start) / 1e9,
      latenciesMicros: latencies, syncs: latencies.count, recordsPerBatch: 1)
  }

  final class Collector: @unchecked Sendable {
    let latencies = Mutex<[Double]>([])
    let appends = Atomic<Int>(0)
  }

  func runLog(writers count: Int) async throws -> Phase {
    let fileSystem = POSIXFileSystem()
    let phaseDirectory = joinPath(dir, "wal-\(count)-writers-\(getpid())")
    if fileSystem.fileExists(phaseDirectory) { _ = system("rm -rf '\(phaseDirectory)'") }
    defer { if !keep { _ = system("rm -rf '\(phaseDirectory)'") } }
    let quiet = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }
    var options = WriteAheadLog.Options()
    if getenv("MEMWAL_BENCH_NOZERO") != nil { options.zeroFillSegments = false }
    if let window = getenv("MEMWAL_BENCH_WINDOW").flatMap({ Int(String(cString: $0)) }) {
      options.groupCommitWindowMicroseconds = window
    }
    let (log, _) = try WriteAheadLog.open(
      directory: phaseDirectory, options: options, fileSystem: fileSystem, logger: quiet)
    // The after-image is sized so that the whole frame is `recordBytes` on disk.
    let overhead = WALFormat.aligned(
      WALFormat.frameHeaderSize + WALFormat.recordBodyHeaderSize + 2 + 5 + 2 + 4 + 4 + 2 + 12 + 4 + 4)
    let image = [UInt8](repeating: 0xCD, count: max(0, recordBytes - overhead))
    let collector = Collector()
    let start = monotonicNanoseconds()
    let deadline = start + UInt64(seconds * 1e9)
    let printAcks = self.printAcks
    try await withThrowingTaskGroup(of: Void.self) { group in
      for writer in 0..<count {
        group.addTask {
          var mine: [Double] = []
          var index = 0
          while monotonicNanoseconds() < deadline {
            let id = "w\(writer)-\(index)".leftPadded(to: 12, with: "-")
            let transaction = WALTransaction(
              namespace: "bench",
              operations: [WALOperation(kind: .insert, target: .memory, id: id, after: image)])
            let begin = monotonicNanoseconds()
            let result = try await log.append(transaction, durability: .local)
            mine.append(Double(monotonicNanoseconds() - begin) / 1000)
            if printAcks { emit("ack \(result.lsn)") }
            index += 1
          }
          collector.appends.add(mine.count, ordering: .relaxed)
          collector.latencies.withLock { $0 += mine }
        }
      }
      try await group.waitForAll()
    }
    let elapsed = Double(monotonicNanoseconds() - start) / 1e9
    await log.close()
    let statistics = log.statistics.snapshot()
    if ProcessInfoLite.isVerbose {
      warn(
        "writers \(count): batches \(statistics.batches), per batch: gather \(statistics.gatherNanoseconds / max(1, statistics.batches) / 1000) µs, "
          + "write \(statistics.writeNanoseconds / max(1, statistics.batches) / 1000) µs, fsync \(statistics.syncNanoseconds / max(1, statistics.syncs) / 1000) µs, "
          + "acknowledge \(statistics.acknowledgeNanoseconds / max(1, statistics.batches) / 1000) µs")
    }
    var latencies = collector.latencies.withLock { $0 }
    latencies.sort()
    return Phase(
      name: "log", writers: count, appends: collector.appends.load(ordering: .relaxed), seconds: elapsed,
      latenciesMicros: latencies, syncs: statistics.syncs, recordsPerBatch: statistics.recordsPerBatch,
      syncMicrosMean: statistics.syncs == 0
        ? .nan : Double(statistics.syncNanoseconds) / Double(statistics.syncs) / 1000)
  }

  func report(_ phases: [Phase]) {
    let baseline = phases.first { $0.name != "log" }
    let single = phases.first { $0.name == "log" && $0.writers == 1 }
    let megabyte = 1_000_000.0
    if json {
      let rows = phases.map { phase in
        var fields = [
          "\"name\":\(jsonString(phase.name))", "\"writers\":\(phase.writers)",
          "\"appends\":\(phase.appends)",
          "\"seconds\":\(jsonNumber(phase.seconds))",
          "\"appends_per_second\":\(jsonNumber(phase.appendsPerSecond))",
          "\"mb_per_second\":\(jsonNumber(phase.appendsPerSecond * Double(recordBytes) / megabyte))",
          "\"p50_ack_micros\":\(jsonNumber(phase.percentile(0.5)))",
          "\"p99_ack_micros\":\(jsonNumber(phase.percentile(0.99)))",
          "\"fsyncs\":\(phase.syncs)", "\"records_per_batch\":\(jsonNumber(phase.recordsPerBatch))",
          "\"mean_fsync_micros\":\(jsonNumber(phase.syncMicrosMean))",
        ]
        if let baseline {
          fields.append(
            "\"throughput_vs_baseline\":\(jsonNumber(phase.appendsPerSecond / baseline.appendsPerSecond))")
          fields.append("\"p50_vs_baseline\":\(jsonNumber(phase.percentile(0.5) / baseline.percentile(0.5)))")
        }
        if let single {
          fields.append(
            "\"throughput_vs_single_writer_log\":\(jsonNumber(phase.appendsPerSecond / single.appendsPerSecond))"
          )
        }
        return "{" + fields.joined(separator: ",") + "}"
      }
      emit(
        "{\"benchmark\":\"wal\",\"record_bytes\":\(recordBytes),\"seconds_per_phase\":\(jsonNumber(seconds)),"
          + "\"crc32c_hardware\":\(CRC32C.isHardwareAccelerated),\"phases\":[\(rows.joined(separator: ","))]}"
      )
      return
    }
    emit("memwal bench wal: \(recordBytes)-byte records, \(format3(seconds)) s per phase, dir \(dir)")
    emit(
      "phase                  writers    appends/s     MB/s   p50 µs   p99 µs  ×baseline  p50/baseline  ×1-writer  rec/batch  fsync µs"
    )
    for phase in phases {
      let ratio = baseline.map { format3(phase.appendsPerSecond / $0.appendsPerSecond) } ?? "-"
      let latencyRatio = baseline.map { format3(phase.percentile(0.5) / $0.percentile(0.5)) } ?? "-"
      let scaling = single.map { format3(phase.appendsPerSecond / $0.appendsPerSecond) } ?? "-"
      emit(
        phase.name.padding(22) + String(phase.writers).leftPadded(to: 8, with: " ")
          + format3(phase.appendsPerSecond.rounded()).leftPadded(to: 13, with: " ")
          + format3(phase.appendsPerSecond * Double(recordBytes) / megabyte).leftPadded(to: 9, with: " ")
          + format3(phase.percentile(0.5).rounded()).leftPadded(to: 9, with: " ")
          + format3(phase.percentile(0.99).rounded()).leftPadded(to: 9, with: " ")
          + ratio.leftPadded(to: 11, with: " ") + latencyRatio.leftPadded(to: 14, with: " ")
          + scaling.leftPadded(to: 11, with: " ")
          + format3((phase.recordsPerBatch * 10).rounded() / 10).leftPadded(to: 11, with: " ")
          + (phase.syncMicrosMean.isNaN ? "-" : format3(phase.syncMicrosMean.rounded())).leftPadded(
            to: 10, with: " "))
    }
  }
}

extension String {
  func padding(_ width: Int) -> String {
    count >= width ? self : self + String(repeating: " ", count: width - count)
  }
}

enum ProcessInfoLite {
  static var isVerbose: Bool { getenv("MEMWAL_BENCH_VERBOSE") != nil }
}
