import MemWALCore

/// A condition on a memory's metadata (or a node's or edge's properties). Field names are dotted
/// paths into nested objects (`"source.kind"`).
public indirect enum Filter: Sendable, Equatable {
  case equals(field: String, value: JSONValue)
  case isIn(field: String, values: [JSONValue])
  /// Numbers within bounds; a nil bound is open.
  case range(
    field: String, greaterThan: Double?, greaterOrEqual: Double?, lessThan: Double?, lessOrEqual: Double?)
  case exists(field: String)
  case and([Filter])
  case or([Filter])
  case not(Filter)

  /// Most nodes one filter may have.
  public static let maximumNodes = 256
  public static let maximumDepth = 16

  public func matches(_ object: JSONObject) -> Bool {
    switch self {
    case .equals(let field, let value):
      return Self.lookup(field, in: object).map { Self.equal($0, value) } ?? false
    case .isIn(let field, let values):
      guard let found = Self.lookup(field, in: object) else { return false }
      return values.contains { Self.equal(found, $0) }
    case .range(let field, let greaterThan, let greaterOrEqual, let lessThan, let lessOrEqual):
      guard case .number(let number)? = Self.lookup(field, in: object) else { return false }
      if let bound = greaterThan, !(number > bound) { return false }
      if let bound = greaterOrEqual, !(number >= bound) { return false }
      if let bound = lessThan, !(number < bound) { return false }
      if let bound = lessOrEqual, !(number <= bound) { return false }
      return true
    case .exists(let field):
      return Self.lookup(field, in: object) != nil
    case .and(let filters): return filters.allSatisfy { $0.matches(object) }
    case .or(let filters): return filters.contains { $0.matches(object) }
    case .not(let filter): return !filter.matches(object)
    }
  }

  /// An array field matches a scalar when any element does (as in most document stores).
  private static func equal(_ found: JSONValue, _ wanted: JSONValue) -> Bool {
    if found == wanted { return true }
    if case .array(let elements) = found, !isArray(wanted) { return elements.contains(wanted) }
    return false
  }

  private static func isArray(_ value: JSONValue) -> Bool {
    if case .array = value { return true }
    return false
  }

  static func lookup(_ field: String, in object: JSONObject) -> JSONValue? {
    let path = field.split(separator: ".", omittingEmptySubsequences: false)
    guard let first = path.first, let head = object[String(first)] else { return nil }
    return head.value(at: Array(path.dropFirst()))
  }

  /// Checks the filter's size and shape; a filter that breaks a limit is refused before it runs.
  public func validate() throws(RecordError) {
    var nodes = 0
    try validate(depth: 0, nodes: &nodes)
  }

  private func validate(depth: Int, nodes: inout Int) throws(RecordError) {
    nodes += 1
    guard nodes <= Self.maximumNodes else {
      throw .invalid(field: "filter", reason: "more than \(Self.maximumNodes) conditions")
    }
    guard depth <= Self.maximumDepth else {
      throw .invalid(field: "filter", reason: "nested deeper than \(Self.maximumDepth)")
    }
    switch self {
    case .equals(let field, _), .exists(let field):
      try Self.check(field)
    case .isIn(let field, let values):
      try Self.check(field)
      guard values.count <= 1024 else {
        throw .invalid(field: "filter", reason: "`in` takes at most 1024 values")
      }
    case .range(let field, let a, let b, let c, let d):
      try Self.check(field)
      guard [a, b, c, d].contains(where: { $0 != nil }) else {
        throw .invalid(field: "filter", reason: "a range on \(field) needs at least one bound")
      }
      guard [a, b, c, d].allSatisfy({ $0?.isFinite ?? true }) else {
        throw .invalid(field: "filter", reason: "range bounds must be finite numbers")
      }
    case .and(let filters), .or(let filters):
      for filter in filters { try filter.validate(depth: depth + 1, nodes: &nodes) }
    case .not(let filter):
      try filter.validate(depth: depth + 1, nodes: &nodes)
    }
  }

  private static func check(_ field: String) throws(RecordError) {
    guard !field.isEmpty, field.utf8.count <= 256 else {
      throw .invalid(field: "filter", reason: "field names must be 1 to 256 bytes")
    }
  }
}
