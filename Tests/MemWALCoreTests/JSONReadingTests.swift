import MemWALCore
import Testing

/// JSONParser's streaming reader: the same values and the same refusals as `parse`.
@Suite struct JSONReadingTests {
  /// Reads `text` with the reader, numbers arrays under "vector" as floats, the rest as values.
  static func read(_ text: String) throws -> (fields: JSONObject, vectors: [String: [Float]]) {
    var reader = try JSONParser(reading: Array(text.utf8))
    var fields: JSONObject = [:]
    var vectors: [String: [Float]] = [:]
    try reader.readObject { reader, key throws(JSONParseError) in
      if key.hasPrefix("vector"), let floats = try reader.readFloatArray(maximumCount: 4) {
        vectors[key] = floats
      } else if key == "list", reader.isAtArray {
        var values: [JSONValue] = []
        try reader.readArray { reader throws(JSONParseError) in values.append(try reader.readValue()) }
        fields[key] = .array(values)
      } else {
        fields[key] = try reader.readValue()
      }
    }
    try reader.finish()
    return (fields, vectors)
  }

  @Test func readsVectorsAsFloatsAndTheRestAsValues() throws {
    let (fields, vectors) = try Self.read(
      #" { "vector": [0.5, -1e-3, 3, 1.0000001], "vector2": [], "list": [1, "a", {"b": null}], "x": {"y": [1]} } "#
    )
    #expect(vectors["vector"] == [0.5, -1e-3, 3, 1.000_000_1])
    #expect(vectors["vector2"] == [])
    #expect(fields["list"] == .array([.number(1), .string("a"), .object(["b": .null])]))
    #expect(fields["x"] == .object(["y": .array([.number(1)])]))
  }

  @Test func leavesOtherArraysWhole() throws {
    // Not all numbers, out of Float's range, or longer than allowed: read as values instead.
    let (fields, vectors) = try Self.read(
      #"{"vector": [1, "a"], "vector2": [1, 1e300], "vector3": [1, 2, 3, 4, 5], "vector4": 7}"#)
    #expect(vectors.isEmpty)
    #expect(fields["vector"] == .array([.number(1), .string("a")]))
    #expect(fields["vector2"] == .array([.number(1), .number(1e300)]))
    #expect(fields["vector3"] == .array([1, 2, 3, 4, 5].map { .number($0) }))
    #expect(fields["vector4"] == .number(7))
  }

  @Test func refusesWhatParseRefuses() {
    let bad = [
      #"{"vector": [1,]}"#, #"{"vector": [1 2]}"#, #"{"vector": [1, 01]}"#,
      #"{"vector": [1], "vector": [2]}"#,
      #"{"a": 1,}"#, #"{"a" 1}"#, #"{"list": [1,]}"#, #"{"a": 1} x"#, #"{"vector": [1"#, #"{"list": ["#,
      "{", "",
    ]
    for text in bad {
      #expect(throws: JSONParseError.self, "\(text)") { _ = try Self.read(text) }
      #expect(throws: JSONParseError.self, "\(text)") { _ = try JSONParser.parse(Array(text.utf8)) }
    }
  }

  @Test func keepsTheDepthLimit() throws {
    var limits = JSONParser.Limits()
    limits.maximumDepth = 2
    var reader = try JSONParser(reading: Array(#"{"a": {"b": {"c": 1}}}"#.utf8), limits: limits)
    #expect(throws: JSONParseError.self) {
      try reader.readObject { reader, _ throws(JSONParseError) in _ = try reader.readValue() }
    }
    #expect(throws: JSONParseError.self) {
      _ = try JSONParser.parse(Array(#"{"a": {"b": {"c": 1}}}"#.utf8), limits: limits)
    }
  }

  @Test func stringsWithAndWithoutEscapes() throws {
    let value = try JSONParser.parse(Array(#"["plain", "tab\tand \"quote\"", "é\u00e9", ""]"#.utf8))
    #expect(value == .array([.string("plain"), .string("tab\tand \"quote\""), .string("éé"), .string("")]))
  }
}
