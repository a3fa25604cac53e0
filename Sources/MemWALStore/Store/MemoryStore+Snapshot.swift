import MemWALCore

/// The snapshot format (a checkpoint's payload): every retained version of every key, the vector
/// indexes saved as they are (not rebuilt on load), the time index and the idempotency keys.
///
/// ```
/// "MWSTORE1" version:u32 appliedLSN:u64 historyFloor:u64 nextLabel:u64
/// times:     count:u64 (lsn:u64 micros:i64)…
/// keys:      count:u64 (key:string lsn:u64 epoch:u64 txn:u64 digestLength:u8 digest)…
///            (version 1 has no digestLength and digest: its keys have no request digest)
/// names:     count:u32 (name:string incarnations:u32 incarnation…)…
/// incarnation = config:bytes created:u64 deleted:u64(0 = alive)
///               memories:chains nodes:chains edges:chains index:bytes
/// chains     = count:u64 (id:string versions:u32 (hasValue:u8 [image:bytes] lsn:u64 micros:i64 txn:u64 end:u64 label:u64)…)…
/// string, bytes = length:u32|u64 then the bytes
/// ```
extension MemoryStore {
  static let snapshotMagic: [UInt8] = Array("MWSTORE1".utf8)
  static let snapshotVersion: UInt32 = 2

  /// Serializes the store as of its applied LSN. Call it between applies (the engine runs it on the
  /// applier's own task), never concurrently with `apply`.
  public func snapshot() -> (lsn: LSN, bytes: [UInt8]) {
    lock.withReadLock {
      precondition(recordedLSN == publishedLSN, "snapshot taken in the middle of an apply")
      var writer = ByteWriter(capacity: 1 << 20)
      writer.write(bytes: Self.snapshotMagic)
      writer.write(Self.snapshotVersion)
      writer.write(publishedLSN.rawValue)
      writer.write(historyFloor.rawValue)
      writer.write(nextLabel)
      let retainedTimes = times[timesHead...]
      writer.write(UInt64(retainedTimes.count))
      for entry in retainedTimes {
        writer.write(entry.lsn.rawValue)
        writer.write(entry.micros)
      }
      let keys = idempotencyOrder[idempotencyHead...].filter { idempotency[$0] != nil }
      writer.write(UInt64(keys.count))
      for key in keys {
        let outcome = idempotency[key]!
        Self.writeString(key, &writer)
        writer.write(outcome.lsn.rawValue)
        writer.write(outcome.epoch.rawValue)
        writer.write(outcome.transactionID.rawValue)
        let digest = outcome.requestDigest ?? []
        writer.write(UInt8(digest.count))
        writer.write(bytes: digest)
      }
      writer.write(UInt32(namespaces.count))
      for name in namespaces.keys.sorted() {
        Self.writeString(name, &writer)
        let incarnations = namespaces[name]!
        writer.write(UInt32(incarnations.count))
        for state in incarnations { write(state, into: &writer) }
      }
      return (publishedLSN, writer.bytes)
    }
  }

  private func write(_ state: NamespaceState, into writer: inout ByteWriter) {
    Self.writeBytes(RecordCodec.encode(.namespace(state.config)), &writer)
    writer.write(state.createdLSN.rawValue)
    writer.write(state.deletedLSN?.rawValue ?? 0)
    Self.writeChains(state.memories, &writer) { .memory($0) }
    Self.writeChains(state.nodes, &writer) { .node($0) }
    Self.writeChains(state.edges, &writer) { .edge($0) }
    Self.writeBytes(state.index.serialize(), &writer)
  }

  private static func writeChains<Value>(
    _ chains: [String: VersionChain<Value>], _ writer: inout ByteWriter, wrap: (Value) -> RecordValue
  ) {
    writer.write(UInt64(chains.count))
    for id in chains.keys.sorted() {
      writeString(id, &writer)
      let versions = chains[id]!.versions
      writer.write(UInt32(versions.count))
      for version in versions {
        if let value = version.value {
          writer.write(UInt8(1))
          writeBytes(RecordCodec.encode(wrap(value)), &writer)
        } else {
          writer.write(UInt8(0))
        }
        writer.write(version.lsn.rawValue)
        writer.write(version.timestampMicros)
        writer.write(version.transactionID.rawValue)
        writer.write(version.endLSN?.rawValue ?? 0)
        writer.write(version.label)
      }
    }
  }

  static func writeString(_ string: String, _ writer: inout ByteWriter) {
    let utf8 = Array(string.utf8)
    writer.write(UInt32(utf8.count))
    writer.write(bytes: utf8)
  }

  static func writeBytes(_ bytes: [UInt8], _ writer: inout ByteWriter) {
    writer.write(UInt64(bytes.count))
    writer.write(bytes: bytes)
  }

  /// Rebuilds a store from `snapshot()` bytes; every length is checked, and damage is a
  /// `StoreError.corruptSnapshot`, never a crash.
  public static func load(_ bytes: [UInt8], options: Options = Options()) throws(StoreError) -> MemoryStore {
    let result = bytes.withUnsafeBytes { raw in
      Result { () throws(StoreError) -> MemoryStore in
        var reader = ByteReader(raw)
        do {
          return try decode(&reader, options: options)
        } catch let error as StoreError {
          throw error
        } catch {
          throw .corruptSnapshot("\(error) (at byte \(reader.offset))")
        }
      }
    }
    return try result.get()
  }

  private static func decode(_ reader: inout ByteReader, options: Options) throws -> MemoryStore {
    guard try reader.readBytes(8) == snapshotMagic else { throw StoreError.corruptSnapshot("bad magic") }
    let version: UInt32 = try reader.read()
    guard version == 1 || version == snapshotVersion else {
      throw StoreError.corruptSnapshot("unsupported version \(version)")
    }
    let applied = LSN(try reader.read(UInt64.self))
    let store = MemoryStore(options: options, appliedLSN: applied)
    store.historyFloor = LSN(try reader.read(UInt64.self))
    store.nextLabel = try reader.read()
    let timeCount = try count(&reader, each: 16)
    for _ in 0..<timeCount {
      store.times.append((LSN(try reader.read(UInt64.self)), try reader.read(Int64.self)))
    }
    let keyCount = try count(&reader, each: version == 1 ? 28 : 29)
    for _ in 0..<keyCount {
      let key = try readString(&reader)
      var outcome = IdempotentOutcome(
        lsn: LSN(try reader.read(UInt64.self)), epoch: Epoch(try reader.read(UInt64.self)),
        transactionID: TransactionID(try reader.read(UInt64.self)))
      if version >= 2 {
        let length = Int(try reader.read(UInt8.self))
        guard length == 0 || length == WALFormat.requestDigestBytes else {
          throw StoreError.corruptSnapshot("a request digest of \(length) bytes for an idempotency key")
        }
        if length > 0 { outcome.requestDigest = try reader.readBytes(length) }
      }
      store.idempotency[key] = outcome
      store.idempotencyOrder.append(key)
    }
    let nameCount: UInt32 = try reader.read()
    for _ in 0..<nameCount {
      let name = try readString(&reader)
      let incarnations: UInt32 = try reader.read()
      guard incarnations <= 1 << 20 else {
        throw StoreError.corruptSnapshot("\(incarnations) incarnations of \(name)")
      }
      for _ in 0..<incarnations {
        store.namespaces[name, default: []].append(try readNamespace(&reader, store: store))
      }
    }
    guard reader.remaining == 0 else {
      throw StoreError.corruptSnapshot("\(reader.remaining) trailing bytes")
    }
    store.rebuildEndedVersions()
    return store
  }

  private static func readNamespace(_ reader: inout ByteReader, store: MemoryStore) throws -> NamespaceState {
    guard case .namespace(let config) = try RecordCodec.decode(try readBytes(&reader), as: .namespace) else {
      throw StoreError.corruptSnapshot("namespace config")
    }
    do {
      try RecordLimits().check(namespace: config)
    } catch {
      throw StoreError.corruptSnapshot("namespace config: \(error)")
    }
    let created = LSN(try reader.read(UInt64.self))
    let deleted: UInt64 = try reader.read()
    let state = NamespaceState(config: config, createdLSN: created, parameters: store.options.hnsw)
    state.deletedLSN = deleted == 0 ? nil : LSN(deleted)
    state.memories = try readChains(&reader, target: .memory) { value in
      guard case .memory(let memory) = value else { return nil }
      return memory
    }
    state.nodes = try readChains(&reader, target: .node) { value in
      guard case .node(let node) = value else { return nil }
      return node
    }
    state.edges = try readChains(&reader, target: .edge) { value in
      guard case .edge(let edge) = value else { return nil }
      return edge
    }
    do {
      state.index = try HNSWIndex.deserialize(try readBytes(&reader))
    } catch {
      throw StoreError.corruptSnapshot("vector index of \(config.name): \(error)")
    }
    for (id, chain) in state.memories {
      for version in chain.versions where version.label != 0 {
        state.labels[version.label] = (id, version.lsn)
      }
      if chain.latest?.value != nil { state.liveMemories += 1 }
    }
    for chain in state.edges.values { for edge in chain.versions.compactMap(\.value) { state.link(edge) } }
    return state
  }

  private static func readChains<Value>(
    _ reader: inout ByteReader, target: TargetType, unwrap: (RecordValue) -> Value?
  ) throws -> [String: VersionChain<Value>] {
    let chainCount = try count(&reader, each: 8)
    var chains: [String: VersionChain<Value>] = [:]
    chains.reserveCapacity(chainCount)
    for _ in 0..<chainCount {
      let id = try readString(&reader)
      let versionCount = Int(try reader.read(UInt32.self))
      guard versionCount * 41 <= reader.remaining else {
        throw StoreError.corruptSnapshot("\(versionCount) versions of \(id)")
      }
      var chain = VersionChain<Value>()
      for _ in 0..<versionCount {
        var value: Value?
        if try reader.read(UInt8.self) == 1 {
          guard let decoded = unwrap(try RecordCodec.decode(try readBytes(&reader), as: target)) else {
            throw StoreError.corruptSnapshot("\(target) \(id) holds another kind of value")
          }
          value = decoded
        }
        var version = Version<Value>(
          value: value, lsn: LSN(try reader.read(UInt64.self)), timestampMicros: try reader.read(),
          transactionID: TransactionID(try reader.read(UInt64.self)))
        let end: UInt64 = try reader.read()
        version.endLSN = end == 0 ? nil : LSN(end)
        version.label = try reader.read()
        chain.versions.append(version)
      }
      chains[id] = chain
    }
    return chains
  }

  private static func count(_ reader: inout ByteReader, each: Int) throws -> Int {
    let value: UInt64 = try reader.read()
    guard value <= UInt64(reader.remaining / each) else {
      throw StoreError.corruptSnapshot("a count of \(value) cannot fit in \(reader.remaining) bytes")
    }
    return Int(value)
  }

  private static func readString(_ reader: inout ByteReader) throws -> String {
    let length = Int(try reader.read(UInt32.self))
    return try reader.readString(length, field: "string")
  }

  private static func readBytes(_ reader: inout ByteReader) throws -> [UInt8] {
    let length: UInt64 = try reader.read()
    guard length <= UInt64(reader.remaining) else {
      throw StoreError.corruptSnapshot("a length of \(length) past the end")
    }
    return try reader.readBytes(Int(length))
  }

  /// The pruning queue, rebuilt from the chains after a load.
  private func rebuildEndedVersions() {
    for incarnations in namespaces.values {
      for state in incarnations {
        for (id, chain) in state.memories { queueEnded(chain, state: state, target: .memory, id: id) }
        for (id, chain) in state.nodes { queueEnded(chain, state: state, target: .node, id: id) }
        for (id, chain) in state.edges { queueEnded(chain, state: state, target: .edge, id: id) }
      }
    }
    ended.sort { $0.endLSN < $1.endLSN }
  }

  private func queueEnded<Value>(
    _ chain: VersionChain<Value>, state: NamespaceState, target: TargetType, id: String
  ) {
    for version in chain.versions {
      if let end = version.endLSN {
        ended.append(EndedVersion(endLSN: end, namespace: state, target: target, id: id))
      }
      if version.value == nil {
        ended.append(EndedVersion(endLSN: version.lsn, namespace: state, target: target, id: id))
      }
    }
  }
}
