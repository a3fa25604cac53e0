import NIOCore
import Testing

@testable import MemWALChaos

/// The per-direction queue without sockets or a clock: times are made up.
@Suite struct FlowQueueTests {
  private let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

  private func bytes(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

  @Test func blockedQueueHoldsBytesAndTheEndThenDeliversThemInOrder() {
    var queue = FlowQueue()
    queue.configure(isBlocked: true, delay: .zero, bytesPerSecond: nil, now: start)
    #expect(!queue.wantsRead)
    queue.enqueue(bytes("ab"), now: start)
    queue.enqueue(bytes("c"), now: start)
    queue.endSource()
    #expect(queue.next(now: start, destinationIsWritable: true) == .idle)

    queue.configure(isBlocked: false, delay: .zero, bytesPerSecond: nil, now: start)
    #expect(queue.next(now: start, destinationIsWritable: true) == .deliver(bytes("ab")))
    #expect(queue.next(now: start, destinationIsWritable: true) == .deliver(bytes("c")))
    #expect(queue.next(now: start, destinationIsWritable: true) == .finish)
    #expect(queue.next(now: start, destinationIsWritable: true) == .idle)
  }

  @Test func chunkIsDueDelayAfterItWasReadAndNeverOvertakes() {
    var queue = FlowQueue()
    queue.configure(isBlocked: false, delay: .milliseconds(200), bytesPerSecond: nil, now: start)
    queue.enqueue(bytes("a"), now: start)
    queue.enqueue(bytes("b"), now: start + .milliseconds(10))
    let early = start + .milliseconds(100)
    #expect(queue.next(now: early, destinationIsWritable: true) == .wait(until: start + .milliseconds(200)))

    // A shorter delay applies to what is queued, and "b" still waits for "a".
    queue.configure(isBlocked: false, delay: .milliseconds(150), bytesPerSecond: nil, now: early)
    queue.enqueue(bytes("c"), now: early)
    let later = start + .milliseconds(165)
    #expect(queue.next(now: later, destinationIsWritable: true) == .deliver(bytes("a")))
    #expect(queue.next(now: later, destinationIsWritable: true) == .deliver(bytes("b")))
    #expect(queue.next(now: later, destinationIsWritable: true) == .wait(until: early + .milliseconds(150)))
  }

  @Test func fullDestinationHoldsDueBytes() {
    var queue = FlowQueue()
    queue.enqueue(bytes("a"), now: start)
    #expect(queue.next(now: start, destinationIsWritable: false) == .idle)
    #expect(queue.next(now: start, destinationIsWritable: true) == .deliver(bytes("a")))
  }

  @Test func bandwidthCapSplitsChunksAndPacesThem() {
    var queue = FlowQueue()
    queue.configure(isBlocked: false, delay: .zero, bytesPerSecond: 1_000, now: start)
    queue.enqueue(ByteBuffer(repeating: 1, count: 250), now: start)
    // A burst is a tenth of a second's worth: 100 bytes.
    #expect(
      queue.next(now: start, destinationIsWritable: true) == .deliver(ByteBuffer(repeating: 1, count: 100)))
    guard case .wait(let until) = queue.next(now: start, destinationIsWritable: true) else {
      Issue.record("expected a wait for tokens")
      return
    }
    #expect(until >= start + .milliseconds(100))
    #expect(until <= start + .milliseconds(101))
    #expect(
      queue.next(now: until, destinationIsWritable: true) == .deliver(ByteBuffer(repeating: 1, count: 100)))
    let last = until + .milliseconds(100)
    #expect(
      queue.next(now: last, destinationIsWritable: true) == .deliver(ByteBuffer(repeating: 1, count: 50)))
    #expect(queue.queuedBytes == 0)
  }

  @Test func fullQueueStopsReadingUntilItDrains() {
    var queue = FlowQueue()
    queue.enqueue(ByteBuffer(repeating: 0, count: FlowQueue.queuedBytesLimit), now: start)
    #expect(!queue.wantsRead)
    guard case .deliver = queue.next(now: start, destinationIsWritable: true) else {
      Issue.record("expected a delivery")
      return
    }
    #expect(queue.wantsRead)
  }

  @Test func abandonedQueueDropsEverything() {
    var queue = FlowQueue()
    queue.enqueue(bytes("a"), now: start)
    queue.abandon()
    queue.enqueue(bytes("b"), now: start)
    #expect(queue.queuedBytes == 0)
    #expect(!queue.wantsRead)
    #expect(queue.next(now: start, destinationIsWritable: true) == .idle)
  }
}
