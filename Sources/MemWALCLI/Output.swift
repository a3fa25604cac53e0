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

/// RFC 3339 UTC time with microseconds, from microseconds since the Unix epoch.
func formatTimestamp(_ micros: Int64) -> String {
  let seconds = micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000
  let fraction = micros - seconds * 1_000_000
  let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
  let secondOfDay = seconds - days * 86_400
  // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
  let z = days + 719_468
  let era = (z >= 0 ? z : z - 146_096) / 146_097
  let dayOfEra = z - era * 146_097
  let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
  let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
  let monthIndex = (5 * dayOfYear + 2) / 153
  let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
  let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
  let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
  func pad(_ value: Int64, _ width: Int) -> String { String(value).leftPadded(to: width) }
  return
    "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):"
    + "\(pad(secondOfDay % 60, 2)).\(pad(fraction, 6))Z"
}

/// A JSON string literal.
func jsonString(_ value: String) -> String {
  var out = "\""
  for scalar in value.unicodeScalars {
    switch scalar {
    case "\"": out += "\\\""
    case "\\": out += "\\\\"
    case "\n": out += "\\n"
    case "\r": out += "\\r"
    case "\t": out += "\\t"
    case _ where scalar.value < 0x20: out += "\\u" + String(scalar.value, radix: 16).leftPadded(to: 4)
    default: out.unicodeScalars.append(scalar)
    }
  }
  return out + "\""
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
