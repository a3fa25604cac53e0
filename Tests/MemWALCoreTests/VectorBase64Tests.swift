import MemWALCore
import Testing

@Suite struct VectorBase64Tests {
  @Test func roundTripsEveryComponentExactly() throws {
    var generator = SplitMix64(seed: 7)
    for count in [0, 1, 2, 3, 4, 5, 384, 1_000] {
      var vector: [Float] = []
      while vector.count < count {
        let component = Float(bitPattern: UInt32(truncatingIfNeeded: generator.next()))
        if component.isFinite { vector.append(component) }
      }
      if count > 4 {
        vector.replaceSubrange(0..<4, with: [0, -0.0, .leastNonzeroMagnitude, -.greatestFiniteMagnitude])
      }
      let decoded = try VectorBase64.decode(VectorBase64.text(vector))
      #expect(decoded.map(\.bitPattern) == vector.map(\.bitPattern))
    }
  }

  @Test func isLittleEndianFloat32InStandardBase64() throws {
    // 1.0 is 00 00 80 3F; 2.0 is 00 00 00 40; -0.5 is 00 00 00 BF.
    #expect(VectorBase64.text([1]) == "AACAPw==")
    #expect(VectorBase64.text([1, 2, -0.5]) == "AACAPwAAAEAAAAC/")
    #expect(try VectorBase64.decode("AACAPwAAAEAAAAC/") == [1, 2, -0.5])
  }

  @Test func refusesWhatIsNotOneVector() {
    let cases: [(String, VectorBase64.DecodeError)] = [
      ("AACAPw=", .badLength(characters: 7)),
      ("AACAPwAAAEAAAA!/", .badCharacter(offset: 14)),
      ("AAC APwAAAEAAAC/", .badCharacter(offset: 3)),
      ("AACAPwAAAEAAAAC\"", .badCharacter(offset: 15)),
      ("AA=APw==", .badCharacter(offset: 2)),
      ("AACA", .notWholeComponents(bytes: 3)),
      ("AACAPx==", .badCharacter(offset: 5)),
      ("AACAfw==", .nonFinite(index: 0, value: .infinity)),
      ("AACA/w==", .nonFinite(index: 0, value: -.infinity)),
    ]
    for (text, expected) in cases {
      #expect(throws: expected, "\(text)") { try VectorBase64.decode(text) }
    }
    do {
      _ = try VectorBase64.decode("AACAPwAAwH8=")
      Issue.record("a NaN component was accepted")
    } catch {
      guard case .nonFinite(index: 1, let value) = error else {
        Issue.record("\(error)")
        return
      }
      #expect(value.isNaN)
    }
    #expect(throws: VectorBase64.DecodeError.tooManyComponents(count: 2, limit: 1)) {
      try VectorBase64.decode("AACAPwAAAEA=", maximumComponents: 1)
    }
  }
}
