/* test_segio_obj.c — the store over the object-store backend (segio_obj.c)
 * with the fault-injecting memory store (objstore_mem.c): a pool made,
 * written, closed and opened again; power cuts of the serving host at
 * random points of an overwrite load that makes the compactor run, then
 * a takeover by another client (every block flushed before the cut reads
 * back, or a value written after it); fencing (the old owner writes
 * nothing once another took over); a failing write fails the pool, not
 * the data; the local cache (hits, and a pool that opens without it). */
#undef NDEBUG
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "crashmodel.h"
#include "format.h"
#include "objstore.h"
#include "segcache.h"
#include "segio.h"
#include "segio_obj.h"
#include "store.h"

#define LEASE 30

/* segio_obj_opts.space_margin of the clients client_io makes (0: the
 * default). */
static uint64_t test_margin;

/* A client of m serving pool "p" (waiting for no lease): NULL when the
 * lock is held (errno EBUSY). */
static struct segio *client_io(struct objstore_mem *m, struct objstore **os_out,
                               struct segcache *cache)
{
	struct objstore *os = objstore_mem_client(m);
	struct segio_obj_opts o = {.name = "p",
	                           .label = "mem:p",
	                           .lease_s = LEASE,
	                           .wait_s = 0,
	                           .space_margin = test_margin};
	const char *why = NULL;
	struct segio *io;

	assert_non_null(os);
	io = segio_obj_new(os, cache, &o, &why);
	if (!io) {
		int e = errno;
		objstore_close(os);
		errno = e;
	}
	if (os_out)
		*os_out = io ? os : NULL;
	return io;
}

static struct store *open_io(struct segio *io)
{
	const char *why = NULL;
	struct store *st = store_open_io(io, NULL, &why);
	if (!st)
		fail_msg("store_open_io: %s (%s)", why ? why : "?", strerror(errno));
	return st;
}

static void fill(char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (char)(seed * 131 + i * 7 + (i >> 12));
}

static void put(struct vol *v, uint64_t off, size_t n, unsigned seed)
{
	char *b = malloc(n);
	fill(b, n, seed);
	assert_int_equal(store_write(v, b, off, (uint32_t)n, 0), 0);
	free(b);
}

static void expect(struct vol *v, uint64_t off, size_t n, unsigned seed)
{
	char *want = malloc(n), *got = malloc(n);
	fill(want, n, seed);
	assert_int_equal(store_read(v, got, off, (uint32_t)n), 0);
	assert_memory_equal(want, got, n);
	free(want);
	free(got);
}

/* ---- the clocks as segio_obj.c reads them -------------------------------- */

/* Seconds added to what clock_gettime says (this definition stands in for
 * libc's within the test program): a host stopped, suspended, or whose
 * wall clock was stepped.  Sleeps and timed waits still run on the
 * kernel's clocks. */
static _Atomic long skew_realtime, skew_monotonic, skew_boottime;

int clock_gettime(clockid_t id, struct timespec *ts)
{
	int r = (int)syscall(SYS_clock_gettime, id, ts);

	if (r == 0 && id == CLOCK_REALTIME)
		ts->tv_sec += atomic_load(&skew_realtime);
	if (r == 0 && id == CLOCK_MONOTONIC)
		ts->tv_sec += atomic_load(&skew_monotonic);
	if (r == 0 && id == CLOCK_BOOTTIME)
		ts->tv_sec += atomic_load(&skew_boottime);
	return r;
}

/* The host slept (suspended) for secs: every clock but CLOCK_MONOTONIC
 * moved.  With stopped, the process was stopped (SIGSTOP): all of them. */
static void clocks_jump(long secs, bool stopped)
{
	atomic_fetch_add(&skew_realtime, secs);
	atomic_fetch_add(&skew_boottime, secs);
	if (stopped)
		atomic_fetch_add(&skew_monotonic, secs);
}

static void clocks_reset(void)
{
	atomic_store(&skew_realtime, 0);
	atomic_store(&skew_monotonic, 0);
	atomic_store(&skew_boottime, 0);
}

/* ---- a shim over a memory client: counts and fails what the memory store
 * cannot (a failed read at a chosen point, slow lease renewals, a flush
 * held back), forwarding everything else to the real client. */

struct shim {
	struct objstore os; /* first: the interface */
	struct objstore *in;
	struct objstore_mem *m;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	unsigned reads;                   /* reads so far */
	unsigned fail_read_at;            /* fail this read (1-based) with -ETIMEDOUT; 0: none */
	unsigned renew_ms;                /* lock renewals take this long */
	unsigned lock_calls;              /* lock calls so far */
	bool hold_flush;                  /* the next failed flush waits, after its failure */
	bool flush_held;                  /* ... and says so here */
	bool flush_release;               /* ... until this is set (or a second passes) */
	void (*on_flush)(struct shim *s); /* called as a flush returns */
	void (*on_blocklist)(struct shim *s); /* called as a blocklist returns */
	void (*on_locked)(struct shim *s);    /* called before a lock-guarded write */
	_Atomic int space_err;                /* space fails with this; 0: it does not */
	bool space_slow;                      /* a look waits for 2 renewals (3 s at most) ... */
	bool space_in;                        /* ... and says here that it started */
	unsigned remove_ms;                   /* removes take this long */
	_Atomic unsigned removes;             /* removes so far */
};

static struct shim *to_shim(struct objstore *os)
{
	return (struct shim *)os;
}

static int shim_write(struct objstore *os, const char *oid, const void *buf, size_t len,
                      uint64_t off)
{
	return objstore_write(to_shim(os)->in, oid, buf, len, off);
}

static int shim_flush(struct objstore *os)
{
	struct shim *s = to_shim(os);
	int err = objstore_flush(s->in);

	if (s->on_flush)
		s->on_flush(s);
	pthread_mutex_lock(&s->mu);
	if (err && s->hold_flush) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		s->hold_flush = false;
		s->flush_held = true;
		pthread_cond_broadcast(&s->cond);
		while (!s->flush_release &&
		       pthread_cond_timedwait(&s->cond, &s->mu, &until) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&s->mu);
	return err;
}

static ssize_t shim_read(struct objstore *os, const char *oid, void *buf, size_t len, uint64_t off)
{
	struct shim *s = to_shim(os);

	pthread_mutex_lock(&s->mu);
	bool fail = ++s->reads == s->fail_read_at;
	pthread_mutex_unlock(&s->mu);
	return fail ? -ETIMEDOUT : objstore_read(s->in, oid, buf, len, off);
}

static int shim_write_full(struct objstore *os, const char *oid, const void *buf, size_t len)
{
	return objstore_write_full(to_shim(os)->in, oid, buf, len);
}

static int shim_write_full_locked(struct objstore *os, const char *oid, const char *cookie,
                                  const void *buf, size_t len)
{
	struct shim *s = to_shim(os);

	if (s->on_locked)
		s->on_locked(s);
	return objstore_write_full_locked(s->in, oid, cookie, buf, len);
}

static int shim_setxattr_locked(struct objstore *os, const char *oid, const char *cookie,
                                const char *name, const void *val, size_t len)
{
	struct shim *s = to_shim(os);

	if (s->on_locked)
		s->on_locked(s);
	return objstore_setxattr_locked(s->in, oid, cookie, name, val, len);
}

static ssize_t shim_getxattr(struct objstore *os, const char *oid, const char *name, void *buf,
                             size_t len)
{
	return objstore_getxattr(to_shim(os)->in, oid, name, buf, len);
}

static int shim_remove(struct objstore *os, const char *oid)
{
	struct shim *s = to_shim(os);

	if (s->remove_ms)
		usleep(s->remove_ms * 1000);
	s->removes++;
	return objstore_remove(s->in, oid);
}

static int shim_lock(struct objstore *os, const char *oid, const char *cookie, unsigned secs,
                     bool renew)
{
	struct shim *s = to_shim(os);

	pthread_mutex_lock(&s->mu);
	unsigned ms = renew ? s->renew_ms : 0;
	s->lock_calls++;
	pthread_mutex_unlock(&s->mu);
	if (ms)
		usleep(ms * 1000);
	return objstore_lock(s->in, oid, cookie, secs, renew);
}

static int shim_unlock(struct objstore *os, const char *oid, const char *cookie)
{
	return objstore_unlock(to_shim(os)->in, oid, cookie);
}

static int shim_locker(struct objstore *os, const char *oid, struct objstore_locker *out)
{
	return objstore_locker(to_shim(os)->in, oid, out);
}

static int shim_break_lock(struct objstore *os, const char *oid, const struct objstore_locker *l)
{
	return objstore_break_lock(to_shim(os)->in, oid, l);
}

static int shim_blocklist(struct objstore *os, const char *addr)
{
	struct shim *s = to_shim(os);
	int err = objstore_blocklist(s->in, addr);

	if (s->on_blocklist)
		s->on_blocklist(s);
	return err;
}

static int shim_space(struct objstore *os, uint64_t *bytes, uint64_t *objects)
{
	struct shim *s = to_shim(os);
	int err = atomic_load(&s->space_err);

	pthread_mutex_lock(&s->mu);
	if (s->space_slow) {
		unsigned until = s->lock_calls + 2;
		s->space_in = true;
		for (unsigned t = 0; s->lock_calls < until && t < 300; t++) {
			pthread_mutex_unlock(&s->mu);
			usleep(10000);
			pthread_mutex_lock(&s->mu);
		}
	}
	pthread_mutex_unlock(&s->mu);
	return err ? err : objstore_space(s->in, bytes, objects);
}

static const char *shim_addr(struct objstore *os)
{
	return objstore_addr(to_shim(os)->in);
}

static void shim_close(struct objstore *os)
{
	struct shim *s = to_shim(os);

	objstore_close(s->in);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cond);
	free(s);
}

static const struct objstore_ops shim_ops = {
    .write = shim_write,
    .flush = shim_flush,
    .read = shim_read,
    .write_full = shim_write_full,
    .write_full_locked = shim_write_full_locked,
    .setxattr_locked = shim_setxattr_locked,
    .getxattr = shim_getxattr,
    .remove = shim_remove,
    .lock = shim_lock,
    .unlock = shim_unlock,
    .locker = shim_locker,
    .break_lock = shim_break_lock,
    .blocklist = shim_blocklist,
    .addr = shim_addr,
    .space = shim_space,
    .close = shim_close,
};

/* A new client of m behind a shim (closing the shim closes the client). */
static struct shim *shim_new(struct objstore_mem *m)
{
	struct shim *s = calloc(1, sizeof(*s));

	assert_non_null(s);
	s->os.ops = &shim_ops;
	s->m = m;
	s->in = objstore_mem_client(m);
	assert_non_null(s->in);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cond, NULL);
	return s;
}

/* Serve pool "p" through shim s with a lease of lease_s: NULL + errno
 * when refused (s is then closed). */
static struct segio *shim_io(struct shim *s, unsigned lease_s)
{
	struct segio_obj_opts o = {.name = "p", .label = "mem:p", .lease_s = lease_s};
	const char *why = NULL;
	struct segio *io = segio_obj_new(&s->os, NULL, &o, &why);

	if (!io) {
		int e = errno;
		objstore_close(&s->os);
		errno = e;
	}
	return io;
}

/* Moving on from a segment waits for nothing: the object store keeps its
 * own copy of every queued write, so 48 MiB of writes (a dozen segments
 * sealed) cost no flush until the client asks for one; the data reads
 * back from memory, the objects and, after a flush, another client. */
static void test_seal_no_flush(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct objstore *os;
	struct segio *io = client_io(m, &os, NULL);
	struct store *st;
	struct vol *v;

	assert_non_null(io);
	assert_int_equal(store_format_io(io, 32), 0);
	st = open_io(io);
	assert_int_equal(store_vol_create(st, "v", 64u << 20), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	unsigned flushes = objstore_mem_flushes(os);
	for (unsigned i = 0; i < 48; i++)
		put(v, (uint64_t)i << 20, 1u << 20, 40 + i);
	assert_int_equal(objstore_mem_flushes(os), flushes);
	for (unsigned i = 0; i < 48; i++)
		expect(v, (uint64_t)i << 20, 1u << 20, 40 + i);
	assert_int_equal(store_flush(v), 0);
	store_vol_close(v);
	store_close(st);
	io = client_io(m, NULL, NULL);
	assert_non_null(io);
	st = open_io(io);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	for (unsigned i = 0; i < 48; i++)
		expect(v, (uint64_t)i << 20, 1u << 20, 40 + i);
	store_vol_close(v);
	store_close(st);
	objstore_mem_free(m);
}

/* Made, written, closed cleanly, opened by another client: everything is
 * there, and a clean close leaves nobody to fence. */
static void test_roundtrip(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct segio *io = client_io(m, NULL, NULL);
	struct store *st;
	struct vol *v;

	assert_non_null(io);
	assert_int_equal(store_probe_io(io), 0);
	assert_int_equal(store_format_io(io, 32), 0);
	assert_int_equal(store_probe_io(io), 1);
	st = open_io(io);
	assert_int_equal(store_vol_create(st, "v", 64u << 20), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	for (unsigned i = 0; i < 40; i++) /* 10 MiB: several segments sealed */
		put(v, (uint64_t)i * (256u << 10), 256u << 10, i);
	assert_int_equal(store_flush(v), 0);
	expect(v, 0, 256u << 10, 0);
	store_vol_close(v);
	store_close(st);

	/* Another client, at once (no lease to wait for: the lock was given
	 * back), and reads from the objects alone. */
	io = client_io(m, NULL, NULL);
	assert_non_null(io);
	st = open_io(io);
	assert_int_equal(store_check(st), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	for (unsigned i = 0; i < 40; i++)
		expect(v, (uint64_t)i * (256u << 10), 256u << 10, i);
	store_vol_close(v);
	store_close(st);
	objstore_mem_free(m);
}

/* The host serving the pool loses power at a random point of an
 * overwrite load (the compactor runs: the volume is rewritten many times
 * over in a small pool); another client takes the pool over after the
 * lease.  Every block reads back what the last successful flush before the
 * cut left, or a value written after it; the pool checks clean. */
static void test_crash_takeover(void **state)
{
	struct crashmodel m;

	for (unsigned run = 0; run < 6; run++) {
		struct objstore_mem *mem = objstore_mem_new();
		struct objstore *os;
		struct segio *io = client_io(mem, &os, NULL);
		struct store *st;
		struct vol *v;
		int cut_at = 3000 + (int)run * 6000;

		crashmodel_init(&m, 6144);
		assert_int_equal(store_format_io(io, 24), 0); /* 96 MiB */
		st = open_io(io);
		assert_int_equal(store_vol_create(st, "v", (uint64_t)m.nb * 4096), 0);
		assert_int_equal(store_vol_open(st, "v", &v), 0);
		srand(200 + run);
		for (int i = 0; i < 40000; i++) {
			if (i == cut_at)
				objstore_mem_crash(os, run);
			if (crashmodel_write(&m, v))
				break;
			if (i % 64 == 63)
				(void)crashmodel_flush(&m, v);
		}
		store_vol_close(v);
		store_close(st); /* its last checkpoint fails: the host is gone */

		/* Too early: the dead host's lease still runs. */
		assert_null(client_io(mem, NULL, NULL));
		assert_int_equal(errno, EBUSY);
		objstore_mem_advance(mem, LEASE + 1);
		io = client_io(mem, NULL, NULL);
		assert_non_null(io);
		st = open_io(io);
		assert_int_equal(store_check(st), 0);
		assert_int_equal(store_vol_open(st, "v", &v), 0);
		crashmodel_check(&m, v, (int)run);
		store_vol_close(v);
		store_close(st);
		objstore_mem_free(mem);
		crashmodel_free(&m);
	}
}

/* Crash-point enumeration on the object store: the serving host loses
 * power at its nth write, flush, superblock write or remove, for every n
 * the workload reaches (a checkpoint every 256 KiB: superblock writes and
 * discards among them); another client takes over and finds everything
 * acknowledged, and a pool that checks clean. */
static void test_crash_points(void **state)
{
	struct store_opts so = {.checkpoint_bytes = 256 << 10};
	unsigned total = 0;

	for (unsigned n = 0;; n++) {
		struct objstore_mem *mem = objstore_mem_new();
		struct objstore *os;
		struct segio *io = client_io(mem, &os, NULL);
		struct crashpoint cp = {.snap_ok = false};
		const char *why = NULL;
		struct store *st;

		assert_int_equal(store_format_io(io, 24), 0);
		unsigned base = objstore_mem_calls(mem);
		if (n)
			objstore_mem_crash_after(os, n, n);
		st = store_open_io(io, &so, &why);
		if (st) {
			crashpoint_run(st, &cp);
			store_close(st);
		} else {
			assert_true(n > 0); /* only a crash stops the open */
			segio_close(io);
		}
		if (n == 0) {
			total = objstore_mem_calls(mem) - base;
			assert_true(total > 20);
			objstore_mem_free(mem);
			continue;
		}
		objstore_mem_advance(mem, LEASE + 1);
		io = client_io(mem, NULL, NULL);
		assert_non_null(io);
		st = store_open_io(io, &so, &why);
		if (!st)
			fail_msg("open after a crash at call %u: %s", n, why ? why : "?");
		crashpoint_verify(st, &cp);
		store_close(st);
		objstore_mem_free(mem);
		if (n > total)
			break;
	}
	print_message("%u crash points\n", total + 1);
}

/* A takes the pool; its lease runs out (A stopped, say); B takes over.
 * A's next write or flush fails, and nothing A sends lands: B reads its
 * own data after A tried. */
static void test_fenced(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct segio *ia = client_io(m, NULL, NULL), *ib;
	struct store *a, *b;
	struct vol *va, *vb;
	char buf[4096];

	assert_int_equal(store_format_io(ia, 32), 0);
	a = open_io(ia);
	assert_int_equal(store_vol_create(a, "v", 16u << 20), 0);
	assert_int_equal(store_vol_open(a, "v", &va), 0);
	put(va, 0, 65536, 1);
	assert_int_equal(store_flush(va), 0);

	assert_null(client_io(m, NULL, NULL)); /* A is alive: refused */
	objstore_mem_advance(m, LEASE + 1);
	ib = client_io(m, NULL, NULL);
	assert_non_null(ib);
	b = open_io(ib);
	assert_int_equal(store_vol_open(b, "v", &vb), 0);
	expect(vb, 0, 65536, 1);
	put(vb, 0, 65536, 2);
	assert_int_equal(store_flush(vb), 0);

	/* A wakes up: a write may be taken into its log, but it never
	 * becomes durable, and nothing of it reaches the objects. */
	fill(buf, sizeof(buf), 3);
	int w = store_write(va, buf, 0, sizeof(buf), 0);
	int f = store_flush(va);
	assert_true(w != 0 || f != 0);
	assert_int_equal(f, -EIO);
	expect(vb, 0, 65536, 2);
	store_vol_close(va);
	store_close(a);

	/* B's pool, opened again after B closes, still holds B's data. */
	store_vol_close(vb);
	store_close(b);
	ib = client_io(m, NULL, NULL);
	assert_non_null(ib);
	b = open_io(ib);
	assert_int_equal(store_check(b), 0);
	assert_int_equal(store_vol_open(b, "v", &vb), 0);
	expect(vb, 0, 65536, 2);
	store_vol_close(vb);
	store_close(b);
	objstore_mem_free(m);
}

/* A write the object store fails: the flush that covers it fails, the
 * pool refuses writes from then on, and what was flushed before is
 * intact for the next owner. */
static void test_write_fails(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct objstore *os;
	struct segio *io = client_io(m, &os, NULL);
	struct store *st;
	struct vol *v;

	assert_int_equal(store_format_io(io, 32), 0);
	st = open_io(io);
	assert_int_equal(store_vol_create(st, "v", 16u << 20), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	put(v, 0, 1 << 20, 1);
	assert_int_equal(store_flush(v), 0);
	objstore_mem_fail_write(os, 1);
	put(v, 1 << 20, 1 << 20, 2);
	assert_int_equal(store_flush(v), -EIO);
	char b[4096] = {0};
	assert_int_not_equal(store_write(v, b, 0, sizeof(b), 0) || store_flush(v), 0);
	store_vol_close(v);
	store_close(st);

	objstore_mem_advance(m, LEASE + 1);
	io = client_io(m, NULL, NULL);
	assert_non_null(io);
	st = open_io(io);
	assert_int_equal(store_check(st), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	expect(v, 0, 1 << 20, 1);
	store_vol_close(v);
	store_close(st);
	objstore_mem_free(m);
}

/* With a local cache: a second read of a segment is a hit; a client whose
 * cache file was deleted opens and reads from the objects alone. */
static void test_cache(void **state)
{
	char path[] = "/tmp/cowbd-segcache-XXXXXX";
	int fd = mkstemp(path);
	struct objstore_mem *m = objstore_mem_new();
	struct segcache_stats cs;
	const char *why = NULL;
	struct segcache *c;
	struct segio *io;
	struct store *st;
	struct vol *v;

	assert_true(fd >= 0);
	close(fd);
	c = segcache_open(path, 64u << 20, &why);
	assert_non_null(c);
	io = client_io(m, NULL, c);
	assert_non_null(io);
	assert_int_equal(store_format_io(io, 32), 0);
	st = open_io(io);
	assert_int_equal(store_vol_create(st, "v", 32u << 20), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	for (unsigned i = 0; i < 24; i++)
		put(v, (uint64_t)i * (1u << 20), 1u << 20, 10 + i);
	assert_int_equal(store_flush(v), 0);
	store_vol_close(v);
	store_close(st); /* closes the cache */

	assert_int_equal(unlink(path), 0); /* the cache is lost */
	c = segcache_open(path, 64u << 20, &why);
	assert_non_null(c);
	io = client_io(m, NULL, c);
	assert_non_null(io);
	st = open_io(io);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	for (unsigned i = 0; i < 24; i++)
		expect(v, (uint64_t)i * (1u << 20), 1u << 20, 10 + i);
	segcache_stats(c, &cs);
	uint64_t misses = cs.misses;
	for (unsigned i = 0; i < 24; i++)
		expect(v, (uint64_t)i * (1u << 20), 1u << 20, 10 + i);
	segcache_stats(c, &cs);
	assert_true(cs.hits > 0);
	assert_int_equal(cs.misses, misses); /* the second pass never left the host */
	store_vol_close(v);
	store_close(st);
	unlink(path);
	objstore_mem_free(m);
}

/* A fresh pool with a 64 MiB cache and one volume "v" of vol_bytes, open. */
struct cpool {
	char path[32];
	struct objstore_mem *m;
	struct objstore *os;
	struct segcache *c;
	struct segio *io;
	struct store *st;
	struct vol *v;
};

static void cpool_open(struct cpool *p, uint64_t vol_bytes)
{
	const char *why = NULL;
	int fd;

	snprintf(p->path, sizeof(p->path), "/tmp/cowbd-segcache-XXXXXX");
	fd = mkstemp(p->path);
	assert_true(fd >= 0);
	close(fd);
	p->m = objstore_mem_new();
	p->c = segcache_open(p->path, 64u << 20, &why);
	assert_non_null(p->c);
	p->io = client_io(p->m, &p->os, p->c);
	assert_non_null(p->io);
	assert_int_equal(store_format_io(p->io, 32), 0);
	p->st = open_io(p->io);
	assert_int_equal(store_vol_create(p->st, "v", vol_bytes), 0);
	assert_int_equal(store_vol_open(p->st, "v", &p->v), 0);
}

static void cpool_close(struct cpool *p)
{
	store_vol_close(p->v);
	store_close(p->st); /* closes the cache */
	unlink(p->path);
	objstore_mem_free(p->m);
}

/* Until the cacher has copied every sealed segment queued to it. */
static void wait_cacher(struct segio *io)
{
	for (unsigned t = 0; segio_obj_cache_backlog(io) && t < 20000; t++)
		usleep(1000);
	assert_int_equal(segio_obj_cache_backlog(io), 0);
}

/* Sealed segments reach the cache off the log thread: once the cacher has
 * caught up, every block written reads back with no object read at all
 * (the store's next object read is made to fail). */
static void test_cache_seal(void **state)
{
	struct segcache_stats cs;
	struct cpool p;

	(void)state;
	cpool_open(&p, 24u << 20);
	for (unsigned i = 0; i < 24; i++) {
		put(p.v, (uint64_t)i << 20, 1u << 20, 40 + i);
		assert_int_equal(store_flush(p.v), 0);
		/* So that no seal finds the cacher CACHE_BACKLOG behind (a
		 * segment then goes uncached). */
		wait_cacher(p.io);
	}
	segcache_stats(p.c, &cs);
	assert_true(cs.used >= 4); /* 24 MiB sealed 5 segments, the last 2 also in memory */
	objstore_mem_fail_read(p.os, 1);
	for (unsigned i = 0; i < 24; i++)
		expect(p.v, (uint64_t)i << 20, 1u << 20, 40 + i);
	segcache_stats(p.c, &cs);
	assert_true(cs.hits > 0);
	cpool_close(&p);
}

/* Seals that find the cacher behind: the copies it has still to make stay
 * (pinned) after they left the in-memory list, and are put away when it
 * is done; seals past CACHE_BACKLOG go uncached and read from the objects. */
static void test_cache_behind(void **state)
{
	struct cpool p;

	(void)state;
	cpool_open(&p, 48u << 20);
	segio_obj_cache_hold(p.io, true);
	for (unsigned i = 0; i < 24; i++) /* 5 segments sealed */
		put(p.v, (uint64_t)i << 20, 1u << 20, 70 + i);
	assert_int_equal(store_flush(p.v), 0);
	assert_int_equal(segio_obj_cache_backlog(p.io),
	                 4); /* CACHE_BACKLOG: the 5th went uncached */
	segio_obj_cache_hold(p.io, false);
	wait_cacher(p.io);
	/* The 4 copied, and the 5th still in memory: no object read. */
	objstore_mem_fail_read(p.os, 1);
	for (unsigned i = 0; i < 24; i++)
		expect(p.v, (uint64_t)i << 20, 1u << 20, 70 + i);
	objstore_mem_fail_read(p.os, 0);
	for (unsigned i = 24; i < 48; i++) /* the 5th leaves memory */
		put(p.v, (uint64_t)i << 20, 1u << 20, 70 + i);
	assert_int_equal(store_flush(p.v), 0);
	for (unsigned i = 0; i < 48; i++)
		expect(p.v, (uint64_t)i << 20, 1u << 20, 70 + i);
	cpool_close(&p);
}

/* Append 4 KiB of seed at off of seg, through the backend. */
static void seg_put(struct segio *io, uint64_t seg, uint64_t off, unsigned seed)
{
	char b[4096];
	struct iovec iov = {.iov_base = b, .iov_len = sizeof(b)};

	fill(b, sizeof(b), seed);
	assert_int_equal(segio_append(io, seg, off, &iov, 1), 0);
}

/* A recovered segment whose object holds bytes past where the log goes on
 * (a write that failed while later ones landed): recovery's read fetched
 * them into the cache, and once the segment has left memory (its seal
 * found the cacher behind) the appends that replaced them must read back,
 * not the cached old bytes. */
static void test_cache_recovered_tail(void **state)
{
	char path[] = "/tmp/cowbd-segcache-XXXXXX", oid[OBJSTORE_NAME_MAX];
	char old[8192], want[4096], got[4096];
	int fd = mkstemp(path);
	struct objstore_mem *m = objstore_mem_new();
	const char *why = NULL;
	struct objstore *os;
	struct segcache *c;
	struct segio *io;

	(void)state;
	assert_true(fd >= 0);
	close(fd);
	c = segcache_open(path, 64u << 20, &why);
	assert_non_null(c);
	io = client_io(m, &os, c);
	assert_non_null(io);
	fill(old, sizeof(old), 1);
	snprintf(oid, sizeof(oid), "p.seg.%016x", 3);
	assert_int_equal(objstore_write(os, oid, old, sizeof(old), 0), 0);
	assert_int_equal(objstore_flush(os), 0);
	assert_int_equal(segio_read(io, got, 4096, 3 * FMT_SEG_BYTES), 0); /* recovery's scan */
	segio_obj_cache_hold(io, true);
	assert_int_equal(segio_open(io, 3, 4096), 0); /* the log goes on at 4 KiB */
	seg_put(io, 3, 4096, 2);
	segio_seal(io, 3);
	for (uint64_t seg = 4; seg < 4 + 2; seg++) { /* 3 leaves the in-memory copies */
		assert_int_equal(segio_open(io, seg, 0), 0);
		seg_put(io, seg, 0, 3);
		segio_seal(io, seg);
	}
	assert_int_equal(segio_read(io, got, 4096, 3 * FMT_SEG_BYTES + 4096), 0);
	fill(want, sizeof(want), 2);
	assert_memory_equal(want, got, sizeof(want));
	segio_obj_cache_hold(io, false);
	segio_close(io); /* closes the cache */
	unlink(path);
	objstore_mem_free(m);
}

/* ---- a full object store ---------------------------------------------------- */

/* Write 1 MiB blocks from block *n on until a write is refused: each one
 * flushed, and the space watcher's look taken after it.  The error that
 * ended it (0: the volume was written to its end). */
static int fill_until_full(struct segio *io, struct vol *v, unsigned *n, unsigned end)
{
	char *b = malloc(1u << 20);
	int err = 0;

	assert_non_null(b);
	for (; *n < end; ++*n) {
		fill(b, 1u << 20, 90 + *n);
		err = store_write(v, b, (uint64_t)*n << 20, 1u << 20, 0);
		if (err)
			break;
		assert_int_equal(store_flush(v), 0);
		segio_obj_space_refresh(io);
	}
	free(b);
	return err;
}

/* A pool whose object store fills up (a Ceph pool at its quota) turns
 * full before the store refuses a write: clients get ENOSPC, never EIO;
 * every flushed write reads back; writes go on once there is room again,
 * without a restart; and it opens again while full. */
static void test_store_full(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	uint64_t objs, used;
	unsigned n = 0, full_at;
	struct objstore *os;
	struct segio *io;
	struct store *st;
	struct vol *v;

	(void)state;
	test_margin = 8u << 20;
	objstore_mem_set_capacity(m, 64u << 20);
	io = client_io(m, &os, NULL);
	assert_non_null(io);
	assert_int_equal(store_format_io(io, 64), 0); /* 256 MiB of segments */
	st = open_io(io);
	assert_int_equal(store_vol_create(st, "v", 200u << 20), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	assert_int_equal(fill_until_full(io, v, &n, 200), -ENOSPC);
	full_at = n;
	assert_true(full_at >= 16);          /* 64 MiB less the margin, the lag and a segment */
	assert_int_equal(store_flush(v), 0); /* full, not failed */
	objstore_mem_usage(m, &objs, &used);
	assert_true(used <= 64u << 20);

	objstore_mem_set_capacity(m, 512u << 20); /* the quota is raised */
	segio_obj_space_refresh(io);
	assert_int_equal(fill_until_full(io, v, &n, full_at + 8), 0);
	for (unsigned i = 0; i < n; i++)
		expect(v, (uint64_t)i << 20, 1u << 20, 90 + i);
	store_vol_close(v);
	store_close(st);

	objstore_mem_usage(m, &objs, &used);
	objstore_mem_set_capacity(m, used + (1u << 20)); /* full again, then reopened */
	io = client_io(m, &os, NULL);
	assert_non_null(io);
	st = open_io(io);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	for (unsigned i = 0; i < n; i++)
		expect(v, (uint64_t)i << 20, 1u << 20, 90 + i);
	assert_int_equal(fill_until_full(io, v, &n, 200), -ENOSPC);
	assert_int_equal(store_flush(v), 0);
	store_vol_close(v);
	store_close(st);
	objstore_mem_free(m);
	test_margin = 0;
}

/* Lines of the file f (stderr while it was sent there) that hold needle. */
static unsigned lines_with(FILE *f, const char *needle)
{
	char line[512];
	unsigned n = 0;

	rewind(f);
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	return n;
}

/* Send stderr (the log) to the file f until stderr_back: returns the
 * descriptor to give stderr_back. */
static int stderr_to(FILE *f)
{
	int saved;

	assert_non_null(f);
	fflush(stderr);
	saved = dup(2);
	assert_true(saved >= 0 && dup2(fileno(f), 2) == 2);
	return saved;
}

static void stderr_back(int saved)
{
	fflush(stderr);
	assert_true(dup2(saved, 2) == 2);
	close(saved);
}

/* The monitors cannot say how full the pool is (down, or a cap without
 * "mon allow r"): said once per run of failed looks, also when the very
 * first look fails (the pool then cannot turn full before Ceph refuses),
 * not at every look (every second); a look that works again is said. */
static void test_space_look_fails(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct shim *s = shim_new(m), *s2;
	FILE *f = tmpfile();
	struct segio *io;
	int saved;

	(void)state;
	objstore_mem_set_capacity(m, 1ull << 30);
	io = shim_io(s, 0);
	assert_non_null(io);
	saved = stderr_to(f);
	assert_int_equal(segio_reserve(io, 5), 0); /* the first look works */
	atomic_store(&s->space_err, -EACCES);
	for (unsigned i = 0; i < 3; i++)
		segio_obj_space_refresh(io);
	atomic_store(&s->space_err, 0);
	segio_obj_space_refresh(io);
	atomic_store(&s->space_err, -ETIMEDOUT);
	for (unsigned i = 0; i < 3; i++)
		segio_obj_space_refresh(io);
	assert_int_equal(segio_reserve(io, 5), 0); /* the last figure */
	segio_close(io);

	s2 = shim_new(m);
	atomic_store(&s2->space_err, -EACCES);
	io = shim_io(s2, 0);
	assert_non_null(io);
	assert_int_equal(segio_reserve(io, 5), 0);
	for (unsigned i = 0; i < 3; i++)
		segio_obj_space_refresh(io);
	segio_close(io);
	stderr_back(saved);
	assert_int_equal(lines_with(f, "cannot learn how full"), 3);
	assert_int_equal(lines_with(f, "going by the last figure"), 2);
	assert_int_equal(lines_with(f, "does not turn full before"), 1);
	assert_int_equal(lines_with(f, "learns how full the object store's pool is again"), 1);
	fclose(f);
	objstore_mem_free(m);
}

/* Room that hovers round the reserve (Ceph's usage reports catching up,
 * free segments' objects removed) turns the pool full once and keeps it
 * full: it turns not full only once the room passes the reserve by the
 * hysteresis (a quarter of the default margin: 64 MiB), so the log says
 * each turn once and clients are not refused and served in turn.  Turning
 * full keeps the reserve as its threshold. */
static void test_space_hysteresis(void **state)
{
	const uint64_t mib = 1u << 20, reserve = SEGIO_OBJ_SPACE_MARGIN + FMT_SEG_BYTES;
	const uint64_t resume = reserve + SEGIO_OBJ_SPACE_MARGIN / 4;
	struct objstore_mem *m = objstore_mem_new();
	struct shim *s = shim_new(m);
	FILE *f = tmpfile();
	uint64_t objs, used;
	struct segio *io;
	unsigned refused = 0;
	int saved;

	(void)state;
	io = shim_io(s, 0);
	assert_non_null(io);
	objstore_mem_usage(m, &objs, &used); /* reserve writes nothing */
	objstore_mem_set_capacity(m, used + reserve + mib);
	saved = stderr_to(f);
	int first = segio_reserve(io, 5);
	for (unsigned i = 0; i < 8; i++) { /* just below, just above, ... */
		objstore_mem_set_capacity(m, i % 2 ? used + reserve + mib : used + reserve - mib);
		segio_obj_space_refresh(io);
		refused += segio_reserve(io, 5) == -ENOSPC;
	}
	objstore_mem_set_capacity(m, used + resume - mib);
	segio_obj_space_refresh(io);
	refused += segio_reserve(io, 5) == -ENOSPC;
	stderr_back(saved); /* a failure below is seen */
	assert_int_equal(first, 0);
	assert_int_equal(lines_with(f, "refusing new writes until there is room"), 1);
	assert_int_equal(lines_with(f, "has room again"), 0);
	assert_int_equal(refused, 9);

	saved = stderr_to(f);
	const uint64_t caps[4] = {resume, reserve + mib, /* not full down to the reserve */
	                          reserve - mib, 1ull << 30 /* room well above */};
	int got[4];
	for (unsigned i = 0; i < 4; i++) {
		objstore_mem_set_capacity(m, used + caps[i]);
		segio_obj_space_refresh(io);
		got[i] = segio_reserve(io, 5);
	}
	segio_close(io);
	stderr_back(saved);
	assert_int_equal(got[0], 0);
	assert_int_equal(got[1], 0);
	assert_int_equal(got[2], -ENOSPC);
	assert_int_equal(got[3], 0);
	assert_int_equal(lines_with(f, "refusing new writes until there is room"), 2);
	assert_int_equal(lines_with(f, "has room again"), 2);
	fclose(f);
	objstore_mem_free(m);
}

/* A full pool whose room can never pass the hysteresis (a quota just over
 * the reserve and its own data) is not full for good: room that stays
 * over the reserve for 10 looks brings writes back; a dip under the
 * reserve in between starts the count again. */
static void test_space_hysteresis_settles(void **state)
{
	const uint64_t mib = 1u << 20, reserve = SEGIO_OBJ_SPACE_MARGIN + FMT_SEG_BYTES;
	struct objstore_mem *m = objstore_mem_new();
	struct shim *s = shim_new(m);
	FILE *f = tmpfile();
	uint64_t objs, used;
	struct segio *io;
	int saved, r[10], run[8];

	(void)state;
	io = shim_io(s, 0);
	assert_non_null(io);
	objstore_mem_usage(m, &objs, &used);
	saved = stderr_to(f);
	objstore_mem_set_capacity(m, used + reserve - mib);
	segio_obj_space_refresh(io);
	r[0] = segio_reserve(io, 5); /* full */
	objstore_mem_set_capacity(m, used + reserve + mib);
	for (unsigned i = 1; i <= 5; i++) { /* 5 looks over the reserve */
		segio_obj_space_refresh(io);
		r[i] = segio_reserve(io, 5);
	}
	objstore_mem_set_capacity(m, used + reserve - mib); /* a dip: the count starts again */
	segio_obj_space_refresh(io);
	r[6] = segio_reserve(io, 5);
	objstore_mem_set_capacity(m, used + reserve + mib);
	segio_obj_space_refresh(io);
	r[7] = segio_reserve(io, 5); /* the first look of the new run */
	for (unsigned i = 0; i < 8; i++) {
		segio_obj_space_refresh(io);
		run[i] = segio_reserve(io, 5); /* looks 2..9 */
	}
	segio_obj_space_refresh(io); /* the 10th look in a row over the reserve */
	r[8] = segio_reserve(io, 5);
	r[9] = segio_reserve(io, 5);
	stderr_back(saved);
	for (unsigned i = 0; i <= 7; i++)
		assert_int_equal(r[i], -ENOSPC);
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(run[i], -ENOSPC);
	assert_int_equal(r[8], 0);
	assert_int_equal(r[9], 0);
	assert_int_equal(lines_with(f, "refusing new writes until there is room"), 1);
	assert_int_equal(lines_with(f, "or more than"), 1);
	assert_int_equal(lines_with(f, "has room again"), 1);
	segio_close(io);
	fclose(f);
	objstore_mem_free(m);
}

/* The log thread gives free segments back (object removes, a round trip
 * each in RADOS) within a time budget per idle tick: a write arriving
 * while a fresh pool's free segments are being removed waits for a few
 * removes, not for the tick's 256. */
static void test_discard_budget(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct shim *s = shim_new(m);
	struct timespec t0, t1;
	struct segio *io;
	struct store *st;
	struct vol *v;
	char b[4096];

	(void)state;
	s->remove_ms = 40; /* a tick's 63 removes: 2.5 s at once */
	io = shim_io(s, LEASE);
	assert_non_null(io);
	assert_int_equal(store_format_io(io, 64), 0);
	st = open_io(io);
	assert_int_equal(store_vol_create(st, "v", 1u << 20), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	for (unsigned t = 0; !s->removes && t < 1000; t++) /* the first idle tick */
		usleep(10000);
	assert_true(s->removes > 0);
	memset(b, 7, sizeof(b));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(store_write(v, b, 0, sizeof(b), 0), 0);
	assert_int_equal(store_flush(v), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	printf("a write and flush during the discards: %.0f ms (%u removes by then)\n", ms,
	       (unsigned)s->removes);
	assert_true(ms <
	            1000); /* the budget (50 ms) and a step's removes, with room for a slow host */
	unsigned then = s->removes;
	for (unsigned t = 0; s->removes < then + 4 && t < 1000; t++) /* the rest on later ticks */
		usleep(10000);
	assert_true(s->removes >= then + 4);
	store_vol_close(v);
	store_close(st);
	objstore_mem_free(m);
}

/* ---- recovery when the object store fails a read ------------------------- */

#define RF_REGIONS 10
#define RF_BYTES   (64u << 10)

/* A pool whose host lost power after a flush: RF_REGIONS regions written
 * and acknowledged, all of them in the log after the last checkpoint; the
 * dead host's lease has run out. */
static void crashed_pool(struct objstore_mem *m)
{
	struct store_opts so = {.checkpoint_bytes = 1ull << 30};
	const char *why = NULL;
	struct objstore *os;
	struct segio *io = client_io(m, &os, NULL);
	struct store *st;
	struct vol *v;

	assert_non_null(io);
	assert_int_equal(store_format_io(io, 32), 0);
	st = store_open_io(io, &so, &why);
	assert_non_null(st);
	assert_int_equal(store_vol_create(st, "v", 16u << 20), 0);
	assert_int_equal(store_vol_open(st, "v", &v), 0);
	for (unsigned i = 0; i < RF_REGIONS; i++)
		put(v, (uint64_t)i * RF_BYTES, RF_BYTES, 40 + i);
	assert_int_equal(store_flush(v), 0);
	objstore_mem_crash(os, 1);
	store_vol_close(v);
	store_close(st);
	objstore_mem_advance(m, LEASE + 1);
}

/* Does every acknowledged region of crashed_pool read back? */
static bool regions_intact(struct store *st)
{
	char *want = malloc(RF_BYTES), *got = malloc(RF_BYTES);
	struct vol *v = NULL;
	bool ok = store_vol_open(st, "v", &v) == 0;

	for (unsigned i = 0; ok && i < RF_REGIONS; i++) {
		fill(want, RF_BYTES, 40 + i);
		ok = store_read(v, got, (uint64_t)i * RF_BYTES, RF_BYTES) == 0 &&
		     !memcmp(want, got, RF_BYTES);
	}
	if (v)
		store_vol_close(v);
	free(want);
	free(got);
	return ok;
}

/* The new owner's nth read fails (an OSD timing out during a takeover),
 * for every n the takeover reaches: the open fails, or it finds every
 * acknowledged write; and either way the next open finds them all (a
 * failed read is never taken for the end of the log). */
static void test_recover_read_fails(void **state)
{
	unsigned n;

	for (n = 1;; n++) {
		struct objstore_mem *m = objstore_mem_new();
		struct shim *s;
		struct segio *io;
		struct store *st = NULL;
		const char *why = NULL;
		bool fired;

		crashed_pool(m);
		s = shim_new(m);
		s->fail_read_at = n;
		io = shim_io(s, LEASE);
		if (io) {
			st = store_open_io(io, NULL, &why);
			fired = s->reads >= n;
			if (st) {
				if (!regions_intact(st))
					fail_msg(
					    "read %u failed: the open lost acknowledged writes", n);
				store_close(st);
			} else {
				segio_close(io);
			}
		} else {
			fired = true;
		}
		objstore_mem_advance(m, LEASE + 1);
		io = client_io(m, NULL, NULL);
		assert_non_null(io);
		st = open_io(io);
		if (!regions_intact(st))
			fail_msg("read %u failed: the next open lost acknowledged writes", n);
		assert_int_equal(store_check(st), 0);
		store_close(st);
		objstore_mem_free(m);
		if (!fired)
			break;
	}
	print_message("%u reads\n", n);
}

/* ---- leases and the clock ------------------------------------------------- */

/* Enter segment 1 and append one block at off: the backend's own write
 * path, without the store. */
static int append_block(struct segio *io, uint64_t off)
{
	static char blk[4096];
	struct iovec iov = {.iov_base = blk, .iov_len = sizeof(blk)};
	int err = off ? 0 : segio_open(io, 1, 0);

	return err ? err : segio_append(io, 1, off, &iov, 1);
}

/* The host slept past its lease (suspended: CLOCK_MONOTONIC stood still,
 * the renewer did not run): when it wakes, its first write fails and
 * nothing reaches the object store. */
static void test_lease_suspend(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct shim *s = shim_new(m);
	struct segio *io = shim_io(s, 2);

	assert_non_null(io);
	assert_int_equal(append_block(io, 0), 0);
	assert_int_equal(segio_sync(io), 0);
	unsigned writes = objstore_mem_writes(s->in);
	clocks_jump(3, false);
	assert_int_equal(append_block(io, 4096), -EIO);
	assert_int_equal(segio_sync(io), -EIO);
	assert_int_equal(objstore_mem_writes(s->in), writes);
	segio_close(io);
	clocks_reset();
	objstore_mem_free(m);
}

/* The wall clock is stepped back an hour while the pool is served (NTP
 * correcting a clock that ran ahead): the lease goes on being renewed on
 * time, and writes go on. */
static void test_lease_wall_clock_step(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct shim *s = shim_new(m);
	struct segio *io;

	atomic_store(&skew_realtime, 3600); /* read an hour ahead: stepped back once waited on */
	io = shim_io(s, 2);
	assert_non_null(io);
	sleep(3); /* a lease and a half: renewals every 2/3 s */
	pthread_mutex_lock(&s->mu);
	unsigned locks = s->lock_calls;
	pthread_mutex_unlock(&s->mu);
	assert_true(locks >= 3); /* taken, then renewed at least twice */
	assert_int_equal(append_block(io, 0), 0);
	assert_int_equal(segio_sync(io), 0);
	segio_close(io);
	clocks_reset();
	objstore_mem_free(m);
}

/* The holder of p's lock and the owner record, as another client sees
 * them. */
static void owner_seen(struct objstore_mem *m, char *owner, struct objstore_locker *l)
{
	struct objstore *os = objstore_mem_client(m);
	ssize_t n = objstore_getxattr(os, "p.sb.0", "cowbd.owner", owner, OBJSTORE_NAME_MAX - 1);

	owner[n > 0 ? n : 0] = 0;
	if (objstore_locker(os, "p.sb.0", l))
		memset(l, 0, sizeof(*l));
	objstore_close(os);
}

static void stop_past_lease(struct shim *s)
{
	(void)s;
	clocks_jump(5, true);
}

/* A process stopped past its lease during a superblock's flush writes
 * nothing when it wakes: not the superblock. */
static void test_lease_stopped_sb_write(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct shim *s = shim_new(m);
	struct segio *io = shim_io(s, 2);
	char sb[FMT_BLOCK] = "not written";

	assert_non_null(io);
	assert_int_equal(append_block(io, 0), 0);
	s->on_flush = stop_past_lease;
	assert_int_equal(segio_sb_write(io, 0, sb), -EIO);
	s->on_flush = NULL;
	struct objstore *other = objstore_mem_client(m);
	assert_int_equal(objstore_read(other, "p.sb.0", sb, sizeof(sb), 0), 0);
	objstore_close(other);
	segio_close(io);
	clocks_reset();
	objstore_mem_free(m);
}

/* A process stopped past its lease, then closed, writes nothing at its
 * close: the owner record still names it and the lock stays (the next
 * owner must fence it: it cannot know whether another took the pool
 * meanwhile). */
static void test_lease_stopped_close(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct shim *s = shim_new(m);
	struct segio *io = shim_io(s, 2);
	struct objstore_locker l;
	char me[OBJSTORE_NAME_MAX], owner[OBJSTORE_NAME_MAX];

	assert_non_null(io);
	snprintf(me, sizeof(me), "%s", objstore_addr(&s->os));
	assert_int_equal(append_block(io, 0), 0);
	assert_int_equal(segio_sync(io), 0);
	clocks_jump(5, true);
	segio_close(io);
	owner_seen(m, owner, &l);
	assert_string_equal(owner, me);
	assert_string_not_equal(l.client, "");
	clocks_reset();
	objstore_mem_free(m);
}

/* The space watcher is in a look that takes long (monitors slow to
 * answer) when the pool closes: the lease goes on being renewed while
 * close waits for the look, so the close is clean (the lock given back,
 * the owner record cleared) instead of leaving a lapsed lease for the next
 * owner to wait out and fence. */
static void test_close_slow_look(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct shim *s = shim_new(m);
	struct segio *io = shim_io(s, 2);
	struct objstore_locker l;
	char owner[OBJSTORE_NAME_MAX];
	bool in = false;

	(void)state;
	assert_non_null(io);
	objstore_mem_set_capacity(m, 1ull << 30);
	assert_int_equal(segio_reserve(io, 5), 0); /* the watcher starts */
	pthread_mutex_lock(&s->mu);
	s->space_slow = true;
	pthread_mutex_unlock(&s->mu);
	for (unsigned t = 0; !in && t < 500; t++) { /* its next look, within a second */
		usleep(10000);
		pthread_mutex_lock(&s->mu);
		in = s->space_in;
		pthread_mutex_unlock(&s->mu);
	}
	assert_true(in);
	segio_close(io);
	owner_seen(m, owner, &l);
	assert_string_equal(owner, "");
	assert_string_equal(l.client, "");
	objstore_mem_free(m);
}

/* Every renewal takes 3/8 of the lease (a cluster in trouble, still
 * answering): renewals are timed from the start of the last good one, so
 * the lease never runs out while each renewal succeeds in time. */
static void test_lease_slow_renewals(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct shim *s = shim_new(m);
	struct segio *io = shim_io(s, 4);

	assert_non_null(io);
	pthread_mutex_lock(&s->mu);
	s->renew_ms = 1500;
	pthread_mutex_unlock(&s->mu);
	assert_int_equal(append_block(io, 0), 0);
	for (unsigned i = 1; i <= 36; i++) { /* 9 s: two leases and more */
		usleep(250 * 1000);
		assert_int_equal(append_block(io, (uint64_t)i * 4096), 0);
		assert_int_equal(segio_sync(io), 0);
	}
	segio_close(io);
	objstore_mem_free(m);
}

/* ---- takeover races ------------------------------------------------------- */

/* A pool whose owner's host died (its owner record names it); its lease
 * has run out.  Its address goes to dead. */
static void dead_owner(struct objstore_mem *m, char *dead)
{
	struct objstore *os;
	struct segio *io = client_io(m, &os, NULL);

	assert_non_null(io);
	snprintf(dead, OBJSTORE_NAME_MAX, "%s", objstore_addr(os));
	objstore_mem_crash(os, 1);
	segio_close(io);
	objstore_mem_advance(m, LEASE + 1);
}

/* This process stalls past its lease: its clocks and the cluster's move
 * on by LEASE + 1 s. */
static void stall_past_lease(struct objstore_mem *m)
{
	objstore_mem_advance(m, LEASE + 1);
	clocks_jump(LEASE + 1, true);
}

/* While the new owner fences the dead one, its own lease runs out and
 * another client takes the lock. */
static void lock_taken_meanwhile(struct shim *s)
{
	struct objstore *c = objstore_mem_client(s->m);

	s->on_blocklist = NULL;
	stall_past_lease(s->m);
	assert_int_equal(objstore_lock(c, "p.sb.0", "another", LEASE, false), 0);
	objstore_close(c);
}

/* Fencing the dead owner outlasts the lease and another host takes the
 * lock meanwhile: the open fails without naming itself in the owner
 * record (which must go on naming whom the next owner fences). */
static void test_takeover_raced(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	char dead[OBJSTORE_NAME_MAX], owner[OBJSTORE_NAME_MAX];
	struct objstore_locker l;
	struct shim *s;

	dead_owner(m, dead);
	s = shim_new(m);
	s->on_blocklist = lock_taken_meanwhile;
	assert_null(shim_io(s, LEASE));
	assert_int_equal(errno, EBUSY);
	owner_seen(m, owner, &l);
	assert_string_equal(owner, dead);
	assert_string_equal(l.cookie, "another");
	clocks_reset();
	objstore_mem_free(m);
}

static struct objstore *meanwhile_os; /* the client that served meanwhile */
static struct segio *meanwhile_io;

/* While the new owner fences the dead one, its own lease runs out, and
 * another host takes the pool over (fencing the dead one too and naming
 * itself), serves, and stops past its lease. */
static void pool_served_meanwhile(struct shim *s)
{
	s->on_blocklist = NULL;
	stall_past_lease(s->m);
	meanwhile_io = client_io(s->m, &meanwhile_os, NULL);
	assert_non_null(meanwhile_io);
	stall_past_lease(s->m);
}

/* Fencing the dead owner outlasts the lease, and meanwhile another host
 * took the pool, served it and stopped: the new owner fences that one too
 * before it names itself. */
static void test_takeover_lapsed_while_fencing(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	char dead[OBJSTORE_NAME_MAX], owner[OBJSTORE_NAME_MAX], me[OBJSTORE_NAME_MAX];
	struct objstore_locker l;
	struct segio *io;
	struct shim *s;

	dead_owner(m, dead);
	s = shim_new(m);
	snprintf(me, sizeof(me), "%s", objstore_addr(&s->os));
	s->on_blocklist = pool_served_meanwhile;
	io = shim_io(s, LEASE);
	assert_non_null(io);
	assert_non_null(meanwhile_io);
	assert_int_equal(objstore_write(meanwhile_os, "p.seg.0000000000000001", "x", 1, 0),
	                 -EBLOCKLISTED);
	owner_seen(m, owner, &l);
	assert_string_equal(owner, me);
	segio_close(meanwhile_io);
	segio_close(io);
	clocks_reset();
	objstore_mem_free(m);
}

/* ---- syncs racing --------------------------------------------------------- */

struct sync_arg {
	struct segio *io;
	int err;
};

static void *sync_thread(void *arg)
{
	struct sync_arg *a = arg;
	a->err = segio_sync(a->io);
	return NULL;
}

/* Two syncs race, and a write queued before both failed.  The first sync
 * learns of it from the object store, which reports a failure to one flush
 * only (objstore.h allows it); the second, which began before the first
 * had said so, must fail too: no sync succeeds while a write queued before
 * it is missing. */
static void test_sync_race_write_failed(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct shim *s = shim_new(m);
	struct segio *io = shim_io(s, 0);
	struct sync_arg first = {.io = io};
	pthread_t t;

	assert_non_null(io);
	objstore_mem_fail_write(s->in, 1);
	assert_int_equal(append_block(io, 0), 0); /* queued; the write fails */
	s->hold_flush = true;
	assert_int_equal(pthread_create(&t, NULL, sync_thread, &first), 0);
	pthread_mutex_lock(&s->mu);
	while (!s->flush_held)
		pthread_cond_wait(&s->cond, &s->mu);
	pthread_mutex_unlock(&s->mu);
	int second = segio_sync(io); /* the first holds its failure back */
	pthread_mutex_lock(&s->mu);
	s->flush_release = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
	pthread_join(t, NULL);
	assert_int_equal(first.err, -EIO);
	assert_int_equal(second, -EIO);
	segio_close(io);
	objstore_mem_free(m);
}

/* ---- writes guarded by the lock ------------------------------------------- */

static struct objstore *taker_os; /* the host that took the pool over */
static struct segio *taker_io;

/* The host stalls past its lease just before a write guarded by the lock
 * (the cluster's clock moves on, not the host's), and another takes the
 * pool over meanwhile. */
static void taken_during_stall(struct shim *s)
{
	s->on_locked = NULL;
	objstore_mem_advance(s->m, LEASE + 1);
	taker_io = client_io(s->m, &taker_os, NULL);
	assert_non_null(taker_io);
}

/* A host stalled between its renewal and the write of the owner record,
 * while another took the pool over and named itself: its record is not
 * written (the next takeover must fence the host that serves), and its
 * open fails. */
static void test_owner_write_stalled(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct shim *s = shim_new(m);
	char owner[OBJSTORE_NAME_MAX], taker[OBJSTORE_NAME_MAX];
	struct objstore_locker l;

	s->on_locked = taken_during_stall;
	assert_null(shim_io(s, LEASE));
	assert_int_equal(errno, EBUSY);
	assert_non_null(taker_io);
	snprintf(taker, sizeof(taker), "%s", objstore_addr(taker_os));
	owner_seen(m, owner, &l);
	assert_string_equal(owner, taker);
	assert_string_equal(l.addr, taker);
	segio_close(taker_io);
	objstore_mem_free(m);
}

/* The same, but the other host has only taken the lock so far (it has
 * not fenced this one yet). */
static void locked_during_stall(struct shim *s)
{
	struct objstore *c = objstore_mem_client(s->m);

	s->on_locked = NULL;
	objstore_mem_advance(s->m, LEASE + 1);
	assert_int_equal(objstore_lock(c, "p.sb.0", "another", LEASE, false), 0);
	objstore_close(c);
}

/* A host stalled between its lease check and the write of superblock slot
 * 0, while another took the lock (and has not fenced it yet): the slot is
 * not written, and the stalled backend is fenced. */
static void test_sb_write_stalled(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct shim *s = shim_new(m);
	struct segio *io = shim_io(s, LEASE);
	struct objstore *other;
	char sb[FMT_BLOCK], seen[FMT_BLOCK];

	assert_non_null(io);
	memset(sb, 1, sizeof(sb));
	assert_int_equal(segio_sb_write(io, 0, sb), 0);
	s->on_locked = locked_during_stall;
	memset(sb, 2, sizeof(sb));
	assert_int_equal(segio_sb_write(io, 0, sb), -EIO);
	other = objstore_mem_client(m);
	assert_int_equal(objstore_read(other, "p.sb.0", seen, sizeof(seen), 0), FMT_BLOCK);
	objstore_close(other);
	memset(sb, 1, sizeof(sb));
	assert_memory_equal(seen, sb, sizeof(sb));
	assert_int_equal(segio_sync(io), -EIO); /* fenced */
	segio_close(io);
	objstore_mem_free(m);
}

/* A pool the previous build served and did not close (its owner record
 * the object NAME.owner): the takeover fences the address it names, then
 * names itself in the attribute and leaves NAME.owner a marker that is no
 * address (the previous build refuses to open the pool then). */
static void test_owner_legacy(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct objstore *old = objstore_mem_client(m), *os;
	char owner[OBJSTORE_NAME_MAX], me[OBJSTORE_NAME_MAX], rec[OBJSTORE_NAME_MAX];
	struct objstore_locker l;
	struct segio *io;
	ssize_t n;

	assert_int_equal(objstore_lock(old, "p.sb.0", "old", LEASE, false), 0);
	assert_int_equal(
	    objstore_write_full(old, "p.owner", objstore_addr(old), strlen(objstore_addr(old))), 0);
	objstore_mem_advance(m, LEASE + 1);
	io = client_io(m, &os, NULL);
	assert_non_null(io);
	snprintf(me, sizeof(me), "%s", objstore_addr(os));
	assert_int_equal(objstore_read(old, "p.owner", owner, 1, 0), -EBLOCKLISTED);
	owner_seen(m, owner, &l);
	assert_string_equal(owner, me);
	struct objstore *other = objstore_mem_client(m);
	n = objstore_read(other, "p.owner", rec, sizeof(rec) - 1, 0);
	assert_true(n > 0);
	rec[n] = 0;
	assert_null(strchr(rec, '/')); /* not an address */
	objstore_close(other);
	segio_close(io);
	/* a clean close clears the attribute; the marker names nobody */
	owner_seen(m, owner, &l);
	assert_string_equal(owner, "");
	io = client_io(m, &os, NULL);
	assert_non_null(io);
	segio_close(io);
	objstore_close(old);
	objstore_mem_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_seal_no_flush),
	    cmocka_unit_test(test_fenced),
	    cmocka_unit_test(test_write_fails),
	    cmocka_unit_test(test_cache),
	    cmocka_unit_test(test_cache_seal),
	    cmocka_unit_test(test_cache_behind),
	    cmocka_unit_test(test_cache_recovered_tail),
	    cmocka_unit_test(test_store_full),
	    cmocka_unit_test(test_space_look_fails),
	    cmocka_unit_test(test_space_hysteresis),
	    cmocka_unit_test(test_space_hysteresis_settles),
	    cmocka_unit_test(test_crash_takeover),
	    cmocka_unit_test(test_crash_points),
	    cmocka_unit_test(test_recover_read_fails),
	    cmocka_unit_test(test_lease_suspend),
	    cmocka_unit_test(test_lease_wall_clock_step),
	    cmocka_unit_test(test_lease_stopped_sb_write),
	    cmocka_unit_test(test_lease_stopped_close),
	    cmocka_unit_test(test_close_slow_look),
	    cmocka_unit_test(test_discard_budget),
	    cmocka_unit_test(test_lease_slow_renewals),
	    cmocka_unit_test(test_takeover_raced),
	    cmocka_unit_test(test_takeover_lapsed_while_fencing),
	    cmocka_unit_test(test_sync_race_write_failed),
	    cmocka_unit_test(test_owner_write_stalled),
	    cmocka_unit_test(test_sb_write_stalled),
	    cmocka_unit_test(test_owner_legacy),
	};
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
