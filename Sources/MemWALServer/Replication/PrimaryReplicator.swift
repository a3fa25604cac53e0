import Logging
import MemWALCluster
import MemWALCore
import MemWALLog
import MemWALNode
import NIOCore
import NIOPosix
import Synchronization

/// Settings both replicators share.
public struct ReplicationTimings: Sendable, Equatable {
  public var heartbeatInterval: Duration = .milliseconds(100)
  /// A peer silent this long is disconnected.
  public var peerTimeout: Duration = .seconds(2)
  /// How long a `quorum` or `all_applied` write waits for followers before `insufficient_replicas`.
  public var quorumTimeout: Duration = .seconds(5)
  /// Unacknowledged bytes in flight to one follower (back-pressure).
  public var maximumInFlightBytes = 8 << 20
  /// WAL a primary keeps for followers that lag, beyond what its checkpoints need (a follower
  /// further behind catches up from a checkpoint).
  public var maximumRetainedBytes = 1 << 30
  public var initialBackoff: Duration = .milliseconds(50)
  public var maximumBackoff: Duration = .seconds(2)
  /// How often the replicators' clocks tick.
  public var tickInterval: Duration = .milliseconds(20)

  public init() {}
}

extension Duration {
  var nanoseconds: UInt64 {
    let (seconds, attoseconds) = components
    return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds)) / 1_000_000_000
  }
}

/// The primary's side of replication, carried out over NIO with peer TLS: it accepts followers on
/// the replication port, runs `PrimaryReplication` (the pure state machine) on one task, reads the
/// records and checkpoint pieces it asks for, and releases `quorum` / `all_applied` writers when
/// enough followers have flushed / applied their LSN.
public final class PrimaryReplicator: ReplicationGate, @unchecked Sendable {
  public struct Settings: Sendable {
    public var clusterID: ClusterID
    public var nodeName: String
    /// Every member's name, this node's included.
    public var members: Set<String>
    /// Followers that must have flushed a `quorum` write (k).
    public var quorum: Int
    public var host: String
    public var port: Int
    public var timings = ReplicationTimings()
    /// Test-only (`testing.ack_quorum_before_flush`): a `quorum` write is acknowledged as soon as it
    /// is flushed here, without waiting for any follower. Breaks G2 on purpose.
    public var acknowledgesQuorumBeforeFollowersFlush = false

    public init(
      clusterID: ClusterID, nodeName: String, members: Set<String>, quorum: Int, host: String, port: Int
    ) {
      self.clusterID = clusterID
      self.nodeName = nodeName
      self.members = members
      self.quorum = quorum
      self.host = host
      self.port = port
    }
  }

  enum Event: Sendable {
    case connection(ConnectionEvent)
    case accepted(ConnectionID, any Channel)
    case flushed(LSN)
    /// The file waits in `handoff` (so a replicator stopping meanwhile can close it).
    case checkpointReady(CheckpointDescriptor)
    case tick
    case fenced
    case quorumChanged
  }

  private struct Waiter {
    var lsn: LSN
    var level: Durability
    var deadline: UInt64
    var continuation: CheckedContinuation<Durability, any Error>
  }

  /// What other threads read: the state machine's answers after the last event, and the waiters.
  private struct Shared {
    var quorumLSN = LSN.zero
    var allAppliedLSN = LSN.zero
    var retentionLSN = LSN(1)
    var statuses: [FollowerStatus] = []
    var waiters: [Waiter] = []
    var steppedDown: String?
    var quorum: Int
  }

  public let settings: Settings
  let engine: MemoryEngine
  let tls: PeerTLS
  let logger: Logger
  private let group: any EventLoopGroup
  private let events = EventQueue<Event>()
  private let shared: Mutex<Shared>
  private let nextConnection = ConnectionCounter()
  private let tasks = Mutex<[Task<Void, Never>]>([])
  private let serverChannel = Mutex<(any Channel)?>(nil)
  private let stepDownObserver = Mutex<(@Sendable (Epoch, String) -> Void)?>(nil)
  /// Checkpoint files opened off the event task, until the event task takes them; `stop` closes
  /// what is left and makes later arrivals close themselves, so no descriptor outlives the
  /// replicator (each one held a possibly deleted checkpoint's disk space).
  private let handoff = Mutex<(files: [LSN: StorageFile], isStopped: Bool)>(([:], false))

  // Owned by the event task.
  private var machine: PrimaryReplication
  /// The log's epochs when this primary started (it adds none while it runs): `wait` checks a
  /// write's (epoch, LSN) against them.
  private let epochHistory: [EpochStart]
  private var channels: [ConnectionID: any Channel] = [:]
  private var peers: [ConnectionID: String] = [:]
  private var checkpointFiles: [LSN: StorageFile] = [:]
  private var lastCheckpointSeen = LSN.zero
  private var lastTickNanoseconds: UInt64 = 0

  public init(
    engine: MemoryEngine, tls: PeerTLS, settings: Settings, group: any EventLoopGroup, logger: Logger
  ) {
    self.engine = engine
    self.tls = tls
    self.settings = settings
    self.group = group
    self.logger = logger
    var configuration = PrimaryReplication.Configuration(
      clusterID: settings.clusterID, nodeID: settings.nodeName, members: settings.members,
      quorumFollowers: settings.quorum)
    configuration.heartbeatIntervalNanoseconds = settings.timings.heartbeatInterval.nanoseconds
    configuration.peerTimeoutNanoseconds = settings.timings.peerTimeout.nanoseconds
    configuration.maximumInFlightBytes = settings.timings.maximumInFlightBytes
    let log = engine.log
    epochHistory = log.epochHistory
    machine = PrimaryReplication(
      configuration: configuration, epoch: log.currentEpoch, epochHistory: epochHistory,
      flushedLSN: log.positions.flushed.value, oldestRetainedLSN: log.oldestRetainedLSN,
      now: monotonicNanoseconds())
    shared = Mutex(Shared(quorum: settings.quorum))
  }

  /// Binds the replication port and starts streaming. Returns the bound port.
  @discardableResult
  public func start() async throws -> Int {
    let events = self.events
    let nextConnection = self.nextConnection
    let bootstrap = tls.makeServerBootstrap(group: group) { channel in
      let id = nextConnection.next()
      let handler = ReplicationConnectionHandler(id: id) { events.post(.connection($0)) }
      return channel.eventLoop.makeCompletedFuture {
        try channel.pipeline.syncOperations.addHandler(handler)
        events.post(.accepted(id, channel))
      }
    }
    let channel = try await bootstrap.bind(host: settings.host, port: settings.port).get()
    serverChannel.withLock { $0 = channel }
    let port = channel.localAddress?.port ?? settings.port
    engine.replicationGate = self
    engine.retentionFloor = { [weak self] in self?.shared.withLock { $0.retentionLSN } ?? LSN(1) }
    refreshCheckpoint()
    let consumer = Task { [self] in
      for await event in events.stream { handle(event) }
    }
    let flushed = Task { [engine] in
      // The machine knows the flushed LSN of when it was made; records flushed since (before this
      // task ran) are posted now, not at the next flush, which may never come: a lone write right
      // after a promotion was never streamed and its quorum wait timed out (found by
      // ReplicationTests failing one run in five).
      var last = engine.log.positions.flushed.value
      events.post(.flushed(last))
      while !Task.isCancelled {
        do {
          try await engine.log.positions.flushed.wait(for: last.next)
        } catch { return }
        last = engine.log.positions.flushed.value
        events.post(.flushed(last))
      }
    }
    let ticker = Task { [settings] in
      while !Task.isCancelled {
        try? await Task.sleep(for: settings.timings.tickInterval)
        events.post(.tick)
      }
    }
    tasks.withLock { $0 = [consumer, flushed, ticker] }
    logger.info(
      "replication: primary listening",
      metadata: [
        "address": "\(settings.host):\(port)", "epoch": "\(engine.log.currentEpoch)",
        "quorum": "\(settings.quorum)",
      ])
    return port
  }

  /// Stops listening, closes every follower connection, and fails waiting writers as indeterminate.
  public func stop() async {
    let channel = serverChannel.withLock { $0 }
    try? await channel?.close()
    events.finish()
    for task in tasks.withLock({ $0 }) { task.cancel() }
    for task in tasks.withLock({ $0 }) { await task.value }
    for (_, channel) in channels { try? await channel.close() }
    channels.removeAll()
    for (_, file) in checkpointFiles { file.close() }
    checkpointFiles.removeAll()
    let late = handoff.withLock { state -> [StorageFile] in
      state.isStopped = true
      defer { state.files.removeAll() }
      return Array(state.files.values)
    }
    for file in late { file.close() }
    // Marked stopped first, so a writer that reaches `wait` after this is refused at once instead
    // of waiting for an event task that has already ended.
    let reason = shared.withLock { state -> String in
      let reason = state.steppedDown ?? "the node is shutting down"
      state.steppedDown = reason
      return reason
    }
    failWaiters(.indeterminate("the node is shutting down"))
    // A write logged here that reaches the gate only now — this primary stepped down for a new
    // epoch, say — has an unknown fate (its record may be cut as a divergent tail): the stopped
    // gate says so. (Found by `memwal chaos`, seed 1001: with no gate left here, a replicated
    // engine then answered such a `quorum` write with `local`, and its record was cut.)
    engine.replicationGate = StoppedGate(reason: reason)
    engine.retentionFloor = nil
  }

  /// Called (once, from the replication task) when a follower shows this primary an epoch above
  /// its own: the primary has already stopped taking writes.
  public func onStepDown(_ observer: @escaping @Sendable (Epoch, String) -> Void) {
    stepDownObserver.withLock { $0 = observer }
  }

  /// The node is fenced (it promised a newer epoch, or is told to follow another primary): no more
  /// writes, writers still waiting for followers end as indeterminate, follower links close.
  public func fence(reason: String) {
    engine.becomeFollower(primary: nil)
    shared.withLock { $0.steppedDown = reason }
    failWaiters(.indeterminate(reason))
    events.post(.fenced)
  }

  /// Changes k (`memwal ctl set-quorum`): writers waiting for a quorum are measured against the new
  /// k from now on.
  public func setQuorum(_ quorum: Int) {
    shared.withLock { $0.quorum = quorum }
    events.post(.quorumChanged)
  }

  // MARK: the gate

  public func wait(for lsn: LSN, epoch: Epoch, reaching durability: Durability) async throws(WriteError)
    -> Durability
  {
    // A write this log no longer holds at that position (its epoch differs there) cannot be
    // confirmed by followers of this log, whatever LSN they reach. Unreachable while every cut of
    // the log reopens the engine with a new replicator; checked so it stays true if that changes.
    let epochThere = Divergence.epoch(at: lsn, in: epochHistory)
    guard epochThere == epoch else {
      throw .indeterminate(
        "LSN \(lsn) was written in epoch \(epoch); this primary's log has epoch \(epochThere) there")
    }
    let deadline = monotonicNanoseconds() + settings.timings.quorumTimeout.nanoseconds
    do {
      return try await withCheckedThrowingContinuation { continuation in
        let immediate: Result<Durability, WriteError>? = shared.withLock { state in
          if let reason = state.steppedDown { return .failure(.indeterminate(reason)) }
          // The engine calls the gate only once the record is flushed locally.
          if durability == .quorum && settings.acknowledgesQuorumBeforeFollowersFlush {
            return .success(.quorum)
          }
          if let reached = Self.reached(lsn, wanting: durability, state) { return .success(reached) }
          state.waiters.append(
            Waiter(lsn: lsn, level: durability, deadline: deadline, continuation: continuation))
          return nil
        }
        if let immediate { continuation.resume(with: immediate.mapError { $0 as any Error }) }
      }
    } catch let error as WriteError {
      throw error
    } catch {
      throw .indeterminate("\(error)")
    }
  }

  private static func reached(_ lsn: LSN, wanting level: Durability, _ state: Shared) -> Durability? {
    reached(lsn, wanting: level, quorumLSN: state.quorumLSN, allAppliedLSN: state.allAppliedLSN)
  }

  private static func reached(_ lsn: LSN, wanting level: Durability, quorumLSN: LSN, allAppliedLSN: LSN)
    -> Durability?
  {
    switch level {
    case .allApplied: return allAppliedLSN >= lsn ? .allApplied : nil
    case .quorum: return quorumLSN >= lsn ? .quorum : nil
    default: return level
    }
  }

  private func failWaiters(_ error: WriteError) {
    let waiters = shared.withLock { state -> [Waiter] in
      defer { state.waiters.removeAll() }
      return state.waiters
    }
    for waiter in waiters { waiter.continuation.resume(throwing: error) }
  }

  // MARK: status

  /// Each follower as the primary sees it.
  public var followerStatuses: [FollowerStatus] { shared.withLock { $0.statuses } }
  /// The highest LSN flushed on k followers.
  public var quorumLSN: LSN { shared.withLock { $0.quorumLSN } }
  /// The number of followers a `quorum` write needs.
  public var quorum: Int { shared.withLock { $0.quorum } }

  // MARK: events

  private func handle(_ event: Event) {
    var actions: [PrimaryAction] = []
    switch event {
    case .accepted(let id, let channel):
      channels[id] = channel
    case .connection(.verified(let id, let peer)):
      peers[id] = peer
      // What the log and its checkpoints hold now decides how this follower is served.
      refreshCheckpoint()
      actions = machine.logRetained(from: engine.log.oldestRetainedLSN)
      actions += machine.connectionOpened(id)
      logger.info("replication: follower connected", metadata: ["peer": "\(peer)", "connection": "\(id)"])
    case .connection(.message(let id, let message)):
      if case .hello(_, _, let nodeID, _, _, _) = message, let peer = peers[id], peer != nodeID {
        channels[id]?.send(
          .refuse(code: .unknownNode, message: "hello names \(nodeID) but the certificate names \(peer)"))
        channels[id]?.close(promise: nil)
        return
      }
      actions = machine.received(message, on: id)
    case .connection(.malformed(let id, let error)):
      logger.warning(
        "replication: malformed frame from a follower",
        metadata: ["peer": "\(peers[id] ?? "?")", "error": "\(error)"])
    case .connection(.closed(let id)):
      channels[id] = nil
      if let peer = peers.removeValue(forKey: id) {
        logger.info(
          "replication: follower disconnected", metadata: ["peer": "\(peer)", "connection": "\(id)"])
      }
      actions = machine.connectionClosed(id)
    case .flushed(let lsn):
      actions = machine.logFlushed(through: lsn)
    case .checkpointReady(let descriptor):
      if let file = handoff.withLock({ $0.files.removeValue(forKey: descriptor.lsn) }) {
        offer(descriptor, file)
      }
    case .tick:
      let now = monotonicNanoseconds()
      if now - lastTickNanoseconds > 500_000_000 {
        lastTickNanoseconds = now
        refreshCheckpoint()
        actions += machine.logRetained(from: engine.log.oldestRetainedLSN)
      }
      actions += machine.tick(now: now)
    case .fenced:
      for (_, channel) in channels { channel.close(promise: nil) }
    case .quorumChanged:
      break
    }
    perform(actions)
    publish()
  }

  private func perform(_ actions: [PrimaryAction]) {
    var queue = actions[...]
    while let action = queue.popFirst() {
      switch action {
      case .send(let message, let id):
        channels[id]?.send(message)
      case .close(let id, let reason):
        logger.info(
          "replication: closing a follower connection",
          metadata: ["peer": "\(peers[id] ?? "?")", "reason": "\(reason)"])
        channels[id]?.close(promise: nil)
      case .sendRecords(let request):
        queue.append(contentsOf: sendRecords(request))
      case .sendCheckpointChunk(let request):
        queue.append(contentsOf: sendChunk(request))
      case .stepDown(let observed, let reporter):
        let reason = "follower \(reporter) has seen epoch \(observed), above this primary's \(machine.epoch)"
        stepDown(reason)
        stepDownObserver.withLock { $0 }?(observed, reason)
      }
    }
  }

  private func sendRecords(_ request: RecordsRequest) -> [PrimaryAction] {
    guard let channel = channels[request.connection] else { return [] }
    var records: [WALRecord] = []
    var bytes = 0
    var next = request.after.next
    do {
      reading: while next <= request.through {
        let batch = try engine.log.records(from: next, limit: 512)
        guard let first = batch.first, first.lsn == next else { break }
        for record in batch where record.lsn <= request.through {
          records.append(record)
          bytes += approximateWireBytes(record)
          next = record.lsn.next
          if bytes >= request.maximumBytes { break reading }
        }
        if batch.last!.lsn >= request.through { break }
      }
    } catch {
      logger.error("replication: reading the log failed", metadata: ["error": "\(error)", "lsn": "\(next)"])
    }
    guard let last = records.last else { return machine.recordsUnavailable(on: request.connection) }
    channel.send(
      .records(
        epoch: request.epoch, records: records, primaryFlushedLSN: request.primaryFlushedLSN,
        commitLSN: request.commitLSN))
    return machine.recordsSent(on: request.connection, through: last.lsn, bytes: bytes)
  }

  private func sendChunk(_ request: CheckpointChunkRequest) -> [PrimaryAction] {
    guard let channel = channels[request.connection], let file = checkpointFiles[request.checkpointLSN] else {
      return [.close(request.connection, reason: "checkpoint \(request.checkpointLSN) is no longer readable")]
    }
    do {
      let bytes = try file.read(at: Int64(request.offset), count: request.maximumBytes)
      channel.send(.checkpointChunk(offset: request.offset, bytes: bytes))
      return machine.checkpointChunkSent(on: request.connection, bytes: bytes.count)
    } catch {
      return [.close(request.connection, reason: "reading the checkpoint failed: \(error)")]
    }
  }

  /// Offers the newest checkpoint to the state machine (for followers that need records the log no
  /// longer holds). Reading the file for its CRC happens on NIO's blocking-I/O pool, never on the
  /// event task; the result comes back as an event. The file stays open while it is the one offered,
  /// so a transfer can finish even after a newer checkpoint replaces it on disk.
  private func refreshCheckpoint() {
    guard let newest = engine.log.checkpointLSNs.first, newest > lastCheckpointSeen else { return }
    lastCheckpointSeen = newest
    let log = engine.log
    let events = self.events
    let logger = self.logger
    // The checkpoint's epoch and history are the log's as of its LSN (what `writeCheckpoint` stores).
    let history = log.epochHistory.filter { $0.firstLSN <= max(newest, LSN(1)) }
    let epoch = Divergence.epoch(at: newest, in: history)
    Task { [self] in
      do {
        let (file, size, crc) = try await NIOThreadPool.singleton.runIfActive {
          let path = joinPath(log.layout.checkpointDirectory, LogFileNames.checkpoint(lsn: newest))
          let file = try log.fileSystem.openFile(path, mode: .readOnly)
          do {
            let size = try file.size()
            var crc: UInt32 = 0
            var offset: Int64 = 0
            while offset < size {
              let chunk = try file.read(at: offset, count: 4 << 20)
              guard !chunk.isEmpty else { break }
              crc = CRC32C.checksum(chunk, extending: crc)
              offset += Int64(chunk.count)
            }
            return (file, size, crc)
          } catch {
            file.close()
            throw error
          }
        }
        let descriptor = CheckpointDescriptor(
          lsn: newest, epoch: epoch, totalBytes: UInt64(size), totalCRC: crc, epochHistory: history)
        let isHandedOff = handoff.withLock { state -> Bool in
          guard !state.isStopped else { return false }
          state.files[newest]?.close()
          state.files[newest] = file
          return true
        }
        guard isHandedOff else { return file.close() }
        events.post(.checkpointReady(descriptor))
      } catch {
        logger.warning("replication: cannot offer the newest checkpoint", metadata: ["error": "\(error)"])
      }
    }
  }

  private func offer(_ descriptor: CheckpointDescriptor, _ file: StorageFile) {
    // Reads of two checkpoints can finish out of order: an older one than offered is not kept.
    if let newest = checkpointFiles.keys.max(), newest >= descriptor.lsn { return file.close() }
    for (lsn, old) in checkpointFiles where lsn < descriptor.lsn {
      old.close()
      checkpointFiles[lsn] = nil
    }
    checkpointFiles[descriptor.lsn] = file
    _ = machine.checkpointAvailable(descriptor)
  }

  private func stepDown(_ reason: String) {
    logger.critical(
      "replication: this primary is stale and stops taking writes", metadata: ["reason": "\(reason)"])
    engine.becomeFollower(primary: nil)
    shared.withLock { $0.steppedDown = reason }
    failWaiters(.indeterminate(reason))
    for (_, channel) in channels { channel.close(promise: nil) }
  }

  /// Publishes the state machine's answers and releases (or times out) the writers waiting on them.
  private func publish() {
    let quorum = shared.withLock { $0.quorum }
    let quorumLSN = machine.quorumLSN(k: quorum)
    let applied = machine.allAppliedLSN
    let statuses = machine.followerStatuses()
    let retention = machine.retentionLSN(cap: retentionCap())
    let now = monotonicNanoseconds()
    var released: [(CheckedContinuation<Durability, any Error>, Result<Durability, WriteError>)] = []
    shared.withLock { state in
      state.quorumLSN = quorumLSN
      state.allAppliedLSN = applied
      state.statuses = statuses
      state.retentionLSN = retention
      state.waiters.removeAll { waiter in
        if let reached = Self.reached(
          waiter.lsn, wanting: waiter.level, quorumLSN: quorumLSN, allAppliedLSN: applied)
        {
          released.append((waiter.continuation, .success(reached)))
          return true
        }
        if now >= waiter.deadline {
          let have = statuses.filter { $0.flushedLSN >= waiter.lsn }.count
          released.append(
            (
              waiter.continuation,
              .failure(
                .insufficientReplicas(
                  waiter.level == .allApplied
                    ? "LSN \(waiter.lsn) is not applied on every follower after the timeout"
                    : "LSN \(waiter.lsn) is flushed on \(have) of the \(quorum) followers a quorum needs")
              )
            ))
          return true
        }
        return false
      }
    }
    for (continuation, result) in released { continuation.resume(with: result.mapError { $0 as any Error }) }
  }

  /// The oldest LSN worth keeping for lagging followers: the first LSN of the newest segments that
  /// together fit in `maximumRetainedBytes`.
  private func retentionCap() -> LSN {
    let names = engine.log.segmentNames
    let keep = max(1, settings.timings.maximumRetainedBytes / max(1, engine.log.options.segmentBytes))
    guard names.count > keep else { return LSN(1) }
    return LogFileNames.segmentLSN(names[names.count - keep]) ?? LSN(1)
  }
}

/// Hands out connection ids for accepted channels.
final class ConnectionCounter: Sendable {
  private let value = Atomic<UInt64>(1)
  func next() -> ConnectionID { ConnectionID(value.add(1, ordering: .relaxed).oldValue) }
}
