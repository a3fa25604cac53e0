/// A vector as the API's `vector_base64` field carries it: the components as little-endian IEEE 754
/// binary32, four bytes each, in RFC 4648 base64 (standard alphabet, `=` padding, no line breaks).
/// docs/openapi.yaml describes the field; a 384-d vector is 2,048 characters instead of ~3,500 as
/// decimal text, and costs no decimal conversion on either side.
///
/// Decoding is strict: the length must be a multiple of four, padding only at the end, the unused
/// bits of the last group zero (one text per vector), and every component finite.
public enum VectorBase64 {
  /// Why a `vector_base64` text was refused; `offset` counts characters, `index` components.
  public enum DecodeError: Error, Equatable, Sendable, CustomStringConvertible {
    case badLength(characters: Int)
    case badCharacter(offset: Int)
    case notWholeComponents(bytes: Int)
    case nonFinite(index: Int, value: Float)
    case tooManyComponents(count: Int, limit: Int)

    public var description: String {
      switch self {
      case .badLength(let characters):
        return "is \(characters) characters long; base64 comes in groups of 4"
      case .badCharacter(let offset): return "is not base64 at character \(offset)"
      case .notWholeComponents(let bytes):
        return "decodes to \(bytes) bytes, not a whole number of 4-byte float32 components"
      case .nonFinite(let index, let value): return "component \(index) is \(value), not a finite number"
      case .tooManyComponents(let count, let limit):
        return "has \(count) components; the limit is \(limit)"
      }
    }
  }

  static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
  static let invalid: UInt8 = 0xFF
  static let values: [UInt8] = {
    var table = [UInt8](repeating: invalid, count: 256)
    for (value, character) in alphabet.enumerated() { table[Int(character)] = UInt8(value) }
    return table
  }()

  /// Appends the base64 text of `vector` (no quotes).
  public static func append(_ vector: [Float], to out: inout [UInt8]) {
    let alphabet = self.alphabet
    var bytes: [UInt8] = []
    bytes.reserveCapacity(vector.count * 4)
    for component in vector {
      let pattern = component.bitPattern
      bytes.append(UInt8(truncatingIfNeeded: pattern))
      bytes.append(UInt8(truncatingIfNeeded: pattern >> 8))
      bytes.append(UInt8(truncatingIfNeeded: pattern >> 16))
      bytes.append(UInt8(truncatingIfNeeded: pattern >> 24))
    }
    out.reserveCapacity(out.count + (bytes.count + 2) / 3 * 4)
    var index = 0
    while index + 3 <= bytes.count {
      let group = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
      out.append(alphabet[Int(group >> 18)])
      out.append(alphabet[Int(group >> 12 & 0x3F)])
      out.append(alphabet[Int(group >> 6 & 0x3F)])
      out.append(alphabet[Int(group & 0x3F)])
      index += 3
    }
    let rest = bytes.count - index
    if rest > 0 {
      let group = UInt32(bytes[index]) << 16 | (rest == 2 ? UInt32(bytes[index + 1]) << 8 : 0)
      out.append(alphabet[Int(group >> 18)])
      out.append(alphabet[Int(group >> 12 & 0x3F)])
      out.append(rest == 2 ? alphabet[Int(group >> 6 & 0x3F)] : UInt8(ascii: "="))
      out.append(UInt8(ascii: "="))
    }
  }

  /// The base64 text of `vector` as a String.
  public static func text(_ vector: [Float]) -> String {
    var out: [UInt8] = []
    append(vector, to: &out)
    return String(decoding: out, as: UTF8.self)
  }

  /// The vector `text` carries; at most `maximumComponents` components.
  public static func decode(_ text: String, maximumComponents: Int = 65_536) throws(DecodeError) -> [Float] {
    var text = text
    let result = text.withUTF8 { utf8 in
      Result { () throws(DecodeError) in try decode(utf8, maximumComponents: maximumComponents) }
    }
    return try result.get()
  }

  static func decode(_ utf8: UnsafeBufferPointer<UInt8>, maximumComponents: Int) throws(DecodeError)
    -> [Float]
  {
    guard utf8.count % 4 == 0 else { throw .badLength(characters: utf8.count) }
    var padding = 0
    if utf8.count >= 4, utf8[utf8.count - 1] == UInt8(ascii: "=") {
      padding = utf8[utf8.count - 2] == UInt8(ascii: "=") ? 2 : 1
    }
    let byteCount = utf8.count / 4 * 3 - padding
    guard byteCount % 4 == 0 else { throw .notWholeComponents(bytes: byteCount) }
    guard byteCount / 4 <= maximumComponents else {
      throw .tooManyComponents(count: byteCount / 4, limit: maximumComponents)
    }
    let table = values
    var bytes = [UInt8](repeating: 0, count: byteCount + 2)
    var written = 0
    var offset = 0
    while offset < utf8.count {
      let isLast = offset + 4 == utf8.count
      let usable = isLast ? 4 - padding : 4
      var group: UInt32 = 0
      for position in 0..<4 {
        let character = utf8[offset + position]
        let value = table[Int(character)]
        if position < usable {
          guard value != invalid else { throw .badCharacter(offset: offset + position) }
          group = group << 6 | UInt32(value)
        } else {
          group <<= 6
        }
      }
      // The bits of the last group past the data must be zero (one text per vector).
      if isLast && padding > 0 && group & (padding == 1 ? 0xFF : 0xFFFF) != 0 {
        throw .badCharacter(offset: offset + usable - 1)
      }
      bytes[written] = UInt8(truncatingIfNeeded: group >> 16)
      bytes[written + 1] = UInt8(truncatingIfNeeded: group >> 8)
      bytes[written + 2] = UInt8(truncatingIfNeeded: group)
      written += 3
      offset += 4
    }
    let count = byteCount / 4
    var vector = [Float](repeating: 0, count: count)
    for index in 0..<count {
      let base = index * 4
      let pattern =
        UInt32(bytes[base]) | UInt32(bytes[base + 1]) << 8 | UInt32(bytes[base + 2]) << 16
        | UInt32(bytes[base + 3]) << 24
      let component = Float(bitPattern: pattern)
      guard component.isFinite else { throw .nonFinite(index: index, value: component) }
      vector[index] = component
    }
    return vector
  }
}
