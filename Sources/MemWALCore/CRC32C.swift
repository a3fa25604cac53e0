import CMemWALCRC32C

/// CRC-32C (Castagnoli). `CRC32C.checksum(bytes)` is the standard value
/// (`"123456789"` → `0xE3069283`); pass a previous result as `extending` to continue it.
public enum CRC32C {
  /// Whether the CPU's CRC instruction is in use (SSE4.2 on x86-64, the CRC extension on AArch64).
  public static var isHardwareAccelerated: Bool { memwal_crc32c_is_hardware_accelerated() != 0 }

  @inlinable
  public static func checksum(_ bytes: UnsafeRawBufferPointer, extending crc: UInt32 = 0) -> UInt32 {
    guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
    return memwal_crc32c(crc, base, bytes.count)
  }

  public static func checksum(_ bytes: [UInt8], extending crc: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { checksum($0, extending: crc) }
  }

  public static func checksum(_ bytes: ArraySlice<UInt8>, extending crc: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { checksum($0, extending: crc) }
  }

  /// The table-only implementation, for tests that compare it with the hardware path.
  public static func portableChecksum(_ bytes: [UInt8], extending crc: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { raw in
      guard let base = raw.baseAddress, raw.count > 0 else { return crc }
      return memwal_crc32c_portable(crc, base, raw.count)
    }
  }
}
