import MemWALCore

/// An error the node answered with (`{"error": {"code", "message"}}`), or one the client made: a
/// response it could not read (`unexpected_response`), no node reachable (`unavailable`), or a write
/// whose outcome it cannot know (`indeterminate`, see ``isIndeterminate``).
public struct MemWALClientError: Error, Equatable, Sendable, CustomStringConvertible {
  /// The HTTP status, or 0 when no node answered (the client made the error).
  public var status: Int
  public var code: String
  public var message: String
  /// The idempotency key the write carried: repeat the write with it to learn its outcome.
  public var idempotencyKey: String?

  init(status: Int, code: String, message: String, idempotencyKey: String? = nil) {
    self.status = status
    self.code = code
    self.message = message
    self.idempotencyKey = idempotencyKey
  }

  init(status: Int, response: JSONValue) {
    if case .object(let top) = response, case .object(let error)? = top["error"],
      case .string(let code)? = error["code"]
    {
      let message: String
      if case .string(let text)? = error["message"] { message = text } else { message = "" }
      self.init(status: status, code: code, message: message)
    } else {
      self.init(status: status, code: "unexpected_response", message: response.jsonText)
    }
  }

  /// True when the write may or may not have taken effect: the node logged it but could not confirm
  /// the durability asked for (`indeterminate`, `insufficient_replicas`), or the connection failed
  /// after the request was sent. Such a write is neither acknowledged nor failed; repeating it with
  /// the same idempotency key answers which.
  public var isIndeterminate: Bool { code == "indeterminate" || code == "insufficient_replicas" }

  public var description: String {
    let key = idempotencyKey.map { " (idempotency key \($0))" } ?? ""
    return "\(status) \(code): \(message)\(key)"
  }

  static func unavailable(_ message: String) -> MemWALClientError {
    MemWALClientError(status: 0, code: "unavailable", message: message)
  }
}

extension MemWALClient {
  /// How a write ended, for callers that must tell the three apart (a chaos or failover harness):
  /// acknowledged at the durability asked for, failed (nothing was written), or indeterminate.
  public enum Outcome: Sendable {
    case acknowledged(WriteResult)
    /// The write did not take effect.
    case failed(any Error)
    /// The write may or may not have taken effect (``MemWALClientError/isIndeterminate``), or a
    /// repeat of its idempotency key found it at a lower durability than was asked for.
    case indeterminate(MemWALClientError)

    /// Runs `write` and classifies how it ended.
    public init(_ write: () async throws -> WriteResult) async {
      do {
        self.init(try await write())
      } catch let error as MemWALClientError where error.isIndeterminate {
        self = .indeterminate(error)
      } catch {
        self = .failed(error)
      }
    }

    /// An answer is acknowledged unless it repeats an idempotency key whose write the node holds at
    /// a lower durability than this call asked for: a repeat answered from the node's store reports
    /// the durability the record has there, and a `quorum` write found only on the primary is not
    /// yet known to survive the loss of that node.
    public init(_ result: WriteResult) {
      if result.isRepeat, let requested = result.requestedDurability, result.durability < requested {
        self = .indeterminate(
          MemWALClientError(
            status: 0, code: "indeterminate",
            message:
              "a repeat found the write at LSN \(result.lsn) with durability \(result.durability); "
              + "\(requested) was asked for and is not confirmed"))
      } else {
        self = .acknowledged(result)
      }
    }

    public var isAcknowledged: Bool {
      if case .acknowledged = self { return true }
      return false
    }

    public var isIndeterminate: Bool {
      if case .indeterminate = self { return true }
      return false
    }
  }
}
