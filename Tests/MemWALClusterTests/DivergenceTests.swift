import MemWALCluster
import MemWALCore
import Testing

@Suite struct DivergenceTests {
  struct Case: Sendable, CustomStringConvertible {
    var name: String
    var primary: [(UInt64, UInt64)]
    var primaryLast: UInt64
    var follower: [(UInt64, UInt64)]
    var followerLast: UInt64
    var shared: UInt64
    var description: String { name }
  }

  static let cases: [Case] = [
    Case(
      name: "identical", primary: [(1, 1), (3, 20)], primaryLast: 50, follower: [(1, 1), (3, 20)],
      followerLast: 50, shared: 50),
    Case(
      name: "follower behind", primary: [(1, 1), (3, 20)], primaryLast: 50, follower: [(1, 1)],
      followerLast: 12, shared: 12),
    Case(
      name: "follower behind across an epoch", primary: [(1, 1), (3, 20)], primaryLast: 50,
      follower: [(1, 1), (3, 20)], followerLast: 30, shared: 30),
    Case(
      name: "old primary with an un-replicated tail in a stale epoch", primary: [(1, 1), (3, 20)],
      primaryLast: 50,
      follower: [(1, 1), (2, 18)], followerLast: 25, shared: 17),
    Case(
      name: "stale epoch started exactly where the new one did", primary: [(1, 1), (3, 20)], primaryLast: 50,
      follower: [(1, 1), (2, 20)], followerLast: 25, shared: 19),
    Case(
      name: "follower ahead in the same epoch", primary: [(1, 1), (3, 20)], primaryLast: 30,
      follower: [(1, 1), (3, 20)], followerLast: 35, shared: 30),
    Case(name: "both empty", primary: [], primaryLast: 0, follower: [], followerLast: 0, shared: 0),
    Case(name: "follower empty", primary: [(1, 1)], primaryLast: 9, follower: [], followerLast: 0, shared: 0),
    Case(
      name: "primary empty", primary: [(1, 1)], primaryLast: 0, follower: [(1, 1)], followerLast: 4, shared: 0
    ),
    Case(
      name: "different first epoch", primary: [(1, 1)], primaryLast: 9, follower: [(2, 1)], followerLast: 9,
      shared: 0),
    Case(
      name: "follower has a later epoch the primary skipped", primary: [(1, 1), (5, 10)], primaryLast: 20,
      follower: [(1, 1), (4, 12)], followerLast: 14, shared: 9),
    Case(
      name: "divergence after the follower's end", primary: [(1, 1), (5, 10)], primaryLast: 20,
      follower: [(1, 1), (4, 12)], followerLast: 8, shared: 8),
  ]

  static func history(_ pairs: [(UInt64, UInt64)]) -> [EpochStart] {
    pairs.map { EpochStart(epoch: Epoch($0.0), firstLSN: LSN($0.1)) }
  }

  @Test(arguments: cases) func lastSharedLSN(_ example: Case) {
    let primary = Self.history(example.primary)
    let follower = Self.history(example.follower)
    let shared = Divergence.lastSharedLSN(
      primary, lastLSN: LSN(example.primaryLast), follower, lastLSN: LSN(example.followerLast))
    #expect(shared == LSN(example.shared))
    // The rule is symmetric.
    let reversed = Divergence.lastSharedLSN(
      follower, lastLSN: LSN(example.followerLast), primary, lastLSN: LSN(example.primaryLast))
    #expect(reversed == shared)
  }

  /// Against a brute-force definition, on random histories.
  @Test func agreesWithTheDefinition() {
    var generator = SplitMix64(seed: 3)
    for _ in 0..<2000 {
      func randomHistory() -> ([EpochStart], LSN) {
        var history: [EpochStart] = []
        var lsn: UInt64 = 1
        for epoch in 1...UInt64.random(in: 1...5, using: &generator) where Bool.random(using: &generator) {
          history.append(EpochStart(epoch: Epoch(epoch), firstLSN: LSN(lsn)))
          lsn += UInt64.random(in: 1...4, using: &generator)
        }
        return (history, LSN(UInt64.random(in: 0...lsn + 2, using: &generator)))
      }
      let (a, aLast) = randomHistory()
      let (b, bLast) = randomHistory()
      var expected = LSN.zero
      while expected < min(aLast, bLast),
        Divergence.epoch(at: expected.next, in: a) == Divergence.epoch(at: expected.next, in: b)
      {
        expected = expected.next
      }
      #expect(Divergence.lastSharedLSN(a, lastLSN: aLast, b, lastLSN: bLast) == expected, "\(a) \(b)")
    }
  }
}
