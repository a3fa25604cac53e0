extension Distance {
  #if DEBUG
    @usableFromInline typealias BatchLanes = SIMD4<Float>
  #else
    /// Eight lanes: four accumulators of them and the query chunk fit in 16 SSE registers.
    @usableFromInline typealias BatchLanes = SIMD8<Float>
  #endif

  /// Dot products of `query` with four vectors at once. The search's cost is waiting for vectors
  /// to arrive from memory (perf shows the first load of each stalling); reading four vectors in
  /// one loop keeps four of those misses in flight together, as a prefetch would.
  @inlinable @_optimize(speed)
  public static func dot(
    _ query: UnsafePointer<Float>, _ v0: UnsafePointer<Float>, _ v1: UnsafePointer<Float>,
    _ v2: UnsafePointer<Float>, _ v3: UnsafePointer<Float>, count: Int
  ) -> SIMD4<Float> {
    let width = BatchLanes.scalarCount
    let stride = MemoryLayout<BatchLanes>.size
    let q = UnsafeRawPointer(query)
    let (r0, r1, r2, r3) = (
      UnsafeRawPointer(v0), UnsafeRawPointer(v1), UnsafeRawPointer(v2), UnsafeRawPointer(v3)
    )
    var (s0, s1, s2, s3) = (BatchLanes(), BatchLanes(), BatchLanes(), BatchLanes())
    var index = 0
    var offset = 0
    while index &+ width <= count {
      let chunk = q.loadUnaligned(fromByteOffset: offset, as: BatchLanes.self)
      s0 += chunk * r0.loadUnaligned(fromByteOffset: offset, as: BatchLanes.self)
      s1 += chunk * r1.loadUnaligned(fromByteOffset: offset, as: BatchLanes.self)
      s2 += chunk * r2.loadUnaligned(fromByteOffset: offset, as: BatchLanes.self)
      s3 += chunk * r3.loadUnaligned(fromByteOffset: offset, as: BatchLanes.self)
      index &+= width
      offset &+= stride
    }
    var result = SIMD4<Float>(batchSum(s0), batchSum(s1), batchSum(s2), batchSum(s3))
    while index < count {
      result += query[index] * SIMD4<Float>(v0[index], v1[index], v2[index], v3[index])
      index &+= 1
    }
    return result
  }

  /// Squared L2 distances from `query` to four vectors at once (see the batched `dot`).
  @inlinable @_optimize(speed)
  public static func squaredL2(
    _ query: UnsafePointer<Float>, _ v0: UnsafePointer<Float>, _ v1: UnsafePointer<Float>,
    _ v2: UnsafePointer<Float>, _ v3: UnsafePointer<Float>, count: Int
  ) -> SIMD4<Float> {
    let width = BatchLanes.scalarCount
    let stride = MemoryLayout<BatchLanes>.size
    let q = UnsafeRawPointer(query)
    let (r0, r1, r2, r3) = (
      UnsafeRawPointer(v0), UnsafeRawPointer(v1), UnsafeRawPointer(v2), UnsafeRawPointer(v3)
    )
    var (s0, s1, s2, s3) = (BatchLanes(), BatchLanes(), BatchLanes(), BatchLanes())
    var index = 0
    var offset = 0
    while index &+ width <= count {
      let chunk = q.loadUnaligned(fromByteOffset: offset, as: BatchLanes.self)
      let d0 = chunk - r0.loadUnaligned(fromByteOffset: offset, as: BatchLanes.self)
      let d1 = chunk - r1.loadUnaligned(fromByteOffset: offset, as: BatchLanes.self)
      let d2 = chunk - r2.loadUnaligned(fromByteOffset: offset, as: BatchLanes.self)
      let d3 = chunk - r3.loadUnaligned(fromByteOffset: offset, as: BatchLanes.self)
      s0 += d0 * d0
      s1 += d1 * d1
      s2 += d2 * d2
      s3 += d3 * d3
      index &+= width
      offset &+= stride
    }
    var result = SIMD4<Float>(batchSum(s0), batchSum(s1), batchSum(s2), batchSum(s3))
    while index < count {
      let d = query[index] - SIMD4<Float>(v0[index], v1[index], v2[index], v3[index])
      result += d * d
      index &+= 1
    }
    return result
  }

  @inlinable @_optimize(speed) @inline(__always)
  static func batchSum(_ lanes: BatchLanes) -> Float {
    #if DEBUG
      return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    #else
      return lanes.sum()
    #endif
  }

  /// The index's distances for `metric` from `query` to four stored vectors.
  @inlinable @_optimize(speed)
  public static func distances(
    _ metric: DistanceMetric, _ query: UnsafePointer<Float>, _ v0: UnsafePointer<Float>,
    _ v1: UnsafePointer<Float>, _ v2: UnsafePointer<Float>, _ v3: UnsafePointer<Float>, count: Int
  ) -> SIMD4<Float> {
    switch metric {
    case .l2: return squaredL2(query, v0, v1, v2, v3, count: count)
    case .dot: return -dot(query, v0, v1, v2, v3, count: count)
    case .cosine: return 1 - dot(query, v0, v1, v2, v3, count: count)
    }
  }
}
