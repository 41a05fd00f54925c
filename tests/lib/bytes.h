/* bytes.h — big-endian field readers for tests and fuzzers that check NBD
 * wire bytes (test_proto, fuzz_proto), and a builder for tests that write
 * them (test_proto, test_tree_away).  Header-only: static inline, so a
 * test includes it without linking anything.  memcpy, never an unaligned
 * pointer cast: the bytes may sit at any offset of a receive buffer.
 */
#ifndef COWBD_TESTS_BYTES_H
#define COWBD_TESTS_BYTES_H
#include <endian.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Bytes being built: fields appended big-endian. */
struct bytes {
	uint8_t d[70000];
	size_t n;
};

static inline void bytes_put(struct bytes *b, const void *p, size_t n)
{
	if (b->n + n > sizeof(b->d)) {
		fprintf(stderr, "bytes: a message over %zu bytes\n", sizeof(b->d));
		abort();
	}
	memcpy(b->d + b->n, p, n);
	b->n += n;
}

static inline void bytes_put16(struct bytes *b, uint16_t v)
{
	v = htobe16(v);
	bytes_put(b, &v, 2);
}

static inline void bytes_put32(struct bytes *b, uint32_t v)
{
	v = htobe32(v);
	bytes_put(b, &v, 4);
}

static inline void bytes_put64(struct bytes *b, uint64_t v)
{
	v = htobe64(v);
	bytes_put(b, &v, 8);
}

#endif
