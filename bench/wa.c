/* wa.c — the compactor near full, measured on the real store over an
 * in-memory pool (no client, no disk: what it counts is the store's own
 * work).  For each fill level: a volume of FILL% of the pool written
 * sequentially, then random 4 KiB overwrites; reported per user write:
 * blocks the compactor moved (write amplification), checkpoints and syncs;
 * then the pool's used space over its live data after idle cleaning.
 *
 * Usage: bench-wa [POOL_MIB [WRITES [FILL%...]]]   (defaults 512 100000 70 80 90);
 * WA_IDLE_SECS (default 30) bounds the idle wait.
 * Output: one Markdown table row per fill level on stdout.
 */
#include <errno.h>
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

static double used_over_live(const struct store_stats *s)
{
	uint64_t used =
	    (s->segments - 1 - s->segments_free) * (s->segment_bytes / STORE_BLOCK_SIZE);
	return s->blocks_live ? (double)used / (double)s->blocks_live : 0;
}

static int run(uint64_t pool_mib, uint64_t writes, unsigned pct)
{
	struct blkdev *dev = blkdev_mem_new(pool_mib << 20);
	struct store_stats a, b, c;
	struct store *st;
	struct vol *v;
	const char *why = "";
	char *buf = malloc(1u << 20);
	uint64_t vsize = (pool_mib << 20) / 100 * pct / (1u << 20) * (1u << 20);
	uint64_t nblocks = vsize / STORE_BLOCK_SIZE, x = 0x9E3779B97F4A7C15ull, enospc = 0;

	if (!dev || !buf || store_format(dev) || !(st = store_open(dev, NULL, &why))) {
		fprintf(stderr, "bench-wa: cannot make a pool: %s\n", why);
		return 1;
	}
	if (store_vol_create(st, "v", vsize) || store_vol_open(st, "v", &v)) {
		fprintf(stderr, "bench-wa: cannot create the volume\n");
		return 1;
	}
	memset(buf, 0x5a, 1u << 20);
	for (uint64_t off = 0; off < vsize; off += 1u << 20)
		if (store_write(v, buf, off, 1u << 20, 0)) {
			fprintf(stderr, "bench-wa: %u%%: the fill did not fit\n", pct);
			return 1;
		}
	store_get_stats(st, &a);
	double t0 = now();
	for (uint64_t i = 0; i < writes; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		memcpy(buf, &i, sizeof(i));
		int err =
		    store_write(v, buf, (x % nblocks) * STORE_BLOCK_SIZE, STORE_BLOCK_SIZE, 0);
		if (err == -ENOSPC) {
			if (getenv("WA_DEBUG") && enospc < 5) {
				struct store_stats d;
				store_get_stats(st, &d);
				fprintf(
				    stderr,
				    "ENOSPC at %llu: free %llu pending %llu live %llu segs %llu\n",
				    (unsigned long long)i, (unsigned long long)d.segments_free,
				    (unsigned long long)d.segments_pending,
				    (unsigned long long)d.blocks_live,
				    (unsigned long long)d.segments);
			}
			enospc++;
		} else if (err) {
			fprintf(stderr, "bench-wa: write: %s\n", strerror(-err));
			return 1;
		}
	}
	double t = now() - t0;
	store_get_stats(st, &b);
	/* Idle: the log thread cleans down towards the live data. */
	double before = used_over_live(&b);
	int idle = getenv("WA_IDLE_SECS") ? atoi(getenv("WA_IDLE_SECS")) : 30;
	for (int i = 0; i < idle; i++) {
		sleep(1);
		store_get_stats(st, &c);
		if (used_over_live(&c) <= 1.2)
			break;
	}
	uint64_t user = writes - enospc;
	printf("| %u%% | %llu | %.2f | %.2f | %.3f | %.0f | %.2f× | %.2f× |\n", pct,
	       (unsigned long long)enospc,
	       user ? (double)(b.compacted_blocks - a.compacted_blocks) / user : 0,
	       user ? (double)(b.checkpoints - a.checkpoints) * 1000 / user : 0,
	       user ? (double)(b.syncs - a.syncs + 2 * (b.checkpoints - a.checkpoints)) / user : 0,
	       user / t, before, used_over_live(&c));
	store_vol_close(v);
	store_close(st);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t pool_mib = argc > 1 ? strtoull(argv[1], NULL, 0) : 512;
	uint64_t writes = argc > 2 ? strtoull(argv[2], NULL, 0) : 100000;
	unsigned def[] = {70, 80, 90};
	printf("| fill | ENOSPC | blocks moved per user write | checkpoints per 1000 writes | "
	       "syncs per "
	       "write | writes/s | used ÷ live after | after idle "
	       "|\n|---|---|---|---|---|---|---|"
	       "---|\n");
	if (argc > 3) {
		for (int i = 3; i < argc; i++)
			if (run(pool_mib, writes, (unsigned)atoi(argv[i])))
				return 1;
	} else {
		for (unsigned i = 0; i < 3; i++)
			if (run(pool_mib, writes, def[i]))
				return 1;
	}
	return 0;
}
