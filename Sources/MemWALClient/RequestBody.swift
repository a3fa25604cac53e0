import MemWALCore

/// A request body with vectors, written straight to bytes. A batch of 100 384-d memories is 38,400
/// components; as `JSONValue`s each would be an enum in an array, then Double text, before it is
/// bytes. Here each is base64 (`VectorBase64`) or its shortest decimal text (`FloatText`).
struct RequestBody {
  let vectorEncoding: MemWALClient.VectorEncoding
  private(set) var bytes: [UInt8] = []

  init(vectorEncoding: MemWALClient.VectorEncoding) {
    self.vectorEncoding = vectorEncoding
  }

  /// `{…fields, "memories": [{"id", "metadata", "text"?, "expires_at"?, vector}, …]}`.
  mutating func appendMemories(_ memories: [MemoryRecord], beside fields: JSONObject)
    throws(MemWALClientError)
  {
    let perComponent = vectorEncoding == .base64 ? 6 : 12
    bytes.reserveCapacity(memories.reduce(64) { $0 + 64 + $1.id.utf8.count + $1.vector.count * perComponent })
    bytes.append(UInt8(ascii: "{"))
    appendFields(fields)
    bytes.append(contentsOf: #""memories":["#.utf8)
    for (index, memory) in memories.enumerated() {
      if index > 0 { bytes.append(UInt8(ascii: ",")) }
      var item: JSONObject = ["id": .string(memory.id), "metadata": .object(memory.metadata)]
      if let text = memory.text { item["text"] = .string(text) }
      if let expires = memory.expiresAtMicros { item["expires_at"] = .number(Double(expires)) }
      try appendObject(item, vector: memory.vector, path: "memories[\(index)].vector")
    }
    bytes.append(contentsOf: "]}".utf8)
  }

  /// `{…fields, vector}` with the vector as `vector` or `vector_base64`. A component that is not
  /// finite is refused here: JSON has no text for it, and the node would refuse it anyway.
  mutating func appendObject(_ fields: JSONObject, vector: [Float], path: String) throws(MemWALClientError) {
    if let index = vector.firstIndex(where: { !$0.isFinite }) {
      throw MemWALClientError(
        status: 0, code: "invalid_request",
        message: "\(path)[\(index)] is \(vector[index]); vector components must be finite")
    }
    bytes.append(UInt8(ascii: "{"))
    appendFields(fields)
    switch vectorEncoding {
    case .base64:
      bytes.append(contentsOf: #""vector_base64":""#.utf8)
      VectorBase64.append(vector, to: &bytes)
      bytes.append(UInt8(ascii: "\""))
    case .json:
      bytes.append(contentsOf: #""vector":["#.utf8)
      for (index, component) in vector.enumerated() {
        if index > 0 { bytes.append(UInt8(ascii: ",")) }
        FloatText.append(component, to: &bytes)
      }
      bytes.append(UInt8(ascii: "]"))
    }
    bytes.append(UInt8(ascii: "}"))
  }

  /// `"key":value,` for each field, keys in ascending order.
  private mutating func appendFields(_ fields: JSONObject) {
    var text = ""
    for key in fields.keys.sorted() {
      JSONValue.writeString(key, into: &text)
      text += ":"
      fields[key]!.write(into: &text)
      text += ","
    }
    bytes.append(contentsOf: text.utf8)
  }
}
