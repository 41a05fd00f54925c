/* bytes.h — big-endian field readers for tests and fuzzers that check NBD
 * wire bytes (test_proto, fuzz_proto).  Header-only: static inline, so a
 * test includes it without linking anything.  memcpy, never an unaligned
 * pointer cast: the bytes may sit at any offset of a receive buffer.
 */
#ifndef COWBD_TESTS_BYTES_H
#define COWBD_TESTS_BYTES_H
#include <endian.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t bytes_be16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return be16toh(v);
}

static inline uint32_t bytes_be32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return be32toh(v);
}

static inline uint64_t bytes_be64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return be64toh(v);
}

#endif
