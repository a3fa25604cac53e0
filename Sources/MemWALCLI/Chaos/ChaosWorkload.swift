import Foundation
import MemWALClient
import MemWALCore
import Synchronization

/// One client operation of a chaos run. Every operation has its own id, used as the record's id
/// and as its idempotency key, so that the checker can look for exactly what it wrote.
struct ChaosOperation: Sendable {
  enum Kind: String, Sendable {
    /// Upsert one memory (its vector derived from its id: ``ChaosWorkload/vector(for:)``).
    case memory
    /// An upsert the node must refuse (a vector of the wrong dimension): it must never appear.
    case invalidMemory = "invalid-memory"
    case node
    /// An edge between two graph nodes already acknowledged.
    case edge
  }

  enum Outcome: Sendable {
    /// `repeat`: the answer came from a repeat of the idempotency key (an earlier attempt's record).
    case acknowledged(lsn: UInt64, epoch: UInt64, durability: String, repeat: Bool)
    case failed(String)
    case indeterminate(String)
  }

  var id: String
  var kind: Kind
  var client: Int
  /// Seconds since the run began.
  var started: Double
  var ended: Double
  var outcome: Outcome
  var from: String?
  var to: String?

  /// One JSON object: the operation as the client saw it (the run directory's operations.jsonl).
  var json: String {
    var fields = [
      "\"id\":\(jsonString(id))", "\"kind\":\"\(kind.rawValue)\"", "\"client\":\(client)",
      String(format: "\"started\":%.3f,\"ended\":%.3f", started, ended),
    ]
    if let from, let to { fields.append("\"from\":\(jsonString(from)),\"to\":\(jsonString(to))") }
    switch outcome {
    case .acknowledged(let lsn, let epoch, let durability, let isRepeat):
      fields.append(
        "\"outcome\":\"acknowledged\",\"lsn\":\(lsn),\"epoch\":\(epoch),\"durability\":\"\(durability)\",\"repeat\":\(isRepeat)"
      )
    case .failed(let error): fields.append("\"outcome\":\"failed\",\"error\":\(jsonString(error))")
    case .indeterminate(let error):
      fields.append("\"outcome\":\"indeterminate\",\"error\":\(jsonString(error))")
    }
    return "{" + fields.joined(separator: ",") + "}"
  }

  var isAcknowledged: Bool {
    if case .acknowledged = outcome { return true }
    return false
  }
  var isFailed: Bool {
    if case .failed = outcome { return true }
    return false
  }
}

/// Clients writing through `MemWALClient` (discovery, failover, keyed retries) at `quorum`, each
/// operation classified acknowledged / failed / indeterminate by `MemWALClient.Outcome`.
final class ChaosWorkload: Sendable {
  static let namespace = "chaos"
  static let dimension = 8

  private let endpoints: [String]
  private let clients: Int
  /// Each client's pace (every client starts from a copy).
  private let pacer: Pacer
  private let seed: UInt64
  private let startedAt: ContinuousClock.Instant
  private let state = Mutex<(operations: [ChaosOperation], graphNodes: [String], stopped: Bool)>(
    ([], [], false))

  init(
    endpoints: [String], clients: Int, operationsPerSecond: Int, seed: UInt64,
    startedAt: ContinuousClock.Instant
  ) {
    self.endpoints = endpoints
    self.clients = clients
    self.seed = seed
    self.startedAt = startedAt
    pacer = Pacer(perSecond: operationsPerSecond, writers: clients)
  }

  var operations: [ChaosOperation] { state.withLock { $0.operations } }
  var count: Int { state.withLock { $0.operations.count } }

  /// The memory vector of an operation id: eight components from a hash of the id, so the checker
  /// needs nothing but the id to know what was written.
  static func vector(for id: String) -> [Float] {
    var generator = SplitMix64(
      seed: id.utf8.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 })
    return (0..<dimension).map { _ in Float(generator.nextUnitInterval() * 2 - 1) }
  }

  func makeClient(deadline: Duration = .seconds(10)) -> MemWALClient {
    var options = MemWALClient.FailoverOptions()
    options.deadline = deadline
    return MemWALClient(endpoints: endpoints, timeout: .seconds(5), failover: options)
  }

  /// Creates the namespace (at `quorum`), retrying until `timeout`.
  func prepare(timeout: Duration) async throws {
    let client = makeClient()
    let deadline = ContinuousClock.now + timeout
    while true {
      do {
        _ = try await client.createNamespace(
          Self.namespace, dimension: Self.dimension, metric: .l2, durability: .quorum)
        return
      } catch let error as MemWALClientError where error.code == "namespace_exists" || error.status == 409 {
        return
      } catch {
        guard ContinuousClock.now < deadline else {
          throw CLIError("could not create the namespace within \(timeout): \(error)")
        }
        try await Task.sleep(for: .milliseconds(200))
      }
    }
  }

  func stop() { state.withLock { $0.stopped = true } }

  private var seconds: Double {
    let elapsed = ContinuousClock.now - startedAt
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
  }

  /// One client's loop until ``stop()``.
  func run(client index: Int) async {
    // Half the clients give up after 2 s instead of 10: a call cut short during a fault ends
    // indeterminate, so the checker sees writes of unknown fate, not only retried successes.
    let client = makeClient(deadline: index % 2 == 1 ? .seconds(2) : .seconds(10))
    var generator = SplitMix64(seed: seed &+ UInt64(index) &* 0x9E37_79B9)
    var sequence = 0
    var pacer = self.pacer
    while !state.withLock({ $0.stopped }) {
      await pacer.wait()
      sequence += 1
      let id = "c\(index)-\(sequence)"
      let roll = generator.next() % 100
      let known = state.withLock { $0.graphNodes }
      var operation = ChaosOperation(
        id: id, kind: .memory, client: index, started: seconds, ended: 0, outcome: .failed(""))
      let outcome: MemWALClient.Outcome
      switch roll {
      case 0..<3:
        operation.kind = .invalidMemory
        let record = MemoryRecord(id: id, vector: Array(Self.vector(for: id).dropLast()))
        outcome = await MemWALClient.Outcome {
          try await client.upsert([record], in: Self.namespace, durability: .quorum, idempotencyKey: id)
        }
      case 3..<20:
        operation.kind = .node
        outcome = await MemWALClient.Outcome {
          try await client.upsert(
            nodes: [GraphNode(id: id, type: "agent", properties: ["client": .number(Double(index))])],
            in: Self.namespace, durability: .quorum, idempotencyKey: id)
        }
      case 20..<35 where known.count >= 2:
        operation.kind = .edge
        let from = known[Int(generator.next() % UInt64(known.count))]
        let to = known[Int(generator.next() % UInt64(known.count))]
        operation.from = from
        operation.to = to
        outcome = await MemWALClient.Outcome {
          try await client.upsert(
            edges: [GraphEdge(id: id, from: from, to: to, type: "knows")], in: Self.namespace,
            durability: .quorum, idempotencyKey: id)
        }
      default:
        let record = MemoryRecord(id: id, vector: Self.vector(for: id), text: "chaos \(id)")
        outcome = await MemWALClient.Outcome {
          try await client.upsert([record], in: Self.namespace, durability: .quorum, idempotencyKey: id)
        }
      }
      switch outcome {
      case .acknowledged(let result):
        operation.outcome = .acknowledged(
          lsn: result.lsn.rawValue, epoch: result.epoch.rawValue, durability: result.durability.description,
          repeat: result.isRepeat)
      case .failed(let error): operation.outcome = .failed("\(error)")
      case .indeterminate(let error): operation.outcome = .indeterminate("\(error)")
      }
      operation.ended = seconds
      let finished = operation
      state.withLock { state in
        state.operations.append(finished)
        if finished.kind == .node, finished.isAcknowledged {
          state.graphNodes.append(finished.id)
          if state.graphNodes.count > 200 { state.graphNodes.removeFirst(100) }
        }
      }
    }
  }
}
