/// A write that the log refuses before anything is written: the input breaks a limit of the format.
public enum WALInputError: Error, Equatable, Sendable, CustomStringConvertible {
  case invalid(field: String, reason: String)
  case recordTooLarge(bytes: Int, limit: Int)

  public var description: String {
    switch self {
    case .invalid(let field, let reason): return "invalid \(field): \(reason)"
    case .recordTooLarge(let bytes, let limit):
      return "record of \(bytes) bytes exceeds the limit of \(limit) bytes"
    }
  }
}
