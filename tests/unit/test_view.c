/* test_view.c — the read path that answers a READ from a read-only shared
 * mapping of the pool (views): blkdev_view and blkdev_view_guard on a file
 * device and on the memory device, and store_read_view on a store over a
 * pool file: the pieces it gives hold the volume's data, it declines what
 * it cannot answer in place (holes, partial blocks, too many runs, pages
 * not in memory, a backend without views), a damaged block answers EIO
 * rather than its bytes, and views stay right while the compactor moves
 * blocks and frees segments under a reader.
 *
 * Views need a real file in the page cache, so every test here makes its
 * pool file in a fresh directory under /tmp and removes it at the end. */
#undef NDEBUG
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "blkdev.h"
#include "store.h"
#include "testpool.h"

#define BLK 4096u

/* SIGBUS as blkdev installed it (on_sigbus), taken in main before cmocka
 * runs a test.  cmocka puts a handler of its own on SIGBUS around every
 * test and puts the previous one back after it, so the handler blkdev
 * installs once per process is not in place while a later test runs; the
 * test that makes a view fault installs this one for its duration. */
static struct sigaction view_bus;

/* ---- helpers ----------------------------------------------------------- */

/* A fresh directory under /tmp and the pool file's name in it. */
struct tmpfile {
	char dir[64];
	char path[96];
};

static void tmp_make(struct tmpfile *t)
{
	snprintf(t->dir, sizeof(t->dir), "/tmp/test_view.XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/pool.img", t->dir);
}

static void tmp_remove(struct tmpfile *t)
{
	unlink(t->path);
	assert_int_equal(rmdir(t->dir), 0);
}

/* Block lba's content: its first 8-byte word names it (BLK_TAG + lba), the
 * others are a hash of it, so no other block (and no metadata block) holds
 * these bytes, and a block found in the pool file says which it is. */
#define BLK_TAG 0x5649455754455354ull /* "VIEWTEST" */

static void blk_fill(uint8_t *b, uint64_t lba)
{
	uint64_t w = BLK_TAG + lba;

	memcpy(b, &w, 8);
	for (unsigned i = 1; i < BLK / 8; i++) {
		w = (lba + 1) * 0x9e3779b97f4a7c15ull ^ i * 0xd6e8feb86659fd93ull;
		memcpy(b + i * 8, &w, 8);
	}
}

static void blks_fill(uint8_t *b, uint64_t lba, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		blk_fill(b + i * BLK, lba + i);
}

/* Write fd's file back and drop it from the page cache (pages mapped by
 * some process stay: the kernel does not drop those; on tmpfs the page
 * cache is the file and nothing goes). */
static void drop_cache(int fd)
{
	assert_int_equal(fdatasync(fd), 0);
	assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
}

/* Is any page of [off, off+len) of fd's file in the page cache?  Asked
 * through a mapping of our own, which touches no page. */
static bool resident(int fd, uint64_t off, uint64_t len)
{
	uint64_t psz = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t lo = off / psz * psz;
	size_t pages = (size_t)((off + len - lo + psz - 1) / psz);
	unsigned char *vec = malloc(pages);
	bool any = false;

	assert_non_null(vec);
	void *m = mmap(NULL, off + len - lo, PROT_READ, MAP_SHARED, fd, (off_t)lo);
	assert_true(m != MAP_FAILED);
	assert_int_equal(mincore(m, off + len - lo, vec), 0);
	for (size_t i = 0; i < pages; i++)
		any = any || (vec[i] & 1);
	munmap(m, off + len - lo);
	free(vec);
	return any;
}

/* Where blocks 0..n-1 (blk_fill) lie in the file at path: at[lba] their
 * byte offsets, found by reading the whole file (with pread: in the page
 * cache afterwards).  Each must be there exactly once. */
static void find_blocks(const char *path, uint64_t n, uint64_t *at)
{
	const size_t chunk = 1u << 20;
	uint8_t *buf = malloc(chunk), want[BLK];
	unsigned *found = calloc(n, sizeof(*found));
	int fd = open(path, O_RDONLY);
	ssize_t got;

	assert_non_null(buf);
	assert_non_null(found);
	assert_true(fd >= 0);
	for (uint64_t off = 0; (got = pread(fd, buf, chunk, (off_t)off)) > 0; off += (uint64_t)got)
		for (ssize_t o = 0; o + (ssize_t)BLK <= got; o += BLK) {
			uint64_t w;
			memcpy(&w, buf + o, 8);
			if (w - BLK_TAG >= n)
				continue;
			blk_fill(want, w - BLK_TAG);
			if (memcmp(buf + o, want, BLK) == 0) {
				at[w - BLK_TAG] = off + (uint64_t)o;
				found[w - BLK_TAG]++;
			}
		}
	close(fd);
	for (uint64_t i = 0; i < n; i++)
		assert_int_equal(found[i], 1);
	free(found);
	free(buf);
}

/* Copy a view (one range or several pieces) out inside a guard. */
struct copy_arg {
	const struct iovec *piece;
	unsigned n;
	uint8_t *dst;
};

static int copy_pieces(void *arg)
{
	struct copy_arg *a = arg;
	uint8_t *d = a->dst;

	for (unsigned i = 0; i < a->n; i++) {
		memcpy(d, a->piece[i].iov_base, a->piece[i].iov_len);
		d += a->piece[i].iov_len;
	}
	return 0;
}

/* Copy len bytes of a view at p into dst under blkdev_view_guard. */
static int view_copy(const void *p, size_t len, void *dst)
{
	struct iovec one = {.iov_base = (void *)p, .iov_len = len};
	struct copy_arg a = {.piece = &one, .n = 1, .dst = dst};

	return blkdev_view_guard(copy_pieces, &a);
}

static int nothing(void *arg)
{
	return 0;
}

static int seven(void *arg)
{
	return 7;
}

/* Sum a view's bytes one load at a time (volatile: every byte is read). */
struct touch_arg {
	const volatile uint8_t *p;
	size_t len;
	unsigned sum;
};

static int touch(void *arg)
{
	struct touch_arg *a = arg;

	for (size_t i = 0; i < a->len; i++)
		a->sum += a->p[i];
	return 0;
}

static void pwrite_all(struct blkdev *d, const void *buf, size_t len, uint64_t off)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	assert_int_equal(blkdev_pwritev(d, &iov, 1, off), 0);
}

/* ---- blkdev ------------------------------------------------------------ */

/* A view of a file device is a pointer at the range in a mapping of the
 * file: its bytes are what was written there, and what is written later
 * (a shared mapping shows the page cache as it is).  No view is given for
 * a range that is empty, runs past the device's end, or is not all in the
 * page cache (never written, or dropped from it); the memory device has
 * no views at all. */
static void test_blkdev_view(void **state)
{
	const uint64_t size = 16u << 20, a = 1u << 20, b = 8u << 20, len = 256u * 1024;
	uint8_t *pat = malloc(len), *got = malloc(len);
	struct tmpfile t;
	struct blkdev *d;
	const uint8_t *v;

	assert_non_null(pat);
	assert_non_null(got);
	tmp_make(&t);
	d = blkdev_create_file(t.path, size);
	assert_non_null(d);
	for (uint64_t i = 0; i < len; i++)
		pat[i] = (uint8_t)(i * 7 + (i >> 12) + 1);
	pwrite_all(d, pat, len, a);
	pwrite_all(d, pat, len, b);
	pwrite_all(d, pat, BLK, size - BLK); /* the last block */

	/* A written range: its bytes, read through the view. */
	v = blkdev_view(d, a, len);
	assert_non_null(v);
	memset(got, 0, len);
	assert_int_equal(view_copy(v, len, got), 0);
	assert_memory_equal(pat, got, len);
	/* The same mapping at any offset inside it: the pointer of an
	 * unaligned range is the range's own first byte. */
	assert_ptr_equal(blkdev_view(d, a + 100, 5000), v + 100);
	assert_ptr_equal(blkdev_view(d, a + BLK, BLK), v + BLK);
	/* The view shows later writes (what a pread would return now). */
	memset(pat, 0xa5, BLK);
	pwrite_all(d, pat, BLK, a);
	assert_int_equal(view_copy(v, BLK, got), 0);
	assert_memory_equal(pat, got, BLK);
	/* The last block of the device is a valid view; one byte more is
	 * not, nor is anything at or past the end, nor an empty range. */
	assert_non_null(blkdev_view(d, size - BLK, BLK));
	assert_null(blkdev_view(d, size - BLK, BLK + 1));
	assert_null(blkdev_view(d, size, 1));
	assert_null(blkdev_view(d, size + BLK, BLK));
	assert_null(blkdev_view(d, a, SIZE_MAX - 10)); /* off + len wraps */
	assert_null(blkdev_view(d, a, 0));
	/* Never written and never read: not in the page cache, no view (on
	 * any filesystem, tmpfs included). */
	assert_null(blkdev_view(d, 4u << 20, BLK));
	assert_null(blkdev_view(d, a + len - BLK, 2 * BLK)); /* half written */

	/* Written but dropped from the page cache: no view.  Range b was
	 * never touched through the mapping (mapped pages are not dropped),
	 * and 7 MiB away from a, beyond the kernel's fault-around. */
	assert_non_null(blkdev_view(d, b, len));
	drop_cache(d->fd);
	if (!resident(d->fd, b, len))
		assert_null(blkdev_view(d, b, len));
	else
		print_message("page cache not dropped here (tmpfs?): that case is not checked\n");
	/* The range a, read through the mapping, is not dropped: still a
	 * view (and still its bytes). */
	assert_true(v == blkdev_view(d, a, len));
	assert_int_equal(view_copy(v + BLK, BLK, got), 0);
	assert_memory_equal(got, pat + BLK, BLK);
	blkdev_close(d);
	tmp_remove(&t);

	/* The memory device: never a view, written or not. */
	d = blkdev_mem_new(16u << 20);
	assert_non_null(d);
	pwrite_all(d, pat, len, 0);
	assert_null(blkdev_view(d, 0, len));
	assert_null(blkdev_view(d, 0, BLK));
	blkdev_close(d);
	free(pat);
	free(got);
}

/* A view whose pages go away under it (the file truncated behind the
 * device's back) faults; inside blkdev_view_guard that fault is -EIO, the
 * process goes on, and the guard works again for the next one.  A guarded
 * function that does not fault returns its own result.  Outside a guard
 * the fault is what it always was: the process dies of it (in a child). */
static void test_view_guard(void **state)
{
	const uint64_t size = 16u << 20, len = 64u * 1024;
	uint8_t *buf = malloc(len);
	struct sigaction cm;
	struct tmpfile t;
	struct blkdev *d;
	const uint8_t *v;
	int fd2;

	assert_non_null(buf);
	/* blkdev's handler, not cmocka's, while this test runs (see view_bus). */
	assert_int_equal(sigaction(SIGBUS, &view_bus, &cm), 0);
	tmp_make(&t);
	d = blkdev_create_file(t.path, size);
	assert_non_null(d);
	memset(buf, 0x5a, len);
	pwrite_all(d, buf, len, 0);
	v = blkdev_view(d, 0, len);
	assert_non_null(v);
	struct touch_arg ta = {.p = v, .len = len};
	assert_int_equal(blkdev_view_guard(touch, &ta), 0);
	assert_int_equal(ta.sum, 0x5au * len);
	assert_int_equal(blkdev_view_guard(seven, NULL), 7);

	/* Shrink the file through another descriptor: the mapping's pages
	 * are beyond its end now, and reading them is SIGBUS. */
	fd2 = open(t.path, O_RDWR);
	assert_true(fd2 >= 0);
	assert_int_equal(ftruncate(fd2, 0), 0);
	assert_null(blkdev_view(d, 0, len)); /* nothing there is in memory */
	ta.sum = 0;
	assert_int_equal(blkdev_view_guard(touch, &ta), -EIO);
	assert_int_equal(ta.sum, 0); /* cut short at the first byte */
	/* The handler is armed again for the next guard ... */
	ta.sum = 0;
	ta.p = v + len / 2;
	ta.len = len / 2;
	assert_int_equal(blkdev_view_guard(touch, &ta), -EIO);
	/* ... and a guard whose function does not fault is not disturbed
	 * by the faults before it. */
	assert_int_equal(blkdev_view_guard(seven, NULL), 7);

	/* Outside any guard the fault is not swallowed: a child that reads
	 * the view dies (SIGBUS, or a sanitizer's report and exit status),
	 * rather than going on or spinning on the faulting load. */
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY); /* a sanitizer's report is expected */
		if (null >= 0)
			dup2(null, 2);
		alarm(10);
		volatile uint8_t x = v[0];
		(void)x;
		_exit(0);
	}
	int wst;
	assert_int_equal(waitpid(pid, &wst, 0), pid);
	assert_true((WIFSIGNALED(wst) && WTERMSIG(wst) == SIGBUS) ||
	            (WIFEXITED(wst) && WEXITSTATUS(wst) != 0));

	/* The file back at its size: the range is a hole, the same view
	 * reads zeroes and the guard returns the function's result. */
	assert_int_equal(ftruncate(fd2, (off_t)size), 0);
	ta = (struct touch_arg){.p = v, .len = len};
	assert_int_equal(blkdev_view_guard(touch, &ta), 0);
	assert_int_equal(ta.sum, 0);
	close(fd2);
	blkdev_close(d);
	tmp_remove(&t);
	free(buf);
	assert_int_equal(sigaction(SIGBUS, &cm, NULL), 0);
}

/* ---- store_read_view --------------------------------------------------- */

/* A store (opts may be NULL) on a new pool file of 96 MiB with the 16 MiB
 * volume "v". */
static struct store *file_store(struct tmpfile *t, const struct store_opts *opts,
                                struct blkdev **dev, struct vol **v)
{
	tmp_make(t);
	*dev = blkdev_create_file(t->path, 96u << 20);
	assert_non_null(*dev);
	return testpool_volume(*dev, opts, "v", 16u << 20, v);
}

static uint64_t stat_views(struct store *st)
{
	struct store_stats s;
	store_get_stats(st, &s);
	return s.read_views;
}

static uint64_t stat_bad_reads(struct store *st)
{
	struct store_stats s;
	store_get_stats(st, &s);
	return s.bad_reads;
}

/* store_read_view's use in view_read: the pieces' shape noted and, when
 * they add up to the request, their bytes copied out.  cut >= 0: the
 * pool file is truncated through it first (the pages go, the copy
 * faults). */
struct view_use {
	const struct iovec *piece;
	const unsigned *n;
	unsigned max;
	uint32_t len;
	uint8_t *dst;
	int cut;
	unsigned calls;
	bool whole;
	size_t total;
};

static int view_use(void *arg)
{
	struct view_use *a = arg;

	a->calls++;
	if (a->cut >= 0 && ftruncate(a->cut, 0))
		return -errno;
	a->whole = true;
	a->total = 0;
	for (unsigned i = 0; i < *a->n && i < a->max; i++) {
		a->whole = a->whole && a->piece[i].iov_len > 0 && a->piece[i].iov_len % BLK == 0;
		a->total += a->piece[i].iov_len;
	}
	if (*a->n < 1 || *a->n > a->max || a->total != a->len)
		return 0;
	struct copy_arg c = {.piece = a->piece, .n = *a->n, .dst = a->dst};
	return copy_pieces(&c);
}

/* store_read_view of [off, off+len) with up to max pieces, in a read-side
 * section: its answer, the pieces' count in *n and, when it answered
 * without error, their bytes copied to out (by its use, inside the guard).
 * *err: req.err, left at 12345 when nothing happened.  cut: as in
 * view_use (-1: none). */
static bool view_read_cut(struct vol *v, uint64_t off, uint32_t len, unsigned max, unsigned *n,
                          int *err, uint8_t *out, int cut)
{
	struct iovec piece[256];
	struct store_req r = {.op = STORE_READ, .off = off, .len = len, .vol = v, .err = 12345};
	struct view_use u = {
	    .piece = piece, .n = n, .max = max, .len = len, .dst = out, .cut = cut};
	bool ok;

	assert_true(max <= 256);
	*n = 0;
	/* No assertion inside the section: a failing one would leave it
	 * held, and the next grace period (store_close's) would wait for
	 * ever. */
	store_read_lock();
	ok = store_read_view(&r, piece, max, n, view_use, &u);
	store_read_unlock();
	if (ok && r.err == 0) {
		assert_int_equal(u.calls, 1);
		assert_true(*n >= 1 && *n <= max);
		assert_true(u.whole); /* pieces of whole blocks */
		assert_int_equal(u.total, len);
	} else if (cut < 0) {
		assert_int_equal(u.calls, 0); /* declined or damaged: not used */
	}
	if (!ok)
		assert_int_equal(*n, 0);
	*err = r.err;
	return ok;
}

static bool view_read(struct vol *v, uint64_t off, uint32_t len, unsigned max, unsigned *n,
                      int *err, uint8_t *out)
{
	return view_read_cut(v, off, len, max, n, err, out, -1);
}

/* 1 MiB of distinct blocks, written in writes of 1 to 7 blocks (each its
 * own batch, so a summary lies between them in the log and the data is
 * many physical runs), read back through views.  The oracle is the data
 * written: the pieces, joined, are that data; the stats count one view per
 * successful call.  A view declines (false, req untouched, nothing
 * counted) a hole, a range not of whole blocks, a range beyond the
 * volume, more runs than max (one fewer than the successful call used is
 * refused, exactly as many is not), a request that is not a READ, blocks
 * dropped from the page cache (where store_read still reads them), and
 * any range on a pool without views (the memory device). */
static void test_read_view(void **state)
{
	const uint32_t mib = 1u << 20;
	uint8_t *data = malloc(mib), *got = malloc(mib);
	struct tmpfile t;
	struct blkdev *dev;
	struct store *st;
	struct vol *v;
	unsigned n, runs;
	int err;

	assert_non_null(data);
	assert_non_null(got);
	blks_fill(data, 0, mib / BLK);
	st = file_store(&t, NULL, &dev, &v);
	store_thread_register();
	for (uint64_t b = 0, k = 0; b < mib / BLK; k++) {
		uint64_t nb = 1 + k % 7;
		if (b + nb > mib / BLK)
			nb = mib / BLK - b;
		assert_int_equal(store_write(v, data + b * BLK, b * BLK, (uint32_t)(nb * BLK), 0),
		                 0);
		b += nb;
	}
	assert_int_equal(store_flush(v), 0);
	uint64_t views = stat_views(st);

	/* Where the data lies in the pool, and so how many physical runs it
	 * makes (one piece each). */
	uint64_t *at = malloc(mib / BLK * sizeof(*at));
	unsigned want_runs = 1;
	assert_non_null(at);
	find_blocks(t.path, mib / BLK, at);
	for (unsigned i = 1; i < mib / BLK; i++)
		want_runs += at[i] != at[i - 1] + BLK;

	/* Not in the page cache: declined; the normal read still has it, and
	 * puts it back in the page cache (pread: no view of it was read yet,
	 * so nothing of it is mapped and the drop is complete). */
	drop_cache(dev->fd);
	bool dropped = true;
	for (unsigned i = 0; i < mib / BLK; i++)
		dropped = dropped && !resident(dev->fd, at[i], BLK);
	if (dropped) {
		assert_false(view_read(v, 0, mib, 256, &n, &err, got));
		assert_int_equal(err, 12345);
		assert_int_equal(stat_views(st), views);
	} else {
		print_message("page cache not dropped here (tmpfs?): that case is not checked\n");
	}
	memset(got, 0, mib);
	assert_int_equal(store_read(v, got, 0, mib), 0);
	assert_memory_equal(data, got, mib);

	/* The whole MiB: answered, its pieces are the data. */
	memset(got, 0, mib);
	assert_true(view_read(v, 0, mib, 256, &runs, &err, got));
	assert_int_equal(err, 0);
	assert_memory_equal(data, got, mib);
	assert_int_equal(stat_views(st), views + 1);
	print_message("1 MiB in %u pieces\n", runs);
	assert_true(runs >= 2); /* the writes did make several runs */
	assert_int_equal(runs, want_runs);
	/* As many pieces as it needs are enough; one fewer is not. */
	assert_true(view_read(v, 0, mib, runs, &n, &err, got));
	assert_int_equal(n, runs);
	assert_false(view_read(v, 0, mib, runs - 1, &n, &err, got));
	assert_int_equal(err, 12345);
	assert_false(view_read(v, 0, mib, 1, &n, &err, got));
	assert_false(view_read(v, 0, mib, 0, &n, &err, got));
	assert_int_equal(stat_views(st), views + 2);

	/* Ranges inside: a single block is one piece; a range from the
	 * middle of the data. */
	memset(got, 0, mib);
	assert_true(view_read(v, 37 * BLK, BLK, 1, &n, &err, got));
	assert_int_equal(err, 0);
	assert_int_equal(n, 1);
	assert_memory_equal(data + 37 * BLK, got, BLK);
	memset(got, 0, mib);
	assert_true(view_read(v, 100 * BLK, 50 * BLK, 256, &n, &err, got));
	assert_int_equal(err, 0);
	assert_memory_equal(data + 100 * BLK, got, 50 * BLK);
	views = stat_views(st);

	/* Declined, nothing done: a range with a hole (block 256 was never
	 * written), partial blocks, empty, past the volume's end.  (The
	 * pool's first blocks are put in the page cache first: a hole, whose
	 * address is 0, must not be taken for pool block 0.) */
	{
		uint8_t head[4 * BLK];
		int fd = open(t.path, O_RDONLY);
		assert_true(fd >= 0);
		assert_int_equal(pread(fd, head, sizeof(head), 0), (ssize_t)sizeof(head));
		close(fd);
	}
	assert_false(view_read(v, mib - BLK, 2 * BLK, 256, &n, &err, got));
	assert_int_equal(err, 12345);
	assert_false(view_read(v, mib, BLK, 256, &n, &err, got));
	assert_false(view_read(v, 512, BLK, 256, &n, &err, got));
	assert_false(view_read(v, 0, BLK + 512, 256, &n, &err, got));
	assert_false(view_read(v, 0, 512, 256, &n, &err, got));
	assert_false(view_read(v, 0, 0, 256, &n, &err, got));
	assert_false(view_read(v, (16u << 20) - BLK, 2 * BLK, 256, &n, &err, got));
	assert_false(view_read(v, 16u << 20, BLK, 256, &n, &err, got));
	assert_int_equal(err, 12345);
	/* Only READs. */
	{
		struct iovec piece[4];
		struct store_req r = {.op = STORE_WRITE, .off = 0, .len = BLK, .vol = v, .err = 1};
		store_read_lock();
		bool ok = store_read_view(&r, piece, 4, &n, NULL, NULL);
		store_read_unlock();
		assert_false(ok);
		assert_int_equal(r.err, 1);
	}
	assert_int_equal(stat_views(st), views);
	assert_int_equal(stat_bad_reads(st), 0);
	store_vol_close(v);
	store_close(st); /* closes dev */
	tmp_remove(&t);

	/* A pool on the memory device: data in memory, and still no view. */
	st = testpool_volume(blkdev_mem_new(96u << 20), NULL, "v", 16u << 20, &v);
	assert_int_equal(store_write(v, data, 0, 64 * BLK, 0), 0);
	assert_int_equal(store_read(v, got, 0, 64 * BLK), 0);
	assert_false(view_read(v, 0, 64 * BLK, 256, &n, &err, got));
	assert_false(view_read(v, 0, BLK, 256, &n, &err, got));
	assert_int_equal(err, 12345);
	assert_int_equal(stat_views(st), 0);
	store_vol_close(v);
	store_close(st);
	store_thread_unregister();
	free(at);
	free(data);
	free(got);
}

/* A data block damaged in the pool file behind the store's back (written
 * through another descriptor: the page cache is shared, so the view sees
 * the damage at once).  A view over it is answered EIO — never the
 * damaged bytes — and counted as a bad read; a view that does not include
 * it is still answered with the right data; the normal read of the block
 * is EIO too, and the block is reported as damaged once. */
static void test_read_view_damaged(void **state)
{
	enum { nblk = 64, bad = 21 };
	uint8_t *data = malloc(nblk * BLK), *got = malloc(nblk * BLK), junk[BLK];
	struct store_stats s;
	struct tmpfile t;
	struct blkdev *dev;
	struct store *st;
	struct vol *v;
	unsigned n;
	int err, fd;

	assert_non_null(data);
	assert_non_null(got);
	blks_fill(data, 0, nblk);
	st = file_store(&t, NULL, &dev, &v);
	store_thread_register();
	for (unsigned b = 0; b < nblk; b += 8)
		assert_int_equal(store_write(v, data + b * BLK, b * BLK, 8 * BLK, 0), 0);
	assert_int_equal(store_flush(v), 0);
	/* Read once: in the page cache, the segment's CRC table built. */
	assert_int_equal(store_read(v, got, 0, nblk * BLK), 0);
	assert_memory_equal(data, got, nblk * BLK);
	assert_true(view_read(v, 0, nblk * BLK, 256, &n, &err, got));
	assert_int_equal(err, 0);
	assert_memory_equal(data, got, nblk * BLK);

	uint64_t at[nblk];
	find_blocks(t.path, nblk, at);
	memset(junk, 0xee, sizeof(junk));
	fd = open(t.path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, junk, BLK, (off_t)at[bad]), (ssize_t)BLK);
	close(fd);
	uint64_t bad_reads = stat_bad_reads(st), views = stat_views(st);

	assert_true(view_read(v, 0, nblk * BLK, 256, &n, &err, got));
	assert_int_equal(err, -EIO);
	assert_int_equal(stat_bad_reads(st), bad_reads + 1);
	assert_int_equal(stat_views(st), views);
	/* The bad block alone: EIO again. */
	assert_true(view_read(v, (uint64_t)bad * BLK, BLK, 1, &n, &err, got));
	assert_int_equal(err, -EIO);
	assert_int_equal(stat_bad_reads(st), bad_reads + 2);
	/* The blocks beside it are fine. */
	memset(got, 0, nblk * BLK);
	assert_true(view_read(v, 0, bad * BLK, 256, &n, &err, got));
	assert_int_equal(err, 0);
	assert_memory_equal(data, got, bad * BLK);
	assert_true(view_read(v, (bad + 1) * BLK, (nblk - bad - 1) * BLK, 256, &n, &err, got));
	assert_int_equal(err, 0);
	assert_memory_equal(data + (bad + 1) * BLK, got, (nblk - bad - 1) * BLK);
	/* The normal read path agrees. */
	assert_int_equal(store_read(v, got, (uint64_t)bad * BLK, BLK), -EIO);
	assert_int_equal(store_read(v, got, 0, nblk * BLK), -EIO);
	store_get_stats(st, &s);
	assert_int_equal(s.bad_blocks, 1);
	assert_int_equal(s.bad_reads, bad_reads + 4);
	store_vol_close(v);
	store_close(st);
	store_thread_unregister();
	tmp_remove(&t);
	free(data);
	free(got);
}

/* Requests of one kind counted in volume "v"'s I/O statistics. */
static uint64_t vol_ops(struct store *st, enum store_io_cmd c)
{
	struct store_vol_io *io;
	struct store_vol_totals tot;
	size_t n;
	uint64_t ops = 0;

	assert_int_equal(store_vol_io(st, &io, &n, &tot), 0);
	for (size_t i = 0; i < n; i++)
		if (strcmp(io[i].name, "v") == 0)
			ops = io[i].cmd[c].ops;
	free(io);
	return ops;
}

/* A view whose bytes go between the CRC pass and its use (the pool file
 * truncated by the use, whose copy then faults) is not answered and not
 * counted: neither a view nor a READ in the volume's statistics (the
 * read that follows it counts the request once, and says why: the pool
 * reads back as zeroes, which fail their checksums). */
static void test_read_view_used_fault(void **state)
{
	enum { nblk = 64 };
	const uint64_t pool_size = 96u << 20;
	uint8_t *data = malloc(nblk * BLK), *got = malloc(nblk * BLK);
	struct sigaction cm;
	struct tmpfile t;
	struct blkdev *dev;
	struct store *st;
	struct vol *v;
	unsigned n;
	int err, fd;

	assert_non_null(data);
	assert_non_null(got);
	/* blkdev's handler, not cmocka's, while this test runs (see view_bus). */
	assert_int_equal(sigaction(SIGBUS, &view_bus, &cm), 0);
	blks_fill(data, 0, nblk);
	st = file_store(&t, NULL, &dev, &v);
	store_thread_register();
	assert_int_equal(store_write(v, data, 0, nblk * BLK, 0), 0);
	assert_int_equal(store_flush(v), 0);
	assert_int_equal(store_read(v, got, 0, nblk * BLK), 0); /* in the page cache */
	assert_true(view_read(v, 0, nblk * BLK, 256, &n, &err, got));
	assert_int_equal(err, 0);
	assert_memory_equal(data, got, nblk * BLK);
	uint64_t views = stat_views(st), reads = vol_ops(st, STORE_IO_READ);

	fd = open(t.path, O_RDWR);
	assert_true(fd >= 0);
	memset(got, 0, nblk * BLK);
	err = 12345;
	assert_false(view_read_cut(v, 0, nblk * BLK, 256, &n, &err, got, fd));
	assert_int_equal(n, 0);
	assert_int_equal(err, 12345);
	assert_int_equal(stat_views(st), views);
	assert_int_equal(vol_ops(st, STORE_IO_READ), reads);
	/* The file back at its size, all zeroes: the read says why. */
	assert_int_equal(ftruncate(fd, (off_t)pool_size), 0);
	close(fd);
	assert_int_equal(store_read(v, got, 0, nblk * BLK), -EIO);
	assert_int_equal(vol_ops(st, STORE_IO_READ), reads + 1);
	store_vol_close(v);
	store_close(st);
	store_thread_unregister();
	assert_int_equal(sigaction(SIGBUS, &cm, NULL), 0);
	tmp_remove(&t);
	free(data);
	free(got);
}

/* ---- views while the compactor moves blocks ---------------------------- */

/* Like test_store.c's test_compaction_readers, with a reader that takes
 * views: the volume's 4096 blocks each hold their own content (blk_fill)
 * and are rewritten with that same content, at random, so that old copies
 * die, segments empty and the compactor moves the live blocks and frees
 * segments — while every block's content stays what it was.  The reader
 * takes views of random ranges of 1 to 8 blocks, copies them out inside
 * the read-side section and checks them against blk_fill; where a view is
 * declined it reads the normal way.  A view whose block moved and whose
 * old place was reused or discarded under it would show other bytes (or
 * zeroes).  Then views are held across whole rewrites of the volume
 * (pin_run), which catches a segment freed before its readers are done
 * for certain, where the random reader's short sections only might: on a
 * store whose checkpoints are periodic (the committer thread waits for
 * the readers) and on one whose checkpoints the space policy forces (the
 * log thread waits). */
#define VC_BLOCKS     4096u
#define VC_BATCH      64u
#define VC_MAX_WRITES 200000u
#define VC_MIN_PASSES 20u
#define VC_SECS       20  /* the writer stops after this, passes or not */
#define VC_BOUND      120 /* seconds a batch may take before the test fails */
#define VC_RUN        8u  /* blocks a reader's range spans at most */

struct view_reader {
	struct vol *v;
	atomic_int stop;
	atomic_long checked, views, fallbacks, bad, errs;
};

static void *view_reader_main(void *p)
{
	struct view_reader *ra = p;
	uint8_t got[VC_RUN * BLK], want[VC_RUN * BLK];
	struct iovec piece[VC_RUN];
	unsigned seed = 11;
	long k = 0;

	store_thread_register();
	while (!atomic_load(&ra->stop)) {
		unsigned nb = 1 + (unsigned)rand_r(&seed) % VC_RUN;
		unsigned b = (unsigned)rand_r(&seed) % (VC_BLOCKS - nb + 1);
		struct store_req r = {
		    .op = STORE_READ, .off = (uint64_t)b * BLK, .len = nb * BLK, .vol = ra->v};
		unsigned n = 0;
		int err = 0;
		bool viewed;

		memset(got, 0, sizeof(got));
		store_read_lock();
		viewed = store_read_view(&r, piece, VC_RUN, &n, NULL, NULL);
		/* Now and then hold the view a while before reading it, so
		 * that the compactor moves its blocks meanwhile. */
		if (viewed && ++k % 16 == 0)
			usleep(200);
		if (viewed) {
			struct copy_arg a = {.piece = piece, .n = n, .dst = got};
			err = r.err ? r.err : store_view_guard(copy_pieces, &a);
		}
		store_read_unlock();
		if (!viewed)
			err = store_read(ra->v, got, (uint64_t)b * BLK, nb * BLK);
		blks_fill(want, b, nb);
		/* Counted, not asserted: cmocka fails only on the test's thread. */
		if (err || memcmp(got, want, nb * BLK) != 0)
			atomic_fetch_add(&ra->bad, 1);
		if (err)
			atomic_fetch_add(&ra->errs, 1);
		atomic_fetch_add(viewed ? &ra->views : &ra->fallbacks, 1);
		atomic_fetch_add(&ra->checked, 1);
	}
	store_thread_unregister();
	return NULL;
}

/* A batch of asynchronous rewrites and its count of completions. */
struct vc_batch {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned done;
	int err;
	struct store_req r[VC_BATCH];
	uint8_t buf[VC_BATCH][BLK];
};

static void vc_done(struct store_req *r)
{
	struct vc_batch *cb = r->priv;

	pthread_mutex_lock(&cb->lock);
	cb->err = cb->err ? cb->err : r->err;
	cb->done++;
	pthread_cond_broadcast(&cb->cond);
	pthread_mutex_unlock(&cb->lock);
}

/* n rewrites with the content the blocks already hold, handed to the log
 * thread together: of random blocks, or with first < VC_BLOCKS of blocks
 * first, first + 1, ... (modulo VC_BLOCKS).  0 once all completed,
 * -ETIMEDOUT after VC_BOUND seconds or the first error one got (why says
 * which).  It does not fail the test itself: a reader thread must be
 * stopped first. */
static int vc_rewrite(struct vc_batch *cb, struct vol *v, unsigned n, unsigned first, char *why,
                      size_t len)
{
	struct store_plug plug = {0};
	struct timespec ts;
	int rc = 0;

	cb->done = 0;
	cb->err = 0;
	for (unsigned i = 0; i < n; i++) {
		unsigned b =
		    first < VC_BLOCKS ? (first + i) % VC_BLOCKS : (unsigned)rand() % VC_BLOCKS;
		blk_fill(cb->buf[i], b);
		cb->r[i] = (struct store_req){.op = STORE_WRITE,
		                              .off = (uint64_t)b * BLK,
		                              .len = BLK,
		                              .buf = cb->buf[i],
		                              .vol = v,
		                              .done = vc_done,
		                              .priv = cb};
		store_submit_plugged(&plug, &cb->r[i]);
	}
	store_unplug(&plug);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += VC_BOUND;
	pthread_mutex_lock(&cb->lock);
	while (cb->done < n && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&cb->cond, &cb->lock, &ts);
	unsigned done = cb->done;
	int err = cb->err;
	pthread_mutex_unlock(&cb->lock);
	if (done < n) {
		snprintf(why, len, "%u of %u rewrites still pending after %d s", n - done, n,
		         VC_BOUND);
		return -ETIMEDOUT;
	}
	if (err)
		snprintf(why, len, "a rewrite failed: %s", strerror(-err));
	return err;
}

/* A view held across many rewrites: a thread takes a view of nb blocks at
 * b and keeps it (and its read-side section) while the test's thread
 * rewrites the whole volume over and over, until VC_PIN_WRITES rewrites
 * completed or VC_PIN_MS passed; then it reads the view.  Every block the
 * view points at died meanwhile, and its segment with it, but it may be
 * freed and written again only after the section ends: the view must
 * still hold the blocks' content.  (Were a segment freed without waiting
 * for the readers, the log would have reused it, or an idle discard
 * punched it, by then.)  With the section held the log thread may run
 * out of space and wait for it: the writer stalls until VC_PIN_MS. */
#define VC_PIN_WRITES (8u * VC_BLOCKS)
#define VC_PIN_MS     400
#define VC_PINS       4

struct pin {
	struct vol *v;
	unsigned b, nb;
	atomic_long rewrites; /* completed so far (the writer adds) */
	atomic_int state;     /* 0 starting, 1 view held, 2 finished */
	bool viewed;          /* the view was given */
	long during;          /* rewrites completed while it was held */
	int err;              /* req.err, or the guard's */
	bool same;            /* its bytes were the blocks' content */
};

static void *pin_main(void *p)
{
	struct pin *pa = p;
	uint8_t got[VC_RUN * BLK], want[VC_RUN * BLK];
	struct iovec piece[VC_RUN];
	struct store_req r = {
	    .op = STORE_READ, .off = (uint64_t)pa->b * BLK, .len = pa->nb * BLK, .vol = pa->v};
	unsigned n = 0;

	store_thread_register();
	memset(got, 0, sizeof(got));
	/* A view may be declined for a moment (the compactor is building
	 * the CRC table it needs): asked again for up to a second. */
	for (unsigned tries = 0; tries < 1000; tries++) {
		store_read_lock();
		pa->viewed = store_read_view(&r, piece, VC_RUN, &n, NULL, NULL);
		if (pa->viewed)
			break;
		store_read_unlock();
		usleep(1000);
	}
	if (!pa->viewed)
		store_read_lock(); /* balanced by the unlock below */
	pa->err = pa->viewed ? r.err : 0;
	long start = atomic_load(&pa->rewrites);
	atomic_store(&pa->state, 1);
	if (pa->viewed && !pa->err) {
		struct timespec t0, now;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		do {
			usleep(1000);
			clock_gettime(CLOCK_MONOTONIC, &now);
		} while (atomic_load(&pa->rewrites) - start < (long)VC_PIN_WRITES &&
		         (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 <
		             VC_PIN_MS);
		pa->during = atomic_load(&pa->rewrites) - start;
		struct copy_arg a = {.piece = piece, .n = n, .dst = got};
		pa->err = store_view_guard(copy_pieces, &a);
	}
	store_read_unlock();
	blks_fill(want, pa->b, pa->nb);
	pa->same = memcmp(got, want, pa->nb * BLK) == 0;
	store_thread_unregister();
	atomic_store(&pa->state, 2);
	return NULL;
}

/* One pinned view of random blocks, the volume rewritten in sweeps while
 * it is held; its outcome in *pa. */
static void pin_run(struct vc_batch *cb, struct vol *v, struct pin *pa)
{
	pthread_t th;
	unsigned next = 0;
	char why[96];

	pa->v = v;
	pa->nb = 1 + (unsigned)rand() % VC_RUN;
	pa->b = (unsigned)rand() % (VC_BLOCKS - pa->nb + 1);
	assert_int_equal(pthread_create(&th, NULL, pin_main, pa), 0);
	while (atomic_load(&pa->state) == 0)
		usleep(100);
	while (atomic_load(&pa->state) != 2) {
		if (vc_rewrite(cb, v, VC_BATCH, next, why, sizeof(why))) {
			pthread_join(th, NULL); /* pa lives in the caller's frame */
			fail_msg("%s", why);
		}
		next = (next + VC_BATCH) % VC_BLOCKS;
		atomic_fetch_add(&pa->rewrites, VC_BATCH);
	}
	pthread_join(th, NULL);
}

/* A new pool file with the volume "v", every block holding its content
 * (blk_fill); buf: VC_BLOCKS blocks of scratch. */
static struct store *vc_store(struct tmpfile *t, const struct store_opts *opts, struct vol **v,
                              uint8_t *buf)
{
	struct blkdev *dev;
	struct store *st = file_store(t, opts, &dev, v);

	blks_fill(buf, 0, VC_BLOCKS);
	for (unsigned b = 0; b < VC_BLOCKS; b += 256)
		assert_int_equal(
		    store_write(*v, buf + (size_t)b * BLK, (uint64_t)b * BLK, 256 * BLK, 0), 0);
	return st;
}

/* VC_PINS views held across rewrites of everything (pin_run). */
static void vc_pins(struct vc_batch *cb, struct store *st, struct vol *v)
{
	struct store_stats stats;
	long during = 0;

	for (unsigned i = 0; i < VC_PINS; i++) {
		struct pin pa = {0};
		pin_run(cb, v, &pa);
		print_message("view of blocks %u..%u held across %ld rewrites: %s\n", pa.b,
		              pa.b + pa.nb - 1, pa.during,
		              !pa.viewed ? "declined"
		              : pa.err   ? "failed"
		              : pa.same  ? "its content"
		                         : "OTHER BYTES");
		assert_true(pa.viewed);
		assert_int_equal(pa.err, 0);
		assert_true(pa.same);
		during += pa.during;
	}
	/* The views were held while rewrites completed (the writer may
	 * stall at once, waiting for space only a grace period gives, but
	 * not every time). */
	assert_true(during >= (long)VC_BATCH);
	store_get_stats(st, &stats);
	assert_int_equal(stats.bad_reads, 0);
}

/* Everything still reads back as written and the pool is sound; then the
 * store is closed and its file removed. */
static void vc_finish(struct tmpfile *t, struct store *st, struct vol *v, uint8_t *buf)
{
	uint8_t want[BLK];

	memset(buf, 0, (size_t)VC_BLOCKS * BLK);
	for (unsigned b = 0; b < VC_BLOCKS; b += 256) {
		assert_int_equal(store_read(v, buf, (uint64_t)b * BLK, 256 * BLK), 0);
		for (unsigned i = 0; i < 256; i++) {
			blk_fill(want, b + i);
			assert_memory_equal(want, buf + (size_t)i * BLK, BLK);
		}
	}
	assert_int_equal(store_check(st), 0);
	store_vol_close(v);
	store_close(st);
	tmp_remove(t);
}

static void test_view_compaction(void **state)
{
	struct vc_batch *cb = calloc(1, sizeof(*cb));
	uint8_t *buf = malloc(VC_BLOCKS * BLK);
	struct view_reader ra = {0};
	struct store_stats stats;
	struct tmpfile t;
	struct store *st;
	struct vol *v;
	pthread_t th;
	uint64_t passes = 0, seen, t_end;
	long read_during = 0, before;
	unsigned writes = 0;
	struct timespec now;
	char why[96];

	assert_non_null(cb);
	assert_non_null(buf);
	alarm(300); /* a hang fails the run rather than holding it */
	pthread_mutex_init(&cb->lock, NULL);
	pthread_cond_init(&cb->cond, NULL);
	srand(7);
	/* Periodic checkpoints every 8 MiB of log: segments are freed
	 * after the committer thread's grace period (ckpt_begin). */
	struct store_opts opts = {.checkpoint_bytes = 8u << 20};
	st = vc_store(&t, &opts, &ra.v, buf);
	assert_int_equal(pthread_create(&th, NULL, view_reader_main, &ra), 0);
	store_get_stats(st, &stats);
	seen = stats.compactions;
	clock_gettime(CLOCK_MONOTONIC, &now);
	t_end = (uint64_t)now.tv_sec + VC_SECS;
	/* A pass counts when the reader read between the samples around it
	 * (the log thread runs a pass between rounds, and answers
	 * store_get_stats between rounds too). */
	while (passes < VC_MIN_PASSES && writes < VC_MAX_WRITES) {
		before = atomic_load(&ra.checked);
		if (vc_rewrite(cb, ra.v, VC_BATCH, UINT_MAX, why, sizeof(why))) {
			/* ra lives in this frame: the reader goes before we leave it */
			atomic_store(&ra.stop, 1);
			pthread_join(th, NULL);
			fail_msg("%s", why);
		}
		writes += VC_BATCH;
		store_get_stats(st, &stats);
		if (stats.compactions != seen && atomic_load(&ra.checked) > before) {
			passes += stats.compactions - seen;
			read_during += atomic_load(&ra.checked) - before;
		}
		seen = stats.compactions;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((uint64_t)now.tv_sec >= t_end)
			break;
	}
	atomic_store(&ra.stop, 1);
	pthread_join(th, NULL);
	store_get_stats(st, &stats);
	print_message("%u rewrites, compactions %llu (%llu blocks moved, %llu segments freed), "
	              "%llu with the reader reading (%ld reads); reads %ld: %ld views, %ld "
	              "declined; bad %ld (%ld failed); stats read_views %llu\n",
	              writes, (unsigned long long)stats.compactions,
	              (unsigned long long)stats.compacted_blocks,
	              (unsigned long long)stats.segments_freed, (unsigned long long)passes,
	              read_during, atomic_load(&ra.checked), atomic_load(&ra.views),
	              atomic_load(&ra.fallbacks), atomic_load(&ra.bad), atomic_load(&ra.errs),
	              (unsigned long long)stats.read_views);
	assert_true(stats.compactions > 0);
	assert_true(stats.compacted_blocks > 0);
	assert_true(passes > 0);
	assert_true(atomic_load(&ra.views) > 1000);
	assert_int_equal(stats.read_views, (uint64_t)atomic_load(&ra.views));
	assert_int_equal(atomic_load(&ra.bad), 0);
	assert_int_equal(stats.bad_reads, 0);
	vc_pins(cb, st, ra.v);
	vc_finish(&t, st, ra.v, buf);

	/* The default interval, far more log than this pool holds: every
	 * checkpoint is one the space policy asks for, on the log thread,
	 * which frees the segments after its own grace period
	 * (ckpt_commit). */
	st = vc_store(&t, NULL, &v, buf);
	vc_pins(cb, st, v);
	vc_finish(&t, st, v, buf);
	alarm(0);
	pthread_mutex_destroy(&cb->lock);
	pthread_cond_destroy(&cb->cond);
	free(cb);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_blkdev_view),
	    cmocka_unit_test(test_view_guard),
	    cmocka_unit_test(test_read_view),
	    cmocka_unit_test(test_read_view_damaged),
	    cmocka_unit_test(test_read_view_used_fault),
	    cmocka_unit_test(test_view_compaction),
	};
	/* blkdev installs its SIGBUS handler at the first guard or view:
	 * here, before cmocka's per-test handler is set, so that it can be
	 * kept (view_bus) and put back by the test that needs it. */
	blkdev_view_guard(nothing, NULL);
	sigaction(SIGBUS, NULL, &view_bus);
	if (getenv("TEST_FILTER")) /* e.g. TEST_FILTER=test_view_guard */
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
