import Foundation
import MemWALCore
import MemWALLog
import Testing

@Suite(.serialized) struct WALCommandTests {
  /// A log with `count` records written through the library, closed cleanly.
  static func makeLog(at path: String, count: Int) async throws {
    var options = WriteAheadLog.Options()
    options.segmentBytes = 64 << 10
    options.maximumRecordBytes = 8 << 10
    let (log, _) = try WriteAheadLog.open(directory: path, options: options, logger: quietLogger)
    for index in 0..<count {
      let operation = WALOperation(
        kind: .insert, target: .memory, id: "m\(index)", after: [UInt8](repeating: 7, count: 700))
      _ = try await log.append(
        WALTransaction(
          namespace: "agents", operations: [operation],
          idempotencyKey: index == 0 ? "first" : index == 1 ? "second" : nil,
          requestDigest: index == 1 ? [UInt8](repeating: 0xab, count: WALFormat.requestDigestBytes) : nil))
    }
    _ = try await log.appendEpochChange(to: Epoch(2), leader: "n2")
    await log.close()
  }

  @Test func dumpPrintsOneLinePerRecordAndJSON() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    try await Self.makeLog(at: scratch.path, count: 300)
    let text = try runMemwal(["wal", "dump", scratch.path])
    #expect(text.status == 0, "\(text.stderr)")
    let lines = text.stdout.split(separator: "\n")
    #expect(lines.count == 301)
    #expect(
      lines[0].hasPrefix("lsn=1 epoch=1 txn=1 time=")
        && lines[0].contains("namespace=agents idempotency_key=first ops=1: insert memory m0"))
    #expect(
      lines[1].contains("idempotency_key=second request_digest=\(String(repeating: "ab", count: 16)) ops=1"))
    #expect(lines[300].contains("lsn=301 epoch=2") && lines[300].contains("epoch-change from=1 leader=n2"))

    let json = try runMemwal(["wal", "dump", scratch.path + "/wal", "--from-lsn", "290", "--json"])
    #expect(json.status == 0)
    let objects = try json.stdout.split(separator: "\n").map {
      try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
    }
    #expect(objects.map { $0["lsn"] as! Int } == Array(290...301))
    #expect(objects.first?["type"] as? String == "transaction")
    #expect((objects.first?["operations"] as? [[String: Any]])?.first?["after_bytes"] as? Int == 700)
    #expect(objects.last?["type"] as? String == "epoch_change")
  }

  @Test func verifyAndRepairATornTail() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    try await Self.makeLog(at: scratch.path, count: 200)
    #expect(try runMemwal(["wal", "verify", scratch.path]).status == 0)
    // Tear the last record: garbage over its second half.
    let walDirectory = scratch.url.appendingPathComponent("wal")
    let last = try FileManager.default.contentsOfDirectory(atPath: walDirectory.path).filter {
      $0.hasSuffix(".wal")
    }.sorted().last!
    let dump = try runMemwal(["wal", "dump", scratch.path, "--json"])
    let lastLSN = dump.stdout.split(separator: "\n").count
    var offsets: [Int64] = []
    try LogScanner(walDirectory: walDirectory.path, fileSystem: POSIXFileSystem()).scan { _, _, offset in
      offsets.append(offset)
      return true
    }
    let handle = try FileHandle(forUpdating: walDirectory.appendingPathComponent(last))
    try handle.seek(toOffset: UInt64(offsets.last! + 40))
    handle.write(Data(repeating: 0xEE, count: 100))
    try handle.close()

    let torn = try runMemwal(["wal", "verify", scratch.path])
    #expect(torn.status == 1, "a torn tail is exit 1: \(torn.stderr)")
    #expect(torn.stderr.contains(last) && torn.stderr.contains("byte \(offsets.last!)"))
    let repaired = try runMemwal(["wal", "repair", scratch.path])
    #expect(repaired.status == 0, "\(repaired.stderr)")
    #expect(
      repaired.stdout.contains("cut the torn tail of \(last)")
        && repaired.stdout.contains("ends at LSN \(lastLSN - 1)"))
    #expect(
      FileManager.default.fileExists(atPath: walDirectory.appendingPathComponent(last + ".broken").path))
    #expect(try runMemwal(["wal", "verify", scratch.path]).status == 0)
  }

  @Test func repairRefusesToDropSyncedRecordsWithoutForce() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    try await Self.makeLog(at: scratch.path, count: 300)
    let walDirectory = scratch.url.appendingPathComponent("wal")
    let first = try FileManager.default.contentsOfDirectory(atPath: walDirectory.path).filter {
      $0.hasSuffix(".wal")
    }.sorted().first!
    let handle = try FileHandle(forUpdating: walDirectory.appendingPathComponent(first))
    try handle.seek(toOffset: 5000)
    handle.write(Data([0xFF, 0x00, 0xFF]))
    try handle.close()

    let verify = try runMemwal(["wal", "verify", scratch.path])
    #expect(verify.status == 2)
    #expect(verify.stderr.contains("WAL corruption in \(first) at byte"))
    let refused = try runMemwal(["wal", "repair", scratch.path])
    #expect(refused.status == 2 && refused.stderr.contains("--force"))
    #expect(try runMemwal(["wal", "verify", scratch.path]).status == 2, "a refused repair changes nothing")
    let forced = try runMemwal(["wal", "repair", scratch.path, "--force"])
    #expect(forced.status == 0, "\(forced.stderr)")
    #expect(forced.stdout.contains("set aside segment"))
    #expect(try runMemwal(["wal", "verify", scratch.path]).status == 0)
  }

  @Test func badArgumentsAreRefusedClearly() throws {
    let missing = try runMemwal(["wal", "verify", "/nonexistent/memwal"])
    #expect(missing.status == 2 && missing.stderr.contains("wal"))
    let bench = try runMemwal(["bench", "wal", "--dir", "/tmp", "--writers", "0"])
    #expect(bench.status != 0 && bench.stderr.contains("--writers"))
  }
}
