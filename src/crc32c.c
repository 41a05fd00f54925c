/* crc32c.c — CRC32C for every checksum in the pool (superblocks, summaries,
 * tree nodes, data blocks).  Uses the SSE4.2 crc32 instruction and a
 * table-driven fallback when the CPU lacks it.
 *
 * The instruction has a latency of three cycles and a throughput of one per
 * cycle, so one dependent chain runs at a third of its speed: long buffers
 * are cut into three streams computed at once and joined by shifting the
 * CRCs of the first streams over the bytes that follow them (a linear map,
 * applied with four 256-entry tables per stream length: Mark Adler's
 * method).  Every data block read is verified, so this is on the read path.
 * The tables are built by a constructor, before any thread can race on them. */
#include <nmmintrin.h>
#include <string.h>

#include "crc32c.h"

#define POLY 0x82F63B78u

static uint32_t table[256];
static int have_sse42 = -1;

/* Streams of LONG bytes for large buffers, SHORT for the rest (a 4 KiB
 * block is five rounds of three SHORT streams and a tail). */
#define LONG  8192u
#define SHORT 256u
static uint32_t shift_long[4][256], shift_short[4][256];

/* GF(2) matrix (32 columns) times vector. */
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
	uint32_t sum = 0;
	for (; vec; vec >>= 1, mat++)
		if (vec & 1)
			sum ^= *mat;
	return sum;
}

static void gf2_square(uint32_t *sq, const uint32_t *mat)
{
	for (int n = 0; n < 32; n++)
		sq[n] = gf2_times(mat, mat[n]);
}

/* Tables that advance a CRC register over len zero bytes. */
static void shift_tables(uint32_t t[4][256], size_t len)
{
	uint32_t odd[32], even[32], *op = odd;

	odd[0] = POLY; /* one zero bit */
	for (int n = 1; n < 32; n++)
		odd[n] = 1u << (n - 1);
	gf2_square(even, odd); /* two */
	gf2_square(odd, even); /* four */
	/* len bytes = len * 8 bits: square up from four bits, once per bit
	 * of len beyond the first (len is a power of two here). */
	for (size_t l = len;;) {
		gf2_square(even, odd); /* 8, 32, ... bits */
		op = even;
		if ((l >>= 1) == 0)
			break;
		gf2_square(odd, even);
		op = odd;
		if ((l >>= 1) == 0)
			break;
	}
	for (uint32_t n = 0; n < 256; n++) {
		t[0][n] = gf2_times(op, n);
		t[1][n] = gf2_times(op, n << 8);
		t[2][n] = gf2_times(op, n << 16);
		t[3][n] = gf2_times(op, n << 24);
	}
}

static uint32_t shift(uint32_t t[4][256], uint32_t crc)
{
	return t[0][crc & 0xff] ^ t[1][(crc >> 8) & 0xff] ^ t[2][(crc >> 16) & 0xff] ^
	       t[3][crc >> 24];
}

__attribute__((constructor)) static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
		table[i] = c;
	}
	shift_tables(shift_long, LONG);
	shift_tables(shift_short, SHORT);
	__builtin_cpu_init();
	__atomic_store_n(&have_sse42, __builtin_cpu_supports("sse4.2") ? 1 : 0, __ATOMIC_RELEASE);
}

static inline uint64_t load64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* Three streams of n bytes each from p; returns the CRC register after
 * all 3n bytes. */
__attribute__((target("sse4.2"))) static inline uint64_t three(uint64_t c0, const unsigned char *p,
                                                               size_t n, uint32_t t[4][256])
{
	uint64_t c1 = 0, c2 = 0;
	for (const unsigned char *end = p + n; p < end; p += 8) {
		c0 = _mm_crc32_u64(c0, load64(p));
		c1 = _mm_crc32_u64(c1, load64(p + n));
		c2 = _mm_crc32_u64(c2, load64(p + 2 * n));
	}
	c0 = shift(t, (uint32_t)c0) ^ c1;
	return shift(t, (uint32_t)c0) ^ c2;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const unsigned char *p,
                                                            size_t len)
{
	uint64_t c = crc;
	for (; len >= 3 * LONG; p += 3 * LONG, len -= 3 * LONG)
		c = three(c, p, LONG, shift_long);
	for (; len >= 3 * SHORT; p += 3 * SHORT, len -= 3 * SHORT)
		c = three(c, p, SHORT, shift_short);
	for (; len >= 8; p += 8, len -= 8)
		c = _mm_crc32_u64(c, load64(p));
	uint32_t c32 = (uint32_t)c;
	while (len--)
		c32 = _mm_crc32_u8(c32, *p++);
	return c32;
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	if (__builtin_expect(__atomic_load_n(&have_sse42, __ATOMIC_ACQUIRE) < 0, 0))
		crc32c_init();
	crc = ~crc;
	if (have_sse42)
		crc = crc32c_hw(crc, p, len);
	else
		while (len--)
			crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}
