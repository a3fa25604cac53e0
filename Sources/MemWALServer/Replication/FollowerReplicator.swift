import Logging
import MemWALCluster
import MemWALCore
import MemWALLog
import MemWALNode
import NIOCore
import NIOPosix
import Synchronization

/// The engine a node serves, replaceable: a follower that cuts a divergent tail or installs a
/// checkpoint from the primary closes its engine, changes its log on disk, and opens a new one.
public final class EngineHost: Sendable {
  private let current: Mutex<MemoryEngine>
  public init(_ engine: MemoryEngine) { current = Mutex(engine) }
  public var engine: MemoryEngine { current.withLock { $0 } }
  func replace(with engine: MemoryEngine) { current.withLock { $0 = engine } }
}

/// The follower's side of replication over NIO with peer TLS: it runs `FollowerReplication` (the
/// pure state machine) on one task, connects to the primary, appends what it receives to the local
/// log (which fsyncs it, group-committed; the applier follows as on any node), reports its written,
/// flushed and applied LSNs, and carries out divergence cuts and checkpoint installs by reopening
/// the engine.
public final class FollowerReplicator: @unchecked Sendable {
  public struct Settings: Sendable {
    public var clusterID: ClusterID
    public var nodeName: String
    /// Replication address ("HOST:PORT") of every member, by name.
    public var replicationAddresses: [String: String]
    /// Client API URL of every member, by name (for redirects).
    public var apiURLs: [String: String]
    /// The primary to follow; nil until the controller names one.
    public var primary: String?
    /// The epoch this node has promised to the controller (frames from lower epochs are refused);
    /// nil: the log's current epoch.
    public var promisedEpoch: Epoch?
    public var timings = ReplicationTimings()

    public init(
      clusterID: ClusterID, nodeName: String, replicationAddresses: [String: String],
      apiURLs: [String: String],
      primary: String?
    ) {
      self.clusterID = clusterID
      self.nodeName = nodeName
      self.replicationAddresses = replicationAddresses
      self.apiURLs = apiURLs
      self.primary = primary
    }
  }

  enum Event: Sendable {
    case connection(ConnectionEvent)
    case connected(ConnectionID, any Channel)
    case connectFailed(ConnectionID, String)
    case written(LSN, generation: Int)
    case flushed(LSN, generation: Int)
    case applied(LSN, generation: Int)
    case tick
    case primaryChanged(String?)
    case promised(Epoch, CheckedContinuation<Void, Never>)
  }

  /// What `/v1/status` shows of a follower.
  public struct Status: Sendable {
    public var primary: String?
    public var state: String
    public var primaryEpoch: Epoch?
    public var commitLSN: LSN
    public var checkpointTransfer: (received: UInt64, total: UInt64)?
    public var lastError: String?
    /// When the primary was last heard from on a welcomed connection (monotonic nanoseconds); nil
    /// when not streaming.
    public var lastHeardNanoseconds: UInt64?
  }

  public let settings: Settings
  let host: EngineHost
  let tls: PeerTLS
  let logger: Logger
  private let group: any EventLoopGroup
  private let reopen: @Sendable () async throws -> MemoryEngine
  private let events = EventQueue<Event>()
  private let tasks = Mutex<[Task<Void, Never>]>([])
  private let watchers = Mutex<[Task<Void, Never>]>([])
  private let published: Mutex<Status>

  // Owned by the event task.
  private var machine: FollowerReplication
  private var channels: [ConnectionID: any Channel] = [:]
  /// Connections whose handshake was verified before `connect` reported their channel.
  private var verifiedEarly: Set<ConnectionID> = []
  private var generation = 0
  private var incoming: (file: StorageFile, path: String, total: UInt64)?
  private var incomingReceived: UInt64 = 0
  private var stopped = false

  /// - Parameter reopen: opens the node's engine from its data directory (as a follower).
  public init(
    host: EngineHost, tls: PeerTLS, settings: Settings, group: any EventLoopGroup, logger: Logger,
    reopen: @escaping @Sendable () async throws -> MemoryEngine
  ) {
    self.host = host
    self.tls = tls
    self.settings = settings
    self.group = group
    self.logger = logger
    self.reopen = reopen
    var configuration = FollowerReplication.Configuration(
      clusterID: settings.clusterID, nodeID: settings.nodeName)
    configuration.heartbeatIntervalNanoseconds = settings.timings.heartbeatInterval.nanoseconds
    configuration.peerTimeoutNanoseconds = settings.timings.peerTimeout.nanoseconds
    configuration.initialBackoffNanoseconds = settings.timings.initialBackoff.nanoseconds
    configuration.maximumBackoffNanoseconds = settings.timings.maximumBackoff.nanoseconds
    let engine = host.engine
    machine = FollowerReplication(
      configuration: configuration, log: Self.localState(engine),
      promisedEpoch: max(settings.promisedEpoch ?? .zero, engine.log.currentEpoch),
      primaryAddress: settings.primary, random: SplitMix64(seed: UInt64(monotonicNanoseconds())),
      now: monotonicNanoseconds())
    published = Mutex(Status(primary: settings.primary, state: "disconnected", commitLSN: .zero))
    engine.becomeFollower(primary: settings.primary.flatMap { settings.apiURLs[$0] })
  }

  static func localState(_ engine: MemoryEngine) -> LocalLogState {
    LocalLogState(
      epochHistory: engine.log.epochHistory, lastLSN: engine.log.positions.written.value,
      flushedLSN: engine.log.positions.flushed.value, appliedLSN: engine.store.appliedLSN)
  }

  public func start() {
    let consumer = Task { [self] in
      for await event in events.stream { await handle(event) }
    }
    let ticker = Task { [events, settings] in
      while !Task.isCancelled {
        try? await Task.sleep(for: settings.timings.tickInterval)
        events.post(.tick)
      }
    }
    tasks.withLock { $0 = [consumer, ticker] }
    watch(host.engine)
    logger.info(
      "replication: following",
      metadata: ["primary": "\(settings.primary ?? "none yet")", "lsn": "\(machine.writtenLSN)"])
  }

  /// Follows `primary` from now on (nil: none known); the engine's redirects point at it.
  public func changePrimary(_ primary: String?) {
    host.engine.becomeFollower(primary: primary.flatMap { settings.apiURLs[$0] })
    events.post(.primaryChanged(primary))
  }

  /// This node promised `epoch`: returns once the replication link refuses every frame from a
  /// lower epoch (a connection to an older primary is closed, and nothing more is acknowledged on
  /// it).
  public func promise(_ epoch: Epoch) async {
    await withCheckedContinuation { continuation in events.post(.promised(epoch, continuation)) }
  }

  public func stop() async {
    events.finish()
    for task in tasks.withLock({ $0 }) + watchers.withLock({ $0 }) { task.cancel() }
    for task in tasks.withLock({ $0 }) { await task.value }
    for (_, channel) in channels { try? await channel.close() }
    channels.removeAll()
    // A transfer cut short by a role change: its descriptor and temporary file go now, not at the
    // next transfer (that may never come on this replicator).
    abandonCheckpoint()
  }

  public var status: Status { published.withLock { $0 } }

  /// Posts the engine's positions as they advance; tagged with the engine's generation so a
  /// replaced engine's late news is ignored.
  private func watch(_ engine: MemoryEngine) {
    let generation = self.generation
    let events = self.events
    func follow(_ mark: LSNWatermark, _ make: @escaping @Sendable (LSN) -> Event) -> Task<Void, Never> {
      Task {
        var last = mark.value
        events.post(make(last))
        while !Task.isCancelled {
          do { try await mark.wait(for: last.next) } catch { return }
          last = mark.value
          events.post(make(last))
        }
      }
    }
    let tasks = [
      follow(engine.log.positions.written) { .written($0, generation: generation) },
      follow(engine.log.positions.flushed) { .flushed($0, generation: generation) },
      follow(engine.store.applied) { .applied($0, generation: generation) },
    ]
    let old = watchers.withLock { watchers -> [Task<Void, Never>] in
      defer { watchers = tasks }
      return watchers
    }
    for task in old { task.cancel() }
  }

  // MARK: events

  private func handle(_ event: Event) async {
    guard !stopped else {
      // A stopped follower acknowledges nothing: a promise holds trivially.
      if case .promised(_, let continuation) = event { continuation.resume() }
      return
    }
    var actions: [FollowerAction] = []
    switch event {
    case .connected(let id, let channel):
      // A connection that already closed (its `closed` came first) is not kept.
      guard channel.isActive else { break }
      channels[id] = channel
      // The handshake finished before the channel was recorded: say hello now, not into nothing.
      if verifiedEarly.remove(id) != nil { actions = machine.connected(id) }
    case .connectFailed(let id, let reason):
      verifiedEarly.remove(id)
      logger.debug("replication: cannot reach the primary", metadata: ["reason": "\(reason)"])
      publishError("cannot reach the primary: \(reason)")
      actions = machine.connectionFailed(id)
    case .connection(.verified(let id, _)):
      if channels[id] == nil {
        verifiedEarly.insert(id)
      } else {
        actions = machine.connected(id)
      }
    case .connection(.message(let id, let message)):
      if case .refuse(let code, let text) = message {
        logger.warning(
          "replication: the primary refused", metadata: ["code": "\(code)", "reason": "\(text)"])
        publishError("refused by the primary: \(code): \(text)")
      }
      actions = machine.received(message, on: id)
    case .connection(.malformed(let id, let error)):
      logger.warning("replication: malformed frame from the primary", metadata: ["error": "\(error)"])
      publishError("malformed frame: \(error)")
      actions = machine.connectionClosed(id)
    case .connection(.closed(let id)):
      channels[id] = nil
      verifiedEarly.remove(id)
      actions = machine.connectionClosed(id)
    case .written(let lsn, let tag) where tag == generation:
      actions = machine.localWritten(through: lsn)
    case .flushed(let lsn, let tag) where tag == generation:
      actions = machine.localFlushed(through: lsn)
    case .applied(let lsn, let tag) where tag == generation:
      actions = machine.localApplied(through: lsn)
    case .written, .flushed, .applied:
      break
    case .tick:
      actions = machine.tick(now: monotonicNanoseconds())
    case .primaryChanged(let name):
      logger.info("replication: the primary changed", metadata: ["primary": "\(name ?? "none")"])
      actions = machine.primaryChanged(to: name)
    case .promised(let epoch, let continuation):
      actions = machine.promised(epoch)
      await perform(actions)
      publishStatus()
      continuation.resume()
      return
    }
    await perform(actions)
    publishStatus()
  }

  private func perform(_ actions: [FollowerAction]) async {
    var queue = actions[...]
    while let action = queue.popFirst() {
      switch action {
      case .connect(let id, let name):
        connect(id, to: name)
      case .send(let message, let id):
        channels[id]?.send(message)
      case .close(let id, let reason):
        logger.info("replication: closing the connection to the primary", metadata: ["reason": "\(reason)"])
        channels[id]?.close(promise: nil)
      case .append(let records):
        append(records)
      case .truncate(let lsn):
        await truncate(after: lsn)
      case .beginCheckpoint(let lsn, _, let total, _):
        beginCheckpoint(lsn: lsn, total: total)
      case .writeCheckpointChunk(let offset, let bytes):
        writeChunk(offset: offset, bytes: bytes)
      case .installCheckpoint(let lsn, _, _):
        await installCheckpoint(lsn: lsn)
      case .abandonCheckpoint:
        abandonCheckpoint()
      }
    }
  }

  private func connect(_ id: ConnectionID, to name: String) {
    let events = self.events
    guard let address = settings.replicationAddresses[name], let (hostName, port) = splitHostPort(address)
    else {
      events.post(.connectFailed(id, "no replication address for \(name)"))
      return
    }
    let bootstrap = tls.makeClientBootstrap(group: group, connectingTo: name) { channel in
      let handler = ReplicationConnectionHandler(id: id) { events.post(.connection($0)) }
      return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
    }
    // `connected` (the channel that won) may arrive after the handshake's `verified`; see there.
    bootstrap.connect(host: hostName, port: port).whenComplete { result in
      switch result {
      case .success(let channel): events.post(.connected(id, channel))
      case .failure(let error): events.post(.connectFailed(id, "\(error)"))
      }
    }
  }

  private func append(_ records: [WALRecord]) {
    let log = host.engine.log
    do {
      var last: AppendTicket?
      for record in records { last = try log.submitReplicated(record, durability: .local) }
      if let last {
        let logger = self.logger
        Task {
          do { _ = try await last.result() } catch {
            logger.critical(
              "replication: the local log refused a record from the primary; restart the node",
              metadata: ["error": "\(error)"])
          }
        }
      }
    } catch {
      logger.critical("replication: the local log refused records", metadata: ["error": "\(error)"])
      publishError("the local log refused records: \(error)")
      stopped = true
      for (_, channel) in channels { channel.close(promise: nil) }
    }
  }

  /// Closes the engine, cuts the log after `lsn` (the tail goes to `archive/`), and reopens it: the
  /// stores are rebuilt from the newest checkpoint at or below `lsn` plus replay.
  private func truncate(after lsn: LSN) async {
    let engine = host.engine
    guard engine.log.positions.written.value > lsn else { return }
    await restartEngine(reason: "divergent tail after LSN \(lsn)") { directory in
      if let report = try WriteAheadLog.truncate(
        directory: directory, after: lsn, fileSystem: engine.log.fileSystem, logger: self.logger)
      {
        self.logger.warning(
          "replication: cut a divergent tail",
          metadata: [
            "kept_through": "\(lsn)", "removed": "\(report.removedRecords)",
            "archive": "\(report.archiveFile)",
          ])
      }
    }
  }

  private func beginCheckpoint(lsn: LSN, total: UInt64) {
    abandonCheckpoint()
    let fileSystem = host.engine.log.fileSystem
    let path = joinPath(host.engine.log.layout.root, "incoming-checkpoint.tmp")
    do {
      if fileSystem.fileExists(path) { try fileSystem.removeFile(path) }
      incoming = (try fileSystem.openFile(path, mode: .createNew), path, total)
      incomingReceived = 0
      logger.info("replication: receiving a checkpoint", metadata: ["lsn": "\(lsn)", "bytes": "\(total)"])
    } catch {
      logger.error("replication: cannot store the incoming checkpoint", metadata: ["error": "\(error)"])
    }
  }

  private func writeChunk(offset: UInt64, bytes: [UInt8]) {
    guard let incoming else { return }
    do {
      try incoming.file.write(bytes, at: Int64(offset))
      let done = offset + UInt64(bytes.count)
      incomingReceived = max(incomingReceived, done)
      if done == incoming.total || done / (64 << 20) != offset / (64 << 20) {
        logger.info(
          "replication: checkpoint transfer", metadata: ["received": "\(done)", "total": "\(incoming.total)"])
      }
    } catch {
      logger.error("replication: writing the incoming checkpoint failed", metadata: ["error": "\(error)"])
    }
  }

  private func abandonCheckpoint() {
    guard let incoming else { return }
    incoming.file.close()
    try? host.engine.log.fileSystem.removeFile(incoming.path)
    self.incoming = nil
  }

  private func installCheckpoint(lsn: LSN) async {
    guard let incoming else { return }
    self.incoming = nil
    let engine = host.engine
    let bytes: [UInt8]
    do {
      bytes = try incoming.file.readAll()
      incoming.file.close()
    } catch {
      incoming.file.close()
      logger.error("replication: cannot read the received checkpoint", metadata: ["error": "\(error)"])
      return
    }
    await restartEngine(reason: "installing the primary's checkpoint at LSN \(lsn)") { directory in
      _ = try WriteAheadLog.installCheckpoint(
        directory: directory, checkpointFile: bytes, expectedClusterID: self.settings.clusterID,
        segmentBytes: engine.log.options.segmentBytes,
        archiveReplaced: engine.log.options.archiveRetiredSegments,
        fileSystem: engine.log.fileSystem, logger: self.logger)
      try? engine.log.fileSystem.removeFile(incoming.path)
    }
  }

  /// Closes the engine, changes the log on disk, opens a new engine and serves it. A failure leaves
  /// the node without replication (it says why) rather than serving a log it cannot trust.
  private func restartEngine(reason: String, surgery: (String) throws -> Void) async {
    let engine = host.engine
    logger.warning("replication: reopening the engine", metadata: ["reason": "\(reason)"])
    await engine.close()
    do {
      try surgery(engine.log.layout.root)
      let reopened = try await reopen()
      reopened.becomeFollower(
        primary: (machine.primaryAddress ?? settings.primary).flatMap { settings.apiURLs[$0] })
      generation += 1
      host.replace(with: reopened)
      watch(reopened)
    } catch {
      logger.critical("replication: reopening the engine failed", metadata: ["error": "\(error)"])
      publishError("reopening the engine failed: \(error)")
      stopped = true
      for (_, channel) in channels { channel.close(promise: nil) }
      // A node with no engine can only refuse; where a failure handler is set (`memwal serve`),
      // it ends the process, and the next start recovers from what is on disk.
      engine.options.log.failureHandler?(.failed("reopening the engine failed: \(error)"))
    }
  }

  private func publishError(_ text: String) { published.withLock { $0.lastError = text } }

  private func publishStatus() {
    let state: String
    switch machine.state {
    case .idle: state = "idle"
    case .disconnected: state = "disconnected"
    case .connecting: state = "connecting"
    case .handshaking: state = "handshaking"
    case .streaming: state = "streaming"
    case .receivingCheckpoint: state = "receiving_checkpoint"
    }
    let transfer = incoming.map { (incomingReceived, $0.total) }
    published.withLock { status in
      status.state = stopped ? "stopped" : state
      status.primary = machine.primaryAddress
      status.primaryEpoch = machine.primaryEpoch
      status.commitLSN = machine.commitLSN
      status.checkpointTransfer = transfer
      switch machine.state {
      case .streaming, .receivingCheckpoint: status.lastHeardNanoseconds = machine.lastHeardNanoseconds
      default: status.lastHeardNanoseconds = nil
      }
    }
  }
}
