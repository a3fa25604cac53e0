import MemWALCore

/// Why a node refused a request from the controller or a replication frame (DESIGN G3).
public enum FencingError: Error, Sendable, Equatable, CustomStringConvertible {
  /// A promise is given only for an epoch above every epoch promised before.
  case promiseNotHigher(requested: Epoch, promised: Epoch)
  /// The request or frame comes from an epoch below the one this node promised.
  case staleEpoch(requested: Epoch, promised: Epoch)
  /// A promotion must be to an epoch above the one the node already works in.
  case notNewer(requested: Epoch, current: Epoch)

  public var description: String {
    switch self {
    case .promiseNotHigher(let requested, let promised):
      return "cannot promise epoch \(requested): epoch \(promised) was already promised"
    case .staleEpoch(let requested, let promised):
      return "epoch \(requested) is below the promised epoch \(promised)"
    case .notNewer(let requested, let current):
      return "cannot become primary in epoch \(requested): already in epoch \(current)"
    }
  }
}

/// What the node's shell does after a fencing decision, in order. `persistPromise` must be
/// durable before the node answers the request that caused it or acts on anything after it.
public enum FencingAction: Sendable, Equatable {
  /// Write the promised epoch (and the primary followed, if any) durably.
  case persistPromise(Epoch, primary: String?)
  /// Stop accepting writes now (in-flight ones end as indeterminate) and rejoin as a follower.
  case stepDown(observedEpoch: Epoch)
  /// Record the epoch change in the WAL, then accept writes in `epoch`.
  case becomePrimary(epoch: Epoch)
  /// Replicate from `primary` (close any connection to another one).
  case follow(primary: String, epoch: Epoch)
  /// Stop taking new writes but keep streaming (switchover), or take them again.
  case stopWrites
  case resumeWrites
}

/// What each node keeps to fence old epochs (DESIGN G3): its promised epoch, durable (the shell
/// persists it before answering), and its role. A pure value: the shell feeds it the
/// controller's requests and the epochs it sees on replication frames.
public struct NodeFencing: Sendable, Equatable {
  /// The highest epoch promised to the controller.
  public private(set) var promisedEpoch: Epoch
  public private(set) var role: NodeRole
  /// The epoch the node works in: its own as primary, its primary's as follower.
  public private(set) var epoch: Epoch
  /// The primary it follows, if any.
  public private(set) var primary: String?

  /// - Parameters:
  ///   - promisedEpoch: the persisted promise.
  ///   - role: `.primary` when the node was primary before it restarted (its last log epoch is
  ///     `epoch`); a draining primary restarts as primary.
  public init(promisedEpoch: Epoch, role: NodeRole, epoch: Epoch, primary: String?) {
    self.promisedEpoch = max(promisedEpoch, epoch)
    self.role = role == .draining ? .primary : role
    self.epoch = epoch
    self.primary = primary
  }

  /// Whether the node may accept a write now.
  public var acceptsWrites: Bool { role == .primary && epoch >= promisedEpoch }

  /// The controller asks for a promise of `epoch`: granted only above every earlier promise. A
  /// primary that promises a later epoch stops taking writes: it is fenced.
  public mutating func promise(_ requested: Epoch) throws(FencingError) -> [FencingAction] {
    guard requested > promisedEpoch else {
      throw .promiseNotHigher(requested: requested, promised: promisedEpoch)
    }
    promisedEpoch = requested
    var actions: [FencingAction] = [.persistPromise(requested, primary: primary)]
    if role != .follower {
      role = .follower
      actions.append(.stepDown(observedEpoch: requested))
    }
    return actions
  }

  /// The controller tells this node to become primary in `requested`.
  public mutating func promote(to requested: Epoch) throws(FencingError) -> [FencingAction] {
    guard requested >= promisedEpoch else { throw .staleEpoch(requested: requested, promised: promisedEpoch) }
    if role != .follower && requested == epoch { return role == .draining ? resumeWrites() : [] }
    guard requested > epoch else { throw .notNewer(requested: requested, current: epoch) }
    promisedEpoch = requested
    role = .primary
    epoch = requested
    primary = nil
    return [.persistPromise(requested, primary: nil), .becomePrimary(epoch: requested)]
  }

  /// The controller tells this node to replicate from `newPrimary`, primary in `requested`.
  public mutating func follow(_ newPrimary: String, epoch requested: Epoch) throws(FencingError)
    -> [FencingAction]
  {
    guard requested >= promisedEpoch else { throw .staleEpoch(requested: requested, promised: promisedEpoch) }
    var actions: [FencingAction] = []
    if role != .follower {
      guard requested > epoch else { throw .notNewer(requested: requested, current: epoch) }
      actions.append(.stepDown(observedEpoch: requested))
      role = .follower
    }
    if requested != promisedEpoch || newPrimary != primary {
      actions.insert(.persistPromise(requested, primary: newPrimary), at: 0)
    }
    promisedEpoch = requested
    epoch = requested
    primary = newPrimary
    actions.append(.follow(primary: newPrimary, epoch: requested))
    return actions
  }

  /// A replication frame (or handshake) from a primary in `frameEpoch`: refused below the promise.
  public func checkFrame(epoch frameEpoch: Epoch) throws(FencingError) {
    guard frameEpoch >= promisedEpoch else {
      throw .staleEpoch(requested: frameEpoch, promised: promisedEpoch)
    }
  }

  /// The node learned of `observed` (a follower's promise in a hello, a peer's heartbeat): a
  /// primary of an older epoch steps down.
  public mutating func observe(epoch observed: Epoch) -> [FencingAction] {
    guard observed > epoch, role != .follower else { return [] }
    role = .follower
    primary = nil
    return [.stepDown(observedEpoch: observed)]
  }

  /// The controller asks the primary of `requested` to stop taking writes (switchover).
  public mutating func drain(epoch requested: Epoch) throws(FencingError) -> [FencingAction] {
    guard role == .primary, requested == epoch else {
      throw .staleEpoch(requested: requested, promised: epoch)
    }
    role = .draining
    return [.stopWrites]
  }

  /// The controller abandons a switchover: a draining primary of `requested` takes writes again.
  public mutating func resume(epoch requested: Epoch) throws(FencingError) -> [FencingAction] {
    guard role == .draining, requested == epoch, epoch >= promisedEpoch else {
      throw .staleEpoch(requested: requested, promised: promisedEpoch)
    }
    return resumeWrites()
  }

  private mutating func resumeWrites() -> [FencingAction] {
    role = .primary
    return [.resumeWrites]
  }
}
