import MemWALCore
import MemWALLog
import MemWALStore
import Synchronization

/// The answer to an in-flight idempotent transaction, for every repeat that arrives meanwhile.
final class OutcomeBroadcast: Sendable {
  private let state = Mutex<
    (Result<WriteOutcome, WriteError>?, [CheckedContinuation<Result<WriteOutcome, WriteError>, Never>])
  >(
    (nil, []))

  func publish(_ result: Result<WriteOutcome, WriteError>) {
    let waiters = state.withLock { state in
      state.0 = result
      defer { state.1.removeAll() }
      return state.1
    }
    for waiter in waiters { waiter.resume(returning: result) }
  }

  func wait() async -> Result<WriteOutcome, WriteError> {
    await withCheckedContinuation { continuation in
      let ready = state.withLock { state -> Result<WriteOutcome, WriteError>? in
        if let result = state.0 { return result }
        state.1.append(continuation)
        return nil
      }
      if let ready { continuation.resume(returning: ready) }
    }
  }
}

extension MemoryEngine {
  // MARK: namespaces

  public func createNamespace(_ config: NamespaceConfig, durability: Durability = .local)
    async throws(WriteError)
    -> WriteOutcome
  {
    do { try options.store.limits.check(namespace: config) } catch { throw .invalid(error) }
    return try await submitNamespaceChange(
      name: config.name, value: .namespace(config), durability: durability)
  }

  /// Deletes a namespace and everything in it (reads as of earlier LSNs still see it while retained).
  public func deleteNamespace(_ name: String, durability: Durability = .local) async throws(WriteError)
    -> WriteOutcome
  {
    try await submitNamespaceChange(name: name, value: nil, durability: durability)
  }

  private func submitNamespaceChange(name: String, value: RecordValue?, durability: Durability)
    async throws(WriteError)
    -> WriteOutcome
  {
    await waitForRoom()
    let (ticket, sequence) = try writeLock.withLock { state throws(WriteError) -> (AppendTicket, UInt64) in
      guard state.role == .primary else { throw .notPrimary(primary: state.primaryHint) }
      let current = currentNamespace(name, state)
      if value != nil, current != nil { throw .namespaceExists(name) }
      if value == nil, current == nil { throw .unknownNamespace(name) }
      let operation = WALOperation(
        kind: value == nil ? .delete : .insert, target: .namespace, id: name,
        before: current.map { RecordCodec.encode(.namespace($0)) }, after: value.map(RecordCodec.encode))
      let ticket = try submit(
        WALTransaction(namespace: name, operations: [operation]), durability: durability, state)
      state.sequence += 1
      state.pendingNamespaces[name] = OverlayEntry(value: value, lsn: nil, sequence: state.sequence)
      state.submissions.append(SubmissionRecord(sequence: state.sequence, keys: [], namespace: name))
      // Values written in the namespace's previous incarnation must not leak into the next one.
      state.overlay = state.overlay.filter { $0.key.namespace != name }
      return (ticket, state.sequence)
    }
    let outcome: WriteOutcome
    do {
      outcome = try await logged(ticket)
    } catch {
      writeLock.withLock { $0.recordLSN(.zero, of: sequence) }
      throw error
    }
    writeLock.withLock { state in
      if state.pendingNamespaces[name]?.sequence == sequence {
        state.pendingNamespaces[name]?.lsn = outcome.lsn
      }
      state.recordLSN(outcome.lsn, of: sequence)
    }
    if outcome.lsn <= store.appliedLSN { pruneOverlay() }
    return try await replicated(outcome, requested: durability)
  }

  func currentNamespace(_ name: String, _ state: WriteState) -> NamespaceConfig? {
    if let pending = state.pendingNamespaces[name] {
      guard case .namespace(let config)? = pending.value else { return nil }
      return config
    }
    return store.currentNamespace(name)
  }

  // MARK: transactions

  /// Runs a transaction: checks it, logs it, and returns once it has reached `request.durability`
  /// on this node. A repeat of an idempotency key returns the first outcome and writes nothing.
  public func execute(_ request: TransactionRequest) async throws(WriteError) -> WriteOutcome {
    let limits = options.store.limits
    guard !request.operations.isEmpty else {
      throw .invalid(.invalid(field: "operations", reason: "at least one is needed"))
    }
    guard request.operations.count <= limits.maximumOperationsPerTransaction else {
      throw .invalid(
        .invalid(
          field: "operations",
          reason:
            "\(request.operations.count) operations; the limit is \(limits.maximumOperationsPerTransaction)"))
    }
    // The new values' images, encoded once and outside the write lock: the log record's
    // after-images and the idempotency key's request digest are both made from them.
    let images = request.operations.map { $0.newValue.map(RecordCodec.encode) }
    var digest: [UInt8]?
    if let key = request.idempotencyKey {
      do { try limits.check(id: key, field: "idempotency_key") } catch { throw .invalid(error) }
      digest = TransactionRequest.requestDigest(of: request.operations, images: images)
    }
    await waitForRoom()
    let prepared = try writeLock.withLock { state throws(WriteError) -> Prepared in
      // Only the primary answers a repeat: a follower (or a primary that stepped down) may hold a
      // copy that a newer epoch cut, or lack a write the primary has; it sends the writer on.
      guard state.role == .primary else { throw .notPrimary(primary: state.primaryHint) }
      if let key = request.idempotencyKey, let digest {
        // Checked in this order under the lock: an outcome leaves `recentOutcomes` only after the
        // store has applied it, so one of the three always knows a key that was used. A repeat
        // must be the same request: the same key with other operations is refused, not answered
        // with the first one's outcome (which would drop the new operations without a word).
        let combined = idempotencyKey(request.namespace, key)
        if let pending = state.inFlightKeys[combined] {
          guard pending.digest == digest else { throw .idempotencyKeyReused(key: key, lsn: nil) }
          return .repeat(pending.broadcast)
        }
        if let recent = state.recentOutcomes[combined] {
          guard recent.digest == digest else {
            throw .idempotencyKeyReused(key: key, lsn: recent.outcome.lsn)
          }
          return .done(recent.outcome)
        }
        if let applied = store.idempotentOutcome(namespace: request.namespace, key: key) {
          // A key logged before digests existed has none to compare: it is answered as before.
          if let first = applied.requestDigest, first != digest {
            throw .idempotencyKeyReused(key: key, lsn: applied.lsn)
          }
          return .done(repeatOutcome(applied))
        }
      }
      return .submitted(try prepareAndSubmit(request, images: images, digest: digest, &state))
    }
    switch prepared {
    case .done(var outcome):
      outcome.isRepeat = true
      return try await replicated(outcome, requested: request.durability)
    case .repeat(let broadcast):
      var outcome = try await broadcast.wait().get()
      outcome.isRepeat = true
      return try await replicated(outcome, requested: request.durability)
    case .submitted(let submission):
      // What the log did decides the key's outcome: once logged, a repeat of the key finds this
      // LSN (and waits for the replication it asks for) even if this call's wait fails.
      let result: Result<WriteOutcome, WriteError>
      do {
        result = .success(try await logged(submission.ticket))
      } catch {
        result = .failure(error)
      }
      writeLock.withLock { state in
        state.recordLSN((try? result.get())?.lsn ?? .zero, of: submission.sequence)
        if let outcome = try? result.get() {
          for key in submission.keys where state.overlay[key]?.sequence == submission.sequence {
            state.overlay[key]?.lsn = outcome.lsn
          }
        }
        if let key = request.idempotencyKey {
          let combined = idempotencyKey(request.namespace, key)
          state.inFlightKeys[combined] = nil
          if let outcome = try? result.get(), let digest {
            state.recentOutcomes[combined] = (outcome, digest)
          }
        }
      }
      submission.broadcast?.publish(result)
      // The applier may have applied the record before its LSN was noted here: prune now.
      if let lsn = try? result.get().lsn, lsn <= store.appliedLSN { pruneOverlay() }
      return try await replicated(try result.get(), requested: request.durability)
    }
  }

  enum Prepared {
    case done(WriteOutcome)
    case `repeat`(OutcomeBroadcast)
    case submitted(Submission)
  }

  struct Submission {
    var ticket: AppendTicket
    var keys: [OverlayKey]
    var sequence: UInt64
    var broadcast: OutcomeBroadcast?
  }

  private func idempotencyKey(_ namespace: String, _ key: String) -> String { namespace + "\u{0}" + key }

  /// The answer to a repeat of an applied transaction's idempotency key.
  private func repeatOutcome(_ applied: MemoryStore.IdempotentOutcome) -> WriteOutcome {
    let durability: Durability = log.positions.flushed.value >= applied.lsn ? .local : .memory
    return WriteOutcome(
      lsn: applied.lsn, epoch: applied.epoch, transactionID: applied.transactionID, durability: durability,
      isRepeat: true)
  }

  /// Checks every operation against the current values, builds the WAL transaction with before- and
  /// after-images, submits it, and records the new values in the overlay — all under the write lock.
  private func prepareAndSubmit(
    _ request: TransactionRequest, images: [[UInt8]?], digest: [UInt8]?, _ state: inout WriteState
  ) throws(WriteError) -> Submission {
    let limits = options.store.limits
    guard state.role == .primary else { throw .notPrimary(primary: state.primaryHint) }
    guard let config = currentNamespace(request.namespace, state) else {
      throw .unknownNamespace(request.namespace)
    }
    // Values as this transaction changes them, so later operations see earlier ones.
    var local: [OverlayKey: RecordValue?] = [:]
    var operations: [WALOperation] = []
    var order: [OverlayKey] = []

    func current(_ target: TargetType, _ id: String) throws(WriteError) -> (
      value: RecordValue?, version: LSN?
    ) {
      let key = OverlayKey(namespace: request.namespace, target: target, id: id)
      if let value = local[key] { return (value, nil) }
      if let entry = state.overlay[key] { return (entry.value, entry.lsn) }
      if let stored = store.currentValue(target, id: id, in: request.namespace) {
        return (stored.value, stored.version)
      }
      return (nil, nil)
    }

    /// `afterImage` is `after` encoded (the request's own images are encoded before the lock).
    func record(
      _ target: TargetType, _ id: String, before: RecordValue?, after: RecordValue?, afterImage: [UInt8]?
    ) {
      let key = OverlayKey(namespace: request.namespace, target: target, id: id)
      if local[key] == nil { order.append(key) }
      local[key] = .some(after)
      let kind: OperationKind = after == nil ? .delete : (before == nil ? .insert : .update)
      operations.append(
        WALOperation(
          kind: kind, target: target, id: id, before: before.map(RecordCodec.encode), after: afterImage))
    }

    for (operation, image) in zip(request.operations, images) {
      let target = operation.target
      let id = operation.id
      let key = OverlayKey(namespace: request.namespace, target: target, id: id)
      guard local[key] == nil else {
        throw .invalid(
          .invalid(field: "operations", reason: "\(target) \(id) appears twice in one transaction"))
      }
      let (before, version) = try current(target, id)
      if let expected = operation.ifVersion {
        if before != nil && version == nil { throw .writeInFlight(target: target, id: id) }
        let actual = before == nil ? LSN.zero : version!
        guard actual == expected else {
          throw .versionMismatch(
            target: target, id: id, expected: expected, actual: before == nil ? nil : version)
        }
      }
      do {
        switch operation.newValue {
        case .memory(let memory)?: try limits.check(memory: memory, in: config)
        case .node(let node)?: try limits.check(node: node)
        case .edge(let edge)?: try limits.check(edge: edge)
        default: try limits.check(id: id)
        }
      } catch {
        throw .invalid(error)
      }
      if case .edge(let edge)? = operation.newValue {
        for endpoint in [edge.from, edge.to] where try current(.node, endpoint).value == nil {
          throw .missingEndpoint(edge: edge.id, node: endpoint)
        }
      }
      if operation.newValue == nil {
        guard before != nil else { throw .notFound(target: target, id: id) }
        if target == .node {
          // Deleting a node deletes its edges in the same transaction.
          for edgeID in edgeIDs(touching: id, namespace: request.namespace, state: state, local: local) {
            let edgeKey = OverlayKey(namespace: request.namespace, target: .edge, id: edgeID)
            guard local[edgeKey] == nil else { continue }
            let (edgeBefore, _) = try current(.edge, edgeID)
            if edgeBefore != nil { record(.edge, edgeID, before: edgeBefore, after: nil, afterImage: nil) }
          }
        }
      }
      record(target, id, before: before, after: operation.newValue, afterImage: image)
    }
    let transaction = WALTransaction(
      namespace: request.namespace, operations: operations, idempotencyKey: request.idempotencyKey,
      requestDigest: digest)
    let ticket = try submit(transaction, durability: request.durability, state)
    state.sequence += 1
    for key in order {
      state.overlay[key] = OverlayEntry(value: local[key]!, lsn: nil, sequence: state.sequence)
    }
    state.submissions.append(
      SubmissionRecord(
        sequence: state.sequence, keys: order, namespace: nil,
        idempotencyKey: request.idempotencyKey.map { idempotencyKey(request.namespace, $0) }))
    var broadcast: OutcomeBroadcast?
    if let key = request.idempotencyKey, let digest {
      let created = OutcomeBroadcast()
      state.inFlightKeys[idempotencyKey(request.namespace, key)] = (created, digest)
      broadcast = created
    }
    return Submission(ticket: ticket, keys: order, sequence: state.sequence, broadcast: broadcast)
  }

  /// Edges touching a node in its current state: the store's newest, plus and minus those changed in
  /// the overlay and in this transaction.
  private func edgeIDs(
    touching node: String, namespace: String, state: WriteState, local: [OverlayKey: RecordValue?]
  ) -> [String] {
    var ids = Set(store.latestEdgeIDs(touching: node, in: namespace))
    for (key, entry) in state.overlay where key.namespace == namespace && key.target == .edge {
      if case .edge(let edge)? = entry.value, edge.from == node || edge.to == node { ids.insert(key.id) }
    }
    for (key, value) in local where key.namespace == namespace && key.target == .edge {
      if case .edge(let edge)? = value, edge.from == node || edge.to == node { ids.insert(key.id) }
    }
    return ids.sorted()
  }

  /// Submits under the write lock; a node that is not the primary (a follower, or a primary fenced
  /// by a newer epoch) refuses here, so no write slips in after a step-down.
  private func submit(_ transaction: WALTransaction, durability: Durability, _ state: WriteState)
    throws(WriteError) -> AppendTicket
  {
    guard state.role == .primary else { throw .notPrimary(primary: state.primaryHint) }
    do {
      return try log.submit(transaction, durability: durability)
    } catch let error as WALError {
      throw .log(error)
    } catch {
      throw .log(.failed("\(error)"))
    }
  }

  private func waitForRoom() async {
    try? await log.waitForRoom()
  }

  /// For `quorum` and `all_applied`: waits for the replication gate, if the node has one, to
  /// confirm `outcome` (a new write or a repeat found on this node) at the level asked for.
  private func replicated(_ outcome: WriteOutcome, requested: Durability) async throws(WriteError)
    -> WriteOutcome
  {
    var outcome = outcome
    // A repeat of a write first asked at `memory` may not be flushed yet: it reaches `local` here
    // before anything above is asked of the followers.
    if requested >= .local && outcome.durability < .local {
      do {
        // `sync` asks the flusher for an fsync: a `memory` write alone never triggers one.
        if log.positions.flushed.value < outcome.lsn { try await log.sync() }
      } catch {
        throw .indeterminate("the write at LSN \(outcome.lsn) was logged but not flushed: \(error)")
      }
      outcome.durability = .local
    }
    guard requested > .local, outcome.durability == .local else { return outcome }
    guard let gate = replicationGate else {
      guard options.isReplicated else { return outcome }
      throw .insufficientReplicas(
        "this node is not replicating now (not the primary, or changing roles); LSN \(outcome.lsn) is not confirmed"
      )
    }
    var confirmed = outcome
    confirmed.durability = try await gate.wait(for: outcome.lsn, epoch: outcome.epoch, reaching: requested)
    return confirmed
  }

  /// Waits for the log to take the write on this node.
  private func logged(_ ticket: AppendTicket) async throws(WriteError) -> WriteOutcome {
    do {
      let result = try await ticket.result()
      return WriteOutcome(
        lsn: result.lsn, epoch: result.epoch, transactionID: result.transactionID,
        durability: result.durability, isRepeat: false)
    } catch let error as WriteError {
      throw error
    } catch let error as WALError {
      throw .log(error)
    } catch {
      throw .log(.failed("\(error)"))
    }
  }

  // MARK: expiry

  /// Deletes, through the log, memories whose expiry time has passed by `nowMicros` (reads already
  /// hide them; this makes it permanent and the same on every node). Returns how many.
  @discardableResult
  public func deleteExpired(nowMicros: Int64, limit: Int = 1_000) async -> Int {
    var deleted = 0
    for (namespace, id) in store.expiredMemoryIDs(nowMicros: nowMicros, limit: limit) {
      guard let current = store.currentValue(.memory, id: id, in: namespace) else { continue }
      let request = TransactionRequest(
        namespace: namespace, operations: [.deleteMemory(id: id, ifVersion: current.version)])
      // A concurrent update (say, one that extends the expiry) wins: the precondition fails.
      if (try? await execute(request)) != nil { deleted += 1 }
    }
    return deleted
  }
}

extension MemoryEngine.WriteState {
  /// Notes the LSN a submission got (`.zero` when the log failed it: nothing to wait for).
  mutating func recordLSN(_ lsn: LSN, of sequence: UInt64) {
    guard submissionsHead < submissions.count else { return }
    let index = submissionsHead + Int(sequence - submissions[submissionsHead].sequence)
    guard index >= submissionsHead, index < submissions.count, submissions[index].sequence == sequence else {
      return
    }
    submissions[index].lsn = lsn
  }
}
