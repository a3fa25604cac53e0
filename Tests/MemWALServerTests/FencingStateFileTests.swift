import MemWALCluster
import MemWALCore
import MemWALLog
import Testing

@testable import MemWALServer

/// A promise must survive any crash: after a crash at any file-system operation of a store, under
/// every power-loss model, the node reads back either the old state or the new one — never a mix,
/// never nothing, never a state it cannot read.
@Suite struct FencingStateFileTests {
  static let old = FencingState(promisedEpoch: Epoch(3), role: .follower, epoch: Epoch(3), primary: "n2")
  static let new = FencingState(promisedEpoch: Epoch(4), role: .primary, epoch: Epoch(4), primary: nil)

  @Test func roundTripsAndRejectsDamage() throws {
    for state in [
      Self.old, Self.new,
      FencingState(promisedEpoch: Epoch(9), role: .draining, epoch: Epoch(7), primary: "é"),
    ] {
      #expect(try FencingStateFile.decode(FencingStateFile.encode(state), path: "x") == state)
    }
    let bytes = FencingStateFile.encode(Self.old)
    for index in bytes.indices {
      var damaged = bytes
      damaged[index] ^= 0x10
      #expect(throws: FencingStateFileError.self) { try FencingStateFile.decode(damaged, path: "x") }
    }
    for length in 0..<bytes.count {
      #expect(throws: FencingStateFileError.self) {
        try FencingStateFile.decode(Array(bytes[..<length]), path: "x")
      }
    }
  }

  @Test func aCrashAtAnyOperationLeavesTheOldOrTheNewState() throws {
    var crashPoints = 0
    for index in 1...20 {
      let fileSystem = SimulatedFileSystem()
      try fileSystem.createDirectory("/node")
      try FencingStateFile.store(Self.old, directory: "/node", fileSystem: fileSystem)
      fileSystem.setFaultPlan(.init(operationIndex: index, fault: .crash))
      let completed =
        (try? FencingStateFile.store(Self.new, directory: "/node", fileSystem: fileSystem)) != nil
      if completed { break }
      crashPoints += 1
      for mode in SimulatedFileSystem.CrashMode.allCases {
        let image = fileSystem.crashImage(mode: mode, seed: UInt64(index))
        let loaded = try FencingStateFile.load(directory: "/node", fileSystem: image)
        #expect(
          loaded == Self.old || loaded == Self.new,
          "crash at operation \(index), \(mode): \(String(describing: loaded))")
      }
    }
    #expect(crashPoints >= 4)
    // A store that completed is durable under every model.
    let fileSystem = SimulatedFileSystem()
    try fileSystem.createDirectory("/node")
    try FencingStateFile.store(Self.new, directory: "/node", fileSystem: fileSystem)
    for mode in SimulatedFileSystem.CrashMode.allCases {
      #expect(
        try FencingStateFile.load(directory: "/node", fileSystem: fileSystem.crashImage(mode: mode))
          == Self.new)
    }
  }
}
