import AsyncHTTPClient
import MemWALCore
import NIOCore
import NIOHTTP1

extension MemWALClient {
  /// How a cluster client finds the primary again and retries (docs/failover.md, "Clients").
  public struct FailoverOptions: Sendable, Equatable {
    /// How long one call may take, rediscovery and retries included; then it throws (a write that
    /// may have been sent as ``MemWALClientError/isIndeterminate``, any other as `unavailable`).
    /// Each request's timeout is cut to the time left, and the call gives up as soon as the next
    /// pause would end after the deadline.
    public var deadline: Duration = .seconds(10)
    /// The first pause between attempts and between discovery rounds; it doubles up to
    /// `maximumBackoff`.
    public var initialBackoff: Duration = .milliseconds(25)
    public var maximumBackoff: Duration = .milliseconds(200)
    /// How long one node may take to answer `GET /v1/cluster`.
    public var discoveryTimeout: Duration = .seconds(1)
    /// Gives every write that takes an idempotency key (memories, graph, transactions, deletes of
    /// one record) and has none a random one, so that it can be retried safely. Off by default:
    /// nodes remember a bounded number of keys (100,000 by default).
    public var generatesIdempotencyKeys = false

    public init() {}
  }
}

/// A write as sent: the same bytes on every attempt, so a retry repeats its idempotency key.
struct WriteRequest: Sendable {
  var method: HTTPMethod
  /// The path with its query.
  var path: String
  var body: [UInt8]?
  var idempotencyKey: String?
  var durability: Durability?
}

struct ReadRequest: Sendable {
  var method: HTTPMethod
  var path: String
  var body: [UInt8]?
}

/// What one attempt of a write tells the retry loop. Pure.
enum WriteVerdict {
  case acknowledged(Fields)
  /// A follower's `307`: resend to `location`; `primary` is the address it names.
  case redirected(location: String, primary: String?)
  /// Nothing was written: the node refused before logging, or never got the request. `rediscover`
  /// when the node is not (or no longer) the primary.
  case notWritten(MemWALClientError, rediscover: Bool)
  /// The write may have been logged.
  case unknown(MemWALClientError)
  /// A definite refusal: nothing was written, and trying again will not change that.
  case failed(MemWALClientError)

  init(_ exchange: Exchange, url: String) {
    switch exchange {
    case .failed(let error, requestSent: false):
      self = .notWritten(.unavailable("\(url): \(error)"), rediscover: true)
    case .failed(let error, requestSent: true):
      self = .unknown(
        MemWALClientError(
          status: 0, code: "indeterminate",
          message: "\(url): the request was sent and then the exchange failed: \(error)"))
    case .answered(let answer):
      self.init(answer)
    }
  }

  private init(_ answer: Exchange.Answer) {
    if (200..<300).contains(answer.status) {
      do {
        self = .acknowledged(try Fields(try answer.json()))
      } catch {
        self = .unknown(MemWALClientError(status: answer.status, code: "indeterminate", message: "\(error)"))
      }
      return
    }
    let json = (try? answer.json()) ?? .null
    let error = MemWALClientError(status: answer.status, response: json)
    if answer.status == 307 || answer.status == 308 {
      guard let location = answer.headers.first(name: "Location") else {
        self = .notWritten(error, rediscover: true)
        return
      }
      var primary: String?
      if case .object(let top) = json, case .object(let body)? = top["error"],
        case .string(let address)? = body["primary"]
      {
        primary = address
      }
      self = .redirected(location: location, primary: primary)
      return
    }
    switch (answer.status, error.code) {
    case (503, "not_primary"), (503, "shutting_down"): self = .notWritten(error, rediscover: true)
    case (409, "write_in_flight"): self = .notWritten(error, rediscover: false)
    case (500..., _): self = .unknown(error)
    default: self = .failed(error)
    }
  }
}

/// What one attempt of a read tells the retry loop. Pure.
enum ReadVerdict {
  case answered(Fields)
  /// The node is unreachable, unavailable, or has not applied `min_lsn` in time: ask another.
  case askElsewhere(MemWALClientError, requestSent: Bool)
  case failed(MemWALClientError)

  init(_ exchange: Exchange, url: String) {
    switch exchange {
    case .failed(let error, let requestSent):
      self = .askElsewhere(.unavailable("\(url): \(error)"), requestSent: requestSent)
    case .answered(let answer):
      let json: JSONValue
      do {
        json = try answer.json()
      } catch {
        self = .failed(error)
        return
      }
      guard (200..<300).contains(answer.status) else {
        let error = MemWALClientError(status: answer.status, response: json)
        self =
          [502, 503, 504].contains(answer.status) ? .askElsewhere(error, requestSent: true) : .failed(error)
        return
      }
      do {
        self = .answered(try Fields(json))
      } catch let error as MemWALClientError {
        self = .failed(error)
      } catch {
        self = .failed(
          MemWALClientError(status: answer.status, code: "unexpected_response", message: "\(error)"))
      }
    }
  }
}

/// Pauses that double from `initial` to `maximum`.
struct Backoff {
  private var next: Duration
  private let maximum: Duration

  init(initial: Duration, maximum: Duration) {
    self.next = initial
    self.maximum = maximum
  }

  /// Sleeps for the next pause; false (without sleeping) when it would end after `deadline`.
  /// Cancellation ends the pause early: the caller checks for it.
  mutating func pause(before deadline: ContinuousClock.Instant) async -> Bool {
    let pause = next
    next = min(next * 2, maximum)
    guard ContinuousClock.now + pause < deadline else { return false }
    try? await Task.sleep(for: pause)
    return true
  }
}

extension Duration {
  var timeAmount: TimeAmount {
    let (seconds, attoseconds) = components
    return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
  }
}

extension TimeAmount {
  var duration: Duration { .nanoseconds(nanoseconds) }
}

extension MemWALClient {
  var requestHeaders: HTTPHeaders {
    var headers = HTTPHeaders()
    if let token { headers.add(name: "Authorization", value: "Bearer \(token)") }
    return headers
  }

  func exchange(_ method: HTTPMethod, _ url: String, body: [UInt8]?, timeout: TimeAmount) async -> Exchange {
    var headers = requestHeaders
    if body != nil { headers.add(name: "Content-Type", value: "application/json") }
    return await Exchange.perform(method, url, headers: headers, body: body, timeout: timeout, on: http)
  }

  /// The time left before `deadline` as a request timeout, at most `timeout`; nil when none is left.
  func attemptTimeout(before deadline: ContinuousClock.Instant) -> TimeAmount? {
    let left = deadline - ContinuousClock.now
    guard left > .zero else { return nil }
    return min(timeout, left.timeAmount)
  }

  // MARK: writes

  /// Sends a write to the primary until it is acknowledged, refused, or may have been logged and
  /// cannot be repeated safely. A client of one node makes one attempt (a redirect followed once).
  func perform(_ request: WriteRequest) async throws -> Fields {
    var attempt = WriteAttempts(
      request: request, deadline: ContinuousClock.now + (failover?.deadline ?? timeout.duration),
      backoff: Backoff(
        initial: failover?.initialBackoff ?? .zero, maximum: failover?.maximumBackoff ?? .zero))
    var redirect: String?
    var redirectsInARow = 0
    while true {
      if Task.isCancelled { throw attempt.cancelled() }
      let (url, generation): (String, UInt64)
      if let location = redirect {
        (url, generation) = (location, view.withLock { $0.generation })
      } else {
        (url, generation) = try await primary(for: &attempt)
      }
      redirect = nil
      guard let attemptTimeout = attemptTimeout(before: attempt.deadline) else { throw attempt.expired() }
      let exchange = await exchange(request.method, url, body: request.body, timeout: attemptTimeout)
      let verdict = WriteVerdict(exchange, url: url)
      if Task.isCancelled {
        switch verdict {
        case .acknowledged, .failed: break
        case .unknown: attempt.mayHaveWritten = true
        case .redirected, .notWritten: throw attempt.cancelled()
        }
      }
      switch verdict {
      case .acknowledged(let fields):
        return fields
      case .redirected(let location, let primary):
        redirectsInARow += 1
        let allowed = failover == nil ? 1 : 3
        if redirectsInARow <= allowed {
          if failover != nil { view.withLock { $0.adopt(primary: primary ?? rootOf(location)) } }
          redirect = location
          continue
        }
        let error = MemWALClientError.unavailable("\(url): too many redirects (last to \(location))")
        guard failover != nil else { throw error }
        attempt.lastError = error
        view.withLock { $0.forget(primary: rootOf(url), generation: generation) }
      case .notWritten(let error, let rediscover):
        attempt.lastError = error
        guard failover != nil else { throw attempt.mayHaveWritten ? attempt.indeterminate(error) : error }
        if rediscover {
          if error.status == 503 && error.code == "not_primary" {
            attempt.refused[rootOf(url)] = view.withLock { $0.newestEpoch }
          }
          view.withLock { $0.forget(primary: rootOf(url), generation: generation) }
        }
      case .unknown(let error):
        attempt.mayHaveWritten = true
        attempt.lastError = error
        guard failover != nil, request.idempotencyKey != nil, !Task.isCancelled else {
          throw attempt.indeterminate(error)
        }
        view.withLock { $0.forget(primary: rootOf(url), generation: generation) }
      case .failed(let error):
        var error = error
        error.idempotencyKey = request.idempotencyKey
        // A refusal of this attempt says nothing about an earlier one that may have been logged.
        if attempt.mayHaveWritten { throw attempt.indeterminate(error) }
        throw error
      }
      redirectsInARow = 0
      guard await attempt.backoff.pause(before: attempt.deadline) else { throw attempt.expired() }
    }
  }

  /// `http://host:port` of a full URL (a redirect's `Location`); the URL itself when it has no path.
  func rootOf(_ url: String) -> String {
    let bytes = Array(url.utf8)
    guard let colon = bytes.indices.first(where: { bytes[$0...].starts(with: "://".utf8) }),
      let end = bytes[(colon + 3)...].firstIndex(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") }
      )
    else { return url }
    return String(decoding: bytes[..<end], as: UTF8.self)
  }

  /// Where the next attempt goes (with the view's generation then): the known primary, or one found
  /// by asking every known address, round after round, until the deadline.
  private func primary(for attempt: inout WriteAttempts) async throws -> (String, UInt64) {
    let known = view.withLock { view in
      view.primary.map { ($0, view.generation, view.newestEpoch) }
    }
    if let (primary, generation, epoch) = known, attempt.refused[primary].map({ epoch > $0 }) ?? true {
      return (primary + attempt.request.path, generation)
    }
    guard let failover else { return (baseURL + attempt.request.path, view.withLock { $0.generation }) }
    while true {
      if Task.isCancelled { throw attempt.cancelled() }
      guard let roundTimeout = attemptTimeout(before: attempt.deadline) else { throw attempt.expired() }
      if let chosen = await discoverPrimary(
        timeout: min(roundTimeout, failover.discoveryTimeout.timeAmount), refused: attempt.refused)
      {
        return (chosen.address + attempt.request.path, chosen.generation)
      }
      guard await attempt.backoff.pause(before: attempt.deadline) else { throw attempt.expired() }
    }
  }

  // MARK: reads

  /// Sends a read to the primary, or to another member when a node is unreachable or unavailable
  /// (reads are safe to repeat; `min_lsn` travels with each). A client of one node asks it once.
  func performRead(_ request: ReadRequest) async throws -> Fields {
    guard let failover else {
      let exchange = await exchange(
        request.method, baseURL + request.path, body: request.body, timeout: timeout)
      switch ReadVerdict(exchange, url: baseURL) {
      case .answered(let fields): return fields
      case .askElsewhere(let error, _), .failed(let error): throw error
      }
    }
    let deadline = ContinuousClock.now + failover.deadline
    var backoff = Backoff(initial: failover.initialBackoff, maximum: failover.maximumBackoff)
    if !view.withLock({ $0.hasDiscovered }), let timeout = attemptTimeout(before: deadline) {
      _ = await discoverPrimary(timeout: min(timeout, failover.discoveryTimeout.timeAmount), refused: [:])
    }
    var lastError = MemWALClientError.unavailable("no node answered within \(failover.deadline)")
    while true {
      let (targets, generation) = view.withLock { ($0.readTargets, $0.generation) }
      for url in targets {
        try Task.checkCancellation()
        guard let timeout = attemptTimeout(before: deadline) else { throw lastError }
        let exchange = await exchange(
          request.method, url + request.path, body: request.body, timeout: timeout)
        try Task.checkCancellation()
        switch ReadVerdict(exchange, url: url) {
        case .answered(let fields):
          return fields
        case .askElsewhere(let error, let requestSent):
          lastError = error
          if !requestSent { view.withLock { $0.forget(primary: url, generation: generation) } }
        case .failed(let error):
          throw error
        }
      }
      guard await backoff.pause(before: deadline), let timeout = attemptTimeout(before: deadline) else {
        throw lastError
      }
      _ = await discoverPrimary(timeout: min(timeout, failover.discoveryTimeout.timeAmount), refused: [:])
    }
  }

  // MARK: discovery

  /// One discovery round: asks every known address for `GET /v1/cluster` at once, learns the
  /// members, and adopts the primary the answers agree on (``ClusterAnswer/choosePrimary``), if any.
  func discoverPrimary(timeout: TimeAmount, refused: [String: UInt64]) async -> (
    address: String, generation: UInt64
  )? {
    let targets = view.withLock { $0.discoveryTargets }
    let answers = await withTaskGroup(of: (Int, ClusterAnswer?).self) { group in
      for (index, target) in targets.enumerated() {
        group.addTask {
          let exchange = await self.exchange(.GET, target + "/v1/cluster", body: nil, timeout: timeout)
          guard case .answered(let answer) = exchange, (200..<300).contains(answer.status),
            let json = try? answer.json()
          else { return (index, nil) }
          return (index, ClusterAnswer(endpoint: target, json))
        }
      }
      var answers: [(Int, ClusterAnswer)] = []
      for await case (let index, let answer?) in group { answers.append((index, answer)) }
      return answers.sorted { $0.0 < $1.0 }.map(\.1)
    }
    return view.withLock { view in
      view.learn(from: answers)
      guard let chosen = ClusterAnswer.choosePrimary(answers, refused: refused) else { return nil }
      view.adopt(primary: chosen.endpoint)
      return (chosen.endpoint, view.generation)
    }
  }
}

/// The state of one write call across its attempts.
struct WriteAttempts {
  let request: WriteRequest
  let deadline: ContinuousClock.Instant
  var backoff: Backoff
  /// True once an attempt may have been logged: giving up then is indeterminate, not a failure.
  var mayHaveWritten = false
  var lastError: MemWALClientError?
  /// Nodes that answered `not_primary`, with the newest epoch known then.
  var refused: [String: UInt64] = [:]

  func indeterminate(_ error: MemWALClientError) -> MemWALClientError {
    var result = error
    if !error.isIndeterminate {
      result = MemWALClientError(
        status: error.status, code: "indeterminate",
        message: "the outcome is unknown: \(error.code): \(error.message)")
    }
    result.idempotencyKey = request.idempotencyKey
    return result
  }

  /// The error when the deadline passes.
  func expired() -> MemWALClientError {
    let last = lastError.map { "; last: \($0)" } ?? ""
    if mayHaveWritten {
      return MemWALClientError(
        status: lastError?.status ?? 0, code: "indeterminate",
        message: "the write may have been logged and no primary confirmed it before the deadline\(last)",
        idempotencyKey: request.idempotencyKey)
    }
    return MemWALClientError(
      status: lastError?.status ?? 0, code: "unavailable",
      message: "no primary took the write before the deadline; nothing was written\(last)",
      idempotencyKey: request.idempotencyKey)
  }

  func cancelled() -> any Error {
    guard mayHaveWritten else { return CancellationError() }
    return MemWALClientError(
      status: 0, code: "indeterminate", message: "cancelled after the request was sent",
      idempotencyKey: request.idempotencyKey)
  }
}
