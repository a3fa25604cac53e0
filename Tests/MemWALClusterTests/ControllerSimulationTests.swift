import MemWALCluster
import MemWALCore
import Testing

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The seeded whole-cluster failover simulation (see `ControllerSimulation`).
/// `MEMWAL_CONTROLLER_SEED=N` runs only seed N.
@Suite struct ControllerSimulationTests {
  /// 3 or 5 nodes, k from 1 to N − 1 followers.
  static func options(for seed: UInt64) -> ControllerSimulationOptions {
    var options = ControllerSimulationOptions()
    options.nodes = seed % 2 == 0 ? 3 : 5
    options.k = 1 + Int(seed / 2 % UInt64(options.nodes - 1))
    options.controllerStartsFresh = seed % 3 == 0
    return options
  }

  /// 2,000 seeds in 20 batches (run in parallel): no acknowledged write lost, one writer per
  /// epoch, logs agree within shared epochs, and the cluster recovers once faults stop.
  @Test(arguments: SeedBatches.batches) func seeds(batch: UInt64) {
    SeedBatches.run(batch: batch, replayVariable: "MEMWAL_CONTROLLER_SEED") { seed in
      ControllerSimulation(seed: seed, options: Self.options(for: seed)).run()
    }
  }

  /// The simulation exercises what it claims to: promoteRequests, truncations, crashes of nodes and of
  /// the controller, switchovers.
  @Test func coversTheFaults() {
    var totals = (
      promoteRequests: 0, promotions: 0, truncations: 0, crashes: 0, controllerCrashes: 0, switchovers: 0
    )
    for seed in 0..<UInt64(100) {
      let simulation = ControllerSimulation(seed: seed, options: Self.options(for: seed))
      _ = simulation.run()
      totals.promoteRequests += simulation.stats.promoteRequests
      totals.promotions += simulation.stats.promotions
      totals.truncations += simulation.stats.truncations
      totals.crashes += simulation.stats.crashes
      totals.controllerCrashes += simulation.stats.controllerCrashes
      totals.switchovers += simulation.stats.switchovers
    }
    print("controller simulation, seeds 0..<100: \(totals)")
    #expect(totals.promotions > 100, "promotions: \(totals.promotions)")
    #expect(totals.truncations > 10, "truncations: \(totals.truncations)")
    #expect(totals.crashes > 50, "crashes: \(totals.crashes)")
    #expect(totals.controllerCrashes > 20, "controller crashes: \(totals.controllerCrashes)")
    #expect(totals.switchovers > 10, "switchovers: \(totals.switchovers)")
  }

  /// The checkers can fail: promoting the least advanced promiser is caught.
  @Test func catchesPromotingTheLeastAdvanced() {
    let caught = (0..<UInt64(300)).contains { seed in
      var options = Self.options(for: seed)
      options.promoteLeastAdvanced = true
      let failure = ControllerSimulation(seed: seed, options: options).run() ?? ""
      return failure.contains("without the quorum-acknowledged write")
    }
    #expect(caught)
  }

  /// The checkers can fail: a controller that counts promises against a larger k than the
  /// primaries acknowledge with (so it promotes with fewer than N − k + 1) is caught.
  @Test func catchesTooFewPromises() {
    let caught = (0..<UInt64(300)).contains { seed in
      var options = Self.options(for: seed)
      options.k = 1
      options.controllerK = options.nodes - 1
      let failure = ControllerSimulation(seed: seed, options: options).run() ?? ""
      return failure.contains("without the quorum-acknowledged write")
    }
    #expect(caught)
  }
}
