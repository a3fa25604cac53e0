import MemWALCluster
import MemWALCore

/// Settings of one controller simulation run.
struct ControllerSimulationOptions {
  var nodes = 3
  /// k as the primaries acknowledge with.
  var k = 1
  /// Deliberate bug: the controller believes k is this (counting promises against it).
  var controllerK: Int?
  var faultSteps = 400
  /// The bound on reaching a primary, progress and convergence once faults stop.
  var quietSteps = 1000
  var switchovers = true
  /// Deliberate bug: promises report their position inverted, so the least advanced is promoted.
  var promoteLeastAdvanced = false
  /// The controller's first start: no record yet, while n1 already runs as primary in epoch 1
  /// (the configuration's initial primary) and takes writes.
  var controllerStartsFresh = false
}

/// A seeded, single-threaded simulation of a whole cluster — N nodes running `NodeFencing` and
/// an abstract replication model, plus one `FailoverController` — with primary, follower and
/// controller crashes, partitions of any set of participants, and delayed or lost messages.
/// Everything random comes from one `SplitMix64`, so a seed replays exactly.
///
/// Replication is abstract: a log is a list of entries (epoch, unique id) at LSN = index + 1. A
/// primary appends entries in its epoch; a follower that can reach the primary it was told to
/// follow (and whose frames its promise allows) first cuts its log at
/// `Divergence.lastSharedLSN`, then copies a prefix of the primary's flushed log and flushes it
/// now and then. An entry is quorum-acknowledged once k followers linked to its primary have it
/// flushed. A crash drops unflushed entries.
final class ControllerSimulation {
  static let stepNanoseconds: UInt64 = 10_000_000
  static let controllerName = "controller"

  struct Entry: Equatable {
    var epoch: Epoch
    var id: UInt64
  }

  struct Node {
    var name: String
    var log: [Entry] = []
    var flushedCount = 0
    var fencing: NodeFencing
    var isUp = true
    var restartAt: UInt64 = 0
    /// What survives a crash besides the flushed log.
    var durable: FencingState
    /// The primary (and its epoch) this node completed the handshake with; nil: not connected.
    var joined: (primary: String, epoch: Epoch)?
    var seesPrimary = false
  }

  enum Message {
    case toNode(String, ControllerAction)
    case report(String, NodeReport)
    case promise(String, epoch: Epoch, flushed: LSN, lastEpoch: Epoch)
    case refused(String, epoch: Epoch, highest: Epoch)
    case promoted(String, epoch: Epoch, lsn: LSN)
    case drained(String, NodeReport)
    case unreachable(String)
  }

  let seed: UInt64
  let options: ControllerSimulationOptions
  var random: SplitMix64
  var now: UInt64 = 1_000_000_000
  var nodes: [Node] = []
  var controller: FailoverController
  let controllerConfiguration: FailoverController.Configuration
  var controllerUp = true
  var controllerRestartAt: UInt64 = 0
  var persisted: ControllerRecord?
  /// Partition groups: two participants talk only when their groups are equal.
  var groups: [String: Int] = [:]
  var healAt: UInt64 = 0
  var events: [(at: UInt64, sequence: Int, message: Message)] = []
  var sequence = 0
  var nextID: UInt64 = 1
  /// The quorum-acknowledged entries, in log order: they form one chain if nothing is lost.
  var acknowledged: [Entry] = []
  var writers: [Epoch: String] = [:]
  var failure: String?
  var faultsOn = true
  var steps = 0
  var stats = (
    promotions: 0, promoteRequests: 0, truncations: 0, crashes: 0, controllerCrashes: 0, switchovers: 0
  )

  init(seed: UInt64, options: ControllerSimulationOptions) {
    self.seed = seed
    self.options = options
    random = SplitMix64(seed: seed)
    let names = (1...options.nodes).map { "n\($0)" }
    var configuration = FailoverController.Configuration(
      members: names.enumerated().map { ClusterMember(name: $1, priority: $0 % 2) },
      quorumFollowers: options.controllerK ?? options.k)
    configuration.heartbeatIntervalNanoseconds = 50_000_000
    configuration.failureTimeoutNanoseconds = 250_000_000
    configuration.promiseTimeoutNanoseconds = 200_000_000
    configuration.electionRetryNanoseconds = 150_000_000
    configuration.switchoverTimeoutNanoseconds = 1_500_000_000
    controllerConfiguration = configuration
    // Epoch 1 with n1 as primary, as a first election would leave it.
    persisted =
      options.controllerStartsFresh
      ? nil
      : ControllerRecord(
        epoch: Epoch(1), primary: "n1", members: configuration.members,
        quorumFollowers: configuration.quorumFollowers)
    controller = FailoverController(configuration: configuration, record: persisted, now: now)
    for name in names {
      let isPrimary = name == "n1"
      let state = FencingState(
        promisedEpoch: Epoch(1), role: isPrimary ? .primary : .follower, epoch: Epoch(1),
        primary: isPrimary ? nil : "n1")
      var node = Node(
        name: name,
        fencing: NodeFencing(state: state), durable: state)
      node.log = [Entry(epoch: Epoch(1), id: 0)]
      node.flushedCount = 1
      nodes.append(node)
      groups[name] = 0
    }
    groups[Self.controllerName] = 0
    writers[Epoch(1)] = "n1"
  }

  // MARK: - Running

  /// Runs the whole schedule; returns the first broken invariant, with the seed, or nil.
  func run() -> String? {
    for _ in 0..<options.faultSteps {
      step()
      if let failure { return report(failure) }
    }
    stopFaults()
    let acknowledgedBefore = acknowledged.count
    var progressed = false
    for _ in 0..<options.quietSteps {
      step(writing: !progressed)
      if let failure { return report(failure) }
      progressed = progressed || acknowledged.count > acknowledgedBefore
      if progressed && hasConverged { break }
    }
    if !progressed {
      return report(
        "no write was acknowledged within \(options.quietSteps * 10) ms after faults stopped: \(state)")
    }
    checkConvergence()
    return failure.map(report)
  }

  func report(_ message: String) -> String {
    "seed \(seed) (replay with MEMWAL_CONTROLLER_SEED=\(seed)), at \((now - 1_000_000_000) / 1_000_000) ms: \(message)"
  }

  var state: String {
    let described = nodes.map { node in
      "\(node.name)\(node.isUp ? "" : " (down)"): \(node.fencing.role) epoch \(node.fencing.epoch) promised "
        + "\(node.fencing.promisedEpoch) log \(node.log.count)/\(node.flushedCount)"
        + " last epoch \(node.log.last?.epoch ?? .zero)"
    }
    return described.joined(separator: "; ")
      + "; controller: epoch \(controller.record.epoch) primary \(controller.record.primary ?? "none") "
      + "phase \(controller.phase); status: \(controller.lastStatus)"
  }

  func chance(_ probability: Double) -> Bool { random.nextUnitInterval() <= probability }

  func position(of name: String) -> Int { Int(name.dropFirst())! - 1 }

  func step(writing: Bool = true) {
    now += Self.stepNanoseconds
    if faultsOn { injectFaults() }
    for index in nodes.indices where !nodes[index].isUp && now >= nodes[index].restartAt { restart(index) }
    if !controllerUp && now >= controllerRestartAt { restartController() }
    runEvents()
    for index in nodes.indices where nodes[index].isUp {
      if writing && nodes[index].fencing.acceptsWrites && chance(0.5) { write(index) }
      if chance(0.7) { nodes[index].flushedCount = nodes[index].log.count }
    }
    for index in nodes.indices where nodes[index].isUp { replicate(index) }
    acknowledge()
    if steps % 50 == 0 { checkSharedEpochs() }
    steps += 1
    if controllerUp { perform(controller.tick(now: now)) }
    if faultsOn && options.switchovers && controllerUp && chance(0.002) { operatorSwitchover() }
  }

  func injectFaults() {
    for index in nodes.indices where nodes[index].isUp && chance(0.002) { crash(index) }
    if controllerUp && chance(0.002) { crashController() }
    if now >= healAt && groups.values.contains(where: { $0 != 0 }) {
      for key in groups.keys { groups[key] = 0 }
    }
    if chance(0.004) {
      // Any set of participants, the controller included, is cut off from the rest.
      for key in groups.keys.sorted() { groups[key] = chance(0.5) ? 1 : 0 }
      healAt = now + UInt64.random(in: 100...1500, using: &random) * 1_000_000
    }
  }

  func stopFaults() {
    faultsOn = false
    for key in groups.keys { groups[key] = 0 }
    for index in nodes.indices where !nodes[index].isUp { restart(index) }
    if !controllerUp { restartController() }
  }

  func connected(_ first: String, _ second: String) -> Bool { groups[first] == groups[second] }

  // MARK: - Nodes

  func write(_ index: Int) {
    let epoch = nodes[index].fencing.epoch
    if let writer = writers[epoch], writer != nodes[index].name {
      failure = "\(nodes[index].name) accepts writes in epoch \(epoch), in which \(writer) already did"
      return
    }
    writers[epoch] = nodes[index].name
    for _ in 0..<Int.random(in: 1...3, using: &random) {
      nodes[index].log.append(Entry(epoch: epoch, id: nextID))
      nextID += 1
    }
  }

  func crash(_ index: Int) {
    stats.crashes += 1
    nodes[index].log.removeLast(nodes[index].log.count - nodes[index].flushedCount)
    nodes[index].isUp = false
    nodes[index].joined = nil
    nodes[index].seesPrimary = false
    nodes[index].restartAt = now + UInt64.random(in: 50...1500, using: &random) * 1_000_000
    for other in nodes.indices where nodes[other].joined?.primary == nodes[index].name {
      nodes[other].joined = nil
    }
  }

  func restart(_ index: Int) {
    nodes[index].fencing = NodeFencing(state: nodes[index].durable)
    nodes[index].isUp = true
  }

  /// Carries out fencing actions as a node's shell would: persist first, then act.
  func apply(_ actions: [FencingAction], at index: Int) {
    for action in actions {
      switch action {
      case .persist(let state):
        nodes[index].durable = state
      case .stepDown:
        nodes[index].joined = nil
        for other in nodes.indices where nodes[other].joined?.primary == nodes[index].name {
          nodes[other].joined = nil
        }
      case .becomePrimary(let epoch):
        becomePrimary(index, epoch: epoch)
      case .follow:
        nodes[index].joined = nil
      case .stopWrites:
        // Everything logged is flushed before the node reports that it drains.
        nodes[index].flushedCount = nodes[index].log.count
      case .resumeWrites:
        break
      }
    }
  }

  func becomePrimary(_ index: Int, epoch: Epoch) {
    let name = nodes[index].name
    if let writer = writers[epoch], writer != name {
      failure = "\(name) became primary in epoch \(epoch), in which \(writer) already accepted writes"
      return
    }
    writers[epoch] = name
    stats.promotions += 1
    nodes[index].log.append(Entry(epoch: epoch, id: nextID))
    nextID += 1
    nodes[index].flushedCount = nodes[index].log.count
    nodes[index].joined = nil
    let log = nodes[index].log
    for (offset, entry) in acknowledged.enumerated() where offset >= log.count || log[offset] != entry {
      failure =
        "\(name) became primary in epoch \(epoch) without the quorum-acknowledged write at LSN \(offset + 1) "
        + "(epoch \(entry.epoch)): \(state)"
      return
    }
  }

  /// One step of replication for a follower: handshake (with divergence) then copy and flush.
  func replicate(_ index: Int) {
    guard nodes[index].fencing.role == .follower else {
      nodes[index].seesPrimary = true
      return
    }
    nodes[index].seesPrimary = false
    guard let primaryName = nodes[index].fencing.primary else { return }
    let primary = position(of: primaryName)
    guard primary != index, nodes[primary].isUp, connected(nodes[index].name, primaryName),
      nodes[primary].fencing.role != .follower
    else {
      nodes[index].joined = nil
      return
    }
    let primaryEpoch = nodes[primary].fencing.epoch
    do {
      try nodes[index].fencing.checkFrame(epoch: primaryEpoch)
    } catch {
      // The primary learns of the promise at this first contact and steps down (G3).
      apply(nodes[primary].fencing.observe(epoch: nodes[index].fencing.promisedEpoch), at: primary)
      nodes[index].joined = nil
      return
    }
    if nodes[index].joined.map({ $0.primary != primaryName || $0.epoch != primaryEpoch }) ?? true {
      handshake(index, with: primary)
      if failure != nil { return }
    }
    nodes[index].seesPrimary = true
    let source = nodes[primary].log[..<nodes[primary].flushedCount]
    if nodes[index].log.count < source.count && chance(0.6) {
      let end = min(source.count, nodes[index].log.count + Int.random(in: 1...4, using: &random))
      nodes[index].log += source[nodes[index].log.count..<end]
    }
  }

  func handshake(_ index: Int, with primary: Int) {
    let follower = nodes[index].log
    let source = Array(nodes[primary].log[..<nodes[primary].flushedCount])
    let shared = Divergence.lastSharedLSN(
      Self.history(follower), lastLSN: LSN(UInt64(follower.count)), Self.history(source),
      lastLSN: LSN(UInt64(source.count)))
    let keep = Int(shared.rawValue)
    // G4: within shared epochs the logs agree record for record.
    if follower[..<keep] != source[..<keep] {
      failure =
        "\(nodes[index].name)'s log differs from primary \(nodes[primary].name)'s below LSN \(keep): \(state)"
      return
    }
    if keep < follower.count {
      stats.truncations += 1
      nodes[index].log.removeLast(follower.count - keep)
      nodes[index].flushedCount = min(nodes[index].flushedCount, keep)
    }
    nodes[index].joined = (nodes[primary].name, nodes[primary].fencing.epoch)
  }

  /// G4 for every node against every node that takes writes: where two logs give an LSN the same
  /// epoch, they hold the same record.
  func checkSharedEpochs() {
    for primary in nodes where primary.isUp && primary.fencing.role != .follower {
      for node in nodes where node.name != primary.name {
        for offset in 0..<min(node.log.count, primary.log.count)
        where node.log[offset].epoch == primary.log[offset].epoch && node.log[offset] != primary.log[offset] {
          failure =
            "\(node.name) and primary \(primary.name) hold different records at LSN \(offset + 1) in epoch "
            + "\(node.log[offset].epoch): \(state)"
          return
        }
      }
    }
  }

  static func history(_ log: [Entry]) -> [EpochStart] {
    var history: [EpochStart] = []
    for (offset, entry) in log.enumerated() where entry.epoch > (history.last?.epoch ?? .zero) {
      history.append(EpochStart(epoch: entry.epoch, firstLSN: LSN(UInt64(offset + 1))))
    }
    return history
  }

  /// A write is acknowledged at quorum once k followers linked to its primary have it flushed.
  func acknowledge() {
    for primary in nodes.indices where nodes[primary].isUp && nodes[primary].fencing.role != .follower {
      let name = nodes[primary].name
      let flushed = nodes.indices.filter {
        nodes[$0].isUp && nodes[$0].seesPrimary && nodes[$0].fencing.role == .follower
          && nodes[$0].joined?.primary == name
      }.map { nodes[$0].flushedCount }.sorted(by: >)
      guard flushed.count >= options.k else { continue }
      let count = min(options.k == 0 ? Int.max : flushed[options.k - 1], nodes[primary].flushedCount)
      guard count > acknowledged.count else { continue }
      let log = nodes[primary].log
      if let last = acknowledged.last, log[acknowledged.count - 1] != last {
        failure =
          "\(name) acknowledges LSN \(count) at quorum, but its log lost the acknowledged write at LSN "
          + "\(acknowledged.count): \(state)"
        return
      }
      acknowledged += log[acknowledged.count..<count]
    }
  }

  // MARK: - Controller

  func crashController() {
    stats.controllerCrashes += 1
    controllerUp = false
    controllerRestartAt = now + UInt64.random(in: 50...1500, using: &random) * 1_000_000
  }

  func restartController() {
    controllerUp = true
    controller = FailoverController(configuration: controllerConfiguration, record: persisted, now: now)
  }

  func operatorSwitchover() {
    let target = "n\(Int.random(in: 1...options.nodes, using: &random))"
    if let actions = try? controller.switchover(to: target, now: now) {
      stats.switchovers += 1
      perform(actions)
    }
  }

  /// Carries out the controller's actions in order, as its shell would; the controller may die
  /// right after a persist, before the actions that depend on it.
  func perform(_ actions: [ControllerAction]) {
    for action in actions {
      guard controllerUp else { return }
      switch action {
      case .persist(let record):
        precondition(record.epoch >= persisted?.epoch ?? .zero, "the persisted epoch never goes back")
        persisted = record
        if faultsOn && chance(0.05) {
          crashController()
          return
        }
      case .status:
        break
      case .heartbeat(let node), .requestPromise(let node, _), .promote(let node, _), .follow(let node, _, _),
        .drain(let node, _), .resume(let node, _), .setQuorum(let node, _, _):
        if case .promote = action { stats.promoteRequests += 1 }
        send(.toNode(node, action), from: Self.controllerName, to: node)
      }
    }
  }

  // MARK: - Network

  func delay() -> UInt64 {
    let milliseconds: UInt64 = faultsOn && chance(0.02) ? 300 : UInt64.random(in: 1...30, using: &random)
    return milliseconds * 1_000_000
  }

  func send(_ message: Message, from sender: String, to receiver: String) {
    guard connected(sender, receiver), !(faultsOn && chance(0.01)) else { return }
    enqueue(message, at: now + delay())
  }

  func enqueue(_ message: Message, at time: UInt64) {
    sequence += 1
    var low = 0
    var high = events.count
    while low < high {
      let middle = (low + high) / 2
      if events[middle].at <= time { low = middle + 1 } else { high = middle }
    }
    events.insert((time, sequence, message), at: low)
  }

  func runEvents() {
    while failure == nil, let first = events.first, first.at <= now {
      deliver(events.removeFirst().message)
    }
  }

  func deliver(_ message: Message) {
    if case .toNode(let name, let action) = message {
      let index = position(of: name)
      guard nodes[index].isUp else {
        // Connection refused: the controller's shell hears at once.
        enqueue(.unreachable(name), at: now + 1_000_000)
        return
      }
      guard connected(Self.controllerName, name) else { return }
      handle(action, at: index)
      return
    }
    guard controllerUp else { return }
    switch message {
    case .toNode: break
    case .report(let name, let report): perform(controller.report(from: name, report, now: now))
    case .promise(let name, let epoch, let flushed, let lastEpoch):
      perform(
        controller.promise(from: name, epoch: epoch, flushedLSN: flushed, lastLogEpoch: lastEpoch, now: now))
    case .refused(let name, let epoch, let highest):
      perform(controller.promiseRefused(from: name, epoch: epoch, highestPromised: highest, now: now))
    case .promoted(let name, let epoch, let lsn):
      perform(controller.promoted(name, epoch: epoch, lsn: lsn, now: now))
    case .drained(let name, let report): perform(controller.drained(name, report, now: now))
    case .unreachable(let name): perform(controller.unreachable(name, now: now))
    }
  }

  func reply(_ message: Message, from index: Int) {
    send(message, from: nodes[index].name, to: Self.controllerName)
  }

  func handle(_ action: ControllerAction, at index: Int) {
    let name = nodes[index].name
    switch action {
    case .heartbeat:
      reply(.report(name, report(of: index)), from: index)
    case .requestPromise(_, let epoch):
      do {
        apply(try nodes[index].fencing.promise(epoch), at: index)
        let flushed = nodes[index].log[..<nodes[index].flushedCount]
        var lsn = LSN(UInt64(flushed.count))
        var lastEpoch = flushed.last?.epoch ?? .zero
        if options.promoteLeastAdvanced {
          lsn = LSN(1_000_000 - lsn.rawValue)
          lastEpoch = Epoch(1_000_000 - lastEpoch.rawValue)
        }
        reply(.promise(name, epoch: epoch, flushed: lsn, lastEpoch: lastEpoch), from: index)
      } catch {
        reply(.refused(name, epoch: epoch, highest: nodes[index].fencing.promisedEpoch), from: index)
      }
    case .promote(_, let epoch):
      guard let actions = try? nodes[index].fencing.promote(to: epoch) else { return }
      apply(actions, at: index)
      reply(.promoted(name, epoch: epoch, lsn: LSN(UInt64(nodes[index].log.count))), from: index)
    case .follow(_, let primary, let epoch):
      if let actions = try? nodes[index].fencing.follow(primary, epoch: epoch) { apply(actions, at: index) }
    case .drain(_, let epoch):
      guard let actions = try? nodes[index].fencing.drain(epoch: epoch) else { return }
      apply(actions, at: index)
      reply(.drained(name, report(of: index)), from: index)
    case .resume(_, let epoch):
      if let actions = try? nodes[index].fencing.resume(epoch: epoch) { apply(actions, at: index) }
    case .setQuorum, .persist, .status:
      break
    }
  }

  /// What node `index` answers a heartbeat with (and a drain, once done).
  func report(of index: Int) -> NodeReport {
    let node = nodes[index]
    let flushed = node.log[..<node.flushedCount]
    return NodeReport(
      role: node.fencing.role, epoch: node.fencing.epoch, promisedEpoch: node.fencing.promisedEpoch,
      flushedLSN: LSN(UInt64(flushed.count)), appliedLSN: LSN(UInt64(flushed.count)),
      lastEpochInLog: flushed.last?.epoch ?? .zero, primary: node.fencing.primary,
      seesPrimary: node.seesPrimary)
  }

  // MARK: - Convergence

  /// One primary takes writes in the controller's epoch and every node holds exactly its log.
  var hasConverged: Bool {
    guard controllerUp, let name = controller.record.primary else { return false }
    let primary = nodes[position(of: name)]
    guard primary.fencing.acceptsWrites, primary.fencing.epoch == controller.record.epoch,
      primary.flushedCount == primary.log.count
    else { return false }
    return nodes.allSatisfy {
      $0.log.count == primary.log.count && $0.flushedCount == $0.log.count && $0.log.last == primary.log.last
    } && nodes.allSatisfy { $0.log == primary.log }
  }

  func checkConvergence() {
    guard failure == nil else { return }
    guard hasConverged else {
      failure =
        "the cluster did not converge within \(options.quietSteps * 10) ms after faults stopped: \(state)"
      return
    }
    let log = nodes[position(of: controller.record.primary!)].log
    for (offset, entry) in acknowledged.enumerated() where offset >= log.count || log[offset] != entry {
      failure = "the quorum-acknowledged write at LSN \(offset + 1) (epoch \(entry.epoch)) was lost: \(state)"
      return
    }
  }
}
