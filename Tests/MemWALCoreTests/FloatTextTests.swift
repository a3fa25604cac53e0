import MemWALCore
import Testing

/// `FloatText` must give text that reads back as exactly the same Float — through a correctly
/// rounded conversion (`Float(String)`, i.e. strtof) and through `JSONParser` (decimal → Double →
/// Float, as the server reads vectors) — and be no longer than `Float.description`'s.
@Suite struct FloatTextTests {
  static func checkRoundTrip(_ value: Float) {
    let text = FloatText.text(value)
    let direct = Float(text)
    let parsed = try? JSONParser.parse(Array(text.utf8))
    var throughParser: Float?
    if case .number(let number)? = parsed { throughParser = Float(number) }
    #expect(
      direct?.bitPattern == value.bitPattern && throughParser?.bitPattern == value.bitPattern,
      "\(value.bitPattern) (\(value)) wrote \(text)")
    let digits = text.utf8.filter { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }.count
    let referenceDigits = shortestDigits(value.description)
    #expect(
      significantDigits(text) <= referenceDigits || digits <= referenceDigits,
      "\(text) is longer than \(value.description)")
  }

  /// Significant digits of decimal text (leading zeros, the exponent and a trailing ".0" aside).
  static func significantDigits(_ text: String) -> Int {
    let mantissa = text.split(separator: "e")[0]
    let digits = mantissa.filter(\.isNumber).drop { $0 == "0" }
    var count = digits.count
    if mantissa.hasSuffix(".0") { count -= 1 }
    return max(count, 1)
  }

  static func shortestDigits(_ text: String) -> Int {
    var count = significantDigits(text)
    // "1200.0" has two significant digits for our purpose; so does "1200".
    let mantissa = text.split(separator: "e")[0]
    if !mantissa.contains(".") || mantissa.hasSuffix(".0") {
      let integer = mantissa.split(separator: ".")[0].filter(\.isNumber)
      count = max(1, integer.drop { $0 == "0" }.count)
    }
    return count
  }

  @Test func edgeCases() {
    var values: [Float] = [
      0, -0.0, 1, -1, 0.1, 0.2, 0.3, 1.0 / 3, 2.0 / 3, 0.5, 0.25, 1e-4, 9.999999e-5, 1e-3, 1e7, 9_999_999,
      16_777_216, 16_777_218, 8_388_608, 8_388_607.5, 123_456.7, 3.14159265, 2.7182818,
      .leastNonzeroMagnitude, .leastNormalMagnitude, .greatestFiniteMagnitude, .ulpOfOne,
      Float.leastNormalMagnitude.nextDown, Float.leastNormalMagnitude.nextUp,
      3.4028235e38, 1e38, 1e-38, 1e-10, 1e10, 4_294_967_296,
    ]
    // Subnormals: the smallest few and the largest few.
    for pattern: UInt32 in [1, 2, 3, 5, 7, 10, 0x7F_FFFF, 0x7F_FFFE, 0x40_0000] {
      values.append(Float(bitPattern: pattern))
    }
    // Every power of two, and its neighbours (the rounding interval is lopsided there).
    for exponent in -149...127 {
      let power = Float(sign: .plus, exponent: exponent, significand: 1)
      values += [power, power.nextUp, power.nextDown]
    }
    for decimals in 0...12 {
      var power: Float = 1
      for _ in 0..<decimals { power /= 10 }
      values += [power, power.nextUp, power.nextDown]
    }
    for value in values where value.isFinite {
      Self.checkRoundTrip(value)
      Self.checkRoundTrip(-value)
    }
  }

  @Test func randomBitPatterns() {
    var generator = SplitMix64(seed: 20_261_126)
    var checked = 0
    while checked < 200_000 {
      let value = Float(bitPattern: UInt32(truncatingIfNeeded: generator.next()))
      guard value.isFinite else { continue }
      Self.checkRoundTrip(value)
      checked += 1
    }
  }

  @Test func randomEmbeddingLikeValues() {
    // Components of real embeddings: mostly within ±1, the fast path's range.
    var generator = SplitMix64(seed: 384)
    for _ in 0..<200_000 {
      let unit = Float(generator.next() >> 40) / Float(1 << 24)
      Self.checkRoundTrip(unit * 2 - 1)
    }
  }

  @Test func shortTextForShortDecimals() {
    #expect(FloatText.text(0.123) == "0.123")
    #expect(FloatText.text(-0.5) == "-0.5")
    #expect(FloatText.text(100) == "100")
    #expect(FloatText.text(0) == "0")
    #expect(FloatText.text(-0.0) == "-0")
    #expect(FloatText.text(1e-4) == "0.0001")
    #expect(FloatText.text(1e-5) == "1e-05")
  }
}
