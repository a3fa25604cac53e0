import MemWALCore

/// How answers reach waiting writers. Resuming a suspended task costs a scheduler hand-off, and a
/// flusher that resumed 64 writers one by one would spend longer on that than on the fsync. So the
/// flusher resumes only the roots of a small tree: each woken writer passes the answers of its
/// subtree on before returning, and the whole batch is awake in a few steps, the work spread over
/// the threads that are waking anyway.
struct Acknowledgement: Sendable {
  var continuation: CheckedContinuation<Delivery, Never>
  var result: Result<WriteAheadLog.AppendResult, WALError>
}

/// What a writer is resumed with: its own answer, and others to pass on.
struct Delivery: Sendable {
  var result: Result<WriteAheadLog.AppendResult, WALError>
  var others: ArraySlice<Acknowledgement>

  /// Resumes the others, `fanOut` subtrees at a time.
  func forward() { Delivery.deliver(others) }

  static let fanOut = 2

  static func deliver(_ acknowledgements: ArraySlice<Acknowledgement>) {
    guard !acknowledgements.isEmpty else { return }
    let groupSize = (acknowledgements.count + fanOut - 1) / fanOut
    var start = acknowledgements.startIndex
    while start < acknowledgements.endIndex {
      let end = min(start + groupSize, acknowledgements.endIndex)
      let root = acknowledgements[start]
      root.continuation.resume(
        returning: Delivery(result: root.result, others: acknowledgements[(start + 1)..<end]))
      start = end
    }
  }

  static func fail(_ continuation: CheckedContinuation<Delivery, Never>, with error: WALError) {
    continuation.resume(returning: Delivery(result: .failure(error), others: []))
  }
}
