/* diff.h — what changed between two points in a volume's history, read
 * from the trees (never from the data), and the per-block status NBD's
 * metadata contexts report from it: qemu:dirty-bitmap:SNAP (changed since
 * a snapshot) and qemu:allocation-depth (which layer of a clone's history
 * a block comes from).
 *
 * Snapshots and clones share tree nodes, so the difference between two of
 * them is where their trees stop sharing: the walk skips every subtree
 * both point to, and costs the nodes on paths to what changed, not the
 * volume's size.  Two trees hold the same bytes at an LBA exactly when
 * they map the same physical block there; compaction moves blocks for all
 * trees at once, so a block never written between the two points is never
 * reported, even when compaction ran in between (src/tree.h has the
 * rule).  A block written in between is reported even if it got the same
 * bytes again.
 *
 * Threads: any RCU-registered thread (store_thread_register); store_diff
 * registers a thread that is not for the duration of the call.  Nothing
 * here holds a lock across unbounded work: each bounded piece of a walk
 * runs inside one RCU read-side section, and handles (attaches) keep the
 * records alive in between, so a concurrent delete or rollback of a
 * record being compared is refused with -EBUSY rather than racing.
 * Concurrent writes to a live volume being compared are seen or not,
 * block by block.
 */
#ifndef COWBD_DIFF_H
#define COWBD_DIFF_H
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

/* A changed range, in bytes (block-aligned, inside the volume). */
struct store_diff_extent {
	uint64_t off, len;
	bool zero; /* the later point maps nothing there: it reads as zeroes */
};
/* Called once per extent, in order; return nonzero to stop (store_diff
 * then returns that value). */
typedef int (*store_diff_fn)(void *arg, const struct store_diff_extent *e);

/* Report what differs between from and to: export names ("VOL",
 * "VOL@SNAP"); to NULL means from's volume as it is now (live).  Extents
 * come out merged (two touching extents never share the zero flag),
 * sorted and non-overlapping.  from and to must share history: one volume
 * and its snapshots, or a clone (and its snapshots) and the snapshot it
 * was cloned from, its volume and so on up the origin chain (any two
 * records whose oldest ancestor is the same volume); others are -EXDEV.
 * Errors: -EINVAL (bad name), -ENOENT (no such volume or snapshot),
 * -EBUSY (being deleted or rolled back), -EXDEV, -ENOMEM, or fn's value.
 * Both records are attached while it runs (a delete or rollback of either
 * is refused meanwhile).  Blocks only in fn; cost as above. */
int store_diff(struct store *st, const char *from, const char *to, store_diff_fn fn, void *arg);

/* As store_diff, also counting the tree node pairs the walk visited (a
 * cost measure for tests and benchmarks). */
int store_diff_count(struct store *st, const char *from, const char *to, store_diff_fn fn,
                     void *arg, uint64_t *visits);

/* ---- per-block status for NBD metadata contexts ----------------------- */

/* A run of len bytes with one status value. */
struct store_run {
	uint64_t len;
	uint32_t value;
};

/* A status source for one export, opened once (at NBD_OPT_SET_META_CONTEXT)
 * and asked many times.  It holds its own handles on the records it reads,
 * so they cannot be deleted or rolled back while it is open. */
struct store_status;

/* Snapshots of v's volume (v may be the volume or one of its snapshots),
 * by their own name ("SNAP"), in table order: what qemu:dirty-bitmap:SNAP
 * can name on export v.  emit's nonzero stops the walk and is returned.
 * Any thread; takes the volume table's lock (emit runs outside it). */
int store_status_snapshots(struct vol *v, int (*emit)(void *arg, const char *snap), void *arg);

/* qemu:dirty-bitmap:SNAP on export v: value 1 where v's data differs from
 * VOL@SNAP (VOL = v's volume), 0 elsewhere.  For a SNAP older than v this
 * is "written since SNAP"; for a newer one, "written between v and SNAP"
 * (what to copy to make one into the other either way).  -ENOENT if VOL
 * has no snapshot SNAP (or SNAP is not a valid name), -EBUSY if it is
 * being deleted, -ENOMEM. */
int store_status_dirty(struct vol *v, const char *snap, struct store_status **out);

/* qemu:allocation-depth on export v: 0 a hole, 1 written in v's volume,
 * N+1 inherited unchanged from the N-th snapshot up the origin chain of a
 * clone (the snapshot it was cloned from is 1, that snapshot's volume's
 * origin 2, ...).  A snapshot of a volume reports as its volume would
 * have then.  -ENOMEM, -EBUSY. */
int store_status_depth(struct vol *v, struct store_status **out);

void store_status_close(struct store_status *s);

/* Describe [off, off+len) as up to max runs of equal value: the first
 * starts at off, runs are block-aligned inside, the last is clipped to
 * off+len; fewer than the whole range when max runs are used up.  *n gets
 * the count.  Returns 0, -EINVAL (range), -EIO, -EILSEQ or -ENOMEM.
 * Caller is a registered thread; reads tree nodes not in memory
 * (blocking: the event loop uses store_bs); cost one bounded tree walk. */
int store_status_map(struct store_status *s, uint64_t off, uint64_t len, struct store_run *runs,
                     unsigned max, unsigned *n);

/* ---- one NBD_CMD_BLOCK_STATUS --------------------------------------------- */

/* [off, off+len) of an export, described in each context asked for: up to
 * max runs each, as store_map and store_status_map describe them. */
struct store_bs {
	uint64_t off, len;
	unsigned max; /* >= 1 */
	/* base:allocation into alloc[max]; NULL: not asked */
	struct store_extent *alloc;
	/* qemu:dirty-bitmap's and qemu:allocation-depth's sources, into
	 * dirty_runs[max] and depth_runs[max]; NULL: not asked */
	struct store_status *dirty, *depth;
	struct store_run *dirty_runs, *depth_runs;
	unsigned nalloc, ndirty, ndepth; /* set: runs filled */
};

/* Fill bs for export v, the contexts in the order above (the first error
 * stops).  nowait (the event loop): read no tree node that is not in
 * memory: -EAGAIN then, and the request goes to a reader thread
 * (store_bs_submit).  Returns 0, -EAGAIN, -EINVAL (range), -EIO, -EILSEQ
 * (a node could not be read) or -ENOMEM.  Counted once in v's I/O
 * counters (block_status) if it asks for base:allocation, unless
 * -EAGAIN.  Caller is a registered thread; cost one bounded walk per
 * context. */
int store_bs(struct vol *v, struct store_bs *bs, bool nowait);

/* Answer r on a reader thread, as a READ that store_read_try could not
 * serve: r->vol, r->buf (the struct store_bs), r->done and r->priv set by
 * the caller; done() gets r->err = store_bs(r->vol, r->buf, false).  The
 * sources and arrays in bs stay the caller's and alive until then.  Never
 * blocks. */
void store_bs_submit(struct store_req *r);

#endif
