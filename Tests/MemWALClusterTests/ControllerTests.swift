import MemWALCluster
import MemWALCore
import Testing

/// The controller's rules one at a time, driven by hand.
@Suite struct ControllerTests {
  static let second: UInt64 = 1_000_000_000

  /// A controller over n1 (primary in epoch 3) and followers n2…nN, every node reporting.
  static func makeController(nodes: Int = 5, k: Int = 2) -> (FailoverController, UInt64) {
    let members = (1...nodes).map { ClusterMember(name: "n\($0)", priority: $0 == 3 ? 5 : 0) }
    let record = ControllerRecord(epoch: Epoch(3), primary: "n1", members: members, quorumFollowers: k)
    var controller = FailoverController(
      configuration: .init(members: members, quorumFollowers: k), record: record, now: 0)
    for index in 1...nodes {
      _ = controller.report(from: "n\(index)", report(index == 1 ? .primary : .follower), now: 0)
    }
    return (controller, 0)
  }

  static func report(_ role: FencedRole, flushed: UInt64 = 10, sees: Bool = true, promised: UInt64 = 3)
    -> NodeReport
  {
    NodeReport(
      role: role, epoch: Epoch(3), promisedEpoch: Epoch(promised), flushedLSN: LSN(flushed),
      appliedLSN: LSN(flushed),
      lastEpochInLog: Epoch(3), primary: role == .follower ? "n1" : nil, seesPrimary: sees)
  }

  /// Followers report every 200 ms without the primary until `until`.
  static func losePrimary(
    _ controller: inout FailoverController, nodes: Int = 5, sees: Bool = false, until: UInt64
  ) -> [ControllerAction] {
    var actions: [ControllerAction] = []
    var now: UInt64 = 0
    while now < until {
      now += 200_000_000
      for index in 2...nodes {
        actions += controller.report(from: "n\(index)", report(.follower, sees: sees), now: now)
      }
      actions += controller.tick(now: now)
    }
    return actions
  }

  static func promiseRequests(_ actions: [ControllerAction]) -> [String] {
    actions.compactMap { if case .requestPromise(let node, _) = $0 { return node } else { return nil } }
  }

  /// A first start (no record): the initial primary, already running in its epoch, is adopted —
  /// no promise asked, no epoch used up — and the others are steered to follow it.
  @Test func aFirstStartAdoptsTheRunningPrimary() {
    let members = (1...3).map { ClusterMember(name: "n\($0)", priority: $0 == 2 ? 9 : 0) }
    var controller = FailoverController(
      configuration: .init(members: members, quorumFollowers: 1), record: nil, now: 0)
    var actions: [ControllerAction] = []
    actions += controller.report(from: "n2", Self.report(.follower), now: 1)
    actions += controller.tick(now: 2)
    #expect(actions.isEmpty || Self.promiseRequests(actions).isEmpty, "waits for the others to report")
    actions += controller.report(from: "n1", Self.report(.primary), now: 3)
    actions += controller.report(from: "n3", Self.report(.follower), now: 4)
    actions += controller.tick(now: 5)
    #expect(Self.promiseRequests(actions).isEmpty)
    #expect(controller.record.primary == "n1" && controller.record.epoch == Epoch(3))
    #expect(actions.contains(.persist(controller.record)))
    #expect(controller.lastStatus.contains("adopted without an election"))
  }

  /// A first start does not adopt whoever answers first: a primary in epoch 1 (a wiped initial
  /// primary, say) reporting before members that have moved on to epoch 5 is not adopted; the
  /// controller waits for the reports and then holds an election above epoch 5.
  @Test func aFirstStartDoesNotAdoptAStalePrimary() {
    let members = (1...3).map { ClusterMember(name: "n\($0)", priority: 0) }
    var controller = FailoverController(
      configuration: .init(members: members, quorumFollowers: 1), record: nil, now: 0)
    func report(_ role: FencedRole, epoch: UInt64) -> NodeReport {
      NodeReport(
        role: role, epoch: Epoch(epoch), promisedEpoch: Epoch(epoch), flushedLSN: LSN(epoch * 10),
        appliedLSN: LSN(epoch * 10), lastEpochInLog: Epoch(epoch), primary: role == .primary ? nil : "n2",
        seesPrimary: role == .primary)
    }
    var actions = controller.report(from: "n1", report(.primary, epoch: 1), now: 1)
    actions += controller.tick(now: 2)
    #expect(controller.record.primary == nil, "not adopted on the first report")
    actions += controller.report(from: "n2", report(.primary, epoch: 5), now: 3)
    actions += controller.report(from: "n3", report(.follower, epoch: 5), now: 4)
    actions += controller.tick(now: 5)
    // Two members claim to be primary: an election, in an epoch above every one seen.
    #expect(controller.record.primary == nil)
    #expect(actions.contains(.requestPromise(node: "n3", epoch: Epoch(6))), "\(actions)")
  }

  /// A first start where the initial primary is not reachable: the election needs M − k promises
  /// (the missing primary may have acknowledged writes on k others), so one is not enough.
  @Test func aFirstStartElectionWithoutTheInitialPrimaryNeedsMMinusKPromises() {
    let members = (1...3).map { ClusterMember(name: "n\($0)", priority: 0) }
    var controller = FailoverController(
      configuration: .init(members: members, quorumFollowers: 1), record: nil, now: 0)
    #expect(controller.requiredPromises == 2)
    var actions: [ControllerAction] = []
    var now: UInt64 = 0
    while now < 2 * Self.second && Self.promiseRequests(actions).isEmpty {
      now += 200_000_000
      actions += controller.report(from: "n2", Self.report(.follower, flushed: 4), now: now)
      actions += controller.report(from: "n3", Self.report(.follower, flushed: 7), now: now)
      actions += controller.tick(now: now)
    }
    let asked = Self.promiseRequests(actions)
    #expect(Set(asked) == ["n1", "n2", "n3"], "an election after the failure timeout: \(actions)")
    guard
      case .requestPromise(_, let epoch)? = actions.first(where: {
        if case .requestPromise = $0 { return true } else { return false }
      })
    else { return }
    // Only n2 promises, n3 refuses, n1 is unreachable: no promotion, and the status says why.
    var answers = controller.promise(
      from: "n2", epoch: epoch, flushedLSN: LSN(4), lastLogEpoch: Epoch(3), now: now)
    answers += controller.unreachable("n1", now: now)
    answers += controller.promiseRefused(from: "n3", epoch: epoch, highestPromised: epoch.next, now: now)
    #expect(!answers.contains { if case .promote = $0 { return true } else { return false } })
    #expect(controller.lastStatus.contains("2 promises needed (M − k = 3 − 1"), "\(controller.lastStatus)")
  }

  @Test func noFailoverWhileAFollowerStillSeesThePrimary() {
    var (controller, _) = Self.makeController()
    let actions = Self.losePrimary(&controller, sees: true, until: 2 * Self.second)
    #expect(Self.promiseRequests(actions).isEmpty)
    #expect(controller.lastStatus.contains("still see"))
  }

  @Test func failoverWaitsForTheFailureTimeout() {
    var (controller, _) = Self.makeController()
    #expect(Self.promiseRequests(Self.losePrimary(&controller, until: 800_000_000)).isEmpty)
    let actions = Self.losePrimary(&controller, until: 1_200_000_000)
    #expect(Self.promiseRequests(actions).sorted() == ["n1", "n2", "n3", "n4", "n5"])
    #expect(actions.contains(.requestPromise(node: "n2", epoch: Epoch(4))))
  }

  /// 5 nodes, k = 2: N = 4 followers, so 4 − 2 + 1 = 3 promises are needed; 2 are not enough.
  @Test func tooFewPromisesMeansNoPromotionAndSaysWhy() {
    var (controller, _) = Self.makeController()
    _ = Self.losePrimary(&controller, until: 1_200_000_000)
    var actions = controller.promise(
      from: "n2", epoch: Epoch(4), flushedLSN: LSN(9), lastLogEpoch: Epoch(3), now: 1_300_000_000)
    actions += controller.promise(
      from: "n3", epoch: Epoch(4), flushedLSN: LSN(9), lastLogEpoch: Epoch(3), now: 1_300_000_000)
    actions += controller.promiseRefused(
      from: "n4", epoch: Epoch(4), highestPromised: Epoch(6), now: 1_300_000_000)
    actions += controller.tick(now: 2_300_000_000)
    #expect(!actions.contains { if case .promote = $0 { return true } else { return false } })
    #expect(!actions.contains { if case .persist = $0 { return true } else { return false } })
    let status = controller.lastStatus
    #expect(status.contains("3 promises needed (N − k + 1 = 4 − 2 + 1), 2 received (n2, n3)"), "\(status)")
    #expect(status.contains("refused: n4 (promised 6)"), "\(status)")
    #expect(status.contains("no answer: n1, n5"), "\(status)")
    // The retry asks for an epoch above every promise seen.
    for index in 2...5 {
      _ = controller.report(from: "n\(index)", Self.report(.follower, sees: false), now: 2_850_000_000)
    }
    let retry = controller.tick(now: 2_900_000_000).compactMap { action -> Epoch? in
      if case .requestPromise(_, let epoch) = action { return epoch } else { return nil }
    }
    #expect(retry.first == Epoch(7), "\(controller.lastStatus) \(controller.phase)")
  }

  /// The most advanced promiser wins, priority breaks ties; the record is persisted before the
  /// promotion, and everyone else is pointed at the new primary after it.
  @Test func promotesTheMostAdvancedAfterPersisting() {
    var (controller, _) = Self.makeController()
    _ = Self.losePrimary(&controller, until: 1_200_000_000)
    let now = 1_300_000_000 as UInt64
    var actions = controller.promise(
      from: "n2", epoch: Epoch(4), flushedLSN: LSN(12), lastLogEpoch: Epoch(3), now: now)
    actions += controller.promise(
      from: "n3", epoch: Epoch(4), flushedLSN: LSN(12), lastLogEpoch: Epoch(3), now: now)
    actions += controller.promise(
      from: "n4", epoch: Epoch(4), flushedLSN: LSN(20), lastLogEpoch: Epoch(2), now: now)
    actions += controller.unreachable("n1", now: now)
    #expect(actions.isEmpty)
    actions += controller.promise(
      from: "n5", epoch: Epoch(4), flushedLSN: LSN(11), lastLogEpoch: Epoch(3), now: now)
    let record = ControllerRecord(
      epoch: Epoch(4), primary: "n3", members: controller.record.members, quorumFollowers: 2)
    #expect(Array(actions.prefix(2)) == [.persist(record), .promote(node: "n3", epoch: Epoch(4))])
    let follows = actions.compactMap { action -> String? in
      if case .follow(let node, "n3", Epoch(4)) = action { return node } else { return nil }
    }
    #expect(follows.sorted() == ["n1", "n2", "n4", "n5"])
    #expect(controller.record == record)
  }

  /// A restarted controller starts from its record; a node that promised a higher epoch than the
  /// record's (an election that did not finish) starts a new election at once.
  @Test func aRestartedControllerFinishesAnInterruptedElection() {
    let (old, _) = Self.makeController(nodes: 3, k: 1)
    var controller = FailoverController(configuration: old.configuration, record: old.record, now: 0)
    _ = controller.report(from: "n1", Self.report(.follower, sees: false, promised: 4), now: 0)
    let actions = controller.tick(now: 10)
    #expect(Self.promiseRequests(actions).sorted() == ["n1", "n2", "n3"])
    #expect(actions.contains(.requestPromise(node: "n1", epoch: Epoch(5))))
    // The old primary's promise alone suffices: it holds every write it acknowledged.
    let promoted =
      controller.promise(from: "n1", epoch: Epoch(5), flushedLSN: LSN(10), lastLogEpoch: Epoch(3), now: 20)
      + controller.unreachable("n2", now: 20) + controller.unreachable("n3", now: 20)
    #expect(promoted.contains(.promote(node: "n1", epoch: Epoch(5))))
  }

  @Test func steersNodesToTheRecord() {
    var (controller, _) = Self.makeController(nodes: 3, k: 1)
    var stale = Self.report(.primary)
    stale.epoch = Epoch(2)
    let actions = controller.report(from: "n2", stale, now: 1_000_000_000)
    #expect(actions == [.follow(node: "n2", primary: "n1", epoch: Epoch(3))])
    var demoted = Self.report(.follower)
    demoted.primary = nil
    #expect(
      controller.report(from: "n1", demoted, now: 1_000_000_000) == [.promote(node: "n1", epoch: Epoch(3))])
  }

  @Test func switchoverDrainsWaitsAndPromotes() throws {
    var (controller, _) = Self.makeController(nodes: 3, k: 1)
    let start = try controller.switchover(to: "n2", now: 100)
    #expect(start.first == .drain(node: "n1", epoch: Epoch(3)))
    #expect(throws: ControllerCommandError.self) { try controller.switchover(to: "n3", now: 100) }
    // A heartbeat showing `draining` does not count (it may predate a resume); the drain's answer does.
    _ = controller.report(from: "n1", Self.report(.draining, flushed: 18), now: 150)
    #expect(controller.report(from: "n2", Self.report(.follower, flushed: 19), now: 160).isEmpty)
    _ = controller.drained("n1", Self.report(.draining, flushed: 20), now: 200)
    #expect(controller.report(from: "n2", Self.report(.follower, flushed: 19), now: 300).isEmpty)
    #expect(
      controller.report(from: "n2", Self.report(.follower, flushed: 20), now: 400)
        == [.requestPromise(node: "n2", epoch: Epoch(4))])
    let actions = controller.promise(
      from: "n2", epoch: Epoch(4), flushedLSN: LSN(20), lastLogEpoch: Epoch(3), now: 500)
    #expect(actions.contains(.promote(node: "n2", epoch: Epoch(4))))
    #expect(actions.contains(.follow(node: "n1", primary: "n2", epoch: Epoch(4))))
  }

  /// A switchover whose target does not catch up in time is abandoned and the drained primary
  /// resumed; if that primary stopped answering meanwhile, the status does not claim it takes
  /// writes again.
  @Test(arguments: [true, false]) func anAbandonedSwitchoverResumesThePrimary(primaryAnswers: Bool) throws {
    var (controller, _) = Self.makeController(nodes: 3, k: 1)
    _ = try controller.switchover(to: "n2", now: 100)
    _ = controller.drained("n1", Self.report(.draining, flushed: 20), now: 200)
    var actions: [ControllerAction] = []
    for step in 1...60 {
      let now = UInt64(step) * 200_000_000
      if primaryAnswers { _ = controller.report(from: "n1", Self.report(.draining, flushed: 20), now: now) }
      _ = controller.report(from: "n2", Self.report(.follower, flushed: 5), now: now)
      actions += controller.tick(now: now)
    }
    #expect(actions.contains(.resume(node: "n1", epoch: Epoch(3))))
    let lines = actions.compactMap { action -> String? in
      guard case .status(let line) = action else { return nil }
      return line
    }
    let abandoned = try #require(lines.first { $0.contains("switchover to n2 abandoned") }, "\(lines)")
    if primaryAnswers {
      #expect(
        abandoned.contains("the target did not catch up") && abandoned.hasSuffix("n1 takes writes again"))
    } else {
      #expect(abandoned.contains("n1 stopped answering") && abandoned.contains("n1 is not answering"))
      #expect(!abandoned.contains("takes writes again"))
    }
  }

  @Test func forcePromotionSaysWhatMayBeLost() throws {
    var (controller, _) = Self.makeController(nodes: 3, k: 1)
    _ = controller.report(from: "n2", Self.report(.follower, flushed: 7), now: 10)
    _ = controller.report(from: "n3", Self.report(.follower, flushed: 9), now: 10)
    let actions = try controller.forcePromote("n2", now: 20)
    #expect(actions.prefix(2).last == .promote(node: "n2", epoch: Epoch(4)))
    #expect(
      controller.lastStatus.contains("n1 (LSN 10, epoch 3), n3 (LSN 9, epoch 3)"), "\(controller.lastStatus)")
  }

  @Test func setQuorumIsCheckedPersistedAndFloored() throws {
    var (controller, _) = Self.makeController(nodes: 5, k: 2)
    #expect(throws: ControllerCommandError.invalidQuorum(requested: 5, followers: 4)) {
      try controller.setQuorum(5, now: 1)
    }
    let lowered = try controller.setQuorum(1, now: 1)
    #expect(lowered.contains(.setQuorum(node: "n1", quorumFollowers: 1, epoch: Epoch(3))))
    _ = try controller.setQuorum(3, now: 2)
    // Writes acknowledged while k was 1 are on one follower only: elections count against 1.
    #expect(controller.record.quorumFloor == 1)
    #expect(controller.requiredPromises == 4)
  }
}

/// What each node keeps to fence old epochs.
@Suite struct NodeFencingTests {
  static func follower(promised: UInt64 = 3) -> NodeFencing {
    NodeFencing(
      state: FencingState(promisedEpoch: Epoch(promised), role: .follower, epoch: Epoch(3), primary: "n1"))
  }

  @Test func promisesOnlyAHigherEpochAndPersistsFirst() throws {
    var node = Self.follower()
    #expect(throws: FencingError.promiseNotHigher(requested: Epoch(3), promised: Epoch(3))) {
      try node.promise(Epoch(3))
    }
    let actions = try node.promise(Epoch(5))
    #expect(
      actions == [
        .persist(FencingState(promisedEpoch: Epoch(5), role: .follower, epoch: Epoch(3), primary: "n1"))
      ])
    #expect(throws: FencingError.promiseNotHigher(requested: Epoch(4), promised: Epoch(5))) {
      try node.promise(Epoch(4))
    }
  }

  @Test func refusesFramesAndPromotionsBelowThePromise() throws {
    var node = Self.follower(promised: 5)
    #expect(throws: FencingError.staleEpoch(requested: Epoch(3), promised: Epoch(5))) {
      try node.checkFrame(epoch: Epoch(3))
    }
    try node.checkFrame(epoch: Epoch(5))
    #expect(throws: FencingError.staleEpoch(requested: Epoch(4), promised: Epoch(5))) {
      try node.promote(to: Epoch(4))
    }
    #expect(throws: FencingError.staleEpoch(requested: Epoch(4), promised: Epoch(5))) {
      try node.follow("n2", epoch: Epoch(4))
    }
    #expect(try node.promote(to: Epoch(5)).last == .becomePrimary(epoch: Epoch(5)))
    #expect(node.acceptsWrites)
  }

  @Test func aPrimaryStepsDownWhenItLearnsOfAHigherEpoch() throws {
    var primary = NodeFencing(
      state: FencingState(promisedEpoch: Epoch(3), role: .primary, epoch: Epoch(3), primary: nil))
    #expect(primary.observe(epoch: Epoch(3)).isEmpty)
    #expect(primary.observe(epoch: Epoch(4)).last == .stepDown(observedEpoch: Epoch(4)))
    #expect(!primary.acceptsWrites)
    var promised = NodeFencing(
      state: FencingState(promisedEpoch: Epoch(3), role: .primary, epoch: Epoch(3), primary: nil))
    #expect(try promised.promise(Epoch(4)).last == .stepDown(observedEpoch: Epoch(4)))
    #expect(!promised.acceptsWrites)
  }

  @Test func aDrainSurvivesARestart() throws {
    var primary = NodeFencing(
      state: FencingState(promisedEpoch: Epoch(3), role: .primary, epoch: Epoch(3), primary: nil))
    let actions = try primary.drain(epoch: Epoch(3))
    guard case .persist(let state) = actions.first else {
      Issue.record("a drain is persisted first")
      return
    }
    let restarted = NodeFencing(state: state)
    #expect(!restarted.acceptsWrites)
    var resumed = restarted
    #expect(try resumed.resume(epoch: Epoch(3)).last == .resumeWrites)
    #expect(resumed.acceptsWrites)
  }
}
