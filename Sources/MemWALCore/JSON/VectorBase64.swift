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
    #if _endian(little)
      vector.withUnsafeBytes { append(littleEndianBytes: $0, to: &out) }
    #else
      let swapped = vector.map { Float(bitPattern: $0.bitPattern.byteSwapped) }
      swapped.withUnsafeBytes { append(littleEndianBytes: $0, to: &out) }
    #endif
  }

  static func append(littleEndianBytes bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
    let start = out.count
    out.append(contentsOf: repeatElement(UInt8(ascii: "="), count: (bytes.count + 2) / 3 * 4))
    alphabet.withUnsafeBufferPointer { alphabet in
      out.withUnsafeMutableBufferPointer { out in
        var target = start
        var index = 0
        while index + 3 <= bytes.count {
          let group = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
          out[target] = alphabet[Int(group >> 18)]
          out[target + 1] = alphabet[Int(group >> 12 & 0x3F)]
          out[target + 2] = alphabet[Int(group >> 6 & 0x3F)]
          out[target + 3] = alphabet[Int(group & 0x3F)]
          index += 3
          target += 4
        }
        let rest = bytes.count - index
        guard rest > 0 else { return }
        let group = UInt32(bytes[index]) << 16 | (rest == 2 ? UInt32(bytes[index + 1]) << 8 : 0)
        out[target] = alphabet[Int(group >> 18)]
        out[target + 1] = alphabet[Int(group >> 12 & 0x3F)]
        if rest == 2 { out[target + 2] = alphabet[Int(group >> 6 & 0x3F)] }
      }
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

  /// The vector in the base64 text `utf8` (no quotes); at most `maximumComponents` components.
  public static func decode(utf8: UnsafeBufferPointer<UInt8>, maximumComponents: Int = 65_536)
    throws(DecodeError) -> [Float]
  {
    try decode(utf8, maximumComponents: maximumComponents)
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
    let count = byteCount / 4
    guard count <= maximumComponents else { throw .tooManyComponents(count: count, limit: maximumComponents) }
    // Whole groups straight into the floats' bytes; the last group, which may be padded, apart.
    var failure: DecodeError?
    let decoded = [Float](unsafeUninitializedCapacity: count) { floats, initialized in
      let out = UnsafeMutableRawBufferPointer(floats)
      failure = values.withUnsafeBufferPointer { table in
        // Every group but the last: four characters, three bytes. An invalid character's table
        // entry (0xFF) has the top bit set, which no valid one (0…63) has.
        var offset = 0
        var written = 0
        let whole = utf8.count - (padding > 0 ? 4 : 0)
        while offset < whole {
          let a = table[Int(utf8[offset])]
          let b = table[Int(utf8[offset + 1])]
          let c = table[Int(utf8[offset + 2])]
          let d = table[Int(utf8[offset + 3])]
          guard (a | b | c | d) & 0x80 == 0 else {
            return .badCharacter(offset: offset + [a, b, c, d].firstIndex(of: invalid)!)
          }
          let group = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6 | UInt32(d)
          out[written] = UInt8(truncatingIfNeeded: group >> 16)
          out[written + 1] = UInt8(truncatingIfNeeded: group >> 8)
          out[written + 2] = UInt8(truncatingIfNeeded: group)
          written += 3
          offset += 4
        }
        guard padding > 0 else { return nil }
        // The padded group: 2 or 3 characters for 1 or 2 bytes.
        let usable = 4 - padding
        var group: UInt32 = 0
        for position in 0..<usable {
          let value = table[Int(utf8[offset + position])]
          guard value != invalid else { return .badCharacter(offset: offset + position) }
          group = group << 6 | UInt32(value)
        }
        group <<= 6 * UInt32(padding)
        // The bits past the data must be zero (one text per vector).
        guard group & (padding == 1 ? 0xFF : 0xFFFF) == 0 else {
          return .badCharacter(offset: offset + usable - 1)
        }
        out[written] = UInt8(truncatingIfNeeded: group >> 16)
        if padding == 1 { out[written + 1] = UInt8(truncatingIfNeeded: group >> 8) }
        return nil
      }
      initialized = failure == nil ? count : 0
    }
    if let failure { throw failure }
    #if _endian(little)
      let vector = decoded
    #else
      let vector = decoded.map { Float(bitPattern: $0.bitPattern.byteSwapped) }
    #endif
    for index in vector.indices {
      guard vector[index].isFinite else { throw .nonFinite(index: index, value: vector[index]) }
    }
    return vector
  }
}
