/// How a namespace compares vectors; fixed when the namespace is created.
public enum DistanceMetric: String, Sendable, CaseIterable, Codable {
  /// 1 − cosine similarity. Vectors are normalized when stored, so search runs on dot products.
  case cosine
  /// Negative dot product (a larger dot product is closer).
  case dot
  /// Squared Euclidean distance.
  case l2
}
