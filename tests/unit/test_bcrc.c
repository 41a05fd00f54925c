/* test_bcrc.c — the block-checksum lookup on its own (a log over a memory
 * segio from tests/lib/testlog; no store).  Every data block written
 * through the log verifies and a flipped byte does not; the head segment
 * grows past a cached table; a stale batch from a segment's earlier life,
 * lying right after the current batches, supplies no CRC (neither before
 * nor after the current life overwrites it); a table of another life
 * (other stamp) or a stale one under the same stamp is rebuilt, not
 * trusted; one slot shared by two segments; non-data blocks and blocks no
 * batch describes fail; readers on other threads while the head grows.
 */
#undef NDEBUG
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <urcu/urcu-memb.h>

#include "bcrc.h"
#include "crc32c.h"
#include "testlog.h"

#define B(seg, i) ((uint64_t)(seg)*FMT_SEG_BLOCKS + (i))

static uint8_t blk[8][FMT_BLOCK] __attribute__((aligned(4096)));

/* One batch of n data blocks filled from seed, seed+1, ...; addr[] gets
 * their addresses. */
static void batch(struct log *l, unsigned n, uint64_t seed, uint64_t *addr)
{
	for (unsigned i = 0; i < n; i++) {
		struct fmt_entry e = {.vol = 1, .type = FMT_E_DATA, .lba = seed + i, .count = 1};
		testlog_fill(blk[i], seed + i);
		assert_int_equal(log_add(l, &e, blk[i], &addr[i]), 0);
	}
	assert_int_equal(log_commit(l), 0); /* sealed: the next entry opens a new batch */
}

/* One round of n data blocks added to the open summary (seal: sealed). */
static void round_open(struct log *l, unsigned n, uint64_t seed, uint64_t *addr, bool seal)
{
	for (unsigned i = 0; i < n; i++) {
		struct fmt_entry e = {.vol = 1, .type = FMT_E_DATA, .lba = seed + i, .count = 1};
		testlog_fill(blk[i], seed + i);
		assert_int_equal(log_add(l, &e, blk[i], &addr[i]), 0);
	}
	assert_int_equal(seal ? log_commit(l) : log_commit_open(l), 0);
}

/* bcrc_verify of block b against the content of seed. */
static int verify(struct bcrc *c, uint64_t b, uint64_t stamp, uint64_t seed)
{
	uint8_t *d = malloc(FMT_BLOCK);
	testlog_fill(d, seed);
	urcu_memb_read_lock();
	int r = bcrc_verify(c, b, stamp, d, false, NULL);
	urcu_memb_read_unlock();
	free(d);
	return r;
}

static void test_verify_and_grow(void **state)
{
	struct testlog t;
	uint64_t a[8], a2[8];

	testlog_init(&t, 16);
	struct bcrc *c = bcrc_new(t.io, 16, 16);
	uint64_t seg = log_head_seg(t.l), stamp = alloc_seg_stamp(t.a, seg);
	batch(t.l, 3, 100, a);
	assert_int_equal(alloc_seg_of(a[0]), seg);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(verify(c, a[i], stamp, 100 + i), 0);
	/* other bytes: EIO, through a cached table and again */
	assert_int_equal(verify(c, a[1], stamp, 999), -EIO);
	assert_int_equal(verify(c, a[1], stamp, 999), -EIO);
	assert_int_equal(verify(c, a[1], stamp, 101), 0);
	/* the summary itself is no data block; past the head nothing is */
	assert_int_equal(verify(c, a[0] - 1, stamp, 100), -EIO);
	assert_int_equal(verify(c, a[2] + 1, stamp, 103), -EIO);
	/* the head grows past the cached table */
	batch(t.l, 5, 200, a2);
	assert_int_equal(alloc_seg_of(a2[4]), seg);
	for (unsigned i = 0; i < 5; i++)
		assert_int_equal(verify(c, a2[i], stamp, 200 + i), 0);
	assert_int_equal(verify(c, a[0], stamp, 100), 0);
	/* a flipped byte on the device */
	uint8_t *d = malloc(FMT_BLOCK);
	assert_int_equal(segio_read_block(t.io, d, a2[2]), 0);
	d[77] ^= 1;
	struct iovec iov = {d, FMT_BLOCK};
	assert_int_equal(blkdev_pwritev(t.mem, &iov, 1, a2[2] * FMT_BLOCK), 0);
	assert_int_equal(segio_read_block(t.io, d, a2[2]), 0);
	urcu_memb_read_lock();
	uint32_t want = 0;
	assert_int_equal(bcrc_verify(c, a2[2], stamp, d, false, &want), -EIO);
	urcu_memb_read_unlock();
	testlog_fill(d, 202);
	assert_int_equal(want, crc32c(0, d, FMT_BLOCK));
	free(d);
	bcrc_free(c);
	testlog_fini(&t);
}

/* Two lives of one segment, written by two logs entered at its start
 * with LSNs 1 and 1000 (the stamps).  Life 1: batches of 3 blocks at
 * 0, 4, 8, 12.  Life 2: batches at 0 and 4, ending where life 1's batch
 * at 8 still lies, valid but stale. */
static void test_stale_life(void **state)
{
	struct testlog t;
	uint64_t a[8], old8[8], nw[8];

	testlog_init(&t, 16);
	uint64_t seg = 5;
	alloc_mark_used(t.a, seg);
	struct log *l1 = log_new(t.io, t.a, seg, 0, 6, 1, 0);
	assert_non_null(l1);
	batch(l1, 3, 10, a);
	batch(l1, 3, 20, a);
	batch(l1, 3, 30, old8);
	batch(l1, 3, 40, a);
	assert_int_equal(old8[0], B(seg, 9));
	log_free(l1);

	struct bcrc *c = bcrc_new(t.io, 16, 4);
	/* life 1 as a reader saw it */
	assert_int_equal(verify(c, B(seg, 9), 1, 30), 0);

	/* life 2 begins: nothing of it written yet; life 1's first batch
	 * is older than the life */
	struct log *l2 = log_new(t.io, t.a, seg, 0, 6, 1000, 77);
	assert_non_null(l2);
	assert_int_equal(verify(c, B(seg, 1), 1000, 10), -EIO);
	batch(l2, 3, 500, a);
	assert_int_equal(verify(c, B(seg, 1), 1000, 500), 0);
	assert_int_equal(verify(c, B(seg, 9), 1000, 30), -EIO); /* past the head */
	batch(l2, 3, 600, a);
	assert_int_equal(a[0], B(seg, 5));
	/* the stale batch at 8 follows the current ones: no CRC from it */
	assert_int_equal(verify(c, B(seg, 5), 1000, 600), 0);
	assert_int_equal(verify(c, B(seg, 9), 1000, 30), -EIO);
	assert_int_equal(verify(c, B(seg, 13), 1000, 40), -EIO);
	/* life 2 writes there: the table extends with the new batch */
	batch(l2, 3, 700, nw);
	assert_int_equal(nw[0], B(seg, 9));
	assert_int_equal(verify(c, B(seg, 9), 1000, 700), 0);
	assert_int_equal(verify(c, B(seg, 9), 1000, 30), -EIO);
	/* a table of life 1 cached under life 2's stamp (a stale stamp) is
	 * not believed: a mismatch is confirmed from disk first */
	struct bcrc *c2 = bcrc_new(t.io, 16, 4);
	assert_int_equal(verify(c2, B(seg, 9), 1000, 700), 0);
	log_free(l2);
	struct log *l3 = log_new(t.io, t.a, seg, 0, 6, 1000, 5);
	batch(l3, 8, 800, a); /* same stamp, new bytes at 1..8 */
	assert_int_equal(verify(c2, B(seg, 7), 1000, 806), 0);
	assert_int_equal(verify(c2, B(seg, 7), 1000, 602), -EIO);
	log_free(l3);
	bcrc_free(c2);
	bcrc_free(c);
	testlog_fini(&t);
}

/* One slot for two segments, and other kinds of blocks. */
static void test_slots_and_kinds(void **state)
{
	struct testlog t;
	uint64_t a[8], b[8];

	testlog_init(&t, 16);
	struct bcrc *c = bcrc_new(t.io, 16, 1);
	alloc_mark_used(t.a, 7);
	alloc_mark_used(t.a, 9);
	struct log *l7 = log_new(t.io, t.a, 7, 0, 8, 1, 0);
	batch(l7, 4, 70, a);
	struct log *l9 = log_new(t.io, t.a, 9, 0, 10, 50, 0);
	batch(l9, 4, 90, b);
	/* a node block (own CRC) and a trim in one batch */
	struct fmt_entry node = {.type = FMT_E_NODE, .count = 1};
	struct fmt_entry trim = {.vol = 1, .type = FMT_E_TRIM, .lba = 3, .count = 9};
	uint64_t naddr, dummy;
	testlog_fill(blk[0], 1234);
	assert_int_equal(log_add(l9, &trim, NULL, &dummy), 0);
	assert_int_equal(log_add(l9, &node, blk[0], &naddr), 0);
	assert_int_equal(log_commit(l9), 0);
	for (int round = 0; round < 3; round++)
		for (unsigned i = 0; i < 4; i++) {
			assert_int_equal(verify(c, a[i], 1, 70 + i), 0);
			assert_int_equal(verify(c, b[i], 50, 90 + i), 0);
		}
	assert_int_equal(verify(c, naddr, 50, 1234), -EIO);
	/* a segment number outside the pool */
	assert_int_equal(verify(c, B(16, 1), 0, 1), -EIO);
	log_free(l7);
	log_free(l9);
	bcrc_free(c);
	testlog_fini(&t);
}

/* Readers on other threads verify every block written so far while the
 * head grows. */
struct rd_arg {
	struct bcrc *c;
	uint64_t stamp;
	uint64_t *addr; /* block of seed k at addr[k] */
	unsigned *n;    /* published count */
	int bad;
	volatile int stop;
};

static void *rd_main(void *p)
{
	struct rd_arg *r = p;
	unsigned x = 1;
	urcu_memb_register_thread();
	while (!r->stop) {
		unsigned n = __atomic_load_n(r->n, __ATOMIC_ACQUIRE);
		if (!n)
			continue;
		x = x * 1103515245u + 12345u;
		unsigned k = (x >> 8) % n;
		if (verify(r->c, r->addr[k], r->stamp, 1000 + k))
			r->bad++;
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* Readers on other threads while the head grows, in sealed batches or
 * (open) in rounds added to a summary kept open, sealed every fifth. */
static void run_threads(bool open)
{
	struct testlog t;
	uint64_t addr[1024];
	unsigned n = 0, rounds = 0;
	pthread_t th[3];

	testlog_init(&t, 16);
	struct bcrc *c = bcrc_new(t.io, 16, 16);
	struct rd_arg r = {
	    .c = c, .stamp = alloc_seg_stamp(t.a, log_head_seg(t.l)), .addr = addr, .n = &n};
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&th[i], NULL, rd_main, &r), 0);
	uint64_t seg = log_head_seg(t.l);
	while (n + 3 < 600) {
		unsigned k = 1 + n % 3;
		if (open)
			round_open(t.l, k, 1000 + n, addr + n, ++rounds % 5 == 0);
		else
			batch(t.l, k, 1000 + n, addr + n);
		assert_int_equal(alloc_seg_of(addr[n + k - 1]), seg);
		__atomic_store_n(&n, n + k, __ATOMIC_RELEASE);
	}
	r.stop = 1;
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(r.bad, 0);
	if (open)
		assert_true(log_rewrites(t.l) > 100);
	bcrc_free(c);
	testlog_fini(&t);
}

static void test_threads(void **state)
{
	run_threads(false);
	run_threads(true);
}

/* A segio over the memory device whose reads are counted, and whose next
 * read of block tear_at returns a mix of the block and junk while a
 * rewrite seems to run (the sequence count moves). */
static const struct segio_ops *lower_ops;
static struct segio_ops wrap_ops;
static unsigned nreads;
static uint64_t tear_at;

static int wrap_read(struct segio *io, void *buf, size_t len, uint64_t off)
{
	int err = lower_ops->read(io, buf, len, off);
	nreads++;
	if (!err && tear_at && off <= tear_at * FMT_BLOCK && tear_at * FMT_BLOCK < off + len) {
		memset((char *)buf + (tear_at * FMT_BLOCK - off) + 40, 0x5a, 100);
		tear_at = 0;
		__atomic_fetch_add(&io->rewrite_seq, 2, __ATOMIC_SEQ_CST);
	}
	return err;
}

static void wrap(struct testlog *t)
{
	lower_ops = t->io->ops;
	wrap_ops = *lower_ops;
	wrap_ops.read = wrap_read;
	wrap_ops.read_nowait = wrap_read;
	t->io->ops = &wrap_ops;
}

/* A table that walked a summary kept open learns the blocks later
 * versions add by reading that summary again, not by a walk of the
 * segment from its start; and the final version, which the next batch
 * chains to, is taken too. */
static void test_open_summary(void **state)
{
	struct testlog t;
	uint64_t a[8], b[8], d[8];

	testlog_init(&t, 16);
	wrap(&t);
	struct bcrc *c = bcrc_new(t.io, 16, 16);
	uint64_t stamp = alloc_seg_stamp(t.a, log_head_seg(t.l));
	for (unsigned i = 0; i < 8; i++)
		batch(t.l, 2, 10 * i, a); /* eight sealed batches first */
	round_open(t.l, 3, 100, a, false);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(verify(c, a[i], stamp, 100 + i), 0);
	round_open(t.l, 4, 200, b, false);
	nreads = 0;
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(verify(c, b[i], stamp, 200 + i), 0);
	assert_true(nreads <= 3); /* the open summary, and where the next would be */
	assert_int_equal(verify(c, a[1], stamp, 101), 0);
	/* sealed with a final version, then a batch after it */
	round_open(t.l, 2, 300, d, true);
	batch(t.l, 2, 400, b);
	nreads = 0;
	assert_int_equal(verify(c, b[1], stamp, 401), 0);
	assert_int_equal(verify(c, d[0], stamp, 300), 0);
	assert_true(nreads <= 4);
	bcrc_free(c);
	testlog_fini(&t);
}

/* A summary read while the log rewrote it may be torn: a fresh table
 * reads it again instead of calling its blocks unknown. */
static void test_torn_read(void **state)
{
	struct testlog t;
	uint64_t a[8];

	testlog_init(&t, 16);
	wrap(&t);
	struct bcrc *c = bcrc_new(t.io, 16, 16);
	uint64_t stamp = alloc_seg_stamp(t.a, log_head_seg(t.l));
	round_open(t.l, 3, 100, a, false);
	round_open(t.l, 2, 200, a + 3, false);
	tear_at = a[0] - 1;
	assert_int_equal(verify(c, a[4], stamp, 201), 0);
	assert_int_equal(tear_at, 0); /* it was torn once */
	/* A summary damaged for good (no rewrite under way) is not read
	 * again and again: the blocks it names are unknown. */
	uint8_t *junk = malloc(FMT_BLOCK);
	assert_int_equal(segio_read_block(t.io, junk, a[0] - 1), 0);
	junk[50] ^= 1;
	struct iovec iov = {junk, FMT_BLOCK};
	assert_int_equal(blkdev_pwritev(t.mem, &iov, 1, (a[0] - 1) * FMT_BLOCK), 0);
	struct bcrc *c2 = bcrc_new(t.io, 16, 16);
	assert_int_equal(verify(c2, a[4], stamp, 201), -EIO);
	free(junk);
	bcrc_free(c2);
	bcrc_free(c);
	testlog_fini(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_verify_and_grow), cmocka_unit_test(test_stale_life),
	    cmocka_unit_test(test_slots_and_kinds), cmocka_unit_test(test_threads),
	    cmocka_unit_test(test_open_summary),    cmocka_unit_test(test_torn_read),
	};
	urcu_memb_register_thread();
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	urcu_memb_barrier();
	urcu_memb_unregister_thread();
	return r;
}
