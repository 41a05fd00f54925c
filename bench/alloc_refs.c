/* alloc_refs.c — the cost of alloc_ref/alloc_unref (the allocator alone,
 * no store): 2·10^7 references then as many unreferences in a pool of
 * 10^4 segments (40 MB of counts), blocks in log order ("seq") or at
 * random ("random"); the second of two passes is timed (pages allocated).
 * Built by `make bench` (not run by bench.sh); docs/METADATA.md, "Step 2b
 * as built", gives its figures.  Usage: bench-alloc_refs seq|random
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/alloc.h"

#define NSEGS 10000u
#define N     20000000u

static double pass(struct alloc *a, const uint64_t *blk)
{
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (uint64_t i = 0; i < N; i++)
		alloc_ref(a, blk[i]);
	for (uint64_t i = 0; i < N; i++)
		alloc_unref(a, blk[i]);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / (2.0 * N);
}

int main(int argc, char **argv)
{
	bool random = argc > 1 && !strcmp(argv[1], "random");
	struct alloc *a = alloc_new(NSEGS);
	uint64_t *blk = malloc(N * sizeof(*blk));
	uint64_t x = 88172645463325252ull, span;

	if (!a || !blk) {
		fprintf(stderr, "bench-alloc_refs: out of memory\n");
		return 1;
	}
	span = alloc_nblocks(a) - FMT_SEG_BLOCKS; /* segment 0 is never counted */
	for (uint64_t i = 0; i < N; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		blk[i] = FMT_SEG_BLOCKS + (random ? x : i) % span;
	}
	pass(a, blk);
	printf("%s: %.2f ns per alloc_ref or alloc_unref\n", random ? "random" : "seq",
	       pass(a, blk));
	free(blk);
	alloc_free(a);
	return 0;
}
