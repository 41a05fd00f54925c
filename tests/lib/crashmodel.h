/* crashmodel.h — the oracle of the power-cut tests: a volume of nb 4 KiB
 * blocks, each written whole with one byte value (1..250), and what a cut
 * may leave of it.  A block must read the value the last acknowledged
 * flush covered (durable), or any value written since (pending): a write
 * in flight at the cut may or may not have persisted, and a later one
 * may survive an earlier one. */
#ifndef COWBD_TEST_CRASHMODEL_H
#define COWBD_TEST_CRASHMODEL_H
#include <stdbool.h>
#include <stdint.h>

struct vol;

struct crashmodel {
	unsigned nb;
	unsigned char *durable, *latest;
	unsigned char (*pending)[32]; /* a bit per value written since the flush */
};

void crashmodel_init(struct crashmodel *m, unsigned nb);
void crashmodel_free(struct crashmodel *m);
/* Write a random value to a random block of v: 0, or store_write's error
 * (the value then counts as pending: it may have reached the pool). */
int crashmodel_write(struct crashmodel *m, struct vol *v);
/* A flush of v: acknowledged, everything written so far is durable. */
int crashmodel_flush(struct crashmodel *m, struct vol *v);
/* Every block of v reads its durable value or a pending one, whole.
 * Fails the test (naming the block and run) otherwise. */
void crashmodel_check(const struct crashmodel *m, struct vol *v, int run);

/* Crash-point enumeration: a short workload (a volume created, 14
 * regions of 64 KiB + 777 bytes written, some FUA, a flush every third,
 * a snapshot after the sixth) whose every step may fail once the power
 * is gone; crashpoint_run records what was acknowledged, crashpoint_verify
 * (on the pool opened after the cut) that all of it is there and the pool
 * checks clean. */
#define CRASHPOINT_REGIONS 14
struct store;
struct crashpoint {
	bool durable[CRASHPOINT_REGIONS + 1]; /* [CRASHPOINT_REGIONS]: the volume */
	bool snap_ok;
};
void crashpoint_run(struct store *st, struct crashpoint *cp);
void crashpoint_verify(struct store *st, const struct crashpoint *cp);

#endif
