import Crypto
import MemWALCore
import MemWALLog
import MemWALStore

/// One change in a transaction. `ifVersion` is a compare-and-set precondition: the key's current
/// version (the LSN that wrote it) must equal it, and `LSN.zero` means "must not exist".
public enum Operation: Sendable, Equatable {
  case upsertMemory(MemoryRecord, ifVersion: LSN? = nil)
  case deleteMemory(id: String, ifVersion: LSN? = nil)
  case upsertNode(GraphNode, ifVersion: LSN? = nil)
  case deleteNode(id: String, ifVersion: LSN? = nil)
  case upsertEdge(GraphEdge, ifVersion: LSN? = nil)
  case deleteEdge(id: String, ifVersion: LSN? = nil)

  var target: TargetType {
    switch self {
    case .upsertMemory, .deleteMemory: return .memory
    case .upsertNode, .deleteNode: return .node
    case .upsertEdge, .deleteEdge: return .edge
    }
  }

  var id: String {
    switch self {
    case .upsertMemory(let memory, _): return memory.id
    case .upsertNode(let node, _): return node.id
    case .upsertEdge(let edge, _): return edge.id
    case .deleteMemory(let id, _), .deleteNode(let id, _), .deleteEdge(let id, _): return id
    }
  }

  var ifVersion: LSN? {
    switch self {
    case .upsertMemory(_, let version), .deleteMemory(_, let version), .upsertNode(_, let version),
      .deleteNode(_, let version), .upsertEdge(_, let version), .deleteEdge(_, let version):
      return version
    }
  }

  var newValue: RecordValue? {
    switch self {
    case .upsertMemory(let memory, _): return .memory(memory)
    case .upsertNode(let node, _): return .node(node)
    case .upsertEdge(let edge, _): return .edge(edge)
    case .deleteMemory, .deleteNode, .deleteEdge: return nil
    }
  }
}

/// A transaction: operations in one namespace that become durable and visible together.
public struct TransactionRequest: Sendable, Equatable {
  /// What a repeat of an idempotency key must match: the first half of a SHA-256 over the
  /// operations as asked for (target, upsert or delete, id, `ifVersion`, the new value's image).
  /// The namespace and durability are left out: the key is per namespace, and a retry may ask for
  /// more durability than the first try.
  public var requestDigest: [UInt8] {
    Self.requestDigest(of: operations, images: operations.map { $0.newValue.map(RecordCodec.encode) })
  }

  /// `requestDigest`, given each operation's new value already encoded (`images[i]` is
  /// `operations[i].newValue` through `RecordCodec.encode`).
  static func requestDigest(of operations: [Operation], images: [[UInt8]?]) -> [UInt8] {
    var writer = ByteWriter(capacity: 256)
    // The digest's own version: a new definition (or a record image format other than 1) must
    // keep computing this one for keys already logged, or a retry across an upgrade is refused.
    writer.write(UInt8(1))
    writer.write(UInt32(operations.count))
    for (operation, image) in zip(operations, images) {
      writer.write(operation.target.rawValue)
      writer.write(UInt8(image == nil ? 0 : 1))
      let id = Array(operation.id.utf8)
      writer.write(UInt32(id.count))
      writer.write(bytes: id)
      writer.write(UInt8(operation.ifVersion == nil ? 0 : 1))
      writer.write(operation.ifVersion?.rawValue ?? 0)
      writer.write(UInt32(image?.count ?? 0))
      writer.write(bytes: image ?? [])
    }
    return Array(SHA256.hash(data: writer.bytes).prefix(WALFormat.requestDigestBytes))
  }

  public var namespace: String
  public var operations: [Operation]
  public var idempotencyKey: String?
  public var durability: Durability

  public init(
    namespace: String, operations: [Operation], idempotencyKey: String? = nil, durability: Durability = .local
  ) {
    self.namespace = namespace
    self.operations = operations
    self.idempotencyKey = idempotencyKey
    self.durability = durability
  }
}

/// What a write got: its place in the log and the durability actually reached.
public struct WriteOutcome: Sendable, Equatable {
  public var lsn: LSN
  public var epoch: Epoch
  public var transactionID: TransactionID
  public var durability: Durability
  /// True when this answers a repeat of an idempotency key (nothing new was written).
  public var isRepeat: Bool
}

/// Why a write was refused. Nothing was logged when one of these is thrown.
public enum WriteError: Error, Equatable, Sendable, CustomStringConvertible {
  case unknownNamespace(String)
  case namespaceExists(String)
  case invalid(RecordError)
  case notFound(target: TargetType, id: String)
  /// An `ifVersion` precondition did not hold.
  case versionMismatch(target: TargetType, id: String, expected: LSN, actual: LSN?)
  /// An edge names a node that does not exist.
  case missingEndpoint(edge: String, node: String)
  /// The key has a write in the log whose LSN is not known yet; retry.
  case writeInFlight(target: TargetType, id: String)
  /// The log refused or failed (`WALError.failed` after an fsync failure: the outcome is unknown).
  case log(WALError)
  /// This node does not take writes (a follower, or a primary fenced by a newer epoch); `primary`
  /// is the primary's client API address when known. Nothing was written.
  case notPrimary(primary: String?)
  /// Fewer followers than the quorum needs confirmed the write in time. The write is durable on this
  /// node and may still reach the others: its outcome is unknown to the caller.
  case insufficientReplicas(String)
  /// The write was logged here but this node lost the right to acknowledge it (a newer epoch, a
  /// shutdown) before the replication it asked for was confirmed: it may or may not survive.
  case indeterminate(String)
  /// The idempotency key was already used, by the transaction at `lsn`, for a request with other
  /// operations. Nothing was written; a new request needs a new key.
  case idempotencyKeyReused(key: String, lsn: LSN?)

  public var description: String {
    switch self {
    case .unknownNamespace(let name): return "unknown namespace \(name)"
    case .namespaceExists(let name): return "namespace \(name) already exists"
    case .invalid(let error): return error.description
    case .notFound(let target, let id): return "\(target) \(id) not found"
    case .versionMismatch(let target, let id, let expected, let actual):
      return "\(target) \(id) is at version \(actual.map { "\($0)" } ?? "none (absent)"), not \(expected)"
    case .missingEndpoint(let edge, let node):
      return "edge \(edge) refers to node \(node), which does not exist"
    case .writeInFlight(let target, let id): return "\(target) \(id) has a write in flight; retry"
    case .log(let error): return error.description
    case .notPrimary(let primary):
      return "this node is not the primary" + (primary.map { "; the primary is at \($0)" } ?? "")
    case .insufficientReplicas(let detail): return "not enough replicas confirmed the write: \(detail)"
    case .indeterminate(let detail): return "the outcome of the write is unknown: \(detail)"
    case .idempotencyKeyReused(let key, let lsn):
      return
        "idempotency key \(key) was already used \(lsn.map { "by the transaction at LSN \($0) " } ?? "by a write in flight ")for a different request; nothing was written (a repeat must send the same operations, and a new request needs a new key)"
    }
  }
}

/// What a node is in its cluster.
public enum NodeRole: String, Sendable, CustomStringConvertible {
  /// Takes writes and streams its log to followers.
  case primary
  /// Takes its log from the primary and serves reads; refuses writes.
  case follower
  public var description: String { rawValue }
}

/// Replication beyond this node: `quorum` and `all_applied` writes wait here after their record is
/// durable locally. Returns the level reached, or throws `insufficientReplicas` / `indeterminate`.
public protocol ReplicationGate: Sendable {
  func wait(for lsn: LSN, epoch: Epoch, reaching durability: Durability) async throws(WriteError)
    -> Durability
}
