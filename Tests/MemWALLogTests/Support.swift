import Glibc
import Logging
import MemWALCore
import Synchronization

@testable import MemWALLog

/// A transaction whose content identifies it: writer `writer`, sequence number `index`.
func makeTransaction(writer: Int, index: Int, payloadBytes: Int = 120) -> WALTransaction {
  var image = [UInt8](repeating: 0, count: payloadBytes)
  for position in image.indices {
    image[position] = UInt8(truncatingIfNeeded: writer &* 31 &+ index &* 7 &+ position)
  }
  return WALTransaction(
    namespace: "agents",
    operations: [
      WALOperation(kind: .insert, target: .memory, id: "w\(writer)-\(index)", before: nil, after: image)
    ])
}

/// The identity of a logged transaction, as `makeTransaction` made it.
func identity(of record: WALRecord) -> String? {
  guard case .transaction(let transaction) = record.payload else { return nil }
  return transaction.operations.first?.id
}

/// A clock the tests move by hand.
final class ManualClock: WALClock, @unchecked Sendable {
  private let now = Mutex<Int64>(1_700_000_000_000_000)
  func microsecondsSinceEpoch() -> Int64 { now.withLock { $0 } }
  func advance(by micros: Int64) { now.withLock { $0 += micros } }
}

func smallOptions(segmentBytes: Int = 8 << 10) -> WriteAheadLog.Options {
  var options = WriteAheadLog.Options()
  options.segmentBytes = segmentBytes
  options.maximumRecordBytes = 2 << 10
  options.clusterID = ClusterID(high: 0x1234, low: 0x5678)
  return options
}

/// Log messages collected in memory, so tests can assert what an operator would read.
final class CollectedLogs: @unchecked Sendable {
  let lines = Mutex<[String]>([])
  func contains(_ text: String) -> Bool { lines.withLock { $0.contains { $0.contains(text) } } }
}

struct CollectingHandler: LogHandler {
  let sink: CollectedLogs
  var metadata: Logger.Metadata = [:]
  var logLevel: Logger.Level = .debug
  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }
  func log(event: LogEvent) {
    let level = event.level
    let message = event.message
    let fields = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(
      separator: " ")
    sink.lines.withLock { $0.append("\(level) \(message) \(fields)") }
  }
}

func makeLogger(_ sink: CollectedLogs) -> Logger {
  Logger(label: "test") { _ in CollectingHandler(sink: sink) }
}

/// Reads every record of a log directory through a freshly opened log.
func allRecords(_ log: WriteAheadLog, from lsn: LSN = LSN(1)) throws -> [WALRecord] {
  var records: [WALRecord] = []
  try log.readRecords(from: lsn) { record in
    records.append(record)
    return true
  }
  return records
}

/// A fresh directory under the system temporary directory, removed by `remove()`.
struct TemporaryDirectory {
  let path: String
  init() {
    var template = Array("/tmp/memwal-test-XXXXXX".utf8CString)
    let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(created != nil, "mkdtemp failed")
    path = String(cString: template.withUnsafeBufferPointer { $0.baseAddress! })
  }
  func remove() { _ = system("rm -rf '\(path)'") }
}

/// Discards log output, for tests that open thousands of logs.
let quietLogger = Logger(label: "quiet") { _ in SwiftLogNoOpLogHandler() }
