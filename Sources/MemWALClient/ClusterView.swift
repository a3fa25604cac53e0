import MemWALCore

/// What a client knows of the cluster: the addresses it was given, the members it learned from
/// `GET /v1/cluster`, and the primary it sends writes to. Pure: the client keeps it in a `Mutex`.
struct ClusterView: Sendable {
  /// The addresses the client was made with (nodes or the failover controller), in that order.
  let seeds: [String]
  /// The client API addresses of the cluster's nodes, as `/v1/cluster` lists them.
  private(set) var members: [String] = []
  /// Where writes go.
  private(set) var primary: String?
  /// The newest epoch any answer has reported.
  private(set) var newestEpoch: UInt64 = 0
  /// Counts changes of `primary`, so a task that saw a write fail on a primary another task has
  /// already replaced does not forget the replacement.
  private(set) var generation: UInt64 = 0
  /// True once a discovery round got an answer.
  private(set) var hasDiscovered = false

  init(seeds: [String], primary: String? = nil) {
    precondition(!seeds.isEmpty, "a client needs at least one endpoint")
    self.seeds = seeds.map(ClusterView.normalized)
    self.primary = primary.map(ClusterView.normalized)
  }

  static func normalized(_ address: String) -> String {
    var address = address
    while address.hasSuffix("/") { address.removeLast() }
    return address
  }

  /// Every address a discovery round asks: the seeds, the members, and the primary.
  var discoveryTargets: [String] { unique(seeds + members + (primary.map { [$0] } ?? [])) }

  /// Where a read goes first, then the other candidates: the primary, then the members (or the
  /// seeds before any member is known).
  var readTargets: [String] {
    unique((primary.map { [$0] } ?? []) + (members.isEmpty ? seeds : members))
  }

  /// Forgets the primary if it is still the one a failed attempt used.
  mutating func forget(primary failed: String, generation seen: UInt64) {
    guard primary == failed, generation == seen else { return }
    primary = nil
    generation += 1
  }

  /// Sends writes to `address` (learned from a redirect or a discovery round).
  mutating func adopt(primary address: String) {
    let address = ClusterView.normalized(address)
    guard primary != address else { return }
    primary = address
    generation += 1
  }

  /// Merges the members that a round's answers list.
  mutating func learn(from answers: [ClusterAnswer]) {
    guard !answers.isEmpty else { return }
    hasDiscovered = true
    newestEpoch = max(newestEpoch, answers.map(\.epoch).max() ?? 0)
    let listed = answers.flatMap(\.members)
    if !listed.isEmpty { members = unique(listed.map(ClusterView.normalized)) }
  }

  private func unique(_ addresses: [String]) -> [String] {
    var seen = Set<String>()
    return addresses.filter { seen.insert($0).inserted }
  }
}

/// One answer to `GET /v1/cluster`, from a node (`role` set) or the failover controller.
struct ClusterAnswer: Sendable, Equatable {
  /// The address asked.
  var endpoint: String
  var epoch: UInt64
  /// True when the answering node says it is the primary (it takes writes).
  var isPrimary: Bool
  /// The primary's client API address as the answer names it.
  var primary: String?
  /// The members' client API addresses.
  var members: [String]

  /// Reads `{epoch, role?, primary: {name, api}?, members: [{name, api}]}`; nil when the answer does
  /// not have that shape.
  init?(endpoint: String, _ value: JSONValue) {
    guard let fields = try? Fields(value), let epoch = try? fields.integer("epoch"), epoch >= 0 else {
      return nil
    }
    self.endpoint = ClusterView.normalized(endpoint)
    self.epoch = UInt64(epoch)
    self.isPrimary = fields.optionalString("role") == "primary"
    self.primary = fields.optionalObject("primary").flatMap { object -> String? in
      guard case .string(let api)? = object["api"], !api.isEmpty else { return nil }
      return ClusterView.normalized(api)
    }
    self.members = ((try? fields.array("members")) ?? []).compactMap { member -> String? in
      guard case .object(let object) = member, case .string(let api)? = object["api"], !api.isEmpty else {
        return nil
      }
      return ClusterView.normalized(api)
    }
  }

  init(endpoint: String, epoch: UInt64, isPrimary: Bool, primary: String?, members: [String]) {
    self.endpoint = endpoint
    self.epoch = epoch
    self.isPrimary = isPrimary
    self.primary = primary
    self.members = members
  }

  /// The primary to send writes to: a node that itself answers that it is the primary, in the
  /// newest epoch any answer reports (a node of an older epoch that still thinks it is the primary
  /// has been replaced, or is about to be). `refused` holds nodes that refused a write as not the
  /// primary, with the epoch they reported then: they count again only in a newer epoch. Nil when no
  /// node qualifies yet (an election is under way): ask again after a pause.
  static func choosePrimary(_ answers: [ClusterAnswer], refused: [String: UInt64] = [:]) -> ClusterAnswer? {
    guard let newest = answers.map(\.epoch).max() else { return nil }
    return answers.first { answer in
      answer.isPrimary && answer.epoch == newest && refused[answer.endpoint].map { answer.epoch > $0 } ?? true
    }
  }
}
