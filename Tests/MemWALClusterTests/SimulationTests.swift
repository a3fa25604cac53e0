import MemWALCluster
import MemWALCore
import Testing

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The seeded cluster simulation (see `Simulation`). `MEMWAL_SIM_SEED=N` runs only seed N.
@Suite struct SimulationTests {
  static func options(for seed: UInt64) -> SimulationOptions {
    var options = SimulationOptions()
    options.followers = 2 + Int(seed % 3)
    options.k = 1 + Int(seed / 3 % 2)
    return options
  }

  /// 2,000 seeds in 20 batches (run in parallel): every invariant holds and every follower converges.
  @Test(arguments: SeedBatches.batches) func seeds(batch: UInt64) {
    SeedBatches.run(batch: batch, replayVariable: "MEMWAL_SIM_SEED") { seed in
      Simulation(seed: seed, options: Self.options(for: seed)).run()
    }
  }

  /// The simulation exercises what it claims to: checkpoint transfers, truncations, restarts,
  /// broken connections.
  @Test func coversTheFaults() {
    var totals = (checkpoints: 0, truncations: 0, restarts: 0, breaks: 0)
    for seed in 0..<UInt64(100) {
      let simulation = Simulation(seed: seed, options: Self.options(for: seed))
      _ = simulation.run()
      totals.checkpoints += simulation.stats.checkpointsInstalled
      totals.truncations += simulation.stats.truncations
      totals.restarts += simulation.stats.restarts
      totals.breaks += simulation.stats.breaks
    }
    #expect(totals.checkpoints > 10, "checkpoint installs: \(totals.checkpoints)")
    #expect(totals.truncations >= 100, "truncations: \(totals.truncations)")
    #expect(totals.restarts > 10, "restarts: \(totals.restarts)")
    #expect(totals.breaks > 10, "breaks: \(totals.breaks)")
  }

  /// The checkers can fail: acknowledging quorum on `written` rather than `flushed` is caught.
  @Test func catchesQuorumOnWritten() {
    let caught = (0..<UInt64(300)).contains { seed in
      var options = Self.options(for: seed)
      options.acknowledgeQuorumOnWritten = true
      options.k = options.followers
      return Simulation(seed: seed, options: options).run()?.contains("acknowledged at quorum") ?? false
    }
    #expect(caught)
  }

  /// The checkers can fail: a follower that keeps its divergent tail is caught.
  @Test func catchesAMissingTruncation() {
    let caught = (0..<UInt64(50)).contains { seed in
      var options = Self.options(for: seed)
      options.ignoreTruncate = true
      let failure = Simulation(seed: seed, options: options).run() ?? ""
      return failure.contains("diverges") || failure.contains("asked to append")
    }
    #expect(caught)
  }
}
