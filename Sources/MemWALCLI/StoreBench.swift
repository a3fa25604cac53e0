import ArgumentParser
import Glibc
import Logging
import MemWALCore
import MemWALLog
import MemWALNode
import MemWALStore

/// `memwal bench store`: the whole node path for vectors — durable writes through the engine, the
/// applier building the index, a checkpoint, and a restart that loads it — on seeded clustered data.
struct StoreBench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "store",
    abstract: "Measure applier throughput, checkpoint size and time, and restart (load + replay) time.")

  @Option(help: "Directory to run in (a fresh subdirectory is made and removed).")
  var dir: String

  @Option(help: "Memories to write.")
  var count: Int = 100_000

  @Option(help: "Vector dimension.")
  var dimension: Int = 384

  @Option(name: .customLong("batch"), help: "Memories per transaction.")
  var batch: Int = 100

  @Flag(help: "Print one JSON object.")
  var json = false

  func validate() throws {
    guard count >= 1, count <= 10_000_000 else {
      throw ValidationError("--count must be within 1...10000000")
    }
    guard dimension >= 1, dimension <= 4096 else {
      throw ValidationError("--dimension must be within 1...4096")
    }
    guard batch >= 1, batch <= 1000 else { throw ValidationError("--batch must be within 1...1000") }
  }

  func run() async throws {
    let path = joinPath(dir, "store-bench-\(getpid())")
    try POSIXFileSystem().createDirectory(path)
    defer { _ = system("rm -rf '\(path)'") }
    let quiet = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }
    var options = MemoryEngine.Options()
    options.checkpointEveryBytes = 0
    options.expiryInterval = nil
    options.store.exactSearchThreshold = 0

    var engine = try await MemoryEngine.open(directory: path, options: options, logger: quiet)
    _ = try await engine.createNamespace(NamespaceConfig(name: "bench", dimension: dimension, metric: .l2))
    var random = SplitMix64(seed: 2026)
    let centers = (0..<64).map { _ in (0..<dimension).map { _ in Float(random.next() % 2000) / 1000 - 1 } }
    let start = monotonicNanoseconds()
    var last = LSN.zero
    var written = 0
    while written < count {
      let size = min(batch, count - written)
      let operations: [Operation] = (0..<size).map { offset in
        let center = centers[Int(random.next() % UInt64(centers.count))]
        let vector = center.map { $0 + Float(Int64(random.next() % 2001) - 1000) / 10_000 }
        return .upsertMemory(MemoryRecord(id: "m\(written + offset)", vector: vector))
      }
      last = try await engine.execute(
        TransactionRequest(namespace: "bench", operations: operations, durability: .local)
      ).lsn
      written += size
    }
    let acknowledged = Double(monotonicNanoseconds() - start) / 1e9
    try await engine.waitForApplied(last, timeout: .seconds(3600))
    let applied = Double(monotonicNanoseconds() - start) / 1e9
    let checkpointStart = monotonicNanoseconds()
    let checkpointLSN = try await engine.checkpoint()
    let checkpointSeconds = Double(monotonicNanoseconds() - checkpointStart) / 1e9
    let digest = try engine.store.digest()
    await engine.close()
    let checkpointBytes = try POSIXFileSystem().openFile(
      joinPath(joinPath(path, "checkpoints"), LogFileNames.checkpoint(lsn: checkpointLSN)), mode: .readOnly
    ).size()

    let openStart = monotonicNanoseconds()
    engine = try await MemoryEngine.open(directory: path, options: options, logger: quiet)
    let openSeconds = Double(monotonicNanoseconds() - openStart) / 1e9
    let same = try engine.store.digest() == digest
    await engine.close()
    guard same else {
      throw ValidationError("the state digest after the restart differs from the one before")
    }

    let fields: [(String, String)] = [
      ("count", "\(count)"), ("dimension", "\(dimension)"), ("batch", "\(batch)"),
      ("write_seconds", jsonNumber(acknowledged)),
      ("acknowledged_per_second", jsonNumber(Double(count) / acknowledged)),
      ("applied_seconds", jsonNumber(applied)), ("applied_per_second", jsonNumber(Double(count) / applied)),
      ("checkpoint_seconds", jsonNumber(checkpointSeconds)), ("checkpoint_bytes", "\(checkpointBytes)"),
      ("restart_seconds", jsonNumber(openSeconds)), ("digest_matches", "true"),
    ]
    if json {
      emit("{\"benchmark\":\"store\"," + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}")
    } else {
      for (name, value) in fields { emit(name.padding(26) + value) }
    }
  }
}
