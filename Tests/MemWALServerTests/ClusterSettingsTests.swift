import Foundation
import MemWALServer
import Testing

/// The `cluster` section: a good one parses with its defaults; a bad one stops start-up naming the key.
@Suite struct ClusterSettingsTests {
  static let members =
    "  members:\n"
    + "    n1: {api: \"http://127.0.0.1:7601\", replication: \"127.0.0.1:7701\"}\n"
    + "    n2: {api: \"http://127.0.0.1:7602\", replication: \"127.0.0.1:7702\"}\n"
    + "    n3: {api: \"http://127.0.0.1:7603\", replication: \"127.0.0.1:7703\"}\n"

  static func parse(_ cluster: String) throws(ConfigurationError) -> NodeConfiguration {
    try NodeConfiguration.parse(yaml: "development_mode: true\ncluster:\n" + cluster)
  }

  @Test func aGoodSectionParsesWithItsDefaults() throws {
    let configuration = try Self.parse(
      "  name: local-3\n  node: n2\n  initial_primary: n1\n  certificates: certs\n" + Self.members)
    let cluster = try #require(configuration.cluster)
    #expect(cluster.node == "n2" && cluster.initialPrimary == "n1" && cluster.quorum == 1)
    #expect(cluster.members["n3"]?.replication == "127.0.0.1:7703")
    #expect(cluster.timings.heartbeatInterval == .milliseconds(100))
    // The cluster id comes from the name: the same on every member, different for another cluster.
    var other = cluster
    other.name = "local-4"
    #expect(cluster.clusterID != other.clusterID)
  }

  @Test(arguments: [
    ("  name: x\n  node: n9\n  initial_primary: n1\n  certificates: c\n", "cluster.node"),
    ("  name: x\n  node: n1\n  initial_primary: n1\n  certificates: c\n  quorum: 3\n", "cluster.quorum"),
    ("  name: x\n  node: n1\n  initial_primary: n1\n  certificates: c\n  colour: red\n", "cluster.colour"),
    ("  node: n1\n  initial_primary: n1\n  certificates: c\n", "cluster.name"),
    (
      "  name: x\n  node: n1\n  initial_primary: n1\n  certificates: c\n  heartbeat_ms: 1000\n  peer_timeout_ms: 1500\n",
      "cluster.peer_timeout_ms"
    ),
  ])
  func aBadSectionNamesTheKey(_ text: String, _ key: String) {
    do {
      _ = try Self.parse(text + Self.members)
      Issue.record("accepted: \(text)")
    } catch {
      #expect(error.key == key, "\(error)")
    }
  }

  @Test func aMemberNeedsAnAPIURLAndAReplicationAddress() {
    do {
      _ = try Self.parse(
        "  name: x\n  node: n1\n  initial_primary: n1\n  certificates: c\n  members:\n    n1: {api: \"127.0.0.1:7601\", replication: \"127.0.0.1:7701\"}\n"
      )
      Issue.record("accepted an api without a scheme")
    } catch {
      #expect(error.key == "cluster.members.n1.api", "\(error)")
    }
  }

  static let managedMembers =
    "  members:\n"
    + "    n1: {api: \"http://127.0.0.1:7601\", replication: \"127.0.0.1:7701\", control: \"127.0.0.1:7801\", priority: 5}\n"
    + "    n2: {api: \"http://127.0.0.1:7602\", replication: \"127.0.0.1:7702\", control: \"127.0.0.1:7802\"}\n"

  @Test func aControllerSectionParsesAndTheControllerMayBeTheNode() throws {
    let node = try Self.parse(
      "  name: x\n  node: n2\n  initial_primary: n1\n  certificates: c\n"
        + "  controller: {api: \"http://127.0.0.1:7690\", state_directory: s, failure_timeout_ms: 800}\n"
        + Self.managedMembers)
    let cluster = try #require(node.cluster)
    #expect(
      cluster.controller?.name == "controller" && cluster.controller?.failureTimeout == .milliseconds(800))
    #expect(cluster.members["n1"]?.priority == 5 && cluster.members["n2"]?.control == "127.0.0.1:7802")
    #expect(!cluster.isController)
    let controller = try Self.parse(
      "  name: x\n  node: controller\n  initial_primary: n1\n  certificates: c\n"
        + "  controller: {api: \"http://127.0.0.1:7690\"}\n" + Self.managedMembers)
    #expect(controller.cluster?.isController == true)
  }

  @Test(arguments: [
    ("  controller: {api: \"http://127.0.0.1:7690\"}\n" + members, "cluster.members.n1.control"),
    ("  controller: {state_directory: s}\n" + managedMembers, "cluster.controller.api"),
    (
      "  controller: {api: \"http://127.0.0.1:7690\", name: n1}\n" + managedMembers, "cluster.controller.name"
    ),
    (
      "  controller: {api: \"http://127.0.0.1:7690\", heartbeat_ms: 600}\n" + managedMembers,
      "cluster.controller.failure_timeout_ms"
    ),
    ("  controller: {api: \"http://x\", colour: red}\n" + managedMembers, "cluster.controller.colour"),
  ])
  func aBadControllerSectionNamesTheKey(_ text: String, _ key: String) {
    do {
      _ = try Self.parse("  name: x\n  node: n1\n  initial_primary: n1\n  certificates: c\n" + text)
      Issue.record("accepted: \(text)")
    } catch {
      #expect(error.key == key, "\(error)")
    }
  }

  @Test func listenAddressesDefaultToTheNodesOwnMemberEntry() throws {
    let defaults = try #require(
      try Self.parse(
        "  name: x\n  node: n2\n  initial_primary: n1\n  certificates: c\n"
          + "  controller: {api: \"http://127.0.0.1:7690\"}\n" + Self.managedMembers
      ).cluster)
    #expect(defaults.replicationListen == nil && defaults.controlListen == nil)
    #expect(defaults.replicationBindAddress == "127.0.0.1:7702")
    #expect(defaults.controlBindAddress == "127.0.0.1:7802")
    // The node binds elsewhere; what the others dial (the member entries) is unchanged.
    let proxied = try #require(
      try Self.parse(
        "  name: x\n  node: n2\n  initial_primary: n1\n  certificates: c\n"
          + "  replication_listen: \"127.0.0.1:9702\"\n  control_listen: \"0.0.0.0:9802\"\n"
          + "  controller: {api: \"http://127.0.0.1:7690\"}\n" + Self.managedMembers
      ).cluster)
    #expect(proxied.replicationBindAddress == "127.0.0.1:9702")
    #expect(proxied.controlBindAddress == "0.0.0.0:9802")
    #expect(proxied.members["n2"]?.replication == "127.0.0.1:7702")
    #expect(proxied.members["n2"]?.control == "127.0.0.1:7802")
  }

  @Test(arguments: [
    ("  replication_listen: \"127.0.0.1\"\n", "cluster.replication_listen"),
    ("  replication_listen: \"127.0.0.1:70000\"\n", "cluster.replication_listen"),
    ("  replication_listen: [a]\n", "cluster.replication_listen"),
    ("  control_listen: \":7802\"\n", "cluster.control_listen"),
    ("  control_listen: \"host:port\"\n", "cluster.control_listen"),
  ])
  func aBadListenAddressNamesTheKey(_ text: String, _ key: String) {
    do {
      _ = try Self.parse(
        "  name: x\n  node: n1\n  initial_primary: n1\n  certificates: c\n" + text + Self.members)
      Issue.record("accepted: \(text)")
    } catch {
      #expect(error.key == key, "\(error)")
    }
  }

  /// Every shipped example configuration parses.
  @Test(arguments: [
    "local-3/n1", "local-3/n2", "local-3/n3", "local-3/controller", "local-5/n1", "local-5/n5",
    "local-5/controller", "single-node",
  ])
  func theShippedConfigurationsParse(_ name: String) throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent()
    let text = try String(
      contentsOf: root.appendingPathComponent("cluster-configs/\(name).yaml"), encoding: .utf8)
    _ = try NodeConfiguration.parse(yaml: text)
  }
}
