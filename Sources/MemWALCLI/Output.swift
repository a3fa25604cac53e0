import Glibc
import MemWALCore

/// Writes a line to standard output and flushes it, so a reader (or a test that kills this
/// process) sees every line that was printed.
func emit(_ line: String) {
  print(line)
  fflush(nil)
}

/// Writes a line to standard error.
func warn(_ line: String) {
  fflush(nil)
  let bytes = Array((line + "\n").utf8)
  _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
}

/// A JSON string literal.
func jsonString(_ value: String) -> String {
  var out = ""
  JSONValue.writeString(value, into: &out)
  return out
}

/// A JSON number that is always finite.
func jsonNumber(_ value: Double) -> String {
  guard value.isFinite else { return "null" }
  return String(format3(value))
}

func format3(_ value: Double) -> String {
  let scaled = (value * 1000).rounded() / 1000
  if scaled == scaled.rounded() && abs(scaled) < 1e15 { return String(Int64(scaled)) }
  return String(scaled)
}
