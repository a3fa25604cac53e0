import Logging
import MemWALCore
import MemWALLog
import MemWALNode
import MemWALStore
import Synchronization

let quietLogger = Logger(label: "quiet") { _ in SwiftLogNoOpLogHandler() }

/// A clock the tests move by hand (1 ms per tick by default).
final class TestClock: WALClock, @unchecked Sendable {
  private let now = Mutex<Int64>(1_800_000_000_000_000)
  func microsecondsSinceEpoch() -> Int64 { now.withLock { $0 } }
  func advance(by micros: Int64 = 1_000) { now.withLock { $0 += micros } }
  var current: Int64 { now.withLock { $0 } }
}

func engineOptions(clock: TestClock, segmentBytes: Int = 256 << 10) -> MemoryEngine.Options {
  var options = MemoryEngine.Options()
  options.log.segmentBytes = segmentBytes
  options.log.maximumRecordBytes = 128 << 10
  options.log.clusterID = ClusterID(high: 7, low: 7)
  options.log.clock = clock
  options.checkpointEveryBytes = 0
  options.expiryInterval = nil
  options.store.retentionLSNs = 1_000_000
  // Small graphs here; a cheaper build keeps the debug-mode suite quick.
  options.store.hnsw = HNSWParameters(m: 8, efConstruction: 32)
  return options
}

/// A random workload over two namespaces: memories (some with expiry), nodes and edges; upserts,
/// updates, deletes, node deletes that cascade to edges. Invalid attempts (a delete of something
/// already gone) are skipped, as a client would see an error.
struct Workload {
  static let namespaces = [
    NamespaceConfig(name: "agents", dimension: 8, metric: .cosine),
    NamespaceConfig(name: "team", dimension: 4, metric: .l2),
  ]
  var random: Seeded

  init(seed: UInt64) { random = Seeded(seed) }

  mutating func vector(_ dimension: Int) -> [Float] {
    (0..<dimension).map { _ in Float.random(in: -1...1, using: &random) }
  }

  mutating func transaction(now: Int64) -> TransactionRequest {
    let config = Self.namespaces[Int(random.next() % 2)]
    var operations: [Operation] = []
    var used = Set<String>()
    for _ in 0..<Int.random(in: 1...3, using: &random) {
      let roll = Int.random(in: 0..<100, using: &random)
      let operation: Operation
      switch roll {
      case 0..<40:
        let id = "m\(Int.random(in: 0..<150, using: &random))"
        let expires: Int64? =
          Int.random(in: 0..<10, using: &random) == 0
          ? now + Int64.random(in: 1_000...200_000, using: &random) : nil
        operation = .upsertMemory(
          MemoryRecord(
            id: id, vector: vector(config.dimension), text: "note \(id)",
            metadata: [
              "topic": .string(["a", "b", "c"][Int(random.next() % 3)]),
              "score": .number(Double(random.next() % 100)),
            ],
            expiresAtMicros: expires))
      case 40..<50:
        operation = .deleteMemory(id: "m\(Int.random(in: 0..<150, using: &random))")
      case 50..<70:
        let id = "n\(Int.random(in: 0..<40, using: &random))"
        operation = .upsertNode(
          GraphNode(
            id: id, type: ["person", "topic"][Int(random.next() % 2)],
            properties: ["w": .number(Double(random.next() % 10))]))
      case 70..<75:
        operation = .deleteNode(id: "n\(Int.random(in: 0..<40, using: &random))")
      case 75..<95:
        let from = "n\(Int.random(in: 0..<40, using: &random))"
        let to = "n\(Int.random(in: 0..<40, using: &random))"
        operation = .upsertEdge(
          GraphEdge(
            id: "e\(Int.random(in: 0..<120, using: &random))", from: from, to: to,
            type: ["knows", "about"][Int(random.next() % 2)]))
      default:
        operation = .deleteEdge(id: "e\(Int.random(in: 0..<120, using: &random))")
      }
      let key = "\(operation)".prefix(12) + operationID(operation)
      guard used.insert(String(key)).inserted else { continue }
      operations.append(operation)
    }
    return TransactionRequest(
      namespace: config.name, operations: operations, durability: random.next() % 5 == 0 ? .memory : .local)
  }

  func operationID(_ operation: Operation) -> String {
    switch operation {
    case .upsertMemory(let memory, _): return "memory:" + memory.id
    case .deleteMemory(let id, _): return "memory:" + id
    case .upsertNode(let node, _): return "node:" + node.id
    case .deleteNode(let id, _): return "node:" + id
    case .upsertEdge(let edge, _): return "edge:" + edge.id
    case .deleteEdge(let id, _): return "edge:" + id
    }
  }

  /// Runs `count` transactions (after creating the namespaces), each attempted once, in order.
  mutating func run(_ count: Int, on engine: MemoryEngine, clock: TestClock) async throws -> (
    attempted: Int, applied: Int
  ) {
    for config in Self.namespaces where engine.store.currentNamespace(config.name) == nil {
      _ = try await engine.createNamespace(config)
    }
    var applied = 0
    for _ in 0..<count {
      clock.advance()
      let request = transaction(now: clock.current)
      if (try? await engine.execute(request)) != nil { applied += 1 }
    }
    return (count, applied)
  }
}

/// A store built by applying the log's records 1...lsn: the reference for "the state at lsn".
func replayedStore(_ log: WriteAheadLog, through lsn: LSN, options: MemoryStore.Options) throws -> MemoryStore
{
  let store = MemoryStore(options: options)
  var batch: [WALRecord] = []
  try log.readRecords(from: LSN(1), through: lsn) { record in
    batch.append(record)
    if batch.count == 256 {
      store.apply(batch)
      batch.removeAll()
    }
    return true
  }
  store.apply(batch)
  return store
}

/// The core's seeded generator, under the name these tests use.
typealias Seeded = SplitMix64

extension SplitMix64 {
  init(_ seed: UInt64) { self.init(seed: seed) }
}
