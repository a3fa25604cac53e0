import Logging
import MemWALCluster
import MemWALCore
import MemWALLog
import MemWALNode
import NIOPosix

/// One node of a cluster as `memwal serve` runs it: the engine (replaceable, see `EngineHost`) and
/// the replication side its role needs — a `PrimaryReplicator` listening for followers, or a
/// `FollowerReplicator` following the primary. A node without a `cluster` section is a single
/// primary with no replication.
public final class ClusterNode: Sendable {
  public let host: EngineHost
  public let settings: ClusterSettings?
  let roles: NodeRoles?
  let control: NodeControlListener?

  init(host: EngineHost, settings: ClusterSettings?, roles: NodeRoles?, control: NodeControlListener?) {
    self.host = host
    self.settings = settings
    self.roles = roles
    self.control = control
  }

  /// A single node serving `engine`, with no replication.
  public convenience init(single engine: MemoryEngine) {
    self.init(host: EngineHost(engine), settings: nil, roles: nil, control: nil)
  }

  var primary: PrimaryReplicator? { roles?.primary }
  var follower: FollowerReplicator? { roles?.follower }

  /// Opens the engine and starts the replication its role needs. With a controller
  /// (`cluster.controller`) the role comes from the node's persisted fencing state
  /// (`fencing.state`; on a first start, `initial_primary` decides) and the node listens for the
  /// controller on its `control` address; without one, `initial_primary` is primary for good.
  public static func start(configuration: NodeConfiguration, logger: Logger) async throws -> ClusterNode {
    var options = configuration.engine
    let fileSystem = makeFileSystem(configuration.testing, logger: logger)
    if configuration.testing.acknowledgeQuorumBeforeFollowersFlush {
      logger.warning(
        "TESTING ONLY: testing.ack_quorum_before_flush is on; quorum writes are acknowledged without any follower and can be lost in a failover (DESIGN G2 is broken on purpose)"
      )
    }
    guard let cluster = configuration.cluster else {
      let engine = try await MemoryEngine.open(
        directory: configuration.dataDirectory, options: options, fileSystem: fileSystem, logger: logger)
      return ClusterNode(single: engine)
    }
    let directory = configuration.dataDirectory
    let isManaged = cluster.controller != nil
    let stored =
      isManaged ? try FencingStateFile.load(directory: directory, fileSystem: POSIXFileSystem()) : nil
    let startsAsPrimary =
      stored.map { $0.role != FencedRole.follower } ?? (cluster.node == cluster.initialPrimary)
    options.log.clusterID = cluster.clusterID
    options.role = startsAsPrimary ? .primary : .follower
    options.isReplicated = true
    let tls = try PeerTLS(
      nodeName: cluster.node, certificatesDirectory: cluster.certificates,
      membership: Set(cluster.members.keys),
      logger: logger)
    let controlTLS = try cluster.controller.map { controller throws(PeerTLSError) in
      try PeerTLS(
        nodeName: cluster.node, certificatesDirectory: cluster.certificates, membership: [controller.name],
        logger: logger)
    }
    let engine = try await MemoryEngine.open(
      directory: directory, options: options, fileSystem: fileSystem, logger: logger)
    let host = EngineHost(engine)
    let epoch = engine.log.currentEpoch
    let fencing =
      stored
      ?? (cluster.node == cluster.initialPrimary
        ? FencingState(promisedEpoch: epoch, role: .primary, epoch: epoch, primary: nil)
        : FencingState(promisedEpoch: epoch, role: .follower, epoch: epoch, primary: cluster.initialPrimary))
    let followerOptions = {
      var copy = options
      copy.role = .follower
      return copy
    }()
    let roles = NodeRoles(
      host: host, settings: cluster, tls: tls, fencing: fencing, dataDirectory: directory,
      isManaged: isManaged, testing: configuration.testing,
      group: MultiThreadedEventLoopGroup.singleton, logger: logger
    ) {
      try await MemoryEngine.open(
        directory: directory, options: followerOptions, fileSystem: fileSystem, logger: logger)
    }
    do {
      if isManaged && stored == nil {
        try FencingStateFile.store(fencing, directory: directory, fileSystem: engine.log.fileSystem)
      }
      try await roles.start()
    } catch {
      await roles.stop()
      await host.engine.close()
      throw error
    }
    var control: NodeControlListener?
    if let controlTLS, let address = cluster.controlBindAddress.flatMap(splitHostPort) {
      let listener = NodeControlListener(
        roles: roles, tls: controlTLS, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
      do {
        try await listener.start(host: address.host, port: address.port)
      } catch {
        await roles.stop()
        await host.engine.close()
        throw error
      }
      control = listener
    }
    return ClusterNode(host: host, settings: cluster, roles: roles, control: control)
  }

  /// The node's file system: the real one, wrapped in a `FaultInjectingFileSystem` when the
  /// configuration names a fault file (announced as a warning).
  private static func makeFileSystem(_ testing: TestingSettings, logger: Logger) -> FileSystem {
    guard let faultFile = testing.faultFile else { return POSIXFileSystem() }
    logger.warning(
      "TESTING ONLY: disk fault injection is enabled; the fault file can make writes and fsyncs fail",
      metadata: ["fault_file": "\(faultFile)"])
    return FaultInjectingFileSystem(wrapping: POSIXFileSystem(), faultFile: faultFile, logger: logger)
  }

  /// Stops the control listener and replication, then closes the engine (its queued writes are
  /// flushed first).
  public func stop() async {
    await control?.stop()
    await roles?.stop()
    await host.engine.close()
  }

  // MARK: status

  /// `GET /v1/cluster`: the topology as this node knows it — the members and their addresses, the
  /// primary it follows (or itself) and its epoch. A single node reports itself as the only member.
  func topology() -> JSONValue {
    let engine = host.engine
    let epoch = JSONValue.number(Double((roles?.fencingState.epoch ?? engine.log.currentEpoch).rawValue))
    guard let settings else {
      return .object([
        "cluster": .null, "epoch": epoch, "node": .null, "role": .string(engine.role.rawValue),
        "primary": .null, "members": .array([]),
      ])
    }
    let fencing = roles?.fencingState
    let primaryName: String? =
      fencing?.role == .primary
      ? settings.node : (follower?.status.primary ?? fencing?.primary ?? settings.initialPrimary)
    return .object([
      "cluster": .string(settings.name), "epoch": epoch, "node": .string(settings.node),
      "role": .string(engine.role.rawValue),
      "primary": primaryName.map { name in
        .object([
          "name": .string(name), "api": settings.members[name].map { .string($0.api) } ?? .null,
        ])
      } ?? .null,
      "promised_epoch": fencing.map { .number(Double($0.promisedEpoch.rawValue)) } ?? .null,
      "controller": settings.controller.map { .string($0.api) } ?? .null,
      "quorum": .number(Double(primary?.quorum ?? settings.quorum)),
      "members": .array(
        settings.members.keys.sorted().map { name in
          .object([
            "name": .string(name), "api": .string(settings.members[name]!.api),
            "replication": .string(settings.members[name]!.replication),
          ])
        }),
    ])
  }

  /// The `replication` part of `/v1/status`.
  func replicationStatus() -> JSONValue {
    guard let settings else { return .null }
    var fields: JSONObject = [
      "cluster": .string(settings.name), "node": .string(settings.node),
      "quorum": .number(Double(primary?.quorum ?? settings.quorum)),
    ]
    if let primary {
      let bytesPerRecord = averageRecordBytes()
      fields["quorum_lsn"] = .number(Double(primary.quorumLSN.rawValue))
      fields["followers"] = .array(
        primary.followerStatuses.map { follower in
          var entry: JSONObject = [
            "node": .string(follower.nodeID), "state": .string(follower.state),
            "written_lsn": .number(Double(follower.writtenLSN.rawValue)),
            "flushed_lsn": .number(Double(follower.flushedLSN.rawValue)),
            "applied_lsn": .number(Double(follower.appliedLSN.rawValue)),
            "lag_lsns": .number(Double(follower.lagLSNs)),
            "lag_bytes": .number(Double(follower.lagLSNs) * bytesPerRecord),
            "lag_ms": .number(Double(follower.lagMilliseconds)),
            "in_flight_bytes": .number(Double(follower.inFlightBytes)),
          ]
          if let progress = follower.checkpointProgress {
            entry["checkpoint_transfer"] = .object([
              "sent_bytes": .number(Double(progress.received)),
              "total_bytes": .number(Double(progress.total)),
            ])
          }
          return .object(entry)
        })
    }
    if let follower {
      let status = follower.status
      fields["primary"] = status.primary.map(JSONValue.string) ?? .null
      fields["state"] = .string(status.state)
      fields["primary_epoch"] = status.primaryEpoch.map { .number(Double($0.rawValue)) } ?? .null
      fields["commit_lsn"] = .number(Double(status.commitLSN.rawValue))
      if let transfer = status.checkpointTransfer {
        fields["checkpoint_transfer"] = .object([
          "received_bytes": .number(Double(transfer.received)),
          "total_bytes": .number(Double(transfer.total)),
        ])
      }
      if let error = status.lastError { fields["last_error"] = .string(error) }
    }
    return .object(fields)
  }

  /// Gauges per follower for `/metrics`: (name, follower, value).
  func replicationGauges() -> [(String, String, Double)] {
    guard let primary else { return [] }
    let bytesPerRecord = averageRecordBytes()
    return primary.followerStatuses.flatMap { follower in
      [
        ("memwal_replication_lag_lsns", follower.nodeID, Double(follower.lagLSNs)),
        ("memwal_replication_lag_bytes", follower.nodeID, Double(follower.lagLSNs) * bytesPerRecord),
        ("memwal_replication_lag_milliseconds", follower.nodeID, Double(follower.lagMilliseconds)),
        ("memwal_replication_flushed_lsn", follower.nodeID, Double(follower.flushedLSN.rawValue)),
      ]
    }
  }

  /// WAL bytes per record written by this node so far: turns a lag in LSNs into bytes.
  private func averageRecordBytes() -> Double {
    let statistics = host.engine.log.statistics.snapshot()
    guard statistics.records > 0 else { return 0 }
    return Double(statistics.bytesWritten) / Double(statistics.records)
  }
}
