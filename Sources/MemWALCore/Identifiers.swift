/// Log sequence number: the position of a record in the log. LSNs are dense (each record is
/// the previous one plus one), start at 1, and are assigned only by the primary. `LSN.zero`
/// means "before the first record".
public struct LSN: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
  public var rawValue: UInt64
  public init(rawValue: UInt64) { self.rawValue = rawValue }
  public init(_ value: UInt64) { self.rawValue = value }

  public static let zero = LSN(0)
  public static func < (lhs: LSN, rhs: LSN) -> Bool { lhs.rawValue < rhs.rawValue }
  public var next: LSN { LSN(rawValue + 1) }
  public var description: String { String(rawValue) }
}

/// A term of leadership. At most one node accepts writes in an epoch (DESIGN G3).
public struct Epoch: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
  public var rawValue: UInt64
  public init(rawValue: UInt64) { self.rawValue = rawValue }
  public init(_ value: UInt64) { self.rawValue = value }

  public static let zero = Epoch(0)
  public static func < (lhs: Epoch, rhs: Epoch) -> Bool { lhs.rawValue < rhs.rawValue }
  public var next: Epoch { Epoch(rawValue + 1) }
  public var description: String { String(rawValue) }
}

/// The first LSN of an epoch.
public struct EpochStart: Sendable, Equatable, CustomStringConvertible {
  public var epoch: Epoch
  public var firstLSN: LSN
  public init(epoch: Epoch, firstLSN: LSN) {
    self.epoch = epoch
    self.firstLSN = firstLSN
  }
  public var description: String { "epoch \(epoch) from LSN \(firstLSN)" }
}

/// Identifies a transaction. Assigned by the log to every record (epoch changes included) and
/// strictly increasing along it; 0 means "none".
public struct TransactionID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
  public var rawValue: UInt64
  public init(rawValue: UInt64) { self.rawValue = rawValue }
  public init(_ value: UInt64) { self.rawValue = value }

  public static let none = TransactionID(0)
  public static func < (lhs: TransactionID, rhs: TransactionID) -> Bool { lhs.rawValue < rhs.rawValue }
  public var description: String { String(rawValue) }
}

/// A 128-bit cluster identifier written into every segment and checkpoint header so that files
/// from another cluster are never mixed in.
public struct ClusterID: Hashable, Sendable, CustomStringConvertible {
  public var high: UInt64
  public var low: UInt64
  public init(high: UInt64, low: UInt64) {
    self.high = high
    self.low = low
  }

  /// Parses 32 hexadecimal digits (dashes allowed, as in a UUID).
  public init?(hex: String) {
    let digits = hex.filter { $0 != "-" }
    guard digits.count == 32, let high = UInt64(digits.prefix(16), radix: 16),
      let low = UInt64(digits.suffix(16), radix: 16)
    else { return nil }
    self.init(high: high, low: low)
  }

  public var description: String {
    let hex = String(high, radix: 16).leftPadded(to: 16) + String(low, radix: 16).leftPadded(to: 16)
    return hex
  }
}

extension String {
  /// Pads with `character` on the left to `width` characters.
  public func leftPadded(to width: Int, with character: Character = "0") -> String {
    count >= width ? self : String(repeating: character, count: width - count) + self
  }
}
