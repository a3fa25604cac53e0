import AsyncHTTPClient
import Foundation
import Hummingbird
import MemWALClient
import MemWALCore
import MemWALLog
import MemWALNode
import MemWALServer
import Testing

/// The client API over HTTPS (the configuration's `tls:` section), with certificates from
/// `memwal certs init`'s library.
@Suite struct APITLSTests {
  /// Runs a node whose API speaks HTTPS with n1's certificate on a free loopback port.
  func withTLSNode(cluster: String, _ body: (Int) async throws -> Void) async throws {
    var options = MemoryEngine.Options()
    options.expiryInterval = nil
    options.log.segmentBytes = 1 << 20
    options.log.maximumRecordBytes = 512 << 10
    let engine = try await MemoryEngine.open(
      directory: "/node", options: options, fileSystem: SimulatedFileSystem(), logger: quietLogger)
    var configuration = NodeConfiguration.embeddedDefault
    configuration.tlsCertificate = cluster + "/n1.pem"
    configuration.tlsKey = cluster + "/n1-key.pem"
    let tls = try configuration.makeAPITLSConfiguration()
    let (ports, continuation) = AsyncStream<Int>.makeStream()
    let application = try NodeServer.makeApplication(
      engine: engine, host: "127.0.0.1", port: 0, tls: tls, logger: quietLogger
    ) { port in continuation.yield(port) }
    let server = Task { try await application.runService(gracefulShutdownSignals: []) }
    var iterator = ports.makeAsyncIterator()
    let port = await iterator.next() ?? 0
    do {
      try await body(port)
    } catch {
      server.cancel()
      _ = await server.result
      await engine.close()
      throw error
    }
    server.cancel()
    _ = await server.result
    await engine.close()
  }

  @Test func memWALClientWritesAndReadsOverHTTPS() async throws {
    try await withClusterCertificates { cluster, _ in
      try await withTLSNode(cluster: cluster) { port in
        let http = try MemWALClient.makeHTTPClient(trustingCertificateAuthorityFile: cluster + "/ca.pem")
        do {
          for (index, host) in ["127.0.0.1", "localhost"].enumerated() {
            let client = MemWALClient(baseURL: "https://\(host):\(port)", httpClient: http)
            let namespace = "agents-\(index)"
            try await client.createNamespace(namespace, dimension: 2, metric: .l2)
            let written = try await client.upsert(
              [MemoryRecord(id: "a", vector: [1, 2], text: "over TLS")], in: namespace)
            #expect(written.durability == .local)
            let read = try #require(try await client.memory("a", in: namespace))
            #expect(read.record.text == "over TLS" && read.version == written.lsn)
          }
        } catch {
          try await http.shutdown()
          throw error
        }
        try await http.shutdown()
      }
    }
  }

  @Test func plainHTTPToTheTLSPortFails() async throws {
    try await withClusterCertificates { cluster, _ in
      try await withTLSNode(cluster: cluster) { port in
        let client = MemWALClient(baseURL: "http://127.0.0.1:\(port)", timeout: .seconds(10))
        await #expect(throws: (any Error).self) {
          try await client.createNamespace("plain", dimension: 2, metric: .l2)
        }
      }
    }
  }

  @Test func aClientTrustingAnotherCAFails() async throws {
    try await withClusterCertificates { cluster, foreign in
      try await withTLSNode(cluster: cluster) { port in
        let http = try MemWALClient.makeHTTPClient(trustingCertificateAuthorityFile: foreign + "/ca.pem")
        let client = MemWALClient(
          baseURL: "https://127.0.0.1:\(port)", httpClient: http, timeout: .seconds(3))
        await #expect(throws: (any Error).self) {
          try await client.createNamespace("foreign", dimension: 2, metric: .l2)
        }
        try await http.shutdown()
      }
    }
  }

  @Test
  func aTLS11ClientIsRefusedAndTLS12IsAccepted() async throws {
    try await withClusterCertificates { cluster, _ in
      try await withTLSNode(cluster: cluster) { port in
        // SECLEVEL=0 lets openssl itself offer TLS 1.1, so the refusal seen is the server's.
        let common = [
          "s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", cluster + "/ca.pem", "-servername",
          "localhost",
          "-cipher", "DEFAULT@SECLEVEL=0",
        ]
        let old = try await OpenSSL.run(common + ["-tls1_1"])
        #expect(old.status != 0 && !old.timedOut, "\(old.all)")
        #expect(!old.standardOutput.contains("Server certificate"), "\(old.all)")
        #expect(
          old.all.lowercased().contains("protocol version") || old.all.contains("unsupported protocol"),
          "\(old.all)")
        let current = try await OpenSSL.run(common + ["-tls1_2"])
        #expect(current.standardOutput.contains("Verify return code: 0 (ok)"), "\(current.all)")
        #expect(
          current.standardOutput.contains("TLSv1.2") && current.standardOutput.contains("ECDHE"),
          "\(current.all)")
      }
    }
  }

  @Test func badTLSFilesStopStartUpNamingTheKey() async throws {
    try await withClusterCertificates { cluster, _ in
      func failure(certificate: String, key: String) -> ConfigurationError? {
        let yaml = "development_mode: true\ntls: {certificate: \(certificate), key: \(key)}\n"
        do {
          _ = try NodeConfiguration.parse(yaml: yaml).makeAPITLSConfiguration()
          return nil
        } catch {
          return error
        }
      }
      let missingCertificate = failure(certificate: cluster + "/none.pem", key: cluster + "/n1-key.pem")
      #expect(missingCertificate?.key == "tls.certificate")
      #expect(
        missingCertificate?.reason.contains("none.pem: no such file") == true,
        "\(String(describing: missingCertificate))")
      let missingKey = failure(certificate: cluster + "/n1.pem", key: cluster + "/none-key.pem")
      #expect(missingKey?.key == "tls.key" && missingKey?.reason.contains("no such file") == true)
      let mismatch = failure(certificate: cluster + "/n1.pem", key: cluster + "/n2-key.pem")
      #expect(mismatch?.key == "tls.key", "\(String(describing: mismatch))")
      #expect(
        mismatch?.reason.contains("does not match the certificate") == true, "\(String(describing: mismatch))"
      )
      let notPEM = failure(certificate: cluster + "/n1-key.pem", key: cluster + "/n1-key.pem")
      #expect(notPEM?.key == "tls.certificate", "\(String(describing: notPEM))")
      #expect(failure(certificate: cluster + "/n1.pem", key: cluster + "/n1-key.pem") == nil)
    }
  }
}
