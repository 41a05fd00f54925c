/* crc32c.h — CRC32C (Castagnoli), SSE4.2 when the CPU has it. */
#ifndef COWBD_CRC32C_H
#define COWBD_CRC32C_H
#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: crc32c(0, p, n) is the CRC of p[0..n).  Thread-safe, never blocks. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

#endif
