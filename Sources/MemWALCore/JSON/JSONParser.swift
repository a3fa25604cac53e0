/// A strict RFC 8259 JSON parser with limits (size, depth, string and container sizes), for
/// request bodies. Bad input is a `JSONParseError` naming the byte offset; nothing traps.
public struct JSONParser {
  public struct Limits: Sendable {
    public var maximumBytes = 64 << 20
    public var maximumDepth = 64
    public var maximumStringBytes = 16 << 20
    public var maximumContainerCount = 1 << 20
    public init() {}
  }

  public static func parse(_ bytes: [UInt8], limits: Limits = Limits()) throws(JSONParseError) -> JSONValue {
    guard bytes.count <= limits.maximumBytes else {
      throw JSONParseError(
        offset: 0, reason: "document of \(bytes.count) bytes exceeds \(limits.maximumBytes)")
    }
    var parser = JSONParser(bytes: bytes, limits: limits)
    parser.skipWhitespace()
    let value = try parser.parseValue(depth: 0)
    parser.skipWhitespace()
    guard parser.index == bytes.count else { throw parser.error("unexpected data after the JSON value") }
    return value
  }

  let bytes: [UInt8]
  let limits: Limits
  var index = 0
  /// Containers open around `index` (the streaming readers in JSONParser+Reading.swift).
  var depth = 0

  init(bytes: [UInt8], limits: Limits) {
    self.bytes = bytes
    self.limits = limits
  }

  func error(_ reason: String) -> JSONParseError { JSONParseError(offset: index, reason: reason) }

  mutating func skipWhitespace() {
    while index < bytes.count {
      switch bytes[index] {
      case 0x20, 0x09, 0x0A, 0x0D: index += 1
      default: return
      }
    }
  }

  mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
    guard depth <= limits.maximumDepth else {
      throw error("nested deeper than \(limits.maximumDepth) levels")
    }
    guard index < bytes.count else { throw error("unexpected end of input") }
    switch bytes[index] {
    case UInt8(ascii: "{"): return try parseObject(depth: depth)
    case UInt8(ascii: "["): return try parseArray(depth: depth)
    case UInt8(ascii: "\""): return .string(try parseString())
    case UInt8(ascii: "t"):
      try expect("true")
      return .bool(true)
    case UInt8(ascii: "f"):
      try expect("false")
      return .bool(false)
    case UInt8(ascii: "n"):
      try expect("null")
      return .null
    case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
    default: throw error("unexpected character")
    }
  }

  private mutating func expect(_ literal: String) throws(JSONParseError) {
    for byte in literal.utf8 {
      guard index < bytes.count, bytes[index] == byte else {
        throw error("invalid literal, expected \(literal)")
      }
      index += 1
    }
  }

  private mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONValue {
    index += 1
    var fields: [String: JSONValue] = [:]
    skipWhitespace()
    if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
      index += 1
      return .object(fields)
    }
    while true {
      skipWhitespace()
      guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
        throw error("expected a string key")
      }
      let keyOffset = index
      let key = try parseString()
      skipWhitespace()
      guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw error("expected ':'") }
      index += 1
      skipWhitespace()
      let value = try parseValue(depth: depth + 1)
      guard fields.updateValue(value, forKey: key) == nil else {
        throw JSONParseError(offset: keyOffset, reason: "duplicate key \"\(key)\"")
      }
      guard fields.count <= limits.maximumContainerCount else { throw error("object has too many keys") }
      skipWhitespace()
      guard try endOfMember(closing: UInt8(ascii: "}")) else { continue }
      return .object(fields)
    }
  }

  private mutating func parseArray(depth: Int) throws(JSONParseError) -> JSONValue {
    index += 1
    var values: [JSONValue] = []
    skipWhitespace()
    if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
      index += 1
      return .array(values)
    }
    while true {
      skipWhitespace()
      values.append(try parseValue(depth: depth + 1))
      guard values.count <= limits.maximumContainerCount else { throw error("array has too many elements") }
      skipWhitespace()
      guard try endOfMember(closing: UInt8(ascii: "]")) else { continue }
      return .array(values)
    }
  }

  /// After an object member or an array element: consumes `,` (false: another follows) or the
  /// container's `closing` byte (true: it is complete); anything else is an error.
  mutating func endOfMember(closing: UInt8) throws(JSONParseError) -> Bool {
    guard index < bytes.count else {
      throw error("unexpected end of input in an \(closing == UInt8(ascii: "}") ? "object" : "array")")
    }
    if bytes[index] == UInt8(ascii: ",") {
      index += 1
      return false
    }
    guard bytes[index] == closing else {
      throw error("expected ',' or '\(Character(Unicode.Scalar(closing)))'")
    }
    index += 1
    return true
  }

  mutating func parseNumber() throws(JSONParseError) -> Double {
    let start = index
    if bytes[index] == UInt8(ascii: "-") { index += 1 }
    guard index < bytes.count, isDigit(bytes[index]) else { throw error("invalid number") }
    if bytes[index] == UInt8(ascii: "0") {
      index += 1
    } else {
      while index < bytes.count, isDigit(bytes[index]) { index += 1 }
    }
    if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
      index += 1
      guard index < bytes.count, isDigit(bytes[index]) else {
        throw error("invalid number: digits must follow '.'")
      }
      while index < bytes.count, isDigit(bytes[index]) { index += 1 }
    }
    if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
      index += 1
      if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
        index += 1
      }
      guard index < bytes.count, isDigit(bytes[index]) else {
        throw error("invalid number: digits must follow the exponent")
      }
      while index < bytes.count, isDigit(bytes[index]) { index += 1 }
    }
    guard index - start <= 512 else { throw JSONParseError(offset: start, reason: "number literal too long") }
    if let fast = Self.fastDecimal(bytes[start..<index]) { return fast }
    let text = String(decoding: bytes[start..<index], as: UTF8.self)
    guard let value = Double(text), value.isFinite else {
      throw JSONParseError(offset: start, reason: "number \(text.prefix(40)) is out of range")
    }
    return value
  }

  func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

  static let exactPowersOfTen: [Double] = (0...22).map { power in
    (0..<power).reduce(1.0) { value, _ in value * 10 }
  }

  /// Clinger's fast path: a decimal whose digits fit in 2^53 and whose power of ten is at most 22
  /// in magnitude is one exact double times or divided by another, which IEEE arithmetic rounds
  /// correctly. Anything else (nil) goes to the general conversion. `literal` is already validated.
  static func fastDecimal(_ literal: ArraySlice<UInt8>) -> Double? {
    var mantissa: UInt64 = 0
    var digits = 0
    var exponent = 0
    var index = literal.startIndex
    let negative = literal[index] == UInt8(ascii: "-")
    if negative { index += 1 }
    var seenPoint = false
    while index < literal.endIndex {
      let byte = literal[index]
      if byte == UInt8(ascii: ".") {
        seenPoint = true
      } else if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
        if mantissa == 0 && byte == UInt8(ascii: "0") {
          if seenPoint { exponent -= 1 }
        } else {
          digits += 1
          guard digits <= 15 else { return nil }
          mantissa = mantissa * 10 + UInt64(byte - UInt8(ascii: "0"))
          if seenPoint { exponent -= 1 }
        }
      } else {
        // An exponent part.
        var sign = 1
        index += 1
        if literal[index] == UInt8(ascii: "-") || literal[index] == UInt8(ascii: "+") {
          sign = literal[index] == UInt8(ascii: "-") ? -1 : 1
          index += 1
        }
        var value = 0
        while index < literal.endIndex {
          value = value * 10 + Int(literal[index] - UInt8(ascii: "0"))
          guard value < 1_000 else { return nil }
          index += 1
        }
        exponent += sign * value
        break
      }
      index += 1
    }
    var result = Double(mantissa)
    if mantissa == 0 {
      result = 0
    } else if exponent > 0 {
      guard exponent <= 22 else { return nil }
      result *= exactPowersOfTen[exponent]
    } else if exponent < 0 {
      guard exponent >= -22 else { return nil }
      result /= exactPowersOfTen[-exponent]
    }
    return negative ? -result : result
  }

  mutating func parseString() throws(JSONParseError) -> String {
    let start = index
    index += 1
    // Most strings have no escapes: find the closing quote and validate the bytes in one go.
    let stop = plainRunEnd(from: index)
    guard stop - start <= limits.maximumStringBytes else {
      throw JSONParseError(offset: start, reason: "string too long")
    }
    index = stop
    if index < bytes.count, bytes[index] == UInt8(ascii: "\"") {
      guard let string = String(validating: bytes[(start + 1)..<index], as: UTF8.self) else {
        throw JSONParseError(offset: start, reason: "string is not valid UTF-8")
      }
      index += 1
      return string
    }
    return try parseEscapedString(start: start)
  }

  /// Where the run of string bytes from `position` ends: the first quote, backslash or control
  /// character, or the end of the input.
  func plainRunEnd(from position: Int) -> Int {
    bytes.withUnsafeBufferPointer { buffer in
      var position = position
      while position < buffer.count {
        let byte = buffer[position]
        if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 { return position }
        position += 1
      }
      return position
    }
  }

  /// The rest of a string from its first escape (or its unterminated end); `start` is its quote.
  private mutating func parseEscapedString(start: Int) throws(JSONParseError) -> String {
    var runStart = index
    var utf8 = Array(bytes[(start + 1)..<index])
    while true {
      guard index < bytes.count else { throw JSONParseError(offset: start, reason: "unterminated string") }
      let byte = bytes[index]
      if byte == UInt8(ascii: "\"") {
        utf8 += bytes[runStart..<index]
        index += 1
        break
      }
      if byte < 0x20 { throw error("control character in a string") }
      if byte == UInt8(ascii: "\\") {
        utf8 += bytes[runStart..<index]
        index += 1
        guard index < bytes.count else { throw error("unterminated escape") }
        let escape = bytes[index]
        index += 1
        switch escape {
        case UInt8(ascii: "\""): utf8.append(0x22)
        case UInt8(ascii: "\\"): utf8.append(0x5C)
        case UInt8(ascii: "/"): utf8.append(0x2F)
        case UInt8(ascii: "b"): utf8.append(0x08)
        case UInt8(ascii: "f"): utf8.append(0x0C)
        case UInt8(ascii: "n"): utf8.append(0x0A)
        case UInt8(ascii: "r"): utf8.append(0x0D)
        case UInt8(ascii: "t"): utf8.append(0x09)
        case UInt8(ascii: "u"):
          let scalar = try parseUnicodeEscape()
          utf8 += Array(String(Character(scalar)).utf8)
        default: throw error("invalid escape")
        }
        runStart = index
        continue
      }
      index += 1
      guard index - start <= limits.maximumStringBytes else {
        throw JSONParseError(offset: start, reason: "string too long")
      }
    }
    guard let string = String(validating: utf8, as: UTF8.self) else {
      throw JSONParseError(offset: start, reason: "string is not valid UTF-8")
    }
    return string
  }

  private mutating func parseUnicodeEscape() throws(JSONParseError) -> Unicode.Scalar {
    let high = try hex4()
    if (0xD800...0xDBFF).contains(high) {
      guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u")
      else {
        throw error("unpaired surrogate")
      }
      index += 2
      let low = try hex4()
      guard (0xDC00...0xDFFF).contains(low) else { throw error("invalid low surrogate") }
      let value = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
      return Unicode.Scalar(value)!
    }
    guard !(0xDC00...0xDFFF).contains(high), let scalar = Unicode.Scalar(high) else {
      throw error("unpaired surrogate")
    }
    return scalar
  }

  private mutating func hex4() throws(JSONParseError) -> UInt32 {
    guard index + 4 <= bytes.count else { throw error("truncated \\u escape") }
    var value: UInt32 = 0
    for _ in 0..<4 {
      let byte = bytes[index]
      let digit: UInt32
      switch byte {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
      case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
      case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
      default: throw error("invalid hex digit in \\u escape")
      }
      value = value * 16 + digit
      index += 1
    }
    return value
  }
}

/// Why a JSON document was refused, with the byte offset.
public struct JSONParseError: Error, Equatable, Sendable, CustomStringConvertible {
  public var offset: Int
  public var reason: String
  public var description: String { "malformed JSON at byte \(offset): \(reason)" }
}

extension JSONValue {
  /// Compact JSON text (object keys in ascending order).
  public var jsonText: String {
    var out = ""
    write(into: &out)
    return out
  }

  public func write(into out: inout String) {
    switch self {
    case .null: out += "null"
    case .bool(let value): out += value ? "true" : "false"
    case .number(let value):
      if value == 0 && value.sign == .minus {
        out += "-0"  // Int64(-0.0) would drop the sign (a vector component keeps it).
      } else if value == value.rounded(), abs(value) < 9.007_199_254_740_992e15 {
        out += String(Int64(value))
      } else {
        out += "\(value)"
      }
    case .string(let value): JSONValue.writeString(value, into: &out)
    case .array(let values):
      out += "["
      for (position, value) in values.enumerated() {
        if position > 0 { out += "," }
        value.write(into: &out)
      }
      out += "]"
    case .object(let fields):
      out += "{"
      for (position, key) in fields.keys.sorted().enumerated() {
        if position > 0 { out += "," }
        JSONValue.writeString(key, into: &out)
        out += ":"
        fields[key]!.write(into: &out)
      }
      out += "}"
    }
  }

  public static func writeString(_ value: String, into out: inout String) {
    out += "\""
    for scalar in value.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case _ where scalar.value < 0x20:
        out += "\\u" + String(scalar.value, radix: 16).leftPadded(to: 4)
      default: out.unicodeScalars.append(scalar)
      }
    }
    out += "\""
  }
}
