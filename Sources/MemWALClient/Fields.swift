import MemWALCore

/// Reading the fields of an API response; a response of the wrong shape is an error, not a trap.
struct Fields {
  let value: JSONValue
  let fields: JSONObject

  init(_ value: JSONValue) throws {
    self.value = value
    guard case .object(let fields) = value else {
      throw MemWALClientError(
        status: 0, code: "unexpected_response", message: "expected an object: \(value.jsonText.prefix(200))")
    }
    self.fields = fields
  }

  private func missing(_ key: String) -> MemWALClientError {
    MemWALClientError(
      status: 0, code: "unexpected_response", message: "field \(key) missing or of the wrong type")
  }

  func string(_ key: String) throws -> String {
    guard case .string(let text)? = fields[key] else { throw missing(key) }
    return text
  }

  func optionalString(_ key: String) -> String? {
    guard case .string(let text)? = fields[key] else { return nil }
    return text
  }

  func number(_ key: String) throws -> Double {
    guard case .number(let number)? = fields[key] else { throw missing(key) }
    return number
  }

  func integer(_ key: String) throws -> Int {
    let value = try number(key)
    guard value == value.rounded(), abs(value) < 9e15 else { throw missing(key) }
    return Int(value)
  }

  func optionalBool(_ key: String) -> Bool? {
    guard case .bool(let flag)? = fields[key] else { return nil }
    return flag
  }

  func optionalObject(_ key: String) -> JSONObject? {
    guard case .object(let object)? = fields[key] else { return nil }
    return object
  }

  func object(_ key: String) throws -> Fields {
    guard let nested = fields[key] else { throw missing(key) }
    return try Fields(nested)
  }

  func array(_ key: String) throws -> [JSONValue] {
    guard case .array(let values)? = fields[key] else { throw missing(key) }
    return values
  }
}

extension MemWALClient {
  static func json(_ node: GraphNode) -> JSONValue {
    .object(["id": .string(node.id), "type": .string(node.type), "properties": .object(node.properties)])
  }

  static func json(_ edge: GraphEdge) -> JSONValue {
    var fields: JSONObject = [
      "id": .string(edge.id), "from": .string(edge.from), "to": .string(edge.to), "type": .string(edge.type),
      "properties": .object(edge.properties),
    ]
    if let from = edge.validFromMicros { fields["valid_from"] = .number(Double(from)) }
    if let to = edge.validToMicros { fields["valid_to"] = .number(Double(to)) }
    return .object(fields)
  }

  static func namespace(_ value: JSONValue) throws -> NamespaceConfig {
    let fields = try Fields(value)
    guard let metric = DistanceMetric(rawValue: try fields.string("metric")) else {
      throw MemWALClientError(status: 0, code: "unexpected_response", message: "unknown metric")
    }
    return NamespaceConfig(
      name: try fields.string("name"), dimension: try fields.integer("dimension"), metric: metric)
  }

  static func memoryRecord(_ fields: Fields) throws -> MemoryRecord {
    let vector = try fields.array("vector").map { value -> Float in
      guard case .number(let number) = value else {
        throw MemWALClientError(status: 0, code: "unexpected_response", message: "vector")
      }
      return Float(number)
    }
    let expires = fields.optionalString("expires_at").flatMap(parseRFC3339)
    return MemoryRecord(
      id: try fields.string("id"), vector: vector, text: fields.optionalString("text"),
      metadata: fields.optionalObject("metadata") ?? [:],
      expiresAtMicros: expires)
  }
}
