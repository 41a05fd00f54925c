/* test_writer.c — the log thread's stop (writer_stop, as store_close runs
 * it).  A request queued before the stop is served; one that arrives after
 * the thread's last look at its queue is answered at once with -ESHUTDOWN
 * rather than left waiting for ever (a service thread's watchdog ping once
 * hung `systemctl stop` that way): control calls, data requests, plugged
 * batches, a check; reads, which the reader threads serve, still work
 * until those stop.  Pings racing the stop get 0 or -ESHUTDOWN, none hangs.
 * Every blocking call runs on a helper thread with a 10 s bound, so a
 * regression fails the test instead of hanging it.
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "blkdev.h"
#include "boundcall.h"
#include "store_int.h"
#include "testpool.h"

#define BS    STORE_BLOCK_SIZE
#define MiB   (1ull << 20)
#define BOUND 10 /* seconds a call may take before the test calls it hung */

/* ---- the calls ------------------------------------------------------------ */

struct fixture {
	struct blkdev *dev;
	struct store *st;
	struct vol *v;
	char buf[BS];
};

static int do_ping(void *a)
{
	return store_ping(((struct fixture *)a)->st);
}

static int do_create(void *a)
{
	return store_vol_create(((struct fixture *)a)->st, "w", MiB);
}

static int do_snap(void *a)
{
	return store_snap_create(((struct fixture *)a)->st, "v@s");
}

static int do_check(void *a)
{
	return store_check(((struct fixture *)a)->st);
}

static int do_write(void *a)
{
	struct fixture *f = a;
	return store_write(f->v, f->buf, 0, BS, 0);
}

static int do_flush(void *a)
{
	return store_flush(((struct fixture *)a)->v);
}

static int do_read(void *a)
{
	struct fixture *f = a;
	return store_read(f->v, f->buf, 0, BS);
}

static int do_stop(void *a)
{
	writer_stop(((struct fixture *)a)->st);
	return 0;
}

static int do_stall(void *a)
{
	return store_stall_log(((struct fixture *)a)->st, 1);
}

/* Asynchronous requests that record how they ended. */
struct areq {
	struct store_req r;
	int err;
	bool done;
};

static pthread_mutex_t alock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t acond = PTHREAD_COND_INITIALIZER;

static void areq_done(struct store_req *r)
{
	struct areq *a = (struct areq *)r;
	pthread_mutex_lock(&alock);
	a->err = r->err;
	a->done = true;
	pthread_cond_broadcast(&acond);
	pthread_mutex_unlock(&alock);
}

static void areq_init(struct areq *a, struct vol *v, enum store_op op, void *buf, uint64_t off)
{
	memset(a, 0, sizeof(*a));
	a->r.op = op;
	a->r.buf = buf;
	a->r.off = off;
	a->r.len = op == STORE_FLUSH ? 0 : BS;
	a->r.vol = v;
	a->r.done = areq_done;
}

/* All n requests completed within BOUND seconds. */
static bool areq_wait(struct areq *a, unsigned n)
{
	struct timespec ts;
	bool all = false;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += BOUND;
	pthread_mutex_lock(&alock);
	for (;;) {
		all = true;
		for (unsigned i = 0; i < n; i++)
			all = all && a[i].done;
		if (all || pthread_cond_timedwait(&acond, &alock, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&alock);
	return all;
}

static void fixture_open(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->dev = blkdev_mem_new(64 * MiB);
	assert_non_null(f->dev);
	f->st = testpool_volume(f->dev, NULL, "v", 16 * MiB, &f->v);
}

static void fixture_close(struct fixture *f)
{
	store_vol_close(f->v);
	store_close(f->st); /* stops the log thread again: nothing to do */
}

/* ---- tests ------------------------------------------------------------------ */

/* Once the log thread has stopped, everything that needs it is answered
 * -ESHUTDOWN at once; reads still go to the reader threads. */
static void test_after_stop(void **state)
{
	struct fixture f;
	fixture_open(&f);
	memset(f.buf, 'a', BS);
	assert_int_equal(store_write(f.v, f.buf, 0, BS, 0), 0);
	assert_int_equal(store_ping(f.st), 0);

	writer_stop(f.st);
	assert_int_equal(call_bounded(do_ping, &f, BOUND, "store_ping"), -ESHUTDOWN);
	assert_int_equal(call_bounded(do_create, &f, BOUND, "store_vol_create"), -ESHUTDOWN);
	assert_int_equal(call_bounded(do_snap, &f, BOUND, "store_snap_create"), -ESHUTDOWN);
	assert_int_equal(call_bounded(do_check, &f, BOUND, "store_check"), -ESHUTDOWN);
	assert_int_equal(call_bounded(do_write, &f, BOUND, "store_write"), -ESHUTDOWN);
	assert_int_equal(call_bounded(do_flush, &f, BOUND, "store_flush"), -ESHUTDOWN);

	/* a plugged batch is answered as a whole, on the submitter's thread */
	struct areq a[3];
	struct store_plug p = {0};
	areq_init(&a[0], f.v, STORE_WRITE, f.buf, 0);
	areq_init(&a[1], f.v, STORE_TRIM, NULL, BS);
	areq_init(&a[2], f.v, STORE_FLUSH, NULL, 0);
	for (int i = 0; i < 3; i++)
		store_submit_plugged(&p, &a[i].r);
	store_unplug(&p);
	assert_true(areq_wait(a, 3));
	for (int i = 0; i < 3; i++)
		assert_int_equal(a[i].err, -ESHUTDOWN);

	/* the stats of a stopped store read as zeros, not as stack garbage */
	struct store_stats s;
	memset(&s, 0xff, sizeof(s));
	store_get_stats(f.st, &s);
	assert_int_equal(s.pool_bytes, 0);

	memset(f.buf, 0, BS);
	assert_int_equal(call_bounded(do_read, &f, BOUND, "store_read"), 0);
	assert_int_equal(f.buf[0], 'a');
	fixture_close(&f);
}

/* Writes queued behind a busy log thread when the stop comes are served
 * before it leaves, not dropped or refused. */
static void test_queued_before_stop(void **state)
{
	enum { N = 8 };
	struct fixture f;
	static char data[N][BS];
	struct areq a[N];

	fixture_open(&f);
	struct call *stall = call_start(do_stall, &f);
	usleep(200 * 1000); /* the log thread sleeps in the stall job */
	for (int i = 0; i < N; i++) {
		memset(data[i], 'A' + i, BS);
		areq_init(&a[i], f.v, STORE_WRITE, data[i], (uint64_t)i * BS);
		store_submit(&a[i].r);
	}
	assert_int_equal(call_bounded(do_stop, &f, BOUND, "writer_stop"), 0);
	assert_int_equal(call_end(stall, BOUND, "store_stall_log"), 0);
	assert_true(areq_wait(a, N));
	for (int i = 0; i < N; i++)
		assert_int_equal(a[i].err, 0);
	for (int i = 0; i < N; i++) {
		char back[BS];
		assert_int_equal(store_read(f.v, back, (uint64_t)i * BS, BS), 0);
		assert_memory_equal(back, data[i], BS);
	}
	assert_int_equal(call_bounded(do_ping, &f, BOUND, "store_ping"), -ESHUTDOWN);
	fixture_close(&f);
}

/* Threads pinging in a loop while the log thread stops: each ping gets 0
 * (served) or -ESHUTDOWN, and every thread sees -ESHUTDOWN in the end. */
#define PINGERS 4

struct pinger {
	struct store *st;
	unsigned served;
	int last;
};

static int ping_until_refused(void *arg)
{
	struct pinger *pg = arg;
	int err;
	while ((err = store_ping(pg->st)) == 0)
		pg->served++;
	pg->last = err;
	return err;
}

static void test_race(void **state)
{
	for (int round = 0; round < 20; round++) {
		struct fixture f;
		struct pinger pg[PINGERS];
		struct call *c[PINGERS];

		fixture_open(&f);
		for (int i = 0; i < PINGERS; i++) {
			pg[i] = (struct pinger){.st = f.st};
			c[i] = call_start(ping_until_refused, &pg[i]);
		}
		usleep(5 * 1000);
		writer_stop(f.st);
		for (int i = 0; i < PINGERS; i++)
			assert_int_equal(call_end(c[i], BOUND, "a ping racing the stop"),
			                 -ESHUTDOWN);
		fixture_close(&f);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_after_stop),
	    cmocka_unit_test(test_queued_before_stop),
	    cmocka_unit_test(test_race),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
