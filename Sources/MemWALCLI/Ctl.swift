import ArgumentParser
import Foundation
import MemWALClient
import MemWALCore
import MemWALServer

/// `memwal ctl`: operate a running cluster.
struct Ctl: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ctl", abstract: "Operate a running cluster.",
    subcommands: [CtlStatus.self, CtlSwitchover.self, CtlPromote.self, CtlSetQuorum.self])
}

/// `memwal ctl status --config FILE`: every member's role, epoch, LSNs and replication lag, as a
/// table (or JSON), read from each node's `/v1/status`; and, when the cluster has a controller, its
/// epoch, primary, phase and last status line from its `/v1/cluster`.
struct CtlStatus: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "status",
    abstract: "Print each cluster member's role, epoch, durable and applied LSN, and lag.",
    discussion:
      "Reads the members from a configuration's cluster section (any member's, or the controller's). LAG is "
      + "the primary's view of each follower: LSNs not yet flushed there, an estimate in bytes, and "
      + "milliseconds since it was last caught up. With cluster.controller, a last line gives the "
      + "controller's view (or says it is unreachable).")

  @Option(help: "A YAML configuration with a cluster section (any member's, or the controller's).")
  var config: String

  @Option(help: "Bearer token for nodes that require one (default: $MEMWAL_TOKEN).")
  var token: String?

  @Flag(help: "Print JSON instead of a table.")
  var json = false

  func run() async throws {
    let settings = try loadClusterSettings(config)
    let token = self.token ?? ProcessInfo.processInfo.environment["MEMWAL_TOKEN"]
    let names = settings.members.keys.sorted()
    var statuses: [String: Result<JSONValue, any Error>] = [:]
    await withTaskGroup(of: (String, Result<JSONValue, any Error>).self) { group in
      for name in names {
        let client = MemWALClient(baseURL: settings.members[name]!.api, token: token, timeout: .seconds(3))
        group.addTask {
          do { return (name, .success(try await client.status())) } catch { return (name, .failure(error)) }
        }
      }
      for await (name, result) in group { statuses[name] = result }
    }
    var controller: (lines: [String], json: JSONValue)?
    if let api = settings.controller?.api {
      controller = await ControllerEndpoint(baseURL: api).statusLines()
    }
    // The primary's view of each follower.
    var lag: [String: [String: JSONValue]] = [:]
    for case .success(.object(let status)) in statuses.values {
      guard case .object(let replication)? = status["replication"],
        case .array(let followers)? = replication["followers"]
      else { continue }
      for case .object(let follower) in followers {
        if case .string(let name)? = follower["node"] { lag[name] = follower }
      }
    }
    if json {
      var members: JSONObject = [:]
      for name in names {
        switch statuses[name]! {
        case .success(let status): members[name] = status
        case .failure(let error): members[name] = .object(["error": .string("\(error)")])
        }
      }
      var output: JSONObject = ["cluster": .string(settings.name), "members": .object(members)]
      if let controller { output["controller"] = controller.json }
      emit(JSONValue.object(output).jsonText)
      return
    }
    var rows = [
      [
        "NODE", "API", "ROLE", "EPOCH", "DURABLE_LSN", "APPLIED_LSN", "STATE", "LAG_LSNS", "LAG_BYTES",
        "LAG_MS",
      ]
    ]
    for name in names {
      let api = settings.members[name]!.api
      switch statuses[name]! {
      case .failure(let error):
        rows.append([
          name, api, "unreachable", "-", "-", "-", "\(error)".prefix(60).description, "-", "-", "-",
        ])
      case .success(let value):
        guard case .object(let status) = value else { continue }
        let follower = lag[name]
        var state = "-"
        if case .object(let replication)? = status["replication"],
          case .string(let text)? = replication["state"]
        {
          state = text
        } else if let text = follower?["state"].flatMap(Self.text) {
          state = text
        }
        rows.append([
          name, api, status["role"].flatMap(Self.text) ?? "?", status["epoch"].flatMap(Self.text) ?? "?",
          status["durable_lsn"].flatMap(Self.text) ?? "?", status["applied_lsn"].flatMap(Self.text) ?? "?",
          state,
          follower?["lag_lsns"].flatMap(Self.text) ?? "-", follower?["lag_bytes"].flatMap(Self.text) ?? "-",
          follower?["lag_ms"].flatMap(Self.text) ?? "-",
        ])
      }
    }
    let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max()! }
    for row in rows {
      emit(
        row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(
          separator: "  "))
    }
    for line in controller?.lines ?? [] { emit(line) }
  }

  static func text(_ value: JSONValue) -> String? {
    switch value {
    case .string(let text): return text
    case .number(let number): return number == number.rounded() ? String(Int64(number)) : String(number)
    case .bool(let flag): return String(flag)
    default: return nil
    }
  }
}
