import MemWALCore
import Testing

@Suite struct JSONParserTests {
  func parse(_ text: String) throws -> JSONValue { try JSONParser.parse(Array(text.utf8)) }

  @Test func parsesEveryKindOfValue() throws {
    let value = try parse(
      #" { "a": [1, -2.5e3, true, false, null], "b": {"c": "é\n\u00e9\ud83d\ude00"}, "d": 0 } "#)
    #expect(
      value
        == .object([
          "a": .array([.number(1), .number(-2500), .bool(true), .bool(false), .null]),
          "b": .object(["c": .string("é\né😀")]), "d": .number(0),
        ]))
    #expect(try parse(value.jsonText) == value)
    #expect(value.jsonText == #"{"a":[1,-2500,true,false,null],"b":{"c":"é\né😀"},"d":0}"#)
    #expect(JSONValue.number(-0.0).jsonText == "-0")
    guard case .number(let negativeZero) = try parse("-0") else {
      Issue.record("-0 is a number")
      return
    }
    #expect(negativeZero == 0 && negativeZero.sign == .minus)
  }

  @Test func refusesMalformedInput() {
    let bad = [
      "", "{", "[1,]", "{\"a\":1,}", "01", "1.", "-", "1e", "\"abc", "{\"a\" 1}", "tru", "nul", "[1 2]",
      "\"\\x\"", "\"\\ud800\"", "\"a\u{01}\"", "{\"a\":1,\"a\":2}", "1e400", "-1e400", "[] []", "NaN",
      "Infinity",
    ]
    for text in bad {
      #expect(throws: JSONParseError.self, "\(text.debugDescription) must be refused") { try parse(text) }
    }
    #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xFF, 0xFE, 0x22]) }
  }

  @Test func limitsDepthAndSize() {
    let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
    #expect(throws: JSONParseError.self) { try parse(deep) }
    var limits = JSONParser.Limits()
    limits.maximumBytes = 10
    #expect(throws: JSONParseError.self) { try JSONParser.parse(Array("[1,2,3,4,5,6]".utf8), limits: limits) }
    let nested = String(repeating: "[", count: 50) + String(repeating: "]", count: 50)
    #expect((try? parse(nested)) != nil)
  }

  @Test func randomBytesNeverCrash() {
    var generator = SeededGenerator(seed: 17)
    let alphabet = Array("{}[]\",:0123456789-+.eEtrufalsn \\u\n".utf8)
    for _ in 0..<20_000 {
      let length = Int.random(in: 0...40, using: &generator)
      let bytes = (0..<length).map { _ in
        Bool.random(using: &generator)
          ? alphabet.randomElement(using: &generator)! : UInt8.random(in: 0...255, using: &generator)
      }
      _ = try? JSONParser.parse(bytes)
    }
  }
}

@Suite struct JSONNumberTests {
  /// The fast path for short decimals gives exactly what the general conversion gives.
  @Test func fastPathAgreesWithTheGeneralConversion() throws {
    var generator = SeededGenerator(seed: 31)
    var texts = [
      "0", "-0", "0.5", "1e22", "1e-22", "123456789012345", "0.000001", "-3.25e-7", "9007199254740993",
      "1e23", "0.1", "2.5E+3",
    ]
    for _ in 0..<20_000 {
      let value = Float.random(in: -1_000...1_000, using: &generator)
      texts.append(value.description)
      texts.append(String(Double.random(in: -1...1, using: &generator)))
      texts.append(String(Int.random(in: -1_000_000...1_000_000, using: &generator)))
    }
    for text in texts {
      let parsed = try JSONParser.parse(Array(text.utf8))
      guard case .number(let number) = parsed else {
        Issue.record("\(text) did not parse as a number")
        continue
      }
      let expected = Double(text)!
      #expect(number == expected && number.sign == expected.sign, "\(text): \(number) != \(expected)")
    }
  }
}
