import MemWALCore

/// Which edges of a node to follow.
public enum EdgeDirection: String, Sendable, CaseIterable {
  case outgoing = "out"
  case incoming = "in"
  case both
}

/// A node or edge as a read returns it, with the version that made it.
public struct StoredNode: Sendable, Equatable {
  public var node: GraphNode
  public var version: LSN
}

public struct StoredEdge: Sendable, Equatable {
  public var edge: GraphEdge
  public var version: LSN
}

/// One neighbour: the edge followed and the node at its other end.
public struct Neighbor: Sendable, Equatable {
  public var edge: StoredEdge
  public var node: StoredNode
}

/// What a traversal reached: each node with its depth (BFS order), and the edges that reached them.
public struct Traversal: Sendable, Equatable {
  public var nodes: [(node: StoredNode, depth: Int)]
  public var edges: [StoredEdge]
  /// True when `maximumResults` cut the traversal short.
  public var isTruncated: Bool

  public static func == (lhs: Traversal, rhs: Traversal) -> Bool {
    lhs.nodes.map(\.node) == rhs.nodes.map(\.node) && lhs.nodes.map(\.depth) == rhs.nodes.map(\.depth)
      && lhs.edges == rhs.edges && lhs.isTruncated == rhs.isTruncated
  }
}

/// Conditions on the edges and nodes a graph read follows.
public struct GraphQuery: Sendable, Equatable {
  public var direction: EdgeDirection = .outgoing
  /// Follow only edges of these types (all when nil).
  public var edgeTypes: Set<String>?
  public var edgeFilter: Filter?
  public var nodeFilter: Filter?
  /// Follow only edges valid at this event time (all when nil).
  public var validAtMicros: Int64?

  public init(
    direction: EdgeDirection = .outgoing, edgeTypes: Set<String>? = nil, edgeFilter: Filter? = nil,
    nodeFilter: Filter? = nil, validAtMicros: Int64? = nil
  ) {
    self.direction = direction
    self.edgeTypes = edgeTypes
    self.edgeFilter = edgeFilter
    self.nodeFilter = nodeFilter
    self.validAtMicros = validAtMicros
  }

  func validate() throws(StoreError) {
    do {
      try edgeFilter?.validate()
      try nodeFilter?.validate()
    } catch {
      throw .invalid(error)
    }
    if let types = edgeTypes, types.count > 64 { throw .limitExceeded("at most 64 edge types") }
  }

  func accepts(_ edge: GraphEdge) -> Bool {
    if let types = edgeTypes, !types.contains(edge.type) { return false }
    if let at = validAtMicros, !edge.isValid(at: at) { return false }
    return edgeFilter?.matches(edge.properties) ?? true
  }
}

extension MemoryStore {
  public func node(_ id: String, in name: String, at point: ReadPoint) throws(StoreError) -> StoredNode? {
    try lock.withReadLock { () throws(StoreError) -> StoredNode? in
      let state = try namespace(name, at: point.lsn)
      return visibleNode(id, in: state, at: point.lsn)
    }
  }

  public func edge(_ id: String, in name: String, at point: ReadPoint) throws(StoreError) -> StoredEdge? {
    try lock.withReadLock { () throws(StoreError) -> StoredEdge? in
      let state = try namespace(name, at: point.lsn)
      return visibleEdge(id, in: state, at: point.lsn)
    }
  }

  func visibleNode(_ id: String, in state: NamespaceState, at lsn: LSN) -> StoredNode? {
    guard let version = state.nodes[id]?.version(at: lsn) else { return nil }
    return StoredNode(node: version.value!, version: version.lsn)
  }

  func visibleEdge(_ id: String, in state: NamespaceState, at lsn: LSN) -> StoredEdge? {
    guard let version = state.edges[id]?.version(at: lsn) else { return nil }
    return StoredEdge(edge: version.value!, version: version.lsn)
  }

  /// Edges of `id` visible at the point (in edge-id order) whose other end is a visible node.
  func neighbors(of id: String, in state: NamespaceState, query: GraphQuery, at lsn: LSN) -> [Neighbor] {
    var candidates: [(String, Bool)] = []
    if query.direction != .incoming { candidates += (state.outgoing[id] ?? []).map { ($0, true) } }
    if query.direction != .outgoing { candidates += (state.incoming[id] ?? []).map { ($0, false) } }
    candidates.sort { ($0.0, $0.1 ? 0 : 1) < ($1.0, $1.1 ? 0 : 1) }
    var result: [Neighbor] = []
    for (edgeID, isOutgoing) in candidates {
      guard let edge = visibleEdge(edgeID, in: state, at: lsn), query.accepts(edge.edge) else { continue }
      // An edge seen from both ends (a self-loop) is listed once per direction asked.
      guard (isOutgoing ? edge.edge.from : edge.edge.to) == id else { continue }
      let otherID = isOutgoing ? edge.edge.to : edge.edge.from
      guard let other = visibleNode(otherID, in: state, at: lsn),
        query.nodeFilter?.matches(other.node.properties) ?? true
      else { continue }
      result.append(Neighbor(edge: edge, node: other))
    }
    return result
  }

  public func neighbors(
    of id: String, in name: String, query: GraphQuery = GraphQuery(), at point: ReadPoint
  ) throws(StoreError) -> [Neighbor] {
    try query.validate()
    return try lock.withReadLock { () throws(StoreError) -> [Neighbor] in
      let state = try namespace(name, at: point.lsn)
      guard visibleNode(id, in: state, at: point.lsn) != nil else { throw .notFound(target: .node, id: id) }
      let found = neighbors(of: id, in: state, query: query, at: point.lsn)
      guard found.count <= options.maximumResults else {
        return Array(found.prefix(options.maximumResults))
      }
      return found
    }
  }

  /// Breadth-first traversal from `start` up to `maximumDepth` hops (bounded by the store's limit),
  /// visiting each node once; cycles are harmless.
  public func traverse(
    from start: String, in name: String, maximumDepth: Int, query: GraphQuery = GraphQuery(),
    at point: ReadPoint
  ) throws(StoreError) -> Traversal {
    try query.validate()
    guard maximumDepth >= 0, maximumDepth <= options.maximumTraversalDepth else {
      throw .limitExceeded("max_depth must be within 0...\(options.maximumTraversalDepth)")
    }
    return try lock.withReadLock { () throws(StoreError) -> Traversal in
      let state = try namespace(name, at: point.lsn)
      guard let root = visibleNode(start, in: state, at: point.lsn) else {
        throw .notFound(target: .node, id: start)
      }
      var result = Traversal(nodes: [(root, 0)], edges: [], isTruncated: false)
      var seen: Set<String> = [start]
      var frontier = [start]
      for depth in 1...max(1, maximumDepth) where maximumDepth > 0 {
        var next: [String] = []
        for id in frontier {
          for neighbor in neighbors(of: id, in: state, query: query, at: point.lsn) {
            result.edges.append(neighbor.edge)
            guard seen.insert(neighbor.node.node.id).inserted else { continue }
            result.nodes.append((neighbor.node, depth))
            next.append(neighbor.node.node.id)
            if result.nodes.count >= options.maximumResults {
              result.isTruncated = true
              return result
            }
          }
        }
        if next.isEmpty { break }
        frontier = next
      }
      return result
    }
  }

  /// A shortest path (fewest hops) from `from` to `to`, at most `maximumDepth` hops, or nil.
  /// Ties are broken by edge id, so the answer is the same on every node.
  public func shortestPath(
    from: String, to: String, in name: String, maximumDepth: Int, query: GraphQuery = GraphQuery(),
    at point: ReadPoint
  ) throws(StoreError) -> (nodes: [StoredNode], edges: [StoredEdge])? {
    try query.validate()
    guard maximumDepth >= 1, maximumDepth <= options.maximumTraversalDepth else {
      throw .limitExceeded("max_depth must be within 1...\(options.maximumTraversalDepth)")
    }
    return try lock.withReadLock { () throws(StoreError) -> (nodes: [StoredNode], edges: [StoredEdge])? in
      let state = try namespace(name, at: point.lsn)
      guard let origin = visibleNode(from, in: state, at: point.lsn) else {
        throw .notFound(target: .node, id: from)
      }
      guard visibleNode(to, in: state, at: point.lsn) != nil else { throw .notFound(target: .node, id: to) }
      if from == to { return ([origin], []) }
      var parent: [String: Neighbor] = [:]
      var frontier = [from]
      var visited = 1
      for _ in 0..<maximumDepth {
        var next: [String] = []
        for id in frontier {
          for neighbor in neighbors(of: id, in: state, query: query, at: point.lsn) {
            let reached = neighbor.node.node.id
            guard reached != from, parent[reached] == nil else { continue }
            parent[reached] = neighbor
            visited += 1
            if reached == to {
              return unwind(to, from: origin, parents: parent, state: state, lsn: point.lsn)
            }
            guard visited < options.maximumResults else {
              throw .limitExceeded("path search visited \(visited) nodes")
            }
            next.append(reached)
          }
        }
        if next.isEmpty { return nil }
        frontier = next
      }
      return nil
    }
  }

  private func unwind(
    _ target: String, from origin: StoredNode, parents: [String: Neighbor], state: NamespaceState, lsn: LSN
  ) -> (nodes: [StoredNode], edges: [StoredEdge]) {
    var nodes: [StoredNode] = []
    var edges: [StoredEdge] = []
    var current = target
    while let step = parents[current] {
      nodes.append(step.node)
      edges.append(step.edge)
      current = step.edge.edge.from == current ? step.edge.edge.to : step.edge.edge.from
    }
    nodes.append(origin)
    return (nodes.reversed(), edges.reversed())
  }

  public func nodeHistory(_ id: String, in name: String) throws(StoreError) -> [HistoryEntry<GraphNode>] {
    try lock.withReadLock { () throws(StoreError) -> [HistoryEntry<GraphNode>] in
      guard let state = namespaces[name]?.last else { throw .unknownNamespace(name) }
      return state.nodes[id]?.history ?? []
    }
  }

  public func edgeHistory(_ id: String, in name: String) throws(StoreError) -> [HistoryEntry<GraphEdge>] {
    try lock.withReadLock { () throws(StoreError) -> [HistoryEntry<GraphEdge>] in
      guard let state = namespaces[name]?.last else { throw .unknownNamespace(name) }
      return state.edges[id]?.history ?? []
    }
  }

  /// Edge ids touching a node in its newest state (the write path deletes them with the node).
  public func latestEdgeIDs(touching id: String, in name: String) -> [String] {
    lock.withReadLock {
      guard let state = namespaces[name]?.last, state.deletedLSN == nil else { return [] }
      let ids = (state.outgoing[id] ?? []).union(state.incoming[id] ?? [])
      return ids.filter { state.edges[$0]?.latest?.value != nil }.sorted()
    }
  }
}
