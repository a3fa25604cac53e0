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
}
