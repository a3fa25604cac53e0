import MemWALCore

extension WriteAheadLog {
  /// Up to `limit` records from `lsn` on, no further than the last written: from the in-memory tail
  /// when it still holds them, else from the segment files.
  public func records(from lsn: LSN, limit: Int) throws -> [WALRecord] {
    if let cached = tail.records(from: lsn, limit: limit) { return cached }
    var found: [WALRecord] = []
    try readRecords(from: lsn) { record in
      found.append(record)
      return found.count < limit
    }
    return found
  }

  /// Calls `body` with each record from `lsn` on, in order, up to `through` (default: the last
  /// written LSN). `body` returns false to stop. Reads the segment files, so records retired by
  /// retention are gone.
  public func readRecords(from lsn: LSN, through: LSN? = nil, _ body: (WALRecord) throws -> Bool) throws {
    let limit = through ?? positions.written.value
    guard lsn <= limit else { return }
    let scanner = LogScanner(walDirectory: layout.walDirectory, fileSystem: fileSystem)
    try withoutActuallyEscaping(body) { body in
      _ = try scanner.scan(expectedClusterID: clusterID, visitFrom: lsn) { frame, _, _ in
        guard frame.record.lsn <= limit else { return false }
        return try body(frame.record) && frame.record.lsn < limit
      }
    }
  }

  /// Writes `payload` (the caller's snapshot of its stores as of `lsn`) as a checkpoint, atomically
  /// (temporary file → fsync → rename → fsync directory), then deletes all but the newest two.
  /// `lsn` must be durable in the log and not older than the newest checkpoint.
  @discardableResult
  public func writeCheckpoint(at lsn: LSN, payload: [UInt8]) throws -> String {
    try maintenanceLock.withLock {
      if let failure = stoppedBy { throw failure }
      let flushed = positions.flushed.value
      guard lsn <= flushed else {
        throw WALError.invalidCheckpoint(
          "LSN \(lsn) is not durable yet (the log is flushed through \(flushed))")
      }
      if let newest = keptCheckpoints.first, lsn < newest {
        throw WALError.invalidCheckpoint("LSN \(lsn) is older than the newest checkpoint at \(newest)")
      }
      var record: WALRecord?
      if lsn > .zero {
        try readRecords(from: lsn, through: lsn) { found in
          record = found
          return false
        }
        guard record != nil else { throw WALError.invalidCheckpoint("LSN \(lsn) is no longer in the log") }
      }
      let history = epochHistory.filter { $0.firstLSN <= max(lsn, LSN(1)) }
      let checkpoint = Checkpoint(
        lsn: lsn, epoch: record?.epoch ?? history.last?.epoch ?? options.initialEpoch,
        timestampMicros: record?.timestampMicros ?? 0, lastTransactionID: record?.transactionID ?? .none,
        epochHistory: history, payload: payload)
      let store = CheckpointStore(directory: layout.checkpointDirectory, fileSystem: fileSystem)
      let name = try store.write(checkpoint, clusterID: clusterID)
      if keptCheckpoints.first != lsn { keptCheckpoints.insert(lsn, at: 0) }
      var removed = false
      while keptCheckpoints.count > 2 {
        let oldest = keptCheckpoints.removeLast()
        try fileSystem.removeFile(joinPath(layout.checkpointDirectory, LogFileNames.checkpoint(lsn: oldest)))
        removed = true
      }
      if removed { try fileSystem.syncDirectory(layout.checkpointDirectory) }
      logger.info(
        "checkpoint written", metadata: ["file": "\(name)", "lsn": "\(lsn)", "bytes": "\(payload.count)"])
      return name
    }
  }

  /// Deletes (or, with `archiveRetiredSegments`, moves to `archive/`) every segment whose records
  /// all lie below `lsn`, never going past what replay from the oldest kept checkpoint needs, and
  /// never the segment being written. Returns the names retired.
  @discardableResult
  public func retireSegments(below lsn: LSN) throws -> [String] {
    try maintenanceLock.withLock {
      guard let oldestCheckpoint = keptCheckpoints.last else { return [] }
      let limit = min(lsn, oldestCheckpoint.next)
      let current = lock.withLock { segments }
      var retired: [String] = []
      for index in 0..<max(0, current.count - 1) where current[index + 1].firstLSN <= limit {
        guard retired.count == index else { break }
        retired.append(current[index].name)
      }
      guard !retired.isEmpty else { return [] }
      if options.archiveRetiredSegments { try fileSystem.createDirectory(layout.archiveDirectory) }
      for name in retired {
        let path = joinPath(layout.walDirectory, name)
        if options.archiveRetiredSegments {
          try fileSystem.rename(path, to: joinPath(layout.archiveDirectory, name))
        } else {
          try fileSystem.removeFile(path)
        }
      }
      if options.archiveRetiredSegments { try fileSystem.syncDirectory(layout.archiveDirectory) }
      try fileSystem.syncDirectory(layout.walDirectory)
      lock.withLock { segments.removeFirst(retired.count) }
      logger.info("retired segments", metadata: ["count": "\(retired.count)", "below": "\(limit)"])
      return retired
    }
  }
}
