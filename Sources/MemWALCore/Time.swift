/// RFC 3339 times, as the CLI and the API print and read them.

/// RFC 3339 UTC time with microseconds, from microseconds since the Unix epoch.
public func formatTimestamp(_ micros: Int64) -> String {
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

/// Parses `YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)` into microseconds since the Unix epoch.
public func parseRFC3339(_ text: String) -> Int64? {
  let bytes = Array(text.utf8)
  func number(_ range: Range<Int>) -> Int64? {
    guard range.upperBound <= bytes.count else { return nil }
    var value: Int64 = 0
    for byte in bytes[range] {
      guard byte >= 48 && byte <= 57 else { return nil }
      value = value * 10 + Int64(byte - 48)
    }
    return value
  }
  guard bytes.count >= 20, bytes[4] == 45, bytes[7] == 45, bytes[10] == 84 || bytes[10] == 116,
    bytes[13] == 58, bytes[16] == 58,
    let year = number(0..<4), let month = number(5..<7), let day = number(8..<10), let hour = number(11..<13),
    let minute = number(14..<16), let second = number(17..<19), (1...12).contains(month),
    (1...31).contains(day), hour < 24,
    minute < 60, second < 61
  else { return nil }
  var index = 19
  var micros: Int64 = 0
  if index < bytes.count, bytes[index] == 46 {
    index += 1
    var digits = 0
    while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
      if digits < 6 { micros = micros * 10 + Int64(bytes[index] - 48) }
      digits += 1
      index += 1
    }
    guard digits > 0 else { return nil }
    for _ in digits..<6 where digits < 6 { micros *= 10 }
  }
  var offset: Int64 = 0
  guard index < bytes.count else { return nil }
  if bytes[index] == 90 || bytes[index] == 122 {
    index += 1
  } else if bytes[index] == 43 || bytes[index] == 45 {
    guard let hours = number((index + 1)..<(index + 3)), index + 3 < bytes.count, bytes[index + 3] == 58,
      let minutes = number((index + 4)..<(index + 6))
    else { return nil }
    offset = (hours * 60 + minutes) * 60 * (bytes[index] == 43 ? 1 : -1)
    index += 6
  } else {
    return nil
  }
  guard index == bytes.count else { return nil }
  // Days from civil (Howard Hinnant).
  let y = month <= 2 ? year - 1 : year
  let era = (y >= 0 ? y : y - 399) / 400
  let yearOfEra = y - era * 400
  let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
  let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
  let days = era * 146_097 + dayOfEra - 719_468
  let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset
  return seconds * 1_000_000 + micros
}
