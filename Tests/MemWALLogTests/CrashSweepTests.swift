import MemWALCore
import Synchronization
import Testing

@testable import MemWALLog

/// SQLite-style crash testing: run a concurrent workload on the simulated disk, crash it at the Nth
/// file-system operation for every N, then check that recovery succeeds and keeps every write that
/// was acknowledged at `local` (DESIGN G1, G5).
@Suite struct CrashSweepTests {
  struct Scenario: Sendable {
    var name: String
    var segmentBytes: Int
    var maximumBatchBytes: Int
    var checkpointEvery: Int?
    var archive: Bool
    /// Every Nth append of a writer asks only for `memory`.
    var memoryEvery: Int?
  }

  static let scenarios = [
    Scenario(
      name: "small segments, checkpoints and retention", segmentBytes: 4 << 10, maximumBatchBytes: 64 << 10,
      checkpointEvery: 40, archive: false, memoryEvery: nil),
    Scenario(
      name: "tiny batches, archive", segmentBytes: 12 << 10, maximumBatchBytes: 400, checkpointEvery: 70,
      archive: true, memoryEvery: nil),
    Scenario(
      name: "mixed memory and local durability", segmentBytes: 6 << 10, maximumBatchBytes: 2 << 10,
      checkpointEvery: nil, archive: false, memoryEvery: 3),
    Scenario(
      name: "one record per batch, frequent checkpoints", segmentBytes: 5 << 10, maximumBatchBytes: 200,
      checkpointEvery: 25, archive: false, memoryEvery: 7),
  ]

  static let writers = 8
  static let perWriter = 25

  /// What the workload saw: acknowledged appends by identity, and the checkpoints it wrote.
  final class Observed: @unchecked Sendable {
    let acknowledged = Mutex<[String: WriteAheadLog.AppendResult]>([:])
    let checkpoints = Mutex<[LSN]>([])
  }

  static func options(_ scenario: Scenario) -> WriteAheadLog.Options {
    var options = smallOptions(segmentBytes: scenario.segmentBytes)
    options.maximumRecordBytes = 1 << 10
    options.maximumBatchBytes = scenario.maximumBatchBytes
    options.archiveRetiredSegments = scenario.archive
    return options
  }

  static func checkpointPayload(_ lsn: LSN) -> [UInt8] { Array("state-through-\(lsn)".utf8) }

  /// Runs the workload until it finishes or the disk "crashes"; never throws.
  static func runWorkload(_ scenario: Scenario, disk: SimulatedFileSystem) async -> Observed {
    let observed = Observed()
    guard
      let (log, _) = try? WriteAheadLog.open(
        directory: "/data", options: options(scenario), fileSystem: disk, logger: quietLogger)
    else {
      return observed
    }
    await withTaskGroup(of: Void.self) { group in
      for writer in 0..<writers {
        group.addTask {
          for index in 0..<perWriter {
            let durability: Durability =
              scenario.memoryEvery.map { index % $0 == 0 } == true ? .memory : .local
            guard
              let result = try? await log.append(
                makeTransaction(writer: writer, index: index, payloadBytes: 100), durability: durability)
            else { return }
            let count = observed.acknowledged.withLock { acknowledged in
              acknowledged["w\(writer)-\(index)"] = result
              return acknowledged.count
            }
            if let every = scenario.checkpointEvery, count % every == 0 {
              let lsn = log.positions.flushed.value
              do {
                try log.writeCheckpoint(at: lsn, payload: checkpointPayload(lsn))
                observed.checkpoints.withLock { $0.append(lsn) }
                try log.retireSegments(below: lsn.next)
              } catch {
                return
              }
            }
          }
        }
      }
    }
    await log.close()
    return observed
  }

  /// Reopens a crash image and checks it against what the workload was told.
  static func verifyRecovery(
    _ image: SimulatedFileSystem, scenario: Scenario, observed: Observed, context: String
  ) async throws {
    let (log, recovery) = try WriteAheadLog.open(
      directory: "/data", options: options(scenario), fileSystem: image, logger: quietLogger)
    let start = recovery.checkpoint?.lsn ?? .zero
    if let checkpoint = recovery.checkpoint {
      #expect(checkpoint.payload == checkpointPayload(checkpoint.lsn), "\(context): checkpoint payload")
    }
    let records = try allRecords(log, from: start.next)
    var byLSN: [LSN: String] = [:]
    var seen = Set<String>()
    for record in records {
      let id = identity(of: record) ?? "?"
      #expect(seen.insert(id).inserted, "\(context): \(id) logged twice")
      byLSN[record.lsn] = id
    }
    #expect(records.last?.lsn ?? start == recovery.lastLSN, "\(context): replay ends at the recovered LSN")
    for (id, ack) in observed.acknowledged.withLock({ $0 }) {
      if ack.lsn <= start { continue }  // covered by the checkpoint, which is at or past it
      if ack.durability >= .local {
        #expect(
          byLSN[ack.lsn] == id,
          "\(context): acknowledged \(id) at LSN \(ack.lsn) lost (recovered through \(recovery.lastLSN))")
      } else if let found = byLSN[ack.lsn] {
        #expect(found == id, "\(context): LSN \(ack.lsn) holds \(found), acknowledged as \(id)")
      }
    }
    // The recovered log takes new writes right after its end, and a second recovery agrees.
    let next = try await log.append(makeTransaction(writer: 99, index: 0))
    #expect(next.lsn == recovery.lastLSN.next, "\(context): next LSN")
    await log.close()
    let (again, second) = try WriteAheadLog.open(
      directory: "/data", options: options(scenario), fileSystem: image, logger: quietLogger)
    #expect(second.lastLSN == next.lsn && second.truncatedTail == nil, "\(context): second recovery")
    await again.close()
  }

  @Test func crashAtEveryFileSystemOperation() async throws {
    var crashPoints = 0
    var images = 0
    for (scenarioIndex, scenario) in Self.scenarios.enumerated() {
      let clean = SimulatedFileSystem()
      let baseline = await Self.runWorkload(scenario, disk: clean)
      #expect(baseline.acknowledged.withLock { $0.count } == Self.writers * Self.perWriter)
      let operations = clean.operationCount
      var point = 1
      // Runs vary a little with scheduling, so go on until a run finishes before its crash point.
      while true {
        let disk = SimulatedFileSystem()
        disk.setFaultPlan(.init(operationIndex: point, fault: .crash))
        let observed = await Self.runWorkload(scenario, disk: disk)
        guard disk.isCrashed else { break }
        crashPoints += 1
        for (modeIndex, mode) in SimulatedFileSystem.CrashMode.allCases.enumerated() {
          let seed = UInt64(scenarioIndex * 1_000_003 + point * 7 + modeIndex)
          let context =
            "scenario '\(scenario.name)', crash at operation \(point) of ~\(operations), \(mode), seed \(seed)"
          do {
            try await Self.verifyRecovery(
              disk.crashImage(mode: mode, seed: seed), scenario: scenario, observed: observed,
              context: context)
          } catch {
            Issue.record("\(context): recovery failed: \(error)")
          }
          images += 1
        }
        point += 1
      }
    }
    #expect(crashPoints >= 1_000, "only \(crashPoints) crash points")
    print("crash sweep: \(crashPoints) crash points, \(images) recovered disk images")
  }

  /// SQLite's I/O-error test: the Nth operation fails with EIO (the process lives on). The log must
  /// stop or report the error, never acknowledge what is not durable, and recover afterwards.
  @Test func ioErrorAtEveryFileSystemOperation() async throws {
    let scenario = Self.scenarios[0]
    var points = 0
    var point = 1
    while true {
      let disk = SimulatedFileSystem()
      disk.setFaultPlan(.init(operationIndex: point, fault: .ioError))
      let observed = await Self.runWorkload(scenario, disk: disk)
      if disk.operationCount < point { break }
      points += 1
      disk.crashNow()
      let context = "I/O error at operation \(point)"
      do {
        try await Self.verifyRecovery(
          disk.crashImage(mode: .dropUnsynced), scenario: scenario, observed: observed, context: context)
      } catch {
        Issue.record("\(context): recovery failed: \(error)")
      }
      point += 1
    }
    #expect(points >= 100)
    print("I/O error sweep: \(points) failure points")
  }
}
