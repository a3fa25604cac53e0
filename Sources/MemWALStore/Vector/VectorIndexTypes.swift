/// Build-time parameters of an HNSW graph (Malkov & Yashunin; the names follow hnswlib).
public struct HNSWParameters: Sendable, Equatable {
  /// Links per node on the upper layers; layer 0 keeps up to `2 * m`.
  public var m: Int = 16
  /// Candidate-list size while inserting: larger builds a better graph, more slowly.
  public var efConstruction: Int = 200
  /// Seeds the level generator, so a graph built in one thread is reproducible.
  public var seed: UInt64 = 0x5EED

  public static let mRange = 2...128
  public static let efConstructionRange = 1...100_000

  public init(m: Int = 16, efConstruction: Int = 200, seed: UInt64 = 0x5EED) {
    self.m = m
    self.efConstruction = efConstruction
    self.seed = seed
  }

  public var isValid: Bool { (try? validate()) != nil }

  /// Checks the parameters against their limits (a namespace's configuration is user input).
  public func validate() throws(VectorIndexError) {
    guard Self.mRange.contains(m) else {
      throw .limit("m \(m) is outside \(Self.mRange.lowerBound)...\(Self.mRange.upperBound)")
    }
    guard Self.efConstructionRange.contains(efConstruction) else {
      throw .limit(
        "efConstruction \(efConstruction) is outside "
          + "\(Self.efConstructionRange.lowerBound)...\(Self.efConstructionRange.upperBound)")
    }
  }
}

/// Why a vector operation was refused. Every case leaves the index as it was.
public enum VectorIndexError: Error, Equatable, Sendable, CustomStringConvertible {
  case dimensionMismatch(expected: Int, got: Int)
  /// The component at `index` is NaN or infinite.
  case nonFiniteComponent(index: Int)
  /// A vector of zero length cannot be compared by cosine.
  case zeroVector
  case duplicateLabel(UInt64)
  case unknownLabel(UInt64)
  /// A snapshot failed a check; the message names the field and byte offset.
  case corruptSnapshot(String)
  /// A size or count is outside its documented limit.
  case limit(String)

  public var description: String {
    switch self {
    case .dimensionMismatch(let expected, let got):
      return "vector has \(got) components, the index expects \(expected)"
    case .nonFiniteComponent(let index): return "vector component \(index) is NaN or infinite"
    case .zeroVector: return "a zero vector has no direction, so cosine distance is undefined"
    case .duplicateLabel(let label): return "label \(label) is already in the index"
    case .unknownLabel(let label): return "label \(label) is not in the index"
    case .corruptSnapshot(let detail): return "corrupt HNSW snapshot: \(detail)"
    case .limit(let detail): return "limit exceeded: \(detail)"
    }
  }
}

/// One search result: smaller `distance` is closer (cosine: 1 − cos; dot: −dot; l2: squared L2).
public struct SearchHit: Sendable, Equatable {
  public var label: UInt64
  public var distance: Float

  public init(label: UInt64, distance: Float) {
    self.label = label
    self.distance = distance
  }

  /// Result order: distance ascending, ties by label; NaN sorts last.
  static func isOrderedBefore(_ a: SearchHit, _ b: SearchHit) -> Bool {
    let x = a.distance.isNaN ? Float.infinity : a.distance
    let y = b.distance.isNaN ? Float.infinity : b.distance
    return x < y || (x == y && a.label < b.label)
  }
}

/// Limits shared by the HNSW index and exact search.
public enum VectorLimits {
  public static let dimension = 1...4096
  public static let k = 1...10_000
  public static let efMaximum = 100_000
  /// Elements one index may hold (internal ids are 32-bit).
  public static let elementsMaximum = 1 << 30
  /// Threads one batch insert may use.
  public static let threadsMaximum = 256

  static func checkSearch(k: Int, ef: Int) throws(VectorIndexError) {
    guard Self.k.contains(k) else { throw .limit("k \(k) is outside 1...\(Self.k.upperBound)") }
    guard ef >= k, ef <= efMaximum else { throw .limit("ef \(ef) is outside k (\(k))...\(efMaximum)") }
  }
}
