#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Reading a document piece by piece, for routes that know their body's shape and want some parts
/// without a `JSONValue` per element — a memory's `vector` is hundreds of numbers, and as
/// `JSONValue`s each would be an enum in an array before becoming one Float. The same grammar,
/// limits and errors (with byte offsets) as `parse`; the caller drives:
///
///     var reader = try JSONParser(reading: bytes)
///     try reader.readObject { reader, key throws(JSONParseError) in
///       if key == "vector", let floats = try reader.readFloatArray(maximumCount: 4096) { … }
///       else { fields[key] = try reader.readValue() }
///     }
///     try reader.finish()
extension JSONParser {
  public init(reading bytes: [UInt8], limits: Limits = Limits()) throws(JSONParseError) {
    guard bytes.count <= limits.maximumBytes else {
      throw JSONParseError(
        offset: 0, reason: "document of \(bytes.count) bytes exceeds \(limits.maximumBytes)")
    }
    self.init(bytes: bytes, limits: limits)
    skipWhitespace()
  }

  /// Whether the next value is an object (`{`).
  public var isAtObject: Bool { index < bytes.count && bytes[index] == UInt8(ascii: "{") }

  /// Whether the next value is an array (`[`).
  public var isAtArray: Bool { index < bytes.count && bytes[index] == UInt8(ascii: "[") }

  /// Reads the next value whole.
  public mutating func readValue() throws(JSONParseError) -> JSONValue {
    let value = try parseValue(depth: depth)
    skipWhitespace()
    return value
  }

  /// Reads an object, handing each key to `field`, which must read exactly one value. Duplicate
  /// keys are refused as `parse` refuses them.
  public mutating func readObject(_ field: (inout JSONParser, String) throws(JSONParseError) -> Void)
    throws(JSONParseError)
  {
    guard isAtObject else { throw error("expected an object") }
    try enterContainer()
    var keys = Set<String>()
    skipWhitespace()
    if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
      index += 1
      leaveContainer()
      return
    }
    while true {
      skipWhitespace()
      guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
        throw error("expected a string key")
      }
      let keyOffset = index
      let key = try parseString()
      guard keys.insert(key).inserted else {
        throw JSONParseError(offset: keyOffset, reason: "duplicate key \"\(key)\"")
      }
      guard keys.count <= limits.maximumContainerCount else { throw error("object has too many keys") }
      skipWhitespace()
      guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw error("expected ':'") }
      index += 1
      skipWhitespace()
      try field(&self, key)
      skipWhitespace()
      guard try endOfMember(closing: UInt8(ascii: "}")) else { continue }
      leaveContainer()
      return
    }
  }

  /// Reads an array, calling `element` once per element, which must read exactly one value.
  public mutating func readArray(_ element: (inout JSONParser) throws(JSONParseError) -> Void)
    throws(JSONParseError)
  {
    guard isAtArray else { throw error("expected an array") }
    try enterContainer()
    skipWhitespace()
    if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
      index += 1
      leaveContainer()
      return
    }
    var count = 0
    while true {
      skipWhitespace()
      try element(&self)
      count += 1
      guard count <= limits.maximumContainerCount else { throw error("array has too many elements") }
      skipWhitespace()
      guard try endOfMember(closing: UInt8(ascii: "]")) else { continue }
      leaveContainer()
      return
    }
  }

  /// The next value as Floats when it is an array of at most `maximumCount` numbers, each finite
  /// as a 32-bit float (read as `parse` reads numbers, then rounded to Float). Otherwise nil, with
  /// nothing consumed, so the caller can read the value whole and say what is wrong with it.
  /// A malformed number is a parse error, as it would be for `parse`.
  public mutating func readFloatArray(maximumCount: Int) throws(JSONParseError) -> [Float]? {
    guard isAtArray, depth + 1 <= limits.maximumDepth else { return nil }
    let start = index
    index += 1
    var floats: [Float] = []
    skipWhitespace()
    if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
      index += 1
      skipWhitespace()
      return floats
    }
    while true {
      skipWhitespace()
      guard index < bytes.count, bytes[index] == UInt8(ascii: "-") || isDigit(bytes[index]),
        floats.count < maximumCount
      else {
        index = start
        return nil
      }
      let component = Float(try parseNumber())
      guard component.isFinite else {
        index = start
        return nil
      }
      floats.append(component)
      skipWhitespace()
      guard try endOfMember(closing: UInt8(ascii: "]")) else { continue }
      skipWhitespace()
      return floats
    }
  }

  /// The next value as a vector when it is a string that `VectorBase64` decodes to at most
  /// `maximumCount` components. Otherwise nil, with nothing consumed, so the caller can read the
  /// value whole and say what is wrong with it.
  public mutating func readBase64Vector(maximumCount: Int) -> [Float]? {
    guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
    let start = index + 1
    // The next quote ends the string unless a backslash escapes it; a backslash, a control
    // character or anything else outside base64's alphabet fails the decoding below.
    let decoded = bytes.withUnsafeBufferPointer { buffer -> (vector: [Float], end: Int)? in
      let rest = UnsafeBufferPointer(rebasing: buffer[start...])
      guard let base = rest.baseAddress, let quote = memchr(base, Int32(UInt8(ascii: "\"")), rest.count)
      else { return nil }
      let end = start + UnsafeRawPointer(base).distance(to: UnsafeRawPointer(quote))
      guard
        let vector = try? VectorBase64.decode(
          utf8: UnsafeBufferPointer(rebasing: buffer[start..<end]), maximumComponents: maximumCount)
      else { return nil }
      return (vector, end)
    }
    guard let decoded else { return nil }
    index = decoded.end + 1
    skipWhitespace()
    return decoded.vector
  }

  /// Checks that nothing but whitespace follows the value read.
  public mutating func finish() throws(JSONParseError) {
    skipWhitespace()
    guard index == bytes.count else { throw error("unexpected data after the JSON value") }
  }

  private mutating func enterContainer() throws(JSONParseError) {
    guard depth <= limits.maximumDepth else {
      throw error("nested deeper than \(limits.maximumDepth) levels")
    }
    index += 1
    depth += 1
  }

  private mutating func leaveContainer() {
    depth -= 1
    skipWhitespace()
  }
}
