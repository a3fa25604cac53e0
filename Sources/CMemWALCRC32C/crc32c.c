// CRC-32C for MemWAL. Hardware path: SSE4.2 `crc32` on x86-64, the ARMv8 CRC extension on
// AArch64, both chosen at run time. Fallback: slicing-by-8 tables built once.
#include "memwal_crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <arm_acle.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void build_tables(void) {
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
    table[0][n] = c;
  }
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = table[0][n];
    for (int s = 1; s < 8; s++) {
      c = table[0][c & 0xFF] ^ (c >> 8);
      table[s][n] = c;
    }
  }
}

uint32_t memwal_crc32c_portable(uint32_t crc, const void *data, size_t length) {
  pthread_once(&table_once, build_tables);
  const uint8_t *p = (const uint8_t *)data;
  uint32_t c = ~crc;
  while (length > 0 && ((uintptr_t)p & 7) != 0) {
    c = table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    length--;
  }
  while (length >= 8) {
    uint64_t word;
    memcpy(&word, p, 8);
    word ^= c;  // little-endian hosts only; both supported hardware targets are
    c = table[7][word & 0xFF] ^ table[6][(word >> 8) & 0xFF] ^ table[5][(word >> 16) & 0xFF] ^
        table[4][(word >> 24) & 0xFF] ^ table[3][(word >> 32) & 0xFF] ^
        table[2][(word >> 40) & 0xFF] ^ table[1][(word >> 48) & 0xFF] ^ table[0][word >> 56];
    p += 8;
    length -= 8;
  }
  while (length-- > 0) c = table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
  return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hardware(uint32_t crc, const void *data,
                                                                  size_t length) {
  const uint8_t *p = (const uint8_t *)data;
  uint64_t c = (uint32_t)~crc;
  while (length > 0 && ((uintptr_t)p & 7) != 0) {
    c = _mm_crc32_u8((uint32_t)c, *p++);
    length--;
  }
  while (length >= 8) {
    uint64_t word;
    memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
    p += 8;
    length -= 8;
  }
  while (length-- > 0) c = _mm_crc32_u8((uint32_t)c, *p++);
  return ~(uint32_t)c;
}
static int hardware_available(void) { return __builtin_cpu_supports("sse4.2"); }
#elif defined(__aarch64__) && defined(__linux__)
__attribute__((target("+crc"))) static uint32_t crc32c_hardware(uint32_t crc, const void *data,
                                                                size_t length) {
  const uint8_t *p = (const uint8_t *)data;
  uint32_t c = ~crc;
  while (length > 0 && ((uintptr_t)p & 7) != 0) {
    c = __crc32cb(c, *p++);
    length--;
  }
  while (length >= 8) {
    uint64_t word;
    memcpy(&word, p, 8);
    c = __crc32cd(c, word);
    p += 8;
    length -= 8;
  }
  while (length-- > 0) c = __crc32cb(c, *p++);
  return ~c;
}
static int hardware_available(void) { return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0; }
#else
static uint32_t crc32c_hardware(uint32_t crc, const void *data, size_t length) {
  return memwal_crc32c_portable(crc, data, length);
}
static int hardware_available(void) { return 0; }
#endif

static int hardware_state = -1;  // -1 unknown, 0 no, 1 yes; a benign race: every writer stores the same value

int memwal_crc32c_is_hardware_accelerated(void) {
  int state = __atomic_load_n(&hardware_state, __ATOMIC_RELAXED);
  if (state < 0) {
    state = hardware_available() ? 1 : 0;
    __atomic_store_n(&hardware_state, state, __ATOMIC_RELAXED);
  }
  return state;
}

uint32_t memwal_crc32c(uint32_t crc, const void *data, size_t length) {
  if (memwal_crc32c_is_hardware_accelerated()) return crc32c_hardware(crc, data, length);
  return memwal_crc32c_portable(crc, data, length);
}
