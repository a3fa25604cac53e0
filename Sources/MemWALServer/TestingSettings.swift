import Yams

/// The `testing` section of a node's configuration: switches that make a node misbehave on
/// purpose, for the chaos harness (`memwal chaos`) and its tests. Each one weakens a guarantee
/// of DESIGN §1; a node that has any of them set says so loudly at start. Never for production.
public struct TestingSettings: Sendable, Equatable {
  /// A file whose content (one word) selects the disk fault the node's file system injects:
  /// `none`, `fsync_error` or `disk_full` (see `FaultInjectingFileSystem`). Nil: no injection.
  public var faultFile: String?
  /// A primary acknowledges `quorum` writes once they are flushed locally, without waiting for any
  /// follower. Breaks G2 on purpose, so that a checker can be shown to catch lost writes.
  public var acknowledgeQuorumBeforeFollowersFlush = false

  public init() {}

  /// Whether any switch is set.
  public var isEnabled: Bool { faultFile != nil || acknowledgeQuorumBeforeFollowersFlush }

  static func parse(_ value: Node) throws(ConfigurationError) -> TestingSettings {
    typealias C = NodeConfiguration
    let fields = try C.mapping(value, key: "testing")
    try C.check(fields, allowed: ["fault_file", "ack_quorum_before_flush"], prefix: "testing.")
    var settings = TestingSettings()
    if let node = fields["fault_file"] { settings.faultFile = try C.string(node, key: "testing.fault_file") }
    if let node = fields["ack_quorum_before_flush"] {
      settings.acknowledgeQuorumBeforeFollowersFlush = try C.bool(
        node, key: "testing.ack_quorum_before_flush")
    }
    return settings
  }
}
