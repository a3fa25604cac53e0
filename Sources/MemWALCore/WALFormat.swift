/// Constants of the on-disk format. `docs/wal-format.md` is the specification; keep the two in step.
public enum WALFormat {
  /// Every frame starts at a multiple of this, so a frame's length field never straddles a sector.
  public static let frameAlignment = 8
  /// `length` (u32) + `crc` (u32).
  public static let frameHeaderSize = 8
  /// Fixed part of a record body before its payload.
  public static let recordBodyHeaderSize = 48
  /// The largest record body the format allows, whatever the configuration says.
  public static let maximumRecordBodySize = 256 << 20

  /// Longest namespace, record id, idempotency key or node name, in UTF-8 bytes.
  public static let maximumNameBytes = 1024
  /// Most operations in one transaction.
  public static let maximumOperationsPerTransaction = 100_000
  /// Marks an absent before- or after-image.
  static let absentImage: UInt32 = 0xFFFF_FFFF

  public enum RecordType {
    public static let transaction: UInt8 = 1
    public static let epochChange: UInt8 = 2
    public static let quorumChange: UInt8 = 3
    /// A transaction whose payload carries the digest of the request after its idempotency key.
    public static let keyedTransaction: UInt8 = 4
    /// Every type a record may have.
    public static let known: ClosedRange<UInt8> = transaction...keyedTransaction
  }

  /// Length of a transaction's request digest (the first half of a SHA-256).
  public static let requestDigestBytes = 16

  /// Rounds `value` up to the frame alignment.
  @inlinable
  public static func aligned(_ value: Int) -> Int { (value + frameAlignment - 1) & ~(frameAlignment - 1) }
}
