import Testing

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Seeded simulation runs split into batches that Swift Testing runs in parallel, or, when the
/// environment variable `replayVariable` holds a seed, that one seed alone.
enum SeedBatches {
  static let seedsPerBatch: UInt64 = 100
  /// 20 batches of 100: 2,000 seeds in the default run.
  static let batches: [UInt64] = Array(0..<20)

  /// Runs `simulate` on each seed of `batch` and records every failure it returns (the text names
  /// the seed, so it can be replayed).
  static func run(batch: UInt64, replayVariable: String, _ simulate: (UInt64) -> String?) {
    let seeds: [UInt64]
    if let text = getenv(replayVariable), let replay = UInt64(String(cString: text)) {
      guard batch == 0 else { return }
      seeds = [replay]
    } else {
      seeds = Array(batch * seedsPerBatch..<(batch + 1) * seedsPerBatch)
    }
    for seed in seeds {
      if let failure = simulate(seed) { Issue.record(Comment(rawValue: failure)) }
    }
  }
}
