import MemWALStore
import Testing

@Suite struct DistanceMetricTests {
  @Test func namesAreTheAPIs() {
    #expect(DistanceMetric(rawValue: "cosine") == .cosine)
    #expect(DistanceMetric(rawValue: "dot") == .dot)
    #expect(DistanceMetric(rawValue: "l2") == .l2)
    #expect(DistanceMetric(rawValue: "L2") == nil)
  }
}
