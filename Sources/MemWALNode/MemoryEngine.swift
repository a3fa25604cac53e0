import Logging
import MemWALCore
import MemWALLog
import MemWALStore
import Synchronization

/// One node's engine: the write path, the applier and checkpoints over a write-ahead log and the
/// stores (DESIGN §3, §4).
///
/// Order of events for a write: preconditions and before-images are computed under the write lock
/// from the current values (the store's newest versions, overlaid with writes not yet applied), the
/// transaction is submitted to the log under the same lock (so log order is the order in which the
/// current values changed), then — outside the lock — the writer waits until its record reaches the
/// durability it asked for. The applier follows the log separately: the acknowledgement never waits
/// for the vector index.
public final class MemoryEngine: @unchecked Sendable {
  public struct Options: Sendable {
    public var log = WriteAheadLog.Options()
    public var store = MemoryStore.Options()
    /// Records applied per batch.
    public var applyBatch = 1_024
    /// Take a checkpoint after this many bytes of WAL since the last one (0: only when asked).
    public var checkpointEveryBytes = 256 << 20
    /// Also take one when this many seconds passed since the last (or since opening) and some WAL
    /// was applied since (0: by bytes only). Bounds restart replay when writes are slow or small.
    public var checkpointEverySeconds = 0
    /// Longest a read with `min_lsn` waits for the applier.
    public var maximumReadWait: Duration = .seconds(5)
    /// How often expired memories are deleted through the log (nil: only when `deleteExpired` is called).
    /// Only a primary runs the reaper; followers receive its deletes through the log.
    public var expiryInterval: Duration? = .seconds(1)
    /// The role the node opens in.
    public var role: NodeRole = .primary
    /// A member of a replicated cluster: a write asking for followers (`quorum`, `all_applied`)
    /// while no replication gate is set — a follower, a primary between roles — is refused with
    /// `insufficient_replicas`, never answered with the `local` a single node reports.
    public var isReplicated = false

    public init() {}
  }

  public let options: Options
  public let log: WriteAheadLog
  public let store: MemoryStore
  let logger: Logger
  let clock: any WALClock
  let applierThread = SerialThread(name: "memwal-applier")

  // Guarded by `writeLock`.
  let writeLock = Mutex(WriteState())
  struct WriteState {
    var overlay: [OverlayKey: OverlayEntry] = [:]
    var pendingNamespaces: [String: OverlayEntry] = [:]
    var inFlightKeys: [String: (broadcast: OutcomeBroadcast, digest: [UInt8])] = [:]
    /// Outcomes of idempotent transactions the store may not have applied yet.
    var recentOutcomes: [String: (outcome: WriteOutcome, digest: [UInt8])] = [:]
    /// Every submission in log order, so the overlay can be pruned from the front as records apply.
    var submissions: [SubmissionRecord] = []
    var submissionsHead = 0
    var sequence: UInt64 = 0
    var role: NodeRole = .primary
    /// Where clients should send writes when this node is not the primary.
    var primaryHint: String?
  }

  struct SubmissionRecord {
    var sequence: UInt64
    var keys: [OverlayKey]
    var namespace: String?
    var idempotencyKey: String?
    /// Set once the writer learns its LSN (or `.zero` if the log failed it).
    var lsn: LSN?
  }

  struct OverlayKey: Hashable {
    var namespace: String
    var target: TargetType
    var id: String
  }

  /// A value written to the log but maybe not applied yet. `lsn` is nil until the writer learns it.
  struct OverlayEntry {
    var value: RecordValue?
    var lsn: LSN?
    var sequence: UInt64
  }

  private let applierTask = Mutex<Task<Void, Never>?>(nil)
  /// While paused, the applier takes no new batch (benchmarks use it to measure the write path alone).
  private let applierGate = Mutex<(isPaused: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
  private let reaperTask = Mutex<Task<Void, Never>?>(nil)
  private let gate = Mutex<(any ReplicationGate)?>(nil)
  private let floor = Mutex<(@Sendable () -> LSN)?>(nil)
  /// The oldest LSN followers still need (set by a primary's replication): checkpoints retire no
  /// segment at or after it.
  public var retentionFloor: (@Sendable () -> LSN)? {
    get { floor.withLock { $0 } }
    set { floor.withLock { $0 = newValue } }
  }
  /// Where `quorum` and `all_applied` writes wait for followers (nil: a single node answers with
  /// the level it reached, `local`; a replicated one refuses, see `Options.isReplicated`).
  public var replicationGate: (any ReplicationGate)? {
    get { gate.withLock { $0 } }
    set { gate.withLock { $0 = newValue } }
  }
  /// Checkpoints run one at a time, so their LSNs never go backwards.
  private let checkpointSerializer = AsyncSerializer()
  private let bytesSinceCheckpoint = Atomic<Int>(0)
  /// The last checkpoint failed: the WAL it would have covered still awaits one, even when no
  /// byte has been applied since (so an idle node tries again once the interval has passed).
  private let checkpointOwed = Atomic<Bool>(false)
  /// When the last checkpoint was written or tried (the engine's clock, microseconds).
  private let lastCheckpointMicros = Atomic<Int64>(0)

  init(options: Options, log: WriteAheadLog, store: MemoryStore, logger: Logger) {
    self.options = options
    self.log = log
    self.store = store
    self.logger = logger
    self.clock = options.log.clock
    lastCheckpointMicros.store(options.log.clock.microsecondsSinceEpoch(), ordering: .relaxed)
    writeLock.withLock { $0.role = options.role }
  }

  // MARK: role

  /// The node's current role.
  public var role: NodeRole { writeLock.withLock { $0.role } }

  /// Stops taking writes (a follower, or a primary that learned of a newer epoch). Writes already
  /// submitted finish in the log; new ones get `notPrimary` with `primary` as the hint.
  public func becomeFollower(primary: String?) {
    let changed = writeLock.withLock { state -> Bool in
      defer {
        state.role = .follower
        state.primaryHint = primary
      }
      return state.role != .follower
    }
    if changed {
      logger.warning("stopped taking writes: now a follower", metadata: ["primary": "\(primary ?? "-")"])
    }
  }

  /// Updates where a follower sends writers.
  public func setPrimaryHint(_ primary: String?) { writeLock.withLock { $0.primaryHint = primary } }

  /// A primary that stopped taking writes for a switchover takes them again, in the epoch it is
  /// already in (no epoch change is logged).
  public func resumeWrites() {
    writeLock.withLock { state in
      state.role = .primary
      state.primaryHint = nil
    }
    logger.info("taking writes", metadata: ["epoch": "\(log.currentEpoch)"])
  }

  /// Becomes the primary in `epoch` (above the log's): records the epoch change in the log, durably,
  /// waits until the stores have applied everything the log holds (so preconditions and
  /// before-images are computed from the newest state), then takes writes.
  @discardableResult
  public func becomePrimary(epoch: Epoch, name: String) async throws -> LSN {
    let result = try await log.appendEpochChange(to: epoch, leader: name, durability: .local)
    try await store.applied.wait(for: result.lsn, timeout: .seconds(600))
    writeLock.withLock { state in
      state.role = .primary
      state.primaryHint = nil
    }
    logger.warning("now the primary", metadata: ["epoch": "\(epoch)", "lsn": "\(result.lsn)"])
    return result.lsn
  }

  /// Opens the node's data directory: loads the newest valid checkpoint, replays the log after it,
  /// and starts the applier.
  public static func open(
    directory: String, options: Options = Options(), fileSystem: FileSystem = POSIXFileSystem(),
    logger: Logger = Logger(label: "memwal.node")
  ) async throws -> MemoryEngine {
    let (log, recovery) = try WriteAheadLog.open(
      directory: directory, options: options.log, fileSystem: fileSystem, logger: logger)
    let store: MemoryStore
    if let checkpoint = recovery.checkpoint {
      store = try MemoryStore.load(checkpoint.payload, options: options.store)
      guard store.appliedLSN == checkpoint.lsn else {
        throw StoreError.corruptSnapshot(
          "checkpoint at LSN \(checkpoint.lsn) holds a store applied through \(store.appliedLSN)")
      }
    } else {
      store = MemoryStore(options: options.store)
    }
    let engine = MemoryEngine(options: options, log: log, store: store, logger: logger)
    let replayed = try await engine.catchUp(to: recovery.lastLSN)
    logger.info(
      "node recovered",
      metadata: [
        "checkpoint": "\(recovery.checkpoint?.lsn.rawValue ?? 0)", "replayed": "\(replayed)",
        "lsn": "\(recovery.lastLSN)",
      ])
    engine.startApplier()
    engine.startReaper()
    return engine
  }

  /// Applies the log up to `target` (recovery's replay).
  private func catchUp(to target: LSN) async throws -> Int {
    var replayed = 0
    while store.appliedLSN < target {
      let records = try log.records(from: store.appliedLSN.next, limit: options.applyBatch)
      guard !records.isEmpty else { break }
      try await applierThread.perform { [store] in store.apply(records) }
      replayed += records.count
      // What was replayed counts toward the next checkpoint: a node that restarts often would
      // otherwise never reach the threshold, and replay the whole log on every start.
      bytesSinceCheckpoint.add(records.reduce(0) { $0 + $1.approximateBytes }, ordering: .relaxed)
    }
    return replayed
  }

  // MARK: the applier

  private func startApplier() {
    let task = Task { [self] in
      while !Task.isCancelled {
        do {
          await waitWhilePaused()
          let next = store.appliedLSN.next
          do {
            // While applied WAL awaits the time trigger, wake when it is due even if no write
            // comes, so a burst followed by silence is not replayed whole after a restart. (The
            // timeout costs nothing when the record is already there: no timer starts.)
            try await log.positions.written.wait(for: next, timeout: idleWaitForCheckpoint())
          } catch is WaitError {
            if isCheckpointDue(afterApplying: 0) { try await checkpointKeepingOn() }
            continue
          }
          let records = try log.records(from: next, limit: options.applyBatch)
          guard !records.isEmpty else { continue }
          let bytes = records.reduce(0) { $0 + $1.approximateBytes }
          try await applierThread.perform { [store] in store.apply(records) }
          pruneOverlay()
          if isCheckpointDue(afterApplying: bytes) { try await checkpointKeepingOn() }
        } catch is CancellationError {
          return
        } catch {
          if Task.isCancelled { return }
          logger.critical("applier stopped", metadata: ["error": "\(error)", "lsn": "\(store.appliedLSN)"])
          // A node that logs writes but can no longer apply them serves stale reads forever; fail
          // stop like a failed log (`memwal serve` exits from the handler) unless the log itself
          // stopped, which has called it already.
          if log.stoppedBy == nil {
            options.log.failureHandler?(.failed("the applier stopped at LSN \(store.appliedLSN): \(error)"))
          }
          return
        }
      }
    }
    applierTask.withLock { $0 = task }
  }

  /// Pauses or resumes the applier between batches. Writes are still acknowledged while it is
  /// paused; reads see nothing newer until it resumes.
  public func setApplierPaused(_ paused: Bool) {
    let waiters = applierGate.withLock { gate -> [CheckedContinuation<Void, Never>] in
      gate.isPaused = paused
      guard !paused else { return [] }
      defer { gate.waiters.removeAll() }
      return gate.waiters
    }
    for waiter in waiters { waiter.resume() }
  }

  private func waitWhilePaused() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let proceed = applierGate.withLock { gate -> Bool in
        if gate.isPaused {
          gate.waiters.append(continuation)
          return false
        }
        return true
      }
      if proceed { continuation.resume() }
    }
  }

  /// Deletes expired memories through the log now and then, so every node drops them at the same LSN.
  private func startReaper() {
    guard let interval = options.expiryInterval else { return }
    let task = Task { [self] in
      while !Task.isCancelled {
        try? await Task.sleep(for: interval)
        guard !Task.isCancelled, log.stoppedBy == nil else { return }
        guard role == .primary else { continue }
        await deleteExpired(nowMicros: clock.microsecondsSinceEpoch())
      }
    }
    reaperTask.withLock { $0 = task }
  }

  /// Drops overlay entries the store has applied: submissions are in log order, so this walks
  /// from the front and stops at the first not applied (or whose LSN is not known yet).
  func pruneOverlay() {
    let applied = store.appliedLSN
    writeLock.withLock { state in
      while state.submissionsHead < state.submissions.count,
        let lsn = state.submissions[state.submissionsHead].lsn,
        lsn <= applied
      {
        let done = state.submissions[state.submissionsHead]
        state.submissionsHead += 1
        for key in done.keys where state.overlay[key]?.sequence == done.sequence { state.overlay[key] = nil }
        if let name = done.namespace, state.pendingNamespaces[name]?.sequence == done.sequence {
          state.pendingNamespaces[name] = nil
        }
        if let key = done.idempotencyKey, state.recentOutcomes[key]?.outcome.lsn == lsn {
          state.recentOutcomes[key] = nil
        }
      }
      if state.submissionsHead > 4_096 && state.submissionsHead * 2 > state.submissions.count {
        state.submissions.removeFirst(state.submissionsHead)
        state.submissionsHead = 0
      }
    }
  }

  // MARK: checkpoints

  /// Writes a checkpoint of the stores at the applied LSN and retires the WAL segments it makes
  /// unnecessary. Returns the checkpoint's LSN.
  public func checkpoint() async throws -> LSN { try await takeCheckpoint() }

  /// Takes a checkpoint for the applier. One that cannot be written (a full disk, say) costs replay
  /// time and WAL space, nothing else: applying goes on, and the next try comes after another
  /// `checkpointEveryBytes` or `checkpointEverySeconds`. (Found while adding disk faults for
  /// `memwal chaos`: the applier used to stop here for good while the node stayed up, and every
  /// `min_lsn` read on it timed out.) Throws only `CancellationError`.
  private func checkpointKeepingOn() async throws {
    do {
      _ = try await takeCheckpoint()
    } catch is CancellationError {
      throw CancellationError()
    } catch {
      restartCheckpointCountdown(owed: true)
      logger.error(
        "checkpoint failed; applying goes on, the next try after \(options.checkpointEveryBytes) more bytes or \(options.checkpointEverySeconds) s",
        metadata: ["error": "\(error)", "lsn": "\(store.appliedLSN)"])
    }
  }

  /// How long the idle applier may wait for the next record before it looks at the time trigger
  /// again: nil (wait for ever) while the trigger cannot fire. At most a second, because the
  /// engine's clock need not be the wall clock.
  private func idleWaitForCheckpoint() -> Duration? {
    microsecondsUntilTimedCheckpoint().map { .microseconds(min(max($0, 10_000), 1_000_000)) }
  }

  /// Counts `bytes` of applied WAL; whether `checkpointEveryBytes` of it, or some of it and
  /// `checkpointEverySeconds`, have passed since the last checkpoint.
  private func isCheckpointDue(afterApplying bytes: Int) -> Bool {
    let pending = bytesSinceCheckpoint.add(bytes, ordering: .relaxed).newValue
    if options.checkpointEveryBytes > 0 && pending >= options.checkpointEveryBytes { return true }
    return (microsecondsUntilTimedCheckpoint() ?? 1) <= 0
  }

  /// Time left until `checkpointEverySeconds` is due (zero or less: due now); nil when the time
  /// trigger is off, or nothing was applied since the last checkpoint and none is owed.
  private func microsecondsUntilTimedCheckpoint() -> Int64? {
    guard options.checkpointEverySeconds > 0,
      bytesSinceCheckpoint.load(ordering: .relaxed) > 0 || checkpointOwed.load(ordering: .relaxed)
    else { return nil }
    let elapsed = clock.microsecondsSinceEpoch() - lastCheckpointMicros.load(ordering: .relaxed)
    return Int64(options.checkpointEverySeconds) * 1_000_000 - elapsed
  }

  /// The next checkpoint is due `checkpointEveryBytes` / `checkpointEverySeconds` from now (after
  /// one was written, or one failed and is `owed`).
  private func restartCheckpointCountdown(owed: Bool) {
    checkpointOwed.store(owed, ordering: .relaxed)
    bytesSinceCheckpoint.store(0, ordering: .relaxed)
    lastCheckpointMicros.store(clock.microsecondsSinceEpoch(), ordering: .relaxed)
  }

  /// Snapshot on the applier thread (no apply can run meanwhile), make the log durable through the
  /// snapshot's LSN, write the checkpoint, retire old segments.
  private func takeCheckpoint() async throws -> LSN {
    try await checkpointSerializer.run { try await self.writeCheckpointNow() }
  }

  private func writeCheckpointNow() async throws -> LSN {
    let (lsn, bytes) = try await applierThread.perform { [store] in store.snapshot() }
    try await log.sync()
    let floor = retentionFloor
    try await applierThread.perform { [log] in
      try log.writeCheckpoint(at: lsn, payload: bytes)
      _ = try log.retireSegments(below: min(lsn.next, floor?() ?? lsn.next))
    }
    restartCheckpointCountdown(owed: false)
    logger.info("checkpoint", metadata: ["lsn": "\(lsn)", "bytes": "\(bytes.count)"])
    return lsn
  }

  // MARK: reads

  /// Waits (bounded by `maximumReadWait`) until the stores have applied `lsn`: read-your-writes.
  public func waitForApplied(_ lsn: LSN, timeout: Duration? = nil) async throws {
    try await store.applied.wait(for: lsn, timeout: timeout ?? options.maximumReadWait)
  }

  /// Keys written to the log whose records the stores have not applied yet (the write path's
  /// overlay): a measure of how far the applier lags.
  public var unappliedKeyCount: Int { writeLock.withLock { $0.overlay.count } }

  /// The read point for the newest applied state.
  public func latestReadPoint() -> ReadPoint { store.latest(nowMicros: clock.microsecondsSinceEpoch()) }

  // MARK: closing

  /// Stops the applier and closes the log (queued writes finish first).
  public func close() async {
    reaperTask.withLock { $0?.cancel() }
    await log.close()
    applierTask.withLock { $0?.cancel() }
    applierThread.stop()
  }
}

extension WALRecord {
  /// Bytes this record roughly takes in the log, for the checkpoint trigger.
  var approximateBytes: Int {
    guard case .transaction(let transaction) = payload else { return 64 }
    return transaction.operations.reduce(64) { $0 + 32 + ($1.before?.count ?? 0) + ($1.after?.count ?? 0) }
  }
}
