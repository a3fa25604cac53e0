import Crypto
import MemWALCore
import Yams

/// The `cluster` section of a node's configuration: who the members are, where they listen, which
/// one starts as primary, how many followers a `quorum` write needs, and the certificates of this
/// node (docs/configuration.md lists every key).
public struct ClusterSettings: Sendable, Equatable {
  public struct Member: Sendable, Equatable {
    /// The member's client API, as clients reach it ("http://127.0.0.1:7601").
    public var api: String
    /// The member's replication listener ("127.0.0.1:7701").
    public var replication: String
    /// The member's control listener, where the failover controller reaches it ("127.0.0.1:7801");
    /// nil when no controller manages the cluster.
    public var control: String?
    /// Breaks ties between equally advanced candidates in an election: the higher is promoted.
    public var priority = 0

    public init(api: String, replication: String, control: String? = nil, priority: Int = 0) {
      self.api = api
      self.replication = replication
      self.control = control
      self.priority = priority
    }
  }

  /// The failover controller of the cluster (`memwal controller`), when there is one.
  public struct Controller: Sendable, Equatable {
    /// Its certificate's name; nodes accept control requests only from this name.
    public var name = "controller"
    /// Its HTTP API (`GET /v1/cluster`, `GET /v1/status`, the `memwal ctl` commands).
    public var api: String
    /// Where it keeps its durable state (`controller-state.json`).
    public var stateDirectory: String
    public var heartbeatInterval: Duration = .milliseconds(200)
    public var failureTimeout: Duration = .seconds(1)

    public init(api: String, stateDirectory: String) {
      self.api = api
      self.stateDirectory = stateDirectory
    }
  }

  /// The cluster's name; its cluster id (in every WAL segment header) is derived from it, so every
  /// member's log carries the same id.
  public var name: String
  /// This node's name (its certificate's DNS name).
  public var node: String
  /// The member that is primary when the cluster starts for the first time.
  public var initialPrimary: String
  /// Followers that must have flushed a `quorum` write (k).
  public var quorum = 1
  /// Where `memwal certs init` wrote `ca.pem`, `NODE.pem` and `NODE-key.pem`.
  public var certificates: String
  public var members: [String: Member]
  public var timings = ReplicationTimings()
  /// The failover controller; nil when roles are static (`initial_primary` stays primary).
  public var controller: Controller?
  /// Where this node binds its replication listener ("HOST:PORT"), when that is not the address in
  /// its own member entry (which stays what other members dial): a proxy or a NAT in between.
  public var replicationListen: String?
  /// Where this node binds its control listener, when that is not its member entry's `control`.
  public var controlListen: String?

  /// The address this node's replication listener binds: `replication_listen`, else its own member
  /// entry's `replication`. Nil for the controller's own configuration (it is not a member).
  public var replicationBindAddress: String? { replicationListen ?? members[node]?.replication }
  /// The address this node's control listener binds: `control_listen`, else its own member entry's
  /// `control`.
  public var controlBindAddress: String? { controlListen ?? members[node]?.control }

  /// Whether this configuration is the controller's own (its `node` is the controller's name).
  public var isController: Bool { controller?.name == node }

  /// 128 bits of SHA-256 of the cluster name.
  public var clusterID: ClusterID {
    let digest = Array(SHA256.hash(data: Array(("memwal-cluster:" + name).utf8)))
    var high: UInt64 = 0
    var low: UInt64 = 0
    for index in 0..<8 {
      high = high << 8 | UInt64(digest[index])
      low = low << 8 | UInt64(digest[index + 8])
    }
    return ClusterID(high: high, low: low)
  }

  static let keys: Set<String> = [
    "name", "node", "initial_primary", "quorum", "certificates", "members", "heartbeat_ms", "peer_timeout_ms",
    "quorum_timeout_ms", "max_in_flight_bytes", "max_retained_wal_bytes", "controller", "replication_listen",
    "control_listen",
  ]

  static func parse(_ value: Node) throws(ConfigurationError) -> ClusterSettings {
    typealias C = NodeConfiguration
    let root = try C.mapping(value, key: "cluster")
    try C.check(root, allowed: keys, prefix: "cluster.")
    func required(_ key: String) throws(ConfigurationError) -> String {
      guard let node = root[key] else {
        throw ConfigurationError(key: "cluster." + key, reason: "is required")
      }
      return try C.string(node, key: "cluster." + key)
    }
    var members: [String: Member] = [:]
    guard let membersNode = root["members"] else {
      throw ConfigurationError(key: "cluster.members", reason: "is required")
    }
    for (name, node) in try C.mapping(membersNode, key: "cluster.members") {
      let prefix = "cluster.members.\(name)"
      guard Self.isValidName(name) else {
        throw ConfigurationError(key: prefix, reason: "a node name is 1-63 of a-z, 0-9 and '-'")
      }
      let fields = try C.mapping(node, key: prefix)
      try C.check(fields, allowed: ["api", "replication", "control", "priority"], prefix: prefix + ".")
      guard let api = fields["api"], let replication = fields["replication"] else {
        throw ConfigurationError(key: prefix, reason: "needs api and replication")
      }
      let apiURL = try C.string(api, key: prefix + ".api")
      guard apiURL.hasPrefix("http://") || apiURL.hasPrefix("https://") else {
        throw ConfigurationError(key: prefix + ".api", reason: "must be an http:// or https:// URL")
      }
      let address = try C.string(replication, key: prefix + ".replication")
      guard splitHostPort(address) != nil else {
        throw ConfigurationError(key: prefix + ".replication", reason: "must be HOST:PORT, got \(address)")
      }
      var member = Member(api: apiURL, replication: address)
      if let control = fields["control"] {
        let text = try C.string(control, key: prefix + ".control")
        guard splitHostPort(text) != nil else {
          throw ConfigurationError(key: prefix + ".control", reason: "must be HOST:PORT, got \(text)")
        }
        member.control = text
      }
      if let priority = fields["priority"] {
        member.priority = try C.integer(priority, key: prefix + ".priority", in: -1_000...1_000)
      }
      members[name] = member
    }
    var controller: Controller?
    if let node = root["controller"] {
      controller = try Self.parseController(node, members: members)
    }
    var settings = ClusterSettings(
      name: try required("name"), node: try required("node"), initialPrimary: try required("initial_primary"),
      certificates: try required("certificates"), members: members)
    settings.controller = controller
    for key in ["replication_listen", "control_listen"] {
      guard let node = root[key] else { continue }
      let address = try C.string(node, key: "cluster." + key)
      guard splitHostPort(address) != nil else {
        throw ConfigurationError(key: "cluster." + key, reason: "must be HOST:PORT, got \(address)")
      }
      if key == "replication_listen" {
        settings.replicationListen = address
      } else {
        settings.controlListen = address
      }
    }
    for (key, name) in [("node", settings.node), ("initial_primary", settings.initialPrimary)]
    where members[name] == nil && !(key == "node" && name == controller?.name) {
      throw ConfigurationError(
        key: "cluster." + key,
        reason: "\(name) is not in cluster.members (\(members.keys.sorted().joined(separator: ", ")))")
    }
    if let node = root["quorum"] {
      settings.quorum = try C.integer(node, key: "cluster.quorum", in: 0...max(0, members.count - 1))
    } else {
      settings.quorum = min(1, members.count - 1)
    }
    func milliseconds(_ key: String, _ range: ClosedRange<Int>) throws(ConfigurationError) -> Duration? {
      guard let node = root[key] else { return nil }
      return .milliseconds(try C.integer(node, key: "cluster." + key, in: range))
    }
    if let value = try milliseconds("heartbeat_ms", 10...10_000) {
      settings.timings.heartbeatInterval = value
    }
    if let value = try milliseconds("peer_timeout_ms", 100...600_000) { settings.timings.peerTimeout = value }
    if let value = try milliseconds("quorum_timeout_ms", 10...600_000) {
      settings.timings.quorumTimeout = value
    }
    if let node = root["max_in_flight_bytes"] {
      settings.timings.maximumInFlightBytes = try C.integer(
        node, key: "cluster.max_in_flight_bytes", in: (64 << 10)...(1 << 30))
    }
    if let node = root["max_retained_wal_bytes"] {
      settings.timings.maximumRetainedBytes = try C.integer(
        node, key: "cluster.max_retained_wal_bytes", in: 0...(1 << 40))
    }
    guard settings.timings.heartbeatInterval * 2 <= settings.timings.peerTimeout else {
      throw ConfigurationError(key: "cluster.peer_timeout_ms", reason: "must be at least twice heartbeat_ms")
    }
    return settings
  }

  static func parseController(_ value: Node, members: [String: Member]) throws(ConfigurationError)
    -> Controller
  {
    typealias C = NodeConfiguration
    let fields = try C.mapping(value, key: "cluster.controller")
    try C.check(
      fields, allowed: ["name", "api", "state_directory", "heartbeat_ms", "failure_timeout_ms"],
      prefix: "cluster.controller.")
    guard let api = fields["api"] else {
      throw ConfigurationError(key: "cluster.controller.api", reason: "is required")
    }
    let url = try C.string(api, key: "cluster.controller.api")
    guard url.hasPrefix("http://") else {
      throw ConfigurationError(key: "cluster.controller.api", reason: "must be an http:// URL, got \(url)")
    }
    let directory = try fields["state_directory"].map { node throws(ConfigurationError) in
      try C.string(node, key: "cluster.controller.state_directory")
    }
    var controller = Controller(api: url, stateDirectory: directory ?? "memwal-controller")
    if let name = fields["name"] {
      controller.name = try C.string(name, key: "cluster.controller.name")
      guard isValidName(controller.name) else {
        throw ConfigurationError(key: "cluster.controller.name", reason: "a name is 1-63 of a-z, 0-9 and '-'")
      }
    }
    guard members[controller.name] == nil else {
      throw ConfigurationError(key: "cluster.controller.name", reason: "\(controller.name) is also a member")
    }
    for name in members.keys.sorted() where members[name]?.control == nil {
      throw ConfigurationError(
        key: "cluster.members.\(name).control", reason: "is required when the cluster has a controller")
    }
    if let node = fields["heartbeat_ms"] {
      controller.heartbeatInterval = .milliseconds(
        try C.integer(node, key: "cluster.controller.heartbeat_ms", in: 10...10_000))
    }
    if let node = fields["failure_timeout_ms"] {
      controller.failureTimeout = .milliseconds(
        try C.integer(node, key: "cluster.controller.failure_timeout_ms", in: 100...600_000))
    }
    guard controller.heartbeatInterval * 2 <= controller.failureTimeout else {
      throw ConfigurationError(
        key: "cluster.controller.failure_timeout_ms", reason: "must be at least twice heartbeat_ms")
    }
    return controller
  }

  static func isValidName(_ name: String) -> Bool {
    !name.isEmpty && name.utf8.count <= 63
      && name.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
  }
}
