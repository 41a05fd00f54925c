/* compact_cost.c — what one compaction pass costs against the number of
 * snapshots that share the victims' live blocks (issue 13: the target is
 * a cost independent of them, "measure with 1 and 1,000"), on the real
 * store over an in-memory pool.
 *
 * For each S: a volume of VOL_MIB written whole, then all but every tenth
 * block overwritten (its first segments are 10% live), then S snapshots,
 * each after one block of the volume was written again (so every snapshot
 * has a root and a path of its own, and all share the rest: the victims'
 * live blocks are shared by the volume and all S snapshots); then one
 * store_compact(), timed, with the blocks it moved and the tree nodes in
 * memory.  Twice per S: "warm", in the same open (every node in memory:
 * the time is the walk), and "reopened" (the pool closed and opened again
 * first: every root parked, every node on disk, in the page cache: the pass
 * reads what it walks).  The pool is a file in TMPDIR (default /tmp).
 *
 * Usage: bench-compact_cost [VOL_MIB [S...]]   (defaults 64 1 10 100 1000)
 * Output: one Markdown table row per S and mode on stdout.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blkdev.h"
#include "store.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int run(uint64_t vol_mib, unsigned snaps, bool reopen)
{
	uint64_t pool = (vol_mib * 4 + 256) << 20, vsize = vol_mib << 20;
	uint64_t nblocks = vsize / STORE_BLOCK_SIZE;
	char path[4096];
	snprintf(path, sizeof(path), "%s/bench-compact-%d.img",
	         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
	unlink(path);
	struct blkdev *dev = blkdev_create_file(path, pool);
	char *buf = malloc(1u << 20), name[32];
	const char *why = "";
	struct store_stats s0, s1;
	struct store *st;
	struct vol *v;

	if (!dev || !buf || store_format(dev) || !(st = store_open(dev, NULL, &why)) ||
	    store_vol_create(st, "v", vsize) || store_vol_open(st, "v", &v)) {
		fprintf(stderr, "bench-compact_cost: cannot make the pool: %s\n", why);
		return 1;
	}
	memset(buf, 0x5a, 1u << 20);
	for (uint64_t off = 0; off < vsize; off += 1u << 20)
		if (store_write(v, buf, off, 1u << 20, 0))
			return fprintf(stderr, "bench-compact_cost: the fill failed\n"), 1;
	memset(buf, 0xa5, STORE_BLOCK_SIZE);
	for (uint64_t b = 0; b < nblocks; b++)
		if (b % 10 && store_write(v, buf, b * STORE_BLOCK_SIZE, STORE_BLOCK_SIZE, 0))
			return fprintf(stderr, "bench-compact_cost: an overwrite failed\n"), 1;
	for (unsigned s = 0; s < snaps; s++) {
		uint64_t b = (uint64_t)s * 7919 % nblocks | 1; /* never a 10% block */
		snprintf(name, sizeof(name), "v@s%u", s);
		if (store_write(v, buf, b * STORE_BLOCK_SIZE, STORE_BLOCK_SIZE, 0) ||
		    store_snap_create(st, name))
			return fprintf(stderr, "bench-compact_cost: snapshot %u failed\n", s), 1;
	}
	if (store_checkpoint(st))
		return fprintf(stderr, "bench-compact_cost: checkpoint failed\n"), 1;
	if (reopen) {
		store_vol_close(v);
		store_close(st);
		if (!(dev = blkdev_open_file(path, 0)) || !(st = store_open(dev, NULL, &why)) ||
		    store_vol_open(st, "v", &v))
			return fprintf(stderr, "bench-compact_cost: reopen: %s\n", why), 1;
	}
	store_get_stats(st, &s0);
	double t = now();
	int64_t moved = store_compact(st);
	t = now() - t;
	store_get_stats(st, &s1);
	printf("| %u | %s | %lld | %.1f | %.2f | %llu | %llu |\n", snaps,
	       reopen ? "reopened" : "warm", (long long)moved, t * 1e3,
	       moved > 0 ? t * 1e6 / (double)moved : 0.0,
	       (unsigned long long)(s1.cache_loads - s0.cache_loads),
	       (unsigned long long)s1.cache_nodes);
	store_vol_close(v);
	store_close(st);
	unlink(path);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t vol_mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 64;
	static const unsigned def[] = {1, 10, 100, 1000};
	int rc = 0;

	printf("| snapshots sharing | open | blocks moved | pass (ms) | µs per moved block | "
	       "nodes read | nodes in memory after |\n|---|---|---|---|---|---|---|\n");
	for (int i = 2; i < (argc > 2 ? argc : 2 + (int)(sizeof(def) / sizeof(def[0]))); i++) {
		unsigned s = argc > 2 ? (unsigned)strtoul(argv[i], NULL, 10) : def[i - 2];
		for (int reopen = 0; reopen < 2 && !rc; reopen++)
			rc = run(vol_mib, s, reopen);
	}
	return rc;
}
