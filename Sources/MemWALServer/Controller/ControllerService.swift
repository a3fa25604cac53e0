import Logging
import MemWALCluster
import MemWALCore
import MemWALLog
import NIOCore
import NIOPosix
import Synchronization

/// The failover controller process's shell (DESIGN §6, docs/failover.md "Running the controller"):
/// it runs `FailoverController` (the pure state machine) on one task, feeding it ticks of the
/// monotonic clock, the nodes' replies and the operator's commands, and carries out the actions it
/// returns, in order.
///
/// - Durable state: the record is loaded from `<state_directory>/controller-state.json` at start
///   (``ControllerStateFile``); a `persist` action is written durably (on NIO's blocking-I/O pool)
///   before any later action of the same call is carried out. A failed write halts the controller:
///   it sends nothing more, since the nodes would be told of a record that a restart would not know.
/// - Links: one peer-TLS connection per member to its control address, reconnected with a capped
///   backoff. Requests carry fresh ids and replies are matched by id; a request unanswered after
///   ``ControllerSettings/requestTimeout``, a failed connect and a lost connection are reported
///   to the state machine as `unreachable`.
/// - Everything that touches the state machine or the links happens on the event task, one event
///   at a time; ``snapshot()`` and the commands are events too, so they see a consistent state.
public final class ControllerService: @unchecked Sendable {
  public let settings: ControllerSettings
  public let stateFile: ControllerStateFile
  let tls: PeerTLS
  let group: any EventLoopGroup
  let logger: Logger
  private let events = ControllerEventQueue()
  private let tasks = Mutex<[Task<Void, Never>]>([])
  private let haltSignal: (stream: AsyncStream<String>, continuation: AsyncStream<String>.Continuation)
  private let isStopRequested = Mutex(false)

  // Owned by the event task.
  private var machine: FailoverController
  private var links: [String: Link] = [:]
  private var owners: [ConnectionID: String] = [:]
  private var nextRequestID: UInt64 = 1
  private var nextConnectionID: UInt64 = 1
  private var statusLines: [ControllerSnapshot.StatusLine] = []
  private var statusSequence = 0
  private var lastStatusLogNanoseconds: UInt64 = 0
  private var haltReason: String?
  private var isStopping = false
  private var now: UInt64

  /// At most this many requests wait for an answer on one link (normally a handful: heartbeats
  /// time out after half the failure timeout).
  static let maximumPendingRequests = 256

  private init(
    settings: ControllerSettings, record: ControllerRecord?, stateFile: ControllerStateFile, tls: PeerTLS,
    group: any EventLoopGroup, logger: Logger
  ) {
    self.settings = settings
    self.stateFile = stateFile
    self.tls = tls
    self.group = group
    self.logger = logger
    haltSignal = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(1))
    now = monotonicNanoseconds()
    machine = FailoverController(configuration: settings.machineConfiguration, record: record, now: now)
    for member in settings.members {
      let (host, port) = splitHostPort(member.control)!
      links[member.name] = Link(
        host: host, port: port, backoffNanoseconds: settings.initialBackoff.nanoseconds)
    }
  }

  /// Loads the durable record and starts the event task, the ticker and a connection to every
  /// member. Throws ``ControllerStateError`` for a state file it cannot use (naming it), and
  /// `ConfigurationError` for settings it cannot run with.
  public static func start(
    settings: ControllerSettings, tls: PeerTLS,
    group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
    fileSystem: any FileSystem = POSIXFileSystem(), logger: Logger
  ) async throws -> ControllerService {
    try settings.validate()
    let stateFile = ControllerStateFile(directory: settings.stateDirectory, fileSystem: fileSystem)
    var record = try await NIOThreadPool.singleton.runIfActive { try stateFile.load() }
    if var persisted = record {
      let persistedNames = persisted.members.map(\.name).sorted()
      let configuredNames = settings.members.map(\.name)
      guard persistedNames == configuredNames else {
        throw ControllerStateError.unusable(
          path: stateFile.path,
          reason:
            "it lists the members \(persistedNames.joined(separator: ", ")) but the configuration has "
            + "\(configuredNames.joined(separator: ", ")); changing the membership is not supported")
      }
      // Priorities only break ties; the configuration's are the ones in force.
      persisted.members = settings.members.map { ClusterMember(name: $0.name, priority: $0.priority) }
      record = persisted
    }
    let service = ControllerService(
      settings: settings, record: record, stateFile: stateFile, tls: tls, group: group, logger: logger)
    if let record {
      logger.info(
        "controller: starting from the persisted record",
        metadata: [
          "epoch": "\(record.epoch)", "primary": "\(record.primary ?? "none")",
          "quorum": "\(record.quorumFollowers)",
          "state": "\(stateFile.path)",
        ])
      if record.quorumFollowers != settings.quorumFollowers {
        logger.info(
          "controller: k is \(record.quorumFollowers) as last set (the configuration says \(settings.quorumFollowers))"
        )
      }
    } else {
      logger.info("controller: first start, no record yet", metadata: ["state": "\(stateFile.path)"])
    }
    service.run()
    return service
  }

  private func run() {
    let consumer = Task { [self] in
      for await event in events.stream { await handle(event) }
    }
    let ticker = Task { [events, settings] in
      while !Task.isCancelled {
        try? await Task.sleep(for: settings.tickInterval)
        _ = events.post(.tick)
      }
    }
    tasks.withLock { $0 = [consumer, ticker] }
    _ = events.post(.connectAll)
  }

  /// Stops the ticker and the event task, closes every connection, and fails the commands still
  /// waiting. Idempotent.
  public func stop() async {
    let isFirst = isStopRequested.withLock { stopped in
      defer { stopped = true }
      return !stopped
    }
    let tasks = self.tasks.withLock { $0 }
    if isFirst {
      tasks.last?.cancel()
      _ = events.post(.stop)
      events.finish()
      haltSignal.continuation.finish()
    }
    await tasks.first?.value
  }

  /// Returns the reason once the controller halts (its state file could not be written); nil when
  /// it is stopped, or the calling task is cancelled, first.
  public func untilHalted() async -> String? {
    for await reason in haltSignal.stream { return reason }
    return nil
  }

  // MARK: queries and commands

  /// What the controller knows now.
  public func snapshot() async throws -> ControllerSnapshot {
    try await onEventTask(allowWhenHalted: true) { $0.makeSnapshot() }
  }

  /// `memwal ctl switchover --to NODE`: starts draining the primary; the switchover finishes (or is
  /// abandoned) later, as the status lines say.
  public func switchover(to target: String) async throws -> SwitchoverStarted {
    try await onEventTask { service in
      let epoch = service.machine.record.epoch
      let actions = try service.machine.switchover(to: target, now: service.tick())
      await service.carryOut(actions)
      return SwitchoverStarted(from: service.machine.record.primary ?? "", to: target, epoch: epoch)
    }
  }

  /// `memwal ctl promote NODE --force`: promotes `node` in a new epoch without promises. Returns
  /// once the new record is durable; the status line says what may be lost.
  public func forcePromote(_ node: String) async throws -> ForcedPromotion {
    try await onEventTask { service in
      let actions = try service.machine.forcePromote(node, now: service.tick())
      await service.carryOut(actions)
      try service.checkNotHalted()
      return ForcedPromotion(
        node: node, epoch: service.machine.record.epoch, status: Self.lastStatusLine(in: actions) ?? "")
    }
  }

  /// `memwal ctl set-quorum K`. Returns once the new k is durable.
  public func setQuorum(_ quorumFollowers: Int) async throws -> QuorumChange {
    try await onEventTask { service in
      let previous = service.machine.record.quorumFollowers
      let actions = try service.machine.setQuorum(quorumFollowers, now: service.tick())
      await service.carryOut(actions)
      try service.checkNotHalted()
      return QuorumChange(
        previous: previous, quorum: service.machine.record.quorumFollowers,
        floor: service.machine.record.quorumFloor, status: Self.lastStatusLine(in: actions) ?? "")
    }
  }

  /// Runs `body` on the event task, after the events already queued.
  private func onEventTask<T: Sendable>(
    allowWhenHalted: Bool = false, _ body: @escaping @Sendable (ControllerService) async throws -> T
  ) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
      let posted = events.post(
        .command { service in
          if service.isStopping {
            continuation.resume(throwing: ControllerUnavailableError.stopped)
            return
          }
          if !allowWhenHalted, let reason = service.haltReason {
            continuation.resume(throwing: ControllerUnavailableError.halted(reason))
            return
          }
          do {
            continuation.resume(returning: try await body(service))
          } catch {
            continuation.resume(throwing: error)
          }
        })
      if !posted { continuation.resume(throwing: ControllerUnavailableError.stopped) }
    }
  }

  private func checkNotHalted() throws {
    if let haltReason { throw ControllerUnavailableError.halted(haltReason) }
  }

  private static func lastStatusLine(in actions: [ControllerAction]) -> String? {
    actions.reversed().lazy.compactMap { action -> String? in
      if case .status(let line) = action { return line }
      return nil
    }.first
  }

  // MARK: events

  enum Event: Sendable {
    case tick
    case connectAll
    case connected(ConnectionID, any Channel)
    case connectFailed(ConnectionID, String)
    case connection(ConnectionEvent)
    /// A request could not even be sent (the link is down and waiting to reconnect).
    case requestFailed(member: String)
    case command(@Sendable (ControllerService) async -> Void)
    case stop
  }

  private func handle(_ event: Event) async {
    if case .command(let body) = event {
      await body(self)
      return
    }
    if case .stop = event {
      shutDown()
      return
    }
    guard haltReason == nil, !isStopping else {
      if case .connected(_, let channel) = event { channel.close(promise: nil) }
      return
    }
    switch event {
    case .tick:
      await onTick()
    case .connectAll:
      for member in settings.members { connect(member.name) }
    case .connected(let id, let channel):
      guard let name = owners[id] else {
        channel.close(promise: nil)
        return
      }
      links[name]?.channel = channel
      // The handshake finished first (found by `memwal bench failover`: the link then never
      // counted as verified, no request left, and the member stayed unreachable for good).
      if links[name]?.isHandshakeDone == true { linkVerified(id) }
    case .connectFailed(let id, let reason):
      await linkLost(id, reason: "cannot connect: \(reason)")
    case .connection(.verified(let id, _)):
      linkVerified(id)
    case .connection(.message(let id, let message)):
      await received(message, on: id)
    case .connection(.malformed(let id, let error)):
      logger.warning(
        "controller: malformed frame from \(owners[id] ?? "a closed link")", metadata: ["error": "\(error)"])
    case .connection(.closed(let id)):
      await linkLost(id, reason: "the connection closed")
    case .requestFailed(let name):
      await carryOut(machine.unreachable(name, now: tick()))
    case .command, .stop:
      break
    }
  }

  /// Advances the clock the state machine sees.
  private func tick() -> UInt64 {
    now = max(now, monotonicNanoseconds())
    return now
  }

  private func onTick() async {
    let now = tick()
    var timedOut: [String] = []
    for name in links.keys.sorted() {
      guard var link = links[name] else { continue }
      if link.connection == nil && now >= link.retryAtNanoseconds { connect(name) }
      link = links[name]!
      let expired = link.pending.filter { $0.value.deadlineNanoseconds <= now }
      guard !expired.isEmpty else { continue }
      for id in expired.keys { link.pending[id] = nil }
      link.waiting.removeAll { expired[$0] != nil }
      links[name] = link
      timedOut.append(name)
      logger.debug(
        "controller: \(name) did not answer in time",
        metadata: ["requests": "\(expired.values.map(\.request.name).sorted().joined(separator: ","))"])
    }
    for name in timedOut { await carryOut(machine.unreachable(name, now: now)) }
    await carryOut(machine.tick(now: now))
  }

  // MARK: links

  struct PendingRequest {
    var request: ControlRequest
    var deadlineNanoseconds: UInt64
  }

  /// One member's control connection, as the event task sees it.
  struct Link {
    var host: String
    var port: Int
    /// The connection being made or in use; nil while waiting to reconnect.
    var connection: ConnectionID?
    var channel: (any Channel)?
    var isVerified = false
    /// The handshake's `verified` came before `connected` recorded the channel.
    var isHandshakeDone = false
    var retryAtNanoseconds: UInt64 = 0
    var backoffNanoseconds: UInt64
    /// Sent, or waiting for the handshake, by request id.
    var pending: [UInt64: PendingRequest] = [:]
    /// Ids not yet sent, in order.
    var waiting: [UInt64] = []
    /// Whether the loss of the link was logged (so a node that stays down is logged once).
    var isLossLogged = false
  }

  private func connect(_ name: String) {
    guard var link = links[name], link.connection == nil else { return }
    let id = ConnectionID(nextConnectionID)
    nextConnectionID += 1
    link.connection = id
    links[name] = link
    owners[id] = name
    let events = self.events
    let bootstrap = tls.makeClientBootstrap(group: group, connectingTo: name) { channel in
      let handler = ReplicationConnectionHandler(id: id) { _ = events.post(.connection($0)) }
      return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
    }.connectTimeout(.nanoseconds(Int64(settings.failureTimeout.nanoseconds)))
    // `connected` comes from `connect`'s completion (the channel that won, whatever addresses were
    // tried) and may arrive after the handshake's `verified`: `linkVerified` and this event each
    // finish the link when the other has come.
    bootstrap.connect(host: link.host, port: link.port).whenComplete { result in
      switch result {
      case .success(let channel):
        if !events.post(.connected(id, channel)) { channel.close(promise: nil) }
      case .failure(let error):
        _ = events.post(.connectFailed(id, "\(error)"))
      }
    }
  }

  private func linkVerified(_ id: ConnectionID) {
    guard let name = owners[id], var link = links[name], link.connection == id else { return }
    link.isHandshakeDone = true
    guard let channel = link.channel else {
      links[name] = link
      return
    }
    link.isVerified = true
    link.backoffNanoseconds = settings.initialBackoff.nanoseconds
    if link.isLossLogged {
      logger.info("controller: \(name) reachable again")
      link.isLossLogged = false
    }
    for requestID in link.waiting {
      if let pending = link.pending[requestID] { channel.send(.control(id: requestID, pending.request)) }
    }
    link.waiting.removeAll()
    links[name] = link
  }

  /// A connection failed or closed: forget its requests, schedule a reconnection, and tell the
  /// state machine the member is unreachable.
  private func linkLost(_ id: ConnectionID, reason: String) async {
    guard let name = owners.removeValue(forKey: id), var link = links[name], link.connection == id else {
      return
    }
    link.channel?.close(promise: nil)
    link.connection = nil
    link.channel = nil
    link.isVerified = false
    link.isHandshakeDone = false
    link.pending.removeAll()
    link.waiting.removeAll()
    let now = tick()
    link.retryAtNanoseconds = now + link.backoffNanoseconds
    link.backoffNanoseconds = min(link.backoffNanoseconds * 2, settings.maximumBackoff.nanoseconds)
    if !link.isLossLogged {
      logger.warning("controller: \(name) unreachable", metadata: ["reason": "\(reason)"])
      link.isLossLogged = true
    } else {
      logger.debug("controller: \(name) still unreachable", metadata: ["reason": "\(reason)"])
    }
    links[name] = link
    await carryOut(machine.unreachable(name, now: now))
  }

  /// Sends `request` to `name`, or queues it until the link's handshake is done. A link waiting to
  /// reconnect fails the request at once (reported as `unreachable` after this batch).
  private func send(_ request: ControlRequest, to name: String) {
    guard var link = links[name] else { return }
    if link.connection == nil {
      guard now >= link.retryAtNanoseconds else {
        _ = events.post(.requestFailed(member: name))
        return
      }
      connect(name)
      link = links[name]!
    }
    guard link.pending.count < Self.maximumPendingRequests else {
      _ = events.post(.requestFailed(member: name))
      return
    }
    let id = nextRequestID
    nextRequestID += 1
    link.pending[id] = PendingRequest(
      request: request, deadlineNanoseconds: now + settings.requestTimeout.nanoseconds)
    if link.isVerified, let channel = link.channel {
      channel.send(.control(id: id, request))
    } else {
      link.waiting.append(id)
    }
    links[name] = link
  }

  private func received(_ message: ReplicationMessage, on id: ConnectionID) async {
    guard let name = owners[id] else { return }
    guard case .controlReply(let requestID, let reply) = message else {
      logger.warning("controller: \(name) sent \(message.name) on its control link; closing it")
      links[name]?.channel?.close(promise: nil)
      return
    }
    guard let pending = links[name]?.pending.removeValue(forKey: requestID) else {
      logger.debug("controller: a late reply from \(name)", metadata: ["reply": "\(reply.name)"])
      return
    }
    await carryOut(answer(pending.request, reply, from: name, now: tick()))
  }

  /// Feeds a node's reply to the state machine.
  private func answer(_ request: ControlRequest, _ reply: ControlReply, from name: String, now: UInt64)
    -> [ControllerAction]
  {
    switch (request, reply) {
    case (.heartbeat, .report(let report)):
      return machine.report(from: name, report, now: now)
    case (.promise, .promised(let epoch, let flushed, let lastEpoch)):
      logger.info(
        "controller: \(name) promised epoch \(epoch)",
        metadata: ["flushed_lsn": "\(flushed)", "last_log_epoch": "\(lastEpoch)"])
      return machine.promise(from: name, epoch: epoch, flushedLSN: flushed, lastLogEpoch: lastEpoch, now: now)
    case (.promise(let epoch), .refused(let promised, let message)):
      logger.info(
        "controller: \(name) refused to promise epoch \(epoch)",
        metadata: ["promised_epoch": "\(promised)", "reason": "\(message)"])
      return machine.promiseRefused(from: name, epoch: epoch, highestPromised: promised, now: now)
    case (.promise(let epoch), .failed(let message)):
      logger.warning(
        "controller: \(name) could not promise epoch \(epoch)", metadata: ["reason": "\(message)"])
      return machine.unreachable(name, now: now)
    case (.promote, .promoted(let epoch, let lsn)):
      return machine.promoted(name, epoch: epoch, lsn: lsn, now: now)
    case (.drain, .report(let report)):
      return machine.drained(name, report, now: now)
    case (_, .done):
      logger.debug("controller: \(name) did \(request.name)")
      return []
    case (_, .refused(let promised, let message)):
      logger.warning(
        "controller: \(name) refused \(request.name)",
        metadata: ["promised_epoch": "\(promised)", "reason": "\(message)"])
      return []
    case (_, .failed(let message)):
      logger.warning("controller: \(name) failed \(request.name)", metadata: ["reason": "\(message)"])
      return []
    default:
      logger.warning("controller: \(name) answered \(request.name) with \(reply.name)")
      return []
    }
  }

  // MARK: actions

  /// Carries out `actions` in order; a `persist` is durable before the next action is carried out.
  private func carryOut(_ actions: [ControllerAction]) async {
    for action in actions {
      guard haltReason == nil else { return }
      switch action {
      case .heartbeat(let node):
        send(.heartbeat, to: node)
      case .requestPromise(let node, let epoch):
        send(.promise(epoch: epoch), to: node)
      case .promote(let node, let epoch):
        logger.info("controller: telling \(node) to become primary in epoch \(epoch)")
        send(.promote(epoch: epoch), to: node)
      case .follow(let node, let primary, let epoch):
        logger.info("controller: telling \(node) to follow \(primary) in epoch \(epoch)")
        send(.follow(primary: primary, epoch: epoch), to: node)
      case .drain(let node, let epoch):
        logger.info("controller: telling \(node) to drain in epoch \(epoch)")
        send(.drain(epoch: epoch), to: node)
      case .resume(let node, let epoch):
        logger.info("controller: telling \(node) to resume in epoch \(epoch)")
        send(.resume(epoch: epoch), to: node)
      case .setQuorum(let node, let k, let epoch):
        logger.info("controller: telling \(node) that k is \(k) in epoch \(epoch)")
        send(.setQuorum(quorumFollowers: k, epoch: epoch), to: node)
      case .persist(let record):
        await persist(record)
      case .status(let line):
        addStatusLine(line)
      }
    }
  }

  /// Writes the record durably, off the cooperative pool; a failure halts the controller.
  private func persist(_ record: ControllerRecord) async {
    let stateFile = self.stateFile
    let started = monotonicNanoseconds()
    do {
      try await NIOThreadPool.singleton.runIfActive { try stateFile.write(record) }
      logger.debug(
        "controller: record persisted",
        metadata: [
          "epoch": "\(record.epoch)", "primary": "\(record.primary ?? "none")",
          "ms": "\(Double(monotonicNanoseconds() - started) / 1e6)",
        ])
    } catch {
      halt("cannot persist the controller's record, so it sends nothing more: \(error)")
    }
  }

  private func halt(_ reason: String) {
    guard haltReason == nil else { return }
    haltReason = reason
    logger.critical("controller: halted: \(reason)")
    addStatusLine("halted: \(reason)")
    closeLinks()
    haltSignal.continuation.yield(reason)
  }

  private func shutDown() {
    isStopping = true
    closeLinks()
  }

  private func closeLinks() {
    for (name, link) in links {
      link.channel?.close(promise: nil)
      links[name]?.channel = nil
      links[name]?.connection = nil
      links[name]?.pending.removeAll()
      links[name]?.waiting.removeAll()
      links[name]?.retryAtNanoseconds = .max
    }
    owners.removeAll()
  }

  /// Keeps a status line for the API and logs it at info. A line that only repeats the one before
  /// it in other numbers (a retried election, a primary still silent) replaces it, counted in
  /// `repeats`, and is logged at info once per ``statusRepeatLogInterval`` (else at debug), so a
  /// cluster that stays down neither floods the log nor pushes the history out.
  private func addStatusLine(_ line: String) {
    let now = monotonicNanoseconds()
    let at = SystemClock().microsecondsSinceEpoch()
    statusSequence += 1
    let shape = Self.shape(of: line)
    if var last = statusLines.last, Self.shape(of: last.text) == shape {
      last.sequence = statusSequence
      last.atMicroseconds = at
      last.text = line
      last.repeats += 1
      statusLines[statusLines.count - 1] = last
      if now - lastStatusLogNanoseconds >= Self.statusRepeatLogInterval.nanoseconds {
        lastStatusLogNanoseconds = now
        logger.info("controller: \(line) (\(last.repeats + 1) times)")
      } else {
        logger.debug("controller: \(line)")
      }
      return
    }
    lastStatusLogNanoseconds = now
    logger.info("controller: \(line)")
    statusLines.append(
      ControllerSnapshot.StatusLine(sequence: statusSequence, atMicroseconds: at, text: line, repeats: 0))
    if statusLines.count > settings.statusLinesKept {
      statusLines.removeFirst(statusLines.count - settings.statusLinesKept)
    }
  }

  static let statusRepeatLogInterval = Duration.seconds(10)

  /// The line with every run of digits as "#".
  static func shape(of line: String) -> String {
    var shape = ""
    var isInNumber = false
    for character in line {
      if character.isASCII && character.isNumber {
        if !isInNumber { shape.append("#") }
        isInNumber = true
      } else {
        shape.append(character)
        isInNumber = false
      }
    }
    return shape
  }

  // MARK: snapshot

  private func makeSnapshot() -> ControllerSnapshot {
    let phase: String
    var detail: String
    switch machine.phase {
    case .steady:
      (phase, detail) = ("steady", "steady")
    case .electing(let election):
      (phase, detail) = ("electing", "election for epoch \(election.epoch) (\(election.reason))")
    case .switchingOver(let switchover, let election):
      phase = "switching_over"
      detail = "switchover from \(switchover.from) to \(switchover.target)"
      if let drained = switchover.drainedLSN { detail += ", \(switchover.from) drained at LSN \(drained)" }
      if let election { detail += ", \(switchover.target) asked to promise epoch \(election.epoch)" }
    }
    let members = settings.members.map { member in
      ControllerSnapshot.MemberState(
        member: member, isReachable: machine.isReachable(member.name),
        report: machine.members[member.name]?.report)
    }
    return ControllerSnapshot(
      settings: settings, record: machine.record, phase: haltReason == nil ? phase : "halted",
      phaseDetail: haltReason ?? detail, lastStatus: machine.lastStatus, statusLines: statusLines,
      members: members, haltReason: haltReason)
  }
}

/// What the controller knows at one moment, for its HTTP API.
public struct ControllerSnapshot: Sendable {
  public struct StatusLine: Sendable, Equatable {
    /// 1, 2, 3 … in the order the lines were made (a repeated line takes the newest number).
    public var sequence: Int
    public var atMicroseconds: Int64
    public var text: String
    /// How many times the line came again, in other numbers only, right after itself; `text` and
    /// `atMicroseconds` are the last time's.
    public var repeats: Int
  }

  public struct MemberState: Sendable {
    public var member: ControllerSettings.Member
    public var isReachable: Bool
    /// Its last report, if it ever answered a heartbeat.
    public var report: NodeReport?
  }

  public var settings: ControllerSettings
  public var record: ControllerRecord
  /// `steady`, `electing`, `switching_over`, or `halted`.
  public var phase: String
  public var phaseDetail: String
  /// The state machine's last status line.
  public var lastStatus: String
  /// The last status lines, oldest first.
  public var statusLines: [StatusLine]
  public var members: [MemberState]
  public var haltReason: String?
}

/// A switchover the controller has started.
public struct SwitchoverStarted: Sendable, Equatable {
  public var from: String
  public var to: String
  /// The epoch of the primary being switched from; the target is promoted in a higher one.
  public var epoch: Epoch
}

/// A forced promotion, durable.
public struct ForcedPromotion: Sendable, Equatable {
  public var node: String
  public var epoch: Epoch
  /// The status line that says what may be lost.
  public var status: String
}

/// A change of k, durable.
public struct QuorumChange: Sendable, Equatable {
  public var previous: Int
  public var quorum: Int
  public var floor: Int
  public var status: String
}

/// The controller cannot take commands.
public enum ControllerUnavailableError: Error, Equatable, Sendable, CustomStringConvertible {
  case stopped
  case halted(String)

  public var description: String {
    switch self {
    case .stopped: return "the controller is stopping"
    case .halted(let reason): return "the controller halted: \(reason)"
    }
  }
}

/// The event task's inbox: many producers (event loops, the ticker, API handlers), one consumer.
final class ControllerEventQueue: Sendable {
  private let continuation: AsyncStream<ControllerService.Event>.Continuation
  let stream: AsyncStream<ControllerService.Event>

  init() {
    (stream, continuation) = AsyncStream.makeStream(
      of: ControllerService.Event.self, bufferingPolicy: .unbounded)
  }

  /// False once the queue is finished: the event will never be handled.
  func post(_ event: ControllerService.Event) -> Bool {
    if case .enqueued = continuation.yield(event) { return true }
    return false
  }

  func finish() { continuation.finish() }
}
