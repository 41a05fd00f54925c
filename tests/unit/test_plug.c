/* test_plug.c — submission in batches (store_submit_plugged, issue 12):
 * requests for the log thread wait in the plug and reach it together, in
 * one round; a plug holding STORE_PLUG_BYTES of payload hands itself over;
 * reads, and requests answered at admission, never wait in it; a request
 * for another store hands the first store's requests over. */
#undef NDEBUG
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "blkdev.h"
#include "store.h"
#include "testpool.h"

#define BS   STORE_BLOCK_SIZE
#define MiB  (1ull << 20)
#define NREQ 32

/* Requests that count their completions. */
struct waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned done;
};

static struct waiter W = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static void on_done(struct store_req *r)
{
	pthread_mutex_lock(&W.lock);
	W.done++;
	pthread_cond_broadcast(&W.cond);
	pthread_mutex_unlock(&W.lock);
}

static unsigned done_count(void)
{
	pthread_mutex_lock(&W.lock);
	unsigned n = W.done;
	pthread_mutex_unlock(&W.lock);
	return n;
}

/* Wait until n requests completed in all; false after 10 s. */
static bool wait_done(unsigned n)
{
	struct timespec ts;
	bool ok = true;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	pthread_mutex_lock(&W.lock);
	while (W.done < n && ok)
		ok = pthread_cond_timedwait(&W.cond, &W.lock, &ts) == 0 || W.done >= n;
	pthread_mutex_unlock(&W.lock);
	return W.done >= n;
}

static void req_init(struct store_req *r, struct vol *v, enum store_op op, void *buf, uint64_t off,
                     uint32_t len)
{
	memset(r, 0, sizeof(*r));
	r->op = op;
	r->buf = buf;
	r->off = off;
	r->len = len;
	r->vol = v;
	r->done = on_done;
}

static uint64_t batches(struct store *st)
{
	struct store_stats s;
	store_get_stats(st, &s);
	return s.batches;
}

/* NREQ 4 KiB writes and a FLUSH in one plug: nothing reaches the log
 * thread until store_unplug, then all of it in one round with one sync;
 * the data reads back. */
static void test_plug_one_round(void **state)
{
	struct blkdev *dev = blkdev_mem_new(64 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(dev, NULL, "v", 16 * MiB, &v);
	struct store_plug p = {0};
	static struct store_req r[NREQ + 1];
	static char buf[NREQ][BS];
	struct store_stats s0, s1;

	W.done = 0;
	store_get_stats(st, &s0);
	for (unsigned i = 0; i < NREQ; i++) {
		memset(buf[i], 'a' + (int)(i % 26), BS);
		req_init(&r[i], v, STORE_WRITE, buf[i], (uint64_t)(i * 3) * BS, BS);
		store_submit_plugged(&p, &r[i]);
	}
	req_init(&r[NREQ], v, STORE_FLUSH, NULL, 0, 0);
	store_submit_plugged(&p, &r[NREQ]);
	assert_non_null(p.head);
	/* Held: the log thread has not seen them (it would have completed
	 * some of them by now). */
	struct timespec nap = {0, 20 * 1000 * 1000};
	nanosleep(&nap, NULL);
	assert_int_equal(done_count(), 0);
	store_get_stats(st, &s1);
	assert_int_equal(s1.batches, s0.batches);

	store_unplug(&p);
	assert_null(p.head);
	assert_true(wait_done(NREQ + 1));
	store_get_stats(st, &s1);
	assert_int_equal(s1.batches - s0.batches, 1);
	assert_int_equal(s1.syncs - s0.syncs, 1);
	assert_int_equal(s1.flushes - s0.flushes, 1);
	for (unsigned i = 0; i <= NREQ; i++)
		assert_int_equal(r[i].err, 0);
	for (unsigned i = 0; i < NREQ; i++) {
		char got[BS];
		assert_int_equal(store_read(v, got, (uint64_t)(i * 3) * BS, BS), 0);
		assert_memory_equal(got, buf[i], BS);
	}
	store_unplug(&p); /* empty: nothing happens */
	store_vol_close(v);
	store_close(st);
}

/* Large writes are not held: once the plug holds STORE_PLUG_BYTES it hands
 * itself over, and they complete without a store_unplug. */
static void test_plug_bytes(void **state)
{
	struct blkdev *dev = blkdev_mem_new(64 * MiB);
	struct vol *v;
	struct store *st = testpool_volume(dev, NULL, "v", 16 * MiB, &v);
	struct store_plug p = {0};
	enum { N = 4 };
	static struct store_req r[N];
	uint32_t len = STORE_PLUG_BYTES / 2;
	char *buf = malloc(N * (size_t)len);

	assert_non_null(buf);
	W.done = 0;
	memset(buf, 'x', N * (size_t)len);
	req_init(&r[0], v, STORE_WRITE, buf, 0, len);
	store_submit_plugged(&p, &r[0]);
	assert_non_null(p.head); /* half the bound: held */
	for (unsigned i = 1; i < N; i++) {
		req_init(&r[i], v, STORE_WRITE, buf + i * (size_t)len, (uint64_t)i * len, len);
		store_submit_plugged(&p, &r[i]);
		if (i % 2)
			assert_null(p.head); /* the bound reached: handed over */
	}
	assert_true(wait_done(N));
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(r[i].err, 0);
	free(buf);
	store_vol_close(v);
	store_close(st);
}

/* Reads go to the reader threads at once, and a request the store answers
 * at admission (past the volume's end; a write to a snapshot) completes at
 * once: neither waits in the plug. */
static void test_plug_passes(void **state)
{
	struct blkdev *dev = blkdev_mem_new(64 * MiB);
	struct vol *v, *snap;
	struct store *st = testpool_volume(dev, NULL, "v", 16 * MiB, &v);
	struct store_plug p = {0};
	struct store_req r[3];
	static char buf[BS];

	assert_int_equal(store_snap_create(st, "v@s"), 0);
	assert_int_equal(store_vol_open(st, "v@s", &snap), 0);
	W.done = 0;
	req_init(&r[0], v, STORE_READ, buf, 0, BS);
	store_submit_plugged(&p, &r[0]);
	req_init(&r[1], v, STORE_WRITE, buf, 16 * MiB, BS);
	store_submit_plugged(&p, &r[1]);
	req_init(&r[2], snap, STORE_WRITE, buf, 0, BS);
	store_submit_plugged(&p, &r[2]);
	assert_null(p.head);
	assert_true(wait_done(3));
	assert_int_equal(r[0].err, 0);
	assert_int_equal(r[1].err, -ENOSPC);
	assert_int_equal(r[2].err, -EPERM);
	store_vol_close(snap);
	store_vol_close(v);
	store_close(st);
}

/* A request for another store first hands over what the plug holds for
 * the first one. */
static void test_plug_two_stores(void **state)
{
	struct blkdev *da = blkdev_mem_new(64 * MiB), *db = blkdev_mem_new(64 * MiB);
	struct vol *va, *vb;
	struct store *sa = testpool_volume(da, NULL, "a", 16 * MiB, &va);
	struct store *sb = testpool_volume(db, NULL, "b", 16 * MiB, &vb);
	struct store_plug p = {0};
	struct store_req r[2];
	static char buf[BS];

	W.done = 0;
	memset(buf, 'q', BS);
	req_init(&r[0], va, STORE_WRITE, buf, 0, BS);
	store_submit_plugged(&p, &r[0]);
	req_init(&r[1], vb, STORE_WRITE, buf, 0, BS);
	store_submit_plugged(&p, &r[1]);
	assert_true(p.head == &r[1] && p.tail == &r[1]);
	assert_true(wait_done(1)); /* a's write, handed over by b's */
	assert_int_equal(r[0].err, 0);
	store_unplug(&p);
	assert_true(wait_done(2));
	assert_int_equal(r[1].err, 0);
	assert_true(batches(sa) >= 1 && batches(sb) >= 1);
	store_vol_close(va);
	store_vol_close(vb);
	store_close(sa);
	store_close(sb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plug_one_round),
	    cmocka_unit_test(test_plug_bytes),
	    cmocka_unit_test(test_plug_passes),
	    cmocka_unit_test(test_plug_two_stores),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
