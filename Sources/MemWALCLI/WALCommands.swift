import ArgumentParser
import Glibc
import Logging
import MemWALCore
import MemWALLog

struct WALDump: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dump",
    abstract: "Print the records of a log, one line each: LSN, epoch, transaction, time, operations.")

  @Argument(help: "The data directory (holding wal/) or the wal/ directory itself.")
  var directory: String

  @Option(name: .customLong("from-lsn"), help: "Start at this LSN.")
  var fromLSN: UInt64 = 1

  @Flag(help: "One JSON object per line.")
  var json = false

  func run() throws {
    let fileSystem = POSIXFileSystem()
    let layout = LogLayout.resolve(directory, fileSystem: fileSystem)
    guard fileSystem.isDirectory(layout.walDirectory) else {
      throw ValidationError("no write-ahead log at \(directory) (expected a wal/ directory)")
    }
    let scanner = LogScanner(walDirectory: layout.walDirectory, fileSystem: fileSystem)
    do {
      let scan = try scanner.scan(visitFrom: LSN(max(1, fromLSN))) { frame, _, _ in
        emit(json ? Self.json(frame.record) : Self.line(frame.record))
        return true
      }
      if let torn = scan.tornTail { warn("note: \(torn)") }
    } catch let corruption as WALCorruption {
      warn("error: \(corruption)")
      throw ExitCode(2)
    }
  }

  static func line(_ record: WALRecord) -> String {
    let head =
      "lsn=\(record.lsn) epoch=\(record.epoch) txn=\(record.transactionID) time=\(formatTimestamp(record.timestampMicros))"
    switch record.payload {
    case .transaction(let transaction):
      let operations = transaction.operations.map { operation in
        "\(operation.kind) \(operation.target) \(operation.id) (before \(size(operation.before)), after \(size(operation.after)))"
      }
      let key =
        (transaction.idempotencyKey.map { " idempotency_key=\($0)" } ?? "")
        + (transaction.requestDigest.map { " request_digest=\(hex($0))" } ?? "")
      return head + " namespace=\(transaction.namespace)\(key) ops=\(operations.count): "
        + operations.joined(separator: "; ")
    case .epochChange(let change):
      return head + " epoch-change from=\(change.previousEpoch) leader=\(change.leader)"
    case .quorumChange(let change):
      return head + " quorum-change k=\(change.quorumFollowers)"
    }
  }

  static func json(_ record: WALRecord) -> String {
    var fields = [
      "\"lsn\":\(record.lsn)", "\"epoch\":\(record.epoch)", "\"txn\":\(record.transactionID)",
      "\"time_micros\":\(record.timestampMicros)",
      "\"time\":\(jsonString(formatTimestamp(record.timestampMicros)))",
    ]
    switch record.payload {
    case .transaction(let transaction):
      fields.append("\"type\":\"transaction\"")
      fields.append("\"namespace\":\(jsonString(transaction.namespace))")
      fields.append("\"idempotency_key\":\(transaction.idempotencyKey.map(jsonString) ?? "null")")
      fields.append(
        "\"request_digest\":\(transaction.requestDigest.map { jsonString(hex($0)) } ?? "null")")
      let operations = transaction.operations.map { operation in
        "{\"kind\":\"\(operation.kind)\",\"target\":\"\(operation.target)\",\"id\":\(jsonString(operation.id)),"
          + "\"before_bytes\":\(operation.before.map { String($0.count) } ?? "null"),"
          + "\"after_bytes\":\(operation.after.map { String($0.count) } ?? "null")}"
      }
      fields.append("\"operations\":[\(operations.joined(separator: ","))]")
    case .epochChange(let change):
      fields.append("\"type\":\"epoch_change\"")
      fields.append("\"previous_epoch\":\(change.previousEpoch)")
      fields.append("\"leader\":\(jsonString(change.leader))")
    case .quorumChange(let change):
      fields.append("\"type\":\"quorum_change\"")
      fields.append("\"quorum_followers\":\(change.quorumFollowers)")
    }
    return "{" + fields.joined(separator: ",") + "}"
  }

  static func size(_ image: [UInt8]?) -> String { image.map { "\($0.count) B" } ?? "-" }
}

struct WALVerify: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "verify",
    abstract: "Check every segment and checkpoint of a log.",
    discussion: """
      Exit status: 0 when the whole log and every checkpoint are valid; 1 when the only problem is a
      torn tail that a crash left (cut by `memwal wal repair` or by the next start); 2 for corruption
      or an invalid checkpoint. The first problem is printed with its file and byte offset.
      """)

  @Argument(help: "The data directory (holding wal/) or the wal/ directory itself.")
  var directory: String

  func run() throws {
    let inspection: LogInspection
    do {
      inspection = try LogInspector.inspect(directory)
    } catch {
      warn("error: \(error)")
      throw ExitCode(2)
    }
    if let scan = inspection.scan {
      let first = scan.firstLSN.map { "\($0)" } ?? "-"
      emit(
        "segments: \(scan.segments.count), records: \(inspection.recordCount), LSN \(first)...\(scan.lastLSN), "
          + "epoch \(scan.epoch), cluster \(scan.clusterID.map { "\($0)" } ?? "-")")
    }
    for checkpoint in inspection.checkpoints {
      emit("checkpoint \(checkpoint.name): " + (checkpoint.problem.map { "INVALID (\($0))" } ?? "ok"))
    }
    guard let problem = inspection.firstProblem else {
      emit("ok: the log and its checkpoints are valid")
      return
    }
    warn("problem: \(problem)")
    throw ExitCode(
      inspection.corruption == nil && inspection.checkpoints.allSatisfy { $0.problem == nil } ? 1 : 2)
  }
}

struct WALRepair: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "repair",
    abstract: "Cut a torn or corrupt tail, keeping .broken copies of what is cut.",
    discussion: """
      A torn tail (an unsynced write a crash left incomplete) is always cut. Damage before the tail
      would drop records that were synced and may have been acknowledged: repair refuses unless
      --force is given. Stop the node before repairing its log.
      """)

  @Argument(help: "The data directory (holding wal/) or the wal/ directory itself.")
  var directory: String

  @Flag(help: "Also cut damage that lies before the tail, dropping everything after it.")
  var force = false

  func run() throws {
    do {
      let report = try LogInspector.repair(
        directory, force: force, logger: Logger(label: "memwal.repair") { _ in SwiftLogNoOpLogHandler() })
      if report.actions.isEmpty {
        emit("nothing to repair: the log is valid")
      } else {
        for action in report.actions { emit(action) }
        emit("repaired: the log now ends at LSN \(report.lastLSN)")
      }
    } catch let error as LogInspector.RepairError {
      warn("error: \(error)")
      throw ExitCode(2)
    } catch {
      warn("error: \(error)")
      throw ExitCode(2)
    }
  }
}
