/* test_cpage.c — the space map's codec (cpage.c) on its own: count pages
 * round-trip exactly at every count (0xFFFE, 0xFFFF, 0x10000, 2^32-1),
 * narrow up to 248 overflowing blocks and wide from 249; each validator
 * rule rejects a page damaged in just that way (the damage resealed, so
 * the rule and not the CRC catches it; each reason checked); segment
 * tables likewise, in their version 4 and version 5 forms; forwarding
 * blocks round-trip a segment's entries (two tags, a tag spanning blocks)
 * and each of their rules rejects the damage it is for.
 */
#undef NDEBUG
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpage.h"

#define SEG   7u
#define ADDR0 5000u
#define ADDR1 5001u
#define NSEGS 64u

static uint32_t counts[FMT_SEG_BLOCKS], back[FMT_SEG_BLOCKS];
static struct fmt_cpage img[2];

/* Encode counts as segment SEG, seal at ADDR0/ADDR1; returns the blocks. */
static unsigned encode(void)
{
	unsigned n = cpage_encode(SEG, counts, img);
	if (n >= 1)
		cpage_seal(&img[0], ADDR0);
	if (n == 2)
		cpage_seal(&img[1], ADDR1);
	return n;
}

static int decode(unsigned n, const char **why)
{
	uint32_t live = 0;
	*why = NULL;
	memset(back, 0xa5, sizeof(back));
	return cpage_decode(SEG, &img[0], ADDR0, n == 2 ? &img[1] : NULL, n == 2 ? ADDR1 : 0, back,
	                    &live, why);
}

static unsigned live_of(const uint32_t *c)
{
	unsigned n = 0;
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		n += c[i] > 0;
	return n;
}

/* Encode, decode, compare; returns the number of blocks. */
static unsigned roundtrip(void)
{
	const char *why;
	unsigned n = encode();
	assert_true(n == 1 || n == 2);
	assert_int_equal(img[0].live, live_of(counts));
	int err = decode(n, &why);
	if (err)
		fail_msg("decode: %s", why);
	assert_memory_equal(back, counts, sizeof(counts));
	return n;
}

static void test_roundtrip(void **state)
{
	memset(counts, 0, sizeof(counts));
	assert_int_equal(cpage_encode(SEG, counts, img), 0); /* no page */

	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		counts[i] = 1;
	assert_int_equal(roundtrip(), 1);
	assert_int_equal(img[0].enc, FMT_CPAGE_NARROW);
	assert_int_equal(img[0].nover, 0);

	srand(13);
	for (unsigned round = 0; round < 50; round++) {
		for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
			counts[i] = rand() % 3 ? 0 : (uint32_t)rand() % (round % 2 ? 5u : 0x20000u);
		roundtrip();
	}

	/* The edges of the narrow form, and the largest count. */
	memset(counts, 0, sizeof(counts));
	counts[0] = 0xFFFE;
	counts[1] = 0xFFFF;
	counts[2] = 0x10000;
	counts[500] = UINT32_MAX;
	counts[FMT_SEG_BLOCKS - 1] = 100001; /* a root shared by 10^5 snapshots */
	assert_int_equal(roundtrip(), 1);
	assert_int_equal(img[0].nover, 4);
	assert_int_equal(img[0].narrow.cnt[0], 0xFFFE);
	assert_int_equal(img[0].narrow.cnt[1], FMT_CPAGE_ESC);
}

/* 248 overflowing blocks fit one block; 249 take two. */
static void test_narrow_wide(void **state)
{
	memset(counts, 0, sizeof(counts));
	for (unsigned i = 0; i < FMT_CPAGE_OVER; i++)
		counts[i * 4] = 0xFFFF + i;
	counts[3] = 9;
	assert_int_equal(roundtrip(), 1);
	assert_int_equal(img[0].nover, FMT_CPAGE_OVER);

	counts[FMT_SEG_BLOCKS - 1] = UINT32_MAX; /* in part 1 */
	assert_int_equal(roundtrip(), 2);
	assert_int_equal(img[0].enc, FMT_CPAGE_WIDE);
	assert_int_equal(img[1].part, 1);
	assert_int_equal(img[1].live, img[0].live);
	counts[FMT_CPAGE_WIDE0 - 1] = 77; /* the last of part 0 */
	counts[FMT_CPAGE_WIDE0] = 78;     /* the first of part 1 */
	assert_int_equal(roundtrip(), 2);
}

/* A narrow page with overflow entries at slots 10, 20, 30. */
static void narrow_sample(void)
{
	memset(counts, 0, sizeof(counts));
	for (unsigned i = 0; i < 100; i++)
		counts[i] = i % 7;
	counts[10] = 0xFFFF;
	counts[20] = 0x12345;
	counts[30] = UINT32_MAX;
	assert_int_equal(encode(), 1);
	assert_int_equal(img[0].nover, 3);
}

/* Damage img[part] by f, reseal unless told, expect the reason. */
static void expect_bad(unsigned n, unsigned part, void (*f)(struct fmt_cpage *), bool reseal,
                       const char *reason)
{
	const char *why;
	f(&img[part]);
	if (reseal)
		cpage_seal(&img[part], part ? ADDR1 : ADDR0);
	assert_int_equal(decode(n, &why), -EILSEQ);
	assert_non_null(why);
	assert_string_equal(why, reason);
	encode(); /* undamaged again */
	assert_int_equal(decode(n, &why), 0);
}

static void d_magic(struct fmt_cpage *p)
{
	p->magic ^= 1;
}
static void d_crc(struct fmt_cpage *p)
{
	p->narrow.cnt[50] ^= 0x100;
}
static void d_self(struct fmt_cpage *p)
{
	p->self++;
}
static void d_seg(struct fmt_cpage *p)
{
	p->seg = SEG + 1;
}
static void d_enc(struct fmt_cpage *p)
{
	p->enc = 3;
}
static void d_part(struct fmt_cpage *p)
{
	p->part = 1;
}
static void d_pad(struct fmt_cpage *p)
{
	p->pad2[31] = 1;
}
static void d_live0(struct fmt_cpage *p)
{
	p->live = 0;
}
static void d_live(struct fmt_cpage *p)
{
	p->live++;
}
static void d_live_big(struct fmt_cpage *p)
{
	p->live = FMT_SEG_BLOCKS + 1;
}
static void d_nover_big(struct fmt_cpage *p)
{
	p->nover = FMT_CPAGE_OVER + 1;
}
static void d_unsorted(struct fmt_cpage *p)
{
	struct fmt_cpage_over t = p->narrow.over[0];
	p->narrow.over[0] = p->narrow.over[1];
	p->narrow.over[1] = t;
}
static void d_duplicate(struct fmt_cpage *p)
{
	p->narrow.over[1].idx = p->narrow.over[0].idx;
}
static void d_idx_range(struct fmt_cpage *p)
{
	p->narrow.over[2].idx = FMT_SEG_BLOCKS;
}
static void d_over_pad(struct fmt_cpage *p)
{
	p->narrow.over[1].pad = 1;
}
static void d_small(struct fmt_cpage *p)
{
	p->narrow.over[1].count = 0xFFFE;
}
static void d_not_escaped(struct fmt_cpage *p)
{
	p->narrow.cnt[20] = 5;
}
/* Drops the entry for slot 30: its slot still says 0xFFFF. */
static void d_missing(struct fmt_cpage *p)
{
	p->nover = 2, p->narrow.over[2] = (struct fmt_cpage_over){0};
}
static void d_extra_esc(struct fmt_cpage *p)
{
	p->narrow.cnt[99] = FMT_CPAGE_ESC;
}
static void d_unused(struct fmt_cpage *p)
{
	p->narrow.over[FMT_CPAGE_OVER - 1].count = 1;
}
static void d_stale_entry(struct fmt_cpage *p)
{
	p->nover = 2;
} /* entry 2 left behind */

static void test_narrow_damage(void **state)
{
	narrow_sample();
	expect_bad(1, 0, d_magic, true, "not a count page (magic)");
	expect_bad(1, 0, d_crc, false, "count page checksum mismatch");
	expect_bad(1, 0, d_self, false, "count page checksum mismatch"); /* self under the CRC */
	{
		/* A whole block copied elsewhere: valid CRC, wrong address. */
		const char *why;
		uint32_t live;
		assert_int_equal(cpage_decode(SEG, &img[0], ADDR0 + 9, NULL, 0, back, &live, &why),
		                 -EILSEQ);
		assert_string_equal(why, "count page written for another address");
	}
	expect_bad(1, 0, d_seg, true, "count page of another segment");
	expect_bad(1, 0, d_enc, true, "count page of unknown encoding");
	expect_bad(1, 0, d_part, true, "count page part out of place");
	expect_bad(1, 0, d_pad, true, "count page header padding not zero");
	expect_bad(1, 0, d_live0, true, "count page live count out of range");
	expect_bad(1, 0, d_live_big, true, "count page live count out of range");
	expect_bad(1, 0, d_live, true, "count page live count disagrees with its counts");
	expect_bad(1, 0, d_nover_big, true, "count page overflow entries out of range");
	expect_bad(1, 0, d_unsorted, true, "count page overflow entries unsorted or duplicate");
	expect_bad(1, 0, d_duplicate, true, "count page overflow entries unsorted or duplicate");
	expect_bad(1, 0, d_idx_range, true, "count page overflow entry out of range");
	expect_bad(1, 0, d_over_pad, true, "count page overflow entry out of range");
	expect_bad(1, 0, d_small, true, "count page overflow entry holds a small count");
	expect_bad(1, 0, d_not_escaped, true, "count page overflow entry for a block not escaped");
	expect_bad(1, 0, d_missing, true, "count page escaped count without an overflow entry");
	expect_bad(1, 0, d_extra_esc, true, "count page escaped count without an overflow entry");
	expect_bad(1, 0, d_unused, true, "count page unused overflow entries not zero");
	/* Entry 2 beyond nover, slot 30 still escaped. */
	expect_bad(1, 0, d_stale_entry, true, "count page escaped count without an overflow entry");

	/* Read as a wide page: a second part it does not have. */
	const char *why;
	uint32_t live;
	img[1] = img[0];
	img[1].part = 1;
	cpage_seal(&img[1], ADDR1);
	assert_int_equal(cpage_decode(SEG, &img[0], ADDR0, &img[1], ADDR1, back, &live, &why),
	                 -EILSEQ);
	assert_string_equal(why, "narrow count page given a second part");
}

static void wide_sample(void)
{
	memset(counts, 0, sizeof(counts));
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		counts[i] = i % 3 ? 0x10000u + i : 0;
	assert_int_equal(encode(), 2);
}

static void d_tail(struct fmt_cpage *p)
{
	p->wide[FMT_CPAGE_WIDE0 - 1] = 1;
}
static void d_nover(struct fmt_cpage *p)
{
	p->nover = 1;
}
static void d_count(struct fmt_cpage *p)
{
	p->wide[0] = 1;
} /* 0 -> 1: one more live */
static void d_narrow(struct fmt_cpage *p)
{
	p->enc = FMT_CPAGE_NARROW;
}
static void d_part0(struct fmt_cpage *p)
{
	p->part = 0;
}
/* Part 0's overflowing counts made small: what is left fits narrow. */
static void d_small_wide(struct fmt_cpage *p)
{
	for (unsigned i = 0; i < FMT_CPAGE_WIDE0; i++)
		if (p->wide[i] >= FMT_CPAGE_ESC)
			p->wide[i] = 1;
}

static void test_wide_damage(void **state)
{
	const char *why;
	uint32_t live;

	wide_sample();
	expect_bad(2, 0, d_magic, true, "not a count page (magic)");
	expect_bad(2, 1, d_magic, true, "not a count page (magic)");
	expect_bad(2, 1, d_seg, true, "count page of another segment");
	expect_bad(2, 1, d_part0, true, "count page part out of place");
	expect_bad(2, 1, d_live, true, "wide count page parts disagree on live blocks");
	expect_bad(2, 0, d_live, true, "wide count page parts disagree on live blocks");
	expect_bad(2, 1, d_tail, true, "wide count page part 1 tail not zero");
	expect_bad(2, 1, d_nover, true, "wide count page parts disagree");
	expect_bad(2, 1, d_narrow, true, "wide count page parts disagree");
	expect_bad(2, 0, d_count, true, "count page live count disagrees with its counts");
	expect_bad(2, 0, d_small_wide, true, "wide count page that fits one block");
	/* Part 1 missing, or the parts swapped. */
	assert_int_equal(cpage_decode(SEG, &img[0], ADDR0, NULL, 0, back, &live, &why), -EILSEQ);
	assert_string_equal(why, "wide count page without its second part");
	assert_int_equal(cpage_decode(SEG, &img[1], ADDR1, &img[0], ADDR0, back, &live, &why),
	                 -EILSEQ);
	assert_string_equal(why, "count page part out of place");
}

/* ---- segment tables ---- */

static struct fmt_stab tab;
static struct cpage_ent ents[FMT_STAB_ENTRIES], got[FMT_STAB_ENTRIES];

static void table_sample(void)
{
	memset(ents, 0, sizeof(ents));
	ents[0] = (struct cpage_ent){.page0 = 2000, .live = 1};
	ents[3] = (struct cpage_ent){.page0 = 3000, .page1 = 3001, .live = FMT_SEG_BLOCKS};
	ents[9] = (struct cpage_ent){.page0 = NSEGS * FMT_SEG_BLOCKS - 1, .live = 17};
	cpage_stab_encode(&tab, 40, 10, ents);
	cpage_seal(&tab, ADDR0);
}

static int table_decode(const char **why)
{
	uint64_t first = 0;
	unsigned n = 0;
	int err = cpage_stab_decode(&tab, ADDR0, NSEGS, &first, &n, got, why);
	if (!err) {
		assert_int_equal(first, 40);
		assert_int_equal(n, 10);
	}
	return err;
}

static void expect_bad_table(void (*f)(struct fmt_stab *), bool reseal, const char *reason)
{
	const char *why = NULL;
	f(&tab);
	if (reseal)
		cpage_seal(&tab, ADDR0);
	assert_int_equal(table_decode(&why), -EILSEQ);
	assert_non_null(why);
	assert_string_equal(why, reason);
	table_sample();
	assert_int_equal(table_decode(&why), 0);
}

static void t_magic(struct fmt_stab *t)
{
	t->magic++;
}
static void t_crc(struct fmt_stab *t)
{
	t->e[3].page0++;
}
static void t_self(struct fmt_stab *t)
{
	t->self++;
}
static void t_pad(struct fmt_stab *t)
{
	t->pad = 1;
}
static void t_n0(struct fmt_stab *t)
{
	t->n = 0;
}
static void t_nbig(struct fmt_stab *t)
{
	t->n = FMT_STAB_ENTRIES + 1;
}
static void t_past_pool(struct fmt_stab *t)
{
	t->first_seg = NSEGS - 9;
}
static void t_first_big(struct fmt_stab *t)
{
	t->first_seg = NSEGS;
}
static void t_unused(struct fmt_stab *t)
{
	t->e[10].page0 = 2000;
}
static void t_live_big(struct fmt_stab *t)
{
	t->e[0].page1_live = (uint64_t)(FMT_SEG_BLOCKS + 1) << 48;
}
static void t_no_page(struct fmt_stab *t)
{
	t->e[1].page1_live = (uint64_t)1 << 48;
}
static void t_part1_only(struct fmt_stab *t)
{
	t->e[1].page1_live = 3002;
}
static void t_no_live(struct fmt_stab *t)
{
	t->e[0].page1_live = 0;
}
static void t_seg0(struct fmt_stab *t)
{
	t->e[0].page0 = FMT_SEG_BLOCKS - 1;
}
static void t_past_end(struct fmt_stab *t)
{
	t->e[9].page0 = NSEGS * FMT_SEG_BLOCKS;
}
static void t_part1_range(struct fmt_stab *t)
{
	t->e[3].page1_live = (uint64_t)1 << 48 | 5;
}
static void t_same(struct fmt_stab *t)
{
	t->e[3].page1_live = (uint64_t)1 << 48 | 3000;
}

static void test_table(void **state)
{
	const char *why = NULL;

	table_sample();
	assert_int_equal(table_decode(&why), 0);
	assert_memory_equal(got, ents, 10 * sizeof(ents[0]));
	for (unsigned i = 10; i < FMT_STAB_ENTRIES; i++)
		assert_int_equal(got[i].page0, 0);
	/* A full table at the end of the pool; 48-bit addresses survive. */
	for (unsigned i = 0; i < FMT_STAB_ENTRIES; i++)
		ents[i] = (struct cpage_ent){
		    .page0 = FMT_SEG_BLOCKS + i, .page1 = FMT_STAB_ADDR48, .live = 1 + i};
	cpage_stab_encode(&tab, 1u << 20, FMT_STAB_ENTRIES, ents);
	cpage_seal(&tab, ADDR0);
	uint64_t first;
	unsigned n;
	assert_int_equal(cpage_stab_decode(&tab, ADDR0, (1u << 20) + FMT_STAB_ENTRIES + 1, &first,
	                                   &n, got, &why),
	                 -EILSEQ); /* the pool is smaller than 2^48 blocks */
	assert_string_equal(why, "segment table page address out of range");
	assert_int_equal(cpage_stab_decode(&tab, ADDR0, (uint64_t)1 << 40, &first, &n, got, &why),
	                 0);
	assert_int_equal(first, 1u << 20);
	assert_int_equal(n, FMT_STAB_ENTRIES);
	assert_memory_equal(got, ents, sizeof(ents));

	table_sample();
	expect_bad_table(t_magic, true, "not a segment table (magic)");
	expect_bad_table(t_crc, false, "segment table checksum mismatch");
	expect_bad_table(t_self, false, "segment table checksum mismatch"); /* under the CRC */
	assert_int_equal(cpage_stab_decode(&tab, ADDR1, NSEGS, &first, &n, got, &why), -EILSEQ);
	assert_string_equal(why, "segment table written for another address");
	expect_bad_table(t_pad, true, "segment table header padding not zero");
	expect_bad_table(t_n0, true, "segment table range out of the pool");
	expect_bad_table(t_nbig, true, "segment table range out of the pool");
	expect_bad_table(t_past_pool, true, "segment table range out of the pool");
	expect_bad_table(t_first_big, true, "segment table range out of the pool");
	expect_bad_table(t_unused, true, "segment table unused entries not zero");
	expect_bad_table(t_live_big, true, "segment table live count out of range");
	expect_bad_table(t_no_page, true, "segment table entry without a page");
	expect_bad_table(t_part1_only, true, "segment table entry without a page");
	expect_bad_table(t_no_live, true, "segment table page for a segment with no live block");
	expect_bad_table(t_seg0, true, "segment table page address out of range");
	expect_bad_table(t_past_end, true, "segment table page address out of range");
	expect_bad_table(t_part1_range, true, "segment table page address out of range");
	expect_bad_table(t_same, true, "segment table page parts at one address");
}

/* ---- version 5 segment tables ---- */

static struct fmt_stab5 tab5;

static void table5_sample(void)
{
	memset(ents, 0, sizeof(ents));
	ents[0] = (struct cpage_ent){.page0 = 2000, .live = 1, .life = 3, .fwd = 2100};
	ents[3] = (struct cpage_ent){.page0 = 3000, .page1 = 3001, .live = FMT_SEG_BLOCKS};
	ents[5] = (struct cpage_ent){.life = FMT_TAG_MAX, .fwd = NSEGS * FMT_SEG_BLOCKS - 1};
	ents[9] = (struct cpage_ent){
	    .page0 = NSEGS * FMT_SEG_BLOCKS - 1, .live = 17, .life = 1, .held = 1007};
	cpage_stab5_encode(&tab5, 40, 10, ents);
	cpage_seal(&tab5, ADDR0);
}

static int table5_decode(const char **why)
{
	uint64_t first = 0;
	unsigned n = 0;
	int err = cpage_stab5_decode(&tab5, ADDR0, NSEGS, &first, &n, got, why);
	if (!err) {
		assert_int_equal(first, 40);
		assert_int_equal(n, 10);
	}
	return err;
}

static void expect_bad_table5(void (*f)(struct fmt_stab5 *), const char *reason)
{
	const char *why = NULL;
	f(&tab5);
	cpage_seal(&tab5, ADDR0);
	assert_int_equal(table5_decode(&why), -EILSEQ);
	assert_non_null(why);
	assert_string_equal(why, reason);
	table5_sample();
	assert_int_equal(table5_decode(&why), 0);
}

static void t5_life(struct fmt_stab5 *t)
{
	t->e[9].life = FMT_TAG_MAX + 1;
}
static void t5_held(struct fmt_stab5 *t)
{
	t->e[3].held = 1; /* its 1,024 blocks are all live */
}
static void t5_fwd_seg0(struct fmt_stab5 *t)
{
	t->e[0].fwd = FMT_SEG_BLOCKS - 1;
}
static void t5_fwd_end(struct fmt_stab5 *t)
{
	t->e[5].fwd = NSEGS * FMT_SEG_BLOCKS;
}
static void t5_unused(struct fmt_stab5 *t)
{
	t->e[FMT_STAB_ENTRIES5 - 1].life = 1;
}
static void t5_nbig(struct fmt_stab5 *t)
{
	t->n = FMT_STAB_ENTRIES5 + 1;
}
static void t5_no_page(struct fmt_stab5 *t)
{
	t->e[5].page1_live = (uint64_t)1 << 48;
}
static void t5_magic(struct fmt_stab5 *t)
{
	t->magic++;
}

static void test_table5(void **state)
{
	const char *why = NULL;

	assert_int_equal(cpage_stab_entries(FMT_VERSION_V4), FMT_STAB_ENTRIES);
	assert_int_equal(cpage_stab_entries(FMT_VERSION_V4 + 1), FMT_STAB_ENTRIES5);
	table5_sample();
	assert_int_equal(table5_decode(&why), 0);
	assert_memory_equal(got, ents, 10 * sizeof(ents[0]));
	for (unsigned i = 10; i < FMT_STAB_ENTRIES5; i++)
		assert_true(!got[i].page0 && !got[i].life && !got[i].fwd);
	/* A full table: 126 entries, not 252. */
	for (unsigned i = 0; i < FMT_STAB_ENTRIES5; i++)
		ents[i] = (struct cpage_ent){.page0 = FMT_SEG_BLOCKS + i,
		                             .live = 1 + i,
		                             .life = i * 8191,
		                             .fwd = 2 * FMT_SEG_BLOCKS + i};
	cpage_stab5_encode(&tab5, 0, FMT_STAB_ENTRIES5, ents);
	cpage_seal(&tab5, ADDR0);
	uint64_t first;
	unsigned n;
	assert_int_equal(cpage_stab5_decode(&tab5, ADDR0, NSEGS * 4, &first, &n, got, &why), 0);
	assert_int_equal(n, FMT_STAB_ENTRIES5);
	assert_memory_equal(got, ents, FMT_STAB_ENTRIES5 * sizeof(ents[0]));

	table5_sample();
	expect_bad_table5(t5_magic, "not a segment table (magic)");
	expect_bad_table5(t5_life, "segment table life out of range");
	expect_bad_table5(t5_held, "segment table forwarding blocks held out of range");
	expect_bad_table5(t5_fwd_seg0, "segment table forwarding address out of range");
	expect_bad_table5(t5_fwd_end, "segment table forwarding address out of range");
	expect_bad_table5(t5_unused, "segment table unused entries not zero");
	expect_bad_table5(t5_nbig, "segment table range out of the pool");
	expect_bad_table5(t5_no_page, "segment table entry without a page");
}

/* ---- forwarding blocks ---- */

#define FSEG    9u
#define NBLOCKS (NSEGS * FMT_SEG_BLOCKS)

static struct fwd_ent fent[3 * FMT_FWD_ENTRIES], fback[FMT_FWD_ENTRIES];
static struct fmt_fwd fimg;

/* Tag 2: 3 entries; tag 7: FMT_FWD_ENTRIES + 10 (two blocks); tag
 * FMT_TAG_MAX: 1.  Returns how many. */
static size_t fwd_sample(void)
{
	size_t n = 0;
	for (unsigned i = 0; i < 3; i++)
		fent[n++] = (struct fwd_ent){.blk = 2000 + i, .tag = 2, .idx = (uint16_t)(i * 300)};
	for (unsigned i = 0; i < FMT_FWD_ENTRIES + 10; i++)
		fent[n++] = (struct fwd_ent){.blk = NBLOCKS - 1 - i, .tag = 7, .idx = (uint16_t)i};
	fent[n++] = (struct fwd_ent){.blk = FMT_SEG_BLOCKS, .tag = FMT_TAG_MAX, .idx = 1023};
	return n;
}

static void test_fwd_roundtrip(void **state)
{
	size_t n = fwd_sample(), at = 0;
	unsigned blocks = 0, took[4] = {0};
	const char *why;

	assert_int_equal(cpage_fwd_blocks(fent, n), 4);
	while (at < n) {
		unsigned k = cpage_fwd_encode(&fimg, FSEG, fent + at, n - at, ADDR1);
		cpage_seal(&fimg, ADDR0);
		unsigned got_n = 0;
		uint64_t next = 0;
		assert_int_equal(
		    cpage_fwd_decode(&fimg, ADDR0, FSEG, NBLOCKS, fback, &got_n, &next, &why), 0);
		assert_int_equal(got_n, k);
		assert_int_equal(next, ADDR1);
		assert_memory_equal(fback, fent + at, k * sizeof(fent[0]));
		took[blocks++] = k;
		at += k;
	}
	assert_int_equal(blocks, 4);
	assert_int_equal(took[0], 3);
	assert_int_equal(took[1], FMT_FWD_ENTRIES);
	assert_int_equal(took[2], 10);
	assert_int_equal(took[3], 1);
	assert_int_equal(cpage_fwd_blocks(fent, 1), 1);
}

/* A block of the sample's tag 2, entries at idx 0, 300, 600. */
static void fwd_one(void)
{
	fwd_sample();
	assert_int_equal(cpage_fwd_encode(&fimg, FSEG, fent, 3, 0), 3);
	cpage_seal(&fimg, ADDR0);
}

static void expect_bad_fwd(void (*f)(struct fmt_fwd *), bool reseal, const char *reason)
{
	const char *why = NULL;
	unsigned n;
	uint64_t next;
	f(&fimg);
	if (reseal)
		cpage_seal(&fimg, ADDR0);
	assert_int_equal(cpage_fwd_decode(&fimg, ADDR0, FSEG, NBLOCKS, fback, &n, &next, &why),
	                 -EILSEQ);
	assert_non_null(why);
	assert_string_equal(why, reason);
	fwd_one();
	assert_int_equal(cpage_fwd_decode(&fimg, ADDR0, FSEG, NBLOCKS, fback, &n, &next, &why), 0);
}

static void f_magic(struct fmt_fwd *f)
{
	f->magic++;
}
static void f_crc(struct fmt_fwd *f)
{
	f->ent[1]++;
}
static void f_self(struct fmt_fwd *f)
{
	f->self++;
}
static void f_seg(struct fmt_fwd *f)
{
	f->seg++;
}
static void f_pad(struct fmt_fwd *f)
{
	f->pad[23] = 1;
}
static void f_tag(struct fmt_fwd *f)
{
	f->tag = FMT_TAG_MAX + 1;
}
static void f_n0(struct fmt_fwd *f)
{
	f->n = 0;
}
static void f_nbig(struct fmt_fwd *f)
{
	f->n = FMT_FWD_ENTRIES + 1;
}
static void f_next_seg0(struct fmt_fwd *f)
{
	f->next = 5;
}
static void f_next_end(struct fmt_fwd *f)
{
	f->next = NBLOCKS;
}
static void f_next_self(struct fmt_fwd *f)
{
	f->next = ADDR0;
}
static void f_unused(struct fmt_fwd *f)
{
	f->ent[FMT_FWD_ENTRIES - 1] = 1;
}
static void f_stale(struct fmt_fwd *f)
{
	f->n = 2;
} /* entry 2 left behind */
static void f_idx(struct fmt_fwd *f)
{
	f->ent[2] = 2002 | (uint64_t)FMT_SEG_BLOCKS << FMT_FWD_IDX_SHIFT;
}
static void f_unsorted(struct fmt_fwd *f)
{
	uint64_t t = f->ent[0];
	f->ent[0] = f->ent[1];
	f->ent[1] = t;
}
static void f_dup(struct fmt_fwd *f)
{
	f->ent[1] = 2001 | (uint64_t)0 << FMT_FWD_IDX_SHIFT;
}
static void f_to_seg0(struct fmt_fwd *f)
{
	f->ent[1] = (FMT_SEG_BLOCKS - 1) | (uint64_t)300 << FMT_FWD_IDX_SHIFT;
}
static void f_to_end(struct fmt_fwd *f)
{
	f->ent[2] = NBLOCKS | (uint64_t)600 << FMT_FWD_IDX_SHIFT;
}

static void test_fwd_damage(void **state)
{
	const char *why;
	unsigned n;
	uint64_t next;

	fwd_one();
	expect_bad_fwd(f_magic, true, "not a forwarding block (magic)");
	expect_bad_fwd(f_crc, false, "forwarding block checksum mismatch");
	expect_bad_fwd(f_self, false, "forwarding block checksum mismatch");
	assert_int_equal(cpage_fwd_decode(&fimg, ADDR1, FSEG, NBLOCKS, fback, &n, &next, &why),
	                 -EILSEQ);
	assert_string_equal(why, "forwarding block written for another address");
	expect_bad_fwd(f_seg, true, "forwarding block of another segment");
	expect_bad_fwd(f_pad, true, "forwarding block header padding not zero");
	expect_bad_fwd(f_tag, true, "forwarding block tag out of range");
	expect_bad_fwd(f_n0, true, "forwarding block entry count out of range");
	expect_bad_fwd(f_nbig, true, "forwarding block entry count out of range");
	expect_bad_fwd(f_next_seg0, true, "forwarding block next address out of range");
	expect_bad_fwd(f_next_end, true, "forwarding block next address out of range");
	expect_bad_fwd(f_next_self, true, "forwarding block next address out of range");
	expect_bad_fwd(f_unused, true, "forwarding block unused entries not zero");
	expect_bad_fwd(f_stale, true, "forwarding block unused entries not zero");
	expect_bad_fwd(f_idx, true, "forwarding entry index out of range");
	expect_bad_fwd(f_unsorted, true, "forwarding entries unsorted or duplicate");
	expect_bad_fwd(f_dup, true, "forwarding entries unsorted or duplicate");
	expect_bad_fwd(f_to_seg0, true, "forwarding entry address out of range");
	expect_bad_fwd(f_to_end, true, "forwarding entry address out of range");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),     cmocka_unit_test(test_narrow_wide),
	    cmocka_unit_test(test_narrow_damage), cmocka_unit_test(test_wide_damage),
	    cmocka_unit_test(test_table),         cmocka_unit_test(test_table5),
	    cmocka_unit_test(test_fwd_roundtrip), cmocka_unit_test(test_fwd_damage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
