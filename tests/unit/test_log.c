/* test_log.c — the log on its own, on a segment I/O over a memory device
 * with an allocator (tests/lib/testlog), no store: batches that
 * log_summary_valid accepts and that a damaged summary fails; entry walks
 * that give each carried block's address with TRIM entries (no block)
 * interleaved; the chain after a checkpoint, followed across segment moves
 * and over a summary split at FMT_SUM_ENTRIES, and stopped by a torn
 * carried block, a broken summary CRC, a wrong LSN, and a valid batch left
 * from an earlier life of the segment; log_seg_next over one segment;
 * log_room, log_reserve's move to the next segment, the stamp a segment
 * gets when the log enters it, ENOSPC when no segment is left, and a
 * successor always named by a summary before the log moves into it.
 */
#undef NDEBUG
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crc32c.h"
#include "testlog.h"

#define MAXB 126 /* with a TRIM after every third: one summary */

static uint8_t bufs[MAXB][FMT_BLOCK] __attribute__((aligned(4096)));

struct batch {
	uint64_t addr; /* its summary; 0 = not known */
	uint64_t lsn;
	unsigned nblocks;
};

/* One batch of nblocks DATA entries (blocks from seed) with a TRIM after
 * every third; committed.  Returns its summary's address. */
static uint64_t write_batch(struct testlog *t, unsigned nblocks, uint64_t seed, struct batch *b)
{
	uint64_t addr, lsn;
	uint32_t crc;

	assert_true(nblocks <= MAXB);
	assert_int_equal(log_reserve(t->l, nblocks), 0);
	for (unsigned i = 0; i < nblocks; i++) {
		struct fmt_entry e = {.vol = 1, .type = FMT_E_DATA, .lba = seed + i, .count = 1};
		testlog_fill(bufs[i], seed + i);
		assert_int_equal(log_add(t->l, &e, bufs[i], &addr), 0);
		if (i % 3 == 2) {
			struct fmt_entry tr = {.vol = 1, .type = FMT_E_TRIM, .lba = i, .count = 9};
			assert_int_equal(log_add(t->l, &tr, NULL, &addr), 0);
		}
	}
	uint64_t at = log_seal(t->l);
	assert_int_equal(log_commit(t->l), 0);
	log_last(t->l, &lsn, &crc);
	if (b)
		*b = (struct batch){at, lsn, nblocks};
	return at;
}

static void read_summary(struct testlog *t, uint64_t addr, struct fmt_summary *s)
{
	assert_int_equal(segio_read_block(t->io, s, addr), 0);
	assert_int_equal(log_summary_valid(s, addr), 0);
}

static void reseal(struct fmt_summary *s)
{
	s->crc = 0;
	s->crc = crc32c(0, s, FMT_BLOCK);
}

static void test_batch_walk(void **state)
{
	struct testlog t;
	struct fmt_summary *s = malloc(sizeof(*s)), *bad = malloc(sizeof(*bad));
	uint8_t *blk = malloc(FMT_BLOCK);
	struct log_walk w = {0};
	const struct fmt_entry *e;
	uint64_t lsn, at, k = 0, trims = 0;
	uint32_t crc;

	testlog_init(&t, 16);
	at = write_batch(&t, 7, 100, NULL);
	assert_int_equal(at, log_head_seg(t.l) * FMT_SEG_BLOCKS);
	read_summary(&t, at, s);
	assert_int_equal(s->lsn, 1);
	assert_int_equal(s->prev_crc, 0);
	assert_int_equal(s->nblocks, 7);
	assert_int_equal(s->nentries, 9);
	assert_int_equal(s->next_seg, log_next_seg(t.l));
	log_last(t.l, &lsn, &crc);
	assert_int_equal(lsn, s->lsn);
	assert_int_equal(crc, s->crc);
	/* Entries: carried blocks in order after the summary, TRIMs carry none. */
	for (unsigned i = 0; (e = log_entry_next(s, at, &w, &lsn)); i++) {
		if (e->type == FMT_E_TRIM) {
			assert_int_equal(lsn, 0);
			assert_int_equal(e->count, 9);
			trims++;
			continue;
		}
		assert_int_equal(e->type, FMT_E_DATA);
		assert_int_equal(lsn, at + 1 + k);
		assert_int_equal(e->lba, 100 + k);
		assert_int_equal(segio_read_block(t.io, blk, lsn), 0);
		testlog_fill(bufs[0], 100 + k);
		assert_memory_equal(blk, bufs[0], FMT_BLOCK);
		assert_int_equal(e->crc, crc32c(0, blk, FMT_BLOCK));
		k++;
	}
	assert_int_equal(k, 7);
	assert_int_equal(trims, 2);
	/* The next batch chains to it. */
	at = write_batch(&t, 1, 200, NULL);
	assert_int_equal(at, s->self + 8);
	read_summary(&t, at, bad);
	assert_int_equal(bad->lsn, 2);
	assert_int_equal(bad->prev_crc, s->crc);

	/* What log_summary_valid refuses. */
	assert_int_equal(log_summary_valid(s, s->self + 1), -EILSEQ); /* not where it says */
	memcpy(bad, s, sizeof(*bad));
	bad->e[0].lba ^= 1; /* any byte: the crc */
	assert_int_equal(log_summary_valid(bad, s->self), -EILSEQ);
	memcpy(bad, s, sizeof(*bad));
	bad->nblocks++; /* more blocks than carrying entries */
	reseal(bad);
	assert_int_equal(log_summary_valid(bad, s->self), -EILSEQ);
	memcpy(bad, s, sizeof(*bad));
	bad->magic++;
	reseal(bad);
	assert_int_equal(log_summary_valid(bad, s->self), -EILSEQ);
	memcpy(bad, s, sizeof(*bad));
	bad->nentries = FMT_SUM_ENTRIES + 1;
	reseal(bad);
	assert_int_equal(log_summary_valid(bad, s->self), -EILSEQ);
	/* blocks that would run past the end of the segment */
	memcpy(bad, s, sizeof(*bad));
	bad->self = (s->self / FMT_SEG_BLOCKS + 1) * FMT_SEG_BLOCKS - 7;
	reseal(bad);
	assert_int_equal(log_summary_valid(bad, bad->self), -EILSEQ);
	bad->self--;
	reseal(bad);
	assert_int_equal(log_summary_valid(bad, bad->self), 0);
	free(s);
	free(bad);
	free(blk);
	testlog_fini(&t);
}

/* How many batches the chain follows after the one at ck. */
static unsigned chain_len(struct testlog *t, uint64_t ck, const struct batch *want, unsigned n)
{
	struct fmt_summary *s = malloc(sizeof(*s));
	void *scratch = malloc(FMT_BLOCK);
	struct log_chain c;
	uint64_t addr;
	unsigned got = 0;

	read_summary(t, ck, s);
	log_chain_start(&c, s, alloc_nsegs(t->a));
	while (log_chain_next(t->io, &c, s, scratch, &addr) == 1) {
		assert_true(got < n);
		assert_int_equal(s->lsn, want[got].lsn);
		if (want[got].addr)
			assert_int_equal(addr, want[got].addr);
		assert_int_equal(c.seg, addr / FMT_SEG_BLOCKS);
		got++;
	}
	free(s);
	free(scratch);
	return got;
}

static void poke(struct testlog *t, uint64_t blk, const void *data)
{
	struct iovec iov = {.iov_base = (void *)data, .iov_len = FMT_BLOCK};
	assert_int_equal(blkdev_pwritev(t->mem, &iov, 1, blk * FMT_BLOCK), 0);
}

static void test_chain(void **state)
{
	struct testlog t;
	struct batch b[64];
	unsigned n = 0, moves = 0;
	uint8_t *save = malloc(FMT_BLOCK), *junk = malloc(FMT_BLOCK);
	struct fmt_summary *s = malloc(sizeof(*s));
	uint64_t ck;
	int first_in_seg = -1;

	testlog_init(&t, 16);
	ck = write_batch(&t, 1, 1, NULL);
	for (unsigned i = 0; i < 45; i++) {
		write_batch(&t, 1 + (i * 37) % 120, 1000 * (i + 1), &b[n]);
		if (b[n].addr / FMT_SEG_BLOCKS != (n ? b[n - 1].addr : ck) / FMT_SEG_BLOCKS) {
			moves++;
			if (first_in_seg < 0)
				first_in_seg = (int)n;
		}
		n++;
	}
	/* a batch of more entries than a summary holds: two summaries */
	for (unsigned i = 0; i < FMT_SUM_ENTRIES + 30; i++) {
		struct fmt_entry tr = {.vol = 2, .type = FMT_E_TRIM, .lba = i, .count = 1};
		uint64_t addr;
		assert_int_equal(log_add(t.l, &tr, NULL, &addr), 0);
	}
	assert_int_equal(log_commit(t.l), 0);
	b[n].addr = 0;
	b[n].lsn = b[n - 1].lsn + 1;
	n++;
	log_last(t.l, &b[n].lsn, &(uint32_t){0});
	b[n].addr = 0;
	n++;
	write_batch(&t, 5, 99999, &b[n++]);
	assert_true(moves >= 2);
	assert_true(first_in_seg > 0);
	assert_int_equal(chain_len(&t, ck, b, n), n);

	/* A torn carried block ends the chain before its batch. */
	unsigned k = 7;
	assert_int_equal(segio_read_block(t.io, save, b[k].addr + 2), 0);
	memcpy(junk, save, FMT_BLOCK);
	junk[100] ^= 0x40;
	poke(&t, b[k].addr + 2, junk);
	assert_int_equal(chain_len(&t, ck, b, n), k);
	poke(&t, b[k].addr + 2, save);
	assert_int_equal(chain_len(&t, ck, b, n), n);
	/* So does a summary that fails its CRC — here the first one in a
	 * new segment, reached through next_seg. */
	k = (unsigned)first_in_seg;
	assert_int_equal(b[k].addr % FMT_SEG_BLOCKS, 0);
	assert_int_equal(segio_read_block(t.io, save, b[k].addr), 0);
	memcpy(junk, save, FMT_BLOCK);
	junk[200] ^= 1;
	poke(&t, b[k].addr, junk);
	assert_int_equal(chain_len(&t, ck, b, n), k);
	/* ... or has a valid CRC but the wrong LSN. */
	memcpy(s, save, FMT_BLOCK);
	s->lsn++;
	reseal(s);
	poke(&t, b[k].addr, s);
	assert_int_equal(chain_len(&t, ck, b, n), k);
	poke(&t, b[k].addr, save);
	assert_int_equal(chain_len(&t, ck, b, n), n);

	/* log_seg_next walks the batches of the first segment, from its start. */
	uint64_t seg = ck / FMT_SEG_BLOCKS, pos = seg * FMT_SEG_BLOCKS;
	unsigned in_seg = 0;
	while (log_seg_next(t.io, seg, pos, s) > 0) {
		assert_int_equal(s->self, in_seg ? b[in_seg - 1].addr : ck);
		in_seg++;
		pos += 1 + s->nblocks;
	}
	assert_int_equal(in_seg, 1 + first_in_seg);
	free(save);
	free(junk);
	free(s);
	testlog_fini(&t);
}

/* A valid batch left in a segment by an earlier life of the log, at the
 * very place and with the very LSN the chain wants next, is not followed:
 * it does not chain to the CRC before it. */
static void test_stale_batch(void **state)
{
	struct testlog t;
	struct batch old[5], b[2] = {{0}};
	struct fmt_summary *s = malloc(sizeof(*s));
	uint64_t head, next;

	testlog_init(&t, 16);
	head = log_head_seg(t.l);
	next = log_next_seg(t.l);
	for (unsigned i = 0; i < 5; i++)
		write_batch(&t, 10, 100 * i, &old[i]);
	/* The log starts over in the same segment (a new boot, same shapes). */
	log_free(t.l);
	t.l = log_new(t.io, t.a, head, 0, next, 1, 0);
	assert_non_null(t.l);
	uint64_t ck = write_batch(&t, 10, 0, NULL);
	write_batch(&t, 10, 100, &b[0]);
	assert_int_equal(ck, old[0].addr);
	assert_int_equal(b[0].addr, old[1].addr);
	/* Where the chain looks next: old[2], valid, LSN 3 as wanted. */
	read_summary(&t, old[2].addr, s);
	assert_int_equal(s->lsn, 3);
	assert_int_equal(chain_len(&t, ck, b, 2), 1);
	free(s);
	testlog_fini(&t);
}

/* Room, reserve, segment stamps and ENOSPC on a pool of 3 log segments. */
static void test_room_enospc(void **state)
{
	struct testlog t;
	uint64_t addr, written = 0, lsn;
	int err = 0;

	testlog_init(&t, 4);
	assert_int_equal(alloc_nfree(t.a), 1);
	assert_int_equal(log_room(t.l), 2 * FMT_SEG_BLOCKS);
	write_batch(&t, 100, 1, NULL);
	assert_int_equal(log_room(t.l), 2 * FMT_SEG_BLOCKS - 101);
	/* 1000 blocks do not fit behind 101: the log moves to its next
	 * segment, stamps it with the LSN it entered at and takes a new
	 * successor. */
	uint64_t next = log_next_seg(t.l);
	lsn = log_lsn(t.l);
	assert_int_equal(log_reserve(t.l, 1000), 0);
	assert_int_equal(log_head_seg(t.l), next);
	assert_int_equal(alloc_seg_stamp(t.a, next), lsn);
	assert_true(log_next_seg(t.l) != 0);
	assert_int_equal(alloc_nfree(t.a), 0);
	assert_int_equal(log_room(t.l), FMT_SEG_BLOCKS - 1 + FMT_SEG_BLOCKS);
	/* Fill up: the third segment is entered, then nothing is left. */
	uint64_t third = log_next_seg(t.l);
	while (!err) {
		for (unsigned i = 0; i < 100 && !err; i++) {
			struct fmt_entry e = {.vol = 1, .type = FMT_E_DATA, .lba = i, .count = 1};
			testlog_fill(bufs[i], written);
			err = log_add(t.l, &e, bufs[i], &addr);
			written += !err;
		}
		if (!err)
			assert_int_equal(log_commit(t.l), 0);
	}
	assert_int_equal(err, -ENOSPC);
	assert_int_equal(log_head_seg(t.l), third);
	/* the stamp: the LSN of the segment's first summary */
	struct fmt_summary *s = malloc(sizeof(*s));
	read_summary(&t, third * FMT_SEG_BLOCKS, s);
	assert_int_equal(alloc_seg_stamp(t.a, third), s->lsn);
	read_summary(&t, next * FMT_SEG_BLOCKS, s);
	assert_int_equal(alloc_seg_stamp(t.a, next), s->lsn);
	free(s);
	assert_int_equal(log_next_seg(t.l), 0);
	assert_true(log_room(t.l) < 2);
	/* Every block there was room for went in: two segments, less a
	 * summary per batch. */
	assert_true(written > 2 * FMT_SEG_BLOCKS - 1 - 2 * 30);
	testlog_fini(&t);
}

/* Bug D of issue 9: the log entered a segment while no segment was free
 * (no successor named), filled it, and when a checkpoint then freed
 * segments it moved into one that no sealed summary named: recovery
 * stopped at the old segment's end and lost every batch after it (64 of
 * 64 FUA writes in the reproduction).  The log now keeps the last block of
 * such a segment for a summary that names the successor; recovery must
 * follow the chain into the new segment. */
static void test_successor_named(void **state)
{
	struct testlog t;
	struct batch b[FMT_SEG_BLOCKS];
	unsigned n = 0;
	uint64_t addr;

	testlog_init(&t, 4); /* head, its successor, one free segment */
	write_batch(&t, 100, 1, NULL);
	assert_int_equal(log_reserve(t.l, 1000), 0); /* moves: the free one is next */
	assert_int_equal(alloc_nfree(t.a), 0);
	/* Fill on into the last segment, entered with no successor free. */
	while (log_next_seg(t.l))
		write_batch(&t, 100, 7, NULL);
	uint64_t last = log_head_seg(t.l);
	/* The first batch in it starts the chain (a checkpoint's place). */
	uint64_t ck = write_batch(&t, 1, 1, NULL);
	assert_int_equal(ck / FMT_SEG_BLOCKS, last);
	/* One-block batches until the segment takes no more. */
	for (;;) {
		struct fmt_entry e = {.vol = 1, .type = FMT_E_DATA, .lba = n, .count = 1};
		testlog_fill(bufs[0], n);
		if (log_reserve(t.l, 1) || log_add(t.l, &e, bufs[0], &addr))
			break;
		b[n].addr = log_seal(t.l);
		assert_int_equal(log_commit(t.l), 0);
		log_last(t.l, &b[n].lsn, &(uint32_t){0});
		n++;
	}
	assert_int_equal(log_head_seg(t.l), last);
	/* Segments free up (a checkpoint's release) while the head is full. */
	assert_true(alloc_release_dead(t.a, last, 0, NULL, NULL) >= 1);
	/* Writing goes on in a new segment ... */
	write_batch(&t, 3, 5000, &b[n]);
	assert_true(b[n].addr / FMT_SEG_BLOCKS != last);
	n++;
	/* ... the empty naming summary is a batch of the chain too ... */
	struct batch want[FMT_SEG_BLOCKS + 2];
	memcpy(want, b, sizeof(b[0]) * (n - 1));
	want[n - 1] = (struct batch){0, b[n - 1].lsn - 1, 0};
	want[n] = b[n - 1];
	/* ... and recovery follows the chain all the way into it. */
	assert_int_equal(chain_len(&t, ck, want, n + 1), n + 1);
	testlog_fini(&t);
}

/* One round of n DATA blocks (seeds seed, seed+1, ...) committed with the
 * summary kept open; addr[] gets their addresses (may be NULL). */
static void open_round(struct testlog *t, unsigned n, uint64_t seed, uint64_t *addr)
{
	uint64_t a;
	for (unsigned i = 0; i < n; i++) {
		struct fmt_entry e = {.vol = 1, .type = FMT_E_DATA, .lba = seed + i, .count = 1};
		testlog_fill(bufs[i], seed + i);
		assert_int_equal(log_add(t->l, &e, bufs[i], &a), 0);
		if (addr)
			addr[i] = a;
	}
	assert_int_equal(log_commit_open(t->l), 0);
}

/* Summaries kept open: each commit writes a valid version of the one
 * summary (same LSN and previous CRC, the entries of every round so far)
 * after its blocks, and costs no block of log of its own; recovery
 * follows the open version and ends there; sealing writes the final
 * version, which the next batch chains to; a seal with nothing new since
 * the last version writes nothing. */
static void test_open_summary(void **state)
{
	struct testlog t;
	struct fmt_summary *s = malloc(sizeof(*s));
	struct batch b[4];
	uint64_t a[8], lsn0, lsn;
	uint32_t crc0, crc;

	testlog_init(&t, 16);
	uint64_t ck = write_batch(&t, 1, 1, NULL);
	log_last(t.l, &lsn0, &crc0);
	uint64_t head = log_head_off(t.l);
	open_round(&t, 3, 100, a);
	uint64_t at = a[0] - 1; /* the summary, then its blocks */
	read_summary(&t, at, s);
	assert_int_equal(s->nblocks, 3);
	assert_int_equal(s->lsn, lsn0 + 1);
	assert_int_equal(s->prev_crc, crc0);
	assert_int_equal(log_rewrites(t.l), 0); /* written with its blocks */
	/* Not sealed: log_last still names the batch before it. */
	log_last(t.l, &lsn, &crc);
	assert_int_equal(lsn, lsn0);
	assert_int_equal(crc, crc0);
	b[0] = (struct batch){at, lsn0 + 1, 3};
	assert_int_equal(chain_len(&t, ck, b, 1), 1);

	for (unsigned r = 1; r <= 3; r++) {
		open_round(&t, 2, 100 * (r + 1), a);
		assert_int_equal(a[0], at + 1 + 3 + 2 * (r - 1)); /* right after the last */
		read_summary(&t, at, s);
		assert_int_equal(s->nblocks, 3 + 2 * r);
		assert_int_equal(s->nentries, 3 + 2 * r);
		assert_int_equal(s->lsn, lsn0 + 1);
		assert_int_equal(s->prev_crc, crc0);
		assert_int_equal(log_rewrites(t.l), r);
		assert_int_equal(chain_len(&t, ck, b, 1), 1);
	}
	/* Only data went to the log: one summary for four rounds. */
	assert_int_equal(log_head_off(t.l), head + 1 + 9);
	uint32_t open_crc = s->crc;

	/* A seal with nothing new: the version on disk is final. */
	assert_int_equal(log_commit(t.l), 0);
	assert_int_equal(log_rewrites(t.l), 3);
	log_last(t.l, &lsn, &crc);
	assert_int_equal(lsn, lsn0 + 1);
	assert_int_equal(crc, open_crc);
	write_batch(&t, 4, 900, &b[1]);
	read_summary(&t, b[1].addr, s);
	assert_int_equal(s->prev_crc, open_crc);
	assert_int_equal(chain_len(&t, ck, b, 2), 2);

	/* Entries after the last version: the seal writes a final one. */
	open_round(&t, 2, 1000, a);
	open_round(&t, 1, 1100, NULL);
	unsigned rw = (unsigned)log_rewrites(t.l);
	struct fmt_entry tr = {.vol = 1, .type = FMT_E_TRIM, .lba = 5, .count = 2};
	assert_int_equal(log_add(t.l, &tr, NULL, &a[7]), 0);
	b[2] = (struct batch){a[0] - 1, b[1].lsn + 1, 3};
	assert_int_equal(log_commit(t.l), 0);
	assert_int_equal(log_rewrites(t.l), rw + 1);
	read_summary(&t, b[2].addr, s);
	assert_int_equal(s->nentries, 4);
	log_last(t.l, &lsn, &crc);
	assert_int_equal(crc, s->crc);
	write_batch(&t, 1, 1200, &b[3]);
	assert_int_equal(chain_len(&t, ck, b, 4), 4);
	free(s);
	testlog_fini(&t);
}

/* After a power cut the disk may hold an older version of a summary kept
 * open, or a version whose newest blocks did not persist: the chain takes
 * the older version and ends there (the next batch chains to the final
 * CRC), and takes no version that names a block that fails its CRC. */
static void test_open_summary_cut(void **state)
{
	struct testlog t;
	struct fmt_summary *s = malloc(sizeof(*s));
	uint8_t *v1 = malloc(FMT_BLOCK), *save = malloc(FMT_BLOCK), *junk = malloc(FMT_BLOCK);
	struct batch b[2];
	uint64_t a[8], lsn;
	uint32_t crc;

	testlog_init(&t, 16);
	uint64_t ck = write_batch(&t, 1, 1, NULL);
	log_last(t.l, &lsn, &crc);
	open_round(&t, 2, 100, a);
	uint64_t at = a[0] - 1;
	assert_int_equal(segio_read_block(t.io, v1, at), 0); /* the first version */
	open_round(&t, 3, 200, a);
	assert_int_equal(log_commit(t.l), 0);
	b[0] = (struct batch){at, lsn + 1, 5};
	write_batch(&t, 2, 300, &b[1]);
	assert_int_equal(chain_len(&t, ck, b, 2), 2);
	/* The first version survived, the final one did not. */
	assert_int_equal(segio_read_block(t.io, save, at), 0);
	poke(&t, at, v1);
	assert_int_equal(chain_len(&t, ck, b, 2), 1);
	read_summary(&t, at, s);
	assert_int_equal(s->nblocks, 2);
	poke(&t, at, save);
	/* The final version survived, one block of the second round did not. */
	uint8_t *blk = malloc(FMT_BLOCK);
	assert_int_equal(segio_read_block(t.io, blk, a[1]), 0);
	memcpy(junk, blk, FMT_BLOCK);
	junk[9] ^= 2;
	poke(&t, a[1], junk);
	assert_int_equal(chain_len(&t, ck, b, 2), 0);
	poke(&t, a[1], blk);
	assert_int_equal(chain_len(&t, ck, b, 2), 2);
	free(blk);
	/* Torn in the middle of a rewrite: the first version's header, the
	 * final one's entries. */
	memcpy(junk, save, FMT_BLOCK);
	memcpy(junk, v1, FMT_SUM_HDR);
	assert_memory_not_equal(junk, save, FMT_BLOCK);
	poke(&t, at, junk);
	assert_int_equal(chain_len(&t, ck, b, 2), 0);
	poke(&t, at, save);
	assert_int_equal(chain_len(&t, ck, b, 2), 2);
	free(s);
	free(v1);
	free(save);
	free(junk);
	testlog_fini(&t);
}

/* A backend that cannot rewrite a block (an object store) gets every
 * commit's summary sealed: a batch per commit, nothing written again. */
static void test_open_summary_no_rewrite(void **state)
{
	struct testlog t;
	struct segio_ops ops;
	struct fmt_summary *s = malloc(sizeof(*s));
	uint64_t a[4], b[4], lsn;
	uint32_t crc;

	testlog_init(&t, 16);
	uint64_t head = log_head_seg(t.l), next = log_next_seg(t.l);
	ops = *t.io->ops;
	ops.rewrite = NULL;
	t.io->ops = &ops;
	log_free(t.l);
	t.l = log_new(t.io, t.a, head, 0, next, 1, 0);
	assert_non_null(t.l);
	open_round(&t, 2, 10, a);
	log_last(t.l, &lsn, &crc);
	assert_int_equal(lsn, 1); /* sealed */
	open_round(&t, 2, 20, b);
	assert_int_equal(b[0], a[1] + 2); /* a summary of its own between */
	read_summary(&t, b[0] - 1, s);
	assert_int_equal(s->lsn, 2);
	assert_int_equal(s->prev_crc, crc);
	assert_int_equal(log_rewrites(t.l), 0);
	free(s);
	testlog_fini(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_batch_walk),       cmocka_unit_test(test_chain),
	    cmocka_unit_test(test_stale_batch),      cmocka_unit_test(test_room_enospc),
	    cmocka_unit_test(test_successor_named),  cmocka_unit_test(test_open_summary),
	    cmocka_unit_test(test_open_summary_cut), cmocka_unit_test(test_open_summary_no_rewrite),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
