/// How durable a write must be before it is acknowledged (DESIGN §3). Ordered from weakest to
/// strongest; the log itself reaches `memory` and `local`, replication adds the rest.
public enum Durability: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
  /// Written to the operating system, not fsynced: scratch data that a crash may lose.
  case memory = 0
  /// `fdatasync`ed on this node before the acknowledgement.
  case local = 1
  /// Flushed on this node and on k followers.
  case quorum = 2
  /// Applied on every follower.
  case allApplied = 3

  public static func < (lhs: Durability, rhs: Durability) -> Bool { lhs.rawValue < rhs.rawValue }

  public var description: String {
    switch self {
    case .memory: return "memory"
    case .local: return "local"
    case .quorum: return "quorum"
    case .allApplied: return "all_applied"
    }
  }

  public init?(name: String) {
    guard let match = Durability.allCases.first(where: { $0.description == name }) else { return nil }
    self = match
  }
}
