/// The binary encoding of before- and after-images inside WAL operations (docs/wal-format.md,
/// "Record images"). Every image starts with a format byte; decoding checks every length against
/// the bytes left and never traps.
///
/// ```
/// image     = format:u8(1) body
/// namespace = name dimension:u32 metric:u8(1 cosine, 2 dot, 3 l2)
/// memory    = id dimension:u32 dimension×f32 hasText:u8 [text] hasExpiry:u8 [expiresAt:i64] json(metadata)
/// node      = id type json(properties)
/// edge      = id from to type json(properties) hasFrom:u8 [validFrom:i64] hasTo:u8 [validTo:i64]
/// string    = length:u32 utf8
/// json      = tag:u8 (0 null, 1 false, 2 true, 3 number f64, 4 string, 5 array count:u32 json…,
///             6 object count:u32 (string json)… with keys in ascending order)
/// ```
public enum RecordCodec {
  static let formatVersion: UInt8 = 1
  static let maximumDepth = 64

  public static func encode(_ value: RecordValue) -> [UInt8] {
    var writer = ByteWriter(capacity: 64)
    writer.write(formatVersion)
    switch value {
    case .namespace(let config):
      write(config.name, into: &writer)
      writer.write(UInt32(config.dimension))
      writer.write(metricCode(config.metric))
    case .memory(let memory):
      write(memory.id, into: &writer)
      writer.write(UInt32(memory.vector.count))
      writer.bytes.reserveCapacity(writer.count + memory.vector.count * 4 + 64)
      for component in memory.vector { writer.write(component.bitPattern) }
      writeOptional(memory.text, into: &writer)
      writeOptional(memory.expiresAtMicros, into: &writer)
      write(.object(memory.metadata), into: &writer)
    case .node(let node):
      write(node.id, into: &writer)
      write(node.type, into: &writer)
      write(.object(node.properties), into: &writer)
    case .edge(let edge):
      write(edge.id, into: &writer)
      write(edge.from, into: &writer)
      write(edge.to, into: &writer)
      write(edge.type, into: &writer)
      write(.object(edge.properties), into: &writer)
      writeOptional(edge.validFromMicros, into: &writer)
      writeOptional(edge.validToMicros, into: &writer)
    }
    return writer.bytes
  }

  public static func decode(_ bytes: [UInt8], as target: TargetType) throws(ByteDecodingError) -> RecordValue
  {
    let result = bytes.withUnsafeBytes { raw in
      Result { () throws(ByteDecodingError) -> RecordValue in try decode(raw, as: target) }
    }
    return try result.get()
  }

  static func decode(_ raw: UnsafeRawBufferPointer, as target: TargetType) throws(ByteDecodingError)
    -> RecordValue
  {
    do {
      var reader = ByteReader(raw)
      let version: UInt8 = try reader.read()
      guard version == formatVersion else {
        throw .invalidValue(field: "image_format", offset: 0, detail: "unknown image format \(version)")
      }
      let value: RecordValue
      switch target {
      case .namespace:
        let name = try readString(&reader, field: "name")
        let dimension = Int(try reader.read(UInt32.self))
        let metricOffset = reader.offset
        guard let metric = metric(try reader.read(UInt8.self)) else {
          throw .invalidValue(field: "metric", offset: metricOffset, detail: "unknown metric")
        }
        value = .namespace(NamespaceConfig(name: name, dimension: dimension, metric: metric))
      case .memory:
        let id = try readString(&reader, field: "id")
        let dimension = Int(try reader.read(UInt32.self))
        try reader.require(dimension * 4)
        var vector = [Float](repeating: 0, count: dimension)
        for index in 0..<dimension { vector[index] = Float(bitPattern: try reader.read(UInt32.self)) }
        let text: String? = try readOptional(&reader) { reader throws(ByteDecodingError) in
          try readString(&reader, field: "text")
        }
        let expires: Int64? = try readOptional(&reader) { reader throws(ByteDecodingError) in
          try reader.read(Int64.self)
        }
        let metadata = try readObject(&reader, field: "metadata")
        value = .memory(
          MemoryRecord(id: id, vector: vector, text: text, metadata: metadata, expiresAtMicros: expires))
      case .node:
        let id = try readString(&reader, field: "id")
        let type = try readString(&reader, field: "type")
        value = .node(GraphNode(id: id, type: type, properties: try readObject(&reader, field: "properties")))
      case .edge:
        let id = try readString(&reader, field: "id")
        let from = try readString(&reader, field: "from")
        let to = try readString(&reader, field: "to")
        let type = try readString(&reader, field: "type")
        let properties = try readObject(&reader, field: "properties")
        let validFrom: Int64? = try readOptional(&reader) { reader throws(ByteDecodingError) in
          try reader.read(Int64.self)
        }
        let validTo: Int64? = try readOptional(&reader) { reader throws(ByteDecodingError) in
          try reader.read(Int64.self)
        }
        value = .edge(
          GraphEdge(
            id: id, from: from, to: to, type: type, properties: properties, validFromMicros: validFrom,
            validToMicros: validTo))
      }
      guard reader.remaining == 0 else {
        throw .invalidValue(
          field: "image", offset: reader.offset, detail: "\(reader.remaining) trailing bytes")
      }
      return value
    }
  }

  // MARK: pieces

  static func metricCode(_ metric: DistanceMetric) -> UInt8 {
    switch metric {
    case .cosine: return 1
    case .dot: return 2
    case .l2: return 3
    }
  }

  static func metric(_ code: UInt8) -> DistanceMetric? {
    switch code {
    case 1: return .cosine
    case 2: return .dot
    case 3: return .l2
    default: return nil
    }
  }

  static func write(_ string: String, into writer: inout ByteWriter) {
    let utf8 = Array(string.utf8)
    writer.write(UInt32(utf8.count))
    writer.write(bytes: utf8)
  }

  static func writeOptional(_ string: String?, into writer: inout ByteWriter) {
    if let string {
      writer.write(UInt8(1))
      write(string, into: &writer)
    } else {
      writer.write(UInt8(0))
    }
  }

  static func writeOptional(_ value: Int64?, into writer: inout ByteWriter) {
    if let value {
      writer.write(UInt8(1))
      writer.write(value)
    } else {
      writer.write(UInt8(0))
    }
  }

  public static func write(_ value: JSONValue, into writer: inout ByteWriter) {
    switch value {
    case .null: writer.write(UInt8(0))
    case .bool(let flag): writer.write(UInt8(flag ? 2 : 1))
    case .number(let number):
      writer.write(UInt8(3))
      writer.write(number.bitPattern)
    case .string(let string):
      writer.write(UInt8(4))
      write(string, into: &writer)
    case .array(let values):
      writer.write(UInt8(5))
      writer.write(UInt32(values.count))
      for element in values { write(element, into: &writer) }
    case .object(let fields):
      writer.write(UInt8(6))
      writer.write(UInt32(fields.count))
      for key in fields.keys.sorted() {
        write(key, into: &writer)
        write(fields[key]!, into: &writer)
      }
    }
  }

  static func readString(_ reader: inout ByteReader, field: String) throws(ByteDecodingError) -> String {
    let length = Int(try reader.read(UInt32.self))
    return try reader.readString(length, field: field)
  }

  static func readOptional<T>(
    _ reader: inout ByteReader, _ body: (inout ByteReader) throws(ByteDecodingError) -> T
  ) throws(ByteDecodingError) -> T? {
    let offset = reader.offset
    switch try reader.read(UInt8.self) {
    case 0: return nil
    case 1: return try body(&reader)
    default: throw .invalidValue(field: "presence", offset: offset, detail: "must be 0 or 1")
    }
  }

  static func readObject(_ reader: inout ByteReader, field: String) throws(ByteDecodingError) -> JSONObject {
    let offset = reader.offset
    guard case .object(let fields) = try readJSON(&reader, depth: 0) else {
      throw .invalidValue(field: field, offset: offset, detail: "not an object")
    }
    return fields
  }

  static func readJSON(_ reader: inout ByteReader, depth: Int) throws(ByteDecodingError) -> JSONValue {
    let offset = reader.offset
    guard depth <= maximumDepth else {
      throw .invalidValue(field: "json", offset: offset, detail: "nested too deep")
    }
    switch try reader.read(UInt8.self) {
    case 0: return .null
    case 1: return .bool(false)
    case 2: return .bool(true)
    case 3: return .number(Double(bitPattern: try reader.read(UInt64.self)))
    case 4: return .string(try readString(&reader, field: "json string"))
    case 5:
      let count = Int(try reader.read(UInt32.self))
      guard count <= reader.remaining else {
        throw .truncated(offset: reader.offset, needed: count, available: reader.remaining)
      }
      var values: [JSONValue] = []
      values.reserveCapacity(count)
      for _ in 0..<count { values.append(try readJSON(&reader, depth: depth + 1)) }
      return .array(values)
    case 6:
      let count = Int(try reader.read(UInt32.self))
      guard count * 5 <= reader.remaining else {
        throw .truncated(offset: reader.offset, needed: count * 5, available: reader.remaining)
      }
      var fields: JSONObject = [:]
      fields.reserveCapacity(count)
      var previous: String?
      for _ in 0..<count {
        let keyOffset = reader.offset
        let key = try readString(&reader, field: "json key")
        if let previous, previous >= key {
          throw .invalidValue(
            field: "json key", offset: keyOffset, detail: "keys must be unique and ascending")
        }
        previous = key
        fields[key] = try readJSON(&reader, depth: depth + 1)
      }
      return .object(fields)
    default:
      throw .invalidValue(field: "json", offset: offset, detail: "unknown tag")
    }
  }
}
