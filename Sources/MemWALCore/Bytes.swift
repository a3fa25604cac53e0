/// Appends little-endian fixed-width integers and length-prefixed byte strings.
public struct ByteWriter: Sendable {
  public var bytes: [UInt8]

  public init(capacity: Int = 0) {
    bytes = []
    bytes.reserveCapacity(capacity)
  }

  public var count: Int { bytes.count }

  @inlinable
  public mutating func write<T: FixedWidthInteger>(_ value: T) {
    withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
  }

  public mutating func write(bytes other: some Collection<UInt8>) { bytes.append(contentsOf: other) }

  public mutating func writeZeros(_ count: Int) { bytes.append(contentsOf: repeatElement(0, count: count)) }

  /// Overwrites a previously written integer at `offset`.
  public mutating func patch<T: FixedWidthInteger>(_ value: T, at offset: Int) {
    withUnsafeBytes(of: value.littleEndian) { raw in
      for (index, byte) in raw.enumerated() { bytes[offset + index] = byte }
    }
  }
}

/// Why a byte string could not be decoded. Decoders never trap on input: every bound is checked
/// against the bytes left before anything is allocated.
public enum ByteDecodingError: Error, Equatable, Sendable, CustomStringConvertible {
  /// Needed `needed` more bytes at `offset`, only `available` were left.
  case truncated(offset: Int, needed: Int, available: Int)
  /// A field held a value outside its allowed range.
  case invalidValue(field: String, offset: Int, detail: String)

  public var description: String {
    switch self {
    case .truncated(let offset, let needed, let available):
      return "truncated at byte \(offset): needed \(needed) bytes, \(available) left"
    case .invalidValue(let field, let offset, let detail):
      return "invalid \(field) at byte \(offset): \(detail)"
    }
  }
}

/// Reads what `ByteWriter` wrote, with every read bounds-checked.
public struct ByteReader {
  public let bytes: UnsafeRawBufferPointer
  public private(set) var offset: Int

  public init(_ bytes: UnsafeRawBufferPointer, offset: Int = 0) {
    self.bytes = bytes
    self.offset = offset
  }

  public var remaining: Int { bytes.count - offset }

  public mutating func require(_ count: Int) throws(ByteDecodingError) {
    guard count >= 0, count <= remaining else {
      throw .truncated(offset: offset, needed: count, available: remaining)
    }
  }

  public mutating func read<T: FixedWidthInteger>(_: T.Type = T.self) throws(ByteDecodingError) -> T {
    let size = MemoryLayout<T>.size
    try require(size)
    var value: T = 0
    withUnsafeMutableBytes(of: &value) {
      $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + size]))
    }
    offset += size
    return T(littleEndian: value)
  }

  public mutating func readBytes(_ count: Int) throws(ByteDecodingError) -> [UInt8] {
    try require(count)
    let result = [UInt8](bytes[offset..<offset + count])
    offset += count
    return result
  }

  public mutating func skip(_ count: Int) throws(ByteDecodingError) {
    try require(count)
    offset += count
  }

  /// Reads `count` bytes that must be valid UTF-8.
  public mutating func readString(_ count: Int, field: String) throws(ByteDecodingError) -> String {
    let start = offset
    let raw = try readBytes(count)
    guard let string = String(validating: raw, as: UTF8.self) else {
      throw .invalidValue(field: field, offset: start, detail: "not valid UTF-8")
    }
    return string
  }
}
