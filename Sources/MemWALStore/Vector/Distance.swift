/// SIMD distance kernels over contiguous `Float` storage, shared by the HNSW index and exact
/// search. Loads are unaligned (`loadUnaligned`), so vectors need no padding. Each loop keeps two
/// accumulators, so that the additions of consecutive chunks do not wait on each other.
///
/// Release builds use 16-lane vectors (one AVX-512 register, two AVX or four SSE ones); debug
/// builds run the same code with 4 lanes, because at -Onone the 16-lane operations expand into
/// thousands of instructions and the test suite must stay fast.
public enum Distance {
  #if DEBUG
    @usableFromInline typealias Lanes = SIMD4<Float>
  #else
    @usableFromInline typealias Lanes = SIMD16<Float>
  #endif

  /// Σ aᵢ·bᵢ over `count` components.
  @inlinable @_optimize(speed)
  public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    let x = UnsafeRawPointer(a)
    let y = UnsafeRawPointer(b)
    let width = Lanes.scalarCount
    let stride = MemoryLayout<Lanes>.size
    var sum0 = Lanes()
    var sum1 = Lanes()
    var index = 0
    var offset = 0
    while index &+ 2 &* width <= count {
      sum0 +=
        x.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
        * y.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
      sum1 +=
        x.loadUnaligned(fromByteOffset: offset &+ stride, as: Lanes.self)
        * y.loadUnaligned(fromByteOffset: offset &+ stride, as: Lanes.self)
      index &+= 2 &* width
      offset &+= 2 &* stride
    }
    if index &+ width <= count {
      sum0 +=
        x.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
        * y.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
      index &+= width
    }
    var total = lanesSum(sum0 + sum1)
    while index < count {
      total += a[index] * b[index]
      index &+= 1
    }
    return total
  }

  /// Σ (aᵢ − bᵢ)² over `count` components.
  @inlinable @_optimize(speed)
  public static func squaredL2(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    let x = UnsafeRawPointer(a)
    let y = UnsafeRawPointer(b)
    let width = Lanes.scalarCount
    let stride = MemoryLayout<Lanes>.size
    var sum0 = Lanes()
    var sum1 = Lanes()
    var index = 0
    var offset = 0
    while index &+ 2 &* width <= count {
      let d0 =
        x.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
        - y.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
      let d1 =
        x.loadUnaligned(fromByteOffset: offset &+ stride, as: Lanes.self)
        - y.loadUnaligned(fromByteOffset: offset &+ stride, as: Lanes.self)
      sum0 += d0 * d0
      sum1 += d1 * d1
      index &+= 2 &* width
      offset &+= 2 &* stride
    }
    if index &+ width <= count {
      let d =
        x.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
        - y.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
      sum0 += d * d
      index &+= width
    }
    var total = lanesSum(sum0 + sum1)
    while index < count {
      let d = a[index] - b[index]
      total += d * d
      index &+= 1
    }
    return total
  }

  @inlinable @_optimize(speed) @inline(__always)
  static func lanesSum(_ lanes: Lanes) -> Float {
    #if DEBUG
      return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    #else
      return lanes.sum()
    #endif
  }

  /// The index's distance for `metric` between two stored (for cosine: normalized) vectors.
  @inlinable
  public static func distance(
    _ metric: DistanceMetric, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int
  ) -> Float {
    switch metric {
    case .l2: return squaredL2(a, b, count: count)
    case .dot: return -dot(a, b, count: count)
    case .cosine: return 1 - dot(a, b, count: count)
    }
  }

  /// Euclidean norm, summed in `Double` so that large components cannot overflow.
  public static func norm(_ vector: UnsafeBufferPointer<Float>) -> Double {
    var sum = 0.0
    for value in vector { sum += Double(value) * Double(value) }
    return sum.squareRoot()
  }

  /// `vector` scaled to unit length; `nil` for a zero vector.
  public static func normalized(_ vector: [Float]) -> [Float]? {
    let length = vector.withUnsafeBufferPointer { norm($0) }
    guard length > 0, length.isFinite else { return nil }
    return vector.map { Float(Double($0) / length) }
  }
}
