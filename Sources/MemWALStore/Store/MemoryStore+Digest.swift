import MemWALCore

/// A deterministic fingerprint of what reads see at an LSN: two nodes (or one node before and after
/// a restart) holding the same state produce the same digest. 96 bits from two independent hashes
/// (FNV-1a 64 and CRC-32C) of a canonical listing; meant for comparison, not for security.
public struct StateDigest: Sendable, Hashable, CustomStringConvertible {
  public var lsn: LSN
  public var value: String
  public var description: String { "\(value)@\(lsn)" }
}

extension MemoryStore {
  /// The digest of the state visible as of `lsn` (default: the applied LSN), expiry judged at that
  /// record's commit time.
  public func digest(at lsn: LSN? = nil) throws(StoreError) -> StateDigest {
    let point = try readPoint(asOf: lsn ?? appliedLSN)
    return lock.withReadLock {
      var hasher = StateHasher()
      for name in namespaces.keys.sorted() {
        guard let state = namespaces[name]?.last(where: { $0.isAlive(at: point.lsn) }) else { continue }
        hasher.add(RecordCodec.encode(.namespace(state.config)))
        hasher.add(state.createdLSN.rawValue)
        for id in state.memories.keys.sorted() {
          guard let version = state.memories[id]!.version(at: point.lsn), Self.isVisible(version, at: point)
          else { continue }
          hasher.add(RecordCodec.encode(.memory(version.value!)))
          hasher.add(version.lsn.rawValue)
        }
        for id in state.nodes.keys.sorted() {
          guard let version = state.nodes[id]!.version(at: point.lsn) else { continue }
          hasher.add(RecordCodec.encode(.node(version.value!)))
          hasher.add(version.lsn.rawValue)
        }
        for id in state.edges.keys.sorted() {
          guard let version = state.edges[id]!.version(at: point.lsn) else { continue }
          hasher.add(RecordCodec.encode(.edge(version.value!)))
          hasher.add(version.lsn.rawValue)
        }
      }
      return StateDigest(lsn: point.lsn, value: hasher.finish())
    }
  }
}

struct StateHasher {
  private var fnv: UInt64 = 0xcbf2_9ce4_8422_2325
  private var crc: UInt32 = 0

  mutating func add(_ bytes: [UInt8]) {
    add(UInt64(bytes.count))
    for byte in bytes {
      fnv ^= UInt64(byte)
      fnv = fnv &* 0x100_0000_01b3
    }
    crc = CRC32C.checksum(bytes, extending: crc)
  }

  mutating func add(_ value: UInt64) {
    withUnsafeBytes(of: value.littleEndian) { raw in
      for byte in raw {
        fnv ^= UInt64(byte)
        fnv = fnv &* 0x100_0000_01b3
      }
      crc = CRC32C.checksum(raw, extending: crc)
    }
  }

  func finish() -> String {
    String(fnv, radix: 16).leftPadded(to: 16) + String(crc, radix: 16).leftPadded(to: 8)
  }
}

extension MemoryStore {
  // MARK: for the write path

  /// The newest config of a namespace that is not deleted (including records not yet published).
  public func currentNamespace(_ name: String) -> NamespaceConfig? {
    lock.withReadLock {
      guard let state = namespaces[name]?.last, state.deletedLSN == nil else { return nil }
      return state.config
    }
  }

  /// The newest value of a key and the LSN of its version (nil value: deleted; nil result: never written
  /// or pruned), including records not yet published.
  public func currentValue(_ target: TargetType, id: String, in name: String) -> (
    value: RecordValue?, version: LSN
  )? {
    lock.withReadLock {
      guard let state = namespaces[name]?.last, state.deletedLSN == nil else { return nil }
      switch target {
      case .memory:
        return state.memories[id]?.latest.map { ($0.value.map(RecordValue.memory), $0.lsn) }
      case .node:
        return state.nodes[id]?.latest.map { ($0.value.map(RecordValue.node), $0.lsn) }
      case .edge:
        return state.edges[id]?.latest.map { ($0.value.map(RecordValue.edge), $0.lsn) }
      case .namespace:
        return (.namespace(state.config), state.createdLSN)
      }
    }
  }

  /// Memories whose expiry time has passed by `nowMicros` in their newest version (for the reaper
  /// that deletes them through the log), at most `limit`.
  public func expiredMemoryIDs(nowMicros: Int64, limit: Int) -> [(namespace: String, id: String)] {
    lock.withReadLock {
      var found: [(String, String)] = []
      for name in namespaces.keys.sorted() {
        guard let state = namespaces[name]?.last, state.deletedLSN == nil else { continue }
        for (id, chain) in state.memories {
          if let expires = chain.latest?.value?.expiresAtMicros, expires <= nowMicros {
            found.append((name, id))
            if found.count >= limit { return found }
          }
        }
      }
      return found
    }
  }
}
