/* test_segcache.c — the local segment cache (segcache.c): slots written in
 * order and read back, misses beyond a slot's length, writes at a wrong
 * offset ignored, LRU eviction, drop, fills fetched across a drop or a
 * restart of their segment not cached, a cache that starts empty at every
 * open, the refusals of open; a reader's pinned slot never reused by
 * eviction nor after a drop, and a write dropped when every slot is pinned
 * (a reader held inside pread by a userfaultfd page, so these are
 * deterministic; skipped without userfaultfd); readers hammering while a
 * writer evicts, refills and drops, every successful read checked against
 * the pattern of the segment it asked for; a block device (a loop device
 * over a sparse file, skipped without one) of 20,000 slots whose index
 * holds random segment numbers through drops, refills and eviction; file
 * errors (a full tmpfs the test mounts, a file size limit, a file cut
 * short under the cache) drop what they touch and never fail a call;
 * read_nowait on a page evicted from memory answers -EAGAIN or 0, never
 * blocks, and 0 once warm.
 *
 * Every byte of segment s at offset o (8-aligned words) is pattern(s, o).
 */
#undef NDEBUG
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/loop.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "format.h"
#include "segcache.h"

#define SEG   ((uint64_t)FMT_SEG_BYTES)
#define CHUNK (256u << 10)

static char dir[64];

static const char *in_dir(const char *base, const char *name)
{
	static char path[400];

	snprintf(path, sizeof(path), "%s/%s", base, name);
	return path;
}

static uint64_t pattern(uint64_t seg, uint64_t off)
{
	return (seg << 40) ^ (off / 8) ^ 0x5a5a000000000000ull;
}

static void fill(uint64_t seg, void *buf, size_t len, uint64_t off)
{
	uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++)
		w[i] = pattern(seg, off + 8 * i);
}

/* The index of the first word of buf that is not seg's, or -1. */
static long mismatch(uint64_t seg, const void *buf, size_t len, uint64_t off)
{
	const uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++)
		if (w[i] != pattern(seg, off + 8 * i))
			return (long)i;
	return -1;
}

/* Write [off, off + len) of seg's pattern, in CHUNK pieces. */
static void put(struct segcache *c, uint64_t seg, uint64_t off, size_t len)
{
	static uint8_t buf[CHUNK]; /* the test's main thread only */

	while (len) {
		size_t n = len < CHUNK ? len : CHUNK;
		fill(seg, buf, n, off);
		segcache_write(c, seg, buf, n, off);
		off += n;
		len -= n;
	}
}

/* 0 with seg's pattern read, or the read's error. */
static int get(struct segcache *c, uint64_t seg, uint64_t off, size_t len)
{
	uint8_t *buf = malloc(len ? len : 1);
	int r;

	assert_non_null(buf);
	r = segcache_read(c, seg, buf, len, off);
	if (r == 0)
		assert_int_equal(mismatch(seg, buf, len, off), -1);
	free(buf);
	return r;
}

static struct segcache *cache(const char *path, uint64_t nslots)
{
	const char *why = NULL;
	struct segcache *c = segcache_open(path, nslots * SEG, &why);

	if (!c)
		fail_msg("segcache_open %s: %s: %s", path, why, strerror(errno));
	return c;
}

static struct segcache_stats stats(struct segcache *c)
{
	struct segcache_stats st;

	segcache_stats(c, &st);
	return st;
}

static int dir_setup(void **state)
{
	strcpy(dir, "/tmp/test_segcache.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int dir_teardown(void **state)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.')
			unlink(in_dir(dir, e->d_name));
	if (d)
		closedir(d);
	rmdir(dir);
	return 0;
}

/* ---- single-threaded behaviour ----------------------------------------- */

static void test_write_extend_read(void **state)
{
	struct segcache *c = cache(in_dir(dir, __func__), 4);
	struct segcache_stats st;

	assert_int_equal(stats(c).slots, 4);
	assert_int_equal(get(c, 7, 0, 4096), -ENOENT);
	put(c, 7, 0, 1 << 20);
	assert_int_equal(get(c, 7, 0, 1 << 20), 0);
	assert_int_equal(get(c, 7, 12344, 1000), 0);
	assert_int_equal(get(c, 7, (1 << 20) - 8, 8), 0);
	/* Beyond the valid length: a miss, even when part of it is there. */
	assert_int_equal(get(c, 7, (1 << 20) - 8, 16), -ENOENT);
	assert_int_equal(get(c, 7, 2 << 20, 8), -ENOENT);
	assert_int_equal(get(c, 8, 0, 8), -ENOENT);
	/* A write that does not continue the slot is ignored ... */
	put(c, 7, 2 << 20, 4096);
	assert_int_equal(get(c, 7, 2 << 20, 4096), -ENOENT);
	put(c, 8, 4096, 4096);
	assert_int_equal(get(c, 8, 4096, 4096), -ENOENT);
	/* ... one that does extends it, to the end of the segment. */
	put(c, 7, 1 << 20, SEG - (1 << 20));
	assert_int_equal(get(c, 7, 0, SEG), 0);
	assert_int_equal(get(c, 7, SEG - 8, 16), -ENOENT);
	put(c, 7, SEG, 8); /* past the segment: ignored */
	st = stats(c);
	assert_int_equal(st.used, 1);
	assert_int_equal(st.hits, 4);
	assert_int_equal(st.misses, 7);
	assert_int_equal(st.evictions, 0);
	assert_int_equal(st.errors, 0);
	segcache_close(c);
}

static void test_lru_eviction(void **state)
{
	struct segcache *c = cache(in_dir(dir, __func__), 4);

	for (uint64_t s = 0; s < 4; s++)
		put(c, s, 0, 8192);
	assert_int_equal(get(c, 0, 0, 8), 0); /* 1 is now the least recent */
	put(c, 4, 0, 8192);
	assert_int_equal(get(c, 1, 0, 8), -ENOENT);
	assert_int_equal(get(c, 2, 0, 8), 0); /* 3 is now the least recent */
	put(c, 5, 0, 8192);
	put(c, 4, 8192, 8192); /* an append is a use: 0 is now the least recent */
	put(c, 6, 0, 8192);
	assert_int_equal(get(c, 3, 0, 8), -ENOENT);
	assert_int_equal(get(c, 0, 0, 8), -ENOENT);
	assert_int_equal(get(c, 2, 0, 8192), 0);
	assert_int_equal(get(c, 4, 0, 16384), 0);
	assert_int_equal(get(c, 5, 0, 8192), 0);
	assert_int_equal(get(c, 6, 0, 8192), 0);
	assert_int_equal(stats(c).evictions, 3);
	assert_int_equal(stats(c).used, 4);
	segcache_close(c);
}

static void test_drop_and_restart(void **state)
{
	struct segcache *c = cache(in_dir(dir, __func__), 2);

	put(c, 3, 0, 65536);
	put(c, 9, 0, 65536);
	segcache_drop(c, 3);
	segcache_drop(c, 42); /* not cached: nothing */
	assert_int_equal(get(c, 3, 0, 8), -ENOENT);
	assert_int_equal(stats(c).used, 1);
	/* The dropped slot is free: no eviction for the next segment. */
	put(c, 5, 0, 4096);
	assert_int_equal(stats(c).evictions, 0);
	assert_int_equal(get(c, 9, 0, 65536), 0);
	/* A write at 0 starts the segment over: what it held is gone. */
	put(c, 9, 0, 4096);
	assert_int_equal(get(c, 9, 0, 4096), 0);
	assert_int_equal(get(c, 9, 4096, 8), -ENOENT);
	assert_int_equal(stats(c).used, 2);
	segcache_close(c);
}

/* A fill fetched across a drop or restart of its segment is stale and
 * not cached; across those of other segments it is. */
static void test_fill_ticket(void **state)
{
	struct segcache *c = cache(in_dir(dir, __func__), 4);
	static uint8_t old[65536], seg6[65536];
	uint64_t t;

	fill(5, old, sizeof(old), 0);
	fill(6, seg6, sizeof(seg6), 0);
	t = segcache_ticket(c);
	segcache_fill(c, t, 5, old, sizeof(old));
	assert_int_equal(get(c, 5, 0, sizeof(old)), 0);

	/* Dropped (discarded) while fetched, cached or not. */
	t = segcache_ticket(c);
	segcache_drop(c, 5);
	segcache_fill(c, t, 5, old, sizeof(old));
	assert_int_equal(get(c, 5, 0, 8), -ENOENT);
	/* Restarted from 0 by the log while fetched: the new life stays. */
	t = segcache_ticket(c);
	put(c, 5, 0, 4096);
	memset(old, 0xee, sizeof(old)); /* what an old life would hold */
	segcache_fill(c, t, 5, old, sizeof(old));
	assert_int_equal(get(c, 5, 0, 4096), 0);
	assert_int_equal(get(c, 5, 4096, 8), -ENOENT);

	/* Other segments' drops and restarts do not matter ... */
	t = segcache_ticket(c);
	segcache_drop(c, 9);
	put(c, 7, 0, 4096);
	segcache_fill(c, t, 6, seg6, sizeof(seg6));
	assert_int_equal(get(c, 6, 0, sizeof(seg6)), 0);
	/* ... unless too many came to tell. */
	segcache_drop(c, 6);
	t = segcache_ticket(c);
	for (uint64_t s = 100; s < 400; s++)
		segcache_drop(c, s);
	segcache_fill(c, t, 6, seg6, sizeof(seg6));
	assert_int_equal(get(c, 6, 0, 8), -ENOENT);
	segcache_close(c);
}

static void test_open(void **state)
{
	const char *why = NULL;
	struct segcache *c, *c2;

	/* Fewer than two slots, no such directory, a directory. */
	assert_null(segcache_open(in_dir(dir, __func__), 2 * SEG - 1, &why));
	assert_int_equal(errno, EINVAL);
	assert_non_null(why);
	why = NULL;
	assert_null(segcache_open(in_dir(dir, "none/c"), 4 * SEG, &why));
	assert_int_equal(errno, ENOENT);
	assert_non_null(why);
	why = NULL;
	assert_null(segcache_open(dir, 4 * SEG, &why));
	assert_non_null(why);

	/* The file is sized to the slots, the rest of a slot unused. */
	c = cache(in_dir(dir, __func__), 3);
	struct stat sb;
	assert_int_equal(stat(in_dir(dir, __func__), &sb), 0);
	assert_int_equal(sb.st_size, 3 * SEG);
	put(c, 1, 0, 4096);
	/* A second user of the same file is refused. */
	why = NULL;
	assert_null(segcache_open(in_dir(dir, __func__), 3 * SEG, &why));
	assert_int_equal(errno, EBUSY);
	assert_non_null(why);
	segcache_close(c);

	/* It starts empty: nothing of the last run is trusted. */
	c2 = cache(in_dir(dir, __func__), 3);
	assert_int_equal(get(c2, 1, 0, 4096), -ENOENT);
	assert_int_equal(stats(c2).used, 0);
	segcache_close(c2);
	segcache_close(NULL);
}

/* A read error (the file cut short under the cache) drops the slot and
 * says -ENOENT; the cache goes on. */
static void test_read_error(void **state)
{
	struct segcache *c = cache(in_dir(dir, __func__), 2);

	put(c, 1, 0, 8192);
	put(c, 2, 0, 8192);
	assert_int_equal(truncate(in_dir(dir, __func__), 4096), 0);
	assert_int_equal(get(c, 1, 0, 8192), -ENOENT);
	assert_int_equal(get(c, 1, 0, 8), -ENOENT); /* dropped */
	assert_int_equal(stats(c).errors, 1);
	assert_int_equal(stats(c).used, 1);
	assert_int_equal(get(c, 2, 0, 8192), -ENOENT); /* slot 1: past EOF */
	assert_int_equal(stats(c).errors, 2);
	assert_int_equal(stats(c).used, 0);
	/* Writes refill the file. */
	put(c, 3, 0, 8192);
	assert_int_equal(get(c, 3, 0, 8192), 0);
	segcache_close(c);
}

/* A file size limit (SIGXFSZ ignored: writes past it fail with EFBIG):
 * the write that fails drops its slot, the other works. */
static void test_write_error(void **state)
{
	struct segcache *c = cache(in_dir(dir, __func__), 2);
	struct rlimit old, lim;
	struct sigaction ign = {.sa_handler = SIG_IGN}, was;
	struct segcache_stats st;
	int ok;

	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	assert_int_equal(sigaction(SIGXFSZ, &ign, &was), 0);
	lim = old;
	lim.rlim_cur = SEG + (1 << 20);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	put(c, 1, 0, SEG);
	put(c, 2, 0, SEG);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_int_equal(sigaction(SIGXFSZ, &was, NULL), 0);

	st = stats(c);
	assert_int_equal(st.errors, 1);
	assert_int_equal(st.used, 1);
	ok = (get(c, 1, 0, SEG) == 0) + (get(c, 2, 0, SEG) == 0);
	assert_int_equal(ok, 1);
	segcache_close(c);
}

/* ---- read_nowait -------------------------------------------------------- */

/* Does fd's filesystem answer RWF_NOWAIT reads? */
static bool nowait_supported(const char *path)
{
	int fd = open(path, O_RDONLY);
	char b[8];
	struct iovec iov = {.iov_base = b, .iov_len = sizeof(b)};
	bool yes;

	assert_true(fd >= 0);
	yes = preadv2(fd, &iov, 1, 0, RWF_NOWAIT) >= 0 || errno != EOPNOTSUPP;
	close(fd);
	return yes;
}

/* Push the cache file's pages out of memory (written back first). */
static void evict_pages(const char *path)
{
	int fd = open(path, O_RDWR);

	assert_true(fd >= 0);
	assert_int_equal(fdatasync(fd), 0);
	assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	close(fd);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_read_nowait(void **state)
{
	struct segcache *c = cache(in_dir(dir, __func__), 2);
	static uint8_t buf[65536];
	double t;
	int r, cold_eagain = 0;

	put(c, 4, 0, SEG);
	assert_int_equal(segcache_read_nowait(c, 5, buf, 8, 0), -ENOENT);
	assert_int_equal(segcache_read_nowait(c, 4, buf, 8, SEG - 4), -ENOENT);
	/* Cold: -EAGAIN (the pages are on disk) or 0 (something brought
	 * them back already, or the filesystem keeps them); quickly. */
	for (int i = 0; i < 4; i++) {
		evict_pages(in_dir(dir, __func__));
		t = now();
		r = segcache_read_nowait(c, 4, buf, sizeof(buf), 1 << 20);
		assert_true(now() - t < 1.0);
		assert_true(r == 0 || r == -EAGAIN);
		if (r == 0)
			assert_int_equal(mismatch(4, buf, sizeof(buf), 1 << 20), -1);
		cold_eagain += r == -EAGAIN;
	}
	print_message("read_nowait on cold pages: %d of 4 -EAGAIN\n", cold_eagain);
	/* The blocking read brings them in; then nowait reads them. */
	memset(buf, 0, sizeof(buf));
	assert_int_equal(segcache_read(c, 4, buf, sizeof(buf), 1 << 20), 0);
	assert_int_equal(mismatch(4, buf, sizeof(buf), 1 << 20), -1);
	memset(buf, 0, sizeof(buf));
	r = segcache_read_nowait(c, 4, buf, sizeof(buf), 1 << 20);
	if (nowait_supported(in_dir(dir, __func__))) {
		assert_int_equal(r, 0);
		assert_int_equal(mismatch(4, buf, sizeof(buf), 1 << 20), -1);
	} else {
		assert_int_equal(r, -EAGAIN);
	}
	assert_int_equal(stats(c).errors, 0);
	segcache_close(c);
}

/* ---- a full filesystem --------------------------------------------------- */

static char fsdir[64];
static bool mounted;

static int fs_setup(void **state)
{
	strcpy(fsdir, "/tmp/test_segcache_fs.XXXXXX");
	if (!mkdtemp(fsdir))
		return -1;
	mounted = mount("tmpfs", fsdir, "tmpfs", 0, "size=10m,mode=0700") == 0;
	if (!mounted)
		fprintf(stderr, "test_segcache: cannot mount a tmpfs (%s): its cases skip\n",
		        strerror(errno));
	return 0;
}

static int fs_teardown(void **state)
{
	if (mounted)
		umount2(fsdir, MNT_DETACH); /* also with a failed case's cache open */
	rmdir(fsdir);
	return 0;
}

/* Fill the filesystem: a file as large as it takes. */
static void fill_fs(const char *path)
{
	static uint8_t junk[65536];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	while (write(fd, junk, sizeof(junk)) > 0)
		;
	close(fd);
}

static void test_full_fs(void **state)
{
	char cpath[400], fpath[400];
	const char *why = NULL;
	struct segcache *c;
	struct segcache_stats st;
	int fd;

	if (!mounted)
		skip();
	snprintf(cpath, sizeof(cpath), "%s", in_dir(fsdir, "c"));
	snprintf(fpath, sizeof(fpath), "%s", in_dir(fsdir, "filler"));

	/* Room for 2 of the 8 slots asked: a cache of 2. */
	c = cache(cpath, 8);
	assert_int_equal(stats(c).slots, 2);
	for (uint64_t s = 0; s < 3; s++)
		put(c, s, 0, SEG);
	assert_int_equal(get(c, 1, 0, SEG), 0);
	assert_int_equal(get(c, 2, 0, SEG), 0);
	assert_int_equal(stats(c).errors, 0);

	/* Its space taken away (holes punched, the filesystem filled):
	 * writes fail, are dropped and said once, reads miss. */
	segcache_drop(c, 1);
	segcache_drop(c, 2);
	fd = open(cpath, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 2 * SEG), 0);
	close(fd);
	fill_fs(fpath);
	put(c, 5, 0, SEG);
	put(c, 6, 0, SEG);
	st = stats(c);
	assert_int_equal(st.errors, 2);
	assert_int_equal(get(c, 5, 0, 8), -ENOENT);
	assert_int_equal(get(c, 6, 0, 8), -ENOENT);
	assert_int_equal(stats(c).used, 0);
	segcache_close(c);
	unlink(cpath);

	/* No room for two slots: refused, with why. */
	assert_null(segcache_open(cpath, 4 * SEG, &why));
	assert_int_equal(errno, ENOSPC);
	assert_non_null(why);
	unlink(fpath);
	unlink(cpath);
}

/* ---- pinned slots, held by a reader stopped inside pread ------------------ */

/* A reader thread whose buffer is a userfaultfd page: its pread (holding
 * the slot's pin) stops at the copy until the test fills the page. */
struct held {
	int uffd;
	uint8_t *page;
	size_t pagesz;
	struct segcache *c;
	uint64_t seg;
	int r;
	pthread_t th;
};

static void *held_read(void *arg)
{
	struct held *h = arg;

	h->r = segcache_read(h->c, h->seg, h->page, 4096, 8192);
	return NULL;
}

/* Start a reader of seg and wait until it is stopped in the copy.  false
 * when userfaultfd cannot be had. */
static bool hold(struct held *h, struct segcache *c, uint64_t seg)
{
	struct uffdio_api api = {.api = UFFD_API};
	struct uffdio_register reg = {.mode = UFFDIO_REGISTER_MODE_MISSING};
	struct pollfd pfd;

	memset(h, 0, sizeof(*h));
	h->c = c;
	h->seg = seg;
	h->pagesz = (size_t)sysconf(_SC_PAGESIZE);
	h->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (h->uffd < 0)
		return false;
	if (ioctl(h->uffd, UFFDIO_API, &api) < 0) {
		close(h->uffd);
		return false;
	}
	h->page = mmap(NULL, h->pagesz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(h->page != MAP_FAILED);
	reg.range.start = (uintptr_t)h->page;
	reg.range.len = h->pagesz;
	assert_int_equal(ioctl(h->uffd, UFFDIO_REGISTER, &reg), 0);
	assert_int_equal(pthread_create(&h->th, NULL, held_read, h), 0);
	pfd.fd = h->uffd;
	pfd.events = POLLIN;
	assert_int_equal(poll(&pfd, 1, 10000), 1); /* the fault: it is in pread */
	return true;
}

/* Let the reader go on; its result. */
static int release(struct held *h)
{
	static uint8_t zero[65536];
	struct uffd_msg msg;
	struct uffdio_copy cp = {.dst = (uintptr_t)0, .len = 0};

	assert_int_equal(read(h->uffd, &msg, sizeof(msg)), sizeof(msg));
	assert_int_equal(msg.event, UFFD_EVENT_PAGEFAULT);
	cp.dst = (uintptr_t)h->page;
	cp.src = (uintptr_t)zero;
	cp.len = h->pagesz;
	assert_int_equal(ioctl(h->uffd, UFFDIO_COPY, &cp), 0);
	assert_int_equal(pthread_join(h->th, NULL), 0);
	return h->r;
}

static void held_check(struct held *h)
{
	assert_int_equal(h->r, 0);
	assert_int_equal(mismatch(h->seg, h->page, 4096, 8192), -1);
	munmap(h->page, h->pagesz);
	close(h->uffd);
}

static void test_pinned_not_evicted(void **state)
{
	struct segcache *c = cache(in_dir(dir, __func__), 2);
	struct held a, b;

	put(c, 1, 0, SEG);
	put(c, 2, 0, SEG);
	if (!hold(&a, c, 1)) {
		segcache_close(c);
		skip();
	}
	/* Slot of 1 pinned: 3 evicts 2, then 4 evicts 3, never 1, though 1
	 * is then the least recently used.  (Checked once the readers are
	 * let go, so that a failure leaves no thread stopped.) */
	put(c, 3, 0, SEG);
	put(c, 4, 0, SEG);
	int r2 = get(c, 2, 0, 8), r3 = get(c, 3, 0, 8);
	uint64_t ev = stats(c).evictions;

	/* Both slots pinned: a new segment is not cached. */
	bool held_b = hold(&b, c, 4);
	put(c, 5, 0, SEG);
	uint64_t ev_all_pinned = stats(c).evictions;
	assert_int_equal(release(&a), 0);
	assert_true(held_b);
	assert_int_equal(release(&b), 0);
	assert_int_equal(r2, -ENOENT);
	assert_int_equal(r3, -ENOENT);
	assert_int_equal(ev, 2);
	assert_int_equal(ev_all_pinned, 2);
	held_check(&a);
	held_check(&b);
	assert_int_equal(get(c, 5, 0, 8), -ENOENT);
	assert_int_equal(get(c, 1, 0, SEG), 0);
	assert_int_equal(get(c, 4, 0, SEG), 0);
	segcache_close(c);
}

static void test_pinned_dropped_not_reused(void **state)
{
	struct segcache *c = cache(in_dir(dir, __func__), 2);
	struct held a;

	put(c, 1, 0, SEG);
	if (!hold(&a, c, 1)) {
		segcache_close(c);
		skip();
	}
	/* Dropped while read: the reader finishes on the old bytes, and the
	 * slot is not given to 2 or 3 (3 evicts 2 instead). */
	segcache_drop(c, 1);
	int r1 = get(c, 1, 0, 8);
	put(c, 2, 0, SEG);
	put(c, 3, 0, SEG);
	struct segcache_stats st = stats(c);
	/* Also a restart of 1 from 0 gets another slot. */
	put(c, 1, 0, SEG);
	uint64_t ev = stats(c).evictions;
	assert_int_equal(release(&a), 0);
	assert_int_equal(r1, -ENOENT);
	assert_int_equal(st.evictions, 1);
	assert_int_equal(st.used, 1);
	assert_int_equal(ev, 2);
	held_check(&a);
	/* Unpinned, the old slot is free again: no eviction for 4. */
	put(c, 4, 0, SEG);
	assert_int_equal(stats(c).evictions, 2);
	assert_int_equal(get(c, 1, 0, SEG), 0);
	assert_int_equal(get(c, 4, 0, SEG), 0);
	segcache_close(c);
}

/* ---- a block device, and a table of many slots ---------------------------- */

/* Attach a loop device to backing (autoclear: it goes with the last
 * close of its fd, which the caller keeps).  The fd, -1 when it cannot. */
static int loop_attach(const char *backing, char *dev, size_t devlen)
{
	int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	int bfd = open(backing, O_RDWR | O_CLOEXEC);
	int lfd = -1;

	for (int tries = 0; ctl >= 0 && bfd >= 0 && lfd < 0 && tries < 10; tries++) {
		struct loop_config cfg = {.fd = (uint32_t)bfd};
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0)
			break;
		cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
		snprintf(dev, devlen, "/dev/loop%d", n);
		lfd = open(dev, O_RDWR | O_CLOEXEC);
		if (lfd >= 0 && ioctl(lfd, LOOP_CONFIGURE, &cfg) < 0) {
			close(lfd); /* taken by someone else meanwhile */
			lfd = -1;
		}
	}
	if (ctl >= 0)
		close(ctl);
	if (bfd >= 0)
		close(bfd);
	return lfd;
}

/* splitmix64's finalizer: a bijection. */
static uint64_t mix(uint64_t x)
{
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* A block device of 20,000 slots (a loop device over a sparse file): the
 * device gives what it has, and the index holds that many segments
 * through drops, refills and evictions. */
static void test_block_device(void **state)
{
	enum { N = 20000 };
	char backing[400], dev[64];
	const char *why = NULL;
	struct segcache *c;
	int lfd, fd;

	snprintf(backing, sizeof(backing), "%s", in_dir(dir, "loop"));
	fd = open(backing, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)(N * SEG)), 0);
	close(fd);
	lfd = loop_attach(backing, dev, sizeof(dev));
	if (lfd < 0) {
		unlink(backing);
		skip();
	}
	/* Asked less: that much; asked more: what it has. */
	c = cache(dev, 100);
	assert_int_equal(stats(c).slots, 100);
	/* Only one user at a time (O_EXCL on the device). */
	assert_null(segcache_open(dev, 100 * SEG, &why));
	assert_int_equal(errno, EBUSY);
	segcache_close(c);
	c = cache(dev, 2 * N);
	assert_int_equal(stats(c).slots, N);

	/* Segment numbers that look random (a bijection of i), so that the
	 * index's probe runs collide; consecutive ones never would. */
#define SPREAD(i) mix((uint64_t)(i) + 2)
	for (int i = 0; i < N; i++)
		put(c, SPREAD(i), 0, 4096);
	assert_int_equal(stats(c).used, N);
	assert_int_equal(stats(c).evictions, 0);
	for (int i = 0; i < N; i += 2)
		segcache_drop(c, SPREAD(i));
	for (int i = 0; i < N; i++)
		assert_int_equal(get(c, SPREAD(i), 0, 4096), i % 2 ? 0 : -ENOENT);
	/* Refill the dropped slots, then one more evicts the least recent. */
	for (int i = N; i < N + N / 2; i++)
		put(c, SPREAD(i), 0, 4096);
	assert_int_equal(stats(c).evictions, 0);
	put(c, 1, 0, 4096);
	assert_int_equal(stats(c).evictions, 1);
	assert_int_equal(get(c, SPREAD(1), 0, 8), -ENOENT);
	for (int i = 2; i < N + N / 2; i++)
		assert_int_equal(get(c, SPREAD(i), 0, 4096), i < N && i % 2 == 0 ? -ENOENT : 0);
	assert_int_equal(get(c, 1, 0, 4096), 0);
	assert_int_equal(stats(c).errors, 0);
#undef SPREAD
	segcache_close(c);
	close(lfd);
	unlink(backing);
}

/* ---- readers hammering while a writer evicts, refills and drops --------- */

#define HAMMER_SEGS 10
#define READERS     2

struct hammer {
	struct segcache *c;
	atomic_bool stop;
	unsigned seed;
	unsigned long reads, hits, bad;
};

static void *hammer_read(void *arg)
{
	struct hammer *h = arg;
	uint8_t *buf = malloc(CHUNK);
	unsigned seed = h->seed;

	assert_non_null(buf);
	while (!atomic_load(&h->stop)) {
		uint64_t seg = (uint64_t)rand_r(&seed) % HAMMER_SEGS;
		uint64_t off = ((uint64_t)rand_r(&seed) % (SEG / 8)) * 8;
		size_t len = ((size_t)rand_r(&seed) % (CHUNK / 8) + 1) * 8;
		int r;

		if (len > SEG - off)
			len = SEG - off;
		if (rand_r(&seed) % 4)
			r = segcache_read(h->c, seg, buf, len, off);
		else
			r = segcache_read_nowait(h->c, seg, buf, len, off);
		h->reads++;
		if (r == 0) {
			h->hits++;
			if (mismatch(seg, buf, len, off) >= 0)
				h->bad++;
		} else if (r != -ENOENT && r != -EAGAIN) {
			h->bad++;
		}
	}
	free(buf);
	return NULL;
}

static void test_hammer(void **state)
{
	struct segcache *c = cache(in_dir(dir, __func__), 4);
	struct hammer h[READERS];
	pthread_t th[READERS];
	unsigned seed = 1;
	unsigned long hits = 0;

	for (int i = 0; i < READERS; i++) {
		h[i] = (struct hammer){.c = c, .seed = (unsigned)i + 7};
		assert_int_equal(pthread_create(&th[i], NULL, hammer_read, &h[i]), 0);
	}
	/* Fill segments, each in pieces; drop one now and then. */
	for (int n = 0; n < 200; n++) {
		uint64_t seg = (uint64_t)rand_r(&seed) % HAMMER_SEGS;
		if (n % 5 == 4)
			segcache_drop(c, (uint64_t)rand_r(&seed) % HAMMER_SEGS);
		put(c, seg, 0, SEG / 2 + (uint64_t)(rand_r(&seed) % 8) * (SEG / 16));
	}
	for (int i = 0; i < READERS; i++) {
		atomic_store(&h[i].stop, true);
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(h[i].bad, 0);
		hits += h[i].hits;
	}
	print_message("hammer: %lu + %lu reads, %lu hits, %" PRIu64 " evictions\n", h[0].reads,
	              h[1].reads, hits, stats(c).evictions);
	assert_true(hits > 0);
	assert_int_equal(stats(c).errors, 0);
	segcache_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_write_extend_read),
	    cmocka_unit_test(test_lru_eviction),
	    cmocka_unit_test(test_drop_and_restart),
	    cmocka_unit_test(test_fill_ticket),
	    cmocka_unit_test(test_open),
	    cmocka_unit_test(test_read_error),
	    cmocka_unit_test(test_write_error),
	    cmocka_unit_test(test_read_nowait),
	    cmocka_unit_test(test_pinned_not_evicted),
	    cmocka_unit_test(test_pinned_dropped_not_reused),
	    cmocka_unit_test(test_block_device),
	    cmocka_unit_test(test_hammer),
	};
	const struct CMUnitTest fs_tests[] = {
	    cmocka_unit_test(test_full_fs),
	};
	int r = cmocka_run_group_tests(tests, dir_setup, dir_teardown);

	return r | cmocka_run_group_tests(fs_tests, fs_setup, fs_teardown);
}
