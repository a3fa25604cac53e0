import MemWALCore
import Testing

@Suite struct CRC32CTests {
  @Test func knownValues() {
    #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    #expect(CRC32C.checksum([UInt8]()) == 0)
    #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)  // RFC 3720 B.4
    #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
    #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
  }

  @Test func hardwareAndPortableAgreeAndChain() {
    var generator = SeededGenerator(seed: 42)
    for length in 0..<300 {
      let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
      let whole = CRC32C.checksum(bytes)
      #expect(whole == CRC32C.portableChecksum(bytes), "length \(length)")
      let cut = length / 3
      #expect(
        CRC32C.checksum(Array(bytes[cut...]), extending: CRC32C.checksum(Array(bytes[..<cut]))) == whole)
      // Unaligned start.
      if length > 1 { #expect(CRC32C.checksum(bytes[1...]) == CRC32C.portableChecksum(Array(bytes[1...]))) }
    }
  }

  @Test func usesTheHardwareInstructionOnThisMachine() {
    // Every x86-64 machine this project runs on has SSE4.2; this guards the dispatch.
    #if arch(x86_64)
      #expect(CRC32C.isHardwareAccelerated)
    #endif
  }
}

/// The core's seeded generator, under the name these tests use.
typealias SeededGenerator = SplitMix64
