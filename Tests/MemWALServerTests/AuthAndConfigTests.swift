import Foundation
import Hummingbird
import HummingbirdTesting
import MemWALCore
import MemWALServer
import Testing

@Suite struct AuthTests {
  static let grants = [
    TokenGrant(name: "admin", sha256: TokenGrant.digest(of: "root-token"), namespaces: ["*"], role: .admin),
    TokenGrant(name: "agent-a", sha256: TokenGrant.digest(of: "a-token"), namespaces: ["a"], role: .write),
    TokenGrant(name: "reader-a", sha256: TokenGrant.digest(of: "a-reader"), namespaces: ["a"], role: .read),
  ]

  @Test func tokensAreCheckedAndScopedToNamespaces() async throws {
    try await APITests.withServer(tokens: Self.grants) { api, engine in
      let create = #"{"name":"a","dimension":2,"metric":"l2"}"#
      var (status, body) = try await api.call(.post, "/v1/namespaces", create)
      #expect(status == 401 && APITests.error(body) == "unauthorized")
      (status, body) = try await api.call(.post, "/v1/namespaces", create, token: "wrong")
      #expect(status == 401 && APITests.error(body) == "unauthorized")
      (status, body) = try await api.call(.post, "/v1/namespaces", create, token: "a-token")
      #expect(status == 403 && APITests.error(body) == "forbidden", "creating a namespace needs admin")
      (status, _) = try await api.call(.post, "/v1/namespaces", create, token: "root-token")
      #expect(status == 201)
      (status, _) = try await api.call(
        .post, "/v1/namespaces", #"{"name":"b","dimension":2,"metric":"l2"}"#, token: "root-token")
      #expect(status == 201)
      let written = engine.log.positions.written.value

      let write = #"{"memories":[{"id":"x","vector":[1,2]}]}"#
      (status, body) = try await api.call(.post, "/v1/namespaces/b/memories", write, token: "a-token")
      #expect(status == 403 && APITests.error(body) == "forbidden", "a's token cannot write b")
      (status, body) = try await api.call(.post, "/v1/namespaces/a/memories", write, token: "a-reader")
      #expect(status == 403, "a read token cannot write")
      #expect(engine.log.positions.written.value == written, "refused requests write nothing")
      (status, body) = try await api.call(.post, "/v1/namespaces/a/memories", write, token: "a-token")
      #expect(status == 200)
      let lsn = APITests.number(body, "lsn") ?? 0
      (status, _) = try await api.call(.get, "/v1/namespaces/a/memories/x?min_lsn=\(lsn)", token: "a-reader")
      #expect(status == 200)
      (status, _) = try await api.call(.get, "/v1/namespaces/b/memories/x", token: "a-reader")
      #expect(status == 403, "a's reader cannot read b")
      (status, body) = try await api.call(.get, "/v1/namespaces", token: "a-reader")
      #expect(
        status == 200 && body.jsonText.contains(#""name":"a""#) && !body.jsonText.contains(#""name":"b""#))
      (status, _) = try await api.call(.get, "/healthz")
      #expect(status == 200, "health needs no token")
      (status, _) = try await api.call(.get, "/v1/status")
      #expect(status == 401)
    }
  }
}

@Suite struct ConfigurationTests {
  static let token = String(repeating: "ab", count: 32)

  @Test func parsesEveryKnownKey() throws {
    let yaml = """
      data_dir: /var/lib/memwal
      listen: 127.0.0.1:7700
      development_mode: false
      tokens:
        - name: agent
          sha256: \(Self.token)
          namespaces: ["agents"]
          role: write
      limits: {max_body_bytes: 1048576, max_batch: 50, max_k: 100, max_traversal_depth: 4, max_results: 500}
      wal: {segment_bytes: 16777216, max_record_bytes: 4194304, group_commit_window_us: 0}
      checkpoint: {every_bytes: 1_000_000, every_seconds: 30}
      retention: {history_lsns: 5000, history_seconds: 3600}
      search: {hnsw_m: 12, hnsw_ef_construction: 100, exact_below: 500}
      """
    let configuration = try NodeConfiguration.parse(yaml: yaml)
    #expect(configuration.dataDirectory == "/var/lib/memwal" && configuration.port == 7700)
    #expect(
      configuration.tokens == [
        TokenGrant(name: "agent", sha256: Self.token, namespaces: ["agents"], role: .write)
      ])
    #expect(configuration.limits.maximumBatch == 50 && configuration.engine.store.maximumK == 100)
    #expect(
      configuration.engine.log.segmentBytes == 16 << 20
        && configuration.engine.checkpointEveryBytes == 1_000_000
        && configuration.engine.checkpointEverySeconds == 30)
    #expect(
      try NodeConfiguration.parse(yaml: "development_mode: true\n").engine.checkpointEverySeconds == 600)
    #expect(
      configuration.engine.store.retentionMicros == 3_600_000_000 && configuration.engine.store.hnsw.m == 12)
  }

  @Test func badConfigurationsNameTheirKey() {
    let tokens = "tokens: [{sha256: \(Self.token), namespaces: [\"*\"], role: admin}]\n"
    let cases: [(String, String)] = [
      ("colour: blue\n" + tokens, "colour"),
      ("limits: {max_batch: 0}\n" + tokens, "limits.max_batch"),
      ("checkpoint: {every_seconds: -1}\n" + tokens, "checkpoint.every_seconds"),
      ("limits: {maxbatch: 5}\n" + tokens, "limits.maxbatch"),
      ("listen: nowhere\n" + tokens, "listen"),
      ("development_mode: maybe\n", "development_mode"),
      ("development_mode: true\nlisten: 0.0.0.0:7600\n", "development_mode"),
      ("data_dir: x\n", "tokens"),
      ("tokens: [{sha256: abc, namespaces: [a], role: write}]\n", "tokens[0].sha256"),
      ("tokens: [{sha256: \(Self.token), namespaces: [a], role: owner}]\n", "tokens[0].role"),
      ("tokens: [{sha256: \(Self.token), namespaces: [], role: read}]\n", "tokens[0].namespaces"),
      ("wal: {segment_bytes: 12}\n" + tokens, "wal.segment_bytes"),
      ("tls: {certificate: c.pem}\n" + tokens, "tls"),
      ("[unbalanced\n", "(file)"),
    ]
    for (yaml, key) in cases {
      do {
        _ = try NodeConfiguration.parse(yaml: yaml)
        Issue.record("accepted: \(yaml)")
      } catch {
        #expect(error.key == key, "\(yaml.debugDescription): \(error)")
        #expect(error.description.contains(key))
      }
    }
  }

  @Test func theTestingSectionIsOffByDefaultAndParses() throws {
    let plain = try NodeConfiguration.parse(yaml: "development_mode: true\n")
    #expect(plain.testing == TestingSettings() && !plain.testing.isEnabled)
    let testing = try NodeConfiguration.parse(
      yaml: "development_mode: true\ntesting: {fault_file: /tmp/fault, ack_quorum_before_flush: true}\n")
    #expect(testing.testing.faultFile == "/tmp/fault")
    #expect(testing.testing.acknowledgeQuorumBeforeFollowersFlush && testing.testing.isEnabled)
    for (yaml, key) in [
      ("testing: {fault_file: \"\"}\n", "testing.fault_file"),
      ("testing: {ack_quorum_before_flush: sometimes}\n", "testing.ack_quorum_before_flush"),
      ("testing: {fsync: off}\n", "testing.fsync"),
      ("testing: on\n", "testing"),
    ] {
      do {
        _ = try NodeConfiguration.parse(yaml: "development_mode: true\n" + yaml)
        Issue.record("accepted: \(yaml)")
      } catch {
        #expect(error.key == key, "\(yaml.debugDescription): \(error)")
      }
    }
  }

  @Test func exampleConfigurationParses() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent()
    let text = try String(
      contentsOf: root.appendingPathComponent("cluster-configs/single-node.yaml"), encoding: .utf8)
    let configuration = try NodeConfiguration.parse(yaml: text)
    #expect(!configuration.tokens.isEmpty)
  }
}

@Suite struct MetricsTests {
  @Test func metricsReportWritesFsyncsAndLag() async throws {
    try await APITests.withServer { api, _ in
      _ = try await api.call(.post, "/v1/namespaces", #"{"name":"n","dimension":2,"metric":"l2"}"#)
      _ = try await api.call(.post, "/v1/namespaces/n/memories", #"{"memories":[{"id":"x","vector":[1,2]}]}"#)
      _ = try await api.call(.post, "/v1/namespaces/n/search", #"{"vector":[1,2],"k":1,"min_lsn":2}"#)
      let text = try await api.client.execute(uri: "/metrics", method: .get) { response in
        String(buffer: response.body)
      }
      #expect(text.contains("memwal_wal_fsync_seconds_count"))
      #expect(!text.contains("memwal_wal_fsync_seconds_count 0\n"))
      #expect(text.contains("memwal_write_ack_seconds_count"))
      #expect(
        text.contains(
          #"memwal_http_requests_total{route="POST /v1/namespaces/{ns}/memories",status="200"} 1"#))
      #expect(text.contains("memwal_searches_total 1"))
      #expect(text.contains("memwal_applied_lsn "))
      #expect(text.contains("memwal_applied_lsn_lag "))
    }
  }
}
