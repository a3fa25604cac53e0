import AsyncHTTPClient
import MemWALCore
import NIOCore
import NIOHTTP1
import Synchronization

/// One HTTP request and how it ended: an answer, or a failure that says whether the request could
/// have reached the node. That is what decides if a failed write may have taken effect.
enum Exchange: Sendable {
  case answered(Answer)
  /// `requestSent` is false when the request head was never handed to a connection (refused,
  /// unreachable, a connect timeout, a TLS handshake failure): the node cannot have acted on it.
  case failed(any Error, requestSent: Bool)

  struct Answer: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: ByteBuffer

    /// The body as JSON (`null` when empty). A body that is not JSON is an `unexpected_response`.
    func json() throws(MemWALClientError) -> JSONValue {
      guard body.readableBytes > 0 else { return .null }
      do {
        return try JSONParser.parse(Array(body.readableBytesView))
      } catch {
        throw MemWALClientError(
          status: status, code: "unexpected_response",
          message: "\(error): \(String(decoding: body.readableBytesView.prefix(200), as: UTF8.self))")
      }
    }
  }

  /// The largest response body read.
  static let maximumBodyBytes = 256 << 20

  /// Sends `method url` with `body` and waits at most `timeout` for the whole answer. Cancelling
  /// the calling task cancels the request.
  static func perform(
    _ method: HTTPMethod, _ url: String, headers: HTTPHeaders, body: [UInt8]?, timeout: TimeAmount,
    on http: HTTPClient
  ) async -> Exchange {
    let request: HTTPClient.Request
    do {
      request = try HTTPClient.Request(
        url: url, method: method, headers: headers, body: body.map { .bytes($0) })
    } catch {
      return .failed(error, requestSent: false)
    }
    let delegate = ExchangeDelegate()
    let task = http.execute(request: request, delegate: delegate, deadline: .now() + timeout)
    do {
      let answer = try await withTaskCancellationHandler {
        try await task.get()
      } onCancel: {
        task.cancel()
      }
      return .answered(answer)
    } catch {
      return .failed(error, requestSent: delegate.requestSent)
    }
  }
}

/// Collects the answer and notes whether the request head was handed to a connection
/// (AsyncHTTPClient calls `didSendRequestHead` as it writes the head, before any body).
private final class ExchangeDelegate: HTTPClientResponseDelegate {
  typealias Response = Exchange.Answer

  private struct State {
    var requestSent = false
    var head: HTTPResponseHead?
    var body = ByteBuffer()
  }

  private let state = Mutex(State())

  var requestSent: Bool { state.withLock { $0.requestSent } }

  func didSendRequestHead(task: HTTPClient.Task<Response>, _ head: HTTPRequestHead) {
    state.withLock { $0.requestSent = true }
  }

  func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
    state.withLock { $0.head = head }
    return task.eventLoop.makeSucceededVoidFuture()
  }

  func didReceiveBodyPart(task: HTTPClient.Task<Response>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
    let fits = state.withLock { state in
      guard state.body.readableBytes + buffer.readableBytes <= Exchange.maximumBodyBytes else { return false }
      var part = buffer
      state.body.writeBuffer(&part)
      return true
    }
    guard fits else {
      return task.eventLoop.makeFailedFuture(
        MemWALClientError(
          status: 0, code: "unexpected_response",
          message: "the response body exceeds \(Exchange.maximumBodyBytes) bytes"))
    }
    return task.eventLoop.makeSucceededVoidFuture()
  }

  func didFinishRequest(task: HTTPClient.Task<Response>) throws -> Response {
    try state.withLock { state in
      guard let head = state.head else {
        throw MemWALClientError(status: 0, code: "unexpected_response", message: "no response head")
      }
      return Exchange.Answer(status: Int(head.status.code), headers: head.headers, body: state.body)
    }
  }
}
