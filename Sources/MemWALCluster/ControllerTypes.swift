import MemWALCore

/// A member of the cluster as the failover controller knows it.
public struct ClusterMember: Sendable, Equatable, Hashable {
  /// The node's name (its `nodeID`).
  public var name: String
  /// Breaks ties between equally advanced candidates: the higher priority is promoted.
  public var priority: Int

  public init(name: String, priority: Int = 0) {
    self.name = name
    self.priority = priority
  }
}

/// The controller's durable state: all a restarted controller starts from (DESIGN §6). The shell
/// keeps it in a local file (`temp → fsync → rename → fsync dir`) when told to by
/// `ControllerAction.persist`.
public struct ControllerRecord: Sendable, Equatable {
  /// The newest epoch the controller has assigned.
  public var epoch: Epoch
  /// The node promoted in `epoch`; nil before the first promotion.
  public var primary: String?
  public var members: [ClusterMember]
  /// k: how many followers must have flushed a write before the primary acknowledges it at `quorum`.
  public var quorumFollowers: Int
  /// The smallest k in force since `epoch` began. A write acknowledged while k was lower is on
  /// only that many followers, so elections count promises against this floor, not against k.
  public var quorumFloor: Int

  public init(
    epoch: Epoch, primary: String?, members: [ClusterMember], quorumFollowers: Int, quorumFloor: Int? = nil
  ) {
    self.epoch = epoch
    self.primary = primary
    self.members = members
    self.quorumFollowers = quorumFollowers
    self.quorumFloor = quorumFloor ?? quorumFollowers
  }
}

/// What a node does, as it reports it.
public enum FencedRole: String, Sendable, Equatable {
  /// Accepts writes in its epoch.
  case primary
  /// A primary told to stop taking writes for a switchover; it still streams its log.
  case draining
  case follower

  /// The role's byte on the wire and in the fencing state file.
  public var code: UInt8 {
    switch self {
    case .primary: return 1
    case .draining: return 2
    case .follower: return 3
    }
  }

  public init?(code: UInt8) {
    switch code {
    case 1: self = .primary
    case 2: self = .draining
    case 3: self = .follower
    default: return nil
    }
  }
}

/// What a node tells the controller in answer to a heartbeat.
public struct NodeReport: Sendable, Equatable {
  public var role: FencedRole
  /// The epoch the node works in: its own as primary, its primary's as follower.
  public var epoch: Epoch
  /// The highest epoch it has promised (durably) to the controller.
  public var promisedEpoch: Epoch
  public var flushedLSN: LSN
  public var appliedLSN: LSN
  /// The epoch of the last record in its log.
  public var lastEpochInLog: Epoch
  /// The primary a follower replicates from, if it has been told one.
  public var primary: String?
  /// Whether the node's replication link to its primary is healthy (true for a primary).
  public var seesPrimary: Bool
  /// The k a primary applies to `quorum` writes; nil from a follower.
  public var quorumFollowers: Int?

  public init(
    role: FencedRole, epoch: Epoch, promisedEpoch: Epoch, flushedLSN: LSN, appliedLSN: LSN,
    lastEpochInLog: Epoch, primary: String?, seesPrimary: Bool, quorumFollowers: Int? = nil
  ) {
    self.role = role
    self.epoch = epoch
    self.promisedEpoch = promisedEpoch
    self.flushedLSN = flushedLSN
    self.appliedLSN = appliedLSN
    self.lastEpochInLog = lastEpochInLog
    self.primary = primary
    self.seesPrimary = seesPrimary
    self.quorumFollowers = quorumFollowers
  }
}

/// What the controller asks its shell to do.
///
/// Ordering rule: the shell carries out the actions of one call in the order given, and a
/// `persist` must be durable before any action after it is carried out. If the controller (or
/// its shell) dies between a `persist` and the actions after it, the restarted controller starts
/// from the persisted record and sends them again as needed; if it dies before the `persist` is
/// durable, nothing after it has happened. Messages to different nodes may otherwise be sent
/// concurrently.
public enum ControllerAction: Sendable, Equatable {
  /// Ask the node for a `NodeReport`; report the answer with `report(from:_:now:)`, or
  /// `unreachable(_:now:)` if it cannot be reached.
  case heartbeat(node: String)
  /// Ask the node to promise `epoch` (see `NodeFencing.promise(_:)`) and to say its flushed LSN
  /// and the last epoch in its log.
  case requestPromise(node: String, epoch: Epoch)
  /// Tell the node to become primary in `epoch` (it records the epoch change in its WAL).
  case promote(node: String, epoch: Epoch)
  /// Tell the node to replicate from `primary`, which is primary in `epoch`.
  case follow(node: String, primary: String, epoch: Epoch)
  /// Tell the primary to stop taking writes (for a switchover): it persists that it drains (see
  /// `NodeFencing.drain(epoch:)`), flushes everything logged, then reports `.draining` with its
  /// last LSN as flushed LSN, and keeps streaming its log.
  case drain(node: String, epoch: Epoch)
  /// Tell a draining primary to take writes again (an abandoned switchover).
  case resume(node: String, epoch: Epoch)
  /// Tell the primary of `epoch` that k is now `quorumFollowers`.
  case setQuorum(node: String, quorumFollowers: Int, epoch: Epoch)
  /// Write the record durably before carrying out any later action.
  case persist(ControllerRecord)
  /// A line for the log and `memwal ctl status`: what the controller did, or why it did not.
  case status(String)
}

/// An operator command the controller refuses.
public enum ControllerCommandError: Error, Sendable, Equatable, CustomStringConvertible {
  case unknownMember(String)
  case alreadyPrimary(String)
  case noPrimary
  /// An election or a switchover is under way.
  case busy(String)
  case unreachable(String)
  case invalidQuorum(requested: Int, followers: Int)

  public var description: String {
    switch self {
    case .unknownMember(let name): return "\(name) is not a member of the cluster"
    case .alreadyPrimary(let name): return "\(name) is already the primary"
    case .noPrimary: return "there is no primary to switch over from"
    case .busy(let what): return "the controller is busy: \(what)"
    case .unreachable(let name): return "\(name) is not reachable"
    case .invalidQuorum(let requested, let followers):
      return "k = \(requested) is not between 0 and the number of followers (\(followers))"
    }
  }
}
