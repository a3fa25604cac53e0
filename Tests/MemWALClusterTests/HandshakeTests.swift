import MemWALCluster
import MemWALCore
import Testing

@Suite struct HandshakeTests {
  static let history = [
    EpochStart(epoch: Epoch(1), firstLSN: LSN(1)), EpochStart(epoch: Epoch(2), firstLSN: LSN(10)),
  ]

  static func primary() -> PrimaryReplication {
    PrimaryReplication(
      configuration: .init(
        clusterID: Samples.cluster, nodeID: "p", members: ["p", "f1"], quorumFollowers: 1),
      epoch: Epoch(2), epochHistory: history, flushedLSN: LSN(20), now: 0)
  }

  static func hello(
    version: UInt16 = ReplicationWire.protocolVersion, cluster: ClusterID = Samples.cluster,
    node: String = "f1", last: UInt64 = 20,
    promised: UInt64 = 2, history: [EpochStart] = history
  ) -> ReplicationMessage {
    .hello(
      protocolVersion: version, clusterID: cluster, nodeID: node, epochHistory: history, lastLSN: LSN(last),
      promisedEpoch: Epoch(promised))
  }

  static func refusal(_ actions: [PrimaryAction]) -> RefusalCode? {
    for case .send(.refuse(let code, _), _) in actions { return code }
    return nil
  }

  @Test func refusesWrongVersionClusterAndNode() {
    let connection = ConnectionID(1)
    for (message, code) in [
      (Self.hello(version: 1), RefusalCode.unsupportedVersion),
      (Self.hello(version: 3), RefusalCode.unsupportedVersion),
      (Self.hello(cluster: ClusterID(high: 1, low: 1)), .wrongCluster),
      (Self.hello(node: "stranger"), .unknownNode),
      (Self.hello(node: "p"), .unknownNode),
    ] {
      var primary = Self.primary()
      _ = primary.connectionOpened(connection)
      let actions = primary.received(message, on: connection)
      #expect(Self.refusal(actions) == code)
      #expect(actions.contains(where: { if case .close = $0 { true } else { false } }))
    }
  }

  @Test func aFollowerWithANewerPromiseMakesThePrimaryStepDown() {
    var primary = Self.primary()
    _ = primary.connectionOpened(ConnectionID(1))
    let actions = primary.received(Self.hello(promised: 3), on: ConnectionID(1))
    #expect(Self.refusal(actions) == .staleEpoch)
    #expect(actions.contains(.stepDown(observedEpoch: Epoch(3), reportedBy: "f1")))
  }

  @Test func welcomesWithTheDivergencePoint() {
    var primary = Self.primary()
    _ = primary.connectionOpened(ConnectionID(1))
    let stale = [EpochStart(epoch: Epoch(1), firstLSN: LSN(1))]
    let actions = primary.received(Self.hello(last: 14, promised: 1, history: stale), on: ConnectionID(1))
    #expect(
      actions.first
        == .send(
          .welcome(
            primaryID: "p", epoch: Epoch(2), epochHistory: Self.history, truncateAfter: LSN(9),
            startAfter: LSN(9)),
          on: ConnectionID(1)))
    guard case .sendRecords(let request) = actions.last else {
      Issue.record("no records asked for: \(actions)")
      return
    }
    #expect(request.after == LSN(9) && request.through == LSN(20))
  }

  @Test func followerRefusesFramesFromBelowItsPromise() {
    var follower = FollowerReplication(
      configuration: .init(clusterID: Samples.cluster, nodeID: "f1"),
      log: LocalLogState(
        epochHistory: Self.history, lastLSN: LSN(20), flushedLSN: LSN(20), appliedLSN: LSN(20)),
      promisedEpoch: Epoch(3), primaryAddress: "p", random: SplitMix64(seed: 1), now: 0)
    guard case .connect(let connection, _) = follower.tick(now: 0).first else {
      Issue.record("no connect")
      return
    }
    _ = follower.connected(connection)
    let actions = follower.received(
      .welcome(
        primaryID: "p", epoch: Epoch(2), epochHistory: Self.history, truncateAfter: nil, startAfter: LSN(20)),
      on: connection)
    #expect(
      actions.contains(
        .send(.refuse(code: .staleEpoch, message: "frame from epoch 2; this node promised 3"), on: connection)
      ))
    guard case .disconnected = follower.state else {
      Issue.record("still \(follower.state)")
      return
    }
  }
}
