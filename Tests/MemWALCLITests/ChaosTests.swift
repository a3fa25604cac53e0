import Foundation
import MemWALCore
import Testing

/// `memwal chaos` end to end: the checker must catch real loss, and a clean run must pass.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ChaosTests {
  /// With the test-only setting that acknowledges `quorum` writes before any follower has them, a
  /// slow replication link followed by a kill of the primary loses acknowledged writes: the run
  /// must report them, fail, and name the seed that reruns it.
  @Test func theCheckerCatchesWritesAcknowledgedBeforeTheFollowersFlushed() throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let report = scratch.path + "/report.json"
    let run = try runMemwal(
      [
        "chaos", "--seconds", "20", "--seed", "11", "--faults", "slow-kill-primary",
        "--unsafe-ack-before-flush",
        "--report", report, "--dir", scratch.path, "--rate", "200",
      ], timeout: 240)
    #expect(run.status == 1, "\(run.stdout)\n\(run.stderr.suffix(4_000))")
    #expect(run.stdout.contains("rerun: memwal chaos --seed 11 "), "\(run.stdout)")
    let summary = run.stdout.split(separator: "\n").first.map(String.init) ?? ""
    #expect(summary.hasPrefix("chaos seed=11 ") && summary.hasSuffix("result=FAILED"), "\(summary)")
    let fields = try reportFields(report)
    #expect(number(fields["lost"]) > 0, "\(fields)")
    #expect(fields["result"] == .string("failed"))
    #expect(number(fields["faults"]) >= 1)
  }

  /// The same fault without the unsafe setting loses nothing, and a run with faults of every kind
  /// passes every check.
  @Test func withoutTheUnsafeSettingNothingIsLost() throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let report = scratch.path + "/report.json"
    let run = try runMemwal(
      [
        "chaos", "--seconds", "20", "--seed", "11", "--faults", "slow-kill-primary", "--report", report,
        "--dir",
        scratch.path, "--rate", "200",
      ], timeout: 240)
    #expect(run.status == 0, "\(run.stdout)\n\(run.stderr.suffix(4_000))")
    let fields = try reportFields(report)
    #expect(number(fields["lost"]) == 0)
    #expect(number(fields["acknowledged"]) > 100, "\(fields)")
    #expect(fields["result"] == .string("ok"))
    if case .object(let digests)? = fields["digests"] {
      #expect(digests.count == 3 && Set(digests.values.map { "\($0)" }).count == 1, "\(digests)")
    } else {
      Issue.record("no digests in the report")
    }
  }

  @Test func badOptionsAreRefused() throws {
    let unknown = try runMemwal(["chaos", "--faults", "kill-everything"])
    #expect(unknown.status != 0)
    #expect(unknown.stderr.contains("unknown fault kill-everything"), "\(unknown.stderr)")
    let short = try runMemwal(["chaos", "--seconds", "1"])
    #expect(short.status != 0)
    #expect(short.stderr.contains("--seconds must be within"), "\(short.stderr)")
  }

  func reportFields(_ path: String) throws -> [String: JSONValue] {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    guard case .object(let fields) = try JSONParser.parse(Array(text.utf8)) else {
      throw CLIError("the report is not a JSON object: \(text.prefix(200))")
    }
    return fields
  }

  func number(_ value: JSONValue?) -> Double {
    if case .number(let number)? = value { return number }
    return -1
  }
}
