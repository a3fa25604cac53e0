import Foundation
import Logging
import MemWALServer
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// A fresh directory under the system's temporary directory, removed by ``remove()``.
struct TemporaryDirectory {
  let path: String

  init(_ label: String) throws {
    var template = Array((NSTemporaryDirectory() + "/memwal-\(label)-XXXXXX").utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    guard let made else { throw TLSTestError("mkdtemp failed for \(label)") }
    path = String(cString: made)
  }

  func remove() { try? FileManager.default.removeItem(atPath: path) }
}

struct TLSTestError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// Runs `body` with a cluster's certificates (`n1`, `n2`, `n3`, and `stranger`, whose certificate
/// is from the same CA but who is not a member) and a second, foreign CA that issued its own `n2`.
func withClusterCertificates(_ body: (_ cluster: String, _ foreign: String) async throws -> Void)
  async throws
{
  let cluster = try TemporaryDirectory("certs")
  let foreign = try TemporaryDirectory("foreign")
  defer {
    cluster.remove()
    foreign.remove()
  }
  _ = try ClusterCertificates.initialize(directory: cluster.path, names: ["n1", "n2", "n3", "stranger"])
  _ = try ClusterCertificates.initialize(directory: foreign.path, names: ["n2"])
  try await body(cluster.path, foreign.path)
}

/// A swift-log handler that keeps every entry, so a test can check what was logged.
final class LogRecorder: Sendable {
  struct Entry: Sendable {
    var level: Logger.Level
    var message: String
    var metadata: [String: String]
  }

  private let entries = Mutex<[Entry]>([])

  var all: [Entry] { entries.withLock { $0 } }

  func append(_ entry: Entry) { entries.withLock { $0.append(entry) } }

  func makeLogger(_ label: String) -> Logger {
    var logger = Logger(label: label) { _ in RecordingLogHandler(recorder: self) }
    logger.logLevel = .debug
    return logger
  }

  /// The first warning whose reason contains `text`, waiting for it up to `seconds`; nil if none
  /// came by then. Polls: log entries come from event-loop threads.
  func refusal(containing text: String, within seconds: Double = 10) async -> Entry? {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while ContinuousClock.now < deadline {
      if let entry = all.first(where: { $0.level == .warning && ($0.metadata["reason"] ?? "").contains(text) }
      ) {
        return entry
      }
      try? await Task.sleep(for: .milliseconds(5))
    }
    return nil
  }
}

struct RecordingLogHandler: LogHandler {
  let recorder: LogRecorder
  var metadata: Logger.Metadata = [:]
  var logLevel: Logger.Level = .debug

  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  func log(event: LogEvent) {
    var all = metadata
    for (key, value) in event.metadata ?? [:] { all[key] = value }
    recorder.append(
      .init(
        level: event.level, message: "\(event.message)",
        metadata: all.mapValues { "\($0)" }))
  }
}

/// A peer-TLS listener on a free loopback port that, once a peer is verified, writes
/// `hello NAME, this is ME` and closes.
struct GreetingListener {
  let channel: any Channel
  var port: Int { channel.localAddress?.port ?? 0 }

  static func start(_ peerTLS: PeerTLS) async throws -> GreetingListener {
    let me = peerTLS.nodeName
    let channel = try await peerTLS.makeServerBootstrap(group: MultiThreadedEventLoopGroup.singleton) {
      channel in
      channel.eventLoop.makeCompletedFuture {
        try channel.pipeline.syncOperations.addHandler(GreetingHandler(me: me))
      }
    }.bind(host: "127.0.0.1", port: 0).get()
    return GreetingListener(channel: channel)
  }

  func stop() async throws { try await channel.close() }
}

final class GreetingHandler: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer
  let me: String

  init(me: String) { self.me = me }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let event = event as? PeerTLSEvent, case .verified(let name) = event {
      context.writeAndFlush(
        wrapOutboundOut(ByteBuffer(string: "hello \(name), this is \(me)\n")), promise: nil)
      context.close(promise: nil)
    }
    context.fireUserInboundEventTriggered(event)
  }
}

/// Collects what a client channel receives and the peer-TLS events it sees, until the channel closes.
final class CollectingHandler: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  struct Outcome: Sendable {
    var text = ""
    var verifiedName: String?
  }

  let done: EventLoopPromise<Outcome>
  private var outcome = Outcome()

  init(done: EventLoopPromise<Outcome>) { self.done = done }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    outcome.text += String(buffer: unwrapInboundIn(data))
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let event = event as? PeerTLSEvent, case .verified(let name) = event { outcome.verifiedName = name }
    context.fireUserInboundEventTriggered(event)
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }

  func channelInactive(context: ChannelHandlerContext) {
    done.succeed(outcome)
    context.fireChannelInactive()
  }
}

/// Debian's `openssl` command, run with a deadline. The tests that use it fail with a clear message
/// when it is missing (there is no opt-out: these are the only checks by a TLS client nobody here
/// wrote).
enum OpenSSL {

  struct Run {
    var status: Int32
    var standardOutput: String
    var standardError: String
    var timedOut: Bool
    var all: String {
      "exit \(status)\(timedOut ? " (killed at the deadline)" : "")\n" + standardOutput + standardError
    }
  }

  static func locate() throws -> String {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for directory in path.split(separator: ":") {
      let candidate = "\(directory)/openssl"
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    throw TLSTestError(
      "openssl is not installed, and these tests need Debian's openssl as an independent TLS client: "
        + "`apt-get install -y openssl` (.ci/run does)")
  }

  /// `openssl s_client` to 127.0.0.1:`port`, TLS 1.3, trusting only `authority`, verifying the
  /// server's name `serverName`, as the member whose files are in `certificate` (nil: none).
  static func sClient(
    port: Int, authority: String, serverName: String, certificate: (directory: String, name: String)?
  ) async throws -> Run {
    var arguments = [
      "s_client", "-connect", "127.0.0.1:\(port)", "-tls1_3", "-CAfile", authority,
      "-servername", serverName, "-verify_hostname", serverName, "-verify_return_error", "-ign_eof",
    ]
    if let (directory, name) = certificate {
      arguments += ["-cert", "\(directory)/\(name).pem", "-key", "\(directory)/\(name)-key.pem"]
    }
    return try await run(arguments)
  }

  /// Runs `openssl ARGUMENTS` with standard input at end of file, killing it at the deadline.
  static func run(_ arguments: [String], deadlineSeconds: Double = 20) async throws -> Run {
    let executable = try locate()
    let scratch = try TemporaryDirectory("openssl")
    defer { scratch.remove() }
    let outputPath = scratch.path + "/out"
    let errorPath = scratch.path + "/err"
    _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
    _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
    let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
    let error = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
    defer {
      try? output.close()
      try? error.close()
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = output
    process.standardError = error
    let (exits, exited) = AsyncStream<Int32>.makeStream()
    process.terminationHandler = { process in
      exited.yield(process.terminationStatus)
      exited.finish()
    }
    try process.run()
    let timedOut = Mutex(false)
    let deadline = DispatchWorkItem {
      if process.isRunning {
        timedOut.withLock { $0 = true }
        process.terminate()
      }
    }
    DispatchQueue.global().asyncAfter(deadline: .now() + deadlineSeconds, execute: deadline)
    var iterator = exits.makeAsyncIterator()
    let status = await iterator.next() ?? -1
    deadline.cancel()
    return Run(
      status: status,
      standardOutput: (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "",
      standardError: (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "",
      timedOut: timedOut.withLock { $0 })
  }
}
