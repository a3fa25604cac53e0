import ArgumentParser

@main
struct MemWAL: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "memwal",
    abstract: "MemWAL: a write-ahead-logged, replicated memory store for AI-agent fleets.",
    subcommands: [
      Serve.self, ControllerCommand.self, TokenCommand.self, CertsCommand.self, Ctl.self, WAL.self,
      Bench.self, ChaosCommand.self,
    ]
  )
}

struct WAL: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "wal",
    abstract: "Inspect, check and repair a write-ahead log (see docs/wal-format.md).",
    subcommands: [WALDump.self, WALVerify.self, WALRepair.self]
  )
}

struct Bench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench",
    abstract: "Benchmarks whose figures back docs/benchmarks.md.",
    subcommands: [WALBench.self, ANNBench.self, StoreBench.self, HTTPBench.self, FailoverBench.self]
  )
}
