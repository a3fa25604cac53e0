/// Limits on what a write may contain. Everything that grows has one (STYLE habit 4); each is
/// checked before anything is logged, and breaking one is a `RecordError`.
public struct RecordLimits: Sendable, Equatable {
  public var maximumDimension = 4096
  public var maximumTextBytes = 64 << 10
  /// Encoded size of a memory's metadata or a node's or edge's properties.
  public var maximumMetadataBytes = 64 << 10
  public var maximumJSONDepth = 16
  public var maximumIDBytes = 512
  public var maximumTypeBytes = 128
  public var maximumOperationsPerTransaction = 1000

  public init() {}
}

/// Why a record or a transaction was refused. Nothing is written when one is thrown.
public enum RecordError: Error, Equatable, Sendable, CustomStringConvertible {
  case invalid(field: String, reason: String)
  case dimensionMismatch(namespace: String, expected: Int, got: Int)
  case tooLarge(field: String, bytes: Int, limit: Int)

  public var description: String {
    switch self {
    case .invalid(let field, let reason): return "invalid \(field): \(reason)"
    case .dimensionMismatch(let namespace, let expected, let got):
      return "namespace \(namespace) holds \(expected)-dimensional vectors; got \(got)"
    case .tooLarge(let field, let bytes, let limit):
      return "\(field) is \(bytes) bytes; the limit is \(limit)"
    }
  }
}

extension RecordLimits {
  public func check(id: String, field: String = "id") throws(RecordError) {
    let count = id.utf8.count
    guard count > 0 else { throw .invalid(field: field, reason: "must not be empty") }
    guard count <= maximumIDBytes else { throw .tooLarge(field: field, bytes: count, limit: maximumIDBytes) }
    guard !id.unicodeScalars.contains(where: { $0.value < 0x20 || $0 == "/" }) else {
      throw .invalid(field: field, reason: "must not contain control characters or '/'")
    }
  }

  public func check(namespace config: NamespaceConfig) throws(RecordError) {
    try check(id: config.name, field: "name")
    guard config.name.utf8.count <= 128 else {
      throw .tooLarge(field: "name", bytes: config.name.utf8.count, limit: 128)
    }
    guard config.dimension >= 1, config.dimension <= maximumDimension else {
      throw .invalid(field: "dimension", reason: "\(config.dimension) is outside 1...\(maximumDimension)")
    }
  }

  public func check(memory: MemoryRecord, in config: NamespaceConfig) throws(RecordError) {
    try check(id: memory.id)
    guard memory.vector.count == config.dimension else {
      throw .dimensionMismatch(namespace: config.name, expected: config.dimension, got: memory.vector.count)
    }
    if let index = memory.vector.firstIndex(where: { !$0.isFinite }) {
      throw .invalid(
        field: "vector", reason: "component \(index) is \(memory.vector[index]), not a finite number")
    }
    if config.metric == .cosine && memory.vector.allSatisfy({ $0 == 0 }) {
      throw .invalid(field: "vector", reason: "a zero vector has no direction under the cosine metric")
    }
    if let text = memory.text, text.utf8.count > maximumTextBytes {
      throw .tooLarge(field: "text", bytes: text.utf8.count, limit: maximumTextBytes)
    }
    try check(json: memory.metadata, field: "metadata")
  }

  public func check(node: GraphNode) throws(RecordError) {
    try check(id: node.id)
    try check(type: node.type)
    try check(json: node.properties, field: "properties")
  }

  public func check(edge: GraphEdge) throws(RecordError) {
    try check(id: edge.id)
    try check(id: edge.from, field: "from")
    try check(id: edge.to, field: "to")
    try check(type: edge.type)
    try check(json: edge.properties, field: "properties")
    if let from = edge.validFromMicros, let to = edge.validToMicros, to <= from {
      throw .invalid(field: "valid_to", reason: "must be after valid_from")
    }
  }

  func check(type: String) throws(RecordError) {
    let count = type.utf8.count
    guard count > 0 else { throw .invalid(field: "type", reason: "must not be empty") }
    guard count <= maximumTypeBytes else {
      throw .tooLarge(field: "type", bytes: count, limit: maximumTypeBytes)
    }
  }

  func check(json: JSONObject, field: String) throws(RecordError) {
    let value = JSONValue.object(json)
    guard value.depth <= maximumJSONDepth else {
      throw .invalid(field: field, reason: "nested \(value.depth) deep; the limit is \(maximumJSONDepth)")
    }
    if case .some(let bad) = firstNonFinite(value) {
      throw .invalid(field: field, reason: "\(bad) is not a finite number")
    }
    var writer = ByteWriter()
    RecordCodec.write(value, into: &writer)
    guard writer.count <= maximumMetadataBytes else {
      throw .tooLarge(field: field, bytes: writer.count, limit: maximumMetadataBytes)
    }
  }

  private func firstNonFinite(_ value: JSONValue) -> Double? {
    switch value {
    case .number(let number): return number.isFinite ? nil : number
    case .array(let values): return values.lazy.compactMap(firstNonFinite).first
    case .object(let fields): return fields.values.lazy.compactMap(firstNonFinite).first
    default: return nil
    }
  }
}
