/* compact.h — the compactor (private to the store).
 *
 * Picks victim segments by LFS cost-benefit — (1-u)·age / (1+u), u the
 * live fraction, age in LSNs since the log entered the segment — copies
 * their live blocks to the log head as MOVE entries and re-points every
 * tree at the copies (tree_relocate).  Nothing is freed here: the caller
 * writes a checkpoint next, which makes the new mappings durable and only
 * then frees the victims (after an RCU grace period).  A crash before that
 * checkpoint leaves the old one in force, whose blocks are all intact.
 *
 * Runs on the store's log thread, between rounds.  Readers are never
 * blocked: they see a block's old or new copy, with the same bytes.
 */
#ifndef COWBD_COMPACT_H
#define COWBD_COMPACT_H
#include <stdint.h>

#include "alloc.h"
#include "blkdev.h"
#include "log.h"
#include "tree.h"

struct compact;

struct compact *compact_new(void);
void compact_free(struct compact *c);

/* One pass: victims of live fraction <= max_util, never a segment listed in
 * keep[] (segment numbers), at most max_blocks live blocks moved.  Returns the number of
 * blocks moved (0: nothing worth moving) or -errno (the log may hold part
 * of the copies then; the caller fails the pool).  *victims gets the number
 * of segments chosen. */
int64_t compact_pass(struct compact *c, struct alloc *a, struct log *l, struct blkdev *dev,
                     struct tree *const *trees, unsigned ntrees, const uint64_t *keep,
                     unsigned nkeep, double max_util, unsigned max_blocks, unsigned *victims);

#endif
