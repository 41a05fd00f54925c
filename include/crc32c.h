/* crc32c.h — CRC32C (Castagnoli), with the fastest instructions the CPU has. */
#ifndef COWBD_CRC32C_H
#define COWBD_CRC32C_H
#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: crc32c(0, p, n) is the CRC of p[0..n).  Thread-safe, never blocks. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* The implementation in use: "fold" (AVX-512 VPCLMULQDQ), "sse4.2" or
 * "table"; the best the CPU has is chosen at start-up. */
const char *crc32c_impl(void);
/* For tests and benchmarks: switch to implementation name.  0, -ENOTSUP
 * (this CPU lacks it) or -EINVAL (no such name).  Not thread-safe against
 * concurrent crc32c() calls. */
int crc32c_use(const char *name);

#endif
