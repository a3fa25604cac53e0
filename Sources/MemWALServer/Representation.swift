import MemWALCore
import MemWALNode
import MemWALStore

/// How records, results and filters look in the API's JSON (snake_case fields).
enum Representation {
  static func write(_ outcome: WriteOutcome) -> JSONValue {
    var fields: JSONObject = [
      "lsn": .number(Double(outcome.lsn.rawValue)), "epoch": .number(Double(outcome.epoch.rawValue)),
      "durability": .string(outcome.durability.description),
    ]
    if outcome.isRepeat { fields["repeat"] = .bool(true) }
    return .object(fields)
  }

  static func namespace(_ config: NamespaceConfig) -> JSONValue {
    .object([
      "name": .string(config.name), "dimension": .number(Double(config.dimension)),
      "metric": .string(config.metric.rawValue),
    ])
  }

  static func memory(_ stored: StoredMemory, includeVector: Bool = true) -> JSONValue {
    var fields: JSONObject = [
      "id": .string(stored.record.id), "metadata": .object(stored.record.metadata),
      "version": .number(Double(stored.version.rawValue)),
      "updated_at": .string(formatTimestamp(stored.timestampMicros)),
    ]
    if includeVector { fields["vector"] = .array(stored.record.vector.map { .number(Double($0)) }) }
    if let text = stored.record.text { fields["text"] = .string(text) }
    if let expires = stored.record.expiresAtMicros {
      fields["expires_at"] = .string(formatTimestamp(expires))
    }
    return .object(fields)
  }

  static func node(_ node: GraphNode, version: LSN? = nil) -> JSONValue {
    var fields: JSONObject = [
      "id": .string(node.id), "type": .string(node.type), "properties": .object(node.properties),
    ]
    if let version { fields["version"] = .number(Double(version.rawValue)) }
    return .object(fields)
  }

  static func edge(_ edge: GraphEdge, version: LSN? = nil) -> JSONValue {
    var fields: JSONObject = [
      "id": .string(edge.id), "from": .string(edge.from), "to": .string(edge.to), "type": .string(edge.type),
      "properties": .object(edge.properties),
    ]
    if let from = edge.validFromMicros { fields["valid_from"] = .string(formatTimestamp(from)) }
    if let to = edge.validToMicros { fields["valid_to"] = .string(formatTimestamp(to)) }
    if let version { fields["version"] = .number(Double(version.rawValue)) }
    return .object(fields)
  }

  // MARK: requests

  /// `allowsVersion`: batch upserts take `if_version` inside each item; a transaction's operation
  /// carries it beside the item instead.
  static func memoryRecord(_ value: JSONValue, path: String, allowsVersion: Bool = true) throws(APIError)
    -> MemoryRecord
  {
    try memoryRecord(JSONFields(value, path: path), allowsVersion: allowsVersion)
  }

  /// `decodedVector`: the item's vector, already read (MemoriesBody), absent from `fields`.
  static func memoryRecord(
    _ fields: JSONFields, decodedVector: DecodedVector? = nil, allowsVersion: Bool = true
  )
    throws(APIError) -> MemoryRecord
  {
    try fields.allowOnly(
      allowsVersion
        ? ["id", "vector", "vector_base64", "text", "metadata", "expires_at", "if_version"]
        : ["id", "vector", "vector_base64", "text", "metadata", "expires_at"])
    return MemoryRecord(
      id: try fields.string("id"), vector: try fields.vector(decoded: decodedVector),
      text: try fields.optionalString("text"),
      metadata: try fields.object("metadata"), expiresAtMicros: try fields.optionalTime("expires_at"))
  }

  static func graphNode(_ value: JSONValue, path: String, allowsVersion: Bool = true) throws(APIError)
    -> GraphNode
  {
    let fields = try JSONFields(value, path: path)
    try fields.allowOnly(
      allowsVersion ? ["id", "type", "properties", "if_version"] : ["id", "type", "properties"])
    return GraphNode(
      id: try fields.string("id"), type: try fields.string("type"),
      properties: try fields.object("properties"))
  }

  static func graphEdge(_ value: JSONValue, path: String, allowsVersion: Bool = true) throws(APIError)
    -> GraphEdge
  {
    let fields = try JSONFields(value, path: path)
    let allowed: Set<String> = ["id", "from", "to", "type", "properties", "valid_from", "valid_to"]
    try fields.allowOnly(allowsVersion ? allowed.union(["if_version"]) : allowed)
    return GraphEdge(
      id: try fields.string("id"), from: try fields.string("from"), to: try fields.string("to"),
      type: try fields.string("type"),
      properties: try fields.object("properties"), validFromMicros: try fields.optionalTime("valid_from"),
      validToMicros: try fields.optionalTime("valid_to"))
  }

  static func ifVersion(_ value: JSONValue, path: String) throws(APIError) -> LSN? {
    try JSONFields(value, path: path).optionalLSN("if_version")
  }

  /// `{"field": {"eq"|"in"|"gt"|"gte"|"lt"|"lte"|"exists": …}}`, `{"and": […]}`, `{"or": […]}`,
  /// `{"not": {…}}`; several keys in one object must all hold.
  static func filter(_ value: JSONValue, depth: Int = 0) throws(APIError) -> Filter {
    guard depth <= Filter.maximumDepth else {
      throw .badRequest("filter nested deeper than \(Filter.maximumDepth)")
    }
    guard case .object(let fields) = value, !fields.isEmpty else {
      throw .badRequest("a filter must be a non-empty object")
    }
    var conditions: [Filter] = []
    for key in fields.keys.sorted() {
      let operand = fields[key]!
      switch key {
      case "and", "or":
        guard case .array(let parts) = operand else { throw .badRequest("filter \(key) takes an array") }
        var parsed: [Filter] = []
        for part in parts { parsed.append(try filter(part, depth: depth + 1)) }
        conditions.append(key == "and" ? .and(parsed) : .or(parsed))
      case "not":
        conditions.append(.not(try filter(operand, depth: depth + 1)))
      default:
        conditions.append(try fieldCondition(key, operand))
      }
    }
    return conditions.count == 1 ? conditions[0] : .and(conditions)
  }

  private static func fieldCondition(_ field: String, _ operand: JSONValue) throws(APIError) -> Filter {
    guard case .object(let operators) = operand, !operators.isEmpty else {
      return .equals(field: field, value: operand)
    }
    var conditions: [Filter] = []
    var range: (gt: Double?, gte: Double?, lt: Double?, lte: Double?) = (nil, nil, nil, nil)
    func number(_ value: JSONValue, _ name: String) throws(APIError) -> Double {
      guard case .number(let number) = value else {
        throw .badRequest("filter \(field).\(name) takes a number")
      }
      return number
    }
    for (name, value) in operators.sorted(by: { $0.key < $1.key }) {
      switch name {
      case "eq": conditions.append(.equals(field: field, value: value))
      case "ne": conditions.append(.not(.equals(field: field, value: value)))
      case "in":
        guard case .array(let values) = value else { throw .badRequest("filter \(field).in takes an array") }
        conditions.append(.isIn(field: field, values: values))
      case "exists":
        guard case .bool(let flag) = value else {
          throw .badRequest("filter \(field).exists takes a boolean")
        }
        conditions.append(flag ? .exists(field: field) : .not(.exists(field: field)))
      case "gt": range.gt = try number(value, name)
      case "gte": range.gte = try number(value, name)
      case "lt": range.lt = try number(value, name)
      case "lte": range.lte = try number(value, name)
      default: throw .badRequest("unknown filter operator \(name) on \(field)")
      }
    }
    if range.gt != nil || range.gte != nil || range.lt != nil || range.lte != nil {
      conditions.append(
        .range(
          field: field, greaterThan: range.gt, greaterOrEqual: range.gte, lessThan: range.lt,
          lessOrEqual: range.lte))
    }
    return conditions.count == 1 ? conditions[0] : .and(conditions)
  }
}
