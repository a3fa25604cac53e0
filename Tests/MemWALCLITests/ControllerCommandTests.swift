import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// `memwal controller` and the `memwal ctl` controller commands as processes. No node listens on
/// the control ports, so every member stays unreachable: what is checked is the commands' wiring,
/// their output and exit statuses, the durable record across a restart, and start-up refusals.
/// (The controller's decisions against answering nodes: ControllerServiceTests.)
@Suite(.serialized, .timeLimit(.minutes(3))) struct ControllerServiceProcessTests {
  @Test func controllerCommandsAgainstARunningController() throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let certificates = scratch.path + "/certs"
    let made = try runMemwal(["certs", "init", "--out", certificates, "--nodes", "n1,n2,n3", "--controller"])
    try #require(made.status == 0, "\(made.stderr)")
    let port = try freePort()
    let state = scratch.path + "/state"
    let members = try ["n1", "n2", "n3"].map { name in
      "    \(name): {api: \"http://127.0.0.1:\(try freePort())\", replication: \"127.0.0.1:\(try freePort())\", "
        + "control: \"127.0.0.1:\(try freePort())\"}"
    }.joined(separator: "\n")
    let config = scratch.path + "/controller.yaml"
    try """
    cluster:
      name: process-test
      node: controller
      initial_primary: n1
      quorum: 1
      certificates: \(certificates)
      controller: {api: "http://127.0.0.1:\(port)", state_directory: \(state), heartbeat_ms: 50, failure_timeout_ms: 300}
      members:
    \(members)

    """.write(toFile: config, atomically: true, encoding: .utf8)

    var controller = try ServerProcess(arguments: ["controller", "--config", config])
    #expect(controller.port == port)
    let status = try runMemwal(["ctl", "status", "--config", config])
    #expect(status.status == 0, "\(status.stderr)")
    #expect(
      status.stdout.contains("controller http://127.0.0.1:\(port) epoch 0 primary none k 1 (floor 1) phase "))

    let quorum = try runMemwal(["ctl", "set-quorum", "2", "--config", config])
    #expect(quorum.status == 0, "\(quorum.stderr)")
    #expect(quorum.stdout.contains("k: 1 -> 2"))

    let unforced = try runMemwal(["ctl", "promote", "n2", "--config", config])
    #expect(unforced.status != 0)
    #expect(unforced.stderr.contains("--force"))

    let forced = try runMemwal(["ctl", "promote", "n2", "--force", "--config", config])
    #expect(forced.status == 0, "\(forced.stderr)")
    #expect(forced.stdout.contains("promoted n2 in epoch"))
    #expect(forced.stdout.contains("forced promotion of n2"))

    let switchover = try runMemwal(["ctl", "switchover", "--to", "n3", "--timeout", "5", "--config", config])
    #expect(switchover.status == 1)
    #expect(switchover.stderr.contains("409 unreachable"), "\(switchover.stderr)")

    controller.kill(SIGTERM)
    #expect(controller.process.terminationStatus == 0)

    // A restart starts from the record: n2 is primary, k is 2.
    controller = try ServerProcess(arguments: ["controller", "--config", config])
    let after = try runMemwal(["ctl", "status", "--json", "--config", config])
    #expect(after.status == 0)
    #expect(after.stdout.contains(#""primary":{"api":"#) && after.stdout.contains(#""name":"n2"}"#))
    #expect(after.stdout.contains(#""quorum":2"#))
    controller.kill(SIGTERM)

    // Start-up refusals: a torn state file (named), a node's configuration.
    try "{\"format\": \"memwal-controller-state\", ".write(
      toFile: state + "/controller-state.json", atomically: false, encoding: .utf8)
    let torn = try runMemwal(["controller", "--config", config], timeout: 30)
    #expect(torn.status == 2)
    #expect(torn.stderr.contains(state + "/controller-state.json"), "\(torn.stderr)")
    let nodeConfig = scratch.path + "/n1.yaml"
    try String(contentsOfFile: config, encoding: .utf8).replacingOccurrences(
      of: "node: controller", with: "node: n1"
    ).write(toFile: nodeConfig, atomically: true, encoding: .utf8)
    let wrongNode = try runMemwal(["controller", "--config", nodeConfig], timeout: 30)
    #expect(wrongNode.status == 2)
    #expect(wrongNode.stderr.contains("not the controller's name"))
  }
}
