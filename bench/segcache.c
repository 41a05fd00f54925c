/* segcache.c — what a read from the segment cache (src/segcache.c) costs
 * against a plain pread of a file of the same size, both warm (in the page
 * cache): 4 KiB reads at random 4 KiB-aligned offsets of SLOTS segments,
 * with 1 and 2 threads (the cache's mutex is taken twice per read), the
 * best of 3 runs of each.  Then
 * the O_DIRECT question: the same reads with O_DIRECT on the plain file
 * (what every read would cost with the cache file opened O_DIRECT), and a
 * segment written buffered vs O_DIRECT.  Files in TMPDIR (default /tmp).
 * Built by `make bench` (not run by bench.sh).
 *
 * Usage: bench-segcache [SLOTS [READS]]   (defaults 64 = 256 MiB, 1000000)
 * Output: one line per measurement, ns per operation (wall clock; for one
 * thread also CPU time).
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../src/format.h"
#include "../src/segcache.h"

#define SEG FMT_SEG_BYTES

static uint64_t slots, reads;
static struct segcache *cache;
static int plain_fd, direct_fd;

static double clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

enum mode { CACHE, PLAIN, DIRECT };

struct run {
	enum mode mode;
	unsigned seed;
	uint64_t n;
};

static void *reader(void *arg)
{
	struct run *r = arg;
	void *buf;

	if (posix_memalign(&buf, 4096, 4096))
		abort();
	for (uint64_t i = 0; i < r->n; i++) {
		uint64_t seg = (uint64_t)rand_r(&r->seed) % slots;
		uint64_t off = (uint64_t)(rand_r(&r->seed) % (SEG / 4096)) * 4096;
		int fd = r->mode == PLAIN ? plain_fd : direct_fd;

		if (r->mode == CACHE) {
			if (segcache_read(cache, seg, buf, 4096, off))
				abort();
		} else if (pread(fd, buf, 4096, (off_t)(seg * SEG + off)) != 4096) {
			abort();
		}
	}
	free(buf);
	return NULL;
}

static double min(double a, double b)
{
	return a < b ? a : b;
}

/* CPU ns per read of the last timed() (all threads): less at the mercy
 * of a loaded machine than the wall clock. */
static double cpu_ns;

/* ns per read with nthreads readers of n reads each. */
static double timed(enum mode mode, int nthreads, uint64_t n)
{
	pthread_t th[2];
	struct run r[2];
	double t = now(), cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID);

	for (int i = 0; i < nthreads; i++) {
		r[i] = (struct run){.mode = mode, .seed = (unsigned)i + 1, .n = n};
		if (pthread_create(&th[i], NULL, reader, &r[i]))
			abort();
	}
	for (int i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	cpu_ns = (clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu) * 1e9 / (double)(n * (uint64_t)nthreads);
	return (now() - t) * 1e9 / (double)(n * (uint64_t)nthreads);
}

/* ns per 4 MiB segment written at fd, slot by slot (then synced). */
static double write_segs(int fd, const void *seg, bool sync)
{
	double t = now();

	for (uint64_t s = 0; s < slots; s++)
		if (pwrite(fd, seg, SEG, (off_t)(s * SEG)) != SEG)
			abort();
	if (sync && fdatasync(fd))
		abort();
	return (now() - t) * 1e9 / (double)slots;
}

int main(int argc, char **argv)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char cpath[512], ppath[512];
	const char *why = "";
	void *seg;
	double c1, p1, c2, p2, cc, cp, d1, wb, ws, wd;

	slots = argc > 1 ? strtoull(argv[1], NULL, 0) : 64;
	reads = argc > 2 ? strtoull(argv[2], NULL, 0) : 1000000;
	snprintf(cpath, sizeof(cpath), "%s/bench-segcache.%d.cache", tmp, (int)getpid());
	snprintf(ppath, sizeof(ppath), "%s/bench-segcache.%d.plain", tmp, (int)getpid());
	if (posix_memalign(&seg, 4096, SEG))
		return 1;
	memset(seg, 0x5a, SEG);

	cache = segcache_open(cpath, slots * SEG, &why);
	plain_fd = open(ppath, O_RDWR | O_CREAT | O_TRUNC, 0600);
	direct_fd = open(ppath, O_RDWR | O_DIRECT);
	if (!cache || plain_fd < 0 || direct_fd < 0) {
		fprintf(stderr, "bench-segcache: cannot open the files: %s\n", why);
		return 1;
	}
	for (uint64_t s = 0; s < slots; s++)
		segcache_write(cache, s, seg, SEG, 0);
	ws = write_segs(plain_fd, seg, true);
	wd = write_segs(direct_fd, seg, false);
	wb = write_segs(plain_fd, seg, false); /* and back in the page cache */
	timed(CACHE, 1, reads / 10);
	timed(PLAIN, 1, reads / 10);

	/* The best of 3, alternating: the machine is shared. */
	c1 = p1 = c2 = p2 = cc = cp = 1e18;
	for (int i = 0; i < 3; i++) {
		c1 = min(c1, timed(CACHE, 1, reads));
		cc = min(cc, cpu_ns);
		p1 = min(p1, timed(PLAIN, 1, reads));
		cp = min(cp, cpu_ns);
		c2 = min(c2, timed(CACHE, 2, reads));
		p2 = min(p2, timed(PLAIN, 2, reads));
	}
	d1 = timed(DIRECT, 1, reads / 100 ? reads / 100 : 1);
	printf("4 KiB random reads of %llu warm segments, 1 thread: segcache_read %.0f ns, pread "
	       "%.0f ns, ratio %.2f\n",
	       (unsigned long long)slots, c1, p1, c1 / p1);
	printf("the same in CPU time: segcache_read %.0f ns, pread %.0f ns, ratio %.2f\n", cc, cp,
	       cc / cp);
	printf("the same, 2 threads (ns per read, both threads): segcache_read %.0f ns, pread "
	       "%.0f ns, ratio %.2f\n",
	       c2, p2, c2 / p2);
	printf("O_DIRECT pread of the same (what an O_DIRECT cache reads cost): %.0f ns, %.1fx "
	       "the warm segcache_read\n",
	       d1, d1 / c1);
	printf("a 4 MiB segment written: buffered %.2f ms (%.2f ms with fdatasync), O_DIRECT "
	       "%.2f ms\n",
	       wb / 1e6, ws / 1e6, wd / 1e6);

	segcache_close(cache);
	close(plain_fd);
	close(direct_fd);
	unlink(cpath);
	unlink(ppath);
	free(seg);
	return 0;
}
