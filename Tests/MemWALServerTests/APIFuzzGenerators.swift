import Hummingbird
import MemWALCore

/// The fuzz's generators: each returns its requests, every one of which the API must refuse
/// (or, where `maySucceed`, may answer as a read). Randomness comes only from `random`.
extension FuzzInputs {
  typealias Generator = (name: String, make: (inout SplitMix64) -> [FuzzRequest])

  static var generators: [Generator] {
    [
      ("random_bytes", randomBytes), ("invalid_utf8", invalidUTF8), ("truncated", truncated),
      ("wrong_types", wrongTypes), ("huge_numbers", hugeNumbers), ("deep_nesting", deepNesting),
      ("long_values", longValues), ("huge_arrays", hugeArrays), ("duplicate_keys", duplicateKeys),
      ("unknown_fields", unknownFields), ("vector_base64", badBase64),
      ("empty_and_content_type", emptyBodies),
      ("query", badQueries), ("paths", badPaths), ("methods", wrongMethods), ("auth", badAuthorization),
    ]
  }

  // MARK: bytes

  /// Uniform random bytes, random JSON-alphabet soup, and valid bodies with a few bytes
  /// replaced, inserted or deleted (kept only when the result no longer parses, so it cannot be a
  /// valid write by chance).
  static func randomBytes(_ random: inout SplitMix64) -> [FuzzRequest] {
    let soup = bytes(#"{}[]":,.-+eE0123456789 truefalsnl\"#)
    var requests: [FuzzRequest] = []
    for route in bodyRoutes {
      for _ in 0..<16 {
        let uniform = (0..<Int.random(in: 0..<300, using: &random)).map { _ in
          UInt8.random(in: 0...255, using: &random)
        }
        let text = (0..<Int.random(in: 1..<300, using: &random)).map { _ in
          soup.randomElement(using: &random)!
        }
        requests.append(FuzzRequest("random_bytes", .post, route, body: uniform))
        requests.append(FuzzRequest("random_bytes", .post, route, body: text))
      }
    }
    for template in templates {
      let valid = Array(template.body.jsonText.utf8)
      var made = 0
      while made < 24 {
        var body = valid
        for _ in 0..<Int.random(in: 1...6, using: &random) {
          let at = Int.random(in: 0..<body.count, using: &random)
          switch Int.random(in: 0..<3, using: &random) {
          case 0: body[at] = UInt8.random(in: 0...255, using: &random)
          case 1: body.insert(soup.randomElement(using: &random)!, at: at)
          default: if body.count > 1 { body.remove(at: at) }
          }
        }
        guard (try? JSONParser.parse(body)) == nil else { continue }
        requests.append(post("random_bytes", template, body))
        made += 1
      }
    }
    return requests
  }

  static let badUTF8: [[UInt8]] = [
    [0xFF], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0x80], [0xE2, 0x82],
    [0xF8, 0x88, 0x80, 0x80, 0x80], [0xC3], [0x00], [0x1F], bytes(#"\ud800"#), bytes(#"\udc00x"#),
    bytes(#"\ud800\u0041"#), bytes(#"\uZZZZ"#), bytes(#"\x41"#),
  ]

  /// Invalid UTF-8 (and bad escapes) inside every string value and every key of every template,
  /// free-form subtrees included.
  static func invalidUTF8(_ random: inout SplitMix64) -> [FuzzRequest] {
    var requests: [FuzzRequest] = []
    for template in templates {
      for (path, value) in template.body.walk() {
        var raw = bytes("\"ok")
        raw += badUTF8.randomElement(using: &random)!
        raw += bytes("ok\"")
        if case .string = value {
          requests.append(post("invalid_utf8", template, splice(template.body, at: path, raw)))
        }
        if case .key? = path.last {
          requests.append(post("invalid_utf8", template, spliceKey(template.body, at: path, raw)))
        }
      }
    }
    return requests
  }

  /// Every strict prefix of the write bodies and of one read body (cut at 0: an empty body).
  static func truncated(_ random: inout SplitMix64) -> [FuzzRequest] {
    templates.filter { ["memories", "edges", "transactions", "namespace", "search"].contains($0.name) }
      .flatMap { template in
        let valid = Array(template.body.jsonText.utf8)
        return (0..<valid.count).map { post("truncated", template, Array(valid[..<$0])) }
      }
  }

  // MARK: values

  /// Each value outside the free-form subtrees replaced by values of every other JSON type but
  /// null (null counts as absent, which is valid for optional fields).
  static func wrongTypes(_ random: inout SplitMix64) -> [FuzzRequest] {
    let candidates: [JSONValue] = [
      .string("x"), .number(0.5), .bool(true), .array([.number(0.5)]), .object(["x": .number(0.5)]),
    ]
    var requests: [FuzzRequest] = []
    for template in templates {
      for (path, value) in template.body.walk() where !isOpaque(path) {
        for wrong in candidates where kind(wrong) != kind(value) {
          // `edge_types` takes a string or an array of strings.
          if path.last == .key("edge_types"), case .string = wrong { continue }
          let body = template.body.replacing(at: path[...], with: wrong)
          requests.append(post("wrong_types", template, Array(body.jsonText.utf8)))
        }
      }
    }
    return requests
  }

  static func kind(_ value: JSONValue) -> Int {
    switch value {
    case .null: return 0
    case .bool: return 1
    case .number: return 2
    case .string: return 3
    case .array: return 4
    case .object: return 5
    }
  }

  static let digits400 = String(repeating: "9", count: 400)
  /// Number literals no JSON parser should turn into a finite double, or that are not JSON.
  static let unparseableNumbers = [
    "1e309", "-1e309", "1e400", "NaN", "Infinity", "-Infinity", "nan", digits400, "-" + digits400,
    "01", "+1", ".5", "1.", "1e", "--1", "0x10", "1_000",
  ]
  /// Valid doubles that no integer field (LSN, k, depth, dimension, time) should accept.
  static let badIntegers = [
    "18446744073709551616", "-18446744073709551616", "1e19", "-9.3e18", "9223372036854775808",
    "9007199254740993", "1.5", "-1", "1e300",
  ]
  /// Valid doubles outside Float's range (a vector component).
  static let badComponents = ["1e39", "-3.5e38", "1e300"]

  /// Huge, non-finite and non-JSON numbers in place of every number.
  static func hugeNumbers(_ random: inout SplitMix64) -> [FuzzRequest] {
    var requests: [FuzzRequest] = []
    for template in templates {
      for (path, value) in template.body.walk() {
        guard case .number = value else { continue }
        var literals = unparseableNumbers
        if !isOpaque(path) {
          let isComponent = path.dropLast().last == .key("vector")
          literals += isComponent ? badComponents : badIntegers
        }
        for literal in literals {
          requests.append(post("huge_numbers", template, splice(template.body, at: path, bytes(literal))))
        }
      }
    }
    return requests
  }

  /// Arrays and objects nested 10,000 deep (closed and unclosed), just past the parser's limit
  /// (65), and past the record limit (17), at the root and in each field down to two levels.
  static func deepNesting(_ random: inout SplitMix64) -> [FuzzRequest] {
    func repeated(_ text: String, _ count: Int) -> String { String(repeating: text, count: count) }
    let shapes = [
      repeated("[", 10_000) + repeated("]", 10_000),
      repeated(#"{"a":"#, 10_000) + "1" + repeated("}", 10_000),
      repeated("[", 10_000),
      repeated(#"[{"a":"#, 5_000) + "0" + repeated("}]", 5_000),
      repeated("[", 65) + repeated("]", 65),
      repeated(#"{"a":"#, 17) + "1" + repeated("}", 17),
    ].map(bytes)
    var requests: [FuzzRequest] = []
    for template in templates {
      for (path, _) in template.body.walk() where path.count <= 2 || path.last.map(isOpaqueStep) == true {
        for shape in shapes {
          requests.append(post("deep_nesting", template, splice(template.body, at: path, shape)))
        }
      }
    }
    return requests
  }

  static func isOpaqueStep(_ step: JSONStep) -> Bool {
    if case .key(let key) = step { return opaqueKeys.contains(key) }
    return false
  }

  /// Ids, types, names, texts, metadata and keys over their limits or breaking the id rules, and
  /// bodies over the body limit.
  static func longValues(_ random: inout SplitMix64) -> [FuzzRequest] {
    let edits: [(String, [JSONStep], JSONValue)] = [
      ("memories", [.key("memories"), .index(0), .key("id")], long("x", 513)),
      ("memories", [.key("memories"), .index(0), .key("id")], long("x", 100_000)),
      ("memories", [.key("memories"), .index(0), .key("id")], .string("")),
      ("memories", [.key("memories"), .index(0), .key("id")], .string("a/b")),
      ("memories", [.key("memories"), .index(0), .key("id")], .string("a\u{1}b")),
      ("memories", [.key("memories"), .index(0), .key("text")], long("t", 65_537)),
      ("memories", [.key("memories"), .index(0), .key("metadata")], .object(["big": long("b", 70_000)])),
      ("memories", [.key("idempotency_key")], long("k", 513)),
      ("memories", [.key("idempotency_key")], .string("")),
      ("nodes", [.key("nodes"), .index(0), .key("id")], long("x", 513)),
      ("nodes", [.key("nodes"), .index(0), .key("type")], long("t", 129)),
      ("nodes", [.key("nodes"), .index(0), .key("type")], .string("")),
      ("nodes", [.key("nodes"), .index(0), .key("properties")], .object(["big": long("b", 70_000)])),
      ("edges", [.key("edges"), .index(0), .key("id")], long("x", 513)),
      ("edges", [.key("edges"), .index(0), .key("from")], long("x", 513)),
      ("edges", [.key("edges"), .index(0), .key("to")], .string("")),
      ("edges", [.key("edges"), .index(0), .key("type")], long("t", 129)),
      ("edges", [.key("edges"), .index(0), .key("valid_to")], .string("2023-01-01T00:00:00Z")),
      ("namespace", [.key("name")], long("n", 129)),
      ("namespace", [.key("name")], long("n", 100_000)),
      ("namespace", [.key("name")], .string("")),
      ("namespace", [.key("name")], .string("a/b")),
      ("namespace", [.key("dimension")], .number(4097)),
      ("namespace", [.key("dimension")], .number(0)),
      ("transactions", [.key("operations"), .index(0), .key("op")], long("o", 100_000)),
      ("transactions", [.key("operations"), .index(0), .key("memory"), .key("id")], long("x", 513)),
      ("transactions", [.key("operations"), .index(3), .key("id")], long("x", 513)),
      ("search", [.key("vector")], .string("not a vector")),
      ("search_base64", [.key("vector_base64")], long("A", 1_000_000)),
    ]
    var requests = edits.map { name, path, value in
      let template = templates.first { $0.name == name }!
      return post(
        "long_values", template, Array(template.body.replacing(at: path[...], with: value).jsonText.utf8))
    }
    // Over the body limit (APIFuzzTests.bodyLimit): a memory with a long text, and random bytes.
    let memories = templates.first { $0.name == "memories" }!
    let overLimit = memories.body.replacing(
      at: [.key("memories"), .index(0), .key("text")], with: long("t", APIFuzzTests.bodyLimit))
    requests.append(post("long_values", memories, Array(overLimit.jsonText.utf8)))
    requests.append(
      FuzzRequest(
        "long_values", .post, memories.path,
        body: (0..<(APIFuzzTests.bodyLimit + 1)).map { _ in UInt8.random(in: 0...255, using: &random) }))
    return requests
  }

  /// Vectors of 100,000, 65,537 and 4,097 components; batches one over the limit (each item
  /// valid); `edge_types` over its limit; metadata with 100,000 keys.
  static func hugeArrays(_ random: inout SplitMix64) -> [FuzzRequest] {
    func numbers(_ count: Int) -> JSONValue { .array((0..<count).map { .number(Double($0 % 7) + 0.5) }) }
    func batch(_ count: Int, _ item: (Int) -> JSONValue) -> JSONValue { .array((0..<count).map(item)) }
    let limit = 1_001
    let edits: [(String, [JSONStep], JSONValue)] = [
      ("memories", [.key("memories"), .index(0), .key("vector")], numbers(100_000)),
      ("memories", [.key("memories"), .index(0), .key("vector")], numbers(65_537)),
      ("memories", [.key("memories"), .index(0), .key("vector")], numbers(4_097)),
      (
        "memories", [.key("memories")],
        batch(limit) { .object(["id": .string("b\($0)"), "vector": numbers(4)]) }
      ),
      (
        "memories", [.key("memories"), .index(0), .key("metadata")],
        .object(Dictionary(uniqueKeysWithValues: (0..<100_000).map { ("k\($0)", JSONValue.number(1)) }))
      ),
      ("nodes", [.key("nodes")], batch(limit) { .object(["id": .string("n\($0)"), "type": .string("t")]) }),
      (
        "edges", [.key("edges")],
        batch(limit) {
          .object([
            "id": .string("e\($0)"), "from": .string("alice"), "to": .string("bob"), "type": .string("t"),
          ])
        }
      ),
      (
        "transactions", [.key("operations")],
        batch(limit) { .object(["op": .string("delete_memory"), "id": .string("m\($0)")]) }
      ),
      ("transactions", [.key("operations"), .index(0), .key("memory"), .key("vector")], numbers(100_000)),
      ("search", [.key("vector")], numbers(100_000)),
      ("search", [.key("vector")], numbers(65_537)),
      ("traverse", [.key("edge_types")], .array((0..<65).map { .string("t\($0)") })),
      ("traverse", [.key("edge_types")], .array((0..<100_000).map { .string("t\($0)") })),
      ("path", [.key("edge_types")], .string((0..<65).map { "t\($0)" }.joined(separator: ","))),
    ]
    return edits.map { name, path, value in
      let template = templates.first { $0.name == name }!
      return post(
        "huge_arrays", template, Array(template.body.replacing(at: path[...], with: value).jsonText.utf8))
    }
  }

  // MARK: objects

  /// Every key of every object (free-form ones included) given twice, with the same value.
  static func duplicateKeys(_ random: inout SplitMix64) -> [FuzzRequest] {
    var requests: [FuzzRequest] = []
    for template in templates {
      for (path, value) in template.body.walk() {
        guard case .object(let fields) = value else { continue }
        for key in fields.keys.sorted() {
          var members = fields.keys.sorted().map { objectMember($0, fields[$0]!) }
          members.append(objectMember(key, fields[key]!))
          let text = "{" + members.joined(separator: ",") + "}"
          requests.append(post("duplicate_keys", template, splice(template.body, at: path, bytes(text))))
        }
      }
    }
    return requests
  }

  static func objectMember(_ key: String, _ value: JSONValue) -> String {
    var text = ""
    JSONValue.writeString(key, into: &text)
    return text + ":" + value.jsonText
  }

  static let unknownKeys = [
    "colour", "Vector", "vector ", "ID", "\u{0}", "__proto__", "", "nodes_", "k\u{301}",
  ]

  /// An unknown field added to each object outside the free-form subtrees.
  static func unknownFields(_ random: inout SplitMix64) -> [FuzzRequest] {
    var requests: [FuzzRequest] = []
    for template in templates {
      for (path, value) in template.body.walk() where !isOpaque(path) && path.last.map(isOpaqueStep) != true {
        guard case .object(var fields) = value else { continue }
        for key in unknownKeys.shuffled(using: &random).prefix(3) {
          fields[key] = .string("red")
          let body = template.body.replacing(at: path[...], with: .object(fields))
          requests.append(post("unknown_fields", template, Array(body.jsonText.utf8)))
          fields[key] = nil
        }
      }
    }
    return requests
  }

  /// `vector_base64` texts that are not one vector of four finite float32s, in a memory, in a
  /// transaction's memory and in a search.
  static func badBase64(_ random: inout SplitMix64) -> [FuzzRequest] {
    let good = VectorBase64.text([1, 2, 3, 4])
    let strings = [
      "", "A", "AAAA", "AAAAA", "*AAAAAAAAAAAAAAAAAAAAAA", String(good.dropLast(4)) + "A===",
      good.replacing("A", with: "-"), good.replacing("A", with: "_"), " " + good, good + "\n", "AA==" + good,
      "AAB=" + good, VectorBase64.text([1, 2, 3]), VectorBase64.text([1, 2, 3, 4, 5]),
      VectorBase64.text([1, .nan, 3, 4]), VectorBase64.text([1, 2, .infinity, 4]),
      VectorBase64.text([0, 0, 0, 0]),
    ]
    let texts = strings.map(JSONValue.string) + [.number(7), .array([.string(good)]), .bool(true)]
    let targets: [(String, [JSONStep])] = [
      ("memories", [.key("memories"), .index(1), .key("vector_base64")]),
      ("transactions", [.key("operations"), .index(0), .key("memory"), .key("vector")]),
      ("search_base64", [.key("vector_base64")]),
    ]
    var requests: [FuzzRequest] = []
    for (name, path) in targets {
      let template = templates.first { $0.name == name }!
      for text in texts {
        var body = template.body
        if path.last == .key("vector") {
          // The transaction's memory gives `vector`: replace it by `vector_base64`.
          guard case .object(var memory) = body.value(at: path.dropLast()) else { continue }
          memory["vector"] = nil
          memory["vector_base64"] = text
          body = body.replacing(at: path.dropLast(), with: .object(memory))
        } else {
          body = body.replacing(at: path[...], with: text)
        }
        requests.append(post("vector_base64", template, Array(body.jsonText.utf8)))
      }
      // Both a vector and a vector_base64.
      if case .object(var fields) = template.body.value(at: path.dropLast()) {
        fields["vector"] = .array([1, 0, 0, 0].map { .number($0) })
        fields["vector_base64"] = .string(good)
        let body = template.body.replacing(at: path.dropLast(), with: .object(fields))
        requests.append(post("vector_base64", template, Array(body.jsonText.utf8)))
      }
    }
    // A base64 text written with a JSON escape the fast path cannot read, still invalid.
    let memories = templates.first { $0.name == "memories" }!
    let escaped = splice(memories.body, at: targets[0].1, bytes(#""\u002A""# + good.dropFirst() + "\""))
    requests.append(post("vector_base64", memories, escaped))
    return requests
  }

  // MARK: framing

  /// Empty, blank and non-object bodies, and bodies that are not JSON under various content types
  /// (the API does not check `Content-Type`, so each body is invalid as JSON too).
  static func emptyBodies(_ random: inout SplitMix64) -> [FuzzRequest] {
    let plain = [
      " ", "\n\t\r ", "null", "[]", "\"\"", "0", "true", "{}", "{} {}", "{}garbage", "[{}]", "{\"a\"}",
    ].map(bytes)
    let memories = Array(templates.first { $0.name == "memories" }!.body.jsonText.utf8)
    let typed: [(String, [UInt8])] = [
      ("application/x-www-form-urlencoded", bytes("name=agents&dimension=4&metric=cosine")),
      ("text/plain", bytes("hello")),
      ("application/xml", bytes("<memories><memory id=\"x\"/></memories>")),
      (
        "multipart/form-data; boundary=x",
        bytes("--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n{}\r\n--x--")
      ),
      (
        "application/json; charset=utf-16",
        String(decoding: memories, as: UTF8.self).utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
      ),
      ("application/json", [0xEF, 0xBB, 0xBF] + memories),
      ("application/json", [0xFE, 0xFF] + memories),
      ("application/octet-stream", [0x1F, 0x8B, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00]),
      ("application/msgpack", [0x81, 0xA4, 0x6E, 0x61, 0x6D, 0x65, 0xA1, 0x61]),
      ("", bytes("{")),
    ]
    var requests: [FuzzRequest] = []
    for route in bodyRoutes {
      requests.append(FuzzRequest("empty_and_content_type", .post, route, body: nil))
      requests.append(FuzzRequest("empty_and_content_type", .post, route, body: []))
      for body in plain { requests.append(FuzzRequest("empty_and_content_type", .post, route, body: body)) }
      for (contentType, body) in typed {
        var request = FuzzRequest("empty_and_content_type", .post, route, body: body)
        request.headers[.contentType] = contentType
        if contentType == "application/octet-stream" { request.headers[.contentEncoding] = "gzip" }
        requests.append(request)
      }
    }
    return requests
  }

  /// Query parameters of the wrong type or value on the routes that read them.
  static func badQueries(_ random: inout SplitMix64) -> [FuzzRequest] {
    let readPoint = [
      "min_lsn=abc", "min_lsn=-1", "min_lsn=99999999999999999999", "min_lsn=1.5", "min_lsn=", "min_lsn=1e3",
      "min_lsn=%zz", "min_lsn=1%00", "min_lsn=0x1", "min_lsn=%201", "as_of_lsn=abc", "as_of_lsn=-1",
      "as_of_lsn=99999999999999999999", "as_of_lsn=999999999", "as_of_lsn=1&as_of_time=2024-01-01T00:00:00Z",
      "as_of_time=yesterday", "as_of_time=2024-13-01T00:00:00Z", "as_of_time=",
      "as_of_time=99999999999999999999",
    ]
    // Odd but valid: the read may answer 200 (or 404, 410); it must not crash.
    let oddReads = [
      "as_of_time=9223372036854775807", "as_of_time=-9223372036854775808", "as_of_time=0000-01-01T00:00:00Z",
      "as_of_time=9999-12-31T23:59:60Z", "as_of_time=2024-01-01T00:00:00%2B99:99", "min_lsn=0", "k=-1",
      "k=99999999999999999999", "min_lsn=1&min_lsn=abc",
    ]
    let neighbors = [
      "direction=sideways", "direction=", "direction=OUT",
      "type=" + (0..<65).map { "t\($0)" }.joined(separator: ","),
    ]
    let reads = [
      namespace + "/memories/m1", namespace + "/graph/nodes/alice",
      namespace + "/graph/nodes/alice/neighbors",
      "/v1/namespaces", "/v1/digest",
    ]
    var requests: [FuzzRequest] = []
    for path in reads {
      let specific = path.hasSuffix("neighbors") ? neighbors : []
      for query in readPoint + specific {
        requests.append(FuzzRequest("query", .get, path + "?" + query))
      }
      for query in oddReads {
        requests.append(FuzzRequest("query", .get, path + "?" + query, maySucceed: true))
      }
    }
    for query in [
      "from_lsn=abc", "from_lsn=-1", "from_lsn=99999999999999999999", "from_lsn=1.5", "min_lsn=1", "k=-1",
    ] {
      requests.append(FuzzRequest("query", .get, "/v1/changes?" + query))
    }
    let deletes = [
      "if_version=abc", "if_version=-1", "if_version=99999999999999999999", "if_version=1.5", "if_version=",
      "if_version=%zz", "if_version=0", "if_version=999", "durability=eventually", "durability=",
      "durability=LOCAL", "durability=local%00", "idempotency_key=",
      "idempotency_key=" + String(repeating: "k", count: 513),
    ]
    for path in [namespace + "/memories/m1", namespace + "/graph/nodes/alice", namespace + "/graph/edges/e1"]
    {
      for query in deletes { requests.append(FuzzRequest("query", .delete, path + "?" + query)) }
    }
    // A namespace delete reads only `durability`: any other parameter would be ignored and the
    // namespace deleted.
    for query in ["durability=eventually", "durability=", "durability=LOCAL", "durability=%00"] {
      requests.append(FuzzRequest("query", .delete, namespace + "?" + query))
    }
    return requests
  }

  /// Overlong path components, ids with `/`, `%00`, `..` and bad percent-encoding, on every route
  /// with a path parameter; the write routes get valid bodies, so only the path is wrong.
  static func badPaths(_ random: inout SplitMix64) -> [FuzzRequest] {
    let components = [
      String(repeating: "x", count: 600), String(repeating: "x", count: 10_000),
      String(repeating: "x", count: 100_000),
      "a%2Fb", "a/b", "%00", "a%00b", "..", ".", "%2e%2e", "..%2Fm1", "%zz", "%", "%C0%80", "%FF",
      "%F0%9F%98%80", "%20", "%0D%0A", "m1%2F..", "*", "m1;x", "%25", "m1%00",
    ]
    let memories = Array(templates.first { $0.name == "memories" }!.body.jsonText.utf8)
    let search = Array(templates.first { $0.name == "search" }!.body.jsonText.utf8)
    let routes: [(HTTPRequest.Method, (String) -> String, [UInt8]?, Bool)] = [
      (.get, { namespace + "/memories/" + $0 }, nil, false),
      (.delete, { namespace + "/memories/" + $0 }, nil, false),
      (.get, { namespace + "/graph/nodes/" + $0 }, nil, false),
      (.delete, { namespace + "/graph/nodes/" + $0 }, nil, false),
      (.delete, { namespace + "/graph/edges/" + $0 }, nil, false),
      (.get, { namespace + "/graph/nodes/" + $0 + "/neighbors" }, nil, true),
      (.get, { namespace + "/history/memories/" + $0 }, nil, true),
      (.get, { namespace + "/history/" + $0 + "/m1" }, nil, false),
      (.delete, { "/v1/namespaces/" + $0 }, nil, false),
      (.get, { "/v1/namespaces/" + $0 + "/memories/m1" }, nil, false),
      (.post, { "/v1/namespaces/" + $0 + "/memories" }, memories, false),
      (.post, { "/v1/namespaces/" + $0 + "/search" }, search, false),
    ]
    var requests: [FuzzRequest] = []
    for (method, path, body, maySucceed) in routes {
      for component in components {
        var request = FuzzRequest(
          "paths", method, path(component), body: body, maySucceed: maySucceed, mayBeUnrouted: true)
        request.mayBeRefusedByHTTP = component.utf8.count > 80 << 10
        requests.append(request)
      }
    }
    return requests
  }

  /// Methods no route has, with valid bodies where the path takes one.
  static func wrongMethods(_ random: inout SplitMix64) -> [FuzzRequest] {
    var requests: [FuzzRequest] = []
    let others: [HTTPRequest.Method] = [.put, .patch, .options]
    // Sent without a body: NIO's client encoder frames TRACE as bodyless and would send the body
    // as the next request; and the server closes on a method token llhttp does not know without
    // reading the body.
    let bodyless = [HTTPRequest.Method.trace]
    let unknown = [HTTPRequest.Method("FUZZ")!, HTTPRequest.Method("post")!, HTTPRequest.Method("GETS")!]
    var paths: [String] = []
    for template in templates {
      let body = Array(template.body.jsonText.utf8)
      // GET /v1/namespaces is a route (the list).
      let reads: [HTTPRequest.Method] = template.path == "/v1/namespaces" ? [] : [.get, .head]
      for method in others + reads + [.delete] {
        requests.append(FuzzRequest("methods", method, template.path, body: body, mayBeUnrouted: true))
      }
      paths.append(template.path)
    }
    for path in [
      "/v1/status", "/v1/digest", namespace + "/memories/m1", "/v1/changes", "/healthz", "/metrics",
    ] {
      for method in others + [.post] {
        requests.append(FuzzRequest("methods", method, path, body: bytes("{}"), mayBeUnrouted: true))
      }
      paths.append(path)
    }
    for path in paths {
      for method in bodyless {
        requests.append(FuzzRequest("methods", method, path, mayBeUnrouted: true))
      }
      for method in unknown {
        var request = FuzzRequest("methods", method, path, mayBeUnrouted: true)
        request.mayBeRefusedByHTTP = true
        requests.append(request)
      }
    }
    return requests
  }

  /// Valid writes (and admin reads) with a missing, malformed, wrong or insufficient token.
  static func badAuthorization(_ random: inout SplitMix64) -> [FuzzRequest] {
    let authorizations: [String?] = [
      nil, "Bearer", "Bearer ", "Bearer wrong-token", "bearer \(adminToken)", "Basic \(adminToken)",
      "Bearer \(adminToken)x", "Bearer  \(adminToken)", "Bearer \(readerToken)", "Bearer \(otherToken)",
    ]
    let probes: [(HTTPRequest.Method, String, String?)] = [
      (.post, "/v1/namespaces", #"{"name":"scratch","dimension":4,"metric":"cosine"}"#),
      (.post, namespace + "/memories", APIFuzzTests.probeMemory),
      (.post, namespace + "/graph/nodes", #"{"nodes":[{"id":"probe","type":"t"}]}"#),
      (
        .post, namespace + "/graph/edges", #"{"edges":[{"id":"probe","from":"alice","to":"bob","type":"t"}]}"#
      ),
      (.post, namespace + "/transactions", #"{"operations":[{"op":"delete_memory","id":"m1"}]}"#),
      (.delete, namespace + "/memories/m1", nil), (.delete, namespace + "/graph/nodes/alice", nil),
      (.delete, namespace + "/graph/edges/e1", nil), (.delete, namespace, nil),
      (.get, "/v1/digest", nil), (.get, "/v1/changes", nil),
    ]
    var requests: [FuzzRequest] = []
    for (method, path, body) in probes {
      for authorization in authorizations {
        var request = FuzzRequest("auth", method, path, body: body.map(bytes))
        request.authorization = authorization
        request.expectedCodes = ["unauthorized", "forbidden"]
        requests.append(request)
      }
    }
    return requests
  }
}
