import Foundation
import MemWALClient
import MemWALCore
import Synchronization
import Testing

/// 16 concurrent clients for 20 s of mixed writes and searches against a real `memwal serve`:
/// no error, no crash, and the server's resident memory levels off (history is kept short here, so
/// steady overwrites must not grow it without bound).
@Suite(.serialized) struct LoadTests {
  static func residentBytes(_ pid: Int32) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
      return line.split(separator: " ").compactMap { Int($0) }.first.map { $0 * 1024 }
    }
    return nil
  }

  @Test func sixteenClientsForTwentySeconds() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let config = scratch.path + "/load.yaml"
    try """
    data_dir: \(scratch.path)/data
    listen: 127.0.0.1:0
    development_mode: true
    retention: {history_lsns: 2000}
    checkpoint: {every_bytes: 8000000}
    wal: {segment_bytes: 8388608}
    """.write(toFile: config, atomically: true, encoding: .utf8)
    let server = try ServerProcess(arguments: ["serve", "--config", config])
    defer { server.kill(SIGTERM) }
    let url = "http://127.0.0.1:\(server.port)"
    try await MemWALClient(baseURL: url).createNamespace("load", dimension: 32, metric: .cosine)

    let seconds = 20.0
    let deadline = Date().addingTimeInterval(seconds)
    final class Tally: Sendable {
      let errors = Mutex<[String]>([])
      let operations = Mutex(0)
      let samples = Mutex<[Int]>([])
    }
    let tally = Tally()
    let pid = server.process.processIdentifier
    await withTaskGroup(of: Void.self) { group in
      for clientIndex in 0..<16 {
        group.addTask {
          let client = MemWALClient(baseURL: url)
          var random = SystemRandomNumberGenerator()
          var round = 0
          while Date() < deadline {
            do {
              if round % 2 == 0 {
                let start = Int.random(in: 0..<200, using: &random) * 10
                let batch = (start..<start + 10).map { index in
                  MemoryRecord(
                    id: "m\(index)",
                    vector: (0..<32).map { _ in Float.random(in: -1...1, using: &random) },
                    metadata: ["client": .number(Double(clientIndex))])
                }
                try await client.upsert(batch, in: "load", durability: round % 4 == 0 ? .memory : .local)
              } else {
                let hits = try await client.search(
                  (0..<32).map { _ in Float.random(in: -1...1, using: &random) }, k: 10, in: "load")
                if hits.count > 10 { tally.errors.withLock { $0.append("too many hits") } }
              }
              tally.operations.withLock { $0 += 1 }
            } catch {
              tally.errors.withLock { $0.append("\(error)") }
            }
            round += 1
          }
        }
      }
      group.addTask {
        while Date() < deadline {
          if let rss = Self.residentBytes(pid) { tally.samples.withLock { $0.append(rss) } }
          try? await Task.sleep(for: .seconds(1))  // sampling cadence, not a wait for a condition
        }
      }
    }
    let failures = tally.errors.withLock { $0 }
    #expect(failures.isEmpty, "\(failures.count) errors, e.g. \(failures.prefix(3))")
    #expect(tally.operations.withLock { $0 } > 200, "the load test made progress")
    #expect(server.process.isRunning, "the server survived")
    let rss = tally.samples.withLock { $0 }
    #expect(rss.count >= 10)
    if rss.count >= 10 {
      let settled = rss[rss.count / 2]
      let peak = rss.max()!
      #expect(peak < 1 << 30, "resident memory \(peak) bytes")
      #expect(Double(rss.last!) < Double(settled) * 1.5, "resident memory kept growing: \(rss)")
    }
    let (status, _) = try http("GET", port: server.port, "/healthz")
    #expect(status == 200)
  }
}
