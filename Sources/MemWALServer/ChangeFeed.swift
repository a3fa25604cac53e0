import Hummingbird
import MemWALCore
import MemWALLog
import MemWALNode
import MemWALStore
import NIOCore

/// `GET /v1/changes?from_lsn=N`: every record from `N` on as NDJSON, then new ones as they are
/// written, until the client leaves (or the server stops). Each line is one record with its
/// operations' before- and after-images decoded.
extension API {
  static let feedBatch = 256
  /// How long the feed waits for a new record before writing an empty line, which keeps proxies
  /// from closing an idle stream and lets the server notice a client that has gone.
  static let feedHeartbeat: Duration = .seconds(10)

  func changes(_ request: Request) throws -> Response {
    try authorize(request, .read, namespace: nil)
    let query = query(request)
    try query.allowOnly(["from_lsn"])
    let from = max(try query.optionalLSN("from_lsn") ?? LSN(1), LSN(1))
    let log = engine.log
    let body = ResponseBody { writer in
      var next = from
      while !Task.isCancelled {
        let records = try log.records(from: next, limit: Self.feedBatch)
        if records.isEmpty {
          do {
            try await log.positions.written.wait(for: next, timeout: Self.feedHeartbeat)
          } catch is WaitError {
            try await writer.write(ByteBuffer(string: "\n"))
          }
          continue
        }
        var text = ""
        for record in records {
          Self.changeLine(record).write(into: &text)
          text += "\n"
        }
        try await writer.write(ByteBuffer(string: text))
        next = records[records.count - 1].lsn.next
      }
      try await writer.finish(nil)
    }
    return Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: body)
  }

  static func changeLine(_ record: WALRecord) -> JSONValue {
    var fields: JSONObject = [
      "lsn": .number(Double(record.lsn.rawValue)), "epoch": .number(Double(record.epoch.rawValue)),
      "transaction": .number(Double(record.transactionID.rawValue)),
      "time": .string(formatTimestamp(record.timestampMicros)),
    ]
    switch record.payload {
    case .epochChange(let change):
      fields["type"] = .string("epoch_change")
      fields["leader"] = .string(change.leader)
    case .quorumChange(let change):
      fields["type"] = .string("quorum_change")
      fields["quorum_followers"] = .number(Double(change.quorumFollowers))
    case .transaction(let transaction):
      fields["type"] = .string("transaction")
      fields["namespace"] = .string(transaction.namespace)
      if let key = transaction.idempotencyKey { fields["idempotency_key"] = .string(key) }
      fields["operations"] = .array(
        transaction.operations.map { operation in
          .object([
            "kind": .string(operation.kind.description), "target": .string(operation.target.description),
            "id": .string(operation.id), "before": image(operation.before, operation.target),
            "after": image(operation.after, operation.target),
          ])
        })
    }
    return .object(fields)
  }

  static func image(_ bytes: [UInt8]?, _ target: TargetType) -> JSONValue {
    guard let bytes else { return .null }
    guard let value = try? RecordCodec.decode(bytes, as: target) else {
      return .string("<undecodable image>")
    }
    switch value {
    case .namespace(let config): return Representation.namespace(config)
    case .memory(let memory):
      return Representation.memory(StoredMemory(record: memory, version: .zero, timestampMicros: 0))
    case .node(let node): return Representation.node(node)
    case .edge(let edge): return Representation.edge(edge)
    }
  }
}
