import Hummingbird
import MemWALCore
import MemWALNode
import Metrics
import Prometheus

/// One node's metrics (swift-metrics, exported in the Prometheus text format at `GET /metrics`).
/// Each node has its own registry, so several nodes in one process (tests) do not mix.
public final class NodeMetrics: Sendable {
  public let registry = PrometheusCollectorRegistry()
  let factory: PrometheusMetricsFactory
  let node: ClusterNode
  var engine: MemoryEngine { node.host.engine }
  let writeAck: Metrics.Timer
  let fsync: Metrics.Timer
  let searches: Metrics.Counter
  let searchLatency: Metrics.Timer

  init(node: ClusterNode) {
    var factory = PrometheusMetricsFactory(registry: registry)
    let buckets: [Duration] = [
      .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
      .milliseconds(2),
      .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
      .milliseconds(250),
      .seconds(1),
    ]
    factory.defaultDurationHistogramBuckets = buckets
    self.factory = factory
    self.node = node
    writeAck = Metrics.Timer(label: "memwal_write_ack_seconds", factory: factory)
    fsync = Metrics.Timer(label: "memwal_wal_fsync_seconds", factory: factory)
    searches = Metrics.Counter(label: "memwal_searches_total", factory: factory)
    searchLatency = Metrics.Timer(label: "memwal_search_seconds", factory: factory)
    let fsync = self.fsync
    node.host.engine.log.statistics.observeSyncs { nanoseconds in fsync.recordNanoseconds(Int64(nanoseconds))
    }
  }

  func requests(route: String, status: Int) -> Metrics.Counter {
    Metrics.Counter(
      label: "memwal_http_requests_total", dimensions: [("route", route), ("status", String(status))],
      factory: factory)
  }

  /// The Prometheus text, with the gauges that are read at scrape time refreshed first.
  public func render() -> String {
    let statistics = engine.log.statistics.snapshot()
    let written = engine.log.positions.written.value.rawValue
    let applied = engine.store.appliedLSN.rawValue
    let gauges: [(String, Double)] = [
      ("memwal_wal_written_bytes", Double(statistics.bytesWritten)),
      ("memwal_wal_records", Double(statistics.records)),
      ("memwal_wal_fsyncs", Double(statistics.syncs)), ("memwal_wal_written_lsn", Double(written)),
      ("memwal_wal_durable_lsn", Double(engine.log.positions.flushed.value.rawValue)),
      ("memwal_applied_lsn", Double(applied)),
      ("memwal_applied_lsn_lag", Double(written &- min(written, applied))),
      ("memwal_unapplied_keys", Double(engine.unappliedKeyCount)),
    ]
    for (name, value) in gauges { Metrics.Gauge(label: name, factory: factory).record(value) }
    for (name, follower, value) in node.replicationGauges() {
      Metrics.Gauge(label: name, dimensions: [("follower", follower)], factory: factory).record(value)
    }
    return registry.emitToString()
  }
}

/// Counts requests by route and status, and times writes and searches.
struct MetricsMiddleware: RouterMiddleware {
  typealias Context = BasicRequestContext
  let metrics: NodeMetrics

  func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
    async throws -> Response
  {
    let start = ContinuousClock.now
    let response = try await next(request, context)
    let route = context.endpointPath ?? "unknown"
    metrics.requests(route: "\(request.method) \(route)", status: response.status.code).increment()
    let elapsed = ContinuousClock.now - start
    if route.hasSuffix("/search") {
      metrics.searches.increment()
      metrics.searchLatency.recordNanoseconds(
        Int64(elapsed.components.seconds) * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
    } else if request.method == .post || request.method == .delete, response.status.code < 300 {
      metrics.writeAck.recordNanoseconds(
        Int64(elapsed.components.seconds) * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
    }
    return response
  }
}
