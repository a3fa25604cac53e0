import MemWALCore
import Synchronization

/// How answers reach waiting writers. Resuming a suspended task costs a scheduler hand-off, and a
/// flusher that resumed 64 writers one by one would spend longer on that than on the fsync. So the
/// flusher resolves only the roots of a small tree: each woken writer passes the answers of its
/// subtree on before returning, and the whole batch is awake in a few steps, the work spread over
/// the threads that are waking anyway.
struct Acknowledgement: Sendable {
  var ticket: AppendTicket
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
      root.ticket.resolve(Delivery(result: root.result, others: acknowledgements[(start + 1)..<end]))
      start = end
    }
  }
}

/// A queued append: `result()` waits for the log's answer. Handed out by `WriteAheadLog.submit`, so
/// that a caller can fix its place in the log synchronously (under its own lock) and wait outside it.
public final class AppendTicket: Sendable {
  private enum State {
    case pending
    case waiting(CheckedContinuation<Delivery, Never>)
    case resolved(Delivery)
  }

  private let state = Mutex(State.pending)

  init() {}

  func resolve(_ delivery: Delivery) {
    let waiter = state.withLock { state -> CheckedContinuation<Delivery, Never>? in
      if case .waiting(let continuation) = state {
        state = .resolved(Delivery(result: delivery.result, others: []))
        return continuation
      }
      state = .resolved(Delivery(result: delivery.result, others: []))
      return nil
    }
    if let waiter {
      waiter.resume(returning: delivery)
    } else {
      // Nobody is waiting yet: pass the others on from here.
      delivery.forward()
    }
  }

  func fail(_ error: WALError) { resolve(Delivery(result: .failure(error), others: [])) }

  /// Waits for the append to reach the durability it asked for.
  public func result() async throws -> WriteAheadLog.AppendResult {
    let delivery = await withCheckedContinuation { (continuation: CheckedContinuation<Delivery, Never>) in
      let ready = state.withLock { state -> Delivery? in
        switch state {
        case .resolved(let delivery): return delivery
        case .pending:
          state = .waiting(continuation)
          return nil
        case .waiting: preconditionFailure("an append ticket is awaited once")
        }
      }
      if let ready { continuation.resume(returning: ready) }
    }
    delivery.forward()
    return try delivery.result.get()
  }
}
