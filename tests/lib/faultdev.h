/* faultdev.h — a fault-injecting block device for tests and fuzzers (no
 * cmocka: the fuzz targets link it too).
 *
 * A struct blkdev that forwards to a lower device (by default a fresh
 * blkdev_mem_new, owned) and can:
 *   - lose power after a budget of writes + flushes: from then on every
 *     write and flush fails with -EIO, as if the machine were gone, and
 *     faultdev_power_on() drops what was not synced (blkdev_mem_crash), or
 *     faultdev_power_on_mixed() keeps any mix of it (blkdev_mem_crash_mixed);
 *   - count the writes + flushes it saw (crash-point enumeration);
 *   - fail the next write or flush with -EIO, the device working on
 *     (a transient error), or only the next flush, with any errno;
 *   - delay every write (a slow disk widens race windows);
 *   - hold every flush until released (a sync that takes as long as the
 *     test wants: what may go on meanwhile), or only one that failed,
 *     before it returns its error (what another sync does meanwhile), or
 *     one that succeeded, after the lower device made it durable and
 *     before it returns (what is written meanwhile is not covered);
 *   - refuse to be written at all (abort: a read-only open must not write);
 *   - show patched copies of some blocks over the lower device (damaged
 *     metadata, without copying the whole image per run).
 * Its close op does nothing, so the test keeps it (and the image) across
 * store_close(); faultdev_free() releases it.
 *
 * Threads: reads and writes may come from several store threads at once;
 * the power state and counters are atomics.  Patches are set up before the
 * device is handed to a store and not changed while it is in use.
 */
#ifndef COWBD_TEST_FAULTDEV_H
#define COWBD_TEST_FAULTDEV_H
#include <stdbool.h>
#include <stdint.h>

#include "blkdev.h"

#define FAULTDEV_MAX_PATCH 64

struct faultdev {
	struct blkdev dev;      /* hand &f->dev to the store */
	struct blkdev *mem;     /* the lower device */
	bool own_mem;           /* faultdev_free closes mem */
	_Atomic int dead;       /* power is off: writes and flushes fail */
	_Atomic long budget;    /* writes+flushes left before the power goes; <0 = no limit */
	_Atomic long calls;     /* writes+flushes seen */
	_Atomic int fail_next;  /* set: the next write or flush fails (and clears it) */
	_Atomic int fail_flush; /* a -errno: the next flush fails with it (and clears it) */
	unsigned write_delay_us;
	_Atomic int hold_flush;        /* flushes wait while set */
	_Atomic int hold_failed_flush; /* a flush that failed waits while set, before it returns */
	_Atomic int hold_done_flush; /* a flush that succeeded waits while set, before it returns */
	_Atomic long flushes_held;   /* flushes waiting now (either way) */
	bool no_writes;              /* a write or discard aborts the process */
	unsigned npatch;
	uint64_t patch_addr[FAULTDEV_MAX_PATCH]; /* block numbers */
	uint8_t *patch_blk[FAULTDEV_MAX_PATCH];  /* FMT_BLOCK bytes each */
};

/* Over a fresh in-memory device of size bytes.  Aborts on ENOMEM. */
struct faultdev *faultdev_new(uint64_t size);

/* Over lower, which stays the caller's (faultdev_free leaves it open). */
struct faultdev *faultdev_over(struct blkdev *lower);

void faultdev_free(struct faultdev *f);

/* Power cut: every later write and flush fails with -EIO. */
void faultdev_power_off(struct faultdev *f);

/* Power back: the lower memory device forgets every write since its last
 * successful flush (torn: the last one keeps its first half), the device
 * works again with no budget. */
void faultdev_power_on(struct faultdev *f, bool torn);

/* Power back as faultdev_power_on, but the lower memory device keeps any
 * mix of the unsynced page images, chosen by seed (blkdev_mem_crash_mixed). */
void faultdev_power_on_mixed(struct faultdev *f, uint64_t seed);

/* Power back in the n-th way of a rotation, for loops over crash points:
 * n % 3 == 0 every unsynced write lost, 1 the last one torn, 2 a mix
 * seeded by n. */
void faultdev_power_on_rotate(struct faultdev *f, long n);

/* The patched copy of block blk: already patched, NULL if not.  O(patches). */
uint8_t *faultdev_patched(struct faultdev *f, uint64_t blk);

/* The patched copy of block blk, made from the lower device's bytes on
 * first use; NULL when FAULTDEV_MAX_PATCH blocks are patched already. */
uint8_t *faultdev_patch(struct faultdev *f, uint64_t blk);

#endif
