/// What one operation of a transaction does to its target.
public enum OperationKind: UInt8, Sendable, CaseIterable, CustomStringConvertible {
  case insert = 1
  case update = 2
  case delete = 3

  public var description: String {
    switch self {
    case .insert: return "insert"
    case .update: return "update"
    case .delete: return "delete"
    }
  }
}

/// The kind of key an operation touches. Every key is `(namespace, id)`.
public enum TargetType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
  case namespace = 1
  case memory = 2
  case node = 3
  case edge = 4

  public var description: String {
    switch self {
    case .namespace: return "namespace"
    case .memory: return "memory"
    case .node: return "node"
    case .edge: return "edge"
    }
  }
}

/// One change inside a transaction: the key, and its value before and after (opaque bytes at this
/// layer; the stores define their encoding). An insert has no before-image, a delete no after-image.
public struct WALOperation: Sendable, Equatable {
  public var kind: OperationKind
  public var target: TargetType
  public var id: String
  public var before: [UInt8]?
  public var after: [UInt8]?

  public init(
    kind: OperationKind, target: TargetType, id: String, before: [UInt8]? = nil, after: [UInt8]? = nil
  ) {
    self.kind = kind
    self.target = target
    self.id = id
    self.before = before
    self.after = after
  }
}

/// A transaction: one or more operations in one namespace that become durable and visible
/// atomically. One transaction is one WAL record.
public struct WALTransaction: Sendable, Equatable {
  public var namespace: String
  public var operations: [WALOperation]
  /// Set when the client gave one; a repeat of the key returns the first outcome.
  public var idempotencyKey: String?
  /// With a key: a digest of the request as the client sent it (`WALFormat.requestDigestBytes`
  /// bytes), so a later request with the same key and a different body is refused instead of
  /// being answered with this one's outcome. Records written before it existed have none.
  public var requestDigest: [UInt8]?

  public init(
    namespace: String, operations: [WALOperation], idempotencyKey: String? = nil,
    requestDigest: [UInt8]? = nil
  ) {
    self.namespace = namespace
    self.operations = operations
    self.idempotencyKey = idempotencyKey
    self.requestDigest = requestDigest
  }
}

/// The start of a new epoch: the record's own LSN is the epoch's first LSN.
public struct EpochChange: Sendable, Equatable {
  public var previousEpoch: Epoch
  /// The node that leads the new epoch.
  public var leader: String

  public init(previousEpoch: Epoch, leader: String) {
    self.previousEpoch = previousEpoch
    self.leader = leader
  }
}

/// k changed at run time (`memwal ctl set-quorum`): from this record on, the primary acknowledges
/// a `quorum` write once `quorumFollowers` followers have flushed it.
public struct QuorumChange: Sendable, Equatable {
  public var quorumFollowers: Int
  /// The largest k a record may carry.
  public static let maximum = 1_024

  public init(quorumFollowers: Int) {
    self.quorumFollowers = quorumFollowers
  }
}

/// What a record carries.
public enum WALPayload: Sendable, Equatable {
  case transaction(WALTransaction)
  case epochChange(EpochChange)
  case quorumChange(QuorumChange)

  public var recordType: UInt8 {
    switch self {
    case .transaction(let transaction):
      return transaction.requestDigest == nil
        ? WALFormat.RecordType.transaction : WALFormat.RecordType.keyedTransaction
    case .epochChange: return WALFormat.RecordType.epochChange
    case .quorumChange: return WALFormat.RecordType.quorumChange
    }
  }
}

/// A decoded log record.
public struct WALRecord: Sendable, Equatable {
  public var lsn: LSN
  public var epoch: Epoch
  public var transactionID: TransactionID
  /// Commit time, microseconds since the Unix epoch; strictly increasing along the log.
  public var timestampMicros: Int64
  public var payload: WALPayload

  public init(
    lsn: LSN, epoch: Epoch, transactionID: TransactionID, timestampMicros: Int64, payload: WALPayload
  ) {
    self.lsn = lsn
    self.epoch = epoch
    self.transactionID = transactionID
    self.timestampMicros = timestampMicros
    self.payload = payload
  }
}
