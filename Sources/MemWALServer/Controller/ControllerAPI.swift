import Hummingbird
import Logging
import MemWALCluster
import MemWALCore
import NIOCore

/// The failover controller's HTTP API (plain HTTP on `cluster.controller.api`; docs/failover.md,
/// "Running the controller"):
///
/// - `GET /v1/cluster`: the record, the phase, the last status line and every member as the
///   controller sees it (field names shared with a node's `GET /v1/cluster` where they overlap).
/// - `GET /v1/status`: the same plus the last status lines with their times.
/// - `POST /v1/switchover {"to": NODE}` → 202; `POST /v1/promote {"node": NODE, "force": true}`;
///   `POST /v1/quorum {"k": K}`.
///
/// A command the controller refuses is a 409 with `{"error": {"code", "message"}}` (codes:
/// `unknown_member`, `already_primary`, `no_primary`, `busy`, `unreachable`, `invalid_quorum`); a bad
/// body is a 400 with the same shape; a halted or stopping controller answers 503.
public enum ControllerAPI {
  /// Request bodies are a few dozen bytes.
  public static let maximumBodyBytes = 16 << 10

  public static let routes = [
    "GET /healthz", "GET /v1/cluster", "GET /v1/status", "POST /v1/switchover", "POST /v1/promote",
    "POST /v1/quorum",
  ]

  public static func makeRouter(service: ControllerService) -> Router<BasicRequestContext> {
    let router = Router(context: BasicRequestContext.self)
    router.get("/healthz") { _, _ in json(.object(["status": .string("ok")]), status: .ok) }
    router.get("/v1/cluster") { _, _ in
      await respond { clusterJSON(try await service.snapshot(), includeStatusLines: false) }
    }
    router.get("/v1/status") { _, _ in
      await respond { clusterJSON(try await service.snapshot(), includeStatusLines: true) }
    }
    router.post("/v1/switchover") { request, _ in
      await respond(status: .accepted) {
        let body = try await fields(of: request)
        try body.allowOnly(["to"])
        let started = try await service.switchover(to: try body.string("to"))
        return .object([
          "started": .bool(true), "from": .string(started.from), "to": .string(started.to),
          "epoch": number(started.epoch.rawValue),
        ])
      }
    }
    router.post("/v1/promote") { request, _ in
      await respond {
        let body = try await fields(of: request)
        try body.allowOnly(["node", "force"])
        let node = try body.string("node")
        guard body.fields["force"] == .bool(true) else {
          throw APIError.badRequest(
            "a promotion without promises may lose acknowledged writes; it needs \"force\": true")
        }
        let promotion = try await service.forcePromote(node)
        return .object([
          "promoted": .string(promotion.node), "epoch": number(promotion.epoch.rawValue),
          "status": .string(promotion.status),
        ])
      }
    }
    router.post("/v1/quorum") { request, _ in
      await respond {
        let body = try await fields(of: request)
        try body.allowOnly(["k"])
        let change = try await service.setQuorum(try body.integer("k"))
        return .object([
          "previous_quorum": .number(Double(change.previous)), "quorum": .number(Double(change.quorum)),
          "quorum_floor": .number(Double(change.floor)), "status": .string(change.status),
        ])
      }
    }
    return router
  }

  /// The application on `host:port` (port 0: any free port, reported through `onRunning`).
  public static func makeApplication(
    service: ControllerService, host: String, port: Int, logger: Logger,
    onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
  ) -> some ApplicationProtocol {
    Application(
      router: makeRouter(service: service),
      configuration: .init(address: .hostname(host, port: port), serverName: "memwal-controller"),
      onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) }, logger: logger)
  }

  /// Serves the API until SIGTERM or SIGINT (then returns) or until the controller halts (then
  /// throws ``ControllerUnavailableError/halted(_:)``); stops the service either way.
  public static func run(
    service: ControllerService, host: String, port: Int, logger: Logger,
    onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
  ) async throws {
    let application = makeApplication(
      service: service, host: host, port: port, logger: logger, onRunning: onRunning)
    do {
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await application.runService(gracefulShutdownSignals: [.sigterm, .sigint]) }
        group.addTask {
          if let reason = await service.untilHalted() { throw ControllerUnavailableError.halted(reason) }
        }
        _ = try await group.next()
        group.cancelAll()
      }
    } catch {
      await service.stop()
      throw error
    }
    await service.stop()
  }

  // MARK: representation

  /// `GET /v1/cluster` (and, with the status lines, `GET /v1/status`).
  public static func clusterJSON(_ snapshot: ControllerSnapshot, includeStatusLines: Bool) -> JSONValue {
    let settings = snapshot.settings
    let record = snapshot.record
    let primary = record.primary.map { name -> JSONValue in
      .object([
        "name": .string(name),
        "api": settings.members.first { $0.name == name }.map { .string($0.api) } ?? .null,
      ])
    }
    var fields: JSONObject = [
      "cluster": .string(settings.clusterName), "epoch": number(record.epoch.rawValue),
      "primary": primary ?? .null, "quorum": .number(Double(record.quorumFollowers)),
      "quorum_floor": .number(Double(record.quorumFloor)), "phase": .string(snapshot.phase),
      "phase_detail": .string(snapshot.phaseDetail),
      "controller": .object([
        "name": .string(settings.controllerName), "api": .string(settings.controllerAPI),
      ]),
      "last_status": .string(snapshot.lastStatus),
      "members": .array(snapshot.members.map(memberJSON)),
    ]
    if includeStatusLines {
      fields["status_lines"] = .array(
        snapshot.statusLines.map { line in
          .object([
            "seq": .number(Double(line.sequence)), "at": .string(formatTimestamp(line.atMicroseconds)),
            "text": .string(line.text), "repeats": .number(Double(line.repeats)),
          ])
        })
    }
    return .object(fields)
  }

  static func memberJSON(_ state: ControllerSnapshot.MemberState) -> JSONValue {
    let member = state.member
    var fields: JSONObject = [
      "name": .string(member.name), "api": .string(member.api), "replication": .string(member.replication),
      "control": .string(member.control), "priority": .number(Double(member.priority)),
      "reachable": .bool(state.isReachable),
    ]
    let keys = [
      "role", "epoch", "promised_epoch", "flushed_lsn", "applied_lsn", "last_log_epoch", "follows",
      "sees_primary",
    ]
    for key in keys { fields[key] = .null }
    if let report = state.report {
      fields["role"] = .string(report.role.rawValue)
      fields["epoch"] = number(report.epoch.rawValue)
      fields["promised_epoch"] = number(report.promisedEpoch.rawValue)
      fields["flushed_lsn"] = number(report.flushedLSN.rawValue)
      fields["applied_lsn"] = number(report.appliedLSN.rawValue)
      fields["last_log_epoch"] = number(report.lastEpochInLog.rawValue)
      fields["follows"] = report.primary.map { .string($0) } ?? .null
      fields["sees_primary"] = .bool(report.seesPrimary)
    }
    return .object(fields)
  }

  /// The code and status of a command the controller refused.
  public static func apiError(for error: ControllerCommandError) -> APIError {
    let code: String
    switch error {
    case .unknownMember: code = "unknown_member"
    case .alreadyPrimary: code = "already_primary"
    case .noPrimary: code = "no_primary"
    case .busy: code = "busy"
    case .unreachable: code = "unreachable"
    case .invalidQuorum: code = "invalid_quorum"
    }
    return APIError(.conflict, code, error.description)
  }

  // MARK: plumbing

  static func number(_ value: UInt64) -> JSONValue { .number(Double(value)) }

  static func respond(status: HTTPResponse.Status = .ok, _ body: () async throws -> JSONValue) async
    -> Response
  {
    do {
      return json(try await body(), status: status)
    } catch let error as ControllerCommandError {
      let failure = apiError(for: error)
      return json(failure.json, status: failure.status)
    } catch let error as ControllerUnavailableError {
      return json(
        APIError(.serviceUnavailable, "unavailable", error.description).json, status: .serviceUnavailable)
    } catch {
      let failure = APIError.from(error)
      return json(failure.json, status: failure.status)
    }
  }

  static func json(_ value: JSONValue, status: HTTPResponse.Status) -> Response {
    Response(
      status: status, headers: [.contentType: "application/json"],
      body: ResponseBody(byteBuffer: ByteBuffer(string: value.jsonText + "\n")))
  }

  /// The request's JSON object, up to ``maximumBodyBytes``.
  static func fields(of request: Request) async throws -> JSONFields {
    var request = request
    let buffer = try await request.collectBody(upTo: maximumBodyBytes)
    guard buffer.readableBytes > 0 else { throw APIError.badRequest("a JSON body is required") }
    return try JSONFields(try JSONParser.parse(Array(buffer.readableBytesView)))
  }
}
