// swift-tools-version: 6.1
// MemWAL: a replicated, write-ahead-logged memory store for agent fleets.
// Target layout follows shared/DESIGN.md §8: one responsibility per target.
import PackageDescription

let strict: [SwiftSetting] = [
  .unsafeFlags(["-warnings-as-errors"])
]

let package = Package(
  name: "memwal",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "memwal", targets: ["MemWALCLI"]),
    .library(name: "MemWALCore", targets: ["MemWALCore"]),
    .library(name: "MemWALLog", targets: ["MemWALLog"]),
    .library(name: "MemWALStore", targets: ["MemWALStore"]),
    .library(name: "MemWALCluster", targets: ["MemWALCluster"]),
    .library(name: "MemWALClient", targets: ["MemWALClient"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.20.0"),
    .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
    .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
    .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    .package(url: "https://github.com/swift-server/async-http-client", from: "1.20.0"),
    .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.29.0"),
    .package(url: "https://github.com/apple/swift-certificates", from: "1.10.0"),
    .package(url: "https://github.com/apple/swift-asn1", from: "1.3.0"),
  ],
  targets: [
    // CRC32C with the SSE4.2 / ARMv8 CRC instruction where the CPU has it, and a table fallback.
    .target(name: "CMemWALCRC32C", cSettings: [.unsafeFlags(["-O2"])]),
    // Vocabulary, codecs and typed errors. No I/O.
    .target(name: "MemWALCore", dependencies: ["CMemWALCRC32C"], swiftSettings: strict),
    // Segments, group commit, checkpoints, recovery, and the file-system interface.
    .target(
      name: "MemWALLog",
      dependencies: ["MemWALCore", .product(name: "Logging", package: "swift-log")],
      swiftSettings: strict
    ),
    // HNSW and exact vector search, filters, the graph store, versions, snapshots.
    .target(name: "MemWALStore", dependencies: ["MemWALCore"], swiftSettings: strict),
    // Replication state machines and the replication wire codec: pure, with the clock, the network
    // and the log injected; they return actions for a shell to carry out.
    .target(name: "MemWALCluster", dependencies: ["MemWALCore"], swiftSettings: strict),
    // One node's engine: the write path (preconditions and before-images in log order), the
    // applier that follows the log into the stores, checkpoints and recovery.
    .target(
      name: "MemWALNode",
      dependencies: [
        "MemWALCore", "MemWALLog", "MemWALStore", .product(name: "Logging", package: "swift-log"),
        .product(name: "Crypto", package: "swift-crypto"),
      ],
      swiftSettings: strict
    ),
    // The HTTP/JSON API of one node (Hummingbird 2), wiring the engine to the network.
    .target(
      name: "MemWALServer",
      dependencies: [
        "MemWALCore", "MemWALLog", "MemWALStore", "MemWALNode", "MemWALCluster",
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "HummingbirdTLS", package: "hummingbird"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOTLS", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Yams", package: "Yams"),
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strict
    ),
    // The Swift client library: the API with read-your-writes carried across calls.
    .target(
      name: "MemWALClient",
      dependencies: [
        "MemWALCore", .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
      ],
      swiftSettings: strict
    ),
    // A fault-injecting TCP proxy (partitions, delay, bandwidth, resets) for the chaos harness.
    .target(
      name: "MemWALChaos",
      dependencies: [
        "MemWALCore", .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ],
      swiftSettings: strict
    ),
    .executableTarget(
      name: "MemWALCLI",
      dependencies: [
        "MemWALCore", "MemWALLog", "MemWALStore", "MemWALNode", "MemWALServer", "MemWALClient", "MemWALChaos",
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strict
    ),
    .testTarget(name: "MemWALCoreTests", dependencies: ["MemWALCore"], swiftSettings: strict),
    .testTarget(
      name: "MemWALStoreTests", dependencies: ["MemWALCore", "MemWALStore"], swiftSettings: strict),
    .testTarget(
      name: "MemWALClusterTests", dependencies: ["MemWALCore", "MemWALCluster"], swiftSettings: strict),
    .testTarget(
      name: "MemWALLogTests",
      dependencies: ["MemWALCore", "MemWALLog", .product(name: "Logging", package: "swift-log")],
      swiftSettings: strict
    ),
    .testTarget(
      name: "MemWALNodeTests",
      dependencies: [
        "MemWALCore", "MemWALLog", "MemWALStore", "MemWALNode",
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strict
    ),
    .testTarget(
      name: "MemWALServerTests",
      dependencies: [
        "MemWALCore", "MemWALLog", "MemWALStore", "MemWALCluster", "MemWALNode", "MemWALServer",
        "MemWALClient",
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "HummingbirdTesting", package: "hummingbird"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "X509", package: "swift-certificates"),
      ],
      swiftSettings: strict
    ),
    .testTarget(
      name: "MemWALClientTests",
      dependencies: [
        "MemWALCore", "MemWALNode", "MemWALServer", "MemWALClient", "MemWALLog",
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strict
    ),
    .testTarget(
      name: "MemWALChaosTests",
      dependencies: [
        "MemWALChaos", "MemWALCore", .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ],
      swiftSettings: strict
    ),
    .testTarget(
      name: "MemWALCLITests",
      dependencies: [
        "MemWALClient",
        "MemWALCore", "MemWALLog", "MemWALCLI", .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strict
    ),
  ],
  swiftLanguageModes: [.v6]
)
