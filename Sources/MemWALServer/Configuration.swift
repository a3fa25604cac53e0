import Crypto
import MemWALCore
import MemWALNode
import NIOSSL
import Yams

/// What a client may do with a token.
public enum Role: String, Sendable, Comparable, CaseIterable {
  case read, write, admin

  public static func < (lhs: Role, rhs: Role) -> Bool {
    allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
  }
}

/// A bearer token as the configuration stores it: only its SHA-256.
public struct TokenGrant: Sendable, Equatable {
  public var name: String
  public var sha256: String
  /// Namespaces it may touch; `["*"]` for all.
  public var namespaces: [String]
  public var role: Role

  public init(name: String, sha256: String, namespaces: [String], role: Role) {
    self.name = name
    self.sha256 = sha256
    self.namespaces = namespaces
    self.role = role
  }

  public func covers(_ namespace: String) -> Bool {
    namespaces.contains("*") || namespaces.contains(namespace)
  }

  public static func digest(of token: String) -> String {
    SHA256.hash(data: Array(token.utf8)).map { String($0, radix: 16).leftPadded(to: 2) }.joined()
  }
}

/// One node's configuration (`memwal serve --config FILE`); docs/configuration.md lists every key
/// with its default. Unknown keys and bad values stop start-up, naming the key.
public struct NodeConfiguration: Sendable {
  public var dataDirectory = "./memwal-data"
  public var host = "127.0.0.1"
  public var port = 7600
  /// No tokens required. Refused unless the node listens on loopback only.
  public var developmentMode = false
  public var tlsCertificate: String?
  public var tlsKey: String?
  public var tokens: [TokenGrant] = []
  public var limits = API.Limits()
  public var engine: MemoryEngine.Options = {
    var options = MemoryEngine.Options()
    options.checkpointEverySeconds = 600
    return options
  }()
  /// Membership and replication (nil: a single node).
  public var cluster: ClusterSettings?
  /// Test-only switches (the `testing` section) for the chaos harness; never for production.
  public var testing = TestingSettings()

  public init() {}

  /// The client API's TLS configuration when `tls` gives a certificate and key (nil for plain
  /// HTTP). Reads both files: a missing or unreadable file, or a key that does not belong to the
  /// certificate, is an error naming `tls.certificate` or `tls.key`.
  public func makeAPITLSConfiguration() throws(ConfigurationError) -> TLSConfiguration? {
    guard let tlsCertificate, let tlsKey else { return nil }
    return try APITLS.makeServerConfiguration(certificateFile: tlsCertificate, keyFile: tlsKey)
  }

  /// The embedded default: `./memwal-data`, `127.0.0.1:7600`, development mode.
  public static var embeddedDefault: NodeConfiguration {
    var configuration = NodeConfiguration()
    configuration.developmentMode = true
    return configuration
  }
}

/// A configuration that cannot be used, with the key at fault.
public struct ConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
  public var key: String
  public var reason: String
  public var description: String { "configuration: \(key): \(reason)" }
}

extension NodeConfiguration {
  static let topLevelKeys: Set<String> = [
    "data_dir", "listen", "development_mode", "tls", "tokens", "limits", "wal", "checkpoint", "retention",
    "search", "cluster", "testing",
  ]

  /// Parses YAML text.
  public static func parse(yaml text: String) throws(ConfigurationError) -> NodeConfiguration {
    let node: Node?
    do {
      node = try Yams.compose(yaml: text)
    } catch {
      throw ConfigurationError(key: "(file)", reason: "not valid YAML: \(error)")
    }
    var configuration = NodeConfiguration()
    guard let node else { return configuration }
    let root = try mapping(node, key: "(top level)")
    try check(root, allowed: topLevelKeys, prefix: "")
    if let value = root["data_dir"] { configuration.dataDirectory = try string(value, key: "data_dir") }
    if let value = root["listen"] {
      let text = try string(value, key: "listen")
      guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
        (0...65_535).contains(port),
        colon != text.startIndex
      else { throw ConfigurationError(key: "listen", reason: "must be HOST:PORT, got \(text)") }
      configuration.host = String(text[..<colon])
      configuration.port = port
    }
    if let value = root["development_mode"] {
      configuration.developmentMode = try bool(value, key: "development_mode")
    }
    if let value = root["tls"] {
      let tls = try mapping(value, key: "tls")
      try check(tls, allowed: ["certificate", "key"], prefix: "tls.")
      configuration.tlsCertificate = try tls["certificate"].map { value throws(ConfigurationError) in
        try string(value, key: "tls.certificate")
      }
      configuration.tlsKey = try tls["key"].map { value throws(ConfigurationError) in
        try string(value, key: "tls.key")
      }
      guard (configuration.tlsCertificate == nil) == (configuration.tlsKey == nil) else {
        throw ConfigurationError(key: "tls", reason: "give both certificate and key")
      }
    }
    if let value = root["tokens"] { configuration.tokens = try tokens(value) }
    if let value = root["cluster"] { configuration.cluster = try ClusterSettings.parse(value) }
    if let value = root["testing"] { configuration.testing = try TestingSettings.parse(value) }
    try applyLimits(root, to: &configuration)
    try configuration.validate()
    return configuration
  }

  private static func applyLimits(_ root: [String: Node], to configuration: inout NodeConfiguration)
    throws(ConfigurationError)
  {
    if let value = root["limits"] {
      let limits = try mapping(value, key: "limits")
      try check(
        limits, allowed: ["max_body_bytes", "max_batch", "max_k", "max_traversal_depth", "max_results"],
        prefix: "limits.")
      if let v = limits["max_body_bytes"] {
        configuration.limits.maximumBodyBytes = try integer(
          v, key: "limits.max_body_bytes", in: 1_024...(1 << 30))
      }
      if let v = limits["max_batch"] {
        configuration.limits.maximumBatch = try integer(v, key: "limits.max_batch", in: 1...100_000)
      }
      if let v = limits["max_k"] {
        configuration.engine.store.maximumK = try integer(v, key: "limits.max_k", in: 1...10_000)
      }
      if let v = limits["max_traversal_depth"] {
        configuration.engine.store.maximumTraversalDepth = try integer(
          v, key: "limits.max_traversal_depth", in: 1...64)
      }
      if let v = limits["max_results"] {
        configuration.engine.store.maximumResults = try integer(
          v, key: "limits.max_results", in: 1...1_000_000)
      }
    }
    if let value = root["wal"] {
      let wal = try mapping(value, key: "wal")
      try check(
        wal, allowed: ["segment_bytes", "max_record_bytes", "group_commit_window_us"], prefix: "wal.")
      if let v = wal["segment_bytes"] {
        configuration.engine.log.segmentBytes = try integer(
          v, key: "wal.segment_bytes", in: (1 << 20)...(1 << 30))
      }
      if let v = wal["max_record_bytes"] {
        configuration.engine.log.maximumRecordBytes = try integer(
          v, key: "wal.max_record_bytes", in: 1_024...(256 << 20))
        guard configuration.engine.log.maximumRecordBytes <= configuration.engine.log.segmentBytes / 2 else {
          throw ConfigurationError(
            key: "wal.max_record_bytes", reason: "must be at most half of wal.segment_bytes")
        }
      } else {
        // The default follows a smaller segment down, so a record always fits in one.
        configuration.engine.log.maximumRecordBytes = min(16 << 20, configuration.engine.log.segmentBytes / 4)
      }
      if let v = wal["group_commit_window_us"] {
        configuration.engine.log.groupCommitWindowMicroseconds = try integer(
          v, key: "wal.group_commit_window_us", in: 0...100_000)
      }
    }
    if let value = root["checkpoint"] {
      let checkpoint = try mapping(value, key: "checkpoint")
      try check(checkpoint, allowed: ["every_bytes", "every_seconds"], prefix: "checkpoint.")
      if let v = checkpoint["every_bytes"] {
        configuration.engine.checkpointEveryBytes = try integer(
          v, key: "checkpoint.every_bytes", in: 0...(1 << 40))
      }
      if let v = checkpoint["every_seconds"] {
        configuration.engine.checkpointEverySeconds = try integer(
          v, key: "checkpoint.every_seconds", in: 0...(30 * 86_400))
      }
    }
    if let value = root["retention"] {
      let retention = try mapping(value, key: "retention")
      try check(retention, allowed: ["history_lsns", "history_seconds"], prefix: "retention.")
      if let v = retention["history_lsns"] {
        configuration.engine.store.retentionLSNs = UInt64(
          try integer(v, key: "retention.history_lsns", in: 0...(1 << 40)))
      }
      if let v = retention["history_seconds"] {
        configuration.engine.store.retentionMicros =
          Int64(try integer(v, key: "retention.history_seconds", in: 1...(1 << 31))) * 1_000_000
      }
    }
    if let value = root["search"] {
      let search = try mapping(value, key: "search")
      try check(search, allowed: ["hnsw_m", "hnsw_ef_construction", "exact_below"], prefix: "search.")
      if let v = search["hnsw_m"] {
        configuration.engine.store.hnsw.m = try integer(v, key: "search.hnsw_m", in: 4...64)
      }
      if let v = search["hnsw_ef_construction"] {
        configuration.engine.store.hnsw.efConstruction = try integer(
          v, key: "search.hnsw_ef_construction", in: 8...2_000)
      }
      if let v = search["exact_below"] {
        configuration.engine.store.exactSearchThreshold = try integer(
          v, key: "search.exact_below", in: 0...1_000_000)
      }
    }
  }

  /// Checks that the pieces fit together.
  public func validate() throws(ConfigurationError) {
    let loopback = host == "127.0.0.1" || host == "localhost" || host == "::1"
    if developmentMode && !loopback {
      throw ConfigurationError(
        key: "development_mode", reason: "needs a loopback listen address (it turns authentication off)")
    }
    if !developmentMode && tokens.isEmpty {
      throw ConfigurationError(
        key: "tokens", reason: "at least one token is needed unless development_mode is true")
    }
    guard (tlsCertificate == nil) == (tlsKey == nil) else {
      throw ConfigurationError(key: "tls", reason: "give both certificate and key")
    }
  }

  private static func tokens(_ node: Node) throws(ConfigurationError) -> [TokenGrant] {
    guard case .sequence(let items) = node else {
      throw ConfigurationError(key: "tokens", reason: "must be a list")
    }
    var grants: [TokenGrant] = []
    for (index, item) in items.enumerated() {
      let key = "tokens[\(index)]"
      let fields = try mapping(item, key: key)
      try check(fields, allowed: ["name", "sha256", "namespaces", "role"], prefix: key + ".")
      guard let hashNode = fields["sha256"] else {
        throw ConfigurationError(key: key + ".sha256", reason: "is required")
      }
      let hash = try string(hashNode, key: key + ".sha256").lowercased()
      guard hash.count == 64, hash.allSatisfy(\.isHexDigit) else {
        throw ConfigurationError(
          key: key + ".sha256", reason: "must be 64 hexadecimal digits (the token's SHA-256)")
      }
      guard let namespacesNode = fields["namespaces"], case .sequence(let names) = namespacesNode,
        !names.isEmpty
      else {
        throw ConfigurationError(key: key + ".namespaces", reason: "must be a non-empty list (\"*\" for all)")
      }
      var namespaces: [String] = []
      for (position, name) in names.enumerated() {
        namespaces.append(try string(name, key: key + ".namespaces[\(position)]"))
      }
      guard let roleNode = fields["role"], let role = Role(rawValue: try string(roleNode, key: key + ".role"))
      else {
        throw ConfigurationError(key: key + ".role", reason: "must be read, write or admin")
      }
      let name =
        try fields["name"].map { value throws(ConfigurationError) in try string(value, key: key + ".name") }
        ?? "token-\(index)"
      grants.append(TokenGrant(name: name, sha256: hash, namespaces: namespaces, role: role))
    }
    return grants
  }

  // MARK: YAML pieces

  static func mapping(_ node: Node, key: String) throws(ConfigurationError) -> [String: Node] {
    guard case .mapping(let mapping) = node else {
      throw ConfigurationError(key: key, reason: "must be a mapping")
    }
    var result: [String: Node] = [:]
    for (name, value) in mapping {
      guard case .scalar(let scalar) = name else {
        throw ConfigurationError(key: key, reason: "keys must be text")
      }
      result[scalar.string] = value
    }
    return result
  }

  static func check(_ mapping: [String: Node], allowed: Set<String>, prefix: String)
    throws(ConfigurationError)
  {
    if let unknown = mapping.keys.sorted().first(where: { !allowed.contains($0) }) {
      throw ConfigurationError(
        key: prefix + unknown, reason: "unknown key (known: \(allowed.sorted().joined(separator: ", ")))")
    }
  }

  static func string(_ node: Node, key: String) throws(ConfigurationError) -> String {
    guard case .scalar(let scalar) = node, !scalar.string.isEmpty else {
      throw ConfigurationError(key: key, reason: "must be text")
    }
    return scalar.string
  }

  static func bool(_ node: Node, key: String) throws(ConfigurationError) -> Bool {
    guard case .scalar(let scalar) = node else {
      throw ConfigurationError(key: key, reason: "must be true or false")
    }
    switch scalar.string.lowercased() {
    case "true": return true
    case "false": return false
    default: throw ConfigurationError(key: key, reason: "must be true or false, got \(scalar.string)")
    }
  }

  static func integer(_ node: Node, key: String, in range: ClosedRange<Int>)
    throws(ConfigurationError) -> Int
  {
    guard case .scalar(let scalar) = node, let value = Int(scalar.string.replacingUnderscores) else {
      throw ConfigurationError(key: key, reason: "must be an integer")
    }
    guard range.contains(value) else {
      throw ConfigurationError(
        key: key, reason: "\(value) is outside \(range.lowerBound)...\(range.upperBound)")
    }
    return value
  }
}

extension String {
  var replacingUnderscores: String { filter { $0 != "_" } }
}
