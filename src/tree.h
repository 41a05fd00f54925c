/* tree.h — the per-volume copy-on-write block tree (private to the store).
 *
 * A radix tree of FMT_FANOUT-slot nodes mapping a volume's block number
 * (LBA) to a physical block (0 = hole).  Nodes are shared between a volume,
 * its snapshots and clones by reference count (dm-thin/btrfs style): a node
 * with ref > 1 is immutable and copied before a change ("shadowing"); the
 * copy takes a reference on every child (or data block) it points at.  A
 * snapshot or clone is O(1): one more reference on the root.
 *
 * Invariants (tree_check): every node is reachable from some root; its ref
 * equals the number of parents' slots and roots pointing at it; nmapped
 * equals its non-empty slots; a node's level is its parent's minus one.
 *
 * Concurrency: one writer (the store's log thread) calls every function but
 * tree_lookup.  Readers call tree_lookup inside rcu_read_lock() with no
 * other lock: slots change by single 8-byte stores and child/root pointers
 * by rcu_assign_pointer, and nodes are freed only after a grace period
 * (call_rcu), so a reader sees the old or the new mapping, never a mix.
 */
#ifndef COWBD_TREE_H
#define COWBD_TREE_H
#include <stdbool.h>
#include <stdint.h>
#include <urcu/urcu-memb.h>

#include "alloc.h"
#include "format.h"

struct tree_node {
	union {
		uint64_t phys[FMT_FANOUT];           /* level 0: RCU-read */
		struct tree_node *child[FMT_FANOUT]; /* level > 0: RCU-read */
	};
	/* writer-only fields below */
	uint64_t disk;    /* block of the last written copy, 0 = none */
	uint64_t total;   /* mapped blocks in this subtree (read racily by tree_count) */
	uint32_t ref;     /* parents + roots referencing this node */
	uint16_t nmapped; /* non-empty slots */
	uint8_t level;
	uint8_t dirty;  /* changed since written; then every parent is dirty too */
	uint32_t stamp; /* last relocation walk that visited it */
	struct rcu_head rcu;
};

struct tree {
	struct tree_node *root; /* RCU-published; NULL = all holes */
	unsigned levels;        /* 1..4 */
	/* A sequence count for readers that compare two trees (tree_diff,
	 * tree_depth): odd while tree_relocate re-points leaf slots, which
	 * it does slot by slot, so that a reader may see one tree's slot
	 * moved and another's not yet.  Writer: tree_relocate only. */
	uint32_t seq;
};

/* Levels needed for nblocks blocks; 0 if more than FMT_FANOUT^4. */
unsigned tree_levels_for(uint64_t nblocks);

/* Physical block of lba (0 = hole).  Caller holds rcu_read_lock(); never
 * blocks; O(levels). */
uint64_t tree_lookup(const struct tree *t, uint64_t lba);

/* Length in blocks (1..max) of the run starting at lba whose blocks are
 * all mapped (*mapped = true) or all holes.  Empty subtrees are skipped
 * whole.  Caller holds rcu_read_lock(); never blocks. */
uint64_t tree_run(const struct tree *t, uint64_t lba, uint64_t max, bool *mapped);

/* Map lba to phys (0 = unmap), taking a reference on phys and dropping the
 * one on the block it replaces.  Copies shared nodes on the path.  Returns
 * 0 or -ENOMEM (the tree is unchanged then). */
int tree_set(struct tree *t, struct alloc *a, uint64_t lba, uint64_t phys);

/* Unmap [lo, hi).  Whole shared subtrees are dropped, not walked.  Returns 0
 * or -ENOMEM (part of the range may be unmapped then). */
int tree_trim(struct tree *t, struct alloc *a, uint64_t lo, uint64_t hi);

/* One more reference on t's root for a snapshot/clone/rollback: dst (empty)
 * becomes a copy of src. */
void tree_share(struct tree *dst, const struct tree *src);

/* Drop t's reference on its root (freeing every node and block that only
 * it held) and leave t empty. */
void tree_drop(struct tree *t, struct alloc *a);

/* Count mapped blocks (O(1)) and blocks only this tree references (a walk
 * of the nodes only this tree holds: nothing below a shared node is
 * unique).  May run on any thread inside rcu_read_lock(): it reads
 * reference counts the writer may be changing, so while writes are in
 * flight the answer is a moment's approximation. */
void tree_count(const struct tree *t, const struct alloc *a, uint64_t *mapped, uint64_t *unique);

/* Checkpoint support: call emit(arg, node, image) for every dirty node,
 * children first; emit fills image->self/crc via the log and returns the
 * block it went to (0 = error, abort).  Updates node->disk (taking a
 * reference on the new block, dropping the old one).  Returns 0 or -EIO. */
typedef uint64_t (*tree_emit_fn)(void *arg, struct fmt_node *image);
int tree_write_dirty(struct tree *t, struct alloc *a, tree_emit_fn emit, void *arg,
                     struct fmt_node *scratch);

/* Compactor: walk every distinct node reachable from trees[0..n).  A leaf
 * slot whose block lies in a victim segment (victim[seg] != 0) is pointed
 * at move(arg, old), a copy with the same bytes; this is done in place even
 * in shared leaves, since every tree sharing the leaf wants the same
 * answer, and readers see the old or the new copy, both right.  A node whose
 * own on-disk copy lies in a victim is marked dirty; every ancestor of a
 * dirty node is marked dirty, so the next checkpoint rewrites each path.
 * The slots change only after commit(arg) has written every copy (a
 * reader that follows a new slot must find the bytes there).  move returns
 * 0 on failure (the walk stops); commit returns 0 or -errno.  Returns slots
 * re-pointed or -errno (then no slot changed).  Writer only; cost
 * O(distinct nodes). */
typedef uint64_t (*tree_move_fn)(void *arg, uint64_t old);
typedef int (*tree_commit_fn)(void *arg);
int64_t tree_relocate(struct tree *const *trees, unsigned n, struct alloc *a, const uint8_t *victim,
                      tree_move_fn move, tree_commit_fn commit, void *arg);

/* Comparing trees.
 *
 * The rule that makes a comparison of mappings a comparison of data: two
 * trees hold the same bytes at an LBA exactly when their leaves hold the
 * same physical block there (or both a hole), provided no write happened
 * to it in between.  A write never rewrites a block in place: it maps a
 * freshly allocated block (a partial write merges into a fresh one too),
 * so a block written after two trees split is a number the other tree
 * cannot hold.  A physical block is never reused while any tree references
 * it (nor within an RCU grace period after), so equal numbers read in one
 * read-side section are the same bytes.  Sharing (snapshot, clone,
 * rollback, copying a node before a change) passes numbers on unchanged.
 * The one thing besides a write that changes a slot is compaction, and it
 * changes every slot holding a moved block, in every tree, to the same
 * copy in one pass (a damaged block stays where it is in all of them); the
 * trees' seq brackets the re-pointing, and readers retry a comparison
 * that overlapped it (tree_read_begin / tree_read_retry).  Hence: a block
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
 * from both, are skipped without being read.  *visits, if not NULL, grows
 * by the node pairs visited (the cost).  Returns 0, fn's nonzero value,
 * or -EINVAL if the levels differ.  Caller holds rcu_read_lock(); never
 * blocks. */
int tree_diff(const struct tree *a, const struct tree *b, uint64_t lo, uint64_t hi, tree_diff_fn fn,
              void *arg, uint64_t *visits);

/* A run of n blocks from lba of equal depth (see tree_depth). */
typedef int (*tree_depth_fn)(void *arg, uint64_t lba, uint64_t n, uint32_t depth);

/* Allocation depth along a chain of trees (chain[0] the volume, chain[k]
 * the snapshot its k-th ancestor was cloned from; all of equal levels):
 * 0 for a hole in chain[0], else 1 + the number of trees after chain[0]
 * that hold the same block, counted while they do (so 1 = written in
 * chain[0], 2 = inherited from chain[1], ...).  Calls fn for runs over
 * [lo, hi) in LBA order (runs may touch).  Returns 0, fn's nonzero value,
 * -EINVAL (levels differ) or -ENOMEM.  Caller holds rcu_read_lock(); cost
 * the nodes of chain[0] in the range, times n. */
int tree_depth(const struct tree *const *chain, unsigned n, uint64_t lo, uint64_t hi,
               tree_depth_fn fn, void *arg);

/* Seqcount read side for the comparisons above: tree_read_begin waits
 * out a relocation in progress and returns the count; tree_read_retry is
 * true if one ran since (discard what was read and walk again). */
uint32_t tree_read_begin(const struct tree *t);
bool tree_read_retry(const struct tree *t, uint32_t seq);

/* Load a tree from disk.  read(arg, addr, out) reads and validates one node
 * block (0 or -errno).  Nodes reached twice (shared) are loaded once: the
 * loader keeps a map from disk block to node across calls. */
struct tree_loader;
typedef int (*tree_read_fn)(void *arg, uint64_t addr, struct fmt_node *out);
struct tree_loader *tree_loader_new(struct alloc *a, tree_read_fn read, void *arg);
int tree_load(struct tree_loader *l, struct tree *t, uint64_t root_addr, unsigned levels);
void tree_loader_free(struct tree_loader *l);

/* Offline checker: walks every distinct node reachable from trees[0..n),
 * checks each node's level, slot counts and reference count, and adds one
 * to bref[b] (nblocks entries) for every reference to block b (leaf slots
 * and nodes' on-disk copies), for the caller to compare with the
 * allocator.  Returns problems found (each reported with say_error). */
int tree_check_all(struct tree *const *trees, unsigned n, uint64_t nblocks, uint32_t *bref);

/* Distinct dirty nodes reachable from trees[0..n): what
 * alloc_meta_pending() must equal (a checker; O(distinct nodes)). */
uint64_t tree_dirty_nodes(struct tree *const *trees, unsigned n);

#endif
