/* tree.h — the per-volume copy-on-write block tree (private to the store).
 *
 * A radix tree of FMT_FANOUT-slot nodes mapping a volume's block number
 * (LBA) to a data block (0 = hole).  Slots, roots and a node's identity
 * hold block NAMES (fwd.h: the address a block was written at and the
 * life of its segment then), which compaction never changes: the
 * allocator's forwarding map says where a moved block is, and its counts
 * are found through it.  Nodes are shared between a volume,
 * its snapshots and clones by reference count (dm-thin/btrfs style): a node
 * with ref > 1 is immutable and copied before a change ("shadowing"); the
 * copy takes a reference on every child (or data block) it points at.  A
 * snapshot or clone is O(1): one more reference on the root.
 *
 * Node objects (docs/METADATA.md, step 1).  A node in memory is an object
 * found by its on-disk address in its tree cache (struct tree_cache: one
 * per pool).  An interior node keeps each child's on-disk address as its
 * image holds it (caddr) beside the RCU-published child pointer: a NULL
 * pointer with an address set means "not in memory", and whoever walks
 * there reads the child, inserts it in the cache if no one else did (so
 * two threads loading one shared node agree on one object), publishes the
 * pointer and goes on.  Dirty nodes and nodes whose image is not written
 * yet are always in memory; so is a tree's root unless it is parked
 * (tree_park: t->root NULL, its block in t->away; open parks every root,
 * and the first to use a parked root reads it and publishes it again, so
 * that 10^5 snapshots nobody reads keep no node in memory).  Eviction (tree_cache_evict, step 3)
 * drops the others under a bound, leaves first; a node counts the
 * parents' pointers to it (npub) and leaves memory when the last is
 * unpublished.
 *
 * Invariants (tree_check): every node is reachable from some root; the
 * number of parents' slots and roots pointing at it is its ref before it
 * is first written, and afterwards its written block's count in the
 * allocator (whether it is in memory or not); nmapped equals its non-empty
 * slots; a node's level is its parent's minus one.
 *
 * Concurrency: one writer (the store's log thread) calls every function
 * but the readers': tree_lookup, tree_run, tree_count, tree_diff,
 * tree_depth.  Readers run inside rcu_read_lock() with no other lock on
 * nodes in memory: slots change by single 8-byte stores and child/root
 * pointers by rcu_assign_pointer, and nodes are freed only after a grace
 * period (call_rcu), so a reader sees the old or the new mapping, never a
 * mix.  A reader that meets a node not in memory reads it (blocking) or,
 * asked not to block, answers -EAGAIN; the cache's lock serialises
 * publishing a loaded child with the writer's changes to child slots.
 * A node that cannot be read or fails its checks gives -EIO or -EILSEQ,
 * logged once per node.
 */
#ifndef COWBD_TREE_H
#define COWBD_TREE_H
#include <stdbool.h>
#include <stdint.h>
#include <urcu/urcu-memb.h>

#include "alloc.h"
#include "format.h"

struct tree_cache;

struct tree_node {
	union {
		uint64_t phys[FMT_FANOUT]; /* level 0: RCU-read */
		/* level > 0: RCU-read; NULL = a hole, or not in memory when
		 * caddr[i] is set.  Stored by the writer, and by a reader
		 * publishing a child it loaded, under the cache lock. */
		struct tree_node *child[FMT_FANOUT];
	};
	/* writer-only fields below */
	uint64_t disk;    /* block of the last written copy, 0 = none */
	uint64_t total;   /* mapped blocks in this subtree (read racily by tree_count) */
	uint32_t ref;     /* parents + roots, until the node is first written:
	                   * then its block's count in the allocator says it */
	uint16_t nmapped; /* non-empty slots */
	uint8_t level;
	uint8_t dirty;  /* changed since written; then every parent is dirty too */
	uint8_t used;   /* CLOCK: followed since the hand last passed (set racily by readers) */
	uint8_t dead;   /* freed or evicted: nothing is published in it any more (cache lock) */
	uint32_t npub;  /* parents' child pointers to it, published or not (cache lock) */
	uint32_t nroot; /* trees whose root it is */
	struct rcu_head rcu;
	/* level > 0 only: child i's on-disk address as this node's image
	 * holds it (0: a hole, or a child not written yet).  Exact whenever
	 * child[i] is NULL; caught up with child[i]->disk when this node is
	 * written.  Written under the cache lock, read with CMM_LOAD_SHARED. */
	uint64_t caddr[];
};

struct tree {
	struct tree_node *root; /* RCU-published; NULL = all holes, or parked */
	unsigned levels;        /* 1..4 */
	/* While root is NULL: a parked root's block, or 0 for an empty tree
	 * (meaningless, maybe stale, while root is set).  Changed under the
	 * cache lock (tree.c, "roots", says in which order). */
	uint64_t away;
	/* The parked root's total (mapped blocks below it), so that the
	 * tree's size is known without reading it. */
	uint64_t away_total;
	/* A reader's copy (tree_copy): a root read for it is not published. */
	bool copy;
	/* Where nodes not in memory are found (set with the tree; trees that
	 * share nodes share it).  NULL: every node stays in memory. */
	struct tree_cache *nc;
};

/* Levels needed for nblocks blocks; 0 if more than FMT_FANOUT^4. */
unsigned tree_levels_for(uint64_t nblocks);

/* Where the data block lba maps is now (its name resolved) into *phys
 * (0 = hole); valid until the caller leaves its read-side section.  A name
 * that resolves nowhere is -EILSEQ (logged).  Caller holds
 * rcu_read_lock().  A node on the path that is not in memory is read
 * (blocking) or, with nowait, not: -EAGAIN.  0, -EAGAIN, -EIO, -EILSEQ
 * or -ENOMEM.  O(levels) when in memory. */
int tree_lookup(const struct tree *t, uint64_t lba, bool nowait, uint64_t *phys);

/* The run starting at lba whose blocks are all mapped (*mapped = true) or
 * all holes: its length (1..max) into *len.  Empty subtrees are skipped
 * whole.  Caller holds rcu_read_lock(); reads nodes not in memory
 * (blocking) or, with nowait, not: -EAGAIN.  0, -EAGAIN, -EIO, -EILSEQ or
 * -ENOMEM. */
int tree_run(const struct tree *t, uint64_t lba, uint64_t max, bool nowait, uint64_t *len,
             bool *mapped);

/* Map lba to the block named phys (0 = unmap; a block the log just wrote
 * is named fwd_name_of), taking a reference on it and dropping the one on
 * the block it replaces.  Copies shared nodes on the path, reading
 * those not in memory.  Returns 0, or -ENOMEM, -EIO, -EILSEQ (the tree is
 * unchanged then). */
int tree_set(struct tree *t, struct alloc *a, uint64_t lba, uint64_t phys);

/* Unmap [lo, hi).  Whole shared subtrees are dropped, not walked.  Returns 0
 * or -ENOMEM, -EIO, -EILSEQ (part of the range may be unmapped then). */
int tree_trim(struct tree *t, struct alloc *a, uint64_t lo, uint64_t hi);

/* One more reference on t's root for a snapshot/clone/rollback: dst (empty)
 * becomes a copy of src (the root's block counts one more reference). */
void tree_share(struct tree *dst, const struct tree *src, struct alloc *a);

/* Drop t's reference on its root (freeing every node and block that only
 * it held, reading those not in memory to find their children) and leave
 * t empty.  A node that cannot be read is logged: what only it held stays
 * allocated (cowbd-check reports it). */
void tree_drop(struct tree *t, struct alloc *a);

/* Park t's root: a clean, written root leaves the tree (t->root NULL, its
 * block in t->away), so that the cache may evict it once nothing below it
 * is in memory; the next user reads it back.  False if it cannot (none,
 * dirty or never written).  Writer. */
bool tree_park(struct tree *t);

/* Copy src's root (published or parked) into dst for a reader that walks
 * it without the lock guarding src (reader.c), and compare such a copy
 * with the tree again.  Any thread. */
void tree_copy(struct tree *dst, const struct tree *src);
bool tree_same_root(const struct tree *a, const struct tree *b);

/* The block of t's root (0: empty; not written yet: 0), and the blocks
 * mapped in t (its root's total).  Writer. */
uint64_t tree_root_addr(const struct tree *t);
uint64_t tree_total(const struct tree *t);

/* Closing the pool: leave t empty, without touching block references (the
 * allocator goes too) or reading nodes not in memory; its nodes in memory
 * are freed by tree_cache_free (t->nc must be set).  Writer, or the closer
 * once readers are gone; cost O(nodes in memory, each once). */
void tree_release(struct tree *t);

/* Count mapped blocks (O(1)) and, unless unique is NULL, blocks only this
 * tree references (a walk of the nodes only this tree holds: nothing below
 * a shared node is unique).  May run on any thread inside rcu_read_lock():
 * it reads reference counts the writer may be changing, so while writes
 * are in flight the answer is a moment's approximation.  Reads nodes not
 * in memory (blocking; one that cannot be read counts nothing unique, and
 * a parked root that cannot be read maps what the tree's record says) or,
 * with nowait, not: -EAGAIN.  0 or -EAGAIN. */
int tree_count(const struct tree *t, const struct alloc *a, bool nowait, uint64_t *mapped,
               uint64_t *unique);

/* Checkpoint support: call emit(arg, node, image) for every dirty node,
 * children first; emit fills image->self/crc via the log and returns the
 * block it went to (0 = error, abort).  Updates node->disk (taking a
 * reference on the new block, dropping the old one).  Returns 0 or -EIO. */
typedef uint64_t (*tree_emit_fn)(void *arg, struct fmt_node *image);
int tree_write_dirty(struct tree *t, struct alloc *a, tree_emit_fn emit, void *arg,
                     struct fmt_node *scratch);

/* A checkpoint's pre-copy: write t's dirty leaves (level 0 only: their
 * parents stay dirty, for the checkpoint itself) in LBA order from *from,
 * at most *budget of them (*budget goes down by those written).  *from
 * ends past the last leaf visited, or UINT64_MAX once the tree has no
 * dirty leaf left at or after it.  A leaf written here and changed again
 * before the checkpoint is written again by it.  0 or -EIO (as above). */
int tree_write_leaves(struct tree *t, struct alloc *a, tree_emit_fn emit, void *arg,
                      struct fmt_node *scratch, uint64_t *from, unsigned *budget);

/* Comparing trees.
 *
 * The rule that makes a comparison of mappings a comparison of data: two
 * trees hold the same bytes at an LBA exactly when their leaves hold the
 * same block name there (or both a hole), provided no write happened to
 * it in between.  A write never rewrites a block in place: it maps a
 * freshly allocated block (a partial write merges into a fresh one too),
 * so a block written after two trees split has a name the other tree
 * cannot hold.  A name is never given to another block while any tree
 * holds it (a segment's life moves on when the compactor retires it, and
 * a forwarded entry lives while its block is referenced), so equal names
 * are the same bytes.  Sharing (snapshot, clone, rollback, copying a node
 * before a change) passes names on unchanged, and compaction changes no
 * slot: it moves blocks under their names (fwd.h).  Hence: a block
 * never written between the two trees' split and now is never reported
 * (no false positives), and a block whose bytes differ always is; a block
 * overwritten with the same bytes is reported (it was written).  Subtrees
 * both trees point to are the same node, so they are skipped whole: the
 * cost is the nodes on paths to what changed, not the volume's size. */

/* A run of n blocks from lba whose mappings differ; zero: the second tree
 * maps none of them (trimmed, zeroed, or never written there while the
 * first tree has data).  Return nonzero to stop the walk. */
typedef int (*tree_diff_fn)(void *arg, uint64_t lba, uint64_t n, bool zero);

/* Walk a and b (of equal levels) together over [lo, hi) and call fn for
 * each run of blocks whose slots differ, in LBA order (runs may touch:
 * the caller merges).  Subtrees that are the same node in both, or absent
 * from both, are skipped without being read (also when neither is in
 * memory: equal addresses).  *visits, if not NULL, grows by the node pairs
 * visited (the cost).  Returns 0, fn's nonzero value, -EINVAL if the
 * levels differ, -EIO/-EILSEQ/-ENOMEM (a node not in memory could not be
 * read), -ESTALE (the writer replaced a node being read: walk again) or,
 * with nowait, -EAGAIN (a node it needs is not in memory: fn may have been
 * called for runs before it).  Caller holds rcu_read_lock(); without
 * nowait, reads nodes not in memory (blocking). */
int tree_diff(const struct tree *a, const struct tree *b, uint64_t lo, uint64_t hi, bool nowait,
              tree_diff_fn fn, void *arg, uint64_t *visits);

/* A walk that met a node the writer freed or replaced while it was read
 * (-ESTALE) walks again from the root, which shows the new state: true.
 * Each retry needs the writer to change that path again during one node
 * read, so a walk that keeps failing (64 times) meets a cache that lost
 * a node: *err becomes -EIO, false.  *tries starts at 0 per walk. */
bool tree_stale_again(int *err, unsigned *tries);

/* A run of n blocks from lba of equal depth (see tree_depth). */
typedef int (*tree_depth_fn)(void *arg, uint64_t lba, uint64_t n, uint32_t depth);

/* Allocation depth along a chain of trees (chain[0] the volume, chain[k]
 * the snapshot its k-th ancestor was cloned from; all of equal levels):
 * 0 for a hole in chain[0], else 1 + the number of trees after chain[0]
 * that hold the same block, counted while they do (so 1 = written in
 * chain[0], 2 = inherited from chain[1], ...).  Calls fn for runs over
 * [lo, hi) in LBA order (runs may touch).  Returns 0, fn's nonzero value,
 * -EINVAL (levels differ), -ENOMEM, or as tree_diff -EIO/-EILSEQ/-ESTALE
 * and, with nowait, -EAGAIN.  Caller holds rcu_read_lock(); without
 * nowait, reads nodes not in memory (blocking); cost the nodes of chain[0]
 * in the range, times n. */
int tree_depth(const struct tree *const *chain, unsigned n, uint64_t lo, uint64_t hi, bool nowait,
               tree_depth_fn fn, void *arg);

/* ---- the node cache -------------------------------------------------- */

/* read(arg, addr, out) reads and validates one node block (magic, CRC,
 * own address, level <= 3): 0 or -errno.  Called on any thread that meets
 * a node not in memory, without locks held. */
typedef int (*tree_read_fn)(void *arg, uint64_t addr, struct fmt_node *out);

/* A pool's node cache over a's blocks.  NULL on ENOMEM. */
struct tree_cache *tree_cache_new(struct alloc *a, tree_read_fn read, void *arg);
/* Whether node images hold their subtree totals (format version 3: read
 * them and check leaves' against their slots) or not (older pools: only
 * tree_load, which sums them, may read such nodes).  Before any node is
 * read. */
void tree_cache_totals(struct tree_cache *nc, bool on);
/* Free it, with the nodes still in it: every tree using it dropped or
 * released, and a grace period since. */
void tree_cache_free(struct tree_cache *nc);

struct tree_cache_stats {
	uint64_t resident;  /* written or loaded nodes in memory */
	uint64_t bytes;     /* their footprint: objects, caddr arrays, map slots */
	uint64_t bound;     /* tree_cache_bound's bytes, 0: none */
	uint64_t away;      /* nodes not in memory (their counts kept) */
	uint64_t loads;     /* nodes read on demand since the cache was made */
	uint64_t errors;    /* of those, reads that failed or were damaged */
	uint64_t evictions; /* nodes dropped from memory (eviction, tree_unload) */
};
/* Any thread; takes the cache lock. */
void tree_cache_stats(struct tree_cache *nc, struct tree_cache_stats *out);

/* Bound the memory of nodes with a written copy (object, caddr array,
 * map slots) to `bytes` (0: unbounded); wake(arg) is called, from a
 * reader that loaded a node past the bound, at most once until the next
 * tree_cache_evict, so that the writer runs it.  Dirty and unwritten
 * nodes are not evictable and may exceed the bound (tree_cache_evict says
 * when an early checkpoint should write them).  Before readers start. */
void tree_cache_bound(struct tree_cache *nc, uint64_t bytes, void (*wake)(void *), void *arg);

/* Past the bound with something the hand may still evict (any thread,
 * racy: a hint for the writer's wait), and past it at all. */
bool tree_cache_over(const struct tree_cache *nc);
bool tree_cache_above(const struct tree_cache *nc);

/* Bytes pinned by dirty nodes (the allocator's count of them). */
uint64_t tree_cache_pinned(const struct tree_cache *nc);

/* Evict (docs/METADATA.md, "Step 3 (eviction) as built"): once resident bytes pass
 * the bound, a CLOCK over the nodes in memory drops clean, written,
 * non-root nodes with no child in memory (leaves first), visiting at most
 * `budget` nodes per call, until 7/8 of the bound.  Writer only, between
 * rounds (no tree operation in flight: nothing holds a node pointer but
 * readers, which are RCU-protected); readers run meanwhile.  Returns true
 * when pinned (dirty) nodes pass half the bound: checkpoint early. */
bool tree_cache_evict(struct tree_cache *nc, unsigned budget);

/* Load t from disk at open: the whole tree, reading each node once (a node
 * reached twice is shared: one object, one more reference) and taking a
 * reference on every block, so that the counts are rebuilt (until step 2
 * keeps them on disk).  Single-threaded (the opener).  0, -EIO, -EILSEQ or
 * -ENOMEM (then t is empty and nothing is leaked). */
int tree_load(struct tree_cache *nc, struct tree *t, uint64_t root_addr, unsigned levels);

/* Open t (format version 3: counts are the allocator's, loaded from disk)
 * with its root parked: nothing read but the count page of the root's
 * segment; its first user reads it.  total is the root's total as the
 * volume record says it (version 4), TREE_TOTAL_UNKNOWN to read the root
 * now (version 3 records do not say).  0, -EIO, -EILSEQ (a root the
 * allocator does not count, or not where the record says) or -ENOMEM. */
#define TREE_TOTAL_UNKNOWN UINT64_MAX
int tree_open(struct tree_cache *nc, struct tree *t, uint64_t root_addr, unsigned levels,
              uint64_t total);

/* Mark every node of trees[0..n) dirty, so that the next checkpoint
 * rewrites them all (upgrading an older pool: its images lack totals).
 * Every node must be in memory (tree_load): -EAGAIN if one is not;
 * -ENOMEM.  Cost O(distinct nodes). */
int tree_dirty_all(struct tree *const *trees, unsigned n, struct alloc *a);

/* Drop from memory every node of trees[0..n)'s cache that eviction may
 * drop, ignoring the CLOCK's reference bits: clean, written, not a root,
 * named by its parents' images; passes until none is left (each pass
 * drops one more level).  Each parent keeps the address, and the next walk
 * that needs the node reads it again.  Roots, dirty nodes and their paths
 * stay.  Writer only; readers may run meanwhile.  Returns the nodes
 * dropped.  Tests call it: the same code as tree_cache_evict. */
uint64_t tree_unload(struct tree *const *trees, unsigned n);

/* Offline checker: walks every distinct node reachable from trees[0..n)
 * (reading those not in memory), checks each node's level, slot counts
 * and reference count, and adds one to bref[b] (alloc_nblocks(a) entries)
 * for every reference to the block b a name resolves to (leaf slots and
 * nodes' on-disk copies; a name that resolves nowhere is a problem), for
 * the caller to compare with the allocator.  Writer only.  Returns problems
 * found (each reported with say_error). */
int tree_check_all(struct tree *const *trees, unsigned n, const struct alloc *a, uint32_t *bref);
/* The same for the blocks [lo, hi) only (bref[b - lo]), so that a pool too
 * large for a count per block in memory is checked in several passes:
 * the trees are walked in each, problems reported (and returned) only
 * with report. */
int tree_check_range(struct tree *const *trees, unsigned n, const struct alloc *a, uint64_t lo,
                     uint64_t hi, uint32_t *bref, bool report);

/* Distinct dirty nodes reachable from trees[0..n): what
 * alloc_meta_pending() must equal (a checker; O(distinct nodes in
 * memory): nodes not in memory are clean). */
uint64_t tree_dirty_nodes(struct tree *const *trees, unsigned n);

#endif
