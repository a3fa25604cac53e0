import MemWALChaos
import MemWALCore
import NIOCore
import NIOPosix
import Testing

/// Starts a test server and a proxy in front of it, runs `body`, and stops both whatever happens.
private func withProxiedServer(
  echoes: Bool, _ body: (TestServer, FaultProxy) async throws -> Void
) async throws {
  let server = try await TestServer.start(echoes: echoes)
  let proxy: FaultProxy
  do {
    proxy = try await FaultProxy.start(
      listenPort: 0, targetPort: server.port, name: "test", group: MultiThreadedEventLoopGroup.singleton)
  } catch {
    await server.close()
    throw error
  }
  do {
    try await body(server, proxy)
  } catch {
    await proxy.close()
    await server.close()
    throw error
  }
  await proxy.close()
  await server.close()
}

private func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
  var generator = SplitMix64(seed: seed)
  var bytes: [UInt8] = []
  bytes.reserveCapacity(count + 8)
  while bytes.count < count {
    withUnsafeBytes(of: generator.next()) { bytes.append(contentsOf: $0) }
  }
  return Array(bytes.prefix(count))
}

@Suite struct FaultProxyTests {
  @Test func bytesPassBothWaysUnchanged() async throws {
    try await withProxiedServer(echoes: true) { server, proxy in
      let client = try await TestClient.connect(port: proxy.port)
      let payload = randomBytes(1 << 20, seed: 0x5EED)
      try await client.send(payload)
      try await waitUntil("1 MiB came back", within: .seconds(10)) { client.inbox.count >= payload.count }
      #expect(client.inbox.bytes == payload)
      #expect(server.received == payload)
      let statistics = proxy.statistics
      #expect(statistics.connectionsAccepted == 1)
      #expect(statistics.bytesForward == payload.count)
      #expect(statistics.bytesBackward == payload.count)
      await client.close()
      try await waitUntil("the server side closed too") { server.connectionsOpen == 0 }
      try await waitUntil("the proxy forgot the connection") { proxy.statistics.connectionsOpen == 0 }
    }
  }

  @Test func blockForwardHoldsClientBytesAndLetsRepliesThrough() async throws {
    try await withProxiedServer(echoes: false) { server, proxy in
      let client = try await TestClient.connect(port: proxy.port)
      try await client.send("a")
      try await waitUntil("the first byte arrived") { server.receivedCount == 1 }

      proxy.setFaults(LinkFaults(blockForward: true))
      #expect(proxy.faults.isPartitioned)
      try await client.send("bc")
      try await expectNever("a blocked byte reached the server") { server.receivedCount > 1 }
      try await server.send("x")
      try await waitUntil("the reply crossed the one-way block") { client.inbox.bytes == Array("x".utf8) }
      try await client.send("de")

      proxy.setFaults(.none)
      try await waitUntil("the held bytes arrived") { server.receivedCount >= 5 }
      #expect(server.received == Array("abcde".utf8))
      await client.close()
    }
  }

  @Test func blockBackwardHoldsServerBytesAndLetsRequestsThrough() async throws {
    try await withProxiedServer(echoes: false) { server, proxy in
      let client = try await TestClient.connect(port: proxy.port)
      try await client.send("a")
      try await waitUntil("the connection is through") { server.receivedCount == 1 }

      proxy.setFaults(LinkFaults(blockBackward: true))
      try await server.send("xy")
      try await expectNever("a blocked byte reached the client") { client.inbox.count > 0 }
      try await client.send("b")
      try await waitUntil("the request crossed the one-way block") { server.receivedCount == 2 }
      try await server.send("z")

      proxy.setFaults(.none)
      try await waitUntil("the held bytes arrived") { client.inbox.count >= 3 }
      #expect(client.inbox.bytes == Array("xyz".utf8))
      await client.close()
    }
  }

  @Test func connectionMadeDuringABlockReachesTheServerOnlyWhenHealed() async throws {
    try await withProxiedServer(echoes: false) { server, proxy in
      // One blocked direction is enough to hold a new connection.
      proxy.setFaults(LinkFaults(blockBackward: true))
      let client = try await TestClient.connect(port: proxy.port)
      try await client.send("early")
      try await expectNever("a held connection reached the server") { server.connectionsAccepted > 0 }
      #expect(proxy.statistics.connectionsAccepted == 1)

      proxy.setFaults(.none)
      try await waitUntil("the held bytes arrived") { server.receivedCount >= 5 }
      #expect(server.received == Array("early".utf8))
      try await server.send("late")
      try await waitUntil("the reply arrived") { client.inbox.count >= 4 }
      #expect(client.inbox.bytes == Array("late".utf8))
      await client.close()
    }
  }

  @Test func heldConnectionThatClosesIsDropped() async throws {
    try await withProxiedServer(echoes: false) { server, proxy in
      proxy.setFaults(LinkFaults(blockForward: true, blockBackward: true))
      let client = try await TestClient.connect(port: proxy.port)
      try await waitUntil("the proxy accepted") { proxy.statistics.connectionsOpen == 1 }
      await client.close()
      try await waitUntil("the proxy dropped it") { proxy.statistics.connectionsOpen == 0 }
      proxy.setFaults(.none)
      #expect(server.connectionsAccepted == 0)
    }
  }

  @Test func endOfStreamWaitsBehindABlock() async throws {
    try await withProxiedServer(echoes: false) { server, proxy in
      let client = try await TestClient.connect(port: proxy.port)
      try await client.send("a")
      try await waitUntil("the connection is through") { server.receivedCount == 1 }

      proxy.setFaults(LinkFaults(blockForward: true))
      try await client.send("bc")
      await client.close()
      try await expectNever("the close crossed the block") { server.connectionsOpen == 0 }
      #expect(server.receivedCount == 1)

      proxy.setFaults(.none)
      try await waitUntil("the server saw the close") { server.connectionsOpen == 0 }
      #expect(server.received == Array("abc".utf8))
      try await waitUntil("the proxy forgot the connection") { proxy.statistics.connectionsOpen == 0 }
    }
  }

  @Test func delayAppliesInBothDirections() async throws {
    try await withProxiedServer(echoes: true) { _, proxy in
      proxy.setFaults(LinkFaults(delay: .milliseconds(200)))
      let client = try await TestClient.connect(port: proxy.port)
      let start = ContinuousClock.now
      try await client.send("ping")
      try await waitUntil("the echo came back") { client.inbox.count >= 4 }
      #expect(ContinuousClock.now - start >= .milliseconds(400))
      #expect(client.inbox.bytes == Array("ping".utf8))
      await client.close()
    }
  }

  @Test func bandwidthCapSlowsABulkTransfer() async throws {
    try await withProxiedServer(echoes: false) { server, proxy in
      proxy.setFaults(LinkFaults(bytesPerSecond: 128 * 1024))
      let client = try await TestClient.connect(port: proxy.port)
      let payload = randomBytes(256 * 1024, seed: 7)
      let start = ContinuousClock.now
      try await client.send(payload)
      try await waitUntil("256 KiB arrived", within: .seconds(10)) { server.receivedCount >= payload.count }
      #expect(ContinuousClock.now - start >= .milliseconds(1_500))
      #expect(server.received == payload)
      await client.close()
    }
  }

  @Test func resetClosesBothSidesAndNewConnectionsStillWork() async throws {
    try await withProxiedServer(echoes: true) { server, proxy in
      let client = try await TestClient.connect(port: proxy.port)
      try await client.send("one")
      try await waitUntil("the echo came back") { client.inbox.count >= 3 }

      proxy.resetConnections()
      try await waitUntil("the client saw the connection end") { client.inbox.isClosed }
      try await waitUntil("the server saw the connection end") { server.connectionsOpen == 0 }
      try await waitUntil("the proxy forgot the connection") { proxy.statistics.connectionsOpen == 0 }
      // A reset, not an orderly end: the read failed (ECONNRESET on Linux).
      #expect(!client.inbox.errors.isEmpty)

      let second = try await TestClient.connect(port: proxy.port)
      try await second.send("two")
      try await waitUntil("the echo came back") { second.inbox.count >= 3 }
      #expect(second.inbox.bytes == Array("two".utf8))
      #expect(proxy.statistics.connectionsAccepted == 2)
      await second.close()
    }
  }

  @Test func clientIsClosedWhenTheTargetIsDown() async throws {
    let deadPort = try LoopbackPort.reserve()
    let proxy = try await FaultProxy.start(
      listenPort: 0, targetPort: deadPort, name: "dead", group: MultiThreadedEventLoopGroup.singleton)
    do {
      let client = try await TestClient.connect(port: proxy.port)
      try await waitUntil("the client connection closed") { client.inbox.isClosed }
      try await waitUntil("the proxy forgot the connection") { proxy.statistics.connectionsOpen == 0 }
    } catch {
      await proxy.close()
      throw error
    }
    await proxy.close()
  }

  @Test func closeStopsAcceptingAndClosesConnections() async throws {
    try await withProxiedServer(echoes: true) { server, proxy in
      let client = try await TestClient.connect(port: proxy.port)
      try await client.send("hi")
      try await waitUntil("the echo came back") { client.inbox.count >= 2 }

      await proxy.close()
      #expect(proxy.statistics.connectionsOpen == 0)
      try await waitUntil("the client connection closed") { client.inbox.isClosed }
      try await waitUntil("the server connection closed") { server.connectionsOpen == 0 }
      await #expect(throws: (any Error).self) { _ = try await TestClient.connect(port: proxy.port) }
    }
  }
}
