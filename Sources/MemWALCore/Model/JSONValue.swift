/// A JSON value: what metadata and properties hold. Objects keep their keys sorted, so equal
/// values encode to equal bytes (the state digest relies on it).
public indirect enum JSONValue: Sendable, Hashable, CustomStringConvertible {
  case null
  case bool(Bool)
  case number(Double)
  case string(String)
  case array([JSONValue])
  case object([String: JSONValue])

  public var description: String {
    switch self {
    case .null: return "null"
    case .bool(let value): return value ? "true" : "false"
    case .number(let value):
      if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
      return String(value)
    case .string(let value): return "\"" + value + "\""
    case .array(let values): return "[" + values.map(\.description).joined(separator: ",") + "]"
    case .object(let fields):
      return "{"
        + fields.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",") + "}"
    }
  }

  /// The value at a dotted path (`"a.b"`) inside an object, if any.
  public func value(at path: [Substring]) -> JSONValue? {
    var current = self
    for key in path {
      guard case .object(let fields) = current, let next = fields[String(key)] else { return nil }
      current = next
    }
    return current
  }

  /// Nesting depth (a scalar is 0).
  public var depth: Int {
    switch self {
    case .array(let values): return 1 + (values.map(\.depth).max() ?? 0)
    case .object(let fields): return 1 + (fields.values.map(\.depth).max() ?? 0)
    default: return 0
    }
  }
}

/// A JSON object, as metadata and properties are.
public typealias JSONObject = [String: JSONValue]
