import Glibc

/// Large buffers straight from `mmap`, with transparent huge pages requested (`MADV_HUGEPAGE`).
///
/// The node blocks of a large index are read at random: with 4 KiB pages nearly every vector read
/// is also a TLB miss, and on this KVM guest first-touch page faults dominated snapshot loading
/// (perf: `clear_page_erms`). 2 MiB pages cut both. Small buffers use the ordinary allocator.
enum PageMemory {
  static let hugePageThreshold = 4 << 20

  static func allocate(byteCount: Int) -> UnsafeMutableRawPointer {
    precondition(byteCount > 0)
    guard byteCount >= hugePageThreshold else { return .allocate(byteCount: byteCount, alignment: 64) }
    let address = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    guard let address, address != MAP_FAILED else {
      preconditionFailure("mmap of \(byteCount) bytes failed: errno \(errno)")
    }
    _ = madvise(address, byteCount, MADV_HUGEPAGE)
    return address
  }

  static func deallocate(_ pointer: UnsafeMutableRawPointer, byteCount: Int) {
    guard byteCount >= hugePageThreshold else {
      pointer.deallocate()
      return
    }
    let result = munmap(pointer, byteCount)
    precondition(result == 0, "munmap failed: errno \(errno)")
  }
}
