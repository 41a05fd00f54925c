/* check.c — the offline consistency check behind cowbd-check, over a store
 * opened read-only: checksums were verified while loading; this recounts
 * every block reference from the trees and the checkpoint and compares
 * them with the allocator, verifies the CRC of every live data block
 * against the summary that describes it, and checks the volume table.
 *
 * Every problem is counted by kind through say_problem (say.h), which
 * prints the first few of each kind; cowbd-check prints the rest as
 * "... and M more" and the summary.
 *
 * Layer: the top of the store beside store.c; over vtab, tree, log,
 * alloc.  Locks: none (no threads write a read-only store). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "fwd.h"
#include "map.h"
#include "say.h"
#include "store_int.h"

/* Walk the batches of every segment holding live blocks (they lie
 * contiguous from the segment's first block) and verify the CRC of each
 * live data block; every live block must be described by some summary.
 * A stale batch from a segment's earlier life can only follow the current
 * ones, so it only describes blocks that are not live. */
static int check_segments(struct store *st)
{
	struct fmt_summary *s = malloc(sizeof(*s));
	char *blk = malloc(FMT_BLOCK);
	uint8_t *seen = malloc(FMT_SEG_BLOCKS);
	uint64_t verified = 0;
	int bad = 0;

	if (!s || !blk || !seen) {
		say_problem("checks that could not run", 1,
		            "check: out of memory: data blocks not verified");
		bad = 1;
		goto out;
	}
	for (uint64_t seg = 1; seg < st->nsegs; seg++) {
		if (!alloc_seg_live(st->a, seg))
			continue;
		if (alloc_seg_load(st->a, seg)) { /* its counts stay on disk */
			say_problem("count pages that cannot be read", 1,
			            "check: segment %llu: its reference counts cannot be read",
			            (unsigned long long)seg);
			bad++;
			continue;
		}
		uint64_t base = seg * FMT_SEG_BLOCKS;
		memset(seen, 0, FMT_SEG_BLOCKS);
		for (uint64_t pos = base; log_seg_next(st->io, seg, pos, s) > 0;
		     pos += 1 + s->nblocks) {
			struct log_walk w = {0};
			const struct fmt_entry *e;
			uint64_t b;
			seen[pos - base] = 1;
			while ((e = log_entry_next(s, pos, &w, &b))) {
				if (!b)
					continue;
				seen[b - base] = 1;
				if ((e->type != FMT_E_DATA && e->type != FMT_E_MOVE &&
				     e->type != FMT_E_MOVE2) ||
				    !alloc_blk_refs(st->a, b))
					continue;
				if (segio_read_block(st->io, blk, b) ||
				    crc32c(0, blk, FMT_BLOCK) != e->crc) {
					if (e->type == FMT_E_MOVE2)
						say_problem(
						    "bad data checksums", 1,
						    "check: data block %llu (the compactor's copy "
						    "of pool block %llu) fails its checksum",
						    (unsigned long long)b,
						    (unsigned long long)e->lba);
					else
						say_problem(
						    "bad data checksums", 1,
						    "check: data block %llu (volume %u block %llu) "
						    "fails its checksum",
						    (unsigned long long)b, e->vol,
						    (unsigned long long)e->lba);
					bad++;
				} else {
					verified++;
				}
			}
		}
		for (uint64_t b = base; b < base + FMT_SEG_BLOCKS; b++)
			if (alloc_blk_refs(st->a, b) && !seen[b - base]) {
				say_problem("live blocks no summary describes", 1,
				            "check: live block %llu is described by no summary",
				            (unsigned long long)b);
				bad++;
			}
	}
	say_info("check: verified %llu live data blocks", (unsigned long long)verified);
out:
	free(s);
	free(blk);
	free(seen);
	return bad;
}

/* Counts recounted per pass at most: 1 GiB of them.  A larger pool is
 * checked in several passes over ranges of its blocks, each walking every
 * tree (tests lower it to see several passes). */
uint64_t check_span_blocks = 1ull << 28;

/* Recount every reference from the trees and the checkpoint; compare,
 * range by range of the pool's blocks (whole segments) when one count per
 * block does not fit. */
static int check_refs(struct store *st)
{
	uint64_t nblocks = alloc_nblocks(st->a), span = nblocks;
	uint32_t *want = NULL;
	unsigned n;
	struct tree **trees = vtab_trees(st, &n);
	int bad = 0;

	if (span > check_span_blocks)
		span = check_span_blocks / FMT_SEG_BLOCKS * FMT_SEG_BLOCKS;
	while (trees && !(want = calloc(span, sizeof(*want))) && span > FMT_SEG_BLOCKS)
		span = span / 2 / FMT_SEG_BLOCKS * FMT_SEG_BLOCKS;
	if (!want || !trees) {
		say_problem("checks that could not run", 1,
		            "check: out of memory: references not recounted");
		free(trees);
		return 1;
	}
	if (span < nblocks)
		say_info("check: recounting references in %llu passes of %llu blocks",
		         (unsigned long long)((nblocks + span - 1) / span),
		         (unsigned long long)span);
	/* the checkpoint's own blocks (record, count pages, segment tables,
	 * forwarding chains) are held, not counted: alloc_verify checks them
	 * as its segments' held blocks */
	for (uint64_t lo = 0; lo < nblocks; lo += span) {
		uint64_t hi = nblocks - lo < span ? nblocks : lo + span;
		memset(want, 0, (size_t)(hi - lo) * sizeof(*want));
		bad += tree_check_range(trees, n, st->a, lo, hi, want, lo == 0);
		bad += alloc_verify_range(st->a, lo / FMT_SEG_BLOCKS, hi / FMT_SEG_BLOCKS, want);
	}
	free(trees);
	free(want);
	return bad;
}

/* The forwarding map (fwd.h): every copy belongs to one name, lies in a
 * segment in use, and still has a reference (an entry whose copy died
 * since the last checkpoint is pruned by the next one: said, not a
 * problem).  Whether each name resolves is tree_check_all's part. */
static int check_fwd(struct store *st)
{
	struct fwd *f = alloc_fwd(st->a);
	struct map seen = {0};
	uint64_t dead = 0;
	int bad = 0;

	for (uint64_t seg = 1; seg < st->nsegs; seg++) {
		struct fwd_ent *e;
		size_t n;
		int err = fwd_seg_get(f, seg, &e, &n);
		if (err == -ENOMEM) {
			say_problem("checks that could not run", 1,
			            "check: out of memory: forwarding map not checked");
			map_clear(&seen);
			return bad + 1;
		}
		if (err) {
			say_problem("forwarding tables that cannot be read", 1,
			            "check: the forwarding tables of segment %llu cannot be read: "
			            "blocks moved out of it cannot be found",
			            (unsigned long long)seg);
			bad++;
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			uint64_t name = fwd_make(seg * FMT_SEG_BLOCKS + e[i].idx, e[i].tag);
			uint64_t other = (uint64_t)(uintptr_t)map_get(&seen, e[i].blk);
			if (other) {
				say_problem(
				    "copies two names forward to", 1,
				    "check: pool block %llu is where both block %llu (tag %u) "
				    "and block %llu (tag %u) are said to be",
				    (unsigned long long)e[i].blk,
				    (unsigned long long)fwd_addr(other), fwd_tag(other),
				    (unsigned long long)fwd_addr(name), fwd_tag(name));
				bad++;
			} else if (map_put(&seen, e[i].blk, (void *)(uintptr_t)name)) {
				bad++;
			}
			if (!alloc_seg_used(st->a, alloc_seg_of(e[i].blk))) {
				say_problem(
				    "forwarding into free segments", 1,
				    "check: block %llu (tag %u) is forwarded to pool block %llu, "
				    "in a free segment",
				    (unsigned long long)fwd_addr(name), fwd_tag(name),
				    (unsigned long long)e[i].blk);
				bad++;
			} else if (alloc_seg_load(st->a, alloc_seg_of(e[i].blk)) == 0 &&
			           !alloc_blk_refs(st->a, e[i].blk)) {
				dead++;
			}
		}
		free(e);
	}
	map_clear(&seen);
	say_info("check: %llu forwarded blocks in %llu segments%s",
	         (unsigned long long)fwd_entries(f), (unsigned long long)fwd_segments(f),
	         dead ? " (some dead: the next checkpoint prunes them)" : "");
	return bad;
}

static int check_all(struct store *st)
{
	int bad;

	say_problems_reset(); /* the caller's summary counts this check only */
	bad = check_refs(st);
	bad += check_fwd(st);
	bad += check_segments(st);
	if (st->ck.bitmap_mismatch) {
		say_problem(
		    "segments the checkpoint bitmap marks free", st->ck.bitmap_mismatch,
		    "check: %u segments hold live blocks but the checkpoint bitmap marks them free",
		    st->ck.bitmap_mismatch);
		bad += (int)st->ck.bitmap_mismatch;
	}
	const char *why = vtab_check(st);
	if (why) {
		say_problem("volume table indexes", 1, "check: volume table: %s", why);
		bad++;
	}
	for (struct volume *v = st->vt.list; v; v = v->next) {
		if (v->snapshot && !vtab_find_id(st, v->parent_id)) {
			say_problem("snapshots of missing volumes", 1,
			            "check: snapshot %llu belongs to missing volume %llu",
			            (unsigned long long)v->id, (unsigned long long)v->parent_id);
			bad++;
		}
	}
	return bad;
}

/* On a running store the check is a job on the log thread: nothing moves
 * under it (no round, checkpoint or compaction runs meanwhile). */
struct check_job {
	struct store_req req; /* first: the job gets it back */
	struct store *st;
};

static int check_run(struct store_req *r)
{
	struct check_job *j = (struct check_job *)r;
	ckpt_wait(j->st); /* a checkpoint in flight holds references of its own */
	return check_all(j->st);
}

static void check_submit(struct store_req *r)
{
	struct check_job *j = (struct check_job *)r;
	writer_enqueue(j->st, r);
}

int store_check(struct store *st)
{
	if (!st->wr.running)
		return check_all(st);
	struct check_job j = {.req = {.job = check_run}, .st = st};
	int n = core_submit_wait(&j.req, check_submit);
	return n;
}
