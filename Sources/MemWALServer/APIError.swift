import Hummingbird
import MemWALCore
import MemWALLog
import MemWALNode
import MemWALStore
import NIOCore

/// An error as the API returns it: an HTTP status and `{"error": {"code": …, "message": …}}` with a
/// stable code.
public struct APIError: Error, Equatable, Sendable, CustomStringConvertible {
  public var status: HTTPResponse.Status
  public var code: String
  public var message: String

  public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
    self.status = status
    self.code = code
    self.message = message
  }

  public var description: String { "\(status.code) \(code): \(message)" }

  static func badRequest(_ message: String) -> APIError { APIError(.badRequest, "invalid_request", message) }

  var json: JSONValue {
    .object(["error": .object(["code": .string(code), "message": .string(message)])])
  }

  /// Maps every error the layers below can throw to a status and a stable code.
  static func from(_ error: any Error) -> APIError {
    switch error {
    case let error as APIError: return error
    case let error as JSONParseError: return APIError(.badRequest, "malformed_json", error.description)
    case let error as WriteError: return from(error)
    case let error as StoreError: return from(error)
    case let error as WaitError:
      return APIError(.gatewayTimeout, "min_lsn_timeout", "\(error); the write may still be applying, retry")
    case let error as HTTPError where error.status == .contentTooLarge:
      return APIError(.contentTooLarge, "payload_too_large", "the request body exceeds the limit")
    case let error as NIOTooManyBytesError:
      return APIError(
        .contentTooLarge, "payload_too_large",
        "the request body exceeds the limit of \(error.maxBytes.map(String.init) ?? "?") bytes")
    default:
      return APIError(.internalServerError, "internal", "\(error)")
    }
  }

  static func from(_ error: WriteError) -> APIError {
    switch error {
    case .unknownNamespace: return APIError(.notFound, "unknown_namespace", error.description)
    case .namespaceExists: return APIError(.conflict, "namespace_exists", error.description)
    case .invalid(let record):
      if case .dimensionMismatch = record {
        return APIError(.badRequest, "wrong_dimension", error.description)
      }
      if case .tooLarge = record { return APIError(.contentTooLarge, "payload_too_large", error.description) }
      return APIError(.badRequest, "invalid_request", error.description)
    case .notFound: return APIError(.notFound, "not_found", error.description)
    case .versionMismatch: return APIError(.preconditionFailed, "version_mismatch", error.description)
    case .missingEndpoint: return APIError(.badRequest, "missing_endpoint", error.description)
    case .writeInFlight: return APIError(.conflict, "write_in_flight", error.description)
    case .notPrimary: return APIError(.serviceUnavailable, "not_primary", error.description)
    case .insufficientReplicas:
      return APIError(.serviceUnavailable, "insufficient_replicas", error.description)
    case .indeterminate: return APIError(.serviceUnavailable, "indeterminate", error.description)
    case .idempotencyKeyReused:
      return APIError(.unprocessableContent, "idempotency_key_reused", error.description)
    case .log(let walError):
      switch walError {
      case .failed:
        return APIError(.serviceUnavailable, "indeterminate", "the outcome is unknown: \(walError)")
      case .closed: return APIError(.serviceUnavailable, "shutting_down", walError.description)
      case .invalidInput: return APIError(.contentTooLarge, "payload_too_large", walError.description)
      default: return APIError(.internalServerError, "internal", walError.description)
      }
    }
  }

  static func from(_ error: StoreError) -> APIError {
    switch error {
    case .unknownNamespace: return APIError(.notFound, "unknown_namespace", error.description)
    case .notFound: return APIError(.notFound, "not_found", error.description)
    case .invalid(let record):
      if case .dimensionMismatch = record {
        return APIError(.badRequest, "wrong_dimension", error.description)
      }
      return APIError(.badRequest, "invalid_request", error.description)
    case .historyNotRetained: return APIError(.gone, "history_not_retained", error.description)
    case .notYetApplied: return APIError(.badRequest, "not_yet_applied", error.description)
    case .limitExceeded: return APIError(.badRequest, "limit_exceeded", error.description)
    case .corruptSnapshot: return APIError(.internalServerError, "internal", error.description)
    }
  }
}
