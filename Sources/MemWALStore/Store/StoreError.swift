import MemWALCore

/// Why a read (or an apply) was refused. Reads never change anything.
public enum StoreError: Error, Equatable, Sendable, CustomStringConvertible {
  case unknownNamespace(String)
  case notFound(target: TargetType, id: String)
  case invalid(RecordError)
  /// The read asked for a point older than the retained history.
  case historyNotRetained(requested: LSN, oldest: LSN)
  /// The read asked for a point the store has not applied yet.
  case notYetApplied(requested: LSN, applied: LSN)
  case limitExceeded(String)
  case corruptSnapshot(String)

  public var description: String {
    switch self {
    case .unknownNamespace(let name): return "unknown namespace \(name)"
    case .notFound(let target, let id): return "\(target) \(id) not found"
    case .invalid(let error): return error.description
    case .historyNotRetained(let requested, let oldest):
      return "history at LSN \(requested) is no longer retained (the oldest readable LSN is \(oldest))"
    case .notYetApplied(let requested, let applied):
      return "LSN \(requested) is not applied yet (applied through \(applied))"
    case .limitExceeded(let detail): return detail
    case .corruptSnapshot(let detail): return "corrupt snapshot: \(detail)"
    }
  }
}
