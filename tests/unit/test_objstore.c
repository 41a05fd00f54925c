/* test_objstore.c — the object store contract of objstore.h, one set of
 * tests run against each implementation: the memory store always, a real
 * Ceph cluster when COWBD_TEST_CEPH_CONF names its ceph.conf (client id
 * COWBD_TEST_CEPH_ID, default "cowbd"; pool COWBD_TEST_CEPH_POOL, default
 * "cowbd"; objects under a prefix unique to the run, removed at the end);
 * without it the cluster's cases skip.
 *
 * The contract: writes read back at their offsets, a short read at the
 * end, -ENOENT; write_full and remove; a second client sees flushed data;
 * the exclusive lock (a second client gets -EBUSY, renew, locker names the
 * holder by the address objstore_addr gives, break_lock frees it); writes
 * guarded by the lock (applied while it is held, refused with nothing
 * written once it was broken, taken by another or its lease ran out); a
 * blocklisted client's write+flush, read and lock fail with -EBLOCKLISTED
 * while the others go on.  The memory store's own promises: leases expire
 * on its clock, a crash keeps a prefix of each object's unflushed writes
 * in issue order, injected faults, usage.
 */
#undef NDEBUG
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "objstore.h"

/* One implementation under test: how to make a client of its cluster. */
struct backend {
	const char *name;
	struct objstore *(*client)(struct backend *b);
	void (*pass)(struct backend *b, unsigned secs); /* let secs of the cluster's time pass */
	struct objstore_mem *mem;
	char prefix[64];                  /* of every object name this run uses */
	char used[64][OBJSTORE_NAME_MAX]; /* names handed out: removed at the end */
	unsigned nused;
};

static struct objstore *mem_client(struct backend *b)
{
	return objstore_mem_client(b->mem);
}

static void mem_pass(struct backend *b, unsigned secs)
{
	objstore_mem_advance(b->mem, secs);
}

static struct backend mem_backend = {.name = "mem", .client = mem_client, .pass = mem_pass};

static int mem_setup(void **state)
{
	mem_backend.mem = objstore_mem_new();
	mem_backend.nused = 0;
	assert_non_null(mem_backend.mem);
	*state = &mem_backend;
	return 0;
}

static int mem_teardown(void **state)
{
	objstore_mem_free(mem_backend.mem);
	return 0;
}

/* ---- a real cluster, when COWBD_TEST_CEPH_CONF names one --------------- */

static struct objstore_rados_opts ceph_opts;

static struct objstore *rados_client(struct backend *b)
{
	const char *why = "";
	struct objstore *os = objstore_rados_new(&ceph_opts, &why);

	if (!os)
		fail_msg("objstore_rados_new: %s: %s", why, strerror(errno));
	return os;
}

static void rados_pass(struct backend *b, unsigned secs)
{
	(void)b;
	sleep(secs);
}

static struct backend rados_backend = {.name = "rados", .pass = rados_pass};

static int rados_group_setup(void **state)
{
	const char *conf = getenv("COWBD_TEST_CEPH_CONF"), *id = getenv("COWBD_TEST_CEPH_ID");
	const char *pool = getenv("COWBD_TEST_CEPH_POOL");

	if (!conf || !*conf) {
		fprintf(stderr,
		        "test_objstore: COWBD_TEST_CEPH_CONF not set: the cluster cases skip\n");
		return 0;
	}
	ceph_opts = (struct objstore_rados_opts){
	    .conf = conf, .id = id ? id : "cowbd", .pool = pool ? pool : "cowbd", .timeout_s = 30};
	rados_backend.client = rados_client;
	snprintf(rados_backend.prefix, sizeof(rados_backend.prefix), "test_objstore.%d.%ld.",
	         (int)getpid(), (long)time(NULL));
	return 0;
}

static int rados_setup(void **state)
{
	*state = &rados_backend;
	return 0;
}

/* Remove what the test made, through a client of its own (the test's may
 * be fenced). */
static int rados_teardown(void **state)
{
	struct backend *b = *state;
	struct objstore *os;

	if (!b->client || !b->nused)
		return 0;
	os = rados_client(b);
	for (unsigned i = 0; i < b->nused; i++)
		objstore_remove(os, b->used[i]);
	objstore_close(os);
	b->nused = 0;
	return 0;
}

/* The backend of this test; skips when it has no cluster. */
static struct backend *be(void **state)
{
	struct backend *b = *state;

	if (!b->client)
		skip();
	return b;
}

/* A name for this run's object called what. */
static const char *oid(struct backend *b, const char *what)
{
	char name[OBJSTORE_NAME_MAX];

	snprintf(name, sizeof(name), "%s%s", b->prefix, what);
	for (unsigned i = 0; i < b->nused; i++)
		if (!strcmp(b->used[i], name))
			return b->used[i];
	assert_true(b->nused < 64);
	strcpy(b->used[b->nused], name);
	return b->used[b->nused++];
}

static struct objstore *client(struct backend *b)
{
	struct objstore *os = b->client(b);

	assert_non_null(os);
	return os;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 8));
}

/* ---- the contract, for every backend ---------------------------------- */

static void test_write_read(void **state)
{
	struct backend *b = be(state);
	struct objstore *a = client(b);
	const char *o = oid(b, "rw");
	static uint8_t w[8192], r[8192];

	fill(w, sizeof(w), 1);
	assert_int_equal(objstore_read(a, o, r, 10, 0), -ENOENT);
	assert_int_equal(objstore_write(a, o, w, 4096, 0), 0);
	assert_int_equal(objstore_write(a, o, w + 4096, 4096, 4096), 0);
	/* a queued write is seen by the same client's reads before a flush */
	assert_int_equal(objstore_read(a, o, r, 8192, 0), 8192);
	assert_memory_equal(r, w, 8192);
	assert_int_equal(objstore_flush(a), 0);
	/* an overwrite in the middle, then a short read at the end */
	fill(w + 100, 50, 2);
	assert_int_equal(objstore_write(a, o, w + 100, 50, 100), 0);
	assert_int_equal(objstore_read(a, o, r, 8192, 0), 8192);
	assert_memory_equal(r, w, 8192);
	assert_int_equal(objstore_read(a, o, r, 4096, 6144), 2048);
	assert_memory_equal(r, w + 6144, 2048);
	assert_int_equal(objstore_read(a, o, r, 4096, 8192), 0);
	assert_int_equal(objstore_read(a, o, r, 4096, 100000), 0);
	/* a write past the end leaves zeros in the gap */
	assert_int_equal(objstore_write(a, o, w, 10, 12288), 0);
	assert_int_equal(objstore_flush(a), 0);
	assert_int_equal(objstore_read(a, o, r, 8192, 8192), 4106);
	for (unsigned i = 0; i < 4096; i++)
		assert_int_equal(r[i], 0);
	assert_memory_equal(r + 4096, w, 10);
	assert_int_equal(objstore_remove(a, o), 0);
	objstore_close(a);
}

static void test_full_remove(void **state)
{
	struct backend *b = be(state);
	struct objstore *a = client(b);
	const char *o = oid(b, "full");
	uint8_t w[4096], r[4096];

	fill(w, sizeof(w), 3);
	assert_int_equal(objstore_remove(a, o), -ENOENT);
	assert_int_equal(objstore_write_full(a, o, w, 4096), 0);
	assert_int_equal(objstore_read(a, o, r, 4096, 0), 4096);
	assert_memory_equal(r, w, 4096);
	/* a shorter content replaces the whole, it does not overlay it */
	assert_int_equal(objstore_write_full(a, o, w + 1, 100), 0);
	assert_int_equal(objstore_read(a, o, r, 4096, 0), 100);
	assert_memory_equal(r, w + 1, 100);
	assert_int_equal(objstore_write_full(a, o, w, 0), 0);
	assert_int_equal(objstore_read(a, o, r, 4096, 0), 0); /* empty, not missing */
	assert_int_equal(objstore_remove(a, o), 0);
	assert_int_equal(objstore_read(a, o, r, 4096, 0), -ENOENT);
	assert_int_equal(objstore_remove(a, o), -ENOENT);
	objstore_close(a);
}

static void test_second_client(void **state)
{
	struct backend *b = be(state);
	struct objstore *a = client(b), *c = client(b);
	const char *o = oid(b, "shared");
	static uint8_t w[65536], r[65536];

	assert_string_not_equal(objstore_addr(a), objstore_addr(c));
	fill(w, sizeof(w), 4);
	for (unsigned i = 0; i < 16; i++)
		assert_int_equal(objstore_write(a, o, w + i * 4096, 4096, i * 4096), 0);
	assert_int_equal(objstore_flush(a), 0);
	assert_int_equal(objstore_read(c, o, r, sizeof(r), 0), (ssize_t)sizeof(r));
	assert_memory_equal(r, w, sizeof(r));
	assert_int_equal(objstore_remove(c, o), 0);
	assert_int_equal(objstore_read(a, o, r, 1, 0), -ENOENT);
	objstore_close(c);
	objstore_close(a);
}

static void test_lock(void **state)
{
	struct backend *b = be(state);
	struct objstore *a = client(b), *c = client(b);
	const char *o = oid(b, "lock");
	struct objstore_locker l;

	assert_int_equal(objstore_locker(c, o, &l), -ENOENT);
	assert_int_equal(objstore_lock(a, o, "ca", 60, false), 0);
	assert_int_equal(objstore_lock(c, o, "cb", 60, false), -EBUSY);
	assert_int_equal(objstore_lock(c, o, "ca", 60, true), -EBUSY);  /* A's cookie, not A */
	assert_int_equal(objstore_lock(a, o, "cb", 60, false), -EBUSY); /* A, another cookie */
	assert_int_equal(objstore_lock(a, o, "ca", 60, false), -EEXIST);
	assert_int_equal(objstore_lock(a, o, "ca", 60, true), 0);
	assert_int_equal(objstore_locker(c, o, &l), 0);
	assert_string_equal(l.cookie, "ca");
	assert_string_equal(l.addr, objstore_addr(a));
	assert_true(strncmp(l.client, "client.", 7) == 0);
	assert_int_equal(objstore_unlock(c, o, "ca"), -ENOENT);
	assert_int_equal(objstore_break_lock(c, o, &l), 0);
	assert_int_equal(objstore_locker(c, o, &l), -ENOENT);
	assert_int_equal(objstore_break_lock(c, o, &l), -ENOENT);
	assert_int_equal(objstore_lock(c, o, "cb", 0, false), 0);
	assert_int_equal(objstore_lock(a, o, "ca", 60, true), -EBUSY);
	assert_int_equal(objstore_unlock(a, o, "ca"), -ENOENT);
	assert_int_equal(objstore_locker(a, o, &l), 0);
	assert_string_equal(l.addr, objstore_addr(c));
	assert_int_equal(objstore_unlock(c, o, "cb"), 0);
	assert_int_equal(objstore_locker(a, o, &l), -ENOENT);
	assert_int_equal(objstore_lock(a, o, "ca", 60, false), 0);
	assert_int_equal(objstore_unlock(a, o, "ca"), 0);
	assert_int_equal(objstore_remove(a, o), 0);
	objstore_close(c);
	objstore_close(a);
}

/* oid's content and its attribute "k", as c reads them. */
static void expect_guarded(struct objstore *c, const char *o, const char *data, const char *k)
{
	char r[64];

	assert_int_equal(objstore_read(c, o, r, sizeof(r), 0), (ssize_t)strlen(data));
	assert_memory_equal(r, data, strlen(data));
	assert_int_equal(objstore_getxattr(c, o, "k", r, sizeof(r)), (ssize_t)strlen(k));
	assert_memory_equal(r, k, strlen(k));
}

static void test_locked_write(void **state)
{
	struct backend *b = be(state);
	struct objstore *a = client(b), *c = client(b);
	const char *o = oid(b, "guarded");
	struct objstore_locker l;
	char r[64];

	/* no object, no lock: refused, and nothing made */
	assert_int_equal(objstore_write_full_locked(a, o, "ca", "x", 1), -ENOLCK);
	assert_int_equal(objstore_setxattr_locked(a, o, "ca", "k", "x", 1), -ENOLCK);
	assert_int_equal(objstore_read(a, o, r, sizeof(r), 0), -ENOENT);
	assert_int_equal(objstore_getxattr(a, o, "k", r, sizeof(r)), -ENOENT);
	assert_int_equal(objstore_lock(a, o, "ca", 60, false), 0);
	assert_int_equal(objstore_getxattr(a, o, "k", r, sizeof(r)), -ENODATA);
	assert_int_equal(objstore_write_full_locked(a, o, "ca", "one", 3), 0);
	assert_int_equal(objstore_setxattr_locked(a, o, "ca", "k", "A", 1), 0);
	expect_guarded(c, o, "one", "A");
	/* another client (even with the holder's cookie), another cookie */
	assert_int_equal(objstore_write_full_locked(c, o, "ca", "two", 3), -ENOLCK);
	assert_int_equal(objstore_setxattr_locked(c, o, "ca", "k", "C", 1), -ENOLCK);
	assert_int_equal(objstore_write_full_locked(a, o, "cb", "two", 3), -ENOLCK);
	assert_int_equal(objstore_setxattr_locked(a, o, "cb", "k", "B", 1), -ENOLCK);
	expect_guarded(c, o, "one", "A");
	/* write_full keeps the attributes; an empty value is a value */
	assert_int_equal(objstore_write_full_locked(a, o, "ca", "three", 5), 0);
	assert_int_equal(objstore_setxattr_locked(a, o, "ca", "e", "", 0), 0);
	assert_int_equal(objstore_getxattr(c, o, "e", r, sizeof(r)), 0);
	assert_int_equal(objstore_getxattr(c, o, "k", r, 0), -ERANGE);
	expect_guarded(c, o, "three", "A");
	/* the lock broken: refused */
	assert_int_equal(objstore_locker(c, o, &l), 0);
	assert_int_equal(objstore_break_lock(c, o, &l), 0);
	assert_int_equal(objstore_write_full_locked(a, o, "ca", "four", 4), -ENOLCK);
	assert_int_equal(objstore_setxattr_locked(a, o, "ca", "k", "D", 1), -ENOLCK);
	expect_guarded(c, o, "three", "A");
	/* taken by another: the old holder is refused, the new one writes */
	assert_int_equal(objstore_lock(c, o, "cb", 2, false), 0);
	assert_int_equal(objstore_write_full_locked(a, o, "ca", "four", 4), -ENOLCK);
	assert_int_equal(objstore_write_full_locked(c, o, "cb", "five", 4), 0);
	assert_int_equal(objstore_setxattr_locked(c, o, "cb", "k", "E", 1), 0);
	/* its lease ran out, and nobody took the lock since: refused too */
	b->pass(b, 3);
	assert_int_equal(objstore_write_full_locked(c, o, "cb", "six", 3), -ENOLCK);
	assert_int_equal(objstore_setxattr_locked(c, o, "cb", "k", "F", 1), -ENOLCK);
	expect_guarded(a, o, "five", "E");
	assert_int_equal(objstore_remove(a, o), 0);
	assert_int_equal(objstore_getxattr(a, o, "k", r, sizeof(r)), -ENOENT);
	objstore_close(c);
	objstore_close(a);
}

static void test_blocklist(void **state)
{
	struct backend *b = be(state);
	struct objstore *a = client(b), *c = client(b);
	const char *o = oid(b, "fence"), *hdr = oid(b, "fence.hdr");
	struct objstore_locker l;
	uint8_t w[4096], r[4096];
	int err;

	fill(w, sizeof(w), 5);
	assert_int_equal(objstore_lock(a, hdr, "ca", 60, false), 0);
	assert_int_equal(objstore_write(a, o, w, 4096, 0), 0);
	assert_int_equal(objstore_flush(a), 0);
	/* the takeover: fence the holder by the address its lock names */
	assert_int_equal(objstore_locker(c, hdr, &l), 0);
	assert_int_equal(objstore_blocklist(c, l.addr), 0);
	assert_int_equal(objstore_break_lock(c, hdr, &l), 0);
	assert_int_equal(objstore_lock(c, hdr, "cb", 60, false), 0);
	/* A reaches nothing: its write fails there or at the flush */
	fill(w, 100, 6);
	err = objstore_write(a, o, w, 100, 0);
	if (err == 0)
		err = objstore_flush(a);
	assert_int_equal(err, -EBLOCKLISTED);
	assert_int_equal(objstore_read(a, o, r, 4096, 0), -EBLOCKLISTED);
	assert_int_equal(objstore_lock(a, hdr, "ca", 60, true), -EBLOCKLISTED);
	/* B goes on, and sees nothing of A's last write */
	fill(w, 100, 5);
	assert_int_equal(objstore_read(c, o, r, 4096, 0), 4096);
	assert_memory_equal(r, w, 4096);
	assert_int_equal(objstore_write(c, o, w, 10, 4096), 0);
	assert_int_equal(objstore_flush(c), 0);
	assert_int_equal(objstore_lock(c, hdr, "cb", 60, true), 0);
	assert_int_equal(objstore_remove(c, o), 0);
	assert_int_equal(objstore_remove(c, hdr), 0);
	objstore_close(c);
	objstore_close(a);
}

#define TH_N      4
#define TH_WRITES 200
#define TH_LEN    1000

struct th_arg {
	struct objstore *os;
	const char *oid;
	unsigned n;
	int err;
};

/* Chunk i of thread n: where it goes in the object the threads share
 * (interleaved, so the object grows under all of them), and its bytes. */
static uint64_t th_chunk(unsigned n, unsigned i, uint8_t *buf)
{
	fill(buf, TH_LEN, n * TH_WRITES + i);
	return ((uint64_t)i * TH_N + n) * TH_LEN;
}

/* One thread of test_threads: writes its chunks, flushing now and then,
 * through the client all the threads share. */
static void *th_writer(void *p)
{
	struct th_arg *t = p;
	uint8_t *w = malloc(TH_WRITES * TH_LEN);

	for (unsigned i = 0; i < TH_WRITES && !t->err; i++) {
		uint64_t off = th_chunk(t->n, i, w + i * TH_LEN);

		t->err = objstore_write(t->os, t->oid, w + i * TH_LEN, TH_LEN, off);
		if (!t->err && i % 8 == 7)
			t->err = objstore_flush(t->os);
	}
	if (!t->err)
		t->err = objstore_flush(t->os); /* before w goes */
	free(w);
	return NULL;
}

static void test_threads(void **state)
{
	struct backend *b = be(state);
	struct objstore *a = client(b), *c = client(b);
	static uint8_t w[TH_N * TH_WRITES * TH_LEN], r[sizeof(w)];
	struct th_arg t[TH_N];
	pthread_t th[TH_N];

	for (unsigned n = 0; n < TH_N; n++) {
		t[n] = (struct th_arg){.os = a, .oid = oid(b, "threads"), .n = n};
		assert_int_equal(pthread_create(&th[n], NULL, th_writer, &t[n]), 0);
	}
	for (unsigned n = 0; n < TH_N; n++) {
		assert_int_equal(pthread_join(th[n], NULL), 0);
		assert_int_equal(t[n].err, 0);
		for (unsigned i = 0; i < TH_WRITES; i++) {
			uint8_t chunk[TH_LEN];

			memcpy(w + th_chunk(n, i, chunk), chunk, TH_LEN);
		}
	}
	assert_int_equal(objstore_read(c, t[0].oid, r, sizeof(r), 0), (ssize_t)sizeof(r));
	assert_memory_equal(r, w, sizeof(r));
	assert_int_equal(objstore_remove(c, t[0].oid), 0);
	objstore_close(c);
	objstore_close(a);
}

/* ---- the memory store's own promises ---------------------------------- */

static void test_mem_lease(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct objstore *a = objstore_mem_client(m), *c = objstore_mem_client(m);
	struct objstore_locker l;

	assert_int_equal(objstore_lock(a, "h", "ca", 30, false), 0);
	objstore_mem_advance(m, 29);
	assert_int_equal(objstore_lock(c, "h", "cb", 30, false), -EBUSY);
	assert_int_equal(objstore_lock(a, "h", "ca", 30, true), 0); /* now until 59 */
	objstore_mem_advance(m, 29);
	assert_int_equal(objstore_locker(c, "h", &l), 0);
	objstore_mem_advance(m, 1);
	/* the lease is over: nobody holds it, and B may take it */
	assert_int_equal(objstore_locker(c, "h", &l), -ENOENT);
	assert_int_equal(objstore_unlock(a, "h", "ca"), -ENOENT);
	assert_int_equal(objstore_lock(c, "h", "cb", 30, false), 0);
	assert_int_equal(objstore_lock(a, "h", "ca", 30, true), -EBUSY);
	/* a holder whose lease ran out takes it again by renewing, if free */
	objstore_mem_advance(m, 30);
	assert_int_equal(objstore_lock(c, "h", "cb", 30, true), 0);
	assert_int_equal(objstore_locker(a, "h", &l), 0);
	assert_string_equal(l.addr, objstore_addr(c));
	/* without a lease the lock stays */
	assert_int_equal(objstore_unlock(c, "h", "cb"), 0);
	assert_int_equal(objstore_lock(a, "h", "ca", 0, false), 0);
	objstore_mem_advance(m, 1000000);
	assert_int_equal(objstore_lock(c, "h", "cb", 30, false), -EBUSY);
	objstore_close(a);
	objstore_close(c);
	objstore_mem_free(m);
}

#define CR_OBJS   3
#define CR_WRITES 24
#define CR_LEN    8192

/* The writes of the crash test: object, offset, length, pattern.  Each
 * overlaps earlier ones and most extend the object, so every prefix
 * leaves a different content. */
static void crash_write(unsigned i, unsigned *obj, uint64_t *off, size_t *len)
{
	*obj = i % CR_OBJS;
	*off = (i / CR_OBJS) * 700;
	*len = 1000 + (i * 37) % 500;
}

/* What object j holds after the first n writes: its length, or -ENOENT. */
static ssize_t crash_model(unsigned j, unsigned n, uint8_t *buf)
{
	ssize_t len = -ENOENT;

	memset(buf, 0, CR_LEN);
	for (unsigned i = 0; i < n; i++) {
		unsigned obj;
		uint64_t off;
		size_t l;

		crash_write(i, &obj, &off, &l);
		if (obj != j)
			continue;
		fill(buf + off, l, i + 10);
		if ((ssize_t)(off + l) > len)
			len = off + l;
	}
	return len;
}

static void test_mem_crash(void **state)
{
	static uint8_t w[CR_LEN], r[CR_LEN], model[CR_LEN];
	unsigned seen_none = 0, seen_all = 0, seen_part = 0;

	for (unsigned seed = 0; seed < 300; seed++) {
		struct objstore_mem *m = objstore_mem_new();
		struct objstore *a = objstore_mem_client(m), *c = objstore_mem_client(m);
		unsigned flushed = 6 + seed % 7; /* durable before the crash */
		char name[8];

		for (unsigned i = 0; i < CR_WRITES; i++) {
			unsigned obj;
			uint64_t off;
			size_t l;

			if (i == flushed)
				assert_int_equal(objstore_flush(a), 0);
			crash_write(i, &obj, &off, &l);
			fill(w, l, i + 10);
			snprintf(name, sizeof(name), "o%u", obj);
			assert_int_equal(objstore_write(a, name, w, l, off), 0);
		}
		objstore_mem_crash(a, seed);
		assert_int_equal(objstore_read(a, "o0", r, 1, 0), -EBLOCKLISTED);
		assert_int_equal(objstore_flush(a), -EBLOCKLISTED);
		for (unsigned j = 0; j < CR_OBJS; j++) {
			unsigned total = 0, kept = ~0u;
			ssize_t got, want;

			snprintf(name, sizeof(name), "o%u", j);
			got = objstore_read(c, name, r, CR_LEN, 0);
			/* which of the prefixes is it: the flushed writes and
			 * the first k of the unflushed ones to this object? */
			for (unsigned n = flushed; n <= CR_WRITES; n++) {
				if (n > flushed && (n - 1) % CR_OBJS != j)
					continue;
				total += n > flushed;
				want = crash_model(j, n, model);
				if (kept == ~0u && got == want &&
				    (got <= 0 || !memcmp(r, model, got)))
					kept = total;
			}
			assert_int_not_equal(kept, ~0u);
			if (kept == total)
				seen_all++;
			else if (kept == 0)
				seen_none++;
			else
				seen_part++;
		}
		objstore_close(a);
		objstore_close(c);
		objstore_mem_free(m);
	}
	/* the seeds chose every kind of outcome */
	assert_true(seen_none > 50 && seen_all > 50 && seen_part > 200);
}

static void test_mem_crash_create(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	unsigned gone = 0, kept = 0;
	uint64_t objs, bytes;
	uint8_t r[4];

	for (unsigned seed = 0; seed < 40; seed++) {
		struct objstore *a = objstore_mem_client(m), *c = objstore_mem_client(m);

		assert_int_equal(objstore_write(a, "new", "abcd", 4, 0), 0);
		objstore_mem_crash(a, seed);
		/* lost, the write that made the object leaves no object */
		if (objstore_read(c, "new", r, 4, 0) == -ENOENT) {
			gone++;
		} else {
			assert_int_equal(objstore_read(c, "new", r, 4, 0), 4);
			assert_memory_equal(r, "abcd", 4);
			assert_int_equal(objstore_remove(c, "new"), 0);
			kept++;
		}
		objstore_mem_usage(m, &objs, &bytes);
		assert_int_equal(objs, 0);
		objstore_close(a);
		objstore_close(c);
	}
	assert_true(gone > 5 && kept > 5);
	objstore_mem_free(m);
}

static void test_mem_durable(void **state)
{
	uint8_t r[8];

	for (unsigned seed = 0; seed < 20; seed++) {
		struct objstore_mem *m = objstore_mem_new();
		struct objstore *a = objstore_mem_client(m), *c = objstore_mem_client(m);

		/* flushed writes, write_full and remove survive any crash, and
		 * write_full makes the object's earlier writes durable */
		assert_int_equal(objstore_write(a, "f", "11111111", 8, 0), 0);
		assert_int_equal(objstore_flush(a), 0);
		assert_int_equal(objstore_write(a, "g", "2222", 4, 0), 0);
		assert_int_equal(objstore_write_full(a, "g", "33", 2), 0);
		assert_int_equal(objstore_write(a, "h", "4444", 4, 0), 0);
		assert_int_equal(objstore_remove(a, "h"), 0);
		objstore_mem_crash(a, seed);
		objstore_close(a);
		assert_int_equal(objstore_read(c, "f", r, 8, 0), 8);
		assert_memory_equal(r, "11111111", 8);
		assert_int_equal(objstore_read(c, "g", r, 8, 0), 2);
		assert_memory_equal(r, "33", 2);
		assert_int_equal(objstore_read(c, "h", r, 8, 0), -ENOENT);
		objstore_close(c);
		objstore_mem_free(m);
	}
}

static void test_mem_faults(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct objstore *a = objstore_mem_client(m);
	uint8_t r[8];

	objstore_mem_fail_write(a, 2);
	assert_int_equal(objstore_write(a, "o", "aaaa", 4, 0), 0);
	assert_int_equal(objstore_write(a, "o", "bbbb", 4, 4), 0); /* fails, unseen */
	assert_int_equal(objstore_write(a, "o", "cccc", 4, 0), 0);
	assert_int_equal(objstore_read(a, "o", r, 8, 0), 4); /* not applied */
	assert_memory_equal(r, "cccc", 4);
	assert_int_equal(objstore_flush(a), -EIO);
	assert_int_equal(objstore_flush(a), 0); /* reported once */
	assert_int_equal(objstore_mem_writes(a), 3);
	assert_int_equal(objstore_mem_flushes(a), 2);

	objstore_mem_fail_flush(a, 1);
	assert_int_equal(objstore_write(a, "o", "dddd", 4, 4), 0);
	assert_int_equal(objstore_flush(a), -EIO);
	assert_int_equal(objstore_flush(a), 0);

	objstore_mem_fail_read(a, 2);
	assert_int_equal(objstore_read(a, "o", r, 8, 0), 8);
	assert_int_equal(objstore_read(a, "o", r, 8, 0), -EIO);
	assert_int_equal(objstore_read(a, "o", r, 8, 0), 8);
	assert_memory_equal(r, "ccccdddd", 8);
	/* 0 disarms */
	objstore_mem_fail_read(a, 1);
	objstore_mem_fail_read(a, 0);
	assert_int_equal(objstore_read(a, "o", r, 8, 0), 8);
	objstore_close(a);
	objstore_mem_free(m);
}

static void test_mem_usage(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct objstore *a = objstore_mem_client(m);
	static uint8_t w[10000];
	uint64_t objs, bytes;

	objstore_mem_usage(m, &objs, &bytes);
	assert_true(objs == 0 && bytes == 0);
	assert_int_equal(objstore_write(a, "x", w, 5000, 5000), 0);
	assert_int_equal(objstore_write_full(a, "y", w, 300), 0);
	assert_int_equal(objstore_lock(a, "z", "c", 0, false), 0); /* makes z, as RADOS */
	objstore_mem_usage(m, &objs, &bytes);
	assert_true(objs == 3 && bytes == 10300);
	assert_int_equal(objstore_remove(a, "x"), 0);
	assert_int_equal(objstore_remove(a, "z"), 0);
	objstore_mem_usage(m, &objs, &bytes);
	assert_true(objs == 1 && bytes == 300);
	objstore_close(a);
	objstore_mem_free(m);
}

/* A cluster given a capacity: space says what is left; a write that
 * would overfill it is refused whole (-ENOSPC at its flush, or at once
 * for write_full), one that fits goes in; without a capacity space has
 * no figure. */
static void test_mem_capacity(void **state)
{
	struct objstore_mem *m = objstore_mem_new();
	struct objstore *a = objstore_mem_client(m);
	static uint8_t w[10000];
	uint64_t bytes, objs, used;

	(void)state;
	assert_int_equal(objstore_space(a, &bytes, &objs), -ENOTSUP);
	objstore_mem_set_capacity(m, 8000);
	assert_int_equal(objstore_space(a, &bytes, &objs), 0);
	assert_true(bytes == 8000 && objs == UINT64_MAX);
	assert_int_equal(objstore_write(a, "x", w, 5000, 0), 0);
	assert_int_equal(objstore_flush(a), 0);
	assert_int_equal(objstore_space(a, &bytes, &objs), 0);
	assert_true(bytes == 3000);
	assert_int_equal(objstore_write(a, "x", w, 4000, 4000), 0); /* 8000 long: fits */
	assert_int_equal(objstore_flush(a), 0);
	assert_int_equal(objstore_write(a, "y", w, 1, 0), 0); /* 8001 */
	assert_int_equal(objstore_flush(a), -ENOSPC);
	assert_int_equal(objstore_read(a, "y", w, 1, 0), -ENOENT);
	assert_int_equal(objstore_write_full(a, "x", w, 8001), -ENOSPC);
	assert_int_equal(objstore_write_full(a, "x", w, 100), 0); /* shrinking always fits */
	objstore_mem_usage(m, &objs, &used);
	assert_true(used == 100);
	assert_int_equal(objstore_space(a, &bytes, &objs), 0);
	assert_true(bytes == 7900);
	objstore_close(a);
	objstore_mem_free(m);
}

static void test_rados_bad_pool(void **state)
{
	struct objstore_rados_opts o = ceph_opts;
	const char *why = NULL;

	be(state);
	o.pool = "no-such-pool-for-test_objstore";
	errno = 0;
	assert_null(objstore_rados_new(&o, &why));
	assert_int_equal(errno, ENOENT);
	assert_string_equal(why, "no such RADOS pool");
	o = ceph_opts;
	o.conf = "/nonexistent/ceph.conf";
	assert_null(objstore_rados_new(&o, &why));
	assert_string_equal(why, "cannot read the Ceph configuration file");
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* A copy of the test's ceph.conf whose monitor is a port nobody serves. */
static void dead_conf(char *path)
{
	char line[512];
	FILE *in = fopen(ceph_opts.conf, "r"), *out;
	int fd = mkstemp(path);

	assert_non_null(in);
	assert_true(fd >= 0);
	out = fdopen(fd, "w");
	assert_non_null(out);
	while (fgets(line, sizeof(line), in))
		fputs(strncmp(line, "mon host", 8) ? line : "mon host = [v2:127.0.0.1:1]\n", out);
	fclose(in);
	assert_int_equal(fclose(out), 0);
}

/* A cluster that does not answer fails within the timeout given, not the
 * conf's (15 s in the test cluster's) or librados' own (300 s). */
static void test_rados_timeout(void **state)
{
	struct objstore_rados_opts o = ceph_opts;
	char path[] = "/tmp/test_objstore.conf.XXXXXX";
	const char *why = NULL;
	double t0;

	be(state);
	dead_conf(path);
	o.conf = path;
	o.timeout_s = 2;
	t0 = now_us();
	assert_null(objstore_rados_new(&o, &why));
	assert_int_equal(errno, ETIMEDOUT);
	assert_string_equal(why, "cannot connect to the Ceph cluster");
	assert_true(now_us() - t0 < 8e6);
	unlink(path);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The median of 100 writes of len bytes, each followed by a flush, in
 * 4 MiB objects (segments) as the log writes them. */
static double write_flush_median(struct backend *b, struct objstore *os, size_t len)
{
	static uint8_t w[1 << 20];
	double t[100];
	char name[32];

	fill(w, len, 7);
	for (unsigned i = 0; i < 100; i++) {
		uint64_t off = (uint64_t)i * len;
		double t0 = now_us();

		snprintf(name, sizeof(name), "lat%zu.%" PRIu64, len, off >> 22);
		assert_int_equal(objstore_write(os, oid(b, name), w, len, off & ((1 << 22) - 1)),
		                 0);
		assert_int_equal(objstore_flush(os), 0);
		t[i] = now_us() - t0;
	}
	qsort(t, 100, sizeof(t[0]), cmp_double);
	return (t[49] + t[50]) / 2;
}

/* The test pool has no quota: space answers with the OSDs' room. */
static void test_rados_space(void **state)
{
	struct backend *b = be(state);
	struct objstore *a = client(b);
	uint64_t bytes = 0, objs = 0;

	assert_int_equal(objstore_space(a, &bytes, &objs), 0);
	printf("objstore_rados: the pool can take %" PRIu64 " MiB more\n", bytes >> 20);
	assert_true(bytes > 0);
	assert_true(objs == UINT64_MAX);
	objstore_close(a);
}

static void test_rados_latency(void **state)
{
	struct backend *b = be(state);
	struct objstore *a = client(b);

	printf("objstore_rados: write+flush median of 100: 4 KiB %.0f us, 1 MiB %.0f us\n",
	       write_flush_median(b, a, 4096), write_flush_median(b, a, 1 << 20));
	objstore_close(a);
}

/* 128 MiB queued as fast as it can be, 1 MiB at a time over 4 objects,
 * with no flush: the writes on their way never exceed the bound (queuing
 * is far faster than a cluster takes the writes, so an unbounded client
 * would have nearly all of it in flight), and a flush then finds them all
 * durable. */
static void test_rados_inflight(void **state)
{
	struct backend *b = be(state);
	struct objstore *a = client(b);
	const char *o[4] = {oid(b, "if0"), oid(b, "if1"), oid(b, "if2"), oid(b, "if3")};
	uint8_t *w = malloc(1 << 20), r[4096];

	assert_non_null(w);
	for (unsigned i = 0; i < 128; i++) {
		fill(w, 1 << 20, i);
		assert_int_equal(objstore_write(a, o[i % 4], w, 1 << 20, (uint64_t)(i / 4) << 20),
		                 0);
	}
	size_t peak = objstore_rados_inflight_peak(a);
	printf("objstore_rados: at most %zu MiB in flight (bound %u MiB)\n", peak >> 20,
	       OBJSTORE_RADOS_INFLIGHT >> 20);
	assert_true(peak <= OBJSTORE_RADOS_INFLIGHT);
	assert_true(peak >= 1u << 20);
	assert_int_equal(objstore_flush(a), 0);
	fill(w, 1 << 20, 127);
	assert_int_equal(objstore_read(a, o[3], r, sizeof(r), 31u << 20), (ssize_t)sizeof(r));
	assert_memory_equal(r, w, sizeof(r));
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(objstore_remove(a, o[i]), 0);
	free(w);
	objstore_close(a);
}

#define CONTRACT(setup, teardown)                                                                  \
	cmocka_unit_test_setup_teardown(test_write_read, setup, teardown),                         \
	    cmocka_unit_test_setup_teardown(test_full_remove, setup, teardown),                    \
	    cmocka_unit_test_setup_teardown(test_second_client, setup, teardown),                  \
	    cmocka_unit_test_setup_teardown(test_lock, setup, teardown),                           \
	    cmocka_unit_test_setup_teardown(test_locked_write, setup, teardown),                   \
	    cmocka_unit_test_setup_teardown(test_blocklist, setup, teardown),                      \
	    cmocka_unit_test_setup_teardown(test_threads, setup, teardown)

int main(void)
{
	const struct CMUnitTest mem[] = {
	    CONTRACT(mem_setup, mem_teardown),  cmocka_unit_test(test_mem_lease),
	    cmocka_unit_test(test_mem_crash),   cmocka_unit_test(test_mem_crash_create),
	    cmocka_unit_test(test_mem_durable), cmocka_unit_test(test_mem_faults),
	    cmocka_unit_test(test_mem_usage),   cmocka_unit_test(test_mem_capacity),
	};

	const struct CMUnitTest rados[] = {
	    CONTRACT(rados_setup, rados_teardown),
	    cmocka_unit_test_setup_teardown(test_rados_bad_pool, rados_setup, rados_teardown),
	    cmocka_unit_test_setup_teardown(test_rados_timeout, rados_setup, rados_teardown),
	    cmocka_unit_test_setup_teardown(test_rados_space, rados_setup, rados_teardown),
	    cmocka_unit_test_setup_teardown(test_rados_latency, rados_setup, rados_teardown),
	    cmocka_unit_test_setup_teardown(test_rados_inflight, rados_setup, rados_teardown),
	};
	int failed = cmocka_run_group_tests_name("objstore_mem", mem, NULL, NULL);

	return failed +
	       cmocka_run_group_tests_name("objstore_rados", rados, rados_group_setup, NULL);
}
