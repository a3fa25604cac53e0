/// Decimal text for 32-bit floats in JSON bodies: the shortest text that reads back as exactly the
/// same Float, both through a correctly rounded decimal → binary32 conversion (`Float("…")`,
/// `strtof`) and through `JSONParser` (decimal → Double → Float, as the server reads vectors).
///
/// `Float.description` is also shortest and exact, but costs a String per number; a vector of 384
/// components is 384 numbers per memory, so the common range has a fast path: for magnitudes in
/// [1e-4, 1e7) the digits are found with exact integer arithmetic (the float is `M · 2^-q`, M < 2^24,
/// so `M · 10^d` fits in 128 bits), fewest decimals first. A candidate is taken only when it lies
/// inside the float's rounding interval (exact check) *and* Clinger's double conversion of it gives
/// the float back (the check replays what the parser computes, so double rounding cannot bite).
/// Anything else — other magnitudes, or a candidate that fails a check — uses `Float.description`.
public enum FloatText {
  /// Appends the text of `value`, which must be finite (JSON has no NaN or infinity).
  public static func append(_ value: Float, to out: inout [UInt8]) {
    precondition(value.isFinite, "JSON has no text for \(value)")
    let magnitude = value.magnitude
    if magnitude == 0 {
      out.append(contentsOf: value.sign == .minus ? [0x2D, 0x30] : [0x30])
      return
    }
    if magnitude >= 1e-4 && magnitude < 1e7,
      let (digits, decimals) = shortestFixed(magnitude)
    {
      if value.sign == .minus { out.append(UInt8(ascii: "-")) }
      appendFixed(digits, decimals: decimals, to: &out)
      return
    }
    out.append(contentsOf: value.description.utf8)
  }

  /// The text of `value` as a String (tests and one-off callers).
  public static func text(_ value: Float) -> String {
    var out: [UInt8] = []
    append(value, to: &out)
    return String(decoding: out, as: UTF8.self)
  }

  static let maximumDecimals = 13
  static let powersOfTen: [UInt64] = (0...maximumDecimals).map { power in
    (0..<power).reduce(1) { value, _ in value * 10 }
  }
  static let doublePowersOfTen: [Double] = powersOfTen.map { Double($0) }

  /// `(n, d)` with `n / 10^d` the shortest fixed-point decimal that reads back as `magnitude`
  /// (positive, normal, below 2^24), or nil when no candidate up to `maximumDecimals` passes.
  static func shortestFixed(_ magnitude: Float) -> (UInt64, Int)? {
    let bits = magnitude.bitPattern
    let fraction = bits & 0x7F_FFFF
    let significand = UInt128(fraction | 0x80_0000)
    // magnitude = significand · 2^-shift exactly.
    let shift = 150 - Int(bits >> 23)
    guard shift >= 0, shift < 64 else { return nil }
    let isEven = fraction & 1 == 0
    // At a power of two the next float down is half as far away as the next one up.
    let lowerGapIsHalved = fraction == 0
    let powers = powersOfTen
    let doublePowers = doublePowersOfTen
    for decimals in 0...maximumDecimals {
      let ten = UInt128(powers[decimals])
      // scaled = magnitude · 10^d · 2^shift, an integer; n = magnitude · 10^d rounded.
      let scaled = significand * ten
      let digits = shift == 0 ? scaled : (scaled + (1 << (shift - 1))) >> shift
      let back = digits << shift
      // n/10^d − magnitude, in units of 2^-shift · 10^-d, against half the gap to each neighbour
      // (2^-shift / 2 up; 2^-shift / 4 down at a power of two). Ties go to even.
      let inside: Bool
      if back >= scaled {
        let twice = (back - scaled) * 2
        inside = isEven ? twice <= ten : twice < ten
      } else {
        let below = (scaled - back) * (lowerGapIsHalved ? 4 : 2)
        inside = isEven ? below <= ten : below < ten
      }
      guard inside else { continue }
      guard digits < 1 << 53 else { return nil }
      let candidate = UInt64(digits)
      guard Float(Double(candidate) / doublePowers[decimals]) == magnitude else { continue }
      return (candidate, decimals)
    }
    return nil
  }

  /// `digits / 10^decimals` as `123`, `0.0123` or `12.3`.
  static func appendFixed(_ digits: UInt64, decimals: Int, to out: inout [UInt8]) {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { buffer in
      var count = 0
      var rest = digits
      repeat {
        buffer[count] = UInt8(ascii: "0") + UInt8(rest % 10)
        rest /= 10
        count += 1
      } while rest > 0
      // At least one digit before the point.
      while count <= decimals {
        buffer[count] = UInt8(ascii: "0")
        count += 1
      }
      for position in stride(from: count - 1, through: 0, by: -1) {
        if position == decimals - 1 { out.append(UInt8(ascii: ".")) }
        out.append(buffer[position])
      }
    }
  }
}
