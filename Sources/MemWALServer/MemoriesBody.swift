import MemWALCore

/// The body of `POST /v1/namespaces/{ns}/memories`, read with `JSONParser`'s streaming reader: each
/// memory's `vector` goes from text straight to [Float] instead of through a `JSONValue` per
/// component (a batch of 100 384-d memories is 38,400 numbers). Anything unusual — a vector that is
/// not all numbers, a component out of Float's range, an entry that is not an object — is kept as
/// the `JSONValue` that `parse` would have made, so validation and its messages are the same.
/// `vector_base64` is decoded from the body's bytes the same way, without a String in between.
struct MemoriesBody {
  enum Entry {
    /// An object's fields, without the field (`vector` or `vector_base64`) read into `vector`.
    case object(JSONObject, vector: DecodedVector?)
    case value(JSONValue)
  }

  /// The body as `parse` would read it, but without `memories` when that was read into `memories`.
  var top: JSONValue
  var memories: [Entry]?

  init(_ bytes: [UInt8]) throws(JSONParseError) {
    var reader = try JSONParser(reading: bytes)
    guard reader.isAtObject else {
      top = try reader.readValue()
      try reader.finish()
      return
    }
    var fields: JSONObject = [:]
    var memories: [Entry]?
    try reader.readObject { reader, key throws(JSONParseError) in
      guard key == "memories", reader.isAtArray else {
        fields[key] = try reader.readValue()
        return
      }
      var entries: [Entry] = []
      try reader.readArray { reader throws(JSONParseError) in entries.append(try Self.entry(&reader)) }
      memories = entries
    }
    try reader.finish()
    self.top = .object(fields)
    self.memories = memories
  }

  private static func entry(_ reader: inout JSONParser) throws(JSONParseError) -> Entry {
    guard reader.isAtObject else { return .value(try reader.readValue()) }
    var fields: JSONObject = [:]
    var vector: DecodedVector?
    let limit = JSONFields.maximumVectorComponents
    try reader.readObject { reader, key throws(JSONParseError) in
      if vector == nil, key == "vector", let floats = try reader.readFloatArray(maximumCount: limit) {
        vector = DecodedVector(components: floats, field: key)
      } else if vector == nil, key == "vector_base64",
        let floats = reader.readBase64Vector(maximumCount: limit)
      {
        vector = DecodedVector(components: floats, field: key)
      } else {
        fields[key] = try reader.readValue()
      }
    }
    return .object(fields, vector: vector)
  }
}

/// A memory's vector read from the body, and the field it came from (`vector` or `vector_base64`).
struct DecodedVector {
  var components: [Float]
  var field: String
}
