import Hummingbird
import MemWALCore

/// One request of the API fuzz (APIFuzzTests), and what it may get back besides a 4xx with a JSON
/// error.
struct FuzzRequest: Sendable {
  var generator: String
  var method: HTTPRequest.Method
  var path: String
  var body: [UInt8]?
  var headers: HTTPFields = [:]
  /// The `Authorization` header: the admin token unless the `auth` generator sends another.
  var authorization: String? = "Bearer \(FuzzInputs.adminToken)"
  /// A read whose odd input may still be valid (an unknown id, an ignored query parameter): 200
  /// with a JSON body is allowed too. Never set on a write.
  var maySucceed = false
  /// The path or method may match no route, which docs/openapi.yaml answers with "the HTTP
  /// framework's own bare status with no JSON body": a bare 404 or 405 is allowed too.
  var mayBeUnrouted = false
  /// The request line is one the HTTP parser refuses before any route sees it (a method token
  /// llhttp does not know, a request line over Hummingbird's 80 KiB header limit): NIO's bare 400
  /// with `Connection: close` is allowed too.
  var mayBeRefusedByHTTP = false
  /// The error codes the answer must carry, when the generator knows them.
  var expectedCodes: Set<String>?

  init(
    _ generator: String, _ method: HTTPRequest.Method, _ path: String, body: [UInt8]? = nil,
    maySucceed: Bool = false, mayBeUnrouted: Bool = false
  ) {
    self.generator = generator
    self.method = method
    self.path = path
    self.body = body
    self.maySucceed = maySucceed
    self.mayBeUnrouted = mayBeUnrouted
  }
}

/// A step into a JSON value: an object's key or an array's index.
enum JSONStep: Hashable, Sendable {
  case key(String)
  case index(Int)
}

extension JSONValue {
  /// Every value in the tree with its path (the root's is empty), depth first, keys in order.
  func walk(from path: [JSONStep] = []) -> [(path: [JSONStep], value: JSONValue)] {
    var found = [(path: path, value: self)]
    switch self {
    case .array(let values):
      for (index, value) in values.enumerated() { found += value.walk(from: path + [.index(index)]) }
    case .object(let fields):
      for key in fields.keys.sorted() { found += fields[key]!.walk(from: path + [.key(key)]) }
    default: break
    }
    return found
  }

  /// This value with the one at `path` replaced.
  func replacing(at path: ArraySlice<JSONStep>, with replacement: JSONValue) -> JSONValue {
    guard let step = path.first else { return replacement }
    switch (self, step) {
    case (.array(var values), .index(let index)):
      values[index] = values[index].replacing(at: path.dropFirst(), with: replacement)
      return .array(values)
    case (.object(var fields), .key(let key)):
      fields[key] = fields[key]!.replacing(at: path.dropFirst(), with: replacement)
      return .object(fields)
    default: preconditionFailure("no value at \(path)")
    }
  }

  /// The value at `path`.
  func value(at path: ArraySlice<JSONStep>) -> JSONValue {
    guard let step = path.first else { return self }
    switch (self, step) {
    case (.array(let values), .index(let index)): return values[index].value(at: path.dropFirst())
    case (.object(let fields), .key(let key)): return fields[key]!.value(at: path.dropFirst())
    default: preconditionFailure("no value at \(path)")
    }
  }
}

/// A valid request body the generators start from; the setup sends each once to prove it valid.
struct FuzzTemplate: Sendable {
  var name: String
  var path: String
  var body: JSONValue
}

/// The malformed requests, generator by generator. Each generator is deterministic given the
/// generator state it is handed, so a seed replays the whole run.
enum FuzzInputs {
  static let adminToken = "fuzz-admin"
  static let readerToken = "fuzz-reader"
  static let otherToken = "fuzz-other"
  static let namespace = "/v1/namespaces/agents"

  /// Free-form subtrees: any key and any value is valid inside them, so type and unknown-field
  /// mutations must not enter them (the parser's own checks still apply, and are fuzzed there).
  static let opaqueKeys: Set<String> = ["metadata", "properties", "filter"]

  static func isOpaque(_ path: [JSONStep]) -> Bool {
    path.dropLast().contains { step in
      if case .key(let key) = step { return opaqueKeys.contains(key) }
      return false
    }
  }

  // MARK: templates

  /// The write bodies; `key` prefixes their idempotency keys (the setup's differs from the fuzz's, so
  /// a mutation is never answered as a repeat of the setup's write).
  static func writeTemplates(key: String, namespaceName: String) -> [FuzzTemplate] {
    let base64 = VectorBase64.text([0.5, -0.5, 0.25, 1])
    return [
      template(
        "namespace", "/v1/namespaces",
        #"{"name":"\#(namespaceName)","dimension":4,"metric":"cosine","durability":"local"}"#),
      template(
        "memories", namespace + "/memories",
        #"{"memories":[{"id":"m1","vector":[0.1,0.2,0.3,0.4],"text":"alpha","#
          + #""metadata":{"kind":"fact","n":1,"tags":["a","b"]},"expires_at":"2999-01-01T00:00:00Z","#
          + #""if_version":0},{"id":"m2","vector_base64":"\#(base64)","metadata":{}}],"#
          + #""durability":"local","idempotency_key":"\#(key)-memories"}"#),
      template(
        "nodes", namespace + "/graph/nodes",
        #"{"nodes":[{"id":"alice","type":"person","properties":{"age":30,"langs":["en"]},"if_version":0},"#
          + #"{"id":"bob","type":"person"}],"durability":"local","idempotency_key":"\#(key)-nodes"}"#),
      template(
        "edges", namespace + "/graph/edges",
        #"{"edges":[{"id":"e1","from":"alice","to":"bob","type":"knows","properties":{"weight":0.5},"#
          + #""valid_from":"2024-01-01T00:00:00Z","valid_to":1900000000000000,"if_version":0}],"#
          + #""durability":"local","idempotency_key":"\#(key)-edges"}"#),
      template(
        "transactions", namespace + "/transactions",
        #"{"operations":[{"op":"upsert_memory","if_version":0,"#
          + #""memory":{"id":"m3","vector":[0.4,0.3,0.2,0.1],"text":"gamma","metadata":{}}},"#
          + #"{"op":"upsert_node","node":{"id":"carol","type":"person","properties":{}}},"#
          + #"{"op":"upsert_edge","edge":{"id":"e2","from":"bob","to":"carol","type":"knows"}},"#
          + #"{"op":"delete_memory","id":"m2"}],"durability":"local","idempotency_key":"\#(key)-transactions"}"#
      ),
    ]
  }

  /// The read bodies (search and traversal), valid once the setup's writes are in.
  static let readTemplates: [FuzzTemplate] = [
    template(
      "search", namespace + "/search",
      #"{"vector":[0.1,0.2,0.3,0.4],"k":2,"filter":{"kind":{"eq":"fact"}},"ef":16,"#
        + #""include_vectors":true,"min_lsn":1,"as_of_lsn":2}"#),
    template(
      "search_base64", namespace + "/search",
      #"{"vector_base64":"\#(VectorBase64.text([1, 0, 0, 0]))","k":1,"as_of_time":"2999-01-01T00:00:00Z"}"#),
    template(
      "traverse", namespace + "/graph/traverse",
      #"{"start":"alice","max_depth":2,"edge_types":["knows"],"direction":"out","min_lsn":1}"#),
    template(
      "path", namespace + "/graph/path",
      #"{"from":"alice","to":"carol","max_depth":3,"edge_types":"knows","direction":"both"}"#),
  ]

  static func template(_ name: String, _ path: String, _ text: String) -> FuzzTemplate {
    FuzzTemplate(name: name, path: path, body: try! JSONParser.parse(Array(text.utf8)))
  }

  static let templates = writeTemplates(key: "fuzz-key", namespaceName: "scratch") + readTemplates

  /// Every route that takes a JSON body.
  static let bodyRoutes = Array(Set(templates.map(\.path))).sorted()

  static func post(_ generator: String, _ template: FuzzTemplate, _ body: [UInt8]) -> FuzzRequest {
    FuzzRequest(generator, .post, template.path, body: body)
  }

  // MARK: splicing raw bytes into a template

  static let marker = "@@fuzz@@"

  /// `value`'s JSON text with the value at `path` replaced by the raw bytes `raw`.
  static func splice(_ value: JSONValue, at path: [JSONStep], _ raw: [UInt8]) -> [UInt8] {
    let text = Array(value.replacing(at: path[...], with: .string(marker)).jsonText.utf8)
    return replacingFirst(Array("\"\(marker)\"".utf8), in: text, with: raw)
  }

  /// `value`'s JSON text with the key that `path` ends in replaced by the raw bytes `raw`.
  static func spliceKey(_ value: JSONValue, at path: [JSONStep], _ raw: [UInt8]) -> [UInt8] {
    guard case .key(let key)? = path.last, case .object(var fields) = value.value(at: path.dropLast())
    else { preconditionFailure("no key at \(path)") }
    fields[marker] = fields.removeValue(forKey: key)
    let text = Array(value.replacing(at: path.dropLast(), with: .object(fields)).jsonText.utf8)
    return replacingFirst(Array("\"\(marker)\"".utf8), in: text, with: raw)
  }

  static func replacingFirst(_ needle: [UInt8], in text: [UInt8], with replacement: [UInt8]) -> [UInt8] {
    guard
      let start = (0...(text.count - needle.count)).first(where: {
        text[$0..<($0 + needle.count)].elementsEqual(needle)
      })
    else { preconditionFailure("marker not found") }
    return Array(text[..<start]) + replacement + Array(text[(start + needle.count)...])
  }

  static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

  /// A JSON string literal of `count` copies of `character`.
  static func long(_ character: Character, _ count: Int) -> JSONValue {
    .string(String(repeating: character, count: count))
  }
}
