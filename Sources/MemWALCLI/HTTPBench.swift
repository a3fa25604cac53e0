import ArgumentParser
import Glibc
import Hummingbird
import Logging
import MemWALClient
import MemWALCore
import MemWALLog
import MemWALNode
import MemWALServer
import Synchronization

/// `memwal bench http`: durable inserts/s (batches of 1 and of 100) and search QPS through the
/// HTTP API (a server in this process on a loopback port, clients via MemWALClient), next to the
/// same workload run in-process against the engine, so the API's cost shows as a ratio.
struct HTTPBench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "http",
    abstract: "Measure the API's inserts/s and search QPS against the same work in-process.")

  @Option(help: "Directory to run in (fresh subdirectories are made and removed).")
  var dir: String

  @Option(help: "Seconds per phase.")
  var seconds: Double = 5

  @Option(help: "Concurrent clients.")
  var clients: Int = 16

  @Option(help: "Vector dimension.")
  var dimension: Int = 384

  @Option(
    name: .customLong("max-items"),
    help: "Most memories per insert phase (the applier must index them all before the search phase).")
  var maxItems: Int = 20_000

  enum Mode: String, ExpressibleByArgument, CaseIterable {
    case both
    case inProcess = "in-process"
    case api
  }

  @Option(help: "Which side to run: both (the default, for the ratios), in-process or api (to profile one).")
  var mode: Mode = .both

  @Option(
    name: .customLong("batches"), parsing: .upToNextOption,
    help: "Insert batch sizes to measure (default 1 100).")
  var batches: [Int] = [1, 100]

  enum Encoding: String, ExpressibleByArgument, CaseIterable {
    case base64
    case json
  }

  @Option(
    name: .customLong("vector-encoding"),
    help: "How MemWALClient sends vectors: base64 (vector_base64, its default) or json (vector).")
  var vectorEncoding: Encoding = .base64

  @Flag(name: .customLong("skip-search"), help: "Leave out the search phase.")
  var skipSearch = false

  @Flag(help: "Print one JSON object.")
  var json = false

  func validate() throws {
    guard seconds > 0, seconds <= 600 else { throw ValidationError("--seconds must be within (0, 600]") }
    guard clients >= 1, clients <= 1_024 else { throw ValidationError("--clients must be within 1...1024") }
    guard dimension >= 1, dimension <= 4_096 else {
      throw ValidationError("--dimension must be within 1...4096")
    }
    guard !batches.isEmpty, batches.allSatisfy({ (1...1_000).contains($0) }) else {
      throw ValidationError("--batches must be within 1...1000")
    }
  }

  struct Phase: Sendable {
    var name: String
    var operations: Int
    var items: Int
    var seconds: Double
    var perSecond: Double { Double(items) / seconds }
  }

  final class Tally: Sendable {
    let operations = Atomic<Int>(0)
    let items = Atomic<Int>(0)
    let errors = Mutex<[String]>([])
  }

  /// Runs `work` from `clients` tasks until the deadline; `work` returns how many items it handled.
  func drive(_ name: String, limit: Int = .max, _ work: @escaping @Sendable (Int, Int) async throws -> Int)
    async -> Phase
  {
    let tally = Tally()
    let start = monotonicNanoseconds()
    let deadline = start + UInt64(seconds * 1e9)
    await withTaskGroup(of: Void.self) { group in
      for client in 0..<clients {
        group.addTask {
          var round = 0
          while monotonicNanoseconds() < deadline && tally.items.load(ordering: .relaxed) < limit {
            do {
              tally.items.add(try await work(client, round), ordering: .relaxed)
              tally.operations.add(1, ordering: .relaxed)
            } catch {
              tally.errors.withLock { if $0.count < 5 { $0.append("\(error)") } }
            }
            round += 1
          }
        }
      }
    }
    for error in tally.errors.withLock({ $0 }) { warn("\(name): \(error)") }
    return Phase(
      name: name, operations: tally.operations.load(ordering: .relaxed),
      items: tally.items.load(ordering: .relaxed),
      seconds: Double(monotonicNanoseconds() - start) / 1e9)
  }

  static func vector(_ seed: Int, _ dimension: Int) -> [Float] {
    var generator = SplitMix64(seed: UInt64(seed))
    return (0..<dimension).map { _ in Float(generator.next() % 2001) / 1000 - 1 }
  }

  func engineOptions() -> MemoryEngine.Options {
    var options = MemoryEngine.Options()
    options.checkpointEveryBytes = 0
    options.expiryInterval = nil
    return options
  }

  func run() async throws {
    let root = joinPath(dir, "http-bench-\(getpid())")
    try POSIXFileSystem().createDirectory(root)
    defer { _ = system("rm -rf '\(root)'") }
    var phases: [Phase] = []
    if mode != .api { phases += try await inProcess(directory: joinPath(root, "in-process")) }
    if mode != .inProcess { phases += try await throughAPI(directory: joinPath(root, "api")) }
    report(phases)
  }

  static let quiet = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }

  /// The same work straight into `MemoryEngine`: the caller has [Float] vectors and builds records.
  func inProcess(directory: String) async throws -> [Phase] {
    let dimension = self.dimension
    let local = try await MemoryEngine.open(
      directory: directory, options: engineOptions(), logger: Self.quiet)
    _ = try await local.createNamespace(NamespaceConfig(name: "bench", dimension: dimension, metric: .l2))
    // The applier is paused while inserts are measured, in both modes, so that building the
    // index (the slowest step, DESIGN §4) does not compete with the write path being compared.
    local.setApplierPaused(true)
    var phases: [Phase] = []
    for batch in batches {
      phases.append(
        await drive("in-process insert, batch \(batch)", limit: maxItems) { client, round in
          let operations: [Operation] = (0..<batch).map { index in
            .upsertMemory(
              MemoryRecord(
                id: "c\(client)-r\(round)-\(index)",
                vector: Self.vector(client * 1_000_003 + round * 101 + index, dimension)))
          }
          _ = try await local.execute(
            TransactionRequest(namespace: "bench", operations: operations, durability: .local))
          return batch
        })
    }
    // Without the search phase the index is never built: the log holds the inserts, which is
    // what was measured, and closing does not wait for the applier.
    if !skipSearch {
      local.setApplierPaused(false)
      try await local.waitForApplied(local.log.positions.written.value, timeout: .seconds(3600))
      phases.append(
        await drive("in-process search, k 10") { client, round in
          _ = try local.store.search(
            Self.vector(client * 7 + round, dimension), k: 10, in: "bench", at: local.latestReadPoint())
          return 1
        })
    }
    await local.close()
    return phases
  }

  /// The same work through a server on a loopback port in this process, callers using MemWALClient.
  func throughAPI(directory: String) async throws -> [Phase] {
    let dimension = self.dimension
    let remote = try await MemoryEngine.open(
      directory: directory, options: engineOptions(), logger: Self.quiet)
    let (ports, continuation) = AsyncStream<Int>.makeStream()
    let application = NodeServer.makeApplication(
      engine: remote, host: "127.0.0.1", port: 0, logger: Self.quiet
    ) {
      continuation.yield($0)
    }
    let server = Task { try await application.runService(gracefulShutdownSignals: []) }
    var iterator = ports.makeAsyncIterator()
    guard let port = await iterator.next() else { throw ValidationError("the server did not start") }
    let client = MemWALClient(
      baseURL: "http://127.0.0.1:\(port)", vectorEncoding: vectorEncoding == .json ? .json : .base64)
    try await client.createNamespace("bench", dimension: dimension, metric: .l2)
    remote.setApplierPaused(true)
    var phases: [Phase] = []
    for batch in batches {
      phases.append(
        await drive("API insert, batch \(batch)", limit: maxItems) { clientIndex, round in
          let memories = (0..<batch).map { index in
            MemoryRecord(
              id: "c\(clientIndex)-r\(round)-\(index)",
              vector: Self.vector(clientIndex * 1_000_003 + round * 101 + index, dimension))
          }
          try await client.upsert(memories, in: "bench", durability: .local)
          return batch
        })
    }
    // Without the search phase the index is never built: the log holds the inserts, which is
    // what was measured, and closing does not wait for the applier.
    if !skipSearch {
      remote.setApplierPaused(false)
      try await remote.waitForApplied(remote.log.positions.written.value, timeout: .seconds(3600))
      phases.append(
        await drive("API search, k 10") { clientIndex, round in
          _ = try await client.search(
            Self.vector(clientIndex * 7 + round, dimension), k: 10, in: "bench", consistency: .latest)
          return 1
        })
    }
    server.cancel()
    _ = await server.result
    await remote.close()
    return phases
  }

  func report(_ phases: [Phase]) {
    func perSecond(_ name: String) -> Double? { phases.first { $0.name == name }?.perSecond }
    var ratios: [(String, Double)] = []
    for batch in batches {
      if let api = perSecond("API insert, batch \(batch)"),
        let local = perSecond("in-process insert, batch \(batch)")
      {
        ratios.append(("insert_batch_\(batch)_api_over_in_process", api / local))
      }
    }
    if let api = perSecond("API search, k 10"), let local = perSecond("in-process search, k 10") {
      ratios.append(("search_api_over_in_process", api / local))
    }
    if json {
      let rows = phases.map {
        "{\"name\":\(jsonString($0.name)),\"operations\":\($0.operations),\"items\":\($0.items),"
          + "\"seconds\":\(jsonNumber($0.seconds)),\"items_per_second\":\(jsonNumber($0.perSecond))}"
      }
      emit(
        "{\"benchmark\":\"http\",\"vector_encoding\":\"\(vectorEncoding.rawValue)\",\"clients\":\(clients),\"dimension\":\(dimension),\"phases\":[\(rows.joined(separator: ","))]"
          + ratios.map { ",\"\($0.0)\":\(jsonNumber($0.1))" }.joined() + "}")
      return
    }
    emit(
      "memwal bench http: \(clients) clients, \(dimension)-d vectors, \(format3(seconds)) s per phase, durability local, "
        + "vectors as \(vectorEncoding.rawValue)"
    )
    for phase in phases {
      emit(phase.name.padding(34) + format3(phase.perSecond.rounded()).leftPadded(to: 12, with: " ") + " /s")
    }
    for (name, value) in ratios { emit(name.padding(40) + format3(value)) }
  }
}
