/* treeref.c — the reference-count oracle (see treeref.h). */
#include <stdio.h>
#include <stdlib.h>

#include "fwd.h"
#include "map.h"
#include "treeref.h"

/* Distinct nodes seen (by address -> index + 1 in node[]) and how often
 * each was referenced. */
struct seen {
	struct map idx;
	const struct tree_node **node;
	uint32_t *refs;
	size_t n, cap;
};

static void oom(void)
{
	fprintf(stderr, "treeref: out of memory\n");
	abort();
}

/* Count one more reference to n; on its first visit, its children's and
 * (unless bref is NULL) its blocks' references. */
/* The block a name is at now (0 if it resolves nowhere: counted nowhere,
 * so the comparison with the allocator shows it). */
static uint64_t where(const struct alloc *a, uint64_t name)
{
	uint64_t blk;
	return fwd_resolve(alloc_fwd(a), name, &blk) ? 0 : blk;
}

static void recount(const struct alloc *a, const struct tree_node *n, struct seen *s,
                    uint32_t *bref)
{
	uintptr_t i = (uintptr_t)map_get(&s->idx, (uint64_t)(uintptr_t)n);

	if (n->disk && bref)
		bref[where(a, n->disk)]++; /* a node's block: once per reference to it */
	if (i) {
		s->refs[i - 1]++;
		return;
	}
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 256;
		s->node = realloc(s->node, s->cap * sizeof(*s->node));
		s->refs = realloc(s->refs, s->cap * sizeof(*s->refs));
		if (!s->node || !s->refs)
			oom();
	}
	s->node[s->n] = n;
	s->refs[s->n++] = 1;
	if (map_put(&s->idx, (uint64_t)(uintptr_t)n, (void *)(uintptr_t)s->n))
		oom();
	for (unsigned k = 0; k < FMT_FANOUT; k++)
		if (n->level == 0 && n->phys[k] && bref)
			bref[where(a, n->phys[k])]++;
		else if (n->level > 0 && n->child[k])
			recount(a, n->child[k], s, bref);
}

static void walk(const struct alloc *a, struct tree *const *trees, unsigned n, struct seen *s,
                 uint32_t *bref)
{
	for (unsigned i = 0; i < n; i++)
		if (trees[i]->root)
			recount(a, trees[i]->root, s, bref);
}

static void seen_free(struct seen *s)
{
	map_clear(&s->idx);
	free(s->node);
	free(s->refs);
}

int treeref_check(struct tree *const *trees, unsigned n, const struct alloc *a,
                  const uint32_t *extra)
{
	uint64_t nb = alloc_nblocks(a);
	uint32_t *bref = calloc(nb, sizeof(*bref)), *mine = calloc(nb, sizeof(*mine));
	struct seen seen = {0};
	int bad;

	if (!bref || !mine)
		oom();
	/* The store's checkers. */
	bad = tree_check_all(trees, n, a, bref);
	for (uint64_t b = 0; extra && b < nb; b++)
		bref[b] += extra[b];
	bad += alloc_verify(a, bref);
	/* Ours. */
	walk(a, trees, n, &seen, mine);
	for (size_t i = 0; i < seen.n; i++) {
		const struct tree_node *tn = seen.node[i];
		/* A written node's count is its block's (compared below). */
		if (!tn->disk && tn->ref != seen.refs[i]) {
			fprintf(stderr, "treeref: node %p level %u: ref %u, referenced %u times\n",
			        (const void *)tn, tn->level, tn->ref, seen.refs[i]);
			bad++;
		}
	}
	for (uint64_t b = 0; b < nb; b++) {
		uint32_t want = mine[b] + (extra ? extra[b] : 0);
		if (b == 0 ? mine[0] != 0 : want != alloc_blk_refs(a, b)) {
			fprintf(stderr, "treeref: block %llu: %u references, allocator says %u\n",
			        (unsigned long long)b, want, alloc_blk_refs(a, b));
			bad++;
		}
	}
	if (!alloc_check(a)) {
		fprintf(stderr, "treeref: alloc_check fails\n");
		bad++;
	}
	seen_free(&seen);
	free(bref);
	free(mine);
	return bad;
}

uint64_t treeref_nodes(struct tree *const *trees, unsigned n)
{
	struct seen seen = {0};

	walk(NULL, trees, n, &seen, NULL);
	uint64_t count = seen.n;
	seen_free(&seen);
	return count;
}

uint64_t treeref_lookup(const struct tree *t, uint64_t lba)
{
	uint64_t phys;
	urcu_memb_read_lock();
	int err = tree_lookup(t, lba, true, &phys);
	urcu_memb_read_unlock();
	if (err) {
		fprintf(stderr, "treeref: lookup of block %llu: error %d\n",
		        (unsigned long long)lba, err);
		abort();
	}
	return phys;
}
