import NIOCore

/// One direction of one proxied connection: the bytes read from the source and not yet written to
/// the destination, and the faults that decide when each byte may go.
///
/// A value with no I/O and no clock of its own: the connection hands it what it read and the time,
/// asks it for the next ``Step`` and carries that out. Bytes leave in the order they arrived; a
/// chunk is due `delay` after it was read (the delay in force now, so a changed delay applies to
/// queued bytes too, and since read times only grow, no chunk becomes due before an earlier one).
struct FlowQueue {
  /// Queued bytes at or above which the source should not be read until the queue drains.
  static let queuedBytesLimit = 1 << 20

  enum Step: Equatable {
    /// Write these bytes to the destination now.
    case deliver(ByteBuffer)
    /// Nothing can go before this time: ask again then.
    case wait(until: NIODeadline)
    /// The source ended and everything it sent went: close the destination (once written).
    case finish
    /// Nothing to do until something changes: a read, an unblock, the destination draining.
    case idle
  }

  private struct Chunk {
    var bytes: ByteBuffer
    let readAt: NIODeadline
  }

  private var chunks = CircularBuffer<Chunk>()
  private(set) var queuedBytes = 0
  private(set) var isBlocked = false
  /// The source closed; its end is delivered (as ``Step/finish``) after its bytes.
  private(set) var isSourceEnded = false
  /// The destination is gone: everything queued was dropped and nothing more is accepted.
  private(set) var isAbandoned = false
  private var isFinished = false
  private var delay = TimeAmount.zero
  private var bucket: TokenBucket?

  /// Whether the source should be read: not blocked, not ended, and the queue under its limit.
  var wantsRead: Bool {
    !isBlocked && !isSourceEnded && !isAbandoned && queuedBytes < Self.queuedBytesLimit
  }

  mutating func configure(isBlocked: Bool, delay: TimeAmount, bytesPerSecond: Int?, now: NIODeadline) {
    precondition(delay >= .zero, "a negative delay: \(delay)")
    self.isBlocked = isBlocked
    self.delay = delay
    if bytesPerSecond != bucket?.bytesPerSecond {
      bucket = bytesPerSecond.map { TokenBucket(bytesPerSecond: $0, now: now) }
    }
  }

  mutating func enqueue(_ bytes: ByteBuffer, now: NIODeadline) {
    precondition(!isSourceEnded, "bytes read after the source ended")
    guard !isAbandoned, bytes.readableBytes > 0 else { return }
    chunks.append(Chunk(bytes: bytes, readAt: now))
    queuedBytes += bytes.readableBytes
  }

  mutating func endSource() {
    isSourceEnded = true
  }

  /// The destination closed: drop what is queued and everything that comes later.
  mutating func abandon() {
    isAbandoned = true
    chunks.removeAll()
    queuedBytes = 0
  }

  /// What to do next. `destinationIsWritable` false holds due bytes back (the destination's own
  /// buffer is full); the caller asks again when it drains.
  mutating func next(now: NIODeadline, destinationIsWritable: Bool) -> Step {
    guard !isBlocked, !isAbandoned, !isFinished else { return .idle }
    guard var head = chunks.first else {
      guard isSourceEnded else { return .idle }
      isFinished = true
      return .finish
    }
    let due = head.readAt + delay
    guard due <= now else { return .wait(until: due) }
    guard destinationIsWritable else { return .idle }
    var size = head.bytes.readableBytes
    if bucket != nil {
      switch bucket!.take(upTo: size, now: now) {
      case .granted(let granted): size = granted
      case .retry(let at): return .wait(until: at)
      }
    }
    let piece = head.bytes.readSlice(length: size)!
    if head.bytes.readableBytes == 0 {
      chunks.removeFirst()
    } else {
      chunks[chunks.startIndex] = head
    }
    queuedBytes -= size
    return .deliver(piece)
  }
}

/// A bandwidth cap: tokens (bytes) accrue at `bytesPerSecond` up to a burst of a tenth of a
/// second's worth, and a write takes as many as it sends. Writes larger than a burst are split.
struct TokenBucket {
  enum Grant: Equatable {
    case granted(Int)
    case retry(at: NIODeadline)
  }

  let bytesPerSecond: Int
  private var tokens: Double
  private var refilledAt: NIODeadline

  /// The most bytes one write may take, and the most that accrue while idle.
  var burstBytes: Int { max(1, bytesPerSecond / 10) }

  init(bytesPerSecond: Int, now: NIODeadline) {
    precondition(bytesPerSecond > 0, "a bandwidth cap must be positive: \(bytesPerSecond) bytes/s")
    self.bytesPerSecond = bytesPerSecond
    self.tokens = Double(max(1, bytesPerSecond / 10))
    self.refilledAt = now
  }

  /// Takes tokens for up to `wanted` bytes (at most one burst), or says when enough will be there.
  mutating func take(upTo wanted: Int, now: NIODeadline) -> Grant {
    precondition(wanted > 0)
    if now > refilledAt {
      let elapsedNanoseconds = Double((now - refilledAt).nanoseconds)
      tokens = min(Double(burstBytes), tokens + elapsedNanoseconds * Double(bytesPerSecond) / 1e9)
      refilledAt = now
    }
    let size = min(wanted, burstBytes)
    // A little slack so that floating-point rounding never makes a due write wait again.
    guard tokens + 1e-6 < Double(size) else {
      tokens = max(0, tokens - Double(size))
      return .granted(size)
    }
    let missingNanoseconds = (Double(size) - tokens) * 1e9 / Double(bytesPerSecond)
    return .retry(at: now + .nanoseconds(Int64(missingNanoseconds.rounded(.up)) + 1))
  }
}
