import MemWALCluster
import MemWALCore

/// A seeded, single-threaded simulation of one primary and several followers running the two
/// replication state machines over a simulated network, with in-memory logs. Everything random
/// comes from one `SplitMix64`, so a seed replays exactly.
///
/// The transport is TCP-like: a connection delivers its bytes in order, through a real
/// `ReplicationFrameDecoder`, after a random delay; losing a message breaks the connection. What
/// was still in flight on a broken connection may arrive late (and twice) tagged with the old
/// connection, interleaved with the new connection's traffic: the state machines must ignore it.
struct SimulationOptions {
  var followers = 3
  var k = 1
  var faultSteps = 120
  var quietSteps = 400
  /// Deliberate bugs, to show the checkers catch them.
  var acknowledgeQuorumOnWritten = false
  var ignoreTruncate = false
}

final class Simulation {
  static let stepNanoseconds: UInt64 = 10_000_000
  /// The encoded size of a simulated record, near enough for the back-pressure window.
  static let approximateRecordBytes = 90

  struct Follower {
    var name: String
    var log: [WALRecord] = []
    /// Records `0..<flushedCount` of `log` are durable; a restart drops the rest.
    var flushedCount = 0
    var appliedLSN = LSN.zero
    var machine: FollowerReplication
    var isUp = true
    var restartAt: UInt64 = 0
    var checkpointFile: [UInt8]?
    var promisedEpoch: Epoch
    /// Whether it has been welcomed by this primary: from then on its log must be a prefix of the primary's.
    var hasJoined = false
    /// `log[..<verifiedCount]` was already found equal to the primary's.
    var verifiedCount = 0
  }

  final class Connection {
    let primarySide: ConnectionID
    let followerSide: ConnectionID
    let follower: Int
    var isOpen = true
    var toPrimary = ReplicationFrameDecoder()
    var toFollower = ReplicationFrameDecoder()
    var nextToPrimaryAt: UInt64 = 0
    var nextToFollowerAt: UInt64 = 0
    var pendingToPrimary = 0
    var pendingToFollower = 0
    var followerClosed = false
    var primaryClosed = false
    init(primarySide: ConnectionID, followerSide: ConnectionID, follower: Int) {
      self.primarySide = primarySide
      self.followerSide = followerSide
      self.follower = follower
    }
  }

  enum Event {
    case deliver(Connection, toPrimary: Bool, bytes: [UInt8])
    case connectResult(follower: Int, connection: ConnectionID, succeeded: Bool, generation: Int)
    case closedAtPrimary(Connection)
    case closedAtFollower(Connection, generation: Int)
    case ghostToPrimary(ConnectionID, ReplicationMessage)
    case ghostToFollower(Int, ConnectionID, ReplicationMessage, generation: Int)
  }

  let seed: UInt64
  let options: SimulationOptions
  var random: SplitMix64
  var now: UInt64 = 1_000_000_000
  var primaryLog: [WALRecord] = []
  var primaryFlushed = LSN.zero
  var primary: PrimaryReplication
  let epoch = Epoch(2)
  var followers: [Follower] = []
  var generations: [Int] = []
  var connections: [ConnectionID: Connection] = [:]
  var events: [(at: UInt64, sequence: Int, event: Event)] = []
  var sequence = 0
  var nextPrimaryConnection: UInt64 = 1
  var checkpoints: [LSN: [UInt8]] = [:]
  var acknowledgedLSN = LSN.zero
  var failure: String?
  var faultsOn = true
  var stats = (messages: 0, checkpointsInstalled: 0, truncations: 0, restarts: 0, breaks: 0)

  init(seed: UInt64, options: SimulationOptions) {
    self.seed = seed
    self.options = options
    random = SplitMix64(seed: seed)
    // The log so far: epoch 1 from LSN 1, then epoch 2 (this primary's) from an epoch-change record.
    let switchLSN = UInt64.random(in: 5...20, using: &random)
    for lsn in 1..<switchLSN { primaryLog.append(Self.record(lsn: lsn, epoch: 1, tag: 0)) }
    primaryLog.append(
      WALRecord(
        lsn: LSN(switchLSN), epoch: epoch, transactionID: TransactionID(switchLSN),
        timestampMicros: Int64(switchLSN),
        payload: .epochChange(EpochChange(previousEpoch: Epoch(1), leader: "p"))))
    primaryFlushed = LSN(switchLSN)
    let history = [
      EpochStart(epoch: Epoch(1), firstLSN: LSN(1)), EpochStart(epoch: epoch, firstLSN: LSN(switchLSN)),
    ]
    let names = (1...options.followers).map { "f\($0)" }
    var configuration = PrimaryReplication.Configuration(
      clusterID: Samples.cluster, nodeID: "p", members: Set(names + ["p"]), quorumFollowers: options.k)
    configuration.heartbeatIntervalNanoseconds = 50_000_000
    configuration.peerTimeoutNanoseconds = 400_000_000
    configuration.maximumInFlightBytes = 2048
    configuration.maximumBatchBytes = 700
    configuration.checkpointChunkBytes = 512
    primary = PrimaryReplication(
      configuration: configuration, epoch: epoch, epochHistory: history, flushedLSN: primaryFlushed, now: now)
    for (index, name) in names.enumerated() {
      // Followers start with a prefix of the log; the first is the old primary of epoch 1 with an
      // un-replicated tail past the switch.
      var log = Array(primaryLog[..<Int.random(in: 0...Int(switchLSN) - 1, using: &random)])
      if index == 0 {
        log = Array(primaryLog[..<(Int(switchLSN) - 1)])
        for lsn in switchLSN..<switchLSN + UInt64.random(in: 1...6, using: &random) {
          log.append(Self.record(lsn: lsn, epoch: 1, tag: 1))
        }
      }
      let state = LocalLogState(
        epochHistory: log.isEmpty ? [] : [EpochStart(epoch: Epoch(1), firstLSN: LSN(1))],
        lastLSN: log.last?.lsn ?? .zero, flushedLSN: log.last?.lsn ?? .zero, appliedLSN: .zero)
      let promised = index == 0 ? Epoch(1) : epoch
      followers.append(
        Follower(
          name: name, log: log, flushedCount: log.count,
          machine: makeFollowerMachine(name: name, state: state, promised: promised), promisedEpoch: promised)
      )
      generations.append(0)
    }
  }

  static func record(lsn: UInt64, epoch: UInt64, tag: UInt8) -> WALRecord {
    WALRecord(
      lsn: LSN(lsn), epoch: Epoch(epoch), transactionID: TransactionID(lsn), timestampMicros: Int64(lsn),
      payload: .transaction(
        WALTransaction(
          namespace: "ns",
          operations: [
            WALOperation(kind: .insert, target: .memory, id: "m\(lsn)", after: [tag, UInt8(lsn & 0xFF)])
          ])
      ))
  }

  func makeFollowerMachine(name: String, state: LocalLogState, promised: Epoch) -> FollowerReplication {
    var configuration = FollowerReplication.Configuration(clusterID: Samples.cluster, nodeID: name)
    configuration.heartbeatIntervalNanoseconds = 50_000_000
    configuration.peerTimeoutNanoseconds = 400_000_000
    configuration.initialBackoffNanoseconds = 20_000_000
    configuration.maximumBackoffNanoseconds = 300_000_000
    return FollowerReplication(
      configuration: configuration, log: state, promisedEpoch: promised, primaryAddress: "p",
      random: SplitMix64(seed: random.next()), now: now)
  }

  // MARK: - Running

  /// Runs the whole schedule; returns the first broken invariant, with the seed, or nil.
  func run() -> String? {
    for _ in 0..<options.faultSteps {
      step()
      if let failure { return report(failure) }
    }
    faultsOn = false
    for _ in 0..<options.quietSteps {
      step()
      if let failure { return report(failure) }
      if hasConverged { break }
    }
    checkConvergence()
    return failure.map(report)
  }

  func report(_ message: String) -> String {
    "seed \(seed) (replay with MEMWAL_SIM_SEED=\(seed)), at \((now - 1_000_000_000) / 1_000_000) ms: \(message)"
  }

  func chance(_ probability: Double) -> Bool { random.nextUnitInterval() <= probability }

  func step() {
    now += Self.stepNanoseconds
    if faultsOn || primaryLog.count < 60 { writeRecords() }
    if chance(0.7) { flushPrimary() }
    if faultsOn && chance(0.03) { takeCheckpoint() }
    runEvents()
    for index in followers.indices {
      if !followers[index].isUp {
        if now >= followers[index].restartAt { restart(index) }
        continue
      }
      if chance(0.25) { flushFollower(index) }
      if chance(0.5) { applyFollower(index) }
      if faultsOn && chance(0.004) { crash(index) }
      if faultsOn && chance(0.004) { breakConnection(of: index) }
      perform(followers[index].machine.tick(now: now), follower: index)
    }
    perform(primary.tick(now: now))
    acknowledgeQuorumWrites()
    checkPrefixes()
  }

  func writeRecords() {
    guard chance(0.5) else { return }
    for _ in 0..<Int.random(in: 1...3, using: &random) {
      let lsn = UInt64(primaryLog.count + 1)
      primaryLog.append(Self.record(lsn: lsn, epoch: epoch.rawValue, tag: 2))
    }
  }

  func flushPrimary() {
    let end = LSN(UInt64(primaryLog.count))
    guard end > primaryFlushed else { return }
    primaryFlushed = end
    perform(primary.logFlushed(through: end))
  }

  func takeCheckpoint() {
    let lsn = primaryFlushed
    var writer = ByteWriter()
    ReplicationMessage.records(
      epoch: epoch, records: Array(primaryLog[..<Int(lsn.rawValue)]), primaryFlushedLSN: lsn, commitLSN: .zero
    ).encodeBody(into: &writer)
    checkpoints[lsn] = writer.bytes
    let history = Divergence.history(primary.epochHistory, truncatedAfter: lsn)
    perform(
      primary.checkpointAvailable(
        CheckpointDescriptor(
          lsn: lsn, epoch: primaryLog[Int(lsn.rawValue) - 1].epoch, totalBytes: UInt64(writer.count),
          totalCRC: CRC32C.checksum(writer.bytes), epochHistory: history)))
    // Retention: keep what followers need, but never more than the last 40 LSNs before the
    // checkpoint, so a follower that is away long enough needs the checkpoint.
    let cap = LSN(lsn.rawValue > 40 ? lsn.rawValue - 40 : 1)
    let retained = min(lsn.next, primary.retentionLSN(cap: cap))
    perform(primary.logRetained(from: retained))
  }

  func acknowledgeQuorumWrites() {
    var quorum = primary.quorumLSN(k: options.k)
    if options.acknowledgeQuorumOnWritten {
      let written = primary.followerStatuses().map(\.writtenLSN).sorted(by: >)
      quorum = written.count >= options.k ? min(written[options.k - 1], primaryFlushed) : .zero
    }
    if quorum > acknowledgedLSN { acknowledgedLSN = quorum }
    checkAcknowledged()
  }

  // MARK: - Nodes

  func flushFollower(_ index: Int) {
    guard followers[index].flushedCount < followers[index].log.count else { return }
    followers[index].flushedCount = followers[index].log.count
    let lsn = followers[index].log.last?.lsn ?? .zero
    perform(followers[index].machine.localFlushed(through: lsn), follower: index)
  }

  func applyFollower(_ index: Int) {
    let flushed = followers[index].flushedCount
    let lsn = flushed == 0 ? LSN.zero : followers[index].log[flushed - 1].lsn
    guard lsn > followers[index].appliedLSN else { return }
    followers[index].appliedLSN = lsn
    perform(followers[index].machine.localApplied(through: lsn), follower: index)
  }

  func crash(_ index: Int) {
    stats.restarts += 1
    var follower = followers[index]
    follower.log.removeLast(follower.log.count - follower.flushedCount)
    follower.appliedLSN = min(follower.appliedLSN, follower.log.last?.lsn ?? .zero)
    follower.checkpointFile = nil
    follower.isUp = false
    follower.restartAt = now + UInt64.random(in: 10...500, using: &random) * 1_000_000
    followers[index] = follower
    generations[index] += 1
    breakConnection(of: index)
  }

  func restart(_ index: Int) {
    let log = followers[index].log
    var history: [EpochStart] = []
    for record in log where record.epoch > (history.last?.epoch ?? .zero) {
      history.append(EpochStart(epoch: record.epoch, firstLSN: record.lsn))
    }
    let state = LocalLogState(
      epochHistory: history, lastLSN: log.last?.lsn ?? .zero, flushedLSN: log.last?.lsn ?? .zero,
      appliedLSN: followers[index].appliedLSN)
    followers[index].machine = makeFollowerMachine(
      name: followers[index].name, state: state, promised: followers[index].promisedEpoch)
    followers[index].isUp = true
  }

  // MARK: - Network

  func schedule(_ event: Event, after delay: UInt64) { enqueue(event, at: now + delay) }

  func randomDelay() -> UInt64 {
    let milliseconds: UInt64 = faultsOn && chance(0.01) ? 500 : UInt64.random(in: 1...30, using: &random)
    return milliseconds * 1_000_000
  }

  /// Events are kept sorted by (time, sequence): the earliest due one runs first.
  func runEvents() {
    while failure == nil, let first = events.first, first.at <= now {
      handle(events.removeFirst().event)
    }
  }

  func enqueue(_ event: Event, at time: UInt64) {
    sequence += 1
    var low = 0
    var high = events.count
    while low < high {
      let middle = (low + high) / 2
      if events[middle].at <= time { low = middle + 1 } else { high = middle }
    }
    events.insert((time, sequence, event), at: low)
  }

  func handle(_ event: Event) {
    switch event {
    case .deliver(let connection, let toPrimary, let bytes):
      if toPrimary { connection.pendingToPrimary -= 1 } else { connection.pendingToFollower -= 1 }
      guard connection.isOpen else { return }
      deliver(connection, toPrimary: toPrimary, bytes: bytes)
    case .connectResult(let index, let id, let succeeded, let generation):
      guard generation == generations[index], followers[index].isUp else { return }
      guard succeeded else {
        perform(followers[index].machine.connectionFailed(id), follower: index)
        return
      }
      let connection = Connection(
        primarySide: ConnectionID(nextPrimaryConnection), followerSide: id, follower: index)
      nextPrimaryConnection += 1
      connections[connection.primarySide] = connection
      perform(primary.connectionOpened(connection.primarySide))
      perform(followers[index].machine.connected(id), follower: index)
    case .closedAtPrimary(let connection):
      guard !connection.primaryClosed else { return }
      connection.primaryClosed = true
      perform(primary.connectionClosed(connection.primarySide))
      forgetIfClosed(connection)
    case .closedAtFollower(let connection, let generation):
      guard !connection.followerClosed, generation == generations[connection.follower] else { return }
      connection.followerClosed = true
      perform(
        followers[connection.follower].machine.connectionClosed(connection.followerSide),
        follower: connection.follower)
      forgetIfClosed(connection)
    case .ghostToPrimary(let id, let message):
      perform(primary.received(message, on: id))
    case .ghostToFollower(let index, let id, let message, let generation):
      // A process that restarted has no old connections left to deliver to.
      guard generation == generations[index], followers[index].isUp else { return }
      perform(followers[index].machine.received(message, on: id), follower: index)
    }
  }

  func forgetIfClosed(_ connection: Connection) {
    if connection.primaryClosed && connection.followerClosed { connections[connection.primarySide] = nil }
  }

  func deliver(_ connection: Connection, toPrimary: Bool, bytes: [UInt8]) {
    stats.messages += 1
    var messages: [ReplicationMessage] = []
    do {
      if toPrimary {
        connection.toPrimary.append(bytes)
        while let message = try connection.toPrimary.next() { messages.append(message) }
      } else {
        connection.toFollower.append(bytes)
        while let message = try connection.toFollower.next() { messages.append(message) }
      }
    } catch {
      failure = "decoding a frame that was encoded correctly failed: \(error)"
      return
    }
    for message in messages {
      if toPrimary {
        perform(primary.received(message, on: connection.primarySide))
      } else if followers[connection.follower].isUp {
        perform(
          followers[connection.follower].machine.received(message, on: connection.followerSide),
          follower: connection.follower)
      }
    }
  }

  func send(_ message: ReplicationMessage, on connection: Connection, toPrimary: Bool) {
    guard connection.isOpen else { return }
    if faultsOn && chance(0.002) {
      // Lost on the wire: for a stream, the connection breaks.
      breakConnection(connection)
      return
    }
    let frame = message.encodedFrame()
    let at = max(now + randomDelay(), toPrimary ? connection.nextToPrimaryAt : connection.nextToFollowerAt)
    if toPrimary {
      connection.nextToPrimaryAt = at
      connection.pendingToPrimary += 1
    } else {
      connection.nextToFollowerAt = at
      connection.pendingToFollower += 1
    }
    // Split the frame in two deliveries now and then, as a stream would.
    let cut = chance(0.2) ? Int.random(in: 0...frame.count, using: &random) : frame.count
    enqueue(.deliver(connection, toPrimary: toPrimary, bytes: Array(frame[..<cut])), at: at)
    if cut < frame.count {
      if toPrimary { connection.pendingToPrimary += 1 } else { connection.pendingToFollower += 1 }
      enqueue(.deliver(connection, toPrimary: toPrimary, bytes: Array(frame[cut...])), at: at)
    }
  }

  /// Breaks every open connection of one follower, in connection order: each break draws delays
  /// from the seeded generator, so walking the dictionary's hash order would make a seed replay
  /// differently in another process.
  func breakConnection(of index: Int) {
    let open = connections.values.filter { $0.follower == index && $0.isOpen }
    for connection in open.sorted(by: { $0.primarySide.rawValue < $1.primarySide.rawValue }) {
      breakConnection(connection)
    }
  }

  /// The connection breaks: both ends learn it after a delay; what was in flight may still turn
  /// up later, tagged with the old connection, possibly twice.
  func breakConnection(_ connection: Connection) {
    guard connection.isOpen else { return }
    stats.breaks += 1
    connection.isOpen = false
    let generation = generations[connection.follower]
    schedule(.closedAtPrimary(connection), after: randomDelay())
    schedule(.closedAtFollower(connection, generation: generation), after: randomDelay())
    var inFlight: [(Bool, [UInt8])] = []
    for (_, _, event) in events {
      if case .deliver(let owner, let toPrimary, let bytes) = event, owner === connection {
        inFlight.append((toPrimary, bytes))
      }
    }
    var toPrimary = connection.toPrimary
    var toFollower = connection.toFollower
    for (direction, bytes) in inFlight {
      if direction { toPrimary.append(bytes) } else { toFollower.append(bytes) }
    }
    let late = (try? drain(&toPrimary)) ?? []
    let lateToFollower = (try? drain(&toFollower)) ?? []
    for message in late where chance(0.5) {
      for _ in 0..<(chance(0.3) ? 2 : 1) {
        schedule(.ghostToPrimary(connection.primarySide, message), after: randomDelay() * 3)
      }
    }
    for message in lateToFollower where chance(0.5) {
      for _ in 0..<(chance(0.3) ? 2 : 1) {
        schedule(
          .ghostToFollower(connection.follower, connection.followerSide, message, generation: generation),
          after: randomDelay() * 3)
      }
    }
  }

  func drain(_ decoder: inout ReplicationFrameDecoder) throws -> [ReplicationMessage] {
    var messages: [ReplicationMessage] = []
    while let message = try decoder.next() { messages.append(message) }
    return messages
  }

  /// Closing is orderly: the peer gets the bytes already sent (a `refuse`), then the close.
  func close(_ connection: Connection, byPrimary: Bool) {
    guard connection.isOpen else { return }
    connection.isOpen = false
    let generation = generations[connection.follower]
    // What is still queued reaches the side that has not closed, in order, before the close.
    var toPrimary = connection.toPrimary
    var toFollower = connection.toFollower
    events.removeAll { entry in
      guard case .deliver(let owner, let direction, let bytes) = entry.event, owner === connection else {
        return false
      }
      if direction { toPrimary.append(bytes) } else { toFollower.append(bytes) }
      return true
    }
    if byPrimary {
      connection.primaryClosed = true
      perform(primary.connectionClosed(connection.primarySide))
      for message in (try? drain(&toFollower)) ?? [] {
        schedule(
          .ghostToFollower(connection.follower, connection.followerSide, message, generation: generation),
          after: 1)
      }
      schedule(.closedAtFollower(connection, generation: generation), after: 2)
    } else {
      connection.followerClosed = true
      perform(
        followers[connection.follower].machine.connectionClosed(connection.followerSide),
        follower: connection.follower)
      for message in (try? drain(&toPrimary)) ?? [] {
        schedule(.ghostToPrimary(connection.primarySide, message), after: 1)
      }
      schedule(.closedAtPrimary(connection), after: 2)
    }
  }

  // MARK: - Actions

  func perform(_ actions: [PrimaryAction]) {
    var queue = actions[...]
    while let action = queue.popFirst() {
      guard failure == nil else { return }
      switch action {
      case .send(let message, let id):
        if let connection = connections[id] { send(message, on: connection, toPrimary: false) }
      case .sendRecords(let request):
        queue.append(contentsOf: sendRecords(request))
      case .sendCheckpointChunk(let request):
        let file = checkpoints[request.checkpointLSN] ?? []
        let start = Int(request.offset)
        let end = min(file.count, start + request.maximumBytes)
        if let connection = connections[request.connection] {
          send(
            .checkpointChunk(offset: request.offset, bytes: Array(file[start..<end])), on: connection,
            toPrimary: false)
        }
        queue.append(contentsOf: primary.checkpointChunkSent(on: request.connection, bytes: end - start))
      case .close(let id, _):
        if let connection = connections[id] { close(connection, byPrimary: true) }
      case .stepDown(let observed, let node):
        failure = "the primary stepped down (epoch \(observed) from \(node)) though it is the newest"
      }
    }
  }

  func sendRecords(_ request: RecordsRequest) -> [PrimaryAction] {
    let first = Int(request.after.rawValue)
    let last = Int(request.through.rawValue)
    var records: [WALRecord] = []
    var bytes = 0
    for index in first..<last {
      let record = primaryLog[index]
      records.append(record)
      bytes += Self.approximateRecordBytes
      if bytes >= request.maximumBytes { break }
    }
    guard let end = records.last?.lsn else { return [] }
    if let connection = connections[request.connection] {
      send(
        .records(
          epoch: request.epoch, records: records, primaryFlushedLSN: request.primaryFlushedLSN,
          commitLSN: request.commitLSN), on: connection, toPrimary: false)
    }
    return primary.recordsSent(on: request.connection, through: end, bytes: bytes)
  }

  func perform(_ actions: [FollowerAction], follower index: Int) {
    for action in actions {
      guard failure == nil else { return }
      switch action {
      case .connect(let id, _):
        let generation = generations[index]
        schedule(
          .connectResult(
            follower: index, connection: id, succeeded: !faultsOn || chance(0.9), generation: generation),
          after: randomDelay())
      case .send(let message, let id):
        if let connection = connections.values.first(where: {
          $0.follower == index && $0.followerSide == id && $0.isOpen
        }) {
          send(message, on: connection, toPrimary: true)
        }
      case .close(let id, _):
        if let connection = connections.values.first(where: {
          $0.follower == index && $0.followerSide == id && $0.isOpen
        }) {
          close(connection, byPrimary: false)
        }
      case .truncate(let lsn):
        stats.truncations += 1
        if options.ignoreTruncate { continue }
        var follower = followers[index]
        let keep = follower.log.firstIndex { $0.lsn > lsn } ?? follower.log.count
        follower.log.removeLast(follower.log.count - keep)
        follower.flushedCount = min(follower.flushedCount, keep)
        follower.appliedLSN = min(follower.appliedLSN, lsn)
        follower.verifiedCount = min(follower.verifiedCount, keep)
        followers[index] = follower
      case .append(let records):
        let end = followers[index].log.last?.lsn ?? .zero
        guard records.first?.lsn == end.next else {
          failure = "\(followers[index].name) was asked to append \(records.first?.lsn ?? .zero) after \(end)"
          return
        }
        followers[index].log += records
        followers[index].hasJoined = true
        // Written (in the page cache) at once; flushed later, when the simulated fsync runs.
        let written = followers[index].machine.localWritten(through: records.last?.lsn ?? end)
        perform(written, follower: index)
      case .beginCheckpoint:
        followers[index].checkpointFile = []
      case .writeCheckpointChunk(let offset, let bytes):
        guard followers[index].checkpointFile?.count == Int(offset) else {
          failure = "\(followers[index].name): checkpoint chunk at \(offset) out of order"
          return
        }
        followers[index].checkpointFile! += bytes
      case .installCheckpoint(let lsn, _, _):
        install(index, lsn: lsn)
      case .abandonCheckpoint:
        followers[index].checkpointFile = nil
      }
    }
    if case .streaming = followers[index].machine.state { followers[index].hasJoined = true }
  }

  func install(_ index: Int, lsn: LSN) {
    stats.checkpointsInstalled += 1
    guard let file = followers[index].checkpointFile,
      case .records(_, let records, _, _) = try? file.withUnsafeBytes({
        try ReplicationMessage.decodeBody($0)
      }),
      records.last?.lsn ?? .zero == lsn
    else {
      failure = "\(followers[index].name): installed a checkpoint that is not the one announced (\(lsn))"
      return
    }
    // Durable before the state machine moves on: the install is fsynced.
    followers[index].log = records
    followers[index].verifiedCount = 0
    followers[index].flushedCount = records.count
    followers[index].appliedLSN = lsn
    followers[index].checkpointFile = nil
  }

  // MARK: - Checkers

  /// Every follower that has joined holds a prefix of the primary's log: same LSN, same record.
  func checkPrefixes() {
    for index in followers.indices where followers[index].hasJoined {
      let follower = followers[index]
      if follower.log.count > primaryLog.count {
        failure = "\(follower.name) has \(follower.log.count) records, the primary \(primaryLog.count)"
        return
      }
      var verified = min(follower.verifiedCount, follower.log.count)
      while verified < follower.log.count {
        let record = follower.log[verified]
        guard record == primaryLog[verified] else {
          failure =
            "\(follower.name) diverges from the primary at LSN \(record.lsn) (epoch \(record.epoch) vs \(primaryLog[verified].epoch))"
          return
        }
        verified += 1
      }
      followers[index].verifiedCount = verified
    }
  }

  /// Every write acknowledged at quorum is flushed on at least k followers, identical to the
  /// primary's record, now and at every later step.
  func checkAcknowledged() {
    guard acknowledgedLSN > .zero else { return }
    let index = Int(acknowledgedLSN.rawValue) - 1
    let holders = followers.filter { follower in
      follower.flushedCount > index && follower.log[index] == primaryLog[index]
    }
    if holders.count < options.k {
      failure =
        "LSN \(acknowledgedLSN) was acknowledged at quorum but is flushed on \(holders.count) followers, k = \(options.k)"
    }
  }

  var hasConverged: Bool {
    primaryFlushed == LSN(UInt64(primaryLog.count))
      && followers.allSatisfy { follower in
        follower.isUp && follower.flushedCount == primaryLog.count
          && follower.verifiedCount == primaryLog.count
          && follower.machine.flushedLSN == primaryFlushed
      }
      && primary.quorumLSN(k: options.k) == primaryFlushed
  }

  func checkConvergence() {
    guard failure == nil else { return }
    for follower in followers where follower.log != primaryLog || follower.flushedCount != primaryLog.count {
      failure =
        "\(follower.name) did not converge once faults stopped: \(follower.flushedCount) of \(follower.log.count) records flushed, primary has \(primaryLog.count) (state \(follower.machine.state))"
      return
    }
    if primary.quorumLSN(k: options.k) != primaryFlushed {
      failure = "quorum LSN \(primary.quorumLSN(k: options.k)) did not reach \(primaryFlushed)"
    }
  }
}
