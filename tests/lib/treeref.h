/* treeref.h — the reference-count oracle for tests of the tree, the
 * compactor and whatever else shares tree nodes (no cmocka).
 *
 * Two opinions on "every count is exactly right": the store's own checkers
 * (tree_check_all, then alloc_verify on what it recounted, and
 * alloc_check), and an independent recount written here: a walk of every
 * distinct node reachable from the trees that counts each node's parents
 * and roots and each block's references (leaf slots and nodes' on-disk
 * copies), compared with every node's ref and every block's count in the
 * allocator.  Writer side only: call it when no tree is changing.
 */
#ifndef COWBD_TEST_TREEREF_H
#define COWBD_TEST_TREEREF_H
#include <stdint.h>

#include "alloc.h"
#include "tree.h"

/* Problems found (each printed on stderr), 0 when both opinions agree
 * with the counts.  extra: references the caller holds itself outside the
 * trees (alloc_nblocks entries), or NULL. */
int treeref_check(struct tree *const *trees, unsigned n, const struct alloc *a,
                  const uint32_t *extra);

/* tree_lookup of a tree all in memory, as a reader (inside its own
 * rcu_read_lock, never blocking); aborts if a node is away or damaged. */
uint64_t treeref_lookup(const struct tree *t, uint64_t lba);

/* Distinct nodes reachable from trees[0..n). */
uint64_t treeref_nodes(struct tree *const *trees, unsigned n);

#endif
