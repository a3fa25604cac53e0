import MemWALClient
import MemWALCore
import Testing

/// The cluster client against fake nodes that die, refuse, redirect, drop connections and get
/// promoted, as docs/failover.md ("Clients") describes.
@Suite struct FailoverTests {
  static func options(deadline: Duration = .seconds(10), generatesKeys: Bool = false)
    -> MemWALClient.FailoverOptions
  {
    var options = MemWALClient.FailoverOptions()
    options.deadline = deadline
    options.generatesIdempotencyKeys = generatesKeys
    return options
  }

  static func memory(_ id: String) -> MemoryRecord { MemoryRecord(id: id, vector: [1, 0]) }

  /// Nodes that all name `primary` (nil: none) and list `members`.
  static func point(_ nodes: [FakeNode], at primary: FakeNode?, epoch: UInt64 = 1, members: [FakeNode]) {
    for node in nodes {
      node.update {
        $0.primary = primary?.url
        $0.epoch = epoch
        $0.members = members.map(\.url)
      }
    }
  }

  @Test func aKeyedWriteMovesToTheNewPrimaryWhenThePrimaryDies() async throws {
    try await withFakeCluster { cluster in
      let a = try await cluster.start("a", role: "primary")
      let b = try await cluster.start("b", role: "follower")
      Self.point([a, b], at: a, members: [a, b])
      b.update { $0.writes = .redirect(primary: a.url) }
      let client = MemWALClient(endpoints: [a.url, b.url], failover: Self.options())
      let first = try await client.upsert(
        [Self.memory("m1")], in: "ns", durability: .quorum, idempotencyKey: "k1")
      #expect(first.epoch == Epoch(1) && client.primaryURL == a.url)
      #expect(client.memberURLs == [a.url, b.url])

      await a.stop()
      // b has lost the primary and nobody is promoted yet: the write polls /v1/cluster meanwhile.
      Self.point([b], at: nil, members: [a, b])
      b.update { $0.writes = .notPrimary }
      let polledBefore = b.snapshot.clusterRequests
      let write = Task {
        try await client.upsert([Self.memory("m2")], in: "ns", durability: .quorum, idempotencyKey: "k2")
      }
      try await eventually("the client polls while there is no primary") {
        b.snapshot.clusterRequests >= polledBefore + 3
      }
      #expect(b.snapshot.writeKeys.isEmpty)
      Self.point([b], at: b, epoch: 2, members: [a, b])
      b.update {
        $0.role = "primary"
        $0.writes = .acknowledge
      }
      let second = try await write.value
      #expect(second.epoch == Epoch(2) && !second.isRepeat && second.durability == .quorum)
      #expect(client.primaryURL == b.url && b.snapshot.writeKeys == ["k2"])
      #expect(cluster.ledger.writes.map(\.node) == ["a", "b"])
    }
  }

  /// The primary `a` logs a keyed `quorum` write and never answers; then `b` becomes primary in
  /// epoch 2, writing as `promoted` says. Returns how the call ended.
  static func failOverAHangingWrite(
    in cluster: FakeCluster, promoted behaviour: FakeWriteBehaviour = .acknowledge
  ) async throws -> (outcome: MemWALClient.Outcome, b: FakeNode) {
    let a = try await cluster.start("a", role: "primary")
    let b = try await cluster.start("b", role: "follower")
    point([a, b], at: a, members: [a, b])
    a.update { $0.writes = .logThenHang }
    let client = MemWALClient(endpoints: [a.url, b.url], timeout: .milliseconds(200), failover: options())
    let write = Task {
      await MemWALClient.Outcome {
        try await client.upsert([memory("m")], in: "ns", durability: .quorum, idempotencyKey: "k")
      }
    }
    try await eventually("the primary has logged the write") { !a.snapshot.writeKeys.isEmpty }
    point([b], at: b, epoch: 2, members: [a, b])
    b.update {
      $0.role = "primary"
      $0.writes = behaviour
    }
    return (await write.value, b)
  }

  /// After the failover the repeat of the key finds the first outcome instead of writing again.
  @Test func aKeyedWriteWithoutAnAnswerIsResolvedByItsRepeat() async throws {
    try await withFakeCluster { cluster in
      let (outcome, b) = try await Self.failOverAHangingWrite(in: cluster)
      guard case .acknowledged(let result) = outcome else {
        Issue.record("the repeat was not acknowledged")
        return
      }
      #expect(result.isRepeat && result.epoch == Epoch(1) && result.idempotencyKey == "k")
      #expect(cluster.ledger.writes.map(\.node) == ["a"])
      #expect(b.snapshot.writeKeys == ["k"])
    }
  }

  /// An attempt that may have been logged is not undone by a later attempt's definite refusal:
  /// the call ends indeterminate, never failed.
  @Test func aRefusalAfterAnAttemptThatMayHaveBeenLoggedIsIndeterminate() async throws {
    try await withFakeCluster { cluster in
      let (outcome, _) = try await Self.failOverAHangingWrite(
        in: cluster, promoted: .refuse(status: 404, code: "unknown_namespace"))
      #expect(outcome.isIndeterminate, "\(outcome)")
    }
  }

  @Test func anUnkeyedWriteDroppedAfterItWasSentIsIndeterminate() async throws {
    let server = try DroppingServer()
    defer { server.stop() }
    let cluster = MemWALClient(endpoints: [server.url], failover: Self.options(deadline: .seconds(5)))
    let single = MemWALClient(baseURL: server.url)
    for (index, client) in [cluster, single].enumerated() {
      let outcome = await MemWALClient.Outcome {
        try await client.upsert([Self.memory("m")], in: "ns", durability: .quorum)
      }
      guard case .indeterminate(let error) = outcome else {
        Issue.record("\(outcome)")
        continue
      }
      #expect(error.code == "indeterminate" && error.status == 0 && error.idempotencyKey == nil)
      // Not retried: the write may have been logged, and without a key a retry could log it twice.
      #expect(server.droppedRequests.count == index + 1)
    }
    #expect(server.droppedRequests.allSatisfy { $0.hasPrefix("POST /v1/namespaces/ns/memories") })
  }

  /// With a key the write is retried until the deadline, then reported indeterminate with its key.
  @Test func aKeyedWriteThatKeepsBeingDroppedIsIndeterminateAtTheDeadline() async throws {
    let server = try DroppingServer()
    defer { server.stop() }
    // Deadlines in these tests leave room for a busy machine: the whole suite runs at once.
    let client = MemWALClient(endpoints: [server.url], failover: Self.options(deadline: .seconds(2)))
    let start = ContinuousClock.now
    do {
      try await client.upsert([Self.memory("m")], in: "ns", durability: .quorum, idempotencyKey: "key-1")
      Issue.record("a dropped write was acknowledged")
    } catch let error as MemWALClientError {
      #expect(error.isIndeterminate && error.idempotencyKey == "key-1", "\(error); \(server.events)")
    }
    // It gives up when the next pause (at most 200 ms) would end after the deadline.
    let elapsed = ContinuousClock.now - start
    #expect(elapsed >= .milliseconds(1_750) && elapsed < .seconds(5), "\(elapsed)")
    #expect(server.droppedRequests.count >= 2)
  }

  @Test func indeterminateAnswersAreIndeterminateAndAKeyResolvesThem() async throws {
    try await withFakeCluster { cluster in
      let a = try await cluster.start("a", role: "primary")
      Self.point([a], at: a, members: [a])
      let client = MemWALClient(endpoints: [a.url], failover: Self.options(deadline: .seconds(2)))
      for code in ["indeterminate", "insufficient_replicas"] {
        a.update {
          $0.writes = .logThenFail(code: code)
          $0.writeKeys = []
        }
        let outcome = await MemWALClient.Outcome {
          try await client.upsert([Self.memory("m")], in: "ns", durability: .quorum)
        }
        guard case .indeterminate(let error) = outcome else {
          Issue.record("\(code): \(outcome)")
          continue
        }
        #expect(error.status == 503 && error.code == code)
        #expect(a.snapshot.writeKeys == [""], "an unkeyed write of unknown outcome was retried")
      }

      a.update { $0.writes = .logThenFail(code: "indeterminate") }
      let write = Task {
        try await client.upsert([Self.memory("m")], in: "ns", durability: .quorum, idempotencyKey: "k")
      }
      try await eventually("the keyed write was logged") { a.snapshot.writeKeys.contains("k") }
      a.update { $0.writes = .acknowledge }
      let result = try await write.value
      let first = try #require(cluster.ledger.writes.last)
      #expect(result.isRepeat && result.lsn == LSN(first.lsn))
      #expect(MemWALClient.Outcome(result).isAcknowledged)
    }
  }

  /// A fenced primary still says it is the primary but refuses writes with `503 not_primary`:
  /// nothing was written, so even an unkeyed write moves on once another node is promoted. The
  /// client starts from the controller's address alone.
  @Test func notPrimaryLeadsToRediscoveryFromTheController() async throws {
    try await withFakeCluster { cluster in
      let controller = try await cluster.start("controller", role: nil)
      let a = try await cluster.start("a", role: "primary")
      let b = try await cluster.start("b", role: "follower")
      let c = try await cluster.start("c", role: "follower")
      Self.point([controller, a, b, c], at: a, members: [a, b, c])
      let client = MemWALClient(endpoints: [controller.url], failover: Self.options())
      try await client.upsert([Self.memory("m1")], in: "ns")
      #expect(client.primaryURL == a.url && client.memberURLs == [a.url, b.url, c.url])

      a.update { $0.writes = .notPrimary }
      let write = Task { try await client.upsert([Self.memory("m2")], in: "ns", durability: .quorum) }
      try await eventually("the fenced primary refused the write") { a.snapshot.writeKeys.count == 2 }
      let polledBefore = b.snapshot.clusterRequests
      try await eventually("the client polls for a new primary") {
        b.snapshot.clusterRequests >= polledBefore + 2
      }
      Self.point([controller, b, c], at: b, epoch: 2, members: [a, b, c])
      b.update { $0.role = "primary" }
      let result = try await write.value
      #expect(result.epoch == Epoch(2) && client.primaryURL == b.url)
      // The refusing node was not asked again in its epoch.
      #expect(a.snapshot.writeKeys.count == 2 && b.snapshot.writeKeys.count == 1)
      #expect(cluster.ledger.writes.map(\.node) == ["a", "b"])
    }
  }

  /// A follower redirects to a primary that is gone: the redirect is refused before anything is
  /// sent, so the unkeyed write is safe to send to the next primary.
  @Test func aRedirectToAnUnreachablePrimaryLeadsToRediscovery() async throws {
    try await withFakeCluster { cluster in
      let a = try await cluster.start("a", role: "primary")
      let b = try await cluster.start("b", role: "follower")
      let gone = try await cluster.start("gone", role: "follower")
      await gone.stop()
      Self.point([a, b], at: a, members: [a, b])
      let client = MemWALClient(endpoints: [a.url, b.url], failover: Self.options())
      try await client.upsert([Self.memory("m1")], in: "ns")

      // a was demoted and believes `gone` was promoted in epoch 2, which then died.
      Self.point([a, b], at: gone, epoch: 2, members: [a, b, gone])
      a.update {
        $0.role = "follower"
        $0.writes = .redirect(primary: gone.url)
      }
      let write = Task { try await client.upsert([Self.memory("m2")], in: "ns") }
      try await eventually("a redirected the write") { a.snapshot.writeKeys.count == 2 }
      Self.point([a, b], at: b, epoch: 3, members: [a, b, gone])
      b.update { $0.role = "primary" }
      let result = try await write.value
      #expect(result.epoch == Epoch(3) && client.primaryURL == b.url)
      #expect(cluster.ledger.writes.map(\.node) == ["a", "b"])
    }
  }

  @Test func theDeadlineBoundsACallWithoutAPrimary() async throws {
    try await withFakeCluster { cluster in
      let a = try await cluster.start("a", role: "follower")
      Self.point([a], at: nil, members: [a])
      a.update { $0.writes = .notPrimary }
      let client = MemWALClient(endpoints: [a.url], failover: Self.options(deadline: .milliseconds(500)))
      let start = ContinuousClock.now
      let outcome = await MemWALClient.Outcome { try await client.upsert([Self.memory("m")], in: "ns") }
      let elapsed = ContinuousClock.now - start
      guard case .failed(let error as MemWALClientError) = outcome else {
        Issue.record("\(outcome)")
        return
      }
      // Nothing could have been written: a failure, not an indeterminate outcome.
      #expect(error.code == "unavailable", "\(error)")
      #expect(elapsed >= .milliseconds(250) && elapsed < .seconds(4), "\(elapsed)")

      // A primary that logs and never answers: the request's own 30 s timeout is cut to the deadline.
      a.update {
        $0.role = "primary"
        $0.writes = .logThenHang
      }
      Self.point([a], at: a, members: [a])
      let hanging = MemWALClient(endpoints: [a.url], failover: Self.options(deadline: .seconds(2)))
      let hangStart = ContinuousClock.now
      let hung = await MemWALClient.Outcome {
        try await hanging.upsert([Self.memory("m")], in: "ns", idempotencyKey: "k")
      }
      let hangElapsed = ContinuousClock.now - hangStart
      #expect(hung.isIndeterminate, "\(hung)")
      #expect(hangElapsed >= .milliseconds(1_750) && hangElapsed < .seconds(5), "\(hangElapsed)")
    }
  }

  @Test func readsMoveToAnotherMemberAndKeepTheirMinimumLSN() async throws {
    try await withFakeCluster { cluster in
      let a = try await cluster.start("a", role: "primary")
      let b = try await cluster.start("b", role: "follower")
      Self.point([a, b], at: a, members: [a, b])
      let client = MemWALClient(endpoints: [b.url, a.url], failover: Self.options())
      let written = try await client.upsert([Self.memory("m")], in: "ns")
      #expect(try await client.memory("m", in: "ns")?.record.text == "a")
      await a.stop()
      #expect(try await client.memory("m", in: "ns")?.record.text == "b")
      let minimum = String(written.lsn.rawValue)
      #expect(a.snapshot.readMinLSNs == [minimum] && b.snapshot.readMinLSNs == [minimum])
    }
  }

  @Test func generatedIdempotencyKeysTravelWithEveryWrite() async throws {
    try await withFakeCluster { cluster in
      let a = try await cluster.start("a", role: "primary")
      Self.point([a], at: a, members: [a])
      let client = MemWALClient(endpoints: [a.url], failover: Self.options(generatesKeys: true))
      let first = try await client.upsert([Self.memory("m1")], in: "ns")
      let second = try await client.upsert([Self.memory("m2")], in: "ns")
      let given = try await client.upsert([Self.memory("m3")], in: "ns", idempotencyKey: "mine")
      let keys = a.snapshot.writeKeys
      #expect(keys.count == 3 && Set(keys).count == 3 && !keys.contains(""))
      #expect([first, second, given].map(\.idempotencyKey) == keys.map { Optional($0) })
      #expect(given.idempotencyKey == "mine")
    }
  }

  @Test func cancellingAWriteIsIndeterminateOnlyOnceItWasSent() async throws {
    try await withFakeCluster { cluster in
      let a = try await cluster.start("a", role: "primary")
      Self.point([a], at: a, members: [a])
      a.update { $0.writes = .logThenHang }
      let client = MemWALClient(endpoints: [a.url], failover: Self.options())
      let sent = Task {
        await MemWALClient.Outcome {
          try await client.upsert([Self.memory("m")], in: "ns", idempotencyKey: "k")
        }
      }
      try await eventually("the primary has the write") { !a.snapshot.writeKeys.isEmpty }
      sent.cancel()
      #expect(await sent.value.isIndeterminate)

      Self.point([a], at: nil, members: [a])
      a.update {
        $0.role = "follower"
        $0.writes = .notPrimary
      }
      let waiting = Task {
        await MemWALClient.Outcome { try await client.upsert([Self.memory("m")], in: "ns") }
      }
      let polledBefore = a.snapshot.clusterRequests
      // Cancelled once the client has the refusal and polls, not while the request is in flight.
      try await eventually("the write was refused and the client polls") {
        a.snapshot.writeKeys.count == 2 && a.snapshot.clusterRequests > polledBefore
      }
      waiting.cancel()
      guard case .failed(let error) = await waiting.value else {
        Issue.record(
          "a write refused everywhere and then cancelled was not a failure: \(await waiting.value)")
        return
      }
      #expect(error is CancellationError, "\(error)")
    }
  }

  /// Against a real node (no cluster section: `/v1/cluster` says primary with no members).
  @Test func theClusterClientFindsARealSingleNode() async throws {
    try await withNode { url in
      let client = MemWALClient(endpoints: [url], failover: Self.options())
      try await client.createNamespace("ns", dimension: 2, metric: .l2)
      #expect(client.primaryURL == url)
      let first = try await client.upsert([Self.memory("m")], in: "ns", idempotencyKey: "k")
      let again = try await client.upsert([Self.memory("m")], in: "ns", idempotencyKey: "k")
      #expect(!first.isRepeat && again.isRepeat && again.lsn == first.lsn)
      #expect(try await client.memory("m", in: "ns")?.version == first.lsn)
      try await client.deleteMemory("m", in: "ns", idempotencyKey: "d")
      let repeated = try await client.deleteMemory("m", in: "ns", idempotencyKey: "d")
      #expect(repeated.isRepeat)
      #expect(try await client.memory("m", in: "ns") == nil)
    }
  }

  /// The one-node client follows a follower's redirect once, also with an HTTP client that leaves
  /// redirects to it.
  @Test func theOneNodeClientFollowsARedirectOnce() async throws {
    try await withFakeCluster { cluster in
      let a = try await cluster.start("a", role: "follower")
      let b = try await cluster.start("b", role: "primary")
      a.update { $0.writes = .redirect(primary: b.url) }
      let http = MemWALClient.makeHTTPClient()
      let client = MemWALClient(baseURL: a.url, httpClient: http)
      let outcome = await MemWALClient.Outcome { try await client.upsert([Self.memory("m")], in: "ns") }
      try await http.shutdown()
      #expect(outcome.isAcknowledged, "\(outcome)")
      #expect(a.snapshot.writeKeys.count == 1 && b.snapshot.writeKeys.count == 1)
    }
  }
}
