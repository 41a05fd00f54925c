/* crc32c.c — CRC32C for every checksum in the pool (superblocks, summaries,
 * tree nodes, data blocks).  Uses the SSE4.2 crc32 instruction, 8 bytes at a
 * time, and a table-driven fallback when the CPU lacks it. */
#include <nmmintrin.h>
#include <string.h>

#include "crc32c.h"

static uint32_t table[256];
static int have_sse42 = -1;

static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		table[i] = c;
	}
	__builtin_cpu_init();
	have_sse42 = __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const unsigned char *p,
                                                            size_t len)
{
	uint64_t c = crc;
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = _mm_crc32_u64(c, v);
		p += 8;
		len -= 8;
	}
	uint32_t c32 = (uint32_t)c;
	while (len--)
		c32 = _mm_crc32_u8(c32, *p++);
	return c32;
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	if (__builtin_expect(have_sse42 < 0, 0))
		crc32c_init();
	crc = ~crc;
	if (have_sse42)
		crc = crc32c_hw(crc, p, len);
	else
		while (len--)
			crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}
