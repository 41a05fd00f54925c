/* fuzz_cpage.c — libFuzzer target for the space map's decoders (cpage.c):
 * count pages, narrow and wide, and segment tables.
 *
 * Input: byte 0 holds flags.  Bits 0-1 pick the starting blocks: 0 a valid
 * narrow page (with overflow entries), 1 a valid wide page (two blocks),
 * 2 a valid segment table, 3 the rest of the input itself (up to two
 * blocks, zero-filled).  Bit 2: decode the page as wide (two blocks) even
 * when the start is narrow, and vice versa.  Bit 3: reseal (recompute
 * self and CRC of both blocks after patching) so the checks behind the
 * CRC are reached.  For starts 0-2 the rest of the input is patches of 3
 * bytes: offset (2 bytes LE, modulo the two blocks) and a byte to XOR in.
 *
 * Checked: a decoder answers 0 or -EILSEQ with a reason; what decodes is
 * canonical: re-encoding the decoded counts (or entries) and sealing at
 * the same addresses gives back the same bytes, the live count agrees
 * with the counts, and the table's entries are in the pool.
 */
#undef NDEBUG
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cpage.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define SEG   5u
#define ADDR0 9000u
#define ADDR1 9001u
#define NSEGS 300u

static struct fmt_cpage narrow[2], wide[2];
static struct fmt_stab table;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static uint32_t c[FMT_SEG_BLOCKS];
	struct cpage_ent e[FMT_STAB_ENTRIES] = {0};

	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i += 3)
		c[i] = i % 5 ? i : 0x10000u + i * 1000u;
	assert(cpage_encode(SEG, c, narrow) == 1);
	cpage_seal(&narrow[0], ADDR0);
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		c[i] = i % 2 ? 0xFFFFu + i : i;
	assert(cpage_encode(SEG, c, wide) == 2);
	cpage_seal(&wide[0], ADDR0);
	cpage_seal(&wide[1], ADDR1);
	e[0] = (struct cpage_ent){.page0 = 2048, .live = 3};
	e[2] = (struct cpage_ent){.page0 = 4000, .page1 = 4001, .live = FMT_SEG_BLOCKS};
	cpage_stab_encode(&table, 10, 3, e);
	cpage_seal(&table, ADDR0);
	return 0;
}

static void check_page(const struct fmt_cpage *b, bool two)
{
	static uint32_t counts[FMT_SEG_BLOCKS];
	static struct fmt_cpage again[2];
	const char *why = NULL;
	uint32_t live = 0, n = 0;
	int err = cpage_decode(SEG, &b[0], ADDR0, two ? &b[1] : NULL, two ? ADDR1 : 0, counts,
	                       &live, &why);

	if (err) {
		assert(err == -EILSEQ && why);
		return;
	}
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		n += counts[i] > 0;
	assert(n == live && live > 0);
	assert(cpage_encode(SEG, counts, again) == (two ? 2u : 1u));
	cpage_seal(&again[0], ADDR0);
	assert(!memcmp(&again[0], &b[0], FMT_BLOCK));
	if (two) {
		cpage_seal(&again[1], ADDR1);
		assert(!memcmp(&again[1], &b[1], FMT_BLOCK));
	}
}

static void check_table(const struct fmt_stab *t)
{
	static struct cpage_ent e[FMT_STAB_ENTRIES];
	static struct fmt_stab again;
	const char *why = NULL;
	uint64_t first = 0;
	unsigned n = 0;
	int err = cpage_stab_decode(t, ADDR0, NSEGS, &first, &n, e, &why);

	if (err) {
		assert(err == -EILSEQ && why);
		return;
	}
	assert(n >= 1 && n <= FMT_STAB_ENTRIES && first + n <= NSEGS);
	for (unsigned i = 0; i < n; i++)
		assert(e[i].page0 < NSEGS * FMT_SEG_BLOCKS && e[i].page1 < NSEGS * FMT_SEG_BLOCKS &&
		       e[i].live <= FMT_SEG_BLOCKS && !e[i].page0 == !e[i].live);
	cpage_stab_encode(&again, first, n, e);
	cpage_seal(&again, ADDR0);
	assert(!memcmp(&again, t, FMT_BLOCK));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fmt_cpage b[2];
	uint8_t *raw = (uint8_t *)b;
	unsigned start, flags;

	if (!size)
		return 0;
	flags = data[0];
	start = flags & 3;
	data++, size--;
	memset(b, 0, sizeof(b));
	if (start == 0)
		b[0] = narrow[0];
	else if (start == 1)
		memcpy(b, wide, sizeof(b));
	else if (start == 2)
		memcpy(&b[0], &table, FMT_BLOCK);
	else
		memcpy(raw, data, size < sizeof(b) ? size : sizeof(b));
	for (size_t i = 0; start != 3 && i + 3 <= size; i += 3)
		raw[(data[i] | data[i + 1] << 8) % sizeof(b)] ^= data[i + 2];
	if (flags & 8) {
		cpage_seal(&b[0], ADDR0);
		cpage_seal(&b[1], ADDR1);
	}
	if (start == 2 || (start == 3 && (flags & 4))) {
		check_table((const struct fmt_stab *)&b[0]);
		if (start == 2)
			return 0;
	}
	check_page(b, (start == 1) != !!(flags & 4));
	return 0;
}
