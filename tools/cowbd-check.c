/* cowbd-check — offline consistency check of a cowbd pool.
 *
 *   cowbd-check POOL
 *
 * Opens the pool read-only (nothing is written: no checkpoint, no log
 * repair), which validates the superblocks, the checkpoint record and every
 * tree node's checksum and address, and replays the log after the
 * checkpoint; then recounts every block reference from the trees and
 * compares it with the allocator and the checkpoint's segment bitmap.
 * Exit status: 0 clean, 1 damaged, 2 cannot read (missing file, I/O error,
 * not a pool, newer format). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blkdev.h"
#include "say.h"
#include "store.h"

int main(int argc, char **argv)
{
	struct store_opts o = {.read_only = true};
	struct store_vol_info *infos = NULL;
	struct store_stats s;
	const char *why = NULL;
	size_t n = 0;

	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: cowbd-check POOL\n");
		return 2;
	}
	struct blkdev *dev = blkdev_open_file(argv[1], 0);
	if (!dev) {
		fprintf(stderr, "cowbd-check: %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	struct store *st = store_open(dev, &o, &why);
	if (!st) {
		int e = errno;
		fprintf(stderr, "cowbd-check: %s: %s\n", argv[1], why ? why : strerror(e));
		blkdev_close(dev);
		return e == EILSEQ ? 1 : 2;
	}
	int bad = store_check(st);
	if (store_list(st, &infos, &n) == 0) {
		for (size_t i = 0; i < n; i++)
			printf("%-40s %12llu bytes %10llu blocks mapped\n", infos[i].name,
			       (unsigned long long)infos[i].size,
			       (unsigned long long)infos[i].mapped_blocks);
		free(infos);
	}
	store_get_stats(st, &s);
	printf("pool: %llu segments of %llu KiB, %llu free, %llu live blocks\n",
	       (unsigned long long)s.segments, (unsigned long long)s.segment_bytes / 1024,
	       (unsigned long long)s.segments_free, (unsigned long long)s.blocks_live);
	store_close(st);
	if (bad) {
		printf("%s: DAMAGED (%d problems)\n", argv[1], bad);
		return 1;
	}
	printf("%s: clean\n", argv[1]);
	return 0;
}
