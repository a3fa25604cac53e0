import MemWALCluster
import MemWALCore
import Yams

/// What `memwal controller` runs with: the members it manages and where it reaches them, k, its
/// timings and its state directory. Usually made from a configuration's cluster section
/// (``init(cluster:)``); tests set the fields directly.
public struct ControllerSettings: Sendable {
  /// A member as the controller reaches it.
  public struct Member: Sendable, Equatable {
    public var name: String
    /// Its client API ("http://127.0.0.1:7601"), for `GET /v1/cluster`.
    public var api: String
    /// Its replication listener, for `GET /v1/cluster`.
    public var replication: String
    /// Its control listener ("127.0.0.1:7801"): the controller's requests go there.
    public var control: String
    public var priority: Int

    public init(name: String, api: String, replication: String, control: String, priority: Int = 0) {
      self.name = name
      self.api = api
      self.replication = replication
      self.control = control
      self.priority = priority
    }
  }

  public var clusterName: String
  /// The controller's certificate name.
  public var controllerName: String
  /// The controller's HTTP API URL ("http://127.0.0.1:7690").
  public var controllerAPI: String
  /// Sorted by name.
  public var members: [Member]
  /// k for the first record (a persisted record keeps its own, changed only by `set-quorum`).
  public var quorumFollowers: Int
  /// Where `controller-state.json` is kept.
  public var stateDirectory: String
  public var heartbeatInterval: Duration = .milliseconds(200)
  /// A primary silent this long, confirmed lost by the followers, is replaced.
  public var failureTimeout: Duration = .seconds(1)
  /// A control request unanswered this long counts as the node being unreachable (default: half
  /// the failure timeout, so a silent primary is noticed within it).
  public var requestTimeout: Duration
  /// How long an election waits for the promises of nodes that have not answered.
  public var promiseTimeout: Duration
  /// How long after an election without enough promises the next one may start.
  public var electionRetry: Duration
  /// A switchover whose target has not caught up within this time is abandoned.
  public var switchoverTimeout: Duration = .seconds(10)
  /// How often the state machine's clock advances.
  public var tickInterval: Duration = .milliseconds(20)
  /// Reconnection backoff to a member's control port: doubles from the first to the second.
  public var initialBackoff: Duration = .milliseconds(50)
  public var maximumBackoff: Duration = .seconds(1)
  /// Status lines kept for `GET /v1/status`.
  public var statusLinesKept = 50

  public init(
    clusterName: String, controllerName: String = "controller", controllerAPI: String, members: [Member],
    quorumFollowers: Int, stateDirectory: String, heartbeatInterval: Duration = .milliseconds(200),
    failureTimeout: Duration = .seconds(1)
  ) {
    self.clusterName = clusterName
    self.controllerName = controllerName
    self.controllerAPI = controllerAPI
    self.members = members.sorted { $0.name < $1.name }
    self.quorumFollowers = quorumFollowers
    self.stateDirectory = stateDirectory
    self.heartbeatInterval = heartbeatInterval
    self.failureTimeout = failureTimeout
    requestTimeout = failureTimeout / 2
    promiseTimeout = failureTimeout
    electionRetry = failureTimeout / 2
  }

  /// The controller of `cluster` (which must have a `controller` section and a control address
  /// for every member).
  public init(cluster: ClusterSettings) throws(ConfigurationError) {
    guard let controller = cluster.controller else {
      throw ConfigurationError(key: "cluster.controller", reason: "is required to run a controller")
    }
    var members: [Member] = []
    for (name, member) in cluster.members {
      guard let control = member.control else {
        throw ConfigurationError(
          key: "cluster.members.\(name).control", reason: "is required when the cluster has a controller")
      }
      members.append(
        Member(
          name: name, api: member.api, replication: member.replication, control: control,
          priority: member.priority))
    }
    self.init(
      clusterName: cluster.name, controllerName: controller.name, controllerAPI: controller.api,
      members: members, quorumFollowers: cluster.quorum, stateDirectory: controller.stateDirectory,
      heartbeatInterval: controller.heartbeatInterval, failureTimeout: controller.failureTimeout)
  }

  /// The host and port of ``controllerAPI``, where the controller's HTTP API listens.
  public var listenAddress: (host: String, port: Int) {
    get throws(ConfigurationError) { try Self.hostAndPort(ofURL: controllerAPI) }
  }

  /// "http://HOST:PORT[/]" → (HOST, PORT).
  public static func hostAndPort(ofURL url: String) throws(ConfigurationError) -> (host: String, port: Int) {
    guard url.hasPrefix("http://") else {
      throw ConfigurationError(key: "cluster.controller.api", reason: "must be an http:// URL, got \(url)")
    }
    var rest = url.dropFirst("http://".count)
    if let slash = rest.firstIndex(of: "/") {
      guard rest[slash...].allSatisfy({ $0 == "/" }) else {
        throw ConfigurationError(key: "cluster.controller.api", reason: "must have no path, got \(url)")
      }
      rest = rest[..<slash]
    }
    guard let address = splitHostPort(String(rest)) else {
      throw ConfigurationError(key: "cluster.controller.api", reason: "must be http://HOST:PORT, got \(url)")
    }
    return address
  }

  /// The state machine's fixed settings.
  var machineConfiguration: FailoverController.Configuration {
    var configuration = FailoverController.Configuration(
      members: members.map { ClusterMember(name: $0.name, priority: $0.priority) },
      quorumFollowers: quorumFollowers)
    configuration.heartbeatIntervalNanoseconds = heartbeatInterval.nanoseconds
    configuration.failureTimeoutNanoseconds = failureTimeout.nanoseconds
    configuration.promiseTimeoutNanoseconds = promiseTimeout.nanoseconds
    configuration.electionRetryNanoseconds = electionRetry.nanoseconds
    configuration.switchoverTimeoutNanoseconds = switchoverTimeout.nanoseconds
    return configuration
  }

  /// Checks what a hand-made value could get wrong.
  func validate() throws(ConfigurationError) {
    guard !members.isEmpty else { throw ConfigurationError(key: "cluster.members", reason: "is empty") }
    for member in members where splitHostPort(member.control) == nil {
      throw ConfigurationError(
        key: "cluster.members.\(member.name).control", reason: "must be HOST:PORT, got \(member.control)")
    }
    guard (0...max(0, members.count - 1)).contains(quorumFollowers) else {
      throw ConfigurationError(key: "cluster.quorum", reason: "must be between 0 and \(members.count - 1)")
    }
    guard heartbeatInterval > .zero, requestTimeout > .zero, tickInterval > .zero, statusLinesKept > 0 else {
      throw ConfigurationError(key: "cluster.controller", reason: "timings must be positive")
    }
  }
}

extension ClusterSettings {
  /// The cluster section of a configuration file: any member's (`memwal serve --config`) or the
  /// controller's, which has only a cluster section. Only the cluster section is checked in full;
  /// the other top-level keys must be ones a node's configuration knows.
  public static func load(yaml text: String) throws(ConfigurationError) -> ClusterSettings {
    let node: Node?
    do {
      node = try Yams.compose(yaml: text)
    } catch {
      throw ConfigurationError(key: "(file)", reason: "not valid YAML: \(error)")
    }
    guard let node else { throw ConfigurationError(key: "cluster", reason: "is required") }
    let root = try NodeConfiguration.mapping(node, key: "(top level)")
    try NodeConfiguration.check(root, allowed: NodeConfiguration.topLevelKeys, prefix: "")
    guard let cluster = root["cluster"] else {
      throw ConfigurationError(key: "cluster", reason: "is required")
    }
    return try parse(cluster)
  }
}
