import MemWALCore

/// The failover controller's decisions (DESIGN §6): a pure state machine. The shell feeds it
/// ticks of a monotonic clock, node reports, promises and operator commands, and carries out the
/// actions it returns in order (see `ControllerAction` for the persist-before-act rule).
/// docs/failover.md describes the rules it implements.
///
/// Failover: when the primary has been silent for the failure timeout and every reachable
/// follower confirms it has lost the primary too, the controller asks every member to promise
/// the next epoch, and promotes the most advanced promiser — highest (last epoch in log, flushed
/// LSN), then priority — only with at least N − k + 1 promises from followers (N followers, k the
/// quorum ack count): any k followers that acknowledged a write then include a promiser.
public struct FailoverController: Sendable {
  /// Fixed settings.
  public struct Configuration: Sendable {
    /// The membership and k for the first record, when none was persisted yet.
    public var members: [ClusterMember]
    public var quorumFollowers: Int
    public var heartbeatIntervalNanoseconds: UInt64 = 200_000_000
    /// A primary silent this long (and confirmed lost by the followers) is replaced.
    public var failureTimeoutNanoseconds: UInt64 = 1_000_000_000
    /// How long an election waits for promises from nodes that have not answered.
    public var promiseTimeoutNanoseconds: UInt64 = 1_000_000_000
    /// How long after an election without enough promises the next one may start.
    public var electionRetryNanoseconds: UInt64 = 500_000_000
    /// A switchover whose target has not caught up within this time is abandoned.
    public var switchoverTimeoutNanoseconds: UInt64 = 10_000_000_000

    public init(members: [ClusterMember], quorumFollowers: Int) {
      self.members = members
      self.quorumFollowers = quorumFollowers
    }
  }

  /// A promise a node gave for an election.
  public struct Promise: Sendable, Equatable {
    public var flushedLSN: LSN
    public var lastLogEpoch: Epoch
  }

  /// An election for one epoch.
  public struct Election: Sendable, Equatable {
    public var epoch: Epoch
    /// Why it runs ("failover", "switchover to f2", …), for the status lines.
    public var reason: String
    public var asked: [String]
    /// Only these may be promoted (every member in a failover; the target in a switchover).
    public var candidates: Set<String>
    public var promises: [String: Promise] = [:]
    public var refusals: [String: Epoch] = [:]
    public var unreachable: Set<String> = []
    public var deadlineNanoseconds: UInt64
  }

  /// A planned switchover.
  public struct Switchover: Sendable, Equatable {
    public var target: String
    public var from: String
    /// The old primary's flushed LSN once it reports that it is draining.
    public var drainedLSN: LSN?
    public var deadlineNanoseconds: UInt64
  }

  /// What the controller is doing.
  public enum Phase: Sendable, Equatable {
    case steady
    case electing(Election)
    case switchingOver(Switchover, election: Election?)
  }

  /// What the controller knows of one member.
  public struct MemberView: Sendable, Equatable {
    public var report: NodeReport?
    public var lastHeardNanoseconds: UInt64?
    /// Set by `unreachable`, cleared by the next report.
    public var isMarkedUnreachable = false
    var lastSteeredNanoseconds: UInt64?
  }

  public let configuration: Configuration
  /// The durable state as last handed to the shell to persist.
  public private(set) var record: ControllerRecord
  public private(set) var phase: Phase = .steady
  public private(set) var members: [String: MemberView] = [:]
  /// The last status line, for `memwal ctl status`.
  public private(set) var lastStatus = ""
  /// The highest epoch seen anywhere: in reports, refusals, and the record.
  public private(set) var highestSeenEpoch: Epoch
  private var now: UInt64
  private let startedNanoseconds: UInt64
  private var lastHeartbeatNanoseconds: UInt64?
  private var nextElectionNanoseconds: UInt64 = 0
  /// The lowest k any primary has reported since this controller started.
  private var lowestReportedQuorum: Int?

  /// - Parameters:
  ///   - record: the persisted record, or nil on the very first start (the configuration's
  ///     membership and k are used, and the first `tick` persists them).
  ///   - now: the monotonic clock, in nanoseconds.
  public init(configuration: Configuration, record: ControllerRecord?, now: UInt64) {
    precondition(!configuration.members.isEmpty, "a cluster has at least one member")
    self.configuration = configuration
    self.record =
      record
      ?? ControllerRecord(
        epoch: .zero, primary: nil, members: configuration.members,
        quorumFollowers: configuration.quorumFollowers)
    self.highestSeenEpoch = self.record.epoch
    self.now = now
    self.startedNanoseconds = now
    for member in self.record.members { members[member.name] = MemberView() }
  }

  // MARK: - Derived values

  /// N: the followers of the current primary (every member when there is none).
  public var followerCount: Int {
    record.members.count - (record.primary == nil ? 0 : 1)
  }

  /// N − k + 1 with k the quorum floor: the follower promises an election needs. With no primary
  /// on record (the controller's first start) some member may still have run as primary and
  /// acknowledged writes on k others — the configuration's initial primary does before the
  /// controller is up — so M − k of the M members must promise, which meets those k + 1 holders.
  public var requiredPromises: Int {
    guard record.primary != nil else {
      // A primary that reported a lower k than the configured one acknowledged with that k.
      let k = min(record.quorumFloor, lowestReportedQuorum ?? record.quorumFloor)
      return max(1, record.members.count - k)
    }
    return max(1, followerCount - record.quorumFloor + 1)
  }

  /// Whether the member answered within the failure timeout and was not reported unreachable since.
  public func isReachable(_ name: String) -> Bool {
    guard let view = members[name], let heard = view.lastHeardNanoseconds else { return false }
    return !view.isMarkedUnreachable && now - heard < configuration.failureTimeoutNanoseconds
  }

  private var memberNames: [String] { record.members.map(\.name) }

  private func priority(of name: String) -> Int {
    record.members.first { $0.name == name }?.priority ?? 0
  }

  // MARK: - Inputs

  /// The clock advanced: send due heartbeats, start a failover when the primary is lost, resolve
  /// an election whose time is up, abandon a switchover past its deadline.
  public mutating func tick(now: UInt64) -> [ControllerAction] {
    self.now = max(self.now, now)
    var actions: [ControllerAction] = []
    if record.epoch == .zero && record.primary == nil && lastHeartbeatNanoseconds == nil {
      actions.append(.persist(record))
    }
    if lastHeartbeatNanoseconds.map({ self.now - $0 >= configuration.heartbeatIntervalNanoseconds }) ?? true {
      lastHeartbeatNanoseconds = self.now
      actions += memberNames.map { .heartbeat(node: $0) }
    }
    switch phase {
    case .steady:
      actions += considerFailover()
    case .electing(let election):
      if self.now >= election.deadlineNanoseconds { actions += resolve(election) }
    case .switchingOver(let switchover, let election):
      if let election, self.now >= election.deadlineNanoseconds {
        actions += resolve(election)
      } else if self.now >= switchover.deadlineNanoseconds {
        actions += abandon(switchover, because: "the target did not catch up in time")
      } else if !isReachable(switchover.from)
        && silence(of: switchover.from) >= configuration.failureTimeoutNanoseconds
      {
        actions += abandon(switchover, because: "\(switchover.from) stopped answering")
      }
    }
    return actions
  }

  /// A node answered a heartbeat.
  public mutating func report(from node: String, _ report: NodeReport, now: UInt64) -> [ControllerAction] {
    self.now = max(self.now, now)
    guard members[node] != nil else { return [] }
    members[node]?.report = report
    members[node]?.lastHeardNanoseconds = self.now
    members[node]?.isMarkedUnreachable = false
    highestSeenEpoch = max(highestSeenEpoch, report.promisedEpoch, report.epoch, report.lastEpochInLog)
    if let k = report.quorumFollowers { lowestReportedQuorum = min(lowestReportedQuorum ?? k, k) }
    switch phase {
    case .steady:
      return steer(node, report)
    case .electing:
      return []
    case .switchingOver(let switchover, let election):
      guard election == nil else { return [] }
      return considerSwitchoverPromotion(switchover)
    }
  }

  /// The answer to a `drain`: the node's report once it stopped writes and flushed everything.
  /// Only this sets the drained LSN: a heartbeat's report can be older than a `resume` that came
  /// before the drain (an abandoned switchover), show `draining` at an LSN the primary has since
  /// passed, and let the target be promoted without writes acknowledged in between (found by the
  /// simulation, seed 1539, with a hash seed that reordered its partitions).
  public mutating func drained(_ node: String, _ report: NodeReport, now: UInt64) -> [ControllerAction] {
    self.now = max(self.now, now)
    guard case .switchingOver(var switchover, nil) = phase, node == switchover.from,
      report.role == .draining, report.epoch == record.epoch
    else { return [] }
    switchover.drainedLSN = report.flushedLSN
    phase = .switchingOver(switchover, election: nil)
    return considerSwitchoverPromotion(switchover)
  }

  /// The shell could not reach the node (connection refused or timed out).
  public mutating func unreachable(_ node: String, now: UInt64) -> [ControllerAction] {
    self.now = max(self.now, now)
    guard members[node] != nil else { return [] }
    members[node]?.isMarkedUnreachable = true
    return updateElection { election in
      if election.asked.contains(node) && election.promises[node] == nil { election.unreachable.insert(node) }
    }
  }

  /// A node promised `epoch` (durably) and said how far its log goes.
  public mutating func promise(
    from node: String, epoch: Epoch, flushedLSN: LSN, lastLogEpoch: Epoch, now: UInt64
  ) -> [ControllerAction] {
    self.now = max(self.now, now)
    highestSeenEpoch = max(highestSeenEpoch, epoch, lastLogEpoch)
    return updateElection { election in
      guard election.epoch == epoch, election.asked.contains(node) else { return }
      election.promises[node] = Promise(flushedLSN: flushedLSN, lastLogEpoch: lastLogEpoch)
      election.unreachable.remove(node)
    }
  }

  /// A node refused to promise `epoch`: it has already promised `highestPromised`.
  public mutating func promiseRefused(
    from node: String, epoch: Epoch, highestPromised: Epoch, now: UInt64
  ) -> [ControllerAction] {
    self.now = max(self.now, now)
    highestSeenEpoch = max(highestSeenEpoch, highestPromised)
    return updateElection { election in
      guard election.epoch == epoch, election.asked.contains(node) else { return }
      election.refusals[node] = highestPromised
    }
  }

  /// The node became primary in `epoch`; its epoch-change record is at `lsn`.
  public mutating func promoted(_ node: String, epoch: Epoch, lsn: LSN, now: UInt64) -> [ControllerAction] {
    self.now = max(self.now, now)
    guard node == record.primary, epoch == record.epoch else { return [] }
    return [.status("\(node) is primary in epoch \(epoch) from LSN \(lsn)")]
  }

  // MARK: - Operator commands

  /// `memwal ctl switchover --to NODE`: drain the primary, wait for `target` to reach its
  /// flushed LSN, then promote `target` in a new epoch. Nothing acknowledged is lost.
  public mutating func switchover(to target: String, now: UInt64) throws(ControllerCommandError)
    -> [ControllerAction]
  {
    self.now = max(self.now, now)
    guard members[target] != nil else { throw .unknownMember(target) }
    guard let primary = record.primary else { throw .noPrimary }
    guard primary != target else { throw .alreadyPrimary(target) }
    guard case .steady = phase else { throw .busy(phaseDescription) }
    guard isReachable(primary) else { throw .unreachable(primary) }
    guard isReachable(target) else { throw .unreachable(target) }
    let switchover = Switchover(
      target: target, from: primary, drainedLSN: nil,
      deadlineNanoseconds: self.now + configuration.switchoverTimeoutNanoseconds)
    phase = .switchingOver(switchover, election: nil)
    return [
      .drain(node: primary, epoch: record.epoch),
      status("switchover from \(primary) to \(target): \(primary) stops taking writes"),
    ]
  }

  /// `memwal ctl promote NODE --force`: promote `node` in a new epoch without a quorum of
  /// promises. Writes that only other nodes hold may be lost; the status line says which LSNs.
  public mutating func forcePromote(_ node: String, now: UInt64) throws(ControllerCommandError)
    -> [ControllerAction]
  {
    self.now = max(self.now, now)
    guard members[node] != nil else { throw .unknownMember(node) }
    let epoch = highestSeenEpoch.next
    phase = .steady
    var actions = promote(node, epoch: epoch)
    let own = members[node]?.report
    let ahead = record.members.compactMap { member -> String? in
      guard member.name != node, let other = members[member.name]?.report else { return nil }
      let isAhead =
        own.map { (other.lastEpochInLog, other.flushedLSN) > ($0.lastEpochInLog, $0.flushedLSN) } ?? true
      return isAhead ? "\(member.name) (LSN \(other.flushedLSN), epoch \(other.lastEpochInLog))" : nil
    }
    let ownText = own.map { "LSN \($0.flushedLSN), epoch \($0.lastEpochInLog)" } ?? "no report"
    actions.append(
      status(
        "forced promotion of \(node) in epoch \(epoch) without a quorum of promises; \(node) has \(ownText)"
          + (ahead.isEmpty
            ? "; no reachable node reported more"
            : "; records these nodes hold beyond it may be lost: "
              + ahead.joined(separator: ", "))))
    return actions
  }

  /// `memwal ctl set-quorum K`: change k on purpose (it is never lowered silently). The record
  /// keeps the smallest k of the epoch, which later elections count promises against.
  public mutating func setQuorum(_ quorumFollowers: Int, now: UInt64) throws(ControllerCommandError)
    -> [ControllerAction]
  {
    self.now = max(self.now, now)
    let followers = record.members.count - 1
    guard quorumFollowers >= 0 && quorumFollowers <= followers else {
      throw .invalidQuorum(requested: quorumFollowers, followers: followers)
    }
    let old = record.quorumFollowers
    record.quorumFollowers = quorumFollowers
    record.quorumFloor = min(record.quorumFloor, quorumFollowers)
    var actions: [ControllerAction] = [.persist(record)]
    if let primary = record.primary {
      actions.append(.setQuorum(node: primary, quorumFollowers: quorumFollowers, epoch: record.epoch))
    }
    actions.append(
      status(
        "k changed from \(old) to \(quorumFollowers); a failover now needs \(requiredPromises) promises "
          + "(N − k + 1 with N = \(followerCount), k = \(record.quorumFloor) until the next epoch)"))
    return actions
  }

  // MARK: - Steady state

  /// Seconds of silence from a member, counting from the controller's start if never heard.
  private func silence(of name: String) -> UInt64 {
    now - (members[name]?.lastHeardNanoseconds ?? startedNanoseconds)
  }

  /// Keeps a reporting node in line with the record: the primary promoted, a drained primary
  /// resumed, the others following it. At most once per heartbeat interval per node.
  private mutating func steer(_ node: String, _ report: NodeReport) -> [ControllerAction] {
    guard let primary = record.primary, report.promisedEpoch <= record.epoch else { return [] }
    if let last = members[node]?.lastSteeredNanoseconds,
      now - last < configuration.heartbeatIntervalNanoseconds
    {
      return []
    }
    var action: ControllerAction?
    if node == primary {
      if report.role == .draining && report.epoch == record.epoch {
        action = .resume(node: node, epoch: record.epoch)
      } else if report.role != .primary || report.epoch != record.epoch {
        action = .promote(node: node, epoch: record.epoch)
      } else if let k = report.quorumFollowers, k != record.quorumFollowers {
        // A primary promoted or restarted with another k (its configuration's) gets the record's.
        action = .setQuorum(node: node, quorumFollowers: record.quorumFollowers, epoch: record.epoch)
      }
    } else if report.role != .follower || report.primary != primary || report.promisedEpoch < record.epoch {
      action = .follow(node: node, primary: primary, epoch: record.epoch)
    }
    guard let action else { return [] }
    members[node]?.lastSteeredNanoseconds = now
    return [action]
  }

  /// Starts an election when the primary is lost and the followers confirm it, or when some node
  /// has promised an epoch above the record's (an election that did not finish: the controller
  /// restarted, or too few promised), which fences the primary from those nodes.
  private mutating func considerFailover() -> [ControllerAction] {
    guard now >= nextElectionNanoseconds else { return [] }
    guard let primary = record.primary else {
      // An election nobody can answer would only use up epochs.
      guard memberNames.contains(where: isReachable) else { return [] }
      // Members get a failure timeout to report first: a primary already running (the
      // configuration's initial primary) is adopted rather than replaced by an election, and not
      // on the word of whoever answered first.
      let everyoneReported = memberNames.allSatisfy { members[$0]?.report != nil }
      guard everyoneReported || now - startedNanoseconds >= configuration.failureTimeoutNanoseconds else {
        return []
      }
      // Adopted only when as many members report as an election would need promises, none of
      // them showing an epoch above the candidate's.
      if let running = runningPrimary(), memberNames.filter(isReachable).count >= requiredPromises {
        return adopt(running.name, running.report)
      }
      return startElection(reason: "no primary yet", candidates: Set(memberNames))
    }
    let unfinished = record.members.contains {
      (members[$0.name]?.report?.promisedEpoch ?? .zero) > record.epoch
    }
    if unfinished {
      return startElection(
        reason: "an election above epoch \(record.epoch) did not finish", candidates: Set(memberNames))
    }
    guard silence(of: primary) >= configuration.failureTimeoutNanoseconds else { return [] }
    let followers = memberNames.filter { $0 != primary && isReachable($0) }
    let stillSeeing = followers.filter { members[$0]?.report?.seesPrimary ?? false }
    guard followers.isEmpty || !stillSeeing.isEmpty else {
      return startElection(reason: "\(primary) lost", candidates: Set(memberNames))
    }
    nextElectionNanoseconds = now + configuration.electionRetryNanoseconds
    let why =
      followers.isEmpty
      ? "no follower is reachable to confirm it"
      : "\(stillSeeing.joined(separator: ", ")) still see\(stillSeeing.count == 1 ? "s" : "") it"
    return [
      status("primary \(primary) silent for \(silence(of: primary) / 1_000_000) ms, but \(why): no failover")
    ]
  }

  /// With no primary on record: the one reachable member running as primary (or restarted and
  /// waiting to resume as one) in the highest epoch anyone has shown, if exactly one does.
  private func runningPrimary() -> (name: String, report: NodeReport)? {
    let running = memberNames.compactMap { name -> (name: String, report: NodeReport)? in
      guard isReachable(name), let report = members[name]?.report,
        report.role == .primary || report.role == .draining
      else { return nil }
      return (name, report)
    }
    guard running.count == 1, let only = running.first, only.report.epoch >= highestSeenEpoch,
      only.report.epoch > record.epoch
    else { return nil }
    return only
  }

  /// Records a primary that is already running, in its own epoch: nothing is promoted and no epoch
  /// is used up. The floor is the lower of its k and the configured one (its acknowledgements
  /// counted its k); steering then gives it the configured k and points the others at it.
  private mutating func adopt(_ node: String, _ report: NodeReport) -> [ControllerAction] {
    record.epoch = report.epoch
    record.primary = node
    record.quorumFloor = min(record.quorumFollowers, report.quorumFollowers ?? record.quorumFollowers)
    for name in memberNames { members[name]?.lastSteeredNanoseconds = nil }
    return [
      .persist(record),
      status("\(node) already runs as primary in epoch \(report.epoch): adopted without an election"),
    ]
  }

  // MARK: - Elections

  private mutating func startElection(reason: String, candidates: Set<String>) -> [ControllerAction] {
    let epoch = max(highestSeenEpoch, record.epoch).next
    highestSeenEpoch = epoch
    let election = Election(
      epoch: epoch, reason: reason, asked: memberNames, candidates: candidates,
      deadlineNanoseconds: now + configuration.promiseTimeoutNanoseconds)
    phase = .electing(election)
    return [status("\(reason): asking every member to promise epoch \(epoch)")]
      + memberNames.map { .requestPromise(node: $0, epoch: epoch) }
  }

  /// Applies `change` to the running election, then resolves it if every node asked has answered.
  private mutating func updateElection(_ change: (inout Election) -> Void) -> [ControllerAction] {
    switch phase {
    case .steady:
      return []
    case .electing(var election):
      change(&election)
      phase = .electing(election)
      return isComplete(election) ? resolve(election) : []
    case .switchingOver(let switchover, let running):
      guard var election = running else { return [] }
      change(&election)
      phase = .switchingOver(switchover, election: election)
      if !election.refusals.isEmpty && election.promises.isEmpty {
        // The target promised a later epoch to an election that did not finish: ask again, higher.
        return askTarget(of: switchover)
      }
      return isComplete(election) ? resolve(election) : []
    }
  }

  private func isComplete(_ election: Election) -> Bool {
    election.asked.allSatisfy {
      election.promises[$0] != nil || election.refusals[$0] != nil || election.unreachable.contains($0)
    }
  }

  /// The most advanced promiser: highest (last epoch in log, flushed LSN), then priority, then name.
  private func best(of election: Election) -> String? {
    election.promises.filter { election.candidates.contains($0.key) }.max { left, right in
      let l = (left.value.lastLogEpoch, left.value.flushedLSN.rawValue, priority(of: left.key))
      let r = (right.value.lastLogEpoch, right.value.flushedLSN.rawValue, priority(of: right.key))
      if l != r { return l < r }
      return left.key > right.key
    }?.key
  }

  /// Promotes the best promiser if the promises suffice; otherwise says why and retries later.
  private mutating func resolve(_ election: Election) -> [ControllerAction] {
    let primary = record.primary
    let followerPromises = election.promises.keys.filter { $0 != primary }.sorted()
    let primaryPromised = primary.map { election.promises[$0] != nil } ?? false
    var isSwitchover = false
    if case .switchingOver(let switchover, _) = phase, let drained = switchover.drainedLSN,
      let promise = election.promises[switchover.target], promise.flushedLSN >= drained
    {
      isSwitchover = true
    }
    // The old primary holds every write it acknowledged; a caught-up switchover target holds
    // everything the drained primary flushed. Otherwise N − k + 1 follower promises are needed.
    let isEnough = isSwitchover || primaryPromised || followerPromises.count >= requiredPromises
    guard isEnough, let winner = best(of: election) else {
      phase = .steady
      nextElectionNanoseconds = now + configuration.electionRetryNanoseconds
      return [status(refusalText(election, followerPromises: followerPromises))]
    }
    phase = .steady
    let promisers = election.promises.keys.sorted().joined(separator: ", ")
    let promise = election.promises[winner]!
    return promote(winner, epoch: election.epoch)
      + [
        status(
          "\(election.reason): promoting \(winner) in epoch \(election.epoch) (flushed LSN \(promise.flushedLSN), "
            + "last epoch \(promise.lastLogEpoch)); promises from \(promisers)")
      ]
  }

  private func refusalText(_ election: Election, followerPromises: [String]) -> String {
    let rule =
      record.primary == nil
      ? "M − k = \(record.members.count) − \(record.members.count - requiredPromises), no primary on record"
      : "N − k + 1 = \(followerCount) − \(record.quorumFloor) + 1"
    var parts = [
      "\(election.reason): no promotion in epoch \(election.epoch): \(requiredPromises) promises needed "
        + "(\(rule)), \(followerPromises.count) received"
        + (followerPromises.isEmpty ? "" : " (\(followerPromises.joined(separator: ", ")))")
    ]
    let refused = election.refusals.sorted { $0.key < $1.key }.map { "\($0.key) (promised \($0.value))" }
    if !refused.isEmpty { parts.append("refused: " + refused.joined(separator: ", ")) }
    let silent = election.asked.filter { election.promises[$0] == nil && election.refusals[$0] == nil }
    if !silent.isEmpty { parts.append("no answer: " + silent.joined(separator: ", ")) }
    parts.append("retrying in \(configuration.electionRetryNanoseconds / 1_000_000) ms")
    return parts.joined(separator: "; ")
  }

  /// Persist the new record, then promote, then point every other member at the new primary.
  private mutating func promote(_ node: String, epoch: Epoch) -> [ControllerAction] {
    precondition(epoch > record.epoch, "a promotion needs a new epoch")
    record.epoch = epoch
    record.primary = node
    record.quorumFloor = record.quorumFollowers
    highestSeenEpoch = max(highestSeenEpoch, epoch)
    for name in memberNames { members[name]?.lastSteeredNanoseconds = now }
    return [.persist(record), .promote(node: node, epoch: epoch)]
      + memberNames.filter { $0 != node }.map { .follow(node: $0, primary: node, epoch: epoch) }
  }

  // MARK: - Switchover

  private mutating func considerSwitchoverPromotion(_ switchover: Switchover) -> [ControllerAction] {
    guard let drained = switchover.drainedLSN, let target = members[switchover.target]?.report,
      target.flushedLSN >= drained, target.lastEpochInLog == record.epoch || drained == .zero
    else { return [] }
    return askTarget(of: switchover)
  }

  private mutating func askTarget(of switchover: Switchover) -> [ControllerAction] {
    let epoch = max(highestSeenEpoch, record.epoch).next
    highestSeenEpoch = epoch
    let election = Election(
      epoch: epoch, reason: "switchover to \(switchover.target)", asked: [switchover.target],
      candidates: [switchover.target], deadlineNanoseconds: now + configuration.promiseTimeoutNanoseconds)
    phase = .switchingOver(switchover, election: election)
    return [.requestPromise(node: switchover.target, epoch: epoch)]
  }

  private mutating func abandon(_ switchover: Switchover, because reason: String) -> [ControllerAction] {
    phase = .steady
    let target = members[switchover.target]?.report?.flushedLSN ?? .zero
    let drained = switchover.drainedLSN.map { "LSN \($0)" } ?? "no drain report"
    let next =
      isReachable(switchover.from)
      ? "\(switchover.from) takes writes again"
      : "\(switchover.from) is not answering: it is told to take writes again if it does, and a failover "
        + "follows if it stays silent"
    return [
      .resume(node: switchover.from, epoch: record.epoch),
      status(
        "switchover to \(switchover.target) abandoned: \(reason) (target at LSN \(target), "
          + "\(switchover.from) drained at \(drained)); \(next)"),
    ]
  }

  // MARK: - Status

  private var phaseDescription: String {
    switch phase {
    case .steady: return "steady"
    case .electing(let election): return "election for epoch \(election.epoch) (\(election.reason))"
    case .switchingOver(let switchover, _): return "switchover to \(switchover.target)"
    }
  }

  private mutating func status(_ message: String) -> ControllerAction {
    lastStatus = message
    return .status(message)
  }
}
