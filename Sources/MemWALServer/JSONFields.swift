import MemWALCore
import MemWALNode
import MemWALStore

/// Typed access to the fields of a JSON request object; every mistake names its field.
struct JSONFields {
  let fields: [String: JSONValue]
  let path: String

  init(_ value: JSONValue, path: String = "body") throws(APIError) {
    guard case .object(let fields) = value else { throw .badRequest("\(path) must be a JSON object") }
    self.fields = fields
    self.path = path
  }

  func name(_ key: String) -> String { path == "body" || isQuery ? key : "\(path).\(key)" }

  /// Query parameters arrive as text; integers in them are parsed where an integer is expected.
  var isQuery: Bool { path == "query" }

  func has(_ key: String) -> Bool { fields[key].map { $0 != .null } ?? false }

  /// Refuses fields the route does not know, so typos are not silently ignored.
  func allowOnly(_ keys: Set<String>) throws(APIError) {
    if let unknown = fields.keys.sorted().first(where: { !keys.contains($0) }) {
      throw .badRequest("unknown field \(name(unknown))")
    }
  }

  func string(_ key: String) throws(APIError) -> String {
    guard let value = try optionalString(key) else { throw .badRequest("\(name(key)) is required") }
    return value
  }

  func optionalString(_ key: String) throws(APIError) -> String? {
    switch fields[key] {
    case nil, .null?: return nil
    case .string(let value)?: return value
    default: throw .badRequest("\(name(key)) must be a string")
    }
  }

  func integer(_ key: String) throws(APIError) -> Int {
    guard let value = try optionalInteger(key) else { throw .badRequest("\(name(key)) is required") }
    return value
  }

  func optionalInteger(_ key: String) throws(APIError) -> Int? {
    switch fields[key] {
    case nil, .null?: return nil
    case .number(let value)? where value == value.rounded() && abs(value) < 9.0e15: return Int(value)
    case .string(let text)? where isQuery:
      guard let value = Int(text) else { throw .badRequest("\(name(key)) must be an integer") }
      return value
    default: throw .badRequest("\(name(key)) must be an integer")
    }
  }

  static let maximumVectorComponents = 65_536

  /// A vector from `vector` (an array of numbers) or `vector_base64` (VectorBase64), exactly one of
  /// them; `decoded` is one of them already read (MemoriesBody), so absent from these fields.
  func vector(decoded: DecodedVector? = nil) throws(APIError) -> [Float] {
    let given = ["vector", "vector_base64"].filter { has($0) || decoded?.field == $0 }
    guard given.count < 2 else {
      throw .badRequest("give \(name("vector")) or \(name("vector_base64")), not both")
    }
    if let decoded { return decoded.components }
    guard given == ["vector_base64"] else { return try vector("vector") }
    let text = try string("vector_base64")
    do {
      return try VectorBase64.decode(text, maximumComponents: Self.maximumVectorComponents)
    } catch {
      throw .badRequest("\(name("vector_base64")) \(error)")
    }
  }

  func vector(_ key: String) throws(APIError) -> [Float] {
    guard case .array(let values)? = fields[key] else {
      throw .badRequest("\(name(key)) must be an array of numbers")
    }
    guard values.count <= Self.maximumVectorComponents else {
      throw .badRequest("\(name(key)) has too many components")
    }
    var vector: [Float] = []
    vector.reserveCapacity(values.count)
    for (index, value) in values.enumerated() {
      guard case .number(let number) = value else {
        throw .badRequest("\(name(key))[\(index)] must be a number")
      }
      let component = Float(number)
      guard component.isFinite else {
        throw .badRequest("\(name(key))[\(index)] is out of range for a 32-bit float")
      }
      vector.append(component)
    }
    return vector
  }

  func object(_ key: String) throws(APIError) -> JSONObject {
    switch fields[key] {
    case nil, .null?: return [:]
    case .object(let value)?: return value
    default: throw .badRequest("\(name(key)) must be an object")
    }
  }

  func array(_ key: String) throws(APIError) -> [JSONValue] {
    guard case .array(let values)? = fields[key] else { throw .badRequest("\(name(key)) must be an array") }
    return values
  }

  func optionalLSN(_ key: String) throws(APIError) -> LSN? {
    guard let value = try optionalInteger(key) else { return nil }
    guard value >= 0 else { throw .badRequest("\(name(key)) must not be negative") }
    return LSN(UInt64(value))
  }

  /// The microseconds RFC 3339 text can write (years 0000 to 9999), as responses print times.
  static let timeRange: Range<Double> = -62_167_219_200_000_000..<253_402_300_800_000_000

  /// A time as RFC 3339 text or integer microseconds since the Unix epoch; microseconds outside
  /// `timeRange` are refused (beyond Int64, `Int64(value)` would trap).
  func optionalTime(_ key: String) throws(APIError) -> Int64? {
    switch fields[key] {
    case nil, .null?: return nil
    case .number(let value)? where value == value.rounded() && Self.timeRange.contains(value):
      return Int64(value)
    case .string(let text)? where isQuery && Int64(text) != nil: return Int64(text)
    case .string(let text)?:
      guard let micros = parseRFC3339(text) else {
        throw .badRequest("\(name(key)) must be an RFC 3339 time or microseconds")
      }
      return micros
    default: throw .badRequest("\(name(key)) must be an RFC 3339 time or microseconds")
    }
  }

  func durability() throws(APIError) -> Durability {
    guard let text = try optionalString("durability") else { return .local }
    guard let level = Durability(name: text) else {
      throw .badRequest("durability must be one of memory, local, quorum, all_applied")
    }
    return level
  }
}
