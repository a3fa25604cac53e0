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

/// What a node persists to fence old epochs, and restarts from.
public struct FencingState: Sendable, Equatable {
  /// The highest epoch promised to the controller.
  public var promisedEpoch: Epoch
  /// `.primary` or `.draining` once the node has been promoted in `epoch` (a drain is durable, so
  /// a restart cannot take writes behind a switchover's back).
  public var role: FencedRole
  /// The epoch the node works in: its own as primary, its primary's as follower.
  public var epoch: Epoch
  /// The primary it follows, if any.
  public var primary: String?

  public init(promisedEpoch: Epoch, role: FencedRole, epoch: Epoch, primary: String?) {
    self.promisedEpoch = max(promisedEpoch, epoch)
    self.role = role
    self.epoch = epoch
    self.primary = primary
  }
}

/// What the node's shell does after a fencing decision, in order. `persist` must be durable
/// before the node answers the request that caused it or carries out the actions after it.
public enum FencingAction: Sendable, Equatable {
  /// Write the state durably (the node restarts from it).
  case persist(FencingState)
  /// Stop accepting writes now (in-flight ones end as indeterminate) and rejoin as a follower.
  case stepDown(observedEpoch: Epoch)
  /// Record the epoch change in the WAL, then accept writes in `epoch`.
  case becomePrimary(epoch: Epoch)
  /// Replicate from `primary` (close any connection to another one).
  case follow(primary: String, epoch: Epoch)
  /// Switchover: stop taking new writes, flush everything logged (the node's reports' flushed
  /// LSN is then its last LSN) and keep streaming.
  case stopWrites
  /// The switchover was abandoned: take writes again.
  case resumeWrites
}

/// What each node keeps to fence old epochs (DESIGN G3): its promised epoch, durable (the shell
/// persists it before answering), and its role. A pure value: the shell feeds it the
/// controller's requests and the epochs it sees on replication frames.
public struct NodeFencing: Sendable, Equatable {
  /// The durable part, as last handed to the shell to persist.
  public private(set) var state: FencingState

  /// - Parameter state: the persisted state (on a first start: promised and epoch zero, follower).
  public init(state: FencingState) {
    self.state = state
  }

  public var promisedEpoch: Epoch { state.promisedEpoch }
  public var role: FencedRole { state.role }
  public var epoch: Epoch { state.epoch }
  public var primary: String? { state.primary }

  /// Whether the node may accept a write now.
  public var acceptsWrites: Bool { state.role == .primary && state.epoch >= state.promisedEpoch }

  /// The controller asks for a promise of `epoch`: granted only above every earlier promise. A
  /// primary that promises a later epoch stops taking writes: it is fenced.
  public mutating func promise(_ requested: Epoch) throws(FencingError) -> [FencingAction] {
    guard requested > state.promisedEpoch else {
      throw .promiseNotHigher(requested: requested, promised: state.promisedEpoch)
    }
    state.promisedEpoch = requested
    let wasPrimary = state.role != .follower
    state.role = .follower
    return [.persist(state)] + (wasPrimary ? [.stepDown(observedEpoch: requested)] : [])
  }

  /// The controller tells this node to become primary in `requested`.
  public mutating func promote(to requested: Epoch) throws(FencingError) -> [FencingAction] {
    guard requested >= state.promisedEpoch else {
      throw .staleEpoch(requested: requested, promised: state.promisedEpoch)
    }
    if state.role != .follower && requested == state.epoch {
      return state.role == .draining ? resumeWrites() : []
    }
    guard requested > state.epoch else { throw .notNewer(requested: requested, current: state.epoch) }
    state = FencingState(promisedEpoch: requested, role: .primary, epoch: requested, primary: nil)
    return [.persist(state), .becomePrimary(epoch: requested)]
  }

  /// The controller tells this node to replicate from `newPrimary`, primary in `requested`.
  public mutating func follow(_ newPrimary: String, epoch requested: Epoch) throws(FencingError)
    -> [FencingAction]
  {
    guard requested >= state.promisedEpoch else {
      throw .staleEpoch(requested: requested, promised: state.promisedEpoch)
    }
    let wasPrimary = state.role != .follower
    if wasPrimary {
      guard requested > state.epoch else { throw .notNewer(requested: requested, current: state.epoch) }
    }
    let next = FencingState(promisedEpoch: requested, role: .follower, epoch: requested, primary: newPrimary)
    var actions: [FencingAction] = next == state ? [] : [.persist(next)]
    state = next
    if wasPrimary { actions.append(.stepDown(observedEpoch: requested)) }
    actions.append(.follow(primary: newPrimary, epoch: requested))
    return actions
  }

  /// A replication frame (or handshake) from a primary in `frameEpoch`: refused below the promise.
  public func checkFrame(epoch frameEpoch: Epoch) throws(FencingError) {
    guard frameEpoch >= state.promisedEpoch else {
      throw .staleEpoch(requested: frameEpoch, promised: state.promisedEpoch)
    }
  }

  /// The node learned of `observed` (a follower's promise in a hello, a peer's heartbeat): a
  /// primary of an older epoch steps down.
  public mutating func observe(epoch observed: Epoch) -> [FencingAction] {
    guard observed > state.epoch, state.role != .follower else { return [] }
    state.role = .follower
    state.primary = nil
    return [.persist(state), .stepDown(observedEpoch: observed)]
  }

  /// The controller asks the primary of `requested` to stop taking writes (switchover).
  public mutating func drain(epoch requested: Epoch) throws(FencingError) -> [FencingAction] {
    guard state.role != .follower, requested == state.epoch else {
      throw .staleEpoch(requested: requested, promised: state.epoch)
    }
    guard state.role == .primary else { return [] }
    state.role = .draining
    return [.persist(state), .stopWrites]
  }

  /// The controller abandons a switchover: a draining primary of `requested` takes writes again.
  public mutating func resume(epoch requested: Epoch) throws(FencingError) -> [FencingAction] {
    guard state.role == .draining, requested == state.epoch, state.epoch >= state.promisedEpoch else {
      throw .staleEpoch(requested: requested, promised: state.promisedEpoch)
    }
    return resumeWrites()
  }

  private mutating func resumeWrites() -> [FencingAction] {
    state.role = .primary
    return [.persist(state), .resumeWrites]
  }
}
