// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI, ext4 and
// the MemWAL log format (docs/wal-format.md).
#ifndef MEMWAL_CRC32C_H
#define MEMWAL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Extends `crc` (a finished CRC-32C value; 0 to start) over `length` bytes at `data`,
/// with zlib's calling convention: crc32c(crc32c(0, a), b) == crc32c(0, a ++ b).
/// Uses the CPU's CRC32 instruction when it has one.
uint32_t memwal_crc32c(uint32_t crc, const void *data, size_t length);

/// The same function computed with the portable table only (for tests and comparison).
uint32_t memwal_crc32c_portable(uint32_t crc, const void *data, size_t length);

/// 1 when `memwal_crc32c` uses a hardware instruction on this CPU, 0 otherwise.
int memwal_crc32c_is_hardware_accelerated(void);

#ifdef __cplusplus
}
#endif

#endif
