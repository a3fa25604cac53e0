import MemWALCore

/// One incarnation of a namespace: a name deleted and created again is a new incarnation, and reads
/// as of a point before the deletion still see the old one.
final class NamespaceState: @unchecked Sendable {
  let config: NamespaceConfig
  let createdLSN: LSN
  var deletedLSN: LSN?
  var memories: [String: VersionChain<MemoryRecord>] = [:]
  var nodes: [String: VersionChain<GraphNode>] = [:]
  var edges: [String: VersionChain<GraphEdge>] = [:]
  /// Edge ids by endpoint, for every edge with a retained version (filtered by visibility on read).
  var outgoing: [String: Set<String>] = [:]
  var incoming: [String: Set<String>] = [:]
  /// Vector index label → the memory version it holds.
  var labels: [UInt64: (id: String, lsn: LSN)] = [:]
  var index: HNSWIndex
  /// Memories whose newest version is live (not deleted), for choosing exact search.
  var liveMemories = 0

  init(config: NamespaceConfig, createdLSN: LSN, parameters: HNSWParameters) {
    self.config = config
    self.createdLSN = createdLSN
    self.index = HNSWIndex(dimension: config.dimension, metric: config.metric, parameters: parameters)
  }

  func isAlive(at lsn: LSN) -> Bool { createdLSN <= lsn && (deletedLSN.map { $0 > lsn } ?? true) }

  func link(_ edge: GraphEdge) {
    outgoing[edge.from, default: []].insert(edge.id)
    incoming[edge.to, default: []].insert(edge.id)
  }

  func unlinkIfGone(_ id: String, from: String, to: String) {
    guard edges[id] == nil else { return }
    outgoing[from]?.remove(id)
    if outgoing[from]?.isEmpty == true { outgoing[from] = nil }
    incoming[to]?.remove(id)
    if incoming[to]?.isEmpty == true { incoming[to] = nil }
  }
}
