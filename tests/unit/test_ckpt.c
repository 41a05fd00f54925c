/* test_ckpt.c — the periodic checkpoint runs off the write path (ckpt.c,
 * issue 12): while its sync is held, writes go on and complete; a crash
 * with a checkpoint in flight (written to the log, not yet named by the
 * superblock) reopens from the previous one with every flushed write; and
 * a checkpoint finished in the background frees what died before it; and
 * with many dirty leaves and count pages a periodic checkpoint writes most
 * of them ahead of itself (its pre-copy) with nothing lost, before or
 * after a crash. */
#undef NDEBUG
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "faultdev.h"
#include "store.h"
#include "testpool.h"

#define BS      STORE_BLOCK_SIZE
#define VOLSIZE (64u << 20)
#define NBLK    (VOLSIZE / BS)

static void fill(char *buf, uint64_t lba, unsigned gen)
{
	for (unsigned i = 0; i < BS; i += 8) {
		uint64_t x = lba * 1000003u + gen * 7919u + i;
		memcpy(buf + i, &x, 8);
	}
}

static void write_gen(struct vol *v, uint64_t from, uint64_t n, unsigned gen)
{
	char buf[BS];
	for (uint64_t lba = from; lba < from + n; lba++) {
		fill(buf, lba, gen);
		assert_int_equal(store_write(v, buf, lba * BS, BS, 0), 0);
	}
}

static void expect_gen(struct vol *v, uint64_t from, uint64_t n, unsigned gen)
{
	char buf[BS], want[BS];
	for (uint64_t lba = from; lba < from + n; lba++) {
		fill(want, lba, gen);
		assert_int_equal(store_read(v, buf, lba * BS, BS), 0);
		assert_memory_equal(buf, want, BS);
	}
}

static struct store_stats stats(struct store *st)
{
	struct store_stats s;
	store_get_stats(st, &s);
	return s;
}

/* Write until a checkpoint's sync is waiting on the held flush (a
 * checkpoint is due every 256 KiB of log). */
static uint64_t write_until_held(struct faultdev *p, struct vol *v, unsigned gen)
{
	uint64_t lba = 0;
	for (; lba < NBLK && !p->flushes_held; lba += 16)
		write_gen(v, lba, 16, gen);
	assert_true(p->flushes_held > 0);
	return lba;
}

static const struct store_opts opts = {.checkpoint_bytes = 256u << 10};

/* The old log thread synced inside every checkpoint: with that sync held,
 * no write completed (this test then hung until the alarm). */
static void test_writes_during_sync(void **state)
{
	struct faultdev *p = faultdev_new(256u << 20);
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, &opts, "v", VOLSIZE, &v);
	uint64_t before = stats(st).checkpoints;

	alarm(60);
	p->hold_flush = 1;
	uint64_t done = write_until_held(p, v, 1);
	/* The checkpoint's sync is stuck: 4 MiB more, each write done. */
	write_gen(v, done, 1024, 1);
	expect_gen(v, 0, done + 1024, 1);
	assert_int_equal(stats(st).checkpoints, before);
	p->hold_flush = 0;
	assert_int_equal(store_flush(v), 0);
	assert_int_equal(store_checkpoint(st), 0);
	assert_true(stats(st).checkpoints >= before + 2); /* the held one, then ours */
	assert_int_equal(store_check(st), 0);
	alarm(0);
	store_vol_close(v);
	store_close(st);
	faultdev_free(p);
}

/* Power lost while a checkpoint is written to the log but not named:
 * the pool reopens from the previous checkpoint plus the log, with every
 * write a flush covered. */
static void test_crash_in_flight(void **state)
{
	for (int cut = 0; cut < 3; cut++) {
		struct faultdev *p = faultdev_new(256u << 20);
		struct vol *v;
		struct store *st = testpool_volume(&p->dev, &opts, "v", VOLSIZE, &v);

		alarm(60);
		write_gen(v, 0, NBLK / 2, 1);
		assert_int_equal(store_flush(v), 0);
		p->hold_flush = 1;
		write_until_held(p, v, 2); /* overwrites, not flushed */
		faultdev_power_off(p);
		p->hold_flush = 0; /* the held sync fails: the pool fails */
		store_vol_close(v);
		store_close(st);
		faultdev_power_on_rotate(p, cut);
		st = testpool_open(&p->dev, &opts);
		assert_false(stats(st).failed);
		assert_int_equal(store_check(st), 0);
		assert_int_equal(store_vol_open(st, "v", &v), 0);
		/* Each block holds generation 1 or 2 (a write in flight may or
		 * may not persist), never anything else; the unflushed half
		 * beyond is generation 1 or zero-free of garbage. */
		char buf[BS], w1[BS], w2[BS];
		for (uint64_t lba = 0; lba < NBLK / 2; lba++) {
			fill(w1, lba, 1);
			fill(w2, lba, 2);
			assert_int_equal(store_read(v, buf, lba * BS, BS), 0);
			assert_true(!memcmp(buf, w1, BS) || !memcmp(buf, w2, BS));
		}
		alarm(0);
		store_vol_close(v);
		store_close(st);
		faultdev_free(p);
	}
}

/* Segments that died before a background checkpoint are free once it is
 * finished, without a synchronous one: the pool is large enough that the
 * space policy never asks for one.  Four generations of 64 MiB (each
 * fills at least 16 segments of log with its data) leave the
 * three older ones dead; once the checkpoints after the last write are
 * durable, the only used segments without a live block may be the log's
 * head and the one it continues in (alloc_release_dead keeps both), and
 * the checker finds every live count right: no segment is held without a
 * reason (the test fails if dead ones stay).
 *
 * Not compared with the free count before the overwrites: where a new
 * generation starts and ends within segments (a partly live first
 * segment, a partly filled head, the successor taken or not) moved that
 * count by up to four, and a bound of three failed at random (CI, ASan). */
static void test_frees_in_background(void **state)
{
	struct faultdev *p = faultdev_new(1u << 30);
	struct store_opts o = opts;
	o.checkpoint_secs = 1;
	struct vol *v;
	struct store *st = testpool_volume(&p->dev, &o, "v", VOLSIZE, &v);

	alarm(60);
	for (unsigned gen = 1; gen < 5; gen++)
		write_gen(v, 0, NBLK, gen); /* every earlier copy dies */
	/* Idle: the last writes' checkpoint is due within a second (slower
	 * under sanitizers on a busy machine: up to 30 s).  Its record comes
	 * after them in the log, and it frees what was dead when it began. */
	/* The last summary sealed (log_lsn is the next one's).  A checkpoint
	 * may be in flight already whose own summary that is: it covers
	 * every write, and no later one will come (nothing is logged after
	 * it), so waiting for one past it would wait in vain (this failed
	 * once in four runs beside another test binary). */
	uint64_t last = stats(st).log_lsn - 1;
	struct store_stats s = stats(st);
	for (int i = 0; i < 600 && (s.checkpoint_lsn < last || s.segments_pending > 2); i++) {
		usleep(50 * 1000);
		s = stats(st);
	}
	print_message("%llu segments used, %llu of them without a live block; %llu freed\n",
	              (unsigned long long)(s.segments - s.segments_free),
	              (unsigned long long)s.segments_pending, (unsigned long long)s.segments_freed);
	assert_true(s.checkpoint_lsn >= last);
	assert_true(s.segments_pending <= 2);
	/* The log the older generations filled, but for the segment where
	 * generation 4 began and the first one (it keeps the pool's first
	 * metadata), was freed. */
	assert_true(s.segments_freed >= 3 * (VOLSIZE / s.segment_bytes) - 2);
	expect_gen(v, 0, NBLK, 4);
	assert_int_equal(store_check(st), 0);
	alarm(0);
	store_vol_close(v);
	store_close(st);
	faultdev_free(p);
}

/* One block in every leaf of a 2 GiB volume (1041 leaves), overwritten
 * generation after generation: each periodic checkpoint (every 4 MiB of
 * log: ~500 writes of a block and its summary entry) finds ~500 dirty leaves and writes them ahead
 * of itself, a slice between rounds.  Every generation reads back, the counts check, and so after
 * power is lost with the last generation half written. */
#define PC_LEAVES 1041u
static uint64_t pc_lba(unsigned k)
{
	return (uint64_t)k * 504 + k % 7;
}

static void pc_write(struct vol *v, unsigned gen, unsigned n)
{
	char buf[BS];
	for (unsigned k = 0; k < n; k++) {
		fill(buf, pc_lba(k), gen);
		assert_int_equal(store_write(v, buf, pc_lba(k) * BS, BS, 0), 0);
	}
}

/* Leaves 0 .. n-1 hold generation gen or gen - 1, the rest gen - 1. */
static void pc_expect(struct vol *v, unsigned gen, unsigned n)
{
	char buf[BS], want[BS], alt[BS];
	for (unsigned k = 0; k < PC_LEAVES; k++) {
		fill(want, pc_lba(k), gen);
		fill(alt, pc_lba(k), gen - 1);
		assert_int_equal(store_read(v, buf, pc_lba(k) * BS, BS), 0);
		if (k < n) /* may be either: written, not flushed */
			assert_true(!memcmp(buf, want, BS) || !memcmp(buf, alt, BS));
		else
			assert_memory_equal(buf, alt, BS);
	}
}

/* Overwrite leaf after leaf (generations from g on; gen[] says what each
 * holds) until a pre-copy has begun and its checkpoint is not written yet;
 * then flush: the leaves written so far are durable in the log. */
static void pc_until_precopy(struct store *st, struct vol *v, unsigned *gen, unsigned g)
{
	struct store_stats s1 = stats(st);
	unsigned k = 0, g0 = g;
	char buf[BS];

	for (;; k = (k + 1) % PC_LEAVES, g += !k) {
		assert_true(g < g0 + 3);
		fill(buf, pc_lba(k), g);
		assert_int_equal(store_write(v, buf, pc_lba(k) * BS, BS, 0), 0);
		gen[k] = g;
		struct store_stats s = stats(st);
		if (s.ckpt_precopy_nodes > s1.ckpt_precopy_nodes && s.checkpoints == s1.checkpoints)
			break;
		s1 = s;
	}
	assert_int_equal(store_flush(v), 0);
}

/* Closed (failed or not), power back: the pool opens, checks, and every
 * leaf holds exactly what gen[] says. */
static void pc_reopen_expect(struct faultdev *p, const struct store_opts *o, struct store *st,
                             struct vol *v, const unsigned *gen)
{
	char buf[BS], want[BS];

	store_vol_close(v);
	store_close(st);
	faultdev_power_on(p, false);
	st = testpool_open(&p->dev, o);
	assert_false(stats(st).failed);
	assert_int_equal(store_check(st), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	for (unsigned i = 0; i < PC_LEAVES; i++) {
		fill(want, pc_lba(i), gen[i]);
		assert_int_equal(store_read(v, buf, pc_lba(i) * BS, BS), 0);
		assert_memory_equal(buf, want, BS);
	}
	store_vol_close(v);
	store_close(st);
}

static const struct store_opts pc_opts = {.checkpoint_bytes = 4u << 20};

/* Generation 1 everywhere, flushed and checkpointed. */
static struct store *pc_pool(struct faultdev *p, struct vol **v, unsigned *gen)
{
	struct store *st = testpool_volume(&p->dev, &pc_opts, "v", 2ull << 30, v);
	pc_write(*v, 1, PC_LEAVES);
	assert_int_equal(store_flush(*v), 0);
	assert_int_equal(store_checkpoint(st), 0);
	for (unsigned i = 0; i < PC_LEAVES; i++)
		gen[i] = 1;
	return st;
}

static void test_precopy(void **state)
{
	struct faultdev *p = faultdev_new(512u << 20);
	struct vol *v;
	unsigned gen[PC_LEAVES];

	alarm(120);
	struct store *st = pc_pool(p, &v, gen);
	struct store_stats s0 = stats(st);
	for (unsigned g = 2; g <= 4; g++)
		pc_write(v, g, PC_LEAVES);
	assert_int_equal(store_flush(v), 0);
	struct store_stats s1 = stats(st);
	print_message("%llu checkpoints, %llu leaves written ahead, longest stretch %.2f ms\n",
	              (unsigned long long)(s1.checkpoints - s0.checkpoints),
	              (unsigned long long)(s1.ckpt_precopy_nodes - s0.ckpt_precopy_nodes),
	              (double)s1.ckpt_log_max_ns / 1e6);
	assert_true(s1.checkpoints >= s0.checkpoints + 2);
	assert_true(s1.ckpt_precopy_nodes >= s0.ckpt_precopy_nodes + 256);
	pc_expect(v, 5, 0); /* generation 4 everywhere */
	assert_int_equal(store_check(st), 0);
	for (unsigned i = 0; i < PC_LEAVES; i++)
		gen[i] = 4;
	/* A pre-copy begun, its leaves durable in the log, no record after
	 * them: the power goes.  Every write before the flush is there,
	 * no less, no more. */
	pc_until_precopy(st, v, gen, 5);
	faultdev_power_off(p);
	pc_reopen_expect(p, &pc_opts, st, v, gen);
	alarm(0);
	faultdev_free(p);
}

/* A write of the pre-copy fails (once: the device works again at once):
 * its leaves are clean and named by nothing on disk, so the pool fails,
 * as when a checkpoint's write fails, and reopens with every flushed
 * write.  (It went on before: the checkpoint that followed named leaves
 * never written, and store_check found hundreds of bad references.) */
static void test_precopy_write_error(void **state)
{
	struct faultdev *p = faultdev_new(512u << 20);
	struct vol *v;
	unsigned gen[PC_LEAVES];

	alarm(120);
	struct store *st = pc_pool(p, &v, gen);
	pc_until_precopy(st, v, gen, 2);
	/* No client writes from here: what the log thread writes next is a
	 * slice of the pre-copy (one runs after each request, stats too). */
	p->fail_next = 1;
	for (int i = 0; i < 8 && !stats(st).failed; i++)
		;
	assert_true(stats(st).failed);
	assert_int_equal(p->fail_next, 0);
	pc_reopen_expect(p, &pc_opts, st, v, gen);
	alarm(0);
	faultdev_free(p);
}

/* Count pages written ahead: 512 MiB written in order (about 130
 * segments, 260 leaves), then blocks overwritten at random, so that each
 * 4 MiB checkpoint interval dirties most leaves and the pages of most
 * segments (each overwrite takes a count from the segment of the block it
 * replaces).  The pre-copy writes the pages after the leaves; every block
 * reads back, the counts check, and so after the power goes with pages
 * written ahead and no checkpoint naming them. */
#define PP_BLOCKS (131072u)
#define PP_CHUNK  256u

static void pp_read_all(struct vol *v, const uint8_t *gen)
{
	char *buf = malloc(PP_CHUNK * BS), want[BS];
	assert_non_null(buf);
	for (uint64_t b = 0; b < PP_BLOCKS; b += PP_CHUNK) {
		assert_int_equal(store_read(v, buf, b * BS, PP_CHUNK * BS), 0);
		for (unsigned i = 0; i < PP_CHUNK; i++) {
			fill(want, b + i, gen[b + i]);
			assert_memory_equal(buf + (size_t)i * BS, want, BS);
		}
	}
	free(buf);
}

/* Overwrite random blocks until stop() says so (at most max writes). */
static uint64_t pp_rng = 88172645463325252ull;
static uint64_t pp_next(void)
{
	pp_rng ^= pp_rng << 13;
	pp_rng ^= pp_rng >> 7;
	pp_rng ^= pp_rng << 17;
	return pp_rng;
}

static void test_precopy_pages(void **state)
{
	struct faultdev *p = faultdev_new(1024u << 20);
	const struct store_opts o = {.checkpoint_bytes = 4u << 20};
	uint8_t *gen = calloc(PP_BLOCKS, 1);
	char *buf = malloc(PP_CHUNK * BS);
	struct vol *v;

	alarm(300);
	assert_non_null(gen);
	assert_non_null(buf);
	struct store *st = testpool_volume(&p->dev, &o, "v", 1ull << 30, &v);
	for (uint64_t b = 0; b < PP_BLOCKS; b += PP_CHUNK) {
		for (unsigned i = 0; i < PP_CHUNK; i++)
			fill(buf + (size_t)i * BS, b + i, 1);
		assert_int_equal(store_write(v, buf, b * BS, PP_CHUNK * BS, 0), 0);
	}
	memset(gen, 1, PP_BLOCKS);
	assert_int_equal(store_flush(v), 0);
	assert_int_equal(store_checkpoint(st), 0);

	/* Until two checkpoints came after pages written ahead. */
	struct store_stats s0 = stats(st), s;
	uint64_t ck_after = 0, n = 0;
	for (;; n++) {
		uint64_t b = pp_next() % PP_BLOCKS;
		assert_true(n < 40u * PP_BLOCKS);
		fill(buf, b, ++gen[b]);
		assert_int_equal(store_write(v, buf, b * BS, BS, 0), 0);
		s = stats(st);
		if (!ck_after && s.ckpt_precopy_pages > s0.ckpt_precopy_pages)
			ck_after = s.checkpoints + 2;
		if (ck_after && s.checkpoints >= ck_after)
			break;
	}
	assert_int_equal(store_flush(v), 0);
	s = stats(st);
	print_message("%llu writes, %llu checkpoints, %llu leaves and %llu pages written ahead, "
	              "longest stretch %.2f ms\n",
	              (unsigned long long)n, (unsigned long long)(s.checkpoints - s0.checkpoints),
	              (unsigned long long)(s.ckpt_precopy_nodes - s0.ckpt_precopy_nodes),
	              (unsigned long long)(s.ckpt_precopy_pages - s0.ckpt_precopy_pages),
	              (double)s.ckpt_log_max_ns / 1e6);
	pp_read_all(v, gen);
	assert_int_equal(store_check(st), 0);

	/* Pages written ahead, durable in the log, no checkpoint after them:
	 * the power goes.  Every write before the flush is there. */
	s0 = stats(st);
	for (n = 0;; n++) {
		uint64_t b = pp_next() % PP_BLOCKS;
		assert_true(n < 40u * PP_BLOCKS);
		fill(buf, b, ++gen[b]);
		assert_int_equal(store_write(v, buf, b * BS, BS, 0), 0);
		s = stats(st);
		if (s.checkpoints != s0.checkpoints)
			s0 = s; /* this pass's pages must come after the last one */
		else if (s.ckpt_precopy_pages > s0.ckpt_precopy_pages)
			break;
	}
	assert_int_equal(store_flush(v), 0);
	faultdev_power_off(p);
	store_vol_close(v);
	store_close(st);
	faultdev_power_on(p, false);
	st = testpool_open(&p->dev, &o);
	assert_false(stats(st).failed);
	assert_int_equal(store_check(st), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	pp_read_all(v, gen);
	store_vol_close(v);
	store_close(st);
	alarm(0);
	free(buf);
	free(gen);
	faultdev_free(p);
}

/* Further passes: the 1041 leaves of the pre-copy test, a 16 MiB interval
 * (~4000 writes: nearly every leaf dirty when the pre-copy begins), and
 * writes in rounds of PS_BATCH (asynchronous, handed over together): the
 * first pass's 32 slices see ~1000 writes, which dirty a few hundred of
 * the leaves it has written again (fewer than half), and a second,
 * shorter pass writes them.  A pass writes a leaf at most once, so more leaves written ahead
 * between two checkpoints than there are leaves means more than one pass.  Then the power goes
 * during a later pass, and every flushed write is back. */
#define PS_BATCH 32u

struct ps_batch {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned done;
	int err;
	struct store_req r[PS_BATCH];
	char buf[PS_BATCH][BS];
};

static void ps_done(struct store_req *r)
{
	struct ps_batch *b = r->priv;

	pthread_mutex_lock(&b->lock);
	b->err = b->err ? b->err : r->err;
	b->done++;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

/* PS_BATCH leaves (distinct: a stride through them) rewritten with their
 * next generation in one round; returns when all completed. */
static void ps_round(struct ps_batch *b, struct vol *v, unsigned *gen)
{
	struct store_plug plug = {0};
	unsigned k0 = (unsigned)(pp_next() % PC_LEAVES);

	b->done = 0;
	b->err = 0;
	for (unsigned i = 0; i < PS_BATCH; i++) {
		unsigned k = (k0 + i * 83) % PC_LEAVES;
		fill(b->buf[i], pc_lba(k), ++gen[k]);
		b->r[i] = (struct store_req){.op = STORE_WRITE,
		                             .off = pc_lba(k) * BS,
		                             .len = BS,
		                             .buf = b->buf[i],
		                             .vol = v,
		                             .done = ps_done,
		                             .priv = b};
		store_submit_plugged(&plug, &b->r[i]);
	}
	store_unplug(&plug);
	pthread_mutex_lock(&b->lock);
	while (b->done < PS_BATCH)
		pthread_cond_wait(&b->cond, &b->lock); /* alarm() bounds it */
	int err = b->err;
	pthread_mutex_unlock(&b->lock);
	assert_int_equal(err, 0);
}

static void test_precopy_passes(void **state)
{
	struct faultdev *p = faultdev_new(512u << 20);
	const struct store_opts o = {.checkpoint_bytes = 16u << 20};
	struct ps_batch *b = calloc(1, sizeof(*b));
	unsigned gen[PC_LEAVES];
	struct vol *v;

	alarm(300);
	assert_non_null(b);
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->cond, NULL);
	struct store *st = testpool_volume(&p->dev, &o, "v", 2ull << 30, &v);
	pc_write(v, 1, PC_LEAVES);
	assert_int_equal(store_flush(v), 0);
	assert_int_equal(store_checkpoint(st), 0);
	for (unsigned i = 0; i < PC_LEAVES; i++)
		gen[i] = 1;

	/* Leaves written ahead between consecutive checkpoints, over 4. */
	struct store_stats s = stats(st), last = s;
	uint64_t most = 0, n = 0;
	unsigned seen = 0;
	while (seen < 4) {
		assert_true(++n < 20000);
		ps_round(b, v, gen);
		s = stats(st);
		if (s.checkpoints != last.checkpoints) {
			uint64_t d = s.ckpt_precopy_nodes - last.ckpt_precopy_nodes;
			most = d > most ? d : most;
			last = s;
			seen++;
		}
	}
	print_message("%llu rounds of %u writes; most leaves written ahead between two "
	              "checkpoints: %llu (%u leaves)\n",
	              (unsigned long long)n, PS_BATCH, (unsigned long long)most, PC_LEAVES);
	assert_true(most > PC_LEAVES);
	assert_int_equal(store_flush(v), 0);
	assert_int_equal(store_check(st), 0);

	/* Into a pass that is not the first (more leaves written ahead since
	 * the last checkpoint than there are), then the power goes. */
	last = stats(st);
	for (n = 0;; n++) {
		assert_true(n < 20000);
		ps_round(b, v, gen);
		s = stats(st);
		if (s.checkpoints != last.checkpoints)
			last = s;
		else if (s.ckpt_precopy_nodes - last.ckpt_precopy_nodes > PC_LEAVES)
			break;
	}
	assert_int_equal(store_flush(v), 0);
	faultdev_power_off(p);
	pc_reopen_expect(p, &o, st, v, gen);
	pthread_mutex_destroy(&b->lock);
	pthread_cond_destroy(&b->cond);
	free(b);
	alarm(0);
	faultdev_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_writes_during_sync),  cmocka_unit_test(test_crash_in_flight),
	    cmocka_unit_test(test_frees_in_background), cmocka_unit_test(test_precopy),
	    cmocka_unit_test(test_precopy_write_error), cmocka_unit_test(test_precopy_pages),
	    cmocka_unit_test(test_precopy_passes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
