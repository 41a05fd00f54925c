/* crc32c.c — CRC32C for every checksum in the pool (superblocks, summaries,
 * tree nodes, data blocks).  Three implementations, the best the CPU has
 * chosen once by a constructor: carry-less multiplication folding with
 * AVX-512 VPCLMULQDQ, the SSE4.2 crc32 instruction in three streams, and a
 * table for CPUs with neither.
 *
 * The instruction has a latency of three cycles and a throughput of one per
 * cycle, so one dependent chain runs at a third of its speed: long buffers
 * are cut into three streams computed at once and joined by shifting the
 * CRCs of the first streams over the bytes that follow them (a linear map,
 * applied with four 256-entry tables per stream length: Mark Adler's
 * method).  Every data block read is verified, so this is on the read path.
 * The tables are built by a constructor, before any thread can race on them.
 *
 * Folding (Gopal et al., "Fast CRC computation for generic polynomials
 * using PCLMULQDQ", Intel 2009): the CRC of a message depends linearly on
 * each 128-bit piece of it, so a piece can be carried forward over D bits
 * by two carry-less products with x^(D+32) and x^(D-32) mod P (bit-reflected,
 * as the CRC is) and XORed into the piece D bits later, without changing
 * the CRC.  Four 512-bit accumulators take 256 bytes a round; at the end
 * everything is folded into the last 16 bytes, whose CRC the crc32
 * instruction computes.  The constants are computed at start-up from P. */
#include <errno.h>
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "crc32c.h"

#define POLY 0x82F63B78u

static uint32_t table[256];
/* The implementation in use (enum impl; -1 before the constructor ran). */
enum impl { IMPL_TABLE, IMPL_SSE42, IMPL_FOLD };
static int impl = -1;
static bool have_sse42, have_fold;

/* Folding constants: {x^(D+32), x^(D-32)} mod P, reflected, per distance. */
struct fold_k {
	uint64_t lo, hi;
};
static struct fold_k k128, k256, k384, k512, k2048;

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

/* x^n mod P (P = 0x1EDC6F41 with its x^32 term), bit-reflected and shifted
 * left by one: the form a carry-less product of reflected values needs. */
static uint64_t xpow_reflected(unsigned n)
{
	uint64_t r = 1;
	while (n--) {
		r <<= 1;
		if (r & (1ull << 32))
			r ^= 0x11EDC6F41ull;
	}
	uint64_t rev = 0;
	for (int i = 0; i < 32; i++)
		rev |= ((r >> i) & 1) << (31 - i);
	return rev << 1;
}

static struct fold_k fold_constants(unsigned bits)
{
	return (struct fold_k){.lo = xpow_reflected(bits + 32), .hi = xpow_reflected(bits - 32)};
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
	k128 = fold_constants(128);
	k256 = fold_constants(256);
	k384 = fold_constants(384);
	k512 = fold_constants(512);
	k2048 = fold_constants(2048);
	__builtin_cpu_init();
	have_sse42 = __builtin_cpu_supports("sse4.2");
	have_fold = have_sse42 && __builtin_cpu_supports("pclmul") &&
	            __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
	            __builtin_cpu_supports("vpclmulqdq");
	__atomic_store_n(&impl,
	                 have_fold    ? IMPL_FOLD
	                 : have_sse42 ? IMPL_SSE42
	                              : IMPL_TABLE,
	                 __ATOMIC_RELEASE);
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

#define FOLD_TARGET "sse4.2,pclmul,avx512f,avx512vl,vpclmulqdq"

/* Carry x (four 128-bit pieces) forward over k's distance onto d. */
__attribute__((target(FOLD_TARGET))) static inline __m512i fold512(__m512i x, __m512i k, __m512i d)
{
	return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00),
	                                 _mm512_clmulepi64_epi128(x, k, 0x11), d, 0x96);
}

__attribute__((target(FOLD_TARGET))) static inline __m128i fold128(__m128i x, struct fold_k k,
                                                                   __m128i d)
{
	__m128i kk = _mm_set_epi64x((long long)k.hi, (long long)k.lo);
	return _mm_xor_si128(
	    _mm_xor_si128(_mm_clmulepi64_si128(x, kk, 0x00), _mm_clmulepi64_si128(x, kk, 0x11)), d);
}

__attribute__((target(FOLD_TARGET))) static inline __m512i k512x4(struct fold_k k)
{
	return _mm512_set_epi64((long long)k.hi, (long long)k.lo, (long long)k.hi, (long long)k.lo,
	                        (long long)k.hi, (long long)k.lo, (long long)k.hi, (long long)k.lo);
}

/* The register after len >= 256 bytes: whole 64-byte blocks folded, the
 * rest by the crc32 instruction. */
__attribute__((target(FOLD_TARGET))) static uint32_t crc32c_fold(uint32_t crc,
                                                                 const unsigned char *p, size_t len)
{
	__m512i x0 = _mm512_loadu_si512(p), x1 = _mm512_loadu_si512(p + 64);
	__m512i x2 = _mm512_loadu_si512(p + 128), x3 = _mm512_loadu_si512(p + 192);
	/* The register enters as the first 32 bits of the message. */
	x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)crc)));
	p += 256;
	len -= 256;
	__m512i k = k512x4(k2048);
	for (; len >= 256; p += 256, len -= 256) {
		x0 = fold512(x0, k, _mm512_loadu_si512(p));
		x1 = fold512(x1, k, _mm512_loadu_si512(p + 64));
		x2 = fold512(x2, k, _mm512_loadu_si512(p + 128));
		x3 = fold512(x3, k, _mm512_loadu_si512(p + 192));
	}
	k = k512x4(k512);
	x1 = fold512(x0, k, x1);
	x2 = fold512(x1, k, x2);
	x3 = fold512(x2, k, x3);
	for (; len >= 64; p += 64, len -= 64)
		x3 = fold512(x3, k, _mm512_loadu_si512(p));
	/* The four pieces of x3 onto the last one. */
	__m128i v = _mm512_extracti32x4_epi32(x3, 3);
	v = fold128(_mm512_extracti32x4_epi32(x3, 2), k128, v);
	v = fold128(_mm512_extracti32x4_epi32(x3, 1), k256, v);
	v = fold128(_mm512_castsi512_si128(x3), k384, v);
	uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(v));
	c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(v, 1));
	/* Hand back clean upper halves of the vector registers.  The compiler
	 * adds no VZEROUPPER here (the tail call below leaves for code built
	 * without AVX), and dirty upper state slows every SSE instruction
	 * after it, in memcpy and in our own code alike (a 1 MiB write spent
	 * 6% of cowbd's CPU on the first SSE load after each block's CRC). */
	_mm256_zeroupper();
	return crc32c_hw((uint32_t)c, p, len);
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	if (__builtin_expect(__atomic_load_n(&impl, __ATOMIC_ACQUIRE) < 0, 0))
		crc32c_init();
	crc = ~crc;
	if (impl == IMPL_FOLD && len >= 256)
		crc = crc32c_fold(crc, p, len);
	else if (impl != IMPL_TABLE)
		crc = crc32c_hw(crc, p, len);
	else
		while (len--)
			crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

int crc32c_use(const char *name)
{
	if (__builtin_expect(__atomic_load_n(&impl, __ATOMIC_ACQUIRE) < 0, 0))
		crc32c_init();
	if (!strcmp(name, "table"))
		impl = IMPL_TABLE;
	else if (!strcmp(name, "sse4.2") && have_sse42)
		impl = IMPL_SSE42;
	else if (!strcmp(name, "fold") && have_fold)
		impl = IMPL_FOLD;
	else
		return strcmp(name, "table") && strcmp(name, "sse4.2") && strcmp(name, "fold")
		           ? -EINVAL
		           : -ENOTSUP;
	return 0;
}

const char *crc32c_impl(void)
{
	static const char *const names[] = {"table", "sse4.2", "fold"};
	if (__builtin_expect(__atomic_load_n(&impl, __ATOMIC_ACQUIRE) < 0, 0))
		crc32c_init();
	return names[impl];
}
