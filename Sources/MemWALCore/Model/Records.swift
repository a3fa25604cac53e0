/// A namespace: the unit of isolation. Its dimension and metric are fixed at creation.
public struct NamespaceConfig: Sendable, Hashable {
  public var name: String
  public var dimension: Int
  public var metric: DistanceMetric

  public init(name: String, dimension: Int, metric: DistanceMetric) {
    self.name = name
    self.dimension = dimension
    self.metric = metric
  }
}

/// A memory: an embedding with optional text and metadata, and an optional expiry time.
public struct MemoryRecord: Sendable, Hashable {
  public var id: String
  public var vector: [Float]
  public var text: String?
  public var metadata: JSONObject
  /// Microseconds since the Unix epoch after which reads no longer see it.
  public var expiresAtMicros: Int64?

  public init(
    id: String, vector: [Float], text: String? = nil, metadata: JSONObject = [:],
    expiresAtMicros: Int64? = nil
  ) {
    self.id = id
    self.vector = vector
    self.text = text
    self.metadata = metadata
    self.expiresAtMicros = expiresAtMicros
  }
}

/// A knowledge-graph node.
public struct GraphNode: Sendable, Hashable {
  public var id: String
  public var type: String
  public var properties: JSONObject

  public init(id: String, type: String, properties: JSONObject = [:]) {
    self.id = id
    self.type = type
    self.properties = properties
  }
}

/// A directed, typed knowledge-graph edge, optionally valid only for an event-time interval.
public struct GraphEdge: Sendable, Hashable {
  public var id: String
  public var from: String
  public var to: String
  public var type: String
  public var properties: JSONObject
  public var validFromMicros: Int64?
  public var validToMicros: Int64?

  public init(
    id: String, from: String, to: String, type: String, properties: JSONObject = [:],
    validFromMicros: Int64? = nil,
    validToMicros: Int64? = nil
  ) {
    self.id = id
    self.from = from
    self.to = to
    self.type = type
    self.properties = properties
    self.validFromMicros = validFromMicros
    self.validToMicros = validToMicros
  }

  /// Whether the edge holds at event time `micros` (an open bound holds forever that way).
  public func isValid(at micros: Int64) -> Bool {
    if let from = validFromMicros, micros < from { return false }
    if let to = validToMicros, micros >= to { return false }
    return true
  }
}

/// The value of any key, as a before- or after-image holds it.
public enum RecordValue: Sendable, Hashable {
  case namespace(NamespaceConfig)
  case memory(MemoryRecord)
  case node(GraphNode)
  case edge(GraphEdge)

  public var target: TargetType {
    switch self {
    case .namespace: return .namespace
    case .memory: return .memory
    case .node: return .node
    case .edge: return .edge
    }
  }

  public var id: String {
    switch self {
    case .namespace(let config): return config.name
    case .memory(let memory): return memory.id
    case .node(let node): return node.id
    case .edge(let edge): return edge.id
    }
  }
}
