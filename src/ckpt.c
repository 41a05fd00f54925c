/* ckpt.c — checkpoints: the record (volume table + segment bitmap) encoded
 * and decoded, writing one (dirty tree nodes children first, the record,
 * a sync, then the superblock flip) and loading one at open.
 *
 * Writing is two steps: ckpt_pre_commit makes nodes and record durable in
 * the log; ckpt_commit flips the superblock to them and only then lets the
 * old checkpoint's blocks and the segments that died before it go.
 *
 * The periodic checkpoint keeps the sync off the write path (ckpt_begin):
 * the log thread writes nodes and record into the log, takes references on
 * the record's blocks and marks the segments dead at that moment; a
 * committer thread syncs, writes the superblock naming it (a copy: the log
 * thread never waits for it) and waits for an RCU grace period; the log
 * thread, between rounds, then drops the old checkpoint's blocks and frees
 * the marked segments (ckpt_poll).  Before it, with many dirty nodes and
 * pages, the log thread writes the dirty leaves, then the dirty count
 * pages, a slice per round (ckpt_precopy), so that ckpt_begin, while writes
 * wait, writes only the leaves and pages changed since, the inner nodes
 * and the tables.  Writes and flushes go on meanwhile:
 * they follow the record in the log, so a crash before the flip replays
 * them after the old checkpoint, and after it after the new one.  Blocks
 * that die meanwhile wait for the next checkpoint.  One checkpoint is in
 * flight at a time; ckpt_write (space policy, control, close) and the
 * compactor first wait for it.  The log thread's time on checkpoints adds
 * up in stats.ckpt_log_ns; the committer's sync and superblock write come
 * back with its result and add up in stats.ckpt_sync_ns.
 *
 * Layer: under space, writer, store_ctl, recover and store; over vtab,
 * super, core, tree, log and alloc.  Locks: the log thread (or the
 * single-threaded opener) owns everything but struct ckpt_bg's hand-over
 * fields, which its lock guards. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/urcu-memb.h>

#include "cpage.h"
#include "crc32c.h"
#include "say.h"
#include "store_int.h"

/* Node blocks buffered before a checkpoint writes them out. */
#define SCRATCH_COMMIT 2048

/* Segment tables of a pool of that version (version 3 on). */
static uint64_t nstab_v(uint64_t nsegs, uint32_t version)
{
	unsigned per = cpage_stab_entries(version);
	return (nsegs + per - 1) / per;
}

static uint64_t nstab_of(uint64_t nsegs)
{
	return nstab_v(nsegs, FMT_VERSION);
}

/* The segment tables' addresses (version 3 on). */
static size_t map_bytes(uint64_t nsegs)
{
	return nstab_of(nsegs) * sizeof(uint64_t);
}

/* A version 2 record's segment bitmap (loading an older pool). */
static size_t v2_map_bytes(uint64_t nsegs)
{
	return (nsegs + 7) / 8;
}

/* Volume table blocks that slots 0 .. n-1 take (version 4). */
static uint64_t nvtab_of(uint64_t n)
{
	return (n + FMT_VTAB_ENTRIES - 1) / FMT_VTAB_ENTRIES;
}

/* A version 4 record: header, the volume table blocks' addresses, the
 * segment tables' addresses. */
static size_t record_bytes(uint64_t nvtab, uint64_t nsegs)
{
	return sizeof(struct fmt_ckpt) + nvtab * sizeof(uint64_t) + map_bytes(nsegs);
}

static const size_t record_room = (size_t)CKPT_MAX_BLOCKS * FMT_BLOCK;

unsigned ckpt_max_vols(uint64_t nsegs)
{
	size_t fixed = record_bytes(0, nsegs);
	uint64_t n =
	    fixed < record_room ? (record_room - fixed) / sizeof(uint64_t) * FMT_VTAB_ENTRIES : 0;
	return n < STORE_MAX_VOLS ? (unsigned)n : STORE_MAX_VOLS;
}

uint64_t ckpt_max_segs(unsigned min_vols)
{
	size_t room = record_room - record_bytes(nvtab_of(min_vols), 0);
	/* one segment table address per FMT_STAB_ENTRIES5 segments (an older
	 * pool's bitmap took a bit per segment, its tables held twice as
	 * many segments: those were made smaller) */
	return (uint64_t)(room / sizeof(uint64_t)) * FMT_STAB_ENTRIES5;
}

unsigned ckpt_record_blocks(const struct store *st, uint64_t nvols)
{
	/* volumes take the lowest free slots: nvols of them fill at most
	 * nvtab_of(nvols) blocks beyond those in use */
	uint64_t nvtab = nvtab_of(nvols) > st->ck.nvblk ? nvtab_of(nvols) : st->ck.nvblk;
	return (unsigned)((record_bytes(nvtab, st->nsegs) + FMT_BLOCK - 1) / FMT_BLOCK);
}

/* A checkpoint handed to the committer, not finished by the log thread
 * (ckpt_bg.busy, which only the log thread changes). */
static bool in_flight(const struct store *st);

bool ckpt_due(const struct store *st)
{
	if (st->failed || !st->ck.dirty || in_flight(st))
		return false;
	if ((log_blocks_written(st->log) - st->ck.log_blocks_at) * FMT_BLOCK >=
	    st->ck.interval_bytes)
		return true;
	return time(NULL) - st->ck.last >= (time_t)st->ck.interval_secs;
}

unsigned ckpt_segments(const struct store *st, uint64_t *out)
{
	for (unsigned i = 0; i < st->ck.nblocks; i++)
		out[i] = alloc_seg_of(st->ck.blocks[i]);
	return st->ck.nblocks;
}

/* One sealed block (a node, count page, segment table or forwarding
 * block: it starts with magic, crc, self) into the log through a scratch
 * block; its address, or 0 with st->ck.emit_err set. */
static uint64_t emit_sealed(struct store *st, const struct fmt_entry *e, const void *img)
{
	void *blk;
	uint64_t addr;

	if (core_scratch_used(st) >= SCRATCH_COMMIT) {
		if ((st->ck.emit_err = log_commit(st->log)))
			return 0;
		core_scratch_reset(st);
	}
	blk = core_scratch_get(st);
	if (!blk) {
		st->ck.emit_err = -ENOMEM;
		return 0;
	}
	memcpy(blk, img, FMT_BLOCK);
	if ((st->ck.emit_err = log_add(st->log, e, blk, &addr)))
		return 0;
	cpage_seal(blk, addr);
	return addr;
}

/* tree_write_dirty's emitter: one node image into the log. */
static uint64_t emit_node(void *arg, struct fmt_node *img)
{
	struct fmt_entry e = {.type = FMT_E_NODE, .count = 1};
	return emit_sealed(arg, &e, img);
}

/* One volume's record (all of it written: records are compared). */
static void vol_encode(const struct volume *v, struct fmt_vol *fv)
{
	memset(fv, 0, sizeof(*fv));
	fv->id = v->id;
	fv->size = v->size;
	fv->root = tree_root_addr(&v->tree);
	fv->parent = v->parent_id;
	fv->origin = v->origin_id;
	fv->created = v->created;
	fv->levels = (uint8_t)v->tree.levels;
	fv->flags = v->snapshot ? FMT_VOL_SNAPSHOT : 0;
	uint64_t total = tree_total(&v->tree);
	for (unsigned k = 0; k < sizeof(fv->total); k++)
		fv->total[k] = (uint8_t)(total >> (8 * k));
	snprintf(fv->name, sizeof(fv->name), "%s", v->name);
}

/* The record: header, the volume table blocks, the segment tables. */
static void encode_record(struct store *st, uint8_t *rec)
{
	struct fmt_ckpt *h = (struct fmt_ckpt *)rec;
	uint64_t *a = (uint64_t *)(rec + sizeof(*h));

	h->magic = FMT_CKPT_MAGIC;
	h->version = FMT_VERSION;
	h->lsn = log_lsn(st->log);
	h->next_vol_id = st->vt.next_id;
	h->nvols = st->vt.n;
	h->nsegs = st->nsegs;
	h->head_seg = log_head_seg(st->log);
	h->nvtab = st->ck.nvblk;
	if (st->ck.nvblk) /* no volume: no table, maybe no array */
		memcpy(a, st->ck.vblk, st->ck.nvblk * sizeof(*a));
	memcpy(a + st->ck.nvblk, st->ck.stab, map_bytes(st->nsegs));
}

/* A checkpoint made durable in the log but not yet named by the
 * superblock. */
struct pending_ckpt {
	uint64_t sum_addr, lsn;
	uint32_t crc;
	uint64_t addrs[CKPT_MAX_BLOCKS];
	unsigned nblk;
};

/* Write every dirty node, children first. */
static int load_page(void *arg, uint64_t seg, uint32_t *counts);
static int load_fwd(void *arg, uint64_t seg, struct fwd_ent **e, size_t *n);

/* ---- the space map on disk (version 3) ---------------------------------
 *
 * Counts live in count pages, one per segment that has a counted block,
 * and the segment tables say where each page is and how many counted
 * blocks each segment has (cpage.h).  Pages, tables and the record are
 * held, not counted (alloc_meta_hold): writing them changes no count, so
 * a checkpoint writes the nodes (which changes counts), then the pages of
 * every segment whose counts changed, then the tables that name a new
 * page, then the record naming every table.  Each replaces the block it
 * supersedes, which is released (its segment dies at a later checkpoint,
 * as a node's old copy does). */

/* The arrays, once per store (every table dirty: the first checkpoint
 * writes them all). */
static int map_init(struct store *st)
{
	if (st->ck.pg0)
		return 0;
	st->ck.nstab = nstab_of(st->nsegs);
	st->ck.pg0 = calloc(st->nsegs, sizeof(uint64_t));
	st->ck.pg1 = calloc(st->nsegs, sizeof(uint64_t));
	st->ck.stab = calloc(st->ck.nstab, sizeof(uint64_t));
	st->ck.stab_dirty = malloc(st->ck.nstab);
	st->ck.counts = malloc(FMT_SEG_BLOCKS * sizeof(uint32_t));
	st->ck.chain = calloc(st->nsegs, sizeof(*st->ck.chain));
	st->ck.chain_in = calloc(st->nsegs, sizeof(*st->ck.chain_in));
	if (!st->ck.pg0 || !st->ck.pg1 || !st->ck.stab || !st->ck.stab_dirty || !st->ck.counts ||
	    !st->ck.chain || !st->ck.chain_in) {
		ckpt_free(st);
		return -ENOMEM;
	}
	memset(st->ck.stab_dirty, 1, st->ck.nstab);
	alloc_set_loader(st->a, load_page, st);
	fwd_set_loader(alloc_fwd(st->a), load_fwd, st);
	return 0;
}

void ckpt_free(struct store *st)
{
	for (uint64_t s = 0; st->ck.chain && s < st->nsegs; s++)
		free(st->ck.chain[s].blk);
	free(st->ck.chain);
	free(st->ck.chain_in);
	st->ck.chain = NULL;
	st->ck.chain_in = NULL;
	st->ck.nchain = 0;
	free(st->ck.pg0);
	free(st->ck.pg1);
	free(st->ck.stab);
	free(st->ck.stab_dirty);
	free(st->ck.counts);
	free(st->ck.vblk);
	free(st->ck.vrec);
	free(st->ck.vblk_dirty);
	free(st->ck.pre_ids);
	st->ck.pre_ids = NULL;
	st->ck.pre_n = 0;
	st->ck.pg0 = st->ck.pg1 = st->ck.stab = st->ck.vblk = NULL;
	st->ck.stab_dirty = st->ck.vblk_dirty = NULL;
	st->ck.counts = NULL;
	st->ck.vrec = NULL;
	st->ck.nvblk = st->ck.vcap = 0;
}

static void stab_mark(struct store *st, uint64_t t)
{
	st->ck.stab_dirty[t] = 1;
}

/* addr replaces *slot as a held block (0: none). */
static void map_replace(struct store *st, uint64_t *slot, uint64_t addr)
{
	if (addr)
		alloc_meta_hold(st->a, addr);
	if (*slot)
		alloc_meta_release(st->a, *slot);
	*slot = addr;
}

uint64_t ckpt_map_blocks(const struct store *st)
{
	/* No estimate per write: any count of any segment in use may change
	 * before the next checkpoint (a copied leaf counts every block it
	 * names again), and that checkpoint then writes the segment's page,
	 * two blocks if wide, and every table: 0.2% of the pool in use.
	 * Forwarding chains: the next checkpoint may rewrite every one
	 * (the compactor moving them, or pruning), and the entries the
	 * compactor added since the last may each open a new table. */
	uint64_t nvtab =
	    nvtab_of(st->vt.n + 1) > st->ck.nvblk ? nvtab_of(st->vt.n + 1) : st->ck.nvblk;
	uint64_t added = fwd_added(alloc_fwd(st->a));
	return 2 * (st->nsegs - alloc_nfree(st->a)) + nstab_of(st->nsegs) + nvtab + st->ck.nchain +
	       added;
}

/* ---- forwarding chains read back -------------------------------------- */

/* (tag, idx) order: a before b. */
static bool ent_before(const struct fwd_ent *a, const struct fwd_ent *b)
{
	return a->tag < b->tag || (a->tag == b->tag && a->idx < b->idx);
}

/* Read seg's chain from head: its entries into *e (grown; *n of them),
 * its blocks into *blk (*nb).  A chain's entries strictly increase, so a
 * cycle ends at its first repeat; a chain has at most a block per 504
 * entries plus one per table, each entry a distinct block of the pool and
 * each table a distinct tag.  Any thread (its own buffer).  0, -EILSEQ
 * (*why, *at: the block) or -errno. */
static int read_chain(struct store *st, uint64_t seg, uint64_t head, struct fwd_ent **e, size_t *n,
                      uint64_t **blk, uint32_t *nb, uint64_t *at, const char **why)
{
	uint64_t nblocks = alloc_nblocks(st->a);
	uint64_t max = nblocks / FMT_FWD_ENTRIES + (nblocks < FMT_TAG_MAX ? nblocks : FMT_TAG_MAX);
	struct fmt_fwd *img = NULL;
	int err = 0;

	if (posix_memalign((void **)&img, FMT_BLOCK, FMT_BLOCK))
		return -ENOMEM;
	for (*at = head; *at && !err;) {
		if (*nb >= max) {
			*why = "forwarding chain longer than the pool allows";
			err = -EILSEQ;
			break;
		}
		struct fwd_ent *ge = realloc(*e, (*n + FMT_FWD_ENTRIES) * sizeof(**e));
		uint64_t *gb = ge ? realloc(*blk, (*nb + 1) * sizeof(**blk)) : NULL;
		if (ge)
			*e = ge;
		if (!gb) {
			err = -ENOMEM;
			break;
		}
		*blk = gb;
		unsigned k;
		uint64_t next;
		err = segio_read_block(st->io, img, *at);
		if (!err)
			err = cpage_fwd_decode(img, *at, seg, nblocks, *e + *n, &k, &next, why);
		if (!err && *n && !ent_before(&(*e)[*n - 1], &(*e)[*n])) {
			*why = "forwarding chain out of order (or a cycle)";
			err = -EILSEQ;
		}
		if (err)
			break;
		(*blk)[(*nb)++] = *at;
		*n += k;
		*at = next;
	}
	free(img);
	return err;
}

/* Read seg's chain, saying what is wrong with a damaged one (once while
 * the same chain keeps failing).  Any thread. */
static int read_chain_said(struct store *st, uint64_t seg, uint64_t head, struct fwd_ent **e,
                           size_t *n, uint64_t **blk, uint32_t *nb)
{
	static uint64_t last_bad; /* a chain's head; a racy hint, for the log only */
	const char *why = "cannot be read";
	uint64_t at = head;
	int err = read_chain(st, seg, head, e, n, blk, nb, &at, &why);
	if (err && err != -ENOMEM && __atomic_exchange_n(&last_bad, head, __ATOMIC_RELAXED) != head)
		say_error(
		    "the forwarding chain of segment %llu, block %llu: %s (cowbd-check reports "
		    "what else is damaged)",
		    (unsigned long long)seg, (unsigned long long)at,
		    err == -EILSEQ ? why : strerror(-err));
	return err;
}

/* The map's loader (fwd.h): seg's entries from its chain as the last
 * checkpoint wrote it.  Any thread: head is published by chain_replace,
 * and a segment is loaded only while the writer leaves its chain alone. */
static int load_fwd(void *arg, uint64_t seg, struct fwd_ent **e, size_t *n)
{
	struct store *st = arg;
	uint64_t head = __atomic_load_n(&st->ck.chain[seg].head, __ATOMIC_ACQUIRE), *blk = NULL;
	uint32_t nb = 0;
	*e = NULL;
	*n = 0;
	int err = read_chain_said(st, seg, head, e, n, &blk, &nb);
	free(blk);
	if (err) {
		free(*e);
		*e = NULL;
	}
	return err;
}

/* The log thread: seg's chain blocks known (read once if it was found at
 * open), so that they can be released or moved.  0 or -errno. */
static int chain_known(struct store *st, uint64_t seg)
{
	struct ckpt_chain *c = &st->ck.chain[seg];
	struct fwd_ent *e = NULL;
	uint64_t *blk = NULL;
	uint32_t nb = 0;
	size_t n = 0;

	if (c->known || !c->head)
		return 0;
	int err = read_chain_said(st, seg, c->head, &e, &n, &blk, &nb);
	free(e);
	if (err) {
		free(blk);
		return err;
	}
	/* its blocks were held by their segments' counts: now by name */
	c->blk = blk;
	c->n = nb;
	c->known = true;
	return 0;
}

/* Victim v's blocks are about to be freed: every chain with a block there
 * is rewritten by the next checkpoint.  The FWD entries of v's batches
 * name their chains' segments (stale ones too: a chain whose current
 * blocks are elsewhere is left alone). */
static void chains_in_victim(struct store *st, uint64_t v, const uint8_t *victim)
{
	struct fmt_summary *sum = NULL;
	if (!st->ck.chain_in[v] || posix_memalign((void **)&sum, FMT_BLOCK, FMT_BLOCK)) {
		if (st->ck.chain_in[v])
			core_set_failed(st, -ENOMEM, "compaction");
		return;
	}
	int more;
	for (uint64_t pos = v * FMT_SEG_BLOCKS; (more = log_seg_next(st->io, v, pos, sum)) > 0;
	     pos += 1 + sum->nblocks) {
		struct log_walk w = {0};
		const struct fmt_entry *e;
		uint64_t b;
		while ((e = log_entry_next(sum, pos, &w, &b))) {
			if (e->type != FMT_E_FWD || e->lba >= st->nsegs)
				continue;
			struct ckpt_chain *c = &st->ck.chain[e->lba];
			if (chain_known(st, e->lba)) {
				core_set_failed(st, -EIO, "reading a forwarding chain");
				continue;
			}
			for (uint32_t k = 0; k < c->n; k++)
				if (victim[alloc_seg_of(c->blk[k])]) {
					fwd_mark_dirty(alloc_fwd(st->a), e->lba);
					break;
				}
		}
	}
	if (more < 0) /* a chain it names could be missed, and freed with v */
		core_set_failed(st, more, "reading a compaction victim's summaries");
	free(sum);
}

void ckpt_move_map(struct store *st, const uint8_t *victim)
{
	if (!st->ck.pg0)
		return;
	for (uint64_t s = 0; s < st->nsegs; s++)
		if ((st->ck.pg0[s] && victim[alloc_seg_of(st->ck.pg0[s])]) ||
		    (st->ck.pg1[s] && victim[alloc_seg_of(st->ck.pg1[s])]))
			alloc_page_dirty(st->a, s);
	for (uint64_t t = 0; t < st->ck.nstab; t++)
		if (st->ck.stab[t] && victim[alloc_seg_of(st->ck.stab[t])])
			stab_mark(st, t);
	for (uint64_t b = 0; b < st->ck.nvblk; b++)
		if (st->ck.vblk[b] && victim[alloc_seg_of(st->ck.vblk[b])])
			st->ck.vblk_dirty[b] = 1;
	/* Chains with a block in a victim: their owners are named by the
	 * FWD entries that wrote those blocks (a chain found at open is
	 * read here, once, to know its blocks). */
	for (uint64_t v = 1; v < st->nsegs; v++)
		if (victim[v])
			chains_in_victim(st, v, victim);
}

/* Segment s's page as its counts are now (none when all are 0), named
 * in place of the old one; its table is marked for rewriting.  Pages are
 * held, not counted: writing one changes no count. */
static int write_page(struct store *st, uint64_t s)
{
	struct fmt_cpage img[2];
	uint64_t addr[2] = {0, 0};
	int err;

	if ((err = alloc_page_counts(st->a, s, st->ck.counts)))
		return err;
	unsigned nb = cpage_encode(s, st->ck.counts, img);
	for (unsigned k = 0; k < nb; k++) {
		struct fmt_entry e = {.vol = k, .type = FMT_E_CPAGE, .lba = s, .count = 1};
		if (!(addr[k] = emit_sealed(st, &e, &img[k])))
			return st->ck.emit_err;
	}
	map_replace(st, &st->ck.pg0[s], addr[0]);
	map_replace(st, &st->ck.pg1[s], addr[1]);
	stab_mark(st, s / FMT_STAB_ENTRIES5);
	return 0;
}

/* The page of every segment whose counts changed. */
static int write_pages(struct store *st)
{
	uint64_t n = st->nsegs;
	int err;

	for (uint64_t s = alloc_dirty_next(st->a, 0); s < n; s = alloc_dirty_next(st->a, s + 1))
		if ((err = write_page(st, s)))
			return err;
	alloc_pages_clean(st->a);
	return 0;
}

/* The pre-copy's pages: up to *budget dirty pages from *from on, each
 * clean once written (a later change of its counts marks it dirty
 * again, and the checkpoint writes it then).  The log's head and next
 * segments are left to the checkpoint: every write changes their counts.
 * *from becomes UINT64_MAX when the pass is through. */
static int write_pages_ahead(struct store *st, uint64_t *from, unsigned *budget)
{
	uint64_t n = st->nsegs, head = log_head_seg(st->log), next = log_next_seg(st->log);
	uint64_t s;
	int err;

	for (s = alloc_dirty_next(st->a, *from); s < n && *budget;
	     s = alloc_dirty_next(st->a, s + 1)) {
		if (s == head || s == next)
			continue;
		if ((err = write_page(st, s)))
			return err;
		alloc_page_clean(st->a, s);
		(*budget)--;
		st->stats.ckpt_precopy_pages++;
	}
	*from = s < n ? s : UINT64_MAX;
	return 0;
}

/* ---- the forwarding map on disk (version 5) -----------------------------
 *
 * A segment the compactor retired has a life and, while blocks of its old
 * lives are alive elsewhere, forwarding tables (fwd.h); its segment table
 * entry records both, the tables as a chain of forwarding blocks.  Like
 * pages, chains are held, not counted, and a checkpoint rewrites the chain
 * of every segment whose tables or life changed (fwd_dirty_next), after
 * dropping the entries of blocks that died (fwd_prune): after the nodes,
 * whose writing changes counts, and before the tables that name them.
 * Blocks of a chain are written last first, so each can name the next. */

/* One chain block held (+1) or released (-1): the segment it lies in
 * counts it, and that segment's table says so at the next checkpoint. */
static void chain_hold(struct store *st, uint64_t blk, int d)
{
	uint64_t seg = alloc_seg_of(blk);
	if (d > 0)
		alloc_meta_hold(st->a, blk);
	else
		alloc_meta_release(st->a, blk);
	st->ck.chain_in[seg] = (uint32_t)((int64_t)st->ck.chain_in[seg] + d);
	st->ck.nchain = (uint64_t)((int64_t)st->ck.nchain + d);
	stab_mark(st, seg / FMT_STAB_ENTRIES5);
}

/* seg's chain becomes blk[0..n-1] (taken; held from now), the old one's
 * blocks released (known: chain_known). */
static void chain_replace(struct store *st, uint64_t seg, uint64_t *blk, uint32_t n)
{
	struct ckpt_chain *c = &st->ck.chain[seg];

	for (uint32_t k = 0; k < n; k++)
		chain_hold(st, blk[k], 1);
	for (uint32_t k = 0; k < c->n; k++)
		chain_hold(st, c->blk[k], -1);
	free(c->blk);
	c->blk = blk;
	c->n = n;
	c->known = true;
	__atomic_store_n(&c->head, n ? blk[0] : 0, __ATOMIC_RELEASE);
}

/* Write seg's entries e[0..n-1] as its new chain (none for n = 0). */
static int write_chain(struct store *st, uint64_t seg, const struct fwd_ent *e, size_t n)
{
	size_t nb = n ? cpage_fwd_blocks(e, n) : 0;
	struct fmt_fwd *img = nb ? malloc(nb * sizeof(*img)) : NULL;
	uint64_t *blk = nb ? malloc(nb * sizeof(*blk)) : NULL;
	int err = !nb || (img && blk) ? 0 : -ENOMEM;

	for (size_t k = 0, at = 0; !err && k < nb; k++)
		at += cpage_fwd_encode(&img[k], seg, e + at, n - at, 0);
	for (size_t k = nb; !err && k-- > 0;) {
		struct fmt_entry fe = {.type = FMT_E_FWD, .lba = seg, .count = 1};
		img[k].next = k + 1 < nb ? blk[k + 1] : 0;
		if (!(blk[k] = emit_sealed(st, &fe, &img[k])))
			err = st->ck.emit_err;
	}
	free(img);
	if (err) {
		free(blk);
		return err;
	}
	chain_replace(st, seg, blk, (uint32_t)nb);
	return 0;
}

/* fwd_prune's judge: the copy at blk still has a reference.  A page that
 * cannot be had says yes (the checkpoint fails on alloc_error anyway). */
static bool copy_live(void *arg, uint64_t blk)
{
	struct store *st = arg;
	return alloc_seg_load(st->a, alloc_seg_of(blk)) || alloc_blk_refs(st->a, blk) > 0;
}

/* The chain of every segment whose tables or life changed; its segment
 * table then. */
static int write_fwd(struct store *st)
{
	struct fwd *f = alloc_fwd(st->a);
	int err = 0;

	fwd_prune(f, copy_live, st); /* -ENOMEM: nothing lost, the next one prunes */
	for (uint64_t s = fwd_dirty_next(f, 0); s < st->nsegs && !err;
	     s = fwd_dirty_next(f, s + 1)) {
		struct fwd_ent *e;
		size_t n;
		if ((err = fwd_seg_get(f, s, &e, &n)))
			break;
		err = chain_known(st, s);
		if (!err)
			err = write_chain(st, s, e, n);
		free(e);
		stab_mark(st, s / FMT_STAB_ENTRIES5);
	}
	if (err)
		return err;
	fwd_clean(f);
	return 0;
}

/* Every table that names a page or chain written since it was, or whose
 * segments' lives changed (or never written, or an older version's). */
static int write_tables(struct store *st)
{
	struct cpage_ent ent[FMT_STAB_ENTRIES5];
	struct fmt_stab5 *img = (struct fmt_stab5 *)&st->ck.img;
	const struct fwd *f = alloc_fwd(st->a);

	for (uint64_t t = 0; t < st->ck.nstab; t++) {
		if (!st->ck.stab_dirty[t])
			continue;
		uint64_t first = t * FMT_STAB_ENTRIES5;
		unsigned n = (unsigned)(st->nsegs - first < FMT_STAB_ENTRIES5 ? st->nsegs - first
		                                                              : FMT_STAB_ENTRIES5);
		for (unsigned k = 0; k < n; k++) {
			const struct ckpt_chain *c = &st->ck.chain[first + k];
			ent[k] = (struct cpage_ent){.page0 = st->ck.pg0[first + k],
			                            .page1 = st->ck.pg1[first + k],
			                            .live = alloc_seg_counted(st->a, first + k),
			                            .life = fwd_life(f, first + k),
			                            .fwd = c->head,
			                            .held = st->ck.chain_in[first + k]};
		}
		cpage_stab5_encode(img, first, n, ent);
		struct fmt_entry e = {.type = FMT_E_STAB, .lba = t, .count = 1};
		uint64_t addr = emit_sealed(st, &e, img);
		if (!addr)
			return st->ck.emit_err;
		map_replace(st, &st->ck.stab[t], addr);
		st->ck.stab_dirty[t] = 0;
	}
	return 0;
}

/* ---- the volume table on disk (version 4) ------------------------------
 *
 * A volume keeps one slot for life, the lowest free one when a checkpoint
 * first meets it: record s % FMT_VTAB_ENTRIES of table block
 * s / FMT_VTAB_ENTRIES.  A checkpoint encodes every record and rewrites
 * only the blocks that differ from what it last wrote or read (or that the
 * compactor moves): O(volumes) in memory, writes in proportion to what
 * changed.  A block none of whose slots is in use is released and listed
 * as 0.  Table blocks are held, like pages. */

static int vtab_grow(struct store *st, uint64_t nblk)
{
	uint64_t cap = st->ck.vcap ? st->ck.vcap : 16, old = st->ck.vcap;

	if (nblk <= old)
		return 0;
	while (cap < nblk)
		cap *= 2;
	uint64_t *blk = realloc(st->ck.vblk, cap * sizeof(*blk));
	if (blk)
		st->ck.vblk = blk;
	struct fmt_vol *rec = blk ? realloc(st->ck.vrec, cap * sizeof(struct fmt_vtab)) : NULL;
	if (rec)
		st->ck.vrec = rec;
	uint8_t *dirty = rec ? realloc(st->ck.vblk_dirty, cap) : NULL;
	if (!dirty)
		return -ENOMEM;
	st->ck.vblk_dirty = dirty;
	memset(blk + old, 0, (cap - old) * sizeof(*blk));
	memset(rec + old * FMT_VTAB_ENTRIES, 0, (cap - old) * sizeof(struct fmt_vtab));
	memset(dirty + old, 0, cap - old);
	st->ck.vcap = cap;
	return 0;
}

/* Give every volume without a slot the lowest free one.  *by (indexed by
 * slot, the caller frees it) says who is where, up to *top (one past the
 * highest slot in use). */
static int vtab_slots(struct store *st, struct volume ***by, uint64_t *top)
{
	uint64_t cap = st->ck.nvblk * FMT_VTAB_ENTRIES, free_at = 0;
	struct volume **slot;

	if (cap < st->vt.n)
		cap = st->vt.n; /* the n-th volume's lowest free slot is < n */
	slot = calloc(cap ? cap : 1, sizeof(*slot));
	if (!slot)
		return -ENOMEM;
	*top = 0;
	for (struct volume *v = st->vt.list; v; v = v->next)
		if (v->slot) {
			slot[v->slot - 1] = v;
			*top = v->slot > *top ? v->slot : *top;
		}
	for (struct volume *v = st->vt.list; v; v = v->next)
		if (!v->slot) {
			while (slot[free_at])
				free_at++;
			slot[free_at] = v;
			v->slot = (uint32_t)(free_at + 1);
			*top = v->slot > *top ? v->slot : *top;
		}
	*by = slot;
	return 0;
}

/* Table block b's records as they are now into img; how many are in use. */
static unsigned vtab_encode(struct volume *const *slot, uint64_t top, uint64_t b,
                            struct fmt_vtab *img)
{
	unsigned used = 0;

	memset(img, 0, sizeof(*img));
	for (unsigned k = 0; k < FMT_VTAB_ENTRIES; k++) {
		uint64_t s = b * FMT_VTAB_ENTRIES + k;
		if (s < top && slot[s]) {
			vol_encode(slot[s], &img->v[k]);
			used++;
		}
	}
	img->magic = FMT_VTAB_MAGIC;
	img->first_slot = b * FMT_VTAB_ENTRIES;
	img->n = used;
	return used;
}

/* Every table block whose records changed. */
static int write_vtab(struct store *st)
{
	struct fmt_vtab *img = (struct fmt_vtab *)&st->ck.img;
	struct volume **slot;
	uint64_t top;
	int err = vtab_slots(st, &slot, &top);

	if (err)
		return err;
	uint64_t nblk = nvtab_of(top), end = nblk > st->ck.nvblk ? nblk : st->ck.nvblk;
	err = vtab_grow(st, end);
	for (uint64_t b = 0; b < end && !err; b++) {
		struct fmt_vol *was = st->ck.vrec + b * FMT_VTAB_ENTRIES;
		unsigned used = vtab_encode(slot, top, b, img);
		if (st->ck.vblk[b] && !st->ck.vblk_dirty[b] && !memcmp(was, img->v, sizeof(img->v)))
			continue;
		uint64_t addr = 0;
		struct fmt_entry e = {.type = FMT_E_VTAB, .lba = b, .count = 1};
		if (used && !(addr = emit_sealed(st, &e, img))) {
			err = st->ck.emit_err;
			break;
		}
		map_replace(st, &st->ck.vblk[b], addr);
		memcpy(was, img->v, sizeof(img->v));
		st->ck.vblk_dirty[b] = 0;
	}
	if (!err)
		st->ck.nvblk = nblk;
	free(slot);
	return err;
}

static void precopy_end(struct store *st)
{
	free(st->ck.pre_ids);
	st->ck.pre_ids = NULL;
	st->ck.pre_n = st->ck.pre_i = 0;
	st->ck.pre_seg = 0;
}

/* Write every dirty node (children first), then the space map. */
static int write_nodes(struct store *st)
{
	struct log *l = st->log;
	int err = map_init(st);

	precopy_end(st); /* whatever it left dirty is written now */

	if (!err)
		err = log_commit(l);
	if (!err && st->ck.upgrade) {
		/* an older pool's images lack totals: its first checkpoint
		 * writes every node (all are in memory: tree_load) */
		unsigned n;
		struct tree **trees = vtab_trees(st, &n);
		err = trees ? tree_dirty_all(trees, n, st->a) : -ENOMEM;
		free(trees);
	}
	st->ck.emit_err = 0;
	for (struct volume *v = st->vt.list; v && !err; v = v->next)
		err = tree_write_dirty(&v->tree, st->a, emit_node, st, &st->ck.img);
	if (err && st->ck.emit_err)
		err = st->ck.emit_err; /* the tree says -EIO for any emit failure */
	if (!err)
		err = write_vtab(st); /* the roots are where they stay */
	if (!err)
		err = write_fwd(st); /* every count is final: the dead are known */
	if (!err)
		err = write_pages(st);
	if (!err)
		err = write_tables(st);
	if (!err && alloc_error(st->a))
		err = alloc_error(st->a); /* a count was lost: nothing may name it */
	/* Whatever was emitted lives in scratch blocks: it reaches the device
	 * before they are reused, even when the log ran out of room (those
	 * nodes are clean now, their new copies referenced: the next
	 * checkpoint names them). */
	int cerr = log_commit(l);
	if (!err || (cerr && cerr != -ENOSPC))
		err = cerr;
	core_scratch_reset(st);
	return err;
}

/* Write the record as one batch; p learns where. */
static int write_record(struct store *st, struct pending_ckpt *p)
{
	struct log *l = st->log;
	uint8_t *rec;
	int err;

	p->nblk = ckpt_record_blocks(st, 0);
	if (p->nblk > CKPT_MAX_BLOCKS)
		return -ENOSPC; /* store_ctl never lets the table grow this far */
	err = log_reserve(l, p->nblk);
	if (err)
		return err;
	rec = calloc(p->nblk, FMT_BLOCK);
	if (!rec)
		return -ENOMEM;
	encode_record(st, rec);
	for (unsigned i = 0; i < p->nblk && !err; i++) {
		struct fmt_entry e = {.type = FMT_E_CKPT, .lba = i, .count = 1};
		err = log_add(l, &e, rec + (size_t)i * FMT_BLOCK, &p->addrs[i]);
	}
	if (!err) {
		p->sum_addr = log_seal(l);
		log_last(l, &p->lsn, &p->crc);
	}
	/* Written before rec goes, even after a failed add (the pending
	 * vector points into it). */
	int cerr = log_commit(l);
	free(rec);
	return err ? err : cerr;
}

/* Make nodes and record durable in the log (not yet named). */
static int ckpt_pre_commit(struct store *st, struct pending_ckpt *p)
{
	int err = write_nodes(st);
	if (!err)
		err = write_record(st, p);
	if (!err)
		err = segio_sync(st->io);
	return err;
}

static void segment_freed(void *arg, uint64_t seg)
{
	struct store *st = arg;
	st->stats.segments_freed++;
}

static void name_in_super(struct fmt_super *sb, const struct pending_ckpt *p)
{
	sb->version = FMT_VERSION; /* an older pool's upgrade happens here */
	sb->ckpt_addr = p->sum_addr;
	sb->ckpt_lsn = p->lsn;
	sb->ckpt_crc = p->crc;
}

/* p's blocks: held (not counted: the pages are written) while p is the
 * checkpoint or on its way to becoming it. */
static void pending_refs(struct store *st, const struct pending_ckpt *p, bool take)
{
	void (*fn)(struct alloc *, uint64_t) = take ? alloc_meta_hold : alloc_meta_release;
	fn(st->a, p->sum_addr);
	for (unsigned i = 0; i < p->nblk; i++)
		fn(st->a, p->addrs[i]);
}

/* alloc_pages_trim: seg's page, clean, is where the loader reads it. */
static bool page_on_disk(void *arg, uint64_t seg)
{
	const struct store *st = arg;
	return st->ck.pg0 && st->ck.pg0[seg];
}

/* p is named by the superblock (whose references p's blocks already
 * hold): the old checkpoint's blocks go. */
static void adopt(struct store *st, const struct pending_ckpt *p)
{
	for (unsigned i = 0; i < st->ck.nblocks; i++)
		alloc_meta_release(st->a, st->ck.blocks[i]);
	st->ck.blocks[0] = p->sum_addr;
	for (unsigned i = 0; i < p->nblk; i++)
		st->ck.blocks[1 + i] = p->addrs[i];
	st->ck.nblocks = 1 + p->nblk;
	st->ck.lsn = p->lsn;
	st->ck.upgrade = false; /* the superblock names a current checkpoint */
	/* Every clean page and forwarding table is on disk now: keep the
	 * budget's worth. */
	alloc_pages_trim(st->a, st->ck.pages_max, 2 * st->nsegs, page_on_disk, st);
	fwd_trim(alloc_fwd(st->a), st->ck.fwd_max, 2 * st->nsegs);
	st->stats.checkpoints++;
	st->stats.checkpoint_ns += iostats_now() - st->ck.began_ns;
}

/* What the last checkpoint covers: everything logged before now. */
static void covered_now(struct store *st)
{
	st->ck.log_blocks_at = log_blocks_written(st->log);
	st->ck.last = time(NULL);
	st->ck.dirty = false;
}

/* Point the superblock at p; then the old checkpoint's blocks, and the
 * segments that died before p, may go. */
static int ckpt_commit(struct store *st, const struct pending_ckpt *p)
{
	name_in_super(&st->sb, p);
	int err = super_write(st);
	if (err)
		return err;
	pending_refs(st, p, true);
	adopt(st, p);
	/* No reader may still hold an address in a segment about to be free. */
	if (st->wr.running)
		urcu_memb_synchronize_rcu();
	alloc_release_dead(st->a, log_head_seg(st->log), log_next_seg(st->log), segment_freed, st);
	covered_now(st);
	return 0;
}

/* A checkpoint that meets ENOSPC (the space policy keeps room for it, so
 * only a full host filesystem under a pool file gets here) leaves a full
 * pool, not a failed one: the last durable checkpoint and the log after
 * it are intact, and what this one wrote is named by the next. */
static int outcome(struct store *st, int err)
{
	if (err == -ENOSPC) {
		if (!st->ck.full_logged)
			say_warn("checkpoint postponed: no room left in the pool");
		st->ck.full_logged = true;
	} else if (err) {
		core_set_failed(st, err, "checkpoint");
	} else {
		st->ck.full_logged = false;
	}
	return err;
}

/* The log thread's time on checkpoints since t0 (stats.ckpt_log_ns). */
static void log_time(struct store *st, uint64_t t0)
{
	uint64_t d = iostats_now() - t0;
	st->stats.ckpt_log_ns += d;
	if (d > st->stats.ckpt_log_max_ns)
		st->stats.ckpt_log_max_ns = d;
}

static void wait_bg(struct store *st);

int ckpt_write(struct store *st)
{
	struct pending_ckpt p;
	uint64_t t0 = iostats_now();
	int err = -EIO;

	wait_bg(st);
	if (!st->failed) {
		st->ck.began_ns = iostats_now();
		err = ckpt_pre_commit(st, &p);
		if (!err)
			err = ckpt_commit(st, &p);
		err = outcome(st, err);
	}
	log_time(st, t0);
	return err;
}

/* ---- the background commit --------------------------------------------- */

/* What the log thread hands the committer and gets back.  The committer
 * touches only the device (a sync and a superblock slot) and RCU. */
struct ckpt_bg {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* work for the committer, or its result */
	bool stop;           /* under lock */
	bool busy;           /* in flight: set and cleared by the log thread */
	bool handed, done;   /* under lock: given to the committer; its part is over */
	int err;             /* under lock: its result */
	uint64_t sync_ns;    /* under lock: the time its sync and superblock took */
	struct pending_ckpt p;
	struct fmt_super sb; /* a copy of st->sb naming p */
};

static bool in_flight(const struct store *st)
{
	return st->ck.bg && st->ck.bg->busy;
}

static void *committer_main(void *arg)
{
	struct store *st = arg;
	struct ckpt_bg *bg = st->ck.bg;

	pthread_mutex_lock(&bg->lock);
	for (;;) {
		while (!bg->handed && !bg->stop)
			pthread_cond_wait(&bg->cond, &bg->lock);
		if (!bg->handed)
			break;
		bg->handed = false;
		pthread_mutex_unlock(&bg->lock);
		uint64_t t0 = iostats_now();
		int err = segio_sync(st->io);
		if (!err)
			err = segio_sb_write(st->io, (unsigned)bg->sb.self, &bg->sb);
		uint64_t sync_ns = iostats_now() - t0;
		/* No reader may still hold an address in a segment about to
		 * be free (the marked ones died before this started). */
		if (!err)
			urcu_memb_synchronize_rcu();
		pthread_mutex_lock(&bg->lock);
		bg->err = err;
		bg->sync_ns = sync_ns;
		bg->done = true;
		pthread_cond_broadcast(&bg->cond);
		pthread_mutex_unlock(&bg->lock);
		core_queue_wake(&st->wr.q); /* the log thread finishes it */
		pthread_mutex_lock(&bg->lock);
	}
	pthread_mutex_unlock(&bg->lock);
	return NULL;
}

int ckpt_bg_start(struct store *st)
{
	struct ckpt_bg *bg = calloc(1, sizeof(*bg));
	if (!bg)
		return -ENOMEM;
	pthread_mutex_init(&bg->lock, NULL);
	pthread_cond_init(&bg->cond, NULL);
	st->ck.bg = bg;
	if (pthread_create(&bg->thread, NULL, committer_main, st)) {
		st->ck.bg = NULL;
		pthread_cond_destroy(&bg->cond);
		pthread_mutex_destroy(&bg->lock);
		free(bg);
		return -EAGAIN;
	}
	return 0;
}

void ckpt_bg_stop(struct store *st)
{
	struct ckpt_bg *bg = st->ck.bg;
	if (!bg)
		return;
	ckpt_wait(st); /* the log thread has stopped: its part is ours */
	pthread_mutex_lock(&bg->lock);
	bg->stop = true;
	pthread_cond_broadcast(&bg->cond);
	pthread_mutex_unlock(&bg->lock);
	pthread_join(bg->thread, NULL);
	st->ck.bg = NULL;
	pthread_cond_destroy(&bg->cond);
	pthread_mutex_destroy(&bg->lock);
	free(bg);
}

void ckpt_begin(struct store *st)
{
	struct ckpt_bg *bg = st->ck.bg;
	int err;

	if (!bg) {
		ckpt_write(st);
		return;
	}
	if (bg->busy || st->failed)
		return;
	st->ck.began_ns = iostats_now();
	err = write_nodes(st);
	if (!err)
		err = write_record(st, &bg->p);
	if (err) {
		outcome(st, err);
		log_time(st, st->ck.began_ns);
		return;
	}
	/* Held from now: the record's segment must not look dead to the
	 * marking below, nor to anyone before the flip. */
	pending_refs(st, &bg->p, true);
	alloc_mark_dead(st->a, log_head_seg(st->log), log_next_seg(st->log));
	bg->sb = st->sb;
	name_in_super(&bg->sb, &bg->p);
	super_seal(&bg->sb);
	covered_now(st);
	bg->busy = true;
	pthread_mutex_lock(&bg->lock);
	bg->handed = true;
	bg->done = false;
	pthread_cond_broadcast(&bg->cond);
	pthread_mutex_unlock(&bg->lock);
	log_time(st, st->ck.began_ns);
}

/* The pre-copy: dirty nodes and count pages a checkpoint must write below
 * which it is not worth one, the fewest blocks per slice, and the most
 * slices a pass takes (more dirty blocks: bigger slices).  What writes
 * dirtied during a pass gets further, shorter passes (PRECOPY_AGAIN_SLICES
 * slices each, PRECOPY_PASSES passes in all) while at least
 * PRECOPY_AGAIN_MIN blocks are dirty and fewer than half as many as when
 * the last pass began: each leaves the checkpoint proper less to write
 * while writes wait. */
#define PRECOPY_MIN_DIRTY    256
#define PRECOPY_MIN_SLICE    64
#define PRECOPY_SLICES       32
#define PRECOPY_PASSES       3
#define PRECOPY_AGAIN_SLICES 4
#define PRECOPY_AGAIN_MIN    128
/* Pages a slice writes at most: two blocks each if wide, half of the two
 * segments beyond the reserve a slice needs (space_precopy_room). */
#define PRECOPY_MAX_PAGES (FMT_SEG_BLOCKS / 2)

static uint64_t precopy_dirty(const struct store *st)
{
	return alloc_meta_pending(st->a) + alloc_dirty_count(st->a);
}

/* Start pass number pass: the volumes with dirty trees, then the dirty
 * pages.  False when there is nothing worth it (or no memory: the
 * checkpoint then goes as before). */
static bool precopy_start(struct store *st, unsigned pass)
{
	uint64_t dirty = precopy_dirty(st);
	uint64_t slices = pass ? PRECOPY_AGAIN_SLICES : PRECOPY_SLICES;
	size_t n = 0;

	if (dirty < (pass ? PRECOPY_AGAIN_MIN : PRECOPY_MIN_DIRTY) || st->ck.upgrade ||
	    map_init(st))
		return false;
	for (struct volume *v = st->vt.list; v; v = v->next)
		n += v->tree.root && v->tree.root->dirty;
	/* one slot more, so that a pass of pages alone has a list */
	st->ck.pre_ids = malloc((n + 1) * sizeof(*st->ck.pre_ids));
	if (!st->ck.pre_ids)
		return false;
	st->ck.pre_n = 0;
	for (struct volume *v = st->vt.list; v && st->ck.pre_n < n; v = v->next)
		if (v->tree.root && v->tree.root->dirty)
			st->ck.pre_ids[st->ck.pre_n++] = v->id;
	st->ck.pre_i = 0;
	st->ck.pre_from = 0;
	st->ck.pre_seg = 0;
	st->ck.pre_pass = pass;
	st->ck.pre_dirty = dirty;
	st->ck.pre_slice =
	    (unsigned)(dirty / slices > PRECOPY_MIN_SLICE ? dirty / slices : PRECOPY_MIN_SLICE);
	return true;
}

bool ckpt_precopy(struct store *st)
{
	uint64_t t0 = iostats_now();
	unsigned budget;
	int err = 0;

	if (!st->ck.bg || in_flight(st) || st->failed || !space_precopy_room(st)) {
		precopy_end(st); /* not possible now */
		return true;
	}
	if (st->ck.pre_ids && st->ck.pre_i >= st->ck.pre_n && st->ck.pre_seg == UINT64_MAX) {
		/* A pass is through: another while it pays, else over (the
		 * checkpoint then runs a round after the last slice, not in
		 * the same stretch). */
		unsigned next = st->ck.pre_pass + 1;
		uint64_t began = st->ck.pre_dirty;

		precopy_end(st);
		if (next >= PRECOPY_PASSES || precopy_dirty(st) >= began / 2 ||
		    !precopy_start(st, next))
			return true;
	}
	if (!st->ck.pre_ids && !precopy_start(st, 0))
		return true;
	budget = st->ck.pre_slice;
	unsigned slice = budget;
	st->ck.emit_err = 0;
	while (!err && budget && st->ck.pre_i < st->ck.pre_n) {
		struct volume *v = vtab_find_id(st, st->ck.pre_ids[st->ck.pre_i]);
		if (v)
			err = tree_write_leaves(&v->tree, st->a, emit_node, st, &st->ck.img,
			                        &st->ck.pre_from, &budget);
		if (!v || st->ck.pre_from == UINT64_MAX) {
			st->ck.pre_i++;
			st->ck.pre_from = 0;
		}
	}
	st->stats.ckpt_precopy_nodes += slice - budget;
	/* The leaves are through: the pages, whose counts the leaves
	 * written do not change (nodes are held, not counted).  A leaf
	 * written ahead is one block less for the checkpoint, a page may
	 * be written again by it: at most PRECOPY_MAX_PAGES a slice, within
	 * the room space_precopy_room saw. */
	if (!err && budget && st->ck.pre_i >= st->ck.pre_n && st->ck.pre_seg != UINT64_MAX) {
		unsigned pages = budget < PRECOPY_MAX_PAGES ? budget : PRECOPY_MAX_PAGES;
		err = write_pages_ahead(st, &st->ck.pre_seg, &pages);
	}
	if (err && st->ck.emit_err)
		err = st->ck.emit_err;
	/* The leaves emitted are clean, their new copies referenced: they
	 * reach the log before their scratch blocks are reused, and a failed
	 * write fails the pool as a checkpoint's does (write_nodes); no room
	 * leaves it full, and the checkpoint names them later. */
	int cerr = log_commit(st->log);
	if (!err || (cerr && cerr != -ENOSPC))
		err = cerr;
	core_scratch_reset(st);
	log_time(st, t0);
	if (err) {
		precopy_end(st);
		outcome(st, err);
	}
	return false;
}

bool ckpt_ready(struct store *st)
{
	struct ckpt_bg *bg = st->ck.bg;
	if (!bg)
		return false;
	pthread_mutex_lock(&bg->lock);
	bool done = bg->done;
	pthread_mutex_unlock(&bg->lock);
	return done;
}

/* The committer is done with bg->p (caller saw bg->done). */
static void finish(struct store *st)
{
	struct ckpt_bg *bg = st->ck.bg;
	int err;

	pthread_mutex_lock(&bg->lock);
	err = bg->err;
	st->stats.ckpt_sync_ns += bg->sync_ns;
	bg->done = false;
	pthread_mutex_unlock(&bg->lock);
	bg->busy = false;
	if (err) {
		/* Not named: the last durable checkpoint stays, and the next
		 * one covers what this one did (its nodes are referenced by
		 * the trees; its record goes). */
		pending_refs(st, &bg->p, false);
		alloc_unmark_dead(st->a);
		st->ck.dirty = true;
		outcome(st, err);
		return;
	}
	st->sb = bg->sb;
	adopt(st, &bg->p);
	alloc_release_marked(st->a, segment_freed, st);
	st->ck.full_logged = false;
}

void ckpt_poll(struct store *st)
{
	if (in_flight(st) && ckpt_ready(st)) {
		uint64_t t0 = iostats_now();
		finish(st);
		log_time(st, t0);
	}
}

/* ckpt_wait, untimed (inside a timed caller). */
static void wait_bg(struct store *st)
{
	struct ckpt_bg *bg = st->ck.bg;
	if (!in_flight(st))
		return;
	pthread_mutex_lock(&bg->lock);
	while (!bg->done)
		pthread_cond_wait(&bg->cond, &bg->lock);
	pthread_mutex_unlock(&bg->lock);
	finish(st);
}

void ckpt_wait(struct store *st)
{
	if (in_flight(st)) {
		uint64_t t0 = iostats_now();
		wait_bg(st);
		log_time(st, t0);
	}
}

/* ---- loading ----------------------------------------------------------- */

/* The node cache's reader: the node named name (fwd.h), validated: its
 * image keeps its birth address in self wherever the compactor moved it.
 * Any thread: a reader thread meeting a node not in memory, inside
 * rcu_read_lock (tree.c's contract), which keeps the block it resolves
 * to readable; or the writer (log thread, opener), which is the one that
 * changes the map. */
static int read_node(void *arg, uint64_t name, struct fmt_node *out)
{
	struct store *st = arg;
	uint64_t blk;
	int err = fwd_resolve(alloc_fwd(st->a), name, &blk);
	if (!err)
		err = segio_read_block(st->io, out, blk);
	if (err)
		return err;
	uint32_t crc = out->crc;
	out->crc = 0;
	if (out->magic != FMT_NODE_MAGIC || out->self != fwd_addr(name) ||
	    crc32c(0, out, FMT_BLOCK) != crc || out->level > 3)
		return -EILSEQ;
	out->crc = crc;
	return 0;
}

/* Read the record's n blocks carried by the checkpoint summary at addr and
 * check them against their entries.  0, -EILSEQ or -errno. */
static int read_record(struct store *st, const struct fmt_summary *sum, uint64_t addr, uint8_t *rec)
{
	struct log_walk w = {0};
	const struct fmt_entry *e;
	uint64_t blk;
	unsigned i = 0;

	while ((e = log_entry_next(sum, addr, &w, &blk))) {
		if (e->type != FMT_E_CKPT || e->lba != i || !blk)
			return -EILSEQ;
		uint8_t *b = rec + (size_t)i * FMT_BLOCK;
		int err = segio_read_block(st->io, b, blk);
		if (err)
			return err;
		if (crc32c(0, b, FMT_BLOCK) != e->crc)
			return -EILSEQ;
		i++;
	}
	return 0;
}

/* alloc's loader: seg's count page, validated. */
static int load_page(void *arg, uint64_t seg, uint32_t *counts)
{
	struct store *st = arg;
	uint64_t a0 = st->ck.pg0[seg], a1 = st->ck.pg1[seg];
	uint8_t *img = malloc(2 * FMT_BLOCK);
	const char *why = "cannot be read";
	uint32_t live;
	int err = img ? 0 : -ENOMEM;

	if (!err)
		err = segio_read_block(st->io, img, a0);
	if (!err && a1)
		err = segio_read_block(st->io, img + FMT_BLOCK, a1);
	if (!err)
		err = cpage_decode(seg, img, a0, a1 ? img + FMT_BLOCK : NULL, a1, counts, &live,
		                   &why);
	free(img);
	if (err && err != -ENOMEM)
		say_error("the reference counts of segment %llu (count page at block %llu) %s: "
		          "the pool fails; cowbd-check reports what else is damaged",
		          (unsigned long long)seg, (unsigned long long)a0,
		          err == -EILSEQ ? why : "cannot be read");
	return err;
}

/* Version 5: seg's life, and its chain left on disk (the map loads it at
 * first need); the chain blocks lying in seg held by its count until their
 * chains are read.  0 or -EILSEQ (*why). */
static int load_fwd_state(struct store *st, uint64_t seg, const struct cpage_ent *e,
                          const char **why)
{
	struct fwd *f = alloc_fwd(st->a);
	if (e->held > FMT_SEG_BLOCKS - alloc_seg_meta(st->a, seg) - e->live) {
		*why = "damaged segment table (forwarding blocks held)";
		return -EILSEQ;
	}
	for (uint32_t k = 0; k < e->held; k++)
		alloc_meta_hold(st->a, seg * FMT_SEG_BLOCKS);
	st->ck.chain_in[seg] += e->held;
	st->ck.nchain += e->held;
	st->ck.chain[seg].head = e->fwd;
	if (e->fwd)
		fwd_seg_away(f, seg, e->life);
	else if (e->life)
		return fwd_seg_install(f, seg, e->life, NULL, 0);
	return 0;
}

/* Read the segment tables the record lists (in the form of the pool's
 * version): every segment's live count and page (left on disk), from
 * version 5 its life and chain, every held block.  An older version's
 * tables stay dirty: the first checkpoint rewrites them all in the current
 * form (there are more of them).  0, -EILSEQ (*why) or -errno. */
static int load_map(struct store *st, const uint64_t *stab, uint32_t version, const char **why)
{
	bool v5 = version > FMT_VERSION_V4;
	unsigned per = cpage_stab_entries(version);
	struct cpage_ent *ent = malloc(FMT_STAB_ENTRIES * sizeof(*ent));
	void *blk = malloc(FMT_BLOCK);
	int err = ent && blk ? map_init(st) : -ENOMEM;

	for (uint64_t t = 0; t < nstab_v(st->nsegs, version) && !err; t++) {
		uint64_t addr = stab[t], first;
		unsigned n;

		if (!addr || addr >= alloc_nblocks(st->a) || alloc_seg_of(addr) == 0) {
			*why = "damaged checkpoint record (a segment table address)";
			err = -EILSEQ;
			break;
		}
		err = segio_read_block(st->io, blk, addr);
		if (!err)
			err = v5 ? cpage_stab5_decode(blk, addr, st->nsegs, &first, &n, ent, why)
			         : cpage_stab_decode(blk, addr, st->nsegs, &first, &n, ent, why);
		if (!err &&
		    (first != t * per || n != (st->nsegs - first < per ? st->nsegs - first : per) ||
		     (t == 0 && (ent[0].page0 || ent[0].life || ent[0].fwd || ent[0].held)))) {
			*why = "segment table out of place";
			err = -EILSEQ;
		}
		for (unsigned k = 0; k < n && !err; k++) {
			uint64_t s = first + k;
			err = load_fwd_state(st, s, &ent[k], why);
			if (!ent[k].page0 || err)
				continue;
			alloc_page_away(st->a, s, ent[k].live);
			map_replace(st, &st->ck.pg0[s], ent[k].page0);
			map_replace(st, &st->ck.pg1[s], ent[k].page1);
		}
		if (!err) {
			map_replace(st, &st->ck.stab[t], addr);
			st->ck.stab_dirty[t] = !v5;
		}
	}
	free(ent);
	free(blk);
	return err;
}

/* One record's volume (slot: 1 + its table slot, 0 for an older record's),
 * its tree opened: version 3 on, the root only, its count is on disk;
 * older, the whole tree, every count rebuilt. */
static int load_volume(struct store *st, const struct fmt_vol *fv, uint32_t slot, bool v3,
                       const char **why)
{
	if (!fv->id || fv->id >= st->vt.next_id || !memchr(fv->name, 0, sizeof(fv->name)) ||
	    vtab_find_id(st, fv->id) || fv->levels != vtab_levels_for_size(fv->size) || !fv->levels)
		return -EILSEQ;
	struct volume *v = vtab_volume_new(fv->id, fv->name, fv->size, fv->created);
	if (!v)
		return -ENOMEM;
	v->snapshot = fv->flags & FMT_VOL_SNAPSHOT;
	v->parent_id = fv->parent;
	v->origin_id = fv->origin;
	v->slot = slot;
	int err = vtab_link(st, v);
	if (err) {
		free(v); /* not linked, no tree yet */
		return err;
	}
	uint64_t total = 0;
	for (unsigned k = 0; k < sizeof(fv->total); k++)
		total |= (uint64_t)fv->total[k] << (8 * k);
	if (!slot) /* an older record: no total, the root says it */
		total = TREE_TOTAL_UNKNOWN;
	err = v3 ? tree_open(st->nc, &v->tree, fv->root, fv->levels, total)
	         : tree_load(st->nc, &v->tree, fv->root, fv->levels);
	if (err == -EILSEQ)
		*why = "damaged block tree node (checksum, address or level)";
	return err;
}

/* The pool's node cache, made here: every open loads a checkpoint. */
static int cache_init(struct store *st, bool v3)
{
	if (!st->nc)
		st->nc = tree_cache_new(st->a, read_node, st);
	if (!st->nc)
		return -ENOMEM;
	tree_cache_totals(st->nc, v3);
	return 0;
}

/* Table block b as read from addr: sealed, in place, and every slot
 * either all zero or a record.  0 or -EILSEQ. */
static int vtab_block_ok(const struct fmt_vtab *t, uint64_t addr, uint64_t b)
{
	static const struct fmt_vol zero;
	struct fmt_vtab c = *t;
	unsigned used = 0;

	c.crc = 0;
	if (t->magic != FMT_VTAB_MAGIC || t->self != addr ||
	    t->first_slot != b * FMT_VTAB_ENTRIES || crc32c(0, &c, sizeof(c)) != t->crc)
		return -EILSEQ;
	for (unsigned k = 0; k < FMT_VTAB_ENTRIES; k++) {
		if (t->v[k].id)
			used++;
		else if (memcmp(&t->v[k], &zero, sizeof(zero)))
			return -EILSEQ;
	}
	return used == t->n && used ? 0 : -EILSEQ;
}

/* qsort_r's order of slots: by the id of their record in arg[]. */
static int by_id(const void *x, const void *y, void *arg)
{
	const struct fmt_vol *rec = arg;
	uint64_t a = rec[*(const uint32_t *)x].id, b = rec[*(const uint32_t *)y].id;
	return a < b ? -1 : a > b;
}

/* Version 4: the table blocks the record lists (vblk[0..nvtab-1]), their
 * records made volumes in id order (the order they were made in, which
 * listings keep).  0, -EILSEQ (*why) or -errno. */
static int load_vtab(struct store *st, const uint64_t *vblk, uint64_t nvtab, uint64_t nvols,
                     const char **why)
{
	uint32_t *order = NULL;
	uint64_t n = 0;
	int err = vtab_grow(st, nvtab);

	if (!err && nvtab * FMT_VTAB_ENTRIES > UINT32_MAX)
		err = -EILSEQ;
	if (!err && !(order = malloc((nvols ? nvols : 1) * sizeof(*order))))
		err = -ENOMEM;
	for (uint64_t b = 0; b < nvtab && !err; b++) {
		struct fmt_vtab *t = (struct fmt_vtab *)&st->ck.img;
		uint64_t addr = vblk[b];
		if (!addr)
			continue;
		if (addr >= alloc_nblocks(st->a) || alloc_seg_of(addr) == 0)
			err = -EILSEQ;
		if (!err)
			err = segio_read_block(st->io, t, addr);
		if (!err)
			err = vtab_block_ok(t, addr, b);
		if (err == -EILSEQ)
			*why = "damaged volume table block";
		for (unsigned k = 0; k < FMT_VTAB_ENTRIES && !err; k++) {
			if (!t->v[k].id)
				continue;
			if (n == nvols) {
				*why = "volume table holds more records than the checkpoint says";
				err = -EILSEQ;
				break;
			}
			order[n++] = (uint32_t)(b * FMT_VTAB_ENTRIES + k);
		}
		if (!err) {
			memcpy(st->ck.vrec + b * FMT_VTAB_ENTRIES, t->v, sizeof(t->v));
			map_replace(st, &st->ck.vblk[b], addr);
		}
	}
	if (!err && n != nvols) {
		*why = "volume table holds fewer records than the checkpoint says";
		err = -EILSEQ;
	}
	if (!err) {
		qsort_r(order, n, sizeof(*order), by_id, st->ck.vrec);
		st->ck.nvblk = nvtab;
	}
	for (uint64_t i = 0; i < n && !err; i++)
		err = load_volume(st, &st->ck.vrec[order[i]], order[i] + 1, true, why);
	free(order);
	return err;
}

int ckpt_load(struct store *st, struct fmt_summary *sum, const char **why)
{
	uint64_t addr = st->sb.ckpt_addr;
	const char *reason = NULL;
	uint8_t *rec = NULL;
	int err = -EILSEQ;

	if (addr >= alloc_nblocks(st->a) || alloc_seg_of(addr) == 0)
		goto out;
	err = segio_read_block(st->io, sum, addr);
	if (err)
		goto out;
	err = -EILSEQ;
	if (log_summary_valid(sum, addr) || sum->crc != st->sb.ckpt_crc ||
	    sum->lsn != st->sb.ckpt_lsn || sum->nblocks == 0)
		goto out;
	unsigned n = sum->nblocks;
	rec = malloc((size_t)n * FMT_BLOCK);
	err = rec ? read_record(st, sum, addr, rec) : -ENOMEM;
	if (err)
		goto out;
	const struct fmt_ckpt *h = (const struct fmt_ckpt *)rec;
	bool v3 = st->sb.version >= FMT_VERSION_V3, v4 = st->sb.version >= FMT_VERSION_V4;
	size_t room = (size_t)n * FMT_BLOCK - sizeof(*h);
	size_t map =
	    v3 ? nstab_v(st->nsegs, st->sb.version) * sizeof(uint64_t) : v2_map_bytes(st->nsegs);
	uint64_t nvtab = v4 ? h->nvtab : 0, each = v4 ? sizeof(uint64_t) : sizeof(struct fmt_vol);
	uint64_t ntab = v4 ? nvtab : h->nvols;
	if (h->magic != FMT_CKPT_MAGIC || h->nsegs != st->nsegs ||
	    (v3 ? h->version != st->sb.version : h->version > FMT_VERSION_V2) ||
	    ntab > room / each || ntab * each + map > room ||
	    (v4 && h->nvols > nvtab * FMT_VTAB_ENTRIES) || (!v4 && h->nvtab) || !h->head_seg ||
	    h->head_seg >= st->nsegs || sum->next_seg >= st->nsegs) {
		err = -EILSEQ;
		goto out;
	}
	st->vt.next_id = h->next_vol_id;
	const uint8_t *tab = rec + sizeof(*h); /* the volumes or their blocks */
	const struct fmt_vol *fv = (const struct fmt_vol *)tab;
	const uint8_t *after = tab + ntab * each;
	/* Version 3 on: the counts first (a tree's root needs its own). */
	err = v3 ? load_map(st, (const uint64_t *)after, st->sb.version, &reason) : 0;
	if (!err)
		err = cache_init(st, v3);
	if (!err && v4)
		err = load_vtab(st, (const uint64_t *)tab, nvtab, h->nvols, &reason);
	for (uint64_t i = 0; !v4 && i < h->nvols && !err; i++)
		err = load_volume(st, &fv[i], 0, v3, &reason);
	if (err)
		goto out;
	if (!v3) {
		/* The bitmap must cover every segment the trees use. */
		const uint8_t *bm = after;
		for (uint64_t s = 1; s < st->nsegs; s++) {
			bool used = bm[s / 8] & (1u << (s % 8));
			if (alloc_seg_live(st->a, s) && !used)
				st->ck.bitmap_mismatch++;
			if (used)
				alloc_mark_used(st->a, s);
		}
		st->ck.upgrade = true;
	}
	alloc_mark_used(st->a, h->head_seg);
	st->ck.blocks[0] = addr;
	alloc_meta_hold(st->a, addr);
	for (unsigned i = 0; i < n; i++) {
		st->ck.blocks[1 + i] = addr + 1 + i;
		alloc_meta_hold(st->a, addr + 1 + i);
	}
	st->ck.nblocks = 1 + n;
	st->ck.lsn = sum->lsn;
out:
	if (err)
		*why = reason           ? reason
		       : err == -EILSEQ ? "damaged checkpoint record"
		       : err == -ENOMEM ? "out of memory"
		                        : "cannot read the checkpoint";
	free(rec);
	return err;
}
