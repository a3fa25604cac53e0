import Logging
import MemWALCluster
import MemWALCore
import MemWALLog
import MemWALNode
import NIOCore
import NIOPosix
import Synchronization

/// A node's role at run time: which replicator it runs (a `PrimaryReplicator` listening for
/// followers, or a `FollowerReplicator` following a primary), and its fencing state (DESIGN G3,
/// §6). Role changes — the controller's promise, promote, follow, drain, resume and set-quorum
/// requests, and a primary stepping down when a follower shows it a newer epoch — run one at a
/// time on one task. The fencing state is persisted before the request is answered and before the
/// change it allows is carried out.
final class NodeRoles: @unchecked Sendable {
  enum Event: Sendable {
    case request(ControlRequest, reply: @Sendable (ControlReply) -> Void)
    case steppedDown(observed: Epoch, reason: String)
  }

  struct Published {
    var fencing: FencingState
    var primary: PrimaryReplicator?
    var follower: FollowerReplicator?
  }

  let host: EngineHost
  let settings: ClusterSettings
  let tls: PeerTLS
  let logger: Logger
  let dataDirectory: String
  /// Whether a controller manages roles (the fencing state is then persisted and obeyed).
  let isManaged: Bool
  /// Test-only switches (`ack_quorum_before_flush` reaches the primary's replicator).
  let testing: TestingSettings
  private let group: any EventLoopGroup
  private let reopen: @Sendable () async throws -> MemoryEngine
  private let events = EventQueue<Event>()
  private let published: Mutex<Published>
  private let loop = Mutex<Task<Void, Never>?>(nil)

  // Owned by the role task.
  private var fencing: NodeFencing

  init(
    host: EngineHost, settings: ClusterSettings, tls: PeerTLS, fencing: FencingState, dataDirectory: String,
    isManaged: Bool, testing: TestingSettings = TestingSettings(), group: any EventLoopGroup, logger: Logger,
    reopen: @escaping @Sendable () async throws -> MemoryEngine
  ) {
    self.host = host
    self.settings = settings
    self.tls = tls
    self.dataDirectory = dataDirectory
    self.isManaged = isManaged
    self.testing = testing
    self.group = group
    self.logger = logger
    self.reopen = reopen
    self.fencing = NodeFencing(state: fencing)
    published = Mutex(Published(fencing: fencing))
  }

  var primary: PrimaryReplicator? { published.withLock { $0.primary } }
  var follower: FollowerReplicator? { published.withLock { $0.follower } }
  var fencingState: FencingState { published.withLock { $0.fencing } }

  /// Starts the replicator the persisted role calls for, then the role task.
  func start() async throws {
    if isManaged && fencing.state.role == .primary {
      // A restarted primary does not take writes until the controller confirms it is still the
      // primary (it then sends `resume`); if the cluster moved on, it is told to follow instead,
      // and nothing was acknowledged here in the meantime.
      let current = fencing.state
      let waiting = FencingState(
        promisedEpoch: current.promisedEpoch, role: .draining, epoch: current.epoch, primary: nil)
      try FencingStateFile.store(waiting, directory: dataDirectory, fileSystem: host.engine.log.fileSystem)
      fencing = NodeFencing(state: waiting)
      published.withLock { $0.fencing = waiting }
    }
    let state = fencing.state
    switch state.role {
    case .primary, .draining:
      let engine = host.engine
      if engine.log.currentEpoch < state.epoch {
        // Promoted, but the epoch change did not reach the log before a crash: record it now.
        try await engine.becomePrimary(epoch: state.epoch, name: settings.node)
      }
      // No gate until the replicator listens: the engine (replicated) refuses writes that ask for
      // followers with insufficient_replicas.
      engine.replicationGate = nil
      if state.role == .draining {
        engine.becomeFollower(primary: nil)
      } else {
        engine.resumeWrites()
      }
      try await startPrimary()
    case .follower:
      startFollower(primary: state.primary, promised: state.promisedEpoch)
    }
    let task = Task { [self] in
      for await event in events.stream { await handle(event) }
    }
    loop.withLock { $0 = task }
  }

  func stop() async {
    events.finish()
    await loop.withLock { $0 }?.value
    let (primary, follower) = published.withLock { ($0.primary, $0.follower) }
    await primary?.stop()
    await follower?.stop()
  }

  /// Hands a controller request to the role task; `reply` is called once with the answer.
  func submit(_ request: ControlRequest, reply: @escaping @Sendable (ControlReply) -> Void) {
    events.post(.request(request, reply: reply))
  }

  /// The answer to a heartbeat, from what is published (never waits for a role change).
  func report() -> NodeReport {
    let (state, follower, primary) = published.withLock { ($0.fencing, $0.follower, $0.primary) }
    let engine = host.engine
    var seesPrimary = state.role != .follower
    if state.role == .follower, let follower, let heard = follower.status.lastHeardNanoseconds {
      let now = monotonicNanoseconds()
      seesPrimary = now < heard || now - heard < seesPrimaryWindow
    }
    return NodeReport(
      role: state.role, epoch: state.epoch, promisedEpoch: state.promisedEpoch,
      flushedLSN: engine.log.positions.flushed.value, appliedLSN: engine.store.appliedLSN,
      lastEpochInLog: engine.log.currentEpoch, primary: state.primary, seesPrimary: seesPrimary,
      quorumFollowers: state.role == .follower ? nil : primary?.quorum)
  }

  /// How long a follower still counts its primary as seen after last hearing from it: three
  /// replication heartbeats and a margin, well under the controller's failure timeout.
  private var seesPrimaryWindow: UInt64 {
    settings.timings.heartbeatInterval.nanoseconds * 3 + 300_000_000
  }

  // MARK: the role task

  private func handle(_ event: Event) async {
    switch event {
    case .request(let request, let reply):
      let answer: ControlReply
      do {
        answer = try await carryOut(request)
      } catch let error as FencingError {
        answer = .refused(promisedEpoch: fencing.promisedEpoch, message: error.description)
      } catch {
        logger.error(
          "control: request failed", metadata: ["request": "\(request.name)", "error": "\(error)"])
        answer = .failed(message: "\(error)")
      }
      publishFencing()
      reply(answer)
    case .steppedDown(let observed, let reason):
      do {
        try await perform(fencing.observe(epoch: observed), reason: reason)
      } catch {
        logger.error("control: stepping down failed", metadata: ["error": "\(error)"])
      }
      publishFencing()
    }
  }

  private func carryOut(_ request: ControlRequest) async throws -> ControlReply {
    let engine = { self.host.engine }
    switch request {
    case .heartbeat:
      return .report(report())
    case .promise(let epoch):
      try await perform(try fencing.promise(epoch), reason: "promised epoch \(epoch) to the controller")
      // The follower link now refuses frames below the promise: nothing more is acknowledged to an
      // older primary, so the flushed LSN below is all an election may count on from this node.
      await follower?.promise(epoch)
      return .promised(
        epoch: epoch, flushedLSN: engine().log.positions.flushed.value,
        lastLogEpoch: engine().log.currentEpoch)
    case .promote(let epoch):
      let actions = try fencing.promote(to: epoch)
      try await perform(actions, reason: "promoted in epoch \(epoch)")
      let log = engine().log
      let start = log.epochHistory.last { $0.epoch == epoch }?.firstLSN ?? log.positions.written.value
      return .promoted(epoch: epoch, lsn: start)
    case .follow(let primary, let epoch):
      guard settings.members[primary] != nil else { return .failed(message: "\(primary) is not a member") }
      try await perform(
        try fencing.follow(primary, epoch: epoch), reason: "\(primary) is primary in epoch \(epoch)")
      return .done
    case .drain(let epoch):
      try await perform(try fencing.drain(epoch: epoch), reason: "switchover")
      // The report after the drain (everything logged is flushed): the controller takes the
      // drained LSN from this answer, never from a heartbeat that may predate a `resume`.
      publishFencing()
      return .report(report())
    case .resume(let epoch):
      try await perform(try fencing.resume(epoch: epoch), reason: "switchover abandoned")
      return .done
    case .setQuorum(let k, let epoch):
      guard fencing.role != .follower, fencing.epoch == epoch, let primary else {
        throw FencingError.staleEpoch(requested: epoch, promised: fencing.epoch)
      }
      guard k <= settings.members.count - 1 else {
        return .failed(message: "k = \(k) exceeds the \(settings.members.count - 1) followers")
      }
      if k != primary.quorum {
        // Recorded in the WAL first, so the change is in every replica's history (and audits).
        let result = try await host.engine.log.appendQuorumChange(k)
        primary.setQuorum(k)
        logger.warning(
          "control: quorum changed", metadata: ["k": "\(k)", "epoch": "\(epoch)", "lsn": "\(result.lsn)"])
      }
      return .done
    }
  }

  /// Carries out fencing actions in order; `persist` is durable before anything after it.
  private func perform(_ actions: [FencingAction], reason: String) async throws {
    for action in actions {
      switch action {
      case .persist(let state):
        if isManaged {
          try FencingStateFile.store(state, directory: dataDirectory, fileSystem: host.engine.log.fileSystem)
        }
      case .stepDown(let observed):
        logger.critical(
          "control: stepping down; no more writes here",
          metadata: ["observed_epoch": "\(observed)", "reason": "\(reason)"])
        if let primary {
          primary.fence(reason: "this node is fenced: \(reason)")
          await primary.stop()
          published.withLock { $0.primary = nil }
        }
        host.engine.becomeFollower(primary: nil)
        if follower == nil { startFollower(primary: nil, promised: fencing.promisedEpoch) }
      case .becomePrimary(let epoch):
        if let follower {
          await follower.stop()
          published.withLock { $0.follower = nil }
        }
        // Until the replicator is listening (no gate), writes that ask for followers get
        // insufficient_replicas from the engine, never a `local` answer; this also clears the
        // stopped gate a step-down left.
        host.engine.replicationGate = nil
        try await host.engine.becomePrimary(epoch: epoch, name: settings.node)
        if primary == nil { try await startPrimary() }
      case .follow(let primary, _):
        if let follower {
          if follower.status.primary != primary { follower.changePrimary(primary) }
          await follower.promise(fencing.promisedEpoch)
        } else {
          startFollower(primary: primary, promised: fencing.promisedEpoch)
        }
      case .stopWrites:
        let engine = host.engine
        engine.becomeFollower(primary: nil)
        // Everything logged is flushed before the drain is reported: the controller promotes the
        // target only once it holds the drained primary's last LSN.
        let last = engine.log.positions.written.value
        try await engine.log.positions.flushed.wait(for: last, timeout: .seconds(30))
      case .resumeWrites:
        host.engine.resumeWrites()
      }
    }
  }

  private func publishFencing() {
    let state = fencing.state
    published.withLock { $0.fencing = state }
  }

  // MARK: replicators

  private func startPrimary() async throws {
    // Validated when the configuration was parsed; other members dial the member entry's address,
    // which may differ (a proxy in between).
    let address = splitHostPort(settings.replicationBindAddress!)!
    var primarySettings = PrimaryReplicator.Settings(
      clusterID: settings.clusterID, nodeName: settings.node, members: Set(settings.members.keys),
      quorum: settings.quorum, host: address.host, port: address.port)
    primarySettings.timings = settings.timings
    primarySettings.acknowledgesQuorumBeforeFollowersFlush = testing.acknowledgeQuorumBeforeFollowersFlush
    let replicator = PrimaryReplicator(
      engine: host.engine, tls: tls, settings: primarySettings, group: group, logger: logger)
    let events = self.events
    replicator.onStepDown { observed, reason in events.post(.steppedDown(observed: observed, reason: reason))
    }
    try await replicator.start()
    published.withLock { $0.primary = replicator }
  }

  private func startFollower(primary: String?, promised: Epoch) {
    var followerSettings = FollowerReplicator.Settings(
      clusterID: settings.clusterID, nodeName: settings.node,
      replicationAddresses: settings.members.mapValues(\.replication),
      apiURLs: settings.members.mapValues(\.api), primary: primary)
    followerSettings.promisedEpoch = promised
    followerSettings.timings = settings.timings
    let replicator = FollowerReplicator(
      host: host, tls: tls, settings: followerSettings, group: group, logger: logger, reopen: reopen)
    replicator.start()
    published.withLock { $0.follower = replicator }
  }
}

/// The replication gate a primary leaves behind when it stops (a step-down or a shutdown): a write
/// it logged that reaches the gate afterwards has an unknown fate — it may be cut as a divergent
/// tail — so it ends `indeterminate`, never acknowledged at the `local` level it reached.
struct StoppedGate: ReplicationGate {
  var reason: String

  func wait(for lsn: LSN, epoch: Epoch, reaching durability: Durability) async throws(WriteError)
    -> Durability
  {
    throw .indeterminate("not confirmed: \(reason)")
  }
}
