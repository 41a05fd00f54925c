/* test_inline.c — inline rounds (writer_inline, called by store_unplug):
 * an event loop's plug of whole-block writes, 32 KiB to 1 MiB of them,
 * runs as a round on the calling thread when the log thread sleeps with
 * nothing queued, and goes to the log thread as before otherwise.
 *
 * What is tested: such a plug completes on the calling thread before
 * store_unplug returns and counts one inline round (exactly one per
 * unplug), its data reads back; a plug under 32 KiB, or with a FLUSH, a
 * FUA write, a partial block, a TRIM or ZERO, more than 1 MiB of payload,
 * from an unregistered thread or inside store_read_lock, behind a queued
 * request, on a failed pool, after the log thread stopped, or on the
 * object-store backend goes to the log thread; while the log thread is at
 * work (held in a sync, or under a mixed load of plugs, flushes, snapshots
 * and a stall) plugs fall back to the queue, and the volume ends equal to
 * a model, checks clean, and reads the same after a reopen; an inline
 * round that leaves a checkpoint due wakes the log thread (a checkpoint is
 * taken with nothing ever queued); inline rounds keep the log thread from
 * counting a second as idle (no idle compaction while they run); and a
 * slow inline round turns inline rounds off for a while.
 *
 * The log thread may wake (its one-second timeout) between the test's look
 * and writer_inline's trylock, and then a plug that fits goes to the queue:
 * legal, so where a round must run inline the tests retry, and every
 * per-unplug assertion accepts either outcome as long as it is one whole
 * outcome (all requests here before the return and one inline round, or
 * none here and no inline round).  Where a plug must NOT run inline no
 * timing can make it so, and the assertion is exact.
 *
 * Every mutation of src/writer.c named in a comment below was applied to a
 * scratch copy and made that test fail.
 */
#undef NDEBUG
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "blkdev.h"
#include "boundcall.h"
#include "faultdev.h"
#include "objstore.h"
#include "segio_obj.h"
#include "store_int.h"
#include "testpool.h"
#include "treq.h"

#define BS    STORE_BLOCK_SIZE
#define MiB   (1ull << 20)
#define BOUND 10 /* seconds a wait may take before the test calls it hung */
/* INLINE_MIN_BYTES (writer.c) in blocks: smaller plugs go to the log
 * thread (a round's summary block would cost too much for less) */
#define MINB 8

/* How one plug went (no cmocka here: threads other than the test's use
 * it too). */
enum plug_outcome {
	PLUG_QUEUED,  /* every request completed on another thread */
	PLUG_INLINE,  /* every request completed here before store_unplug returned */
	PLUG_MIXED,   /* anything else: a defect */
	PLUG_TIMEOUT, /* not all completed within BOUND seconds */
};

/* Submit t[0..n) through one plug from this thread (store_submit_plugged
 * hands the plug over by itself at STORE_PLUG_BYTES), unplug, wait for
 * every completion and say how it went. */
static enum plug_outcome plug_go(struct treq *t, unsigned n)
{
	struct store_plug p = {0};
	pthread_t self = pthread_self();
	unsigned here = 0;

	for (unsigned i = 0; i < n; i++)
		store_submit_plugged(&p, &t[i].r);
	store_unplug(&p);
	unsigned at_return = treq_ndone(t, n);
	if (!treq_wait(t, n))
		return PLUG_TIMEOUT;
	for (unsigned i = 0; i < n; i++)
		here += pthread_equal(t[i].thread, self) != 0;
	if (here == 0)
		return PLUG_QUEUED;
	return here == n && at_return == n ? PLUG_INLINE : PLUG_MIXED;
}

/* ---- the store's state as the tests look at it ---------------------------- */

static struct store_stats stats(struct store *st)
{
	struct store_stats s;
	store_get_stats(st, &s);
	return s;
}

/* The log's counters read under wr.own, as the log thread and inline rounds
 * write them.  Unlike store_get_stats (a job on the log thread, which then
 * also begins a checkpoint that is due and restarts its idle second) this
 * wakes nobody: tests of what wakes the log thread look with it. */
static struct store_stats peek(struct store *st)
{
	struct store_stats s;
	pthread_mutex_lock(&st->wr.own);
	s = st->stats;
	pthread_mutex_unlock(&st->wr.own);
	return s;
}

/* Wait until the log thread sleeps in its queue with nothing queued: it
 * has given wr.own up (take_queue is entered without it). */
static void wait_asleep(struct store *st)
{
	struct req_queue *q = &st->wr.q;
	for (unsigned i = 0; i < BOUND * 5000; i++) {
		pthread_mutex_lock(&q->lock);
		bool asleep = q->sleepers && !q->head;
		pthread_mutex_unlock(&q->lock);
		if (asleep)
			return;
		usleep(200);
	}
	fail_msg("the log thread did not go to sleep within %d s", BOUND);
}

/* One plug, from this thread with the log thread asleep: whether it ran
 * inline.  Either way it is one whole outcome, and inline_rounds rose by
 * exactly one for an inline round and not at all otherwise.  After a slow
 * round (a sanitizer or valgrind makes most rounds slow) wait out the
 * 100 ms without inline rounds, so that the next plug may run inline. */
static bool plug_run(struct store *st, struct treq *t, unsigned n)
{
	struct store_stats s0 = stats(st);
	wait_asleep(st);
	enum plug_outcome o = plug_go(t, n);
	struct store_stats s1 = stats(st);

	assert_int_not_equal(o, PLUG_TIMEOUT);
	assert_int_not_equal(o, PLUG_MIXED);
	assert_int_equal(s1.inline_rounds - s0.inline_rounds, o == PLUG_INLINE);
	if (s1.inline_slow != s0.inline_slow)
		usleep(120 * 1000);
	return o == PLUG_INLINE;
}

/* ---- data ------------------------------------------------------------------ */

/* Block lba of generation gen: a pattern no other block or generation has. */
static void fill(char *buf, uint64_t lba, uint64_t nblk, unsigned gen)
{
	for (uint64_t b = 0; b < nblk; b++)
		for (unsigned i = 0; i < BS; i += 8) {
			uint64_t x = (lba + b) * 1000003u + gen * 7919u + i;
			memcpy(buf + b * BS + i, &x, 8);
		}
}

static void expect(struct vol *v, uint64_t lba, uint64_t nblk, unsigned gen)
{
	size_t len = (size_t)nblk * BS;
	char *want = malloc(len), *got = malloc(len);
	assert_non_null(want);
	assert_non_null(got);
	fill(want, lba, nblk, gen);
	assert_int_equal(store_read(v, got, lba * BS, (uint32_t)len), 0);
	assert_memory_equal(got, want, len);
	free(want);
	free(got);
}

static void expect_zero(struct vol *v, uint64_t off, uint32_t len)
{
	char *got = malloc(len), *zero = calloc(1, len);
	assert_non_null(got);
	assert_non_null(zero);
	assert_int_equal(store_read(v, got, off, len), 0);
	assert_memory_equal(got, zero, len);
	free(got);
	free(zero);
}

/* A plug of MINB 4 KiB writes (the least that runs inline) from block lba,
 * generation gen, that must run inline: tried up to five times (see the
 * head of the file).  Tests of what must not run inline do this first, so
 * that they show a plug that fits would have run inline just then. */
static void must_inline(struct store *st, struct vol *v, uint64_t lba, unsigned gen)
{
	char buf[MINB * BS];
	struct treq t[MINB];
	for (int i = 0; i < 5; i++) {
		fill(buf, lba, MINB, gen);
		for (unsigned k = 0; k < MINB; k++)
			treq_init(&t[k], v, STORE_WRITE, buf + k * BS, (lba + k) * BS, BS, 0);
		bool inl = plug_run(st, t, MINB);
		for (unsigned k = 0; k < MINB; k++)
			assert_int_equal(t[k].err, 0);
		if (inl) {
			expect(v, lba, MINB, gen);
			return;
		}
	}
	fail_msg("%u 4 KiB writes (from block %llu) from a registered thread never ran inline"
	         " in 5 tries",
	         MINB, (unsigned long long)lba);
}

/* A plug that must go to the log thread (what says which): with the log
 * thread asleep, none of it completes on this thread and inline_rounds
 * stays (plug_run). */
static void must_queue(struct store *st, struct treq *t, unsigned n, const char *what)
{
	if (plug_run(st, t, n))
		fail_msg("%s: ran inline", what);
}

/* Tests register their thread (store_thread_register) as an event loop
 * does; one that fails midway leaves it registered, and the next test's
 * registration would abort the program: each test ends with this. */
static int unregister(void **state)
{
	if (reader_rcu_registered())
		store_thread_unregister();
	return 0;
}

/* ---- 1. inline rounds ------------------------------------------------------- */

/* From a registered thread with the log thread asleep, a plug of sixteen
 * 4 KiB writes, and a 256 KiB write (which hands the plug over inside
 * store_submit_plugged), run as rounds of their own: every request
 * completes on this thread before the call returns, inline_rounds rises by
 * one per unplug, and the data reads back.  A plug may go to the queue
 * when the log thread wakes in between (see the head of the file): three
 * quarters of them at least run inline (all of them, in practice), and
 * every one completes with its data.
 * Catches: writer_inline always false (mutation a: none inline). */
static void test_inline_rounds(void **state)
{
	struct blkdev *dev = blkdev_mem_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(dev, NULL, "v", 64 * MiB, &v);
	enum { N = 16, BIG = 64 /* blocks: 256 KiB */ };
	static char small[N][BS], big[BIG * BS];
	struct treq t[N];
	unsigned runs = 0, inl = 0;

	store_thread_register();
	for (unsigned gen = 1; gen <= 8; gen++) {
		for (unsigned i = 0; i < N; i++) {
			uint64_t lba = i * 37 + gen;
			fill(small[i], lba, 1, gen);
			treq_init(&t[i], v, STORE_WRITE, small[i], lba * BS, BS, 0);
		}
		inl += plug_run(st, t, N);
		runs++;
		for (unsigned i = 0; i < N; i++) {
			assert_int_equal(t[i].err, 0);
			expect(v, i * 37 + gen, 1, gen);
		}
		uint64_t lba = 4096 + gen * BIG;
		fill(big, lba, BIG, gen);
		treq_init(&t[0], v, STORE_WRITE, big, lba * BS, BIG * BS, 0);
		inl += plug_run(st, t, 1);
		runs++;
		assert_int_equal(t[0].err, 0);
		expect(v, lba, BIG, gen);
	}
	print_message("%u of %u plugs ran inline\n", inl, runs);
	assert_true(inl >= runs * 3 / 4);
	store_thread_unregister();
	store_vol_close(v);
	store_close(st);
}

/* ---- 2. plugs that go to the log thread ----------------------------------- */

/* A plug of whole-block writes at wlba.. (nw blocks, generation gen, one
 * request each) followed by the request extra: filled in t[0..nw], returns
 * nw + 1. */
static unsigned writes_then(struct treq *t, char *buf, struct vol *v, uint64_t wlba, unsigned nw,
                            unsigned gen, const struct treq *extra)
{
	fill(buf, wlba, nw, gen);
	for (unsigned k = 0; k < nw; k++)
		treq_init(&t[k], v, STORE_WRITE, buf + k * BS, (wlba + k) * BS, BS, 0);
	t[nw] = *extra;
	return nw + 1;
}

static void all_ok(const struct treq *t, unsigned n)
{
	for (unsigned k = 0; k < n; k++)
		assert_int_equal(t[k].err, 0);
}

/* What a round on the event loop must not do: sync (a FLUSH, a FUA write),
 * read (a partial block merges with the block as it stands), unmap (TRIM,
 * ZERO), or run long (over 1 MiB of payload); and a plug under 32 KiB is
 * not worth a round of its own.  Each such plug goes to the log thread,
 * completes there, counts no inline round, and does what it should.  Each
 * holds at least 32 KiB of whole-block writes beside the request under
 * test, so that this request alone decides; and just before each, a plug
 * that fits runs inline (must_inline), so that the refusal is the
 * request's doing, not the moment's.  Exactly 32 KiB and exactly 1 MiB
 * still run inline (must_inline; the last case).
 * Catches: no FUA check (mutation b: the FUA plug runs inline), no
 * alignment check (mutation c: the partial writes run inline), the 1 MiB
 * bound dropped (mutation f: the 2 MiB write and the 1 MiB + 4 KiB plug run
 * inline); also the op check, the 32 KiB floor, and "<" for "<=" at either
 * bound. */
static void test_not_inline_requests(void **state)
{
	struct blkdev *dev = blkdev_mem_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(dev, NULL, "v", 64 * MiB, &v);
	char *buf = malloc(2 * MiB + BS), *part = malloc(10 * BS);
	struct treq t[MINB + 1], x;
	unsigned gen = 1, ctl = 1000, n;

	assert_non_null(buf);
	assert_non_null(part);
	store_thread_register();

	/* under 32 KiB */
	must_inline(st, v, 1000, ctl++);
	fill(buf, 10, MINB - 1, gen);
	for (unsigned k = 0; k < MINB - 1; k++)
		treq_init(&t[k], v, STORE_WRITE, buf + k * BS, (10 + k) * BS, BS, 0);
	must_queue(st, t, MINB - 1, "28 KiB");
	all_ok(t, MINB - 1);
	expect(v, 10, MINB - 1, gen++);

	/* a FLUSH */
	must_inline(st, v, 1000, ctl++);
	treq_init(&x, v, STORE_FLUSH, NULL, 0, 0, 0);
	n = writes_then(t, buf, v, 20, MINB, gen, &x);
	must_queue(st, t, n, "32 KiB and a FLUSH");
	all_ok(t, n);
	expect(v, 20, MINB, gen++);

	/* a FUA write of 32 KiB */
	must_inline(st, v, 1000, ctl++);
	fill(buf, 30, MINB, gen);
	treq_init(&t[0], v, STORE_WRITE, buf, 30 * BS, MINB * BS, STORE_FUA);
	must_queue(st, t, 1, "32 KiB with FUA");
	all_ok(t, 1);
	expect(v, 30, MINB, gen++);

	/* Partial blocks: 32 KiB at an offset off the block; 36 KiB less
	 * 512 bytes from a block; 512 bytes after 32 KiB that fits.  Blocks
	 * 40-49, 50-58 and 60-67 then read one generation (the pieces the
	 * three leave out written with store_write). */
	fill(part, 40, 10, gen);
	must_inline(st, v, 1000, ctl++);
	treq_init(&t[0], v, STORE_WRITE, part + 512, 40 * BS + 512, MINB * BS, 0);
	must_queue(st, t, 1, "32 KiB at an offset off the block");
	all_ok(t, 1);
	must_inline(st, v, 1000, ctl++);
	fill(buf, 50, 9, gen);
	treq_init(&t[0], v, STORE_WRITE, buf, 50 * BS, 9 * BS - 512, 0);
	must_queue(st, t, 1, "36 KiB less 512 bytes");
	all_ok(t, 1);
	assert_int_equal(store_write(v, buf + 9 * BS - 512, 59 * BS - 512, 512, 0), 0);
	expect(v, 50, 9, gen);
	must_inline(st, v, 1000, ctl++);
	treq_init(&x, v, STORE_WRITE, part, 40 * BS, 512, 0);
	n = writes_then(t, buf, v, 60, MINB, gen, &x);
	must_queue(st, t, n, "32 KiB and 512 bytes");
	all_ok(t, n);
	assert_int_equal(store_write(v, part + MINB * BS + 512, 48 * BS + 512, 2 * BS - 512, 0), 0);
	expect(v, 40, 10, gen);
	expect(v, 60, MINB, gen++);

	/* a TRIM, a ZERO, each of a whole block after 32 KiB that fits */
	must_inline(st, v, 1000, ctl++);
	treq_init(&x, v, STORE_TRIM, NULL, 70 * BS, BS, 0);
	n = writes_then(t, buf, v, 80, MINB, gen, &x);
	must_queue(st, t, n, "32 KiB and a TRIM");
	all_ok(t, n);
	expect(v, 80, MINB, gen++);
	must_inline(st, v, 1000, ctl++);
	treq_init(&x, v, STORE_ZERO, NULL, 71 * BS, BS, 0);
	n = writes_then(t, buf, v, 90, MINB, gen, &x);
	must_queue(st, t, n, "32 KiB and a ZERO");
	all_ok(t, n);
	expect(v, 90, MINB, gen++);
	expect_zero(v, 70 * BS, 2 * BS);

	/* Payload: one 2 MiB write (it hands the plug over inside
	 * store_submit_plugged, so writer_inline sees it alone), 4 KiB then
	 * 1 MiB in one plug (the 1 MiB write hands both over), and exactly
	 * 1 MiB, which still fits. */
	must_inline(st, v, 1000, ctl++);
	fill(buf, 1024, 512, gen);
	treq_init(&t[0], v, STORE_WRITE, buf, 1024 * BS, 2 * MiB, 0);
	must_queue(st, t, 1, "a 2 MiB write");
	all_ok(t, 1);
	expect(v, 1024, 512, gen++);
	must_inline(st, v, 1000, ctl++);
	fill(buf, 2048, 257, gen);
	treq_init(&t[0], v, STORE_WRITE, buf, 2048 * BS, BS, 0);
	treq_init(&t[1], v, STORE_WRITE, buf + BS, 2049 * BS, MiB, 0);
	must_queue(st, t, 2, "4 KiB and 1 MiB");
	all_ok(t, 2);
	expect(v, 2048, 257, gen++);
	bool inl = false;
	for (int i = 0; i < 5 && !inl; i++) {
		fill(buf, 4096, 256, gen);
		treq_init(&t[0], v, STORE_WRITE, buf, 4096 * BS, MiB, 0);
		inl = plug_run(st, t, 1);
		all_ok(t, 1);
		expect(v, 4096, 256, gen);
	}
	assert_true(inl);

	free(buf);
	free(part);
	store_thread_unregister();
	store_vol_close(v);
	store_close(st);
}

/* A plug from a thread of the test's own (registered or not). */
struct other {
	struct treq *t;
	unsigned n;
	bool reg;
	enum plug_outcome out;
	pthread_t self;
};

static void *other_main(void *arg)
{
	struct other *o = arg;
	o->self = pthread_self();
	if (o->reg)
		store_thread_register();
	o->out = plug_go(o->t, o->n);
	if (o->reg)
		store_thread_unregister();
	return NULL;
}

static enum plug_outcome plug_from_thread(struct store *st, struct treq *t, unsigned n, bool reg)
{
	struct other o = {.t = t, .n = n, .reg = reg};
	pthread_t th;
	wait_asleep(st);
	assert_int_equal(pthread_create(&th, NULL, other_main, &o), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	return o.out;
}

/* Who calls matters: an inline round takes the RCU read side (tree
 * walks), so the thread must be registered, and it synchronizes nothing
 * but must not run inside a read-side section either (store_read_lock).
 * A registered thread of the test's own runs a plug inline (tried up to
 * five times); an unregistered one, and the test's thread inside
 * store_read_lock, send the same plug to the log thread.
 * Catches: the urcu_memb_read_ongoing() check dropped (mutation d: the
 * plug inside store_read_lock runs inline; no deadlock, since nothing in a
 * round waits for a grace period), the registration check dropped. */
static void test_not_inline_threads(void **state)
{
	struct blkdev *dev = blkdev_mem_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(dev, NULL, "v", 16 * MiB, &v);
	enum { N = MINB };
	static char buf[N * BS];
	struct treq t[N];
	unsigned gen = 1, inl = 0;

	/* a registered thread: inline */
	for (int i = 0; i < 5 && !inl; i++, gen++) {
		struct store_stats s0 = stats(st);
		fill(buf, 0, N, gen);
		for (unsigned k = 0; k < N; k++)
			treq_init(&t[k], v, STORE_WRITE, buf + k * BS, k * BS, BS, 0);
		enum plug_outcome o = plug_from_thread(st, t, N, true);
		assert_true(o == PLUG_INLINE || o == PLUG_QUEUED);
		inl = o == PLUG_INLINE;
		assert_int_equal(stats(st).inline_rounds - s0.inline_rounds, inl);
		for (unsigned k = 0; k < N; k++)
			assert_int_equal(t[k].err, 0);
		expect(v, 0, N, gen);
		if (stats(st).inline_slow != s0.inline_slow)
			usleep(120 * 1000);
	}
	assert_true(inl);

	/* an unregistered thread: the log thread's */
	struct store_stats s0 = stats(st);
	fill(buf, 8, N, gen);
	for (unsigned k = 0; k < N; k++)
		treq_init(&t[k], v, STORE_WRITE, buf + k * BS, (8 + k) * BS, BS, 0);
	if (plug_from_thread(st, t, N, false) != PLUG_QUEUED)
		fail_msg("a plug from an unregistered thread did not go to the log thread");
	assert_int_equal(stats(st).inline_rounds, s0.inline_rounds);
	for (unsigned k = 0; k < N; k++)
		assert_int_equal(t[k].err, 0);
	expect(v, 8, N, gen++);

	/* this (registered) thread inside a read-side section */
	store_thread_register();
	must_inline(st, v, 100, gen++);
	s0 = stats(st);
	wait_asleep(st);
	fill(buf, 16, N, gen);
	for (unsigned k = 0; k < N; k++)
		treq_init(&t[k], v, STORE_WRITE, buf + k * BS, (16 + k) * BS, BS, 0);
	struct store_plug p = {0};
	store_read_lock();
	for (unsigned k = 0; k < N; k++)
		store_submit_plugged(&p, &t[k].r);
	store_unplug(&p);
	store_read_unlock();
	assert_true(treq_wait(t, N));
	for (unsigned k = 0; k < N; k++) {
		assert_int_equal(t[k].err, 0);
		if (pthread_equal(t[k].thread, pthread_self()))
			fail_msg("a plug inside store_read_lock ran inline");
	}
	assert_int_equal(stats(st).inline_rounds, s0.inline_rounds);
	expect(v, 16, N, gen++);
	store_thread_unregister();

	store_vol_close(v);
	store_close(st);
}

/* A request already in the log thread's queue goes first: a plug that
 * fits, unplugged while a write of the same block waits in the queue (put
 * there without waking the log thread, which has just begun its
 * one-second sleep), goes to the queue behind it, and the block ends with
 * the plug's data.
 * Catches: !q->head dropped from open_q (mutation g: the plug runs inline
 * ahead of the queued write, which then overwrites it). */
static void test_not_inline_behind_queue(void **state)
{
	struct blkdev *dev = blkdev_mem_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(dev, NULL, "v", 16 * MiB, &v);
	struct req_queue *q = &st->wr.q;
	static char a[BS], b[MINB * BS];
	static struct treq first, t[MINB]; /* the store may outlive a failure */

	store_thread_register();
	must_inline(st, v, 50, 1);
	fill(a, 7, 1, 2);
	fill(b, 7, MINB, 3);
	treq_init(&first, v, STORE_WRITE, a, 7 * BS, BS, 0);
	first.r.t_submit = iostats_now();
	for (unsigned k = 0; k < MINB; k++)
		treq_init(&t[k], v, STORE_WRITE, b + k * BS, (7 + k) * BS, BS, 0);
	struct store_stats s0 = stats(st); /* also restarts the log thread's second */
	wait_asleep(st);
	pthread_mutex_lock(&q->lock);
	assert_null(q->head);
	q->head = q->tail = &first.r; /* queued, nobody woken */
	pthread_mutex_unlock(&q->lock);
	enum plug_outcome o = plug_go(t, MINB);
	assert_true(treq_wait(&first, 1));
	if (o != PLUG_QUEUED)
		fail_msg("a plug ran inline ahead of a queued write");
	assert_int_equal(first.err, 0);
	all_ok(t, MINB);
	assert_int_equal(stats(st).inline_rounds, s0.inline_rounds);
	expect(v, 7, MINB, 3);
	store_thread_unregister();
	store_vol_close(v);
	store_close(st);
}

/* The log thread between taking its queue and getting wr.own: awake, the
 * queue already empty, the mutex free.  A plug then goes to the queue, so
 * that no inline round runs ahead of work the log thread has taken (and
 * the log thread does not wait for the mutex behind back-to-back inline
 * rounds).  The state is made by hand: take_queue sets awake under the
 * queue's lock before it returns; here the log thread really sleeps and
 * the push wakes it, and its take_queue sets the flag anew.
 * Catches: !st->wr.awake dropped from open_q (the plug runs inline). */
static void test_not_inline_log_awake(void **state)
{
	struct blkdev *dev = blkdev_mem_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(dev, NULL, "v", 16 * MiB, &v);
	struct req_queue *q = &st->wr.q;
	static char b[MINB * BS];
	static struct treq t[MINB]; /* the store may outlive a failure */

	store_thread_register();
	must_inline(st, v, 50, 1);
	fill(b, 3, MINB, 2);
	for (unsigned k = 0; k < MINB; k++)
		treq_init(&t[k], v, STORE_WRITE, b + k * BS, (3 + k) * BS, BS, 0);
	uint64_t rounds = peek(st).inline_rounds;
	wait_asleep(st);
	pthread_mutex_lock(&q->lock);
	st->wr.awake = true; /* as after take_queue, before wr.own */
	pthread_mutex_unlock(&q->lock);
	enum plug_outcome o = plug_go(t, MINB);
	if (o != PLUG_QUEUED)
		fail_msg("a plug ran inline while the log thread was awake (outcome %d)", (int)o);
	all_ok(t, MINB);
	assert_int_equal(peek(st).inline_rounds, rounds);
	expect(v, 3, MINB, 2);
	store_thread_unregister();
	store_vol_close(v);
	store_close(st);
}

/* A failed pool runs no inline round: the plug goes to the log thread,
 * which answers -EIO.
 * Catches: the st->failed check dropped (the round runs here, -EIO on this
 * thread). */
static void test_not_inline_failed(void **state)
{
	struct blkdev *dev = blkdev_mem_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(dev, NULL, "v", 16 * MiB, &v);
	static char buf[MINB * BS];
	struct treq t[MINB];

	store_thread_register();
	must_inline(st, v, 100, 1);
	blkdev_mem_fail_write(dev, 1);
	fill(buf, 0, MINB, 2);
	assert_int_equal(store_write(v, buf, 0, BS, 0), -EIO);
	assert_true(stats(st).failed);
	for (unsigned k = 0; k < MINB; k++)
		treq_init(&t[k], v, STORE_WRITE, buf + k * BS, k * BS, BS, 0);
	must_queue(st, t, MINB, "a failed pool");
	for (unsigned k = 0; k < MINB; k++)
		assert_int_equal(t[k].err, -EIO);
	store_thread_unregister();
	store_vol_close(v);
	store_close(st);
}

/* Once the log thread has stopped (store_close's first step), a plug is
 * refused with -ESHUTDOWN like any other request (test_writer.c), never run
 * inline beside whatever closes the store.
 * Catches: the stopped/closed queue checks dropped from open_q (the writes
 * succeed, inline). */
static void test_not_inline_stopped(void **state)
{
	struct blkdev *dev = blkdev_mem_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(dev, NULL, "v", 16 * MiB, &v);
	static char buf[MINB * BS];
	struct treq t[MINB];

	store_thread_register();
	must_inline(st, v, 100, 1);
	writer_stop(st);
	uint64_t rounds = st->stats.inline_rounds; /* nobody else runs now */
	fill(buf, 0, MINB, 2);
	for (unsigned k = 0; k < MINB; k++)
		treq_init(&t[k], v, STORE_WRITE, buf + k * BS, k * BS, BS, 0);
	assert_int_equal(plug_go(t, MINB), PLUG_INLINE); /* refused at once, here */
	for (unsigned k = 0; k < MINB; k++)
		assert_int_equal(t[k].err, -ESHUTDOWN);
	assert_int_equal(st->stats.inline_rounds, rounds);
	store_thread_unregister();
	store_vol_close(v);
	store_close(st);
}

/* Over the object-store backend (segio_obj over objstore_mem) appends wait
 * on a network: no inline round, the plug goes to the log thread and its
 * data reads back.
 * Catches: the segio_local() check dropped. */
static void test_not_inline_objstore(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct objstore *os = objstore_mem_client(m);
	struct segio_obj_opts o = {.name = "p", .label = "mem:p"};
	const char *why = NULL;
	struct segio *io;
	struct store *st;
	struct vol *v;
	enum { N = MINB };
	static char buf[N * BS];
	struct treq t[N];

	assert_non_null(os);
	io = segio_obj_new(os, NULL, &o, &why);
	if (!io)
		fail_msg("segio_obj_new: %s", why ? why : "?");
	assert_int_equal(store_format_io(io, 32), 0);
	st = store_open_io(io, NULL, &why);
	if (!st)
		fail_msg("store_open_io: %s", why ? why : "?");
	assert_int_equal(store_vol_create(st, "v", 16 * MiB), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	store_thread_register();
	for (unsigned gen = 1; gen <= 3; gen++) {
		fill(buf, 0, N, gen);
		for (unsigned k = 0; k < N; k++)
			treq_init(&t[k], v, STORE_WRITE, buf + k * BS, k * BS, BS, 0);
		must_queue(st, t, N, "the object-store backend");
		for (unsigned k = 0; k < N; k++)
			assert_int_equal(t[k].err, 0);
		expect(v, 0, N, gen);
	}
	assert_int_equal(stats(st).inline_rounds, 0);
	store_thread_unregister();
	store_vol_close(v);
	store_close(st);
	objstore_mem_free(m);
}

/* ---- 3. the log thread at work ------------------------------------------- */

/* While the log thread holds wr.own (here: in the sync of a control
 * change, held by the device; a FLUSH's sync runs on the syncer and holds
 * nothing), plugs that would fit go to its queue: store_unplug returns
 * at once, none completes until the sync is let go, then all do, on the
 * log thread, with no inline round counted; their data reads back.  The
 * plugs come from a registered thread of their own, bounded, so that an
 * unplug that waits for the log thread fails the test rather than hang it.
 * Catches: a blocking lock of wr.own for the trylock (the unplug waits
 * out the held sync). */
enum { BUSY_PLUGS = 8 };
struct busy {
	struct vol *v;
	char buf[BUSY_PLUGS][MINB * BS];
	struct treq t[BUSY_PLUGS][MINB];
};

/* A control change on a thread of its own: the log thread syncs for it. */
static void *create_vol(void *arg)
{
	struct store *st = arg;
	return (void *)(intptr_t)store_vol_create(st, "w", MiB);
}

/* Unplug them all; how many had completed by then (0 expected). */
static int busy_plugs(void *arg)
{
	struct busy *b = arg;
	int early = 0;
	store_thread_register();
	for (unsigned i = 0; i < BUSY_PLUGS; i++) {
		struct store_plug p = {0};
		fill(b->buf[i], i * MINB, MINB, 2);
		for (unsigned k = 0; k < MINB; k++) {
			treq_init(&b->t[i][k], b->v, STORE_WRITE, b->buf[i] + k * BS,
			          (i * MINB + k) * BS, BS, 0);
			store_submit_plugged(&p, &b->t[i][k].r);
		}
		store_unplug(&p);
		early += (int)treq_ndone(b->t[i], MINB);
	}
	store_thread_unregister();
	return early;
}

static void test_busy_log_thread(void **state)
{
	struct faultdev *f = faultdev_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(&f->dev, NULL, "v", 16 * MiB, &v);
	static struct busy b; /* the store may outlive a failure */
	pthread_t ctl;
	void *ret;

	store_thread_register();
	must_inline(st, v, 200, 1);
	struct store_stats s0 = stats(st);
	wait_asleep(st);
	f->hold_flush = 1;
	assert_int_equal(pthread_create(&ctl, NULL, create_vol, st), 0);
	for (int i = 0; i < BOUND * 1000 && !f->flushes_held; i++)
		usleep(1000);
	assert_true(f->flushes_held > 0); /* the log thread is in the sync */
	b.v = v;
	assert_int_equal(call_bounded(busy_plugs, &b, BOUND, "plugs beside a held sync"), 0);
	usleep(20 * 1000);
	for (unsigned i = 0; i < BUSY_PLUGS; i++)
		assert_int_equal(treq_ndone(b.t[i], MINB), 0);
	f->hold_flush = 0;
	assert_int_equal(pthread_join(ctl, &ret), 0);
	assert_int_equal((intptr_t)ret, 0);
	for (unsigned i = 0; i < BUSY_PLUGS; i++) {
		assert_true(treq_wait(b.t[i], MINB));
		all_ok(b.t[i], MINB);
		for (unsigned k = 0; k < MINB; k++)
			assert_false(pthread_equal(b.t[i][k].thread, pthread_self()));
	}
	assert_int_equal(stats(st).inline_rounds, s0.inline_rounds);
	expect(v, 0, BUSY_PLUGS * MINB, 2);
	store_thread_unregister();
	store_vol_close(v);
	store_close(st);
	faultdev_free(f);
}

/* The mixed load: three threads plug random requests into disjoint ranges
 * of one volume, each waiting for a plug's completion before the next (so
 * that a model of the volume is well defined), while the test's thread
 * flushes, snapshots, checkpoints and once stalls the log thread for a
 * second.  Two of the writers are registered (their plugs run inline when
 * the log thread sleeps, or go to the queue; they race each other for
 * wr.own), one is not (always the queue).  Plugs hold whole-block writes
 * mostly, sometimes a partial write, a FUA write, a TRIM or a ZERO.  At
 * the end every request succeeded, the volume equals the model and checks
 * clean, and again after a close and reopen (recovery from the log and the
 * checkpoints). */
#define MIX_WRITERS 3
#define MIX_BLOCKS  1024 /* per writer */
#define MIX_PLUGS   150

struct mixer {
	struct vol *v;
	uint64_t lo; /* first block of its range */
	bool reg;
	uint64_t rnd;
	unsigned char *model; /* the whole volume; this writer's range only */
	unsigned plugs, inline_plugs, queued_plugs;
	int bad; /* requests that failed, or plugs half inline */
	pthread_barrier_t *go;
};

static uint64_t rnd_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *mix_main(void *arg)
{
	struct mixer *m = arg;
	enum { MAXR = 6, MAXB = 16 };
	char(*bufs)[MAXB * BS] = malloc(MAXR * sizeof(*bufs));
	struct treq t[MAXR];

	if (!bufs) {
		__atomic_fetch_add(&m->bad, 1, __ATOMIC_RELAXED);
		return NULL;
	}
	if (m->reg)
		store_thread_register();
	pthread_barrier_wait(m->go);
	for (unsigned it = 0; it < MIX_PLUGS; it++) {
		unsigned n = 1 + (unsigned)(rnd_next(&m->rnd) % MAXR);
		for (unsigned i = 0; i < n; i++) {
			unsigned kind = (unsigned)(rnd_next(&m->rnd) % 100);
			uint64_t nb = 1 + rnd_next(&m->rnd) % MAXB;
			uint64_t lba = m->lo + rnd_next(&m->rnd) % (MIX_BLOCKS - nb + 1);
			uint64_t off = lba * BS, len = nb * BS;
			enum store_op op = STORE_WRITE;
			uint32_t flags = 0;
			if (kind < 12) { /* a partial write inside the range */
				off += rnd_next(&m->rnd) % BS;
				len = 1 + rnd_next(&m->rnd) % (m->lo * BS + MIX_BLOCKS * BS - off);
				len = len > MAXB * BS ? MAXB * BS : len;
			} else if (kind < 20) {
				flags = STORE_FUA;
			} else if (kind < 25) {
				op = STORE_TRIM;
			} else if (kind < 28) {
				op = STORE_ZERO;
			}
			for (uint64_t k = 0; k < len; k++)
				bufs[i][k] = (char)rnd_next(&m->rnd);
			treq_init(&t[i], m->v, op, op == STORE_WRITE ? bufs[i] : NULL, off,
			          (uint32_t)len, flags);
		}
		enum plug_outcome o = plug_go(t, n);
		m->inline_plugs += o == PLUG_INLINE;
		m->queued_plugs += o == PLUG_QUEUED;
		if (o == PLUG_MIXED || o == PLUG_TIMEOUT) {
			__atomic_fetch_add(&m->bad, 1, __ATOMIC_RELAXED);
			break;
		}
		for (unsigned i = 0; i < n; i++) {
			const struct store_req *r = &t[i].r;
			if (t[i].err)
				__atomic_fetch_add(&m->bad, 1, __ATOMIC_RELAXED);
			if (r->op == STORE_WRITE)
				memcpy(m->model + r->off, r->buf, r->len);
			else
				memset(m->model + r->off, 0, r->len);
		}
		__atomic_fetch_add(&m->plugs, 1, __ATOMIC_RELAXED);
	}
	if (m->reg)
		store_thread_unregister();
	free(bufs);
	return NULL;
}

static void expect_model(struct vol *v, const unsigned char *model, uint64_t size)
{
	char *got = malloc(MiB);
	assert_non_null(got);
	for (uint64_t off = 0; off < size; off += MiB) {
		assert_int_equal(store_read(v, got, off, MiB), 0);
		if (memcmp(got, model + off, MiB)) {
			uint64_t i = 0;
			while (got[i] == (char)model[off + i])
				i++;
			fail_msg("the volume differs from the model at byte %llu",
			         (unsigned long long)(off + i));
		}
	}
	free(got);
}

static void test_mixed_load(void **state)
{
	struct faultdev *f = faultdev_new(256 * MiB);
	const uint64_t size = (uint64_t)MIX_WRITERS * MIX_BLOCKS * BS;
	struct vol *v;
	struct store *st = testpool_volume(&f->dev, NULL, "v", size, &v);
	unsigned char *model = calloc(1, size);
	struct mixer m[MIX_WRITERS];
	pthread_t th[MIX_WRITERS];
	pthread_barrier_t go;
	unsigned snaps = 0;

	assert_non_null(model);
	assert_int_equal(pthread_barrier_init(&go, NULL, MIX_WRITERS + 1), 0);
	for (unsigned i = 0; i < MIX_WRITERS; i++) {
		m[i] = (struct mixer){.v = v,
		                      .lo = i * MIX_BLOCKS,
		                      .reg = i < 2,
		                      .rnd = 0x9e3779b97f4a7c15ull * (i + 1),
		                      .model = model,
		                      .go = &go};
		assert_int_equal(pthread_create(&th[i], NULL, mix_main, &m[i]), 0);
	}
	struct store_stats s0 = stats(st);
	pthread_barrier_wait(&go);
	/* Control work through the queue until the writers are through: a
	 * second's stall early, then flushes, snapshots, checkpoints. */
	int ctl_bad = 0;
	ctl_bad += store_stall_log(st, 1) != 0;
	for (unsigned i = 0;; i++) {
		unsigned done = 0;
		for (unsigned k = 0; k < MIX_WRITERS; k++)
			done += __atomic_load_n(&m[k].plugs, __ATOMIC_RELAXED) == MIX_PLUGS ||
			        __atomic_load_n(&m[k].bad, __ATOMIC_RELAXED);
		if (done == MIX_WRITERS)
			break;
		ctl_bad += store_flush(v) != 0;
		if (i % 4 == 1 && snaps < 16) {
			char name[32];
			snprintf(name, sizeof(name), "v@s%u", snaps++);
			ctl_bad += store_snap_create(st, name) != 0;
		}
		if (i % 8 == 3)
			ctl_bad += store_checkpoint(st) != 0;
		usleep(2000);
	}
	for (unsigned i = 0; i < MIX_WRITERS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	pthread_barrier_destroy(&go);
	struct store_stats s1 = stats(st);
	unsigned inl = 0, queued = 0;
	for (unsigned i = 0; i < MIX_WRITERS; i++) {
		assert_int_equal(m[i].bad, 0);
		assert_int_equal(m[i].plugs, MIX_PLUGS);
		inl += m[i].inline_plugs;
		queued += m[i].queued_plugs;
	}
	print_message("%u plugs inline, %u queued (%u registered writers' plugs), %u snapshots\n",
	              inl, queued, 2 * MIX_PLUGS, snaps);
	assert_int_equal(ctl_bad, 0);
	assert_int_equal(m[2].inline_plugs, 0); /* the unregistered writer */
	assert_int_equal(s1.inline_rounds - s0.inline_rounds, inl);
	expect_model(v, model, size);
	assert_int_equal(store_check(st), 0);
	store_vol_close(v);
	store_close(st);

	st = testpool_open(&f->dev, NULL);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	expect_model(v, model, size);
	assert_int_equal(store_check(st), 0);
	store_vol_close(v);
	store_close(st);
	faultdev_free(f);
	free(model);
}

/* ---- 4. the kick ------------------------------------------------------------ */

/* Only inline rounds, nothing ever queued by the test: once their log
 * passes the checkpoint interval (256 KiB here) the inline round wakes the
 * log thread, which takes a checkpoint.  The test looks with peek() (a
 * stats job would itself make the log thread begin the due checkpoint).
 * First 2 MiB in 64 KiB plugs, then a 32 KiB plug every 100 ms (so the log
 * thread never has an idle second, which would also begin it), up to 30 s.
 * Catches: the kick dropped (mutation e: no checkpoint in 30 s). */
static void test_kick_checkpoint(void **state)
{
	const struct store_opts o = {.checkpoint_bytes = 256u << 10};
	struct blkdev *dev = blkdev_mem_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(dev, &o, "v", 16 * MiB, &v);
	enum { N = 16, NBLK = 512 /* 2 MiB */ };
	static char buf[N * BS];
	struct treq t[N];
	unsigned plugs = 0, inl = 0;
	uint64_t lba = 0;

	store_thread_register();
	assert_int_equal(store_checkpoint(st), 0); /* none due, none in flight */
	wait_asleep(st);
	uint64_t c0 = peek(st).checkpoints;
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (peek(st).checkpoints != c0)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - t0.tv_sec > 30)
			fail_msg("no checkpoint after %u plugs (%u inline), %llu blocks", plugs,
			         inl, (unsigned long long)lba);
		unsigned n = lba < NBLK ? N : MINB;
		fill(buf, lba % NBLK, n, 1);
		for (unsigned k = 0; k < n; k++)
			treq_init(&t[k], v, STORE_WRITE, buf + k * BS, (lba % NBLK + k) * BS, BS,
			          0);
		wait_asleep(st);
		enum plug_outcome out = plug_go(t, n);
		assert_true(out == PLUG_INLINE || out == PLUG_QUEUED);
		for (unsigned k = 0; k < n; k++)
			assert_int_equal(t[k].err, 0);
		plugs++;
		inl += out == PLUG_INLINE;
		lba += n;
		if (lba >= NBLK)
			usleep(100 * 1000);
	}
	print_message("a checkpoint after %u plugs (%u inline), %llu blocks\n", plugs, inl,
	              (unsigned long long)lba);
	expect(v, 0, lba < NBLK ? lba : NBLK, 1);
	assert_int_equal(store_check(st), 0);
	store_thread_unregister();
	store_vol_close(v);
	store_close(st);
}

/* ---- 5. inline rounds are not idleness ---------------------------------- */

/* The log thread's second without a request is idle (space_idle: idle
 * compaction, discards) only if no inline round ran in it either.  A pool
 * is made where idle cleaning is due (32 MiB written, then three blocks of
 * every four overwritten: old segments a quarter live), then a thread runs
 * an inline round every 2 ms for 2.5 s: no compaction meanwhile.  Once the
 * rounds stop, the idle compaction comes within seconds (so it was due
 * all along).  Observed with peek(), which does not wake the log thread.
 * Catches: take_queue's idle ignoring wr.active (*idle = timed_out). */
static void test_inline_not_idle(void **state)
{
	struct blkdev *dev = blkdev_mem_new(256 * MiB);
	struct vol *v;
	enum { NBLK = 8192 /* 32 MiB */, STEP = 16 };
	struct store *st = testpool_volume(dev, NULL, "v", NBLK * (uint64_t)BS, &v);
	char *buf = malloc(STEP * BS);
	struct treq t[MINB];

	assert_non_null(buf);
	store_thread_register();
	for (uint64_t lba = 0; lba < NBLK; lba += STEP) {
		fill(buf, lba, STEP, 1);
		assert_int_equal(store_write(v, buf, lba * BS, STEP * BS, 0), 0);
	}
	for (uint64_t lba = 0; lba < NBLK; lba += 4) {
		fill(buf, lba + 1, 3, 2);
		assert_int_equal(store_write(v, buf, (lba + 1) * BS, 3 * BS, 0), 0);
	}
	/* The rounds start at once: the log thread's second began with the
	 * last write. */
	uint64_t c0 = peek(st).compactions;
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	unsigned rounds = 0, inl = 0;
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 > 2500)
			break;
		uint64_t lba = (rounds * MINB) % 256;
		fill(buf, lba, MINB, 3);
		for (unsigned k = 0; k < MINB; k++)
			treq_init(&t[k], v, STORE_WRITE, buf + k * BS, (lba + k) * BS, BS, 0);
		enum plug_outcome out = plug_go(t, MINB);
		assert_true(out == PLUG_INLINE || out == PLUG_QUEUED);
		rounds++;
		inl += out == PLUG_INLINE;
		usleep(2000);
	}
	uint64_t c1 = peek(st).compactions;
	print_message("%u plugs (%u inline) in 2.5 s; compactions %llu -> %llu\n", rounds, inl,
	              (unsigned long long)c0, (unsigned long long)c1);
	assert_true(inl > 0);
	assert_int_equal(c1, c0);
	/* Now idle: the compaction that was due. */
	uint64_t c = c1;
	for (int i = 0; i < 30 * 20 && c == c1; i++) {
		usleep(50 * 1000);
		c = peek(st).compactions;
	}
	assert_true(c > c1);
	expect(v, 0, MINB, 3);
	expect(v, 4096, 1, 1);
	expect(v, 4097, 3, 2);
	assert_int_equal(store_check(st), 0);
	free(buf);
	store_thread_unregister();
	store_vol_close(v);
	store_close(st);
}

/* ---- a slow round --------------------------------------------------------- */

/* An inline round that takes over 2 ms (here every device write sleeps
 * 3 ms) counts in inline_slow and turns inline rounds off for 100 ms: a
 * plug right after it goes to the log thread.  Checked only when both
 * plugs fit in 100 ms as the test measures them (from before the first
 * unplug to after the second returns, a span that contains the window's
 * start and the second's look); 150 ms later, with the device fast again,
 * a plug runs inline again.
 * Catches: the inline_off_until check dropped (the second plug runs
 * inline), the slow round not counted. */
static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void test_slow_round(void **state)
{
	struct faultdev *f = faultdev_new(256 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(&f->dev, NULL, "v", 16 * MiB, &v);
	static char buf[2][MINB * BS];
	struct treq t1[MINB], t2[MINB];
	bool checked = false;

	store_thread_register();
	must_inline(st, v, 100, 1);
	f->write_delay_us = 3000;
	for (int i = 0; i < 5 && !checked; i++) {
		fill(buf[0], 0, MINB, 2 + i);
		fill(buf[1], MINB, MINB, 2 + i);
		for (unsigned k = 0; k < MINB; k++) {
			treq_init(&t1[k], v, STORE_WRITE, buf[0] + k * BS, k * BS, BS, 0);
			treq_init(&t2[k], v, STORE_WRITE, buf[1] + k * BS, (MINB + k) * BS, BS, 0);
		}
		struct store_stats s0 = stats(st);
		wait_asleep(st);
		uint64_t from = mono_ms();
		enum plug_outcome o1 = plug_go(t1, MINB);
		enum plug_outcome o2 = plug_go(t2, MINB);
		uint64_t to = mono_ms();
		struct store_stats s1 = stats(st);
		assert_true(o1 == PLUG_INLINE || o1 == PLUG_QUEUED);
		assert_true(o2 == PLUG_INLINE || o2 == PLUG_QUEUED);
		all_ok(t1, MINB);
		all_ok(t2, MINB);
		expect(v, 0, 2 * MINB, 2 + i);
		assert_int_equal(s1.inline_rounds - s0.inline_rounds,
		                 (o1 == PLUG_INLINE) + (o2 == PLUG_INLINE));
		/* every device write sleeps: every inline round is slow */
		assert_int_equal(s1.inline_slow - s0.inline_slow,
		                 (o1 == PLUG_INLINE) + (o2 == PLUG_INLINE));
		if (o1 == PLUG_INLINE) {
			if (to - from < 100) {
				assert_int_equal(o2, PLUG_QUEUED);
				checked = true;
			}
		}
		usleep(150 * 1000);
	}
	if (!checked)
		print_message("never two plugs within 100 ms: the window is not checked\n");
	f->write_delay_us = 0;
	usleep(150 * 1000);
	must_inline(st, v, 200, 9);
	store_thread_unregister();
	store_vol_close(v);
	store_close(st);
	faultdev_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_inline_rounds, unregister),
	    cmocka_unit_test_teardown(test_not_inline_requests, unregister),
	    cmocka_unit_test_teardown(test_not_inline_threads, unregister),
	    cmocka_unit_test_teardown(test_not_inline_behind_queue, unregister),
	    cmocka_unit_test_teardown(test_not_inline_log_awake, unregister),
	    cmocka_unit_test_teardown(test_not_inline_failed, unregister),
	    cmocka_unit_test_teardown(test_not_inline_stopped, unregister),
	    cmocka_unit_test_teardown(test_not_inline_objstore, unregister),
	    cmocka_unit_test_teardown(test_busy_log_thread, unregister),
	    cmocka_unit_test_teardown(test_mixed_load, unregister),
	    cmocka_unit_test_teardown(test_kick_checkpoint, unregister),
	    cmocka_unit_test_teardown(test_inline_not_idle, unregister),
	    cmocka_unit_test_teardown(test_slow_round, unregister),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
