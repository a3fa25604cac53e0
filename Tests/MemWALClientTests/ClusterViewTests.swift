import MemWALCore
import Testing

@testable import MemWALClient

/// The pure parts of the cluster client: reading `/v1/cluster` answers, choosing the primary, and
/// classifying outcomes.
@Suite struct ClusterViewTests {
  static func node(_ endpoint: String, epoch: UInt64, primary: Bool, names: String? = nil) -> ClusterAnswer {
    ClusterAnswer(endpoint: endpoint, epoch: epoch, isPrimary: primary, primary: names, members: [])
  }

  @Test func answersOfNodesAndOfTheControllerAreRead() throws {
    let node = try JSONParser.parse(
      Array(
        #"{"cluster":"c","epoch":4,"node":"n2","role":"follower","primary":{"name":"n1","api":"http://h1:1/"},"quorum":1,"members":[{"name":"n1","api":"http://h1:1","replication":"h1:2"},{"name":"n2","api":"http://h2:1"}]}"#
          .utf8))
    let answer = try #require(ClusterAnswer(endpoint: "http://h2:1/", node))
    #expect(
      answer
        == ClusterAnswer(
          endpoint: "http://h2:1", epoch: 4, isPrimary: false, primary: "http://h1:1",
          members: ["http://h1:1", "http://h2:1"]))
    let controller = try JSONParser.parse(
      Array(#"{"cluster":"c","epoch":5,"primary":{"name":"n2","api":"http://h2:1"},"members":[]}"#.utf8))
    #expect(ClusterAnswer(endpoint: "http://ctl", controller)?.isPrimary == false)
    let single = try JSONParser.parse(
      Array(#"{"cluster":null,"epoch":1,"node":null,"role":"primary","primary":null,"members":[]}"#.utf8))
    #expect(ClusterAnswer(endpoint: "http://one", single)?.isPrimary == true)
    #expect(ClusterAnswer(endpoint: "http://x", .object(["error": .string("no")])) == nil)
  }

  @Test func thePrimaryIsANodeThatSaysSoInTheNewestEpoch() {
    let old = Self.node("http://a", epoch: 3, primary: true)
    let follower = Self.node("http://b", epoch: 4, primary: false, names: "http://c")
    let new = Self.node("http://c", epoch: 4, primary: true)
    #expect(ClusterAnswer.choosePrimary([old, follower, new]) == new)
    // The promoted node has not answered yet: the old primary is not chosen, the caller waits.
    #expect(ClusterAnswer.choosePrimary([old, follower]) == nil)
    #expect(ClusterAnswer.choosePrimary([old]) == old)
    // A node that refused a write as not the primary counts again only in a newer epoch.
    #expect(ClusterAnswer.choosePrimary([old], refused: ["http://a": 3]) == nil)
    #expect(ClusterAnswer.choosePrimary([old], refused: ["http://a": 2]) == old)
    #expect(ClusterAnswer.choosePrimary([]) == nil)
  }

  @Test func theViewForgetsOnlyThePrimaryAFailedAttemptUsed() {
    var view = ClusterView(seeds: ["http://a/", "http://ctl"])
    #expect(
      view.discoveryTargets == ["http://a", "http://ctl"] && view.readTargets == ["http://a", "http://ctl"])
    view.learn(from: [
      ClusterAnswer(
        endpoint: "http://ctl", epoch: 2, isPrimary: false, primary: nil, members: ["http://a", "http://b"])
    ])
    view.adopt(primary: "http://b")
    #expect(view.readTargets == ["http://b", "http://a"] && view.newestEpoch == 2)
    let generation = view.generation
    view.adopt(primary: "http://a")
    view.forget(primary: "http://b", generation: generation)
    #expect(view.primary == "http://a")
    view.forget(primary: "http://a", generation: view.generation)
    #expect(view.primary == nil)
  }

  @Test func aRepeatBelowTheRequestedDurabilityIsNotAnAcknowledgement() {
    var result = WriteResult(
      lsn: LSN(7), epoch: Epoch(2), durability: .local, isRepeat: true, requestedDurability: .quorum)
    #expect(MemWALClient.Outcome(result).isIndeterminate)
    result.durability = .quorum
    #expect(MemWALClient.Outcome(result).isAcknowledged)
    // A first answer reports the level the node reached (a single node answers `quorum` with `local`).
    let first = WriteResult(
      lsn: LSN(8), epoch: Epoch(2), durability: .local, isRepeat: false, requestedDurability: .quorum)
    #expect(MemWALClient.Outcome(first).isAcknowledged)
  }

  @Test func rootsOfURLs() {
    let client = MemWALClient(baseURL: "http://h:1")
    #expect(client.rootOf("http://h:1/v1/namespaces/n/memories?x=1") == "http://h:1")
    #expect(client.rootOf("https://h:1?x") == "https://h:1")
    #expect(client.rootOf("http://h:1") == "http://h:1")
  }
}
