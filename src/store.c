/* store.c — volumes, snapshots and clones over one pool; the data path
 * (reads on reader threads, writes/trims/flushes batched by the log thread
 * with group commit), control operations, checkpoints and recovery.
 *
 * Layer: the top of the storage stack (conn and control call it; it calls
 * tree, alloc, log and blkdev).
 *
 * Threads and locks:
 *  - the log thread is the only writer of trees, allocator, log and the
 *    volume table; it takes requests from qlock/qhead in rounds: stages
 *    every write of a round into one pwritev, applies the new mappings,
 *    runs at most one fdatasync for all FLUSH/FUA requests of the round,
 *    then completes them.  Control operations run on it too, alone, so
 *    they are ordered with the data path.
 *  - reader threads serve READ from the trees under rcu_read_lock, with no
 *    lock at all; a physical block can be reused only after a checkpoint
 *    and an RCU grace period, so a reader's pread never sees foreign data.
 *  - vol_lock guards the volume list and attach counts against export
 *    lookups from connection threads.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "alloc.h"
#include "compact.h"
#include "crc32c.h"
#include "format.h"
#include "log.h"
#include "say.h"
#include "store.h"
#include "tree.h"

#define DEFAULT_READERS    4
#define DEFAULT_CKPT_BYTES (256ull << 20)
#define DEFAULT_CKPT_SECS  30
#define CKPT_MAX_BLOCKS    ((unsigned)FMT_SUM_ENTRIES)
#define SCRATCH_COMMIT     2048 /* node blocks buffered before a checkpoint writes them */

/* A volume or snapshot.  name/size/flags are immutable after creation;
 * tree.root is RCU-published (readers); everything else belongs to the
 * log thread, attached to vol_lock. */
struct volume {
	struct volume *next; /* st->vols list, under vol_lock */
	uint64_t id;
	uint64_t parent_id; /* snapshot: its volume */
	uint64_t origin_id; /* clone: the snapshot it came from */
	uint64_t size;
	uint64_t created;
	bool snapshot;
	char name[STORE_NAME_MAX + 1]; /* own part: "vol" or "snap" */
	struct tree tree;
	unsigned attached; /* under vol_lock */
	bool locked;       /* under vol_lock: being deleted or rolled back */
	struct store *st;
};

struct vol {
	struct store *st;
	struct volume *v;
	char export_name[2 * STORE_NAME_MAX + 2];
};

/* Control operation carried through the log thread. */
enum ctl_kind {
	CTL_VOL_CREATE,
	CTL_VOL_DELETE,
	CTL_SNAP_CREATE,
	CTL_CLONE,
	CTL_ROLLBACK,
	CTL_CHECKPOINT,
	CTL_STATS,
};
#define STORE_CTL 100 /* req.op of a control request */

struct ctl {
	struct store_req req;
	struct store *st;
	enum ctl_kind kind;
	const char *a, *b;
	uint64_t size;
	struct store_stats *stats;
};

/* One change staged in a round, applied once the round is written. */
struct apply {
	struct volume *v;
	uint64_t lba;
	uint64_t val; /* SET: physical block; TRIM: end lba */
	bool trim;
};

struct pend { /* (volume, lba) -> latest staged data of this round */
	uint64_t gen;
	struct volume *v;
	uint64_t lba;
	const void *data;
};

struct scratch {
	void **blk;
	size_t n, used;
};

struct store {
	struct blkdev *dev;
	struct alloc *a;
	struct log log;
	struct fmt_super sb;
	uint64_t nsegs;
	bool read_only;
	bool failed; /* sticky: a write or sync failed */
	uint64_t reserve_segs;

	pthread_mutex_t vol_lock;
	struct volume *vols;
	unsigned nvols;
	uint64_t next_vol_id;

	/* log thread queue */
	pthread_mutex_t qlock;
	pthread_cond_t qcond;
	struct store_req *qhead, *qtail;
	bool stopping;
	bool threads;
	pthread_t log_thread;

	/* readers */
	pthread_mutex_t rlock;
	pthread_cond_t rcond;
	struct store_req *rhead, *rtail;
	bool rstop;
	pthread_t *readers;
	unsigned nreaders;

	/* checkpoints */
	uint64_t ckpt_blocks[1 + CKPT_MAX_BLOCKS]; /* the durable checkpoint batch */
	unsigned nckpt_blocks;
	uint64_t ckpt_bytes, ckpt_secs;
	uint64_t log_blocks_at_ckpt;
	time_t last_ckpt;
	bool dirty; /* anything logged since the last checkpoint */
	uint64_t ckpt_lsn;
	unsigned bitmap_mismatch; /* found at open (for store_check) */

	/* round state (log thread) */
	struct apply *ap;
	size_t nap, ap_cap;
	struct pend *pend;
	size_t pend_cap, npend;
	uint64_t pend_gen;
	struct scratch scr;
	struct fmt_node node_img;

	struct compact *compact;
	uint64_t compact_futile_at; /* log.blocks_written when a low-water pass found nothing */
	struct store_stats stats;
};

/* ---- small helpers -------------------------------------------------- */

/* Threads that are not RCU readers yet become one for the duration of a
 * call (control threads come and go; a registered thread must not exit). */
static __thread bool rcu_registered;

bool store_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n < 1 || n > STORE_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* Levels of the tree for a volume of size bytes; 0 if the size is 0 or
 * too large for a 4-level tree (FMT_FANOUT^4 blocks, ~264 TB) — checked
 * before rounding up, which would wrap for sizes near 2^64. */
static unsigned levels_for_size(uint64_t size)
{
	const uint64_t max =
	    (uint64_t)FMT_FANOUT * FMT_FANOUT * FMT_FANOUT * FMT_FANOUT * FMT_BLOCK;
	if (!size || size > max)
		return 0;
	return tree_levels_for((size + FMT_BLOCK - 1) / FMT_BLOCK);
}

/* Split "vol@snap" into its parts; snap is "" for a plain volume name.
 * Returns 0 or -EINVAL for an invalid name. */
static int split_name(const char *full, char *vol, char *snap)
{
	const char *at = strchr(full, '@');
	size_t n = at ? (size_t)(at - full) : strlen(full);
	if (n > STORE_NAME_MAX)
		return -EINVAL;
	memcpy(vol, full, n);
	vol[n] = 0;
	snap[0] = 0;
	if (at) {
		if (strlen(at + 1) > STORE_NAME_MAX || !store_name_valid(at + 1))
			return -EINVAL;
		strcpy(snap, at + 1);
	}
	return store_name_valid(vol) ? 0 : -EINVAL;
}

static struct volume *find_id(struct store *st, uint64_t id)
{
	for (struct volume *v = st->vols; v; v = v->next)
		if (v->id == id)
			return v;
	return NULL;
}

static struct volume *find_base(struct store *st, const char *name)
{
	for (struct volume *v = st->vols; v; v = v->next)
		if (!v->snapshot && !strcmp(v->name, name))
			return v;
	return NULL;
}

static struct volume *find_snap(struct store *st, uint64_t parent, const char *snap)
{
	for (struct volume *v = st->vols; v; v = v->next)
		if (v->snapshot && v->parent_id == parent && !strcmp(v->name, snap))
			return v;
	return NULL;
}

/* Find "vol" or "vol@snap"; caller holds vol_lock or is the log thread. */
static struct volume *find_export(struct store *st, const char *full, int *err)
{
	char vn[STORE_NAME_MAX + 1], sn[STORE_NAME_MAX + 1];
	struct volume *v;

	*err = split_name(full, vn, sn);
	if (*err)
		return NULL;
	v = find_base(st, vn);
	if (v && sn[0])
		v = find_snap(st, v->id, sn);
	if (!v)
		*err = -ENOENT;
	return v;
}

static void full_name(struct store *st, const struct volume *v, char *out, size_t len)
{
	if (v->snapshot) {
		const struct volume *p = find_id(st, v->parent_id);
		snprintf(out, len, "%s@%s", p ? p->name : "?", v->name);
	} else {
		snprintf(out, len, "%s", v->name);
	}
}

static void *scratch_get(struct scratch *s)
{
	if (s->used == s->n) {
		void **nb = realloc(s->blk, sizeof(*nb) * (s->n + 64));
		if (!nb)
			return NULL;
		s->blk = nb;
		for (size_t i = 0; i < 64; i++)
			if (posix_memalign(&s->blk[s->n + i], 4096, FMT_BLOCK)) {
				s->n += i;
				return s->used < s->n ? s->blk[s->used++] : NULL;
			}
		s->n += 64;
	}
	return s->blk[s->used++];
}

static void scratch_reset(struct scratch *s)
{
	/* Keep at most 16 MiB of scratch between rounds. */
	while (s->n > 4096 && s->n > s->used) {
		free(s->blk[--s->n]);
	}
	s->used = 0;
}

static void scratch_free(struct scratch *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->blk[i]);
	free(s->blk);
	memset(s, 0, sizeof(*s));
}

/* ---- superblock ----------------------------------------------------- */

static int sb_valid(const struct fmt_super *sb, uint64_t slot)
{
	struct fmt_super c;
	if (memcmp(sb->magic, FMT_SB_MAGIC, 8))
		return -ENOENT;
	memcpy(&c, sb, sizeof(c));
	c.crc = 0;
	if (crc32c(0, &c, sizeof(c)) != sb->crc || sb->self != slot)
		return -EILSEQ;
	if (sb->version > FMT_VERSION)
		return -EPROTONOSUPPORT;
	if (sb->block_size != FMT_BLOCK || sb->seg_blocks != FMT_SEG_BLOCKS ||
	    sb->nsegs < FMT_MIN_SEGS)
		return -EILSEQ;
	return 0;
}

static int sb_write(struct store *st)
{
	struct fmt_super *sb = &st->sb;
	struct iovec iov;
	int err;

	sb->generation++;
	sb->self = sb->generation % 2;
	sb->crc = 0;
	sb->crc = crc32c(0, sb, sizeof(*sb));
	iov.iov_base = sb;
	iov.iov_len = sizeof(*sb);
	err = blkdev_pwritev(st->dev, &iov, 1, sb->self * FMT_BLOCK);
	if (!err)
		err = blkdev_flush(st->dev);
	return err;
}

/* ---- failure -------------------------------------------------------- */

static void set_failed(struct store *st, int err, const char *what)
{
	if (!st->failed)
		say_error("pool I/O failed (%s: %s); refusing writes until restart", what,
		          strerror(-err));
	st->failed = true;
}

/* ---- checkpoint ----------------------------------------------------- */

static uint64_t emit_node(void *arg, struct fmt_node *img)
{
	struct store *st = arg;
	struct fmt_entry e = {.type = FMT_E_NODE, .count = 1};
	struct fmt_node *blk;
	uint64_t addr;

	if (st->scr.used >= SCRATCH_COMMIT) {
		if (log_commit(&st->log))
			return 0;
		scratch_reset(&st->scr);
	}
	blk = scratch_get(&st->scr);
	if (!blk)
		return 0;
	memcpy(blk, img, sizeof(*blk));
	if (log_add(&st->log, &e, blk, &addr))
		return 0;
	blk->self = addr;
	blk->crc = 0;
	blk->crc = crc32c(0, blk, FMT_BLOCK);
	return addr;
}

static size_t ckpt_record_bytes(uint64_t nvols, uint64_t nsegs)
{
	return sizeof(struct fmt_ckpt) + nvols * sizeof(struct fmt_vol) + (nsegs + 7) / 8;
}

static unsigned max_vols(uint64_t nsegs)
{
	size_t room =
	    (size_t)CKPT_MAX_BLOCKS * FMT_BLOCK - sizeof(struct fmt_ckpt) - (nsegs + 7) / 8;
	return (unsigned)(room / sizeof(struct fmt_vol));
}

static void segment_freed(void *arg, uint64_t seg)
{
	struct store *st = arg;
	st->stats.segments_freed++;
}

/* Give a free segment's space back to the device (a pool file shrinks on
 * disk; an SSD learns the blocks are unused).  Done only while idle: a
 * segment reused soon after being freed is cheaper with its pages still
 * cached. */
static void segment_discard(void *arg, uint64_t seg)
{
	struct store *st = arg;
	blkdev_discard(st->dev, seg * FMT_SEG_BYTES, FMT_SEG_BYTES);
}

/* Write every dirty node, a checkpoint record and the superblock; then
 * segments that died before it become free.  Log thread (or single-threaded
 * open/format).  Returns 0 or -errno (the pool is failed then). */
static int checkpoint(struct store *st)
{
	struct log *l = &st->log;
	uint8_t *rec = NULL;
	int err;

	if (st->failed)
		return -EIO;
	err = log_commit(l);
	if (err)
		goto fail;
	for (struct volume *v = st->vols; v; v = v->next) {
		err = tree_write_dirty(&v->tree, st->a, emit_node, st, &st->node_img);
		if (err)
			goto fail;
	}
	err = log_commit(l);
	scratch_reset(&st->scr);
	if (err)
		goto fail;

	size_t bytes = ckpt_record_bytes(st->nvols, st->nsegs);
	unsigned nblk = (unsigned)((bytes + FMT_BLOCK - 1) / FMT_BLOCK);
	if (nblk > CKPT_MAX_BLOCKS) {
		err = -ENOSPC;
		goto fail;
	}
	err = log_reserve(l, nblk);
	if (err)
		goto fail;
	rec = calloc(nblk, FMT_BLOCK);
	if (!rec) {
		err = -ENOMEM;
		goto fail;
	}
	struct fmt_ckpt *h = (struct fmt_ckpt *)rec;
	h->magic = FMT_CKPT_MAGIC;
	h->version = FMT_VERSION;
	h->lsn = l->lsn;
	h->next_vol_id = st->next_vol_id;
	h->nvols = st->nvols;
	h->nsegs = st->nsegs;
	h->head_seg = l->head_seg;
	struct fmt_vol *fv = (struct fmt_vol *)(rec + sizeof(*h));
	for (struct volume *v = st->vols; v; v = v->next, fv++) {
		fv->id = v->id;
		fv->size = v->size;
		fv->root = v->tree.root ? v->tree.root->disk : 0;
		fv->parent = v->parent_id;
		fv->origin = v->origin_id;
		fv->created = v->created;
		fv->levels = (uint8_t)v->tree.levels;
		fv->flags = v->snapshot ? FMT_VOL_SNAPSHOT : 0;
		snprintf(fv->name, sizeof(fv->name), "%s", v->name);
	}
	uint8_t *bm = (uint8_t *)fv;
	for (uint64_t s = 0; s < st->nsegs; s++)
		if (st->a->seg_live[s] || s == 0 || s == l->head_seg || s == l->next_seg)
			bm[s / 8] |= (uint8_t)(1u << (s % 8));

	uint64_t addrs[CKPT_MAX_BLOCKS];
	for (unsigned i = 0; i < nblk; i++) {
		struct fmt_entry e = {.type = FMT_E_CKPT, .lba = i, .count = 1};
		err = log_add(l, &e, rec + (size_t)i * FMT_BLOCK, &addrs[i]);
		if (err)
			goto fail;
	}
	uint64_t sum_addr = log_seal(l);
	uint32_t sum_crc = l->prev_crc;
	uint64_t sum_lsn = l->last_lsn;
	err = log_commit(l);
	if (!err)
		err = blkdev_flush(st->dev);
	if (err)
		goto fail;
	st->sb.ckpt_addr = sum_addr;
	st->sb.ckpt_lsn = sum_lsn;
	st->sb.ckpt_crc = sum_crc;
	err = sb_write(st);
	if (err)
		goto fail;

	/* The new checkpoint is durable: the old one's blocks may go. */
	for (unsigned i = 0; i < st->nckpt_blocks; i++)
		alloc_unref(st->a, st->ckpt_blocks[i]);
	st->ckpt_blocks[0] = sum_addr;
	alloc_ref(st->a, sum_addr);
	for (unsigned i = 0; i < nblk; i++) {
		st->ckpt_blocks[1 + i] = addrs[i];
		alloc_ref(st->a, addrs[i]);
	}
	st->nckpt_blocks = 1 + nblk;
	if (st->threads)
		urcu_memb_synchronize_rcu();
	alloc_release_dead(st->a, l->head_seg, l->next_seg, segment_freed, st);
	st->log_blocks_at_ckpt = l->blocks_written;
	st->last_ckpt = time(NULL);
	st->dirty = false;
	st->ckpt_lsn = sum_lsn;
	st->stats.checkpoints++;
	free(rec);
	return 0;

fail:
	free(rec);
	set_failed(st, err, "checkpoint");
	return err;
}

/* ---- compaction ---------------------------------------------------- */

/* One compaction pass over victims at most max_util live, and the
 * checkpoint that makes it durable and frees them.  Returns blocks moved,
 * 0 if nothing was worth moving, or -errno (pool failed). */
static int64_t compact_now(struct store *st, double max_util)
{
	struct tree **trees;
	uint64_t keep[2 + 1 + CKPT_MAX_BLOCKS];
	unsigned n = 0, nkeep = 0, victims = 0;
	int64_t moved;

	if (st->failed || st->read_only)
		return 0;
	trees = calloc(st->nvols ? st->nvols : 1, sizeof(*trees));
	if (!trees)
		return 0;
	for (struct volume *v = st->vols; v; v = v->next)
		trees[n++] = &v->tree;
	keep[nkeep++] = st->log.head_seg;
	keep[nkeep++] = st->log.next_seg;
	for (unsigned i = 0; i < st->nckpt_blocks; i++)
		keep[nkeep++] = alloc_seg_of(st->ckpt_blocks[i]);
	moved = compact_pass(st->compact, st->a, &st->log, st->dev, trees, n, keep, nkeep, max_util,
	                     4096, &victims);
	free(trees);
	if (moved < 0) {
		set_failed(st, (int)moved, "compaction");
		return moved;
	}
	if (!victims)
		return 0;
	st->stats.compactions++;
	st->stats.compacted_blocks += (uint64_t)moved;
	st->dirty = true;
	int err = checkpoint(st);
	return err ? err : moved;
}

/* Free segments below which the compactor runs between rounds. */
static uint64_t low_water(const struct store *st)
{
	uint64_t extra = st->nsegs / 32 > 2 ? st->nsegs / 32 : 2;
	return st->reserve_segs + extra;
}

/* Idle cleaning is worth it when the pool holds much more than live data. */
static bool idle_clean_due(const struct store *st)
{
	uint64_t used = st->nsegs - 1 - st->a->nfree;
	return used * FMT_SEG_BLOCKS >
	       st->a->live_blocks + st->a->live_blocks / 5 + 8 * FMT_SEG_BLOCKS;
}

/* ---- applying logged changes (live and at replay) -------------------- */

static void volume_free(struct store *st, struct volume *v)
{
	tree_drop(&v->tree, st->a);
	free(v);
}

static void volume_link(struct store *st, struct volume *v)
{
	struct volume **pp = &st->vols;
	while (*pp)
		pp = &(*pp)->next;
	pthread_mutex_lock(&st->vol_lock);
	*pp = v;
	st->nvols++;
	pthread_mutex_unlock(&st->vol_lock);
	if (v->id >= st->next_vol_id)
		st->next_vol_id = v->id + 1;
}

static void volume_unlink(struct store *st, struct volume *v)
{
	pthread_mutex_lock(&st->vol_lock);
	for (struct volume **pp = &st->vols; *pp; pp = &(*pp)->next)
		if (*pp == v) {
			*pp = v->next;
			st->nvols--;
			break;
		}
	pthread_mutex_unlock(&st->vol_lock);
}

static struct volume *volume_new(struct store *st, uint64_t id, const char *name, uint64_t size,
                                 uint64_t created)
{
	struct volume *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	v->id = id;
	v->size = size;
	v->created = created;
	v->st = st;
	snprintf(v->name, sizeof(v->name), "%.*s", STORE_NAME_MAX, name);
	v->tree.levels = levels_for_size(size);
	return v;
}

/* Apply a logged control operation.  The op was validated before it was
 * logged (live) or comes from a valid summary (replay); a record that does
 * not fit the current state is damage: -EILSEQ. */
static int apply_op(struct store *st, const struct fmt_op *op)
{
	struct volume *v, *src;
	char name[STORE_NAME_MAX + 1];

	if (op->magic != FMT_OP_MAGIC || strnlen(op->name, sizeof(op->name)) > STORE_NAME_MAX)
		return -EILSEQ;
	memcpy(name, op->name, sizeof(name));
	switch (op->kind) {
	case FMT_OP_VOL_CREATE:
		if (find_id(st, op->id) || !levels_for_size(op->size))
			return -EILSEQ;
		v = volume_new(st, op->id, name, op->size, op->created);
		if (!v)
			return -ENOMEM;
		volume_link(st, v);
		return 0;
	case FMT_OP_VOL_DELETE:
		v = find_id(st, op->id);
		if (!v)
			return -EILSEQ;
		volume_unlink(st, v);
		volume_free(st, v);
		return 0;
	case FMT_OP_SNAP_CREATE:
	case FMT_OP_CLONE:
		src = find_id(st, op->src);
		if (!src || find_id(st, op->id))
			return -EILSEQ;
		v = volume_new(st, op->id, name, src->size, op->created);
		if (!v)
			return -ENOMEM;
		if (op->kind == FMT_OP_SNAP_CREATE) {
			v->snapshot = true;
			v->parent_id = src->id;
		} else {
			v->origin_id = src->id;
		}
		tree_share(&v->tree, &src->tree);
		volume_link(st, v);
		return 0;
	case FMT_OP_ROLLBACK: {
		struct tree t = {0};
		v = find_id(st, op->id);
		src = find_id(st, op->src);
		if (!v || !src || v->snapshot)
			return -EILSEQ;
		tree_share(&t, &src->tree);
		tree_drop(&v->tree, st->a);
		rcu_assign_pointer(v->tree.root, t.root);
		v->tree.levels = t.levels;
		v->size = src->size;
		return 0;
	}
	}
	return -EILSEQ;
}

/* ---- the log thread: rounds ----------------------------------------- */

static int ensure_cap(void **arr, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 256;
	while (n < need)
		n *= 2;
	void *p = realloc(*arr, n * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = n;
	return 0;
}

static int add_apply(struct store *st, struct volume *v, uint64_t lba, uint64_t val, bool trim)
{
	if (ensure_cap((void **)&st->ap, &st->ap_cap, st->nap + 1, sizeof(*st->ap)))
		return -ENOMEM;
	st->ap[st->nap++] = (struct apply){.v = v, .lba = lba, .val = val, .trim = trim};
	return 0;
}

static size_t pend_slot(const struct store *st, const struct volume *v, uint64_t lba)
{
	size_t h = (size_t)((lba * 0x9E3779B97F4A7C15ull) ^ (uintptr_t)v) & (st->pend_cap - 1);
	while (st->pend[h].gen == st->pend_gen && (st->pend[h].v != v || st->pend[h].lba != lba))
		h = (h + 1) & (st->pend_cap - 1);
	return h;
}

static int pend_put(struct store *st, struct volume *v, uint64_t lba, const void *data)
{
	if ((st->npend + 1) * 2 > st->pend_cap) {
		/* Rehash by starting a fresh table of twice the size. */
		struct pend *old = st->pend;
		size_t ocap = st->pend_cap;
		uint64_t ogen = st->pend_gen;
		size_t ncap = ocap ? ocap * 2 : 4096;
		struct pend *n = calloc(ncap, sizeof(*n));
		if (!n)
			return -ENOMEM;
		st->pend = n;
		st->pend_cap = ncap;
		st->pend_gen = 1;
		st->npend = 0;
		for (size_t i = 0; i < ocap; i++)
			if (old[i].gen == ogen) {
				size_t h = pend_slot(st, old[i].v, old[i].lba);
				st->pend[h] = old[i];
				st->pend[h].gen = 1;
				st->npend++;
			}
		free(old);
	}
	size_t h = pend_slot(st, v, lba);
	if (st->pend[h].gen != st->pend_gen)
		st->npend++;
	st->pend[h] = (struct pend){.gen = st->pend_gen, .v = v, .lba = lba, .data = data};
	return 0;
}

static void pend_forget_range(struct store *st, struct volume *v, uint64_t lo, uint64_t hi)
{
	for (size_t i = 0; i < st->pend_cap; i++)
		if (st->pend[i].gen == st->pend_gen && st->pend[i].v == v &&
		    st->pend[i].lba >= lo && st->pend[i].lba < hi)
			st->pend[i].data = NULL; /* stays as a tombstone: reads as a hole */
}

/* Current content of (v, lba) as seen by this round.  Log thread. */
static int current_block(struct store *st, struct volume *v, uint64_t lba, void *out)
{
	if (st->pend_cap) {
		size_t h = pend_slot(st, v, lba);
		if (st->pend[h].gen == st->pend_gen) {
			if (st->pend[h].data)
				memcpy(out, st->pend[h].data, FMT_BLOCK);
			else
				memset(out, 0, FMT_BLOCK);
			return 0;
		}
	}
	uint64_t phys = tree_lookup(&v->tree, lba);
	if (!phys) {
		memset(out, 0, FMT_BLOCK);
		return 0;
	}
	return blkdev_pread(st->dev, out, FMT_BLOCK, phys * FMT_BLOCK);
}

static int stage_block(struct store *st, struct volume *v, uint64_t lba, const void *data)
{
	struct fmt_entry e = {.vol = (uint32_t)v->id, .type = FMT_E_DATA, .lba = lba, .count = 1};
	uint64_t addr;
	int err = log_add(&st->log, &e, data, &addr);
	if (!err)
		err = pend_put(st, v, lba, data);
	if (!err)
		err = add_apply(st, v, lba, addr, false);
	return err;
}

/* Stage bytes [off, off+len) of v: full blocks straight from buf (no
 * copy), partial ones merged with the current content.  buf NULL = zeroes. */
static int stage_bytes(struct store *st, struct volume *v, const char *buf, uint64_t off,
                       uint64_t len)
{
	uint64_t end = off + len;
	for (uint64_t lba = off / FMT_BLOCK; lba * FMT_BLOCK < end; lba++) {
		uint64_t bs = lba * FMT_BLOCK;
		uint64_t from = off > bs ? off - bs : 0;
		uint64_t to = end < bs + FMT_BLOCK ? end - bs : FMT_BLOCK;
		const void *data;
		int err;
		if (from == 0 && to == FMT_BLOCK && buf) {
			data = buf + (bs - off);
		} else {
			char *blk = scratch_get(&st->scr);
			if (!blk)
				return -ENOMEM;
			err = current_block(st, v, lba, blk);
			if (err)
				return err;
			if (buf)
				memcpy(blk + from, buf + (bs + from - off), to - from);
			else
				memset(blk + from, 0, to - from);
			data = blk;
		}
		err = stage_block(st, v, lba, data);
		if (err)
			return err;
	}
	return 0;
}

static int stage_trim(struct store *st, struct volume *v, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	uint64_t lo = (off + FMT_BLOCK - 1) / FMT_BLOCK, hi = end / FMT_BLOCK;
	int err;

	if (lo >= hi) /* inside one block */
		return stage_bytes(st, v, NULL, off, len);
	if (off % FMT_BLOCK) {
		err = stage_bytes(st, v, NULL, off, lo * FMT_BLOCK - off);
		if (err)
			return err;
	}
	for (uint64_t at = lo; at < hi;) {
		uint64_t n = hi - at > UINT32_MAX ? UINT32_MAX : hi - at;
		struct fmt_entry e = {
		    .vol = (uint32_t)v->id, .type = FMT_E_TRIM, .lba = at, .count = (uint32_t)n};
		err = log_add(&st->log, &e, NULL, NULL);
		if (!err)
			err = add_apply(st, v, at, at + n, true);
		if (err)
			return err;
		/* Later partial writes of this round must see the hole. */
		pend_forget_range(st, v, at, at + n);
		at += n;
	}
	if (end % FMT_BLOCK)
		err = stage_bytes(st, v, NULL, hi * FMT_BLOCK, end - hi * FMT_BLOCK);
	return err;
}

/* Enough room for a write of `blocks` data blocks?  May checkpoint to
 * turn dead segments into free ones. */
/* Blocks data writes may still use: none once free segments are down to
 * the reserve, which is kept for checkpoints and control operations so that
 * a full pool can always checkpoint and delete (checkpoints move the log to
 * fresh segments too: counting the head's rest regardless would let data
 * creep into the reserve one checkpoint at a time).  Above it, the rest of
 * the head segment plus a segment for every free one above the reserve
 * (each move of the log takes one free segment as the new next). */
static uint64_t data_room(const struct store *st)
{
	uint64_t spare = st->a->nfree > st->reserve_segs ? st->a->nfree - st->reserve_segs : 0;
	if (!st->log.next_seg && spare)
		spare--; /* the first move takes two */
	if (!spare)
		return 0;
	return FMT_SEG_BLOCKS - st->log.head_off + (spare - 1) * FMT_SEG_BLOCKS;
}

static uint64_t blocks_needed(uint64_t blocks)
{
	return blocks + blocks / (FMT_SUM_ENTRIES - 1) + 2;
}

/* Enough room for a write of `blocks` data blocks?  -EAGAIN: not now, but
 * a checkpoint and the compactor may make some (see make_room). */
static int check_space(struct store *st, uint64_t blocks)
{
	return data_room(st) >= blocks_needed(blocks) ? 0 : -EAGAIN;
}

/* The pool is short of space for a write: checkpoint (dead segments
 * become free), then compact until there is room or nothing more helps. */
static void make_room(struct store *st, uint64_t blocks)
{
	checkpoint(st);
	for (int i = 0; i < 64 && !st->failed; i++) {
		if (data_room(st) >= blocks_needed(blocks))
			return;
		/* Writes are blocked: move even mostly-live segments. */
		if (compact_now(st, 0.95) <= 0)
			return;
	}
}

static bool is_write(const struct store_req *r)
{
	return r->op == STORE_WRITE || r->op == STORE_TRIM || r->op == STORE_ZERO;
}

static int stage_req(struct store *st, struct store_req *r)
{
	struct volume *v = r->vol->v;
	if (st->failed)
		return -EIO;
	if (v->snapshot)
		return -EPERM;
	if (r->op == STORE_WRITE) {
		int err = check_space(st, (uint64_t)r->len / FMT_BLOCK + 2);
		if (err)
			return err;
		return stage_bytes(st, v, r->buf, r->off, r->len);
	}
	/* TRIM and ZERO both unmap: in a copy-on-write store every later
	 * write allocates anew, so a "preallocated" zero block (NO_HOLE)
	 * would buy nothing; both read back as zeroes.  They free space, so
	 * they may use the reserve (a summary and at most two partial blocks). */
	if (log_room(&st->log) + st->a->nfree * FMT_SEG_BLOCKS < 8)
		return -ENOSPC;
	return stage_trim(st, v, r->off, r->len);
}

static void complete(struct store_req *r, int err)
{
	r->err = err;
	r->done(r);
}

static int run_ctl(struct store *st, struct ctl *c);

/* Map what the round staged (its blocks are written). */
static void apply_staged(struct store *st)
{
	for (size_t i = 0; i < st->nap; i++) {
		struct apply *ap = &st->ap[i];
		int err = ap->trim ? tree_trim(&ap->v->tree, st->a, ap->lba, ap->val)
		                   : tree_set(&ap->v->tree, st->a, ap->lba, ap->val);
		if (err)
			set_failed(st, err, "tree update");
	}
	st->nap = 0;
}

/* One round: stage every data request of the list, write them with one
 * pwritev per segment, apply, sync once if anyone asked, complete. */
static void run_round(struct store *st, struct store_req *list)
{
	struct store_req *r;
	bool need_sync = false;
	int err;

	st->nap = 0;
	st->pend_gen++;
	st->npend = 0;
	for (r = list; r; r = r->next) {
		r->err = 0;
		if (is_write(r)) {
			err = stage_req(st, r);
			if (err == -EAGAIN) {
				/* Free dead segments: commit what is staged (it
				 * is applied below), checkpoint, retry. */
				err = log_commit(&st->log);
				if (err) {
					set_failed(st, err, "write");
				} else {
					apply_staged(st);
					make_room(st, (uint64_t)r->len / FMT_BLOCK + 2);
					/* Staged blocks are applied and scratch reused:
					 * later merges read the trees again. */
					st->pend_gen++;
					err = stage_req(st, r);
					if (err == -EAGAIN)
						err = -ENOSPC;
				}
			}
			if (err) {
				r->err = err;
				if (err != -ENOSPC && err != -EPERM && err != -EINVAL &&
				    !st->failed)
					set_failed(st, err, "staging");
				continue;
			}
			st->dirty = true;
			if (r->flags & STORE_FUA)
				need_sync = true;
		} else if (r->op == STORE_FLUSH) {
			need_sync = true;
		}
	}
	err = log_commit(&st->log);
	if (err)
		set_failed(st, err, "write");
	if (st->failed) {
		/* Some staged block may not have reached the device (a commit
		 * inside staging can fail too): map nothing of this round. */
		for (r = list; r; r = r->next)
			if (is_write(r) && !r->err)
				r->err = -EIO;
	} else {
		apply_staged(st);
	}
	if (need_sync) {
		if (st->failed) {
			err = -EIO;
		} else {
			err = blkdev_flush(st->dev);
			st->stats.syncs++;
			if (err)
				set_failed(st, err, "fdatasync");
		}
		for (r = list; r; r = r->next)
			if ((r->op == STORE_FLUSH || (r->flags & STORE_FUA)) && !r->err)
				r->err = err ? -EIO : 0;
	}
	scratch_reset(&st->scr);
	st->stats.batches++;
	for (r = list; r;) {
		struct store_req *next = r->next;
		complete(r, r->err);
		r = next;
	}
}

static bool ckpt_due(struct store *st)
{
	if (st->failed || !st->dirty)
		return false;
	if ((st->log.blocks_written - st->log_blocks_at_ckpt) * FMT_BLOCK >= st->ckpt_bytes)
		return true;
	return time(NULL) - st->last_ckpt >= (time_t)st->ckpt_secs;
}

static void *log_thread_main(void *arg)
{
	struct store *st = arg;
	urcu_memb_register_thread();
	for (;;) {
		struct store_req *list;
		pthread_mutex_lock(&st->qlock);
		while (!st->qhead && !st->stopping) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			if (pthread_cond_timedwait(&st->qcond, &st->qlock, &ts) == ETIMEDOUT)
				break;
		}
		list = st->qhead;
		st->qhead = st->qtail = NULL;
		bool stop = st->stopping && !list;
		pthread_mutex_unlock(&st->qlock);
		if (stop)
			break;
		if (!list) {
			/* Idle: clean the pool down towards its live data. */
			if (!st->failed && idle_clean_due(st))
				compact_now(st, 0.8);
			else if (ckpt_due(st))
				checkpoint(st);
			else if (!st->failed)
				alloc_discard_free(st->a, 256, segment_discard, st);
			continue;
		}
		/* Data requests run in rounds; a control request runs alone,
		 * in its place in the order. */
		while (list) {
			struct store_req *r = list, *tail = NULL;
			if (r->op == STORE_CTL) {
				list = r->next;
				r->next = NULL;
				complete(r, run_ctl(st, (struct ctl *)r));
				continue;
			}
			while (r && r->op != STORE_CTL) {
				tail = r;
				r = r->next;
			}
			tail->next = NULL;
			struct store_req *round = list;
			list = r;
			run_round(st, round);
		}
		/* Short of free segments: clean ahead of need, but only
		 * segments where a copy buys real space, and after a pass
		 * that found nothing, not again before another segment of log
		 * (the victim scan is O(segments): not for every round). */
		bool cleaned = false;
		if (!st->failed && st->a->nfree < low_water(st) &&
		    st->log.blocks_written >= st->compact_futile_at + FMT_SEG_BLOCKS) {
			cleaned = compact_now(st, 0.75) > 0;
			if (!cleaned)
				st->compact_futile_at = st->log.blocks_written;
		}
		if (!cleaned && ckpt_due(st))
			checkpoint(st);
	}
	if (!st->failed && !st->read_only)
		checkpoint(st);
	urcu_memb_unregister_thread();
	return NULL;
}

/* ---- readers -------------------------------------------------------- */

/* Read [off, off+len) of v into buf.  With nowait, fail with -EAGAIN
 * rather than wait for the disk.  Caller is an RCU-registered thread. */
static int do_read(struct store *st, struct volume *v, char *buf, uint64_t off, uint64_t len,
                   bool nowait)
{
	int (*rd)(struct blkdev *, void *, size_t, uint64_t) =
	    nowait ? blkdev_pread_nowait : blkdev_pread;
	uint64_t end = off + len;
	uint64_t run_phys = 0, run_len = 0; /* bytes */
	char *run_buf = NULL;
	int err = 0;

	urcu_memb_read_lock();
	for (uint64_t lba = off / FMT_BLOCK; lba * FMT_BLOCK < end; lba++) {
		uint64_t bs = lba * FMT_BLOCK;
		uint64_t from = off > bs ? off - bs : 0;
		uint64_t to = end < bs + FMT_BLOCK ? end - bs : FMT_BLOCK;
		char *dst = buf + (bs + from - off);
		uint64_t phys = tree_lookup(&v->tree, lba);
		uint64_t pbyte = phys * FMT_BLOCK + from;
		if (run_len && phys && pbyte == run_phys + run_len) {
			run_len += to - from;
			continue;
		}
		if (run_len) {
			err = rd(st->dev, run_buf, run_len, run_phys);
			if (err)
				break;
			run_len = 0;
		}
		if (!phys) {
			memset(dst, 0, to - from);
		} else {
			run_phys = pbyte;
			run_len = to - from;
			run_buf = dst;
		}
	}
	if (!err && run_len)
		err = rd(st->dev, run_buf, run_len, run_phys);
	urcu_memb_read_unlock();
	return err;
}

static void *reader_main(void *arg)
{
	struct store *st = arg;
	urcu_memb_register_thread();
	for (;;) {
		pthread_mutex_lock(&st->rlock);
		while (!st->rhead && !st->rstop)
			pthread_cond_wait(&st->rcond, &st->rlock);
		struct store_req *r = st->rhead;
		if (r) {
			st->rhead = r->next;
			if (!st->rhead)
				st->rtail = NULL;
		}
		pthread_mutex_unlock(&st->rlock);
		if (!r)
			break;
		complete(r, do_read(st, r->vol->v, r->buf, r->off, r->len, false));
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* ---- submission ----------------------------------------------------- */

static void enqueue_log(struct store *st, struct store_req *r)
{
	r->next = NULL;
	pthread_mutex_lock(&st->qlock);
	if (st->qtail)
		st->qtail->next = r;
	else
		st->qhead = r;
	st->qtail = r;
	pthread_cond_signal(&st->qcond);
	pthread_mutex_unlock(&st->qlock);
}

void store_submit(struct store_req *r)
{
	struct store *st = r->vol->st;
	struct volume *v = r->vol->v;

	r->err = 0;
	r->next = NULL;
	if (r->op != STORE_FLUSH) {
		if (r->len > STORE_MAX_REQ || r->off > v->size || r->len > v->size - r->off) {
			complete(r, r->op == STORE_WRITE ? -ENOSPC : -EINVAL);
			return;
		}
		if (r->op != STORE_READ && r->op != STORE_CACHE && v->snapshot) {
			complete(r, -EPERM);
			return;
		}
		if (r->len == 0 && r->op != STORE_READ && r->op != STORE_CACHE) {
			complete(r, 0);
			return;
		}
	}
	switch (r->op) {
	case STORE_CACHE:
		complete(r, 0);
		return;
	case STORE_READ:
		if (r->len == 0) {
			complete(r, 0);
			return;
		}
		pthread_mutex_lock(&st->rlock);
		if (st->rtail)
			st->rtail->next = r;
		else
			st->rhead = r;
		st->rtail = r;
		pthread_cond_signal(&st->rcond);
		pthread_mutex_unlock(&st->rlock);
		return;
	case STORE_WRITE:
	case STORE_TRIM:
	case STORE_ZERO:
	case STORE_FLUSH:
		if (st->read_only) {
			complete(r, -EROFS);
			return;
		}
		enqueue_log(st, r);
		return;
	}
	complete(r, -EINVAL);
}

bool store_read_try(struct store_req *r)
{
	struct volume *v = r->vol->v;
	if (r->op != STORE_READ || r->len > STORE_MAX_REQ || r->off > v->size ||
	    r->len > v->size - r->off)
		return false; /* store_submit answers it */
	int err = do_read(r->vol->st, v, r->buf, r->off, r->len, true);
	if (err == -EAGAIN)
		return false;
	r->err = err;
	return true;
}

int store_map(struct vol *h, uint64_t off, uint64_t len, struct store_extent *ext, unsigned max,
              unsigned *n)
{
	struct volume *v = h->v;
	uint64_t end = off + len;
	unsigned k = 0;

	*n = 0;
	if (off > v->size || len > v->size - off || !max)
		return -EINVAL;
	urcu_memb_read_lock();
	while (off < end && k < max) {
		uint64_t lba = off / FMT_BLOCK;
		uint64_t last = (end - 1) / FMT_BLOCK;
		bool mapped;
		uint64_t blocks = tree_run(&v->tree, lba, last - lba + 1, &mapped);
		uint64_t run_end = (lba + blocks) * FMT_BLOCK;
		if (run_end > end)
			run_end = end;
		if (k && ext[k - 1].hole == !mapped) {
			ext[k - 1].len += run_end - off; /* tree_run stopped at a leaf edge */
		} else {
			ext[k].len = run_end - off;
			ext[k].hole = !mapped;
			k++;
		}
		off = run_end;
	}
	urcu_memb_read_unlock();
	*n = k;
	return 0;
}

void store_thread_register(void)
{
	urcu_memb_register_thread();
	rcu_registered = true;
}

void store_thread_unregister(void)
{
	urcu_memb_unregister_thread();
	rcu_registered = false;
}

/* Synchronous wrappers: submit and wait on a condition variable. */
struct waiter {
	pthread_mutex_t m;
	pthread_cond_t c;
	bool done;
};

static void waiter_done(struct store_req *r)
{
	struct waiter *w = r->priv;
	pthread_mutex_lock(&w->m);
	w->done = true;
	pthread_cond_signal(&w->c);
	pthread_mutex_unlock(&w->m);
}

static int submit_wait(struct store_req *r, void (*submit)(struct store_req *))
{
	struct waiter w = {.done = false};
	pthread_mutex_init(&w.m, NULL);
	pthread_cond_init(&w.c, NULL);
	r->priv = &w;
	r->done = waiter_done;
	submit(r);
	pthread_mutex_lock(&w.m);
	while (!w.done)
		pthread_cond_wait(&w.c, &w.m);
	pthread_mutex_unlock(&w.m);
	pthread_mutex_destroy(&w.m);
	pthread_cond_destroy(&w.c);
	return r->err;
}

static int sync_req(struct vol *v, enum store_op op, void *buf, uint64_t off, uint32_t len,
                    uint32_t flags)
{
	struct store_req r = {
	    .op = op, .flags = flags, .off = off, .len = len, .buf = buf, .vol = v};
	return submit_wait(&r, store_submit);
}

int store_read(struct vol *v, void *buf, uint64_t off, uint32_t len)
{
	return sync_req(v, STORE_READ, buf, off, len, 0);
}
int store_write(struct vol *v, const void *buf, uint64_t off, uint32_t len, uint32_t flags)
{
	return sync_req(v, STORE_WRITE, (void *)buf, off, len, flags);
}
int store_trim(struct vol *v, uint64_t off, uint32_t len, uint32_t flags)
{
	return sync_req(v, STORE_TRIM, NULL, off, len, flags);
}
int store_zero(struct vol *v, uint64_t off, uint32_t len, uint32_t flags)
{
	return sync_req(v, STORE_ZERO, NULL, off, len, flags);
}
int store_flush(struct vol *v)
{
	return sync_req(v, STORE_FLUSH, NULL, 0, 0, 0);
}

/* ---- volume handles ------------------------------------------------- */

int store_vol_open(struct store *st, const char *export_name, struct vol **out)
{
	struct vol *h = calloc(1, sizeof(*h));
	int err;
	if (!h)
		return -ENOMEM;
	pthread_mutex_lock(&st->vol_lock);
	struct volume *v = find_export(st, export_name, &err);
	if (v && v->locked) {
		v = NULL;
		err = -EBUSY;
	}
	if (v)
		v->attached++;
	pthread_mutex_unlock(&st->vol_lock);
	if (!v) {
		free(h);
		return err;
	}
	h->st = st;
	h->v = v;
	snprintf(h->export_name, sizeof(h->export_name), "%s", export_name);
	*out = h;
	return 0;
}

void store_vol_close(struct vol *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->st->vol_lock);
	h->v->attached--;
	pthread_mutex_unlock(&h->st->vol_lock);
	free(h);
}

uint64_t store_vol_size(const struct vol *h)
{
	return h->v->size;
}
bool store_vol_readonly(const struct vol *h)
{
	return h->v->snapshot || h->st->read_only;
}
const char *store_vol_name(const struct vol *h)
{
	return h->export_name;
}

/* ---- control operations (log thread) -------------------------------- */

static int log_op(struct store *st, struct fmt_op *op)
{
	struct fmt_entry e = {.vol = (uint32_t)op->id, .type = FMT_E_OP, .count = 1};
	uint64_t addr;
	int err;

	if (st->failed)
		return -EIO;
	if (st->read_only)
		return -EROFS;
	if (st->a->nfree == 0 && log_room(&st->log) < 4)
		return -ENOSPC;
	op->magic = FMT_OP_MAGIC;
	op->created = (uint64_t)time(NULL);
	err = log_add(&st->log, &e, op, &addr);
	if (!err)
		err = log_commit(&st->log);
	if (!err)
		err = blkdev_flush(st->dev);
	if (err) {
		if (err != -ENOSPC)
			set_failed(st, err, "control operation");
		return err == -ENOSPC ? err : -EIO;
	}
	st->dirty = true;
	return apply_op(st, op);
}

/* Describe v.  Caller holds vol_lock (the list cannot change) and
 * rcu_read_lock (the tree's nodes cannot go away); any thread. */
static void fill_info_locked(struct store *st, struct volume *v, struct store_vol_info *i)
{
	memset(i, 0, sizeof(*i));
	full_name(st, v, i->name, sizeof(i->name));
	i->id = v->id;
	i->size = v->size;
	i->snapshot = v->snapshot;
	i->created = v->created;
	tree_count(&v->tree, st->a, &i->mapped_blocks, &i->unique_blocks);
	if (v->origin_id) {
		struct volume *o = find_id(st, v->origin_id);
		if (o)
			full_name(st, o, i->origin, sizeof(i->origin));
		else
			snprintf(i->origin, sizeof(i->origin), "(deleted)");
	}
	i->attached = v->attached;
}

static void fill_stats(struct store *st, struct store_stats *out)
{
	*out = st->stats;
	out->pool_bytes = st->nsegs * FMT_SEG_BYTES;
	out->segment_bytes = FMT_SEG_BYTES;
	out->segments = st->nsegs;
	out->segments_free = st->a->nfree;
	out->segments_pending = alloc_dead_segs(st->a);
	out->blocks_live = st->a->live_blocks;
	out->log_lsn = st->log.lsn;
	out->checkpoint_lsn = st->ckpt_lsn;
	out->batch_blocks = st->log.blocks_written;
	out->failed = st->failed;
}

/* Refuse new attaches while a delete/rollback is logged; -EBUSY if attached. */
static int lock_volume(struct store *st, struct volume *v)
{
	int err = 0;
	pthread_mutex_lock(&st->vol_lock);
	if (v->attached)
		err = -EBUSY;
	else
		v->locked = true;
	pthread_mutex_unlock(&st->vol_lock);
	return err;
}

static void unlock_volume(struct store *st, struct volume *v)
{
	pthread_mutex_lock(&st->vol_lock);
	v->locked = false;
	pthread_mutex_unlock(&st->vol_lock);
}

static int run_ctl(struct store *st, struct ctl *c)
{
	struct fmt_op op;
	struct volume *v, *src;
	int err = 0;

	memset(&op, 0, sizeof(op));
	switch (c->kind) {
	case CTL_VOL_CREATE:
		if (!store_name_valid(c->a))
			return -EINVAL;
		if (c->size % 512 || !levels_for_size(c->size))
			return -EINVAL;
		if (find_base(st, c->a))
			return -EEXIST;
		if (st->nvols + 1 > max_vols(st->nsegs))
			return -ENOSPC;
		op.kind = FMT_OP_VOL_CREATE;
		op.id = st->next_vol_id;
		op.size = c->size;
		snprintf(op.name, sizeof(op.name), "%s", c->a);
		return log_op(st, &op);
	case CTL_VOL_DELETE:
		v = find_export(st, c->a, &err);
		if (!v)
			return err;
		if (!v->snapshot)
			for (struct volume *s = st->vols; s; s = s->next)
				if (s->snapshot && s->parent_id == v->id)
					return -ENOTEMPTY;
		err = lock_volume(st, v);
		if (err)
			return err;
		op.kind = FMT_OP_VOL_DELETE;
		op.id = v->id;
		err = log_op(st, &op);
		if (err)
			unlock_volume(st, v);
		return err;
	case CTL_SNAP_CREATE:
	case CTL_CLONE: {
		char vn[STORE_NAME_MAX + 1], sn[STORE_NAME_MAX + 1];
		err = split_name(c->a, vn, sn);
		if (err || !sn[0])
			return -EINVAL;
		src = find_base(st, vn);
		if (!src)
			return -ENOENT;
		if (st->nvols + 1 > max_vols(st->nsegs))
			return -ENOSPC;
		if (c->kind == CTL_SNAP_CREATE) {
			if (find_snap(st, src->id, sn))
				return -EEXIST;
			op.kind = FMT_OP_SNAP_CREATE;
			snprintf(op.name, sizeof(op.name), "%s", sn);
		} else {
			src = find_snap(st, src->id, sn);
			if (!src)
				return -ENOENT;
			if (!store_name_valid(c->b))
				return -EINVAL;
			if (find_base(st, c->b))
				return -EEXIST;
			op.kind = FMT_OP_CLONE;
			snprintf(op.name, sizeof(op.name), "%s", c->b);
		}
		op.id = st->next_vol_id;
		op.src = src->id;
		return log_op(st, &op);
	}
	case CTL_ROLLBACK: {
		char vn[STORE_NAME_MAX + 1], sn[STORE_NAME_MAX + 1];
		err = split_name(c->a, vn, sn);
		if (err || !sn[0])
			return -EINVAL;
		v = find_base(st, vn);
		if (!v)
			return -ENOENT;
		src = find_snap(st, v->id, sn);
		if (!src)
			return -ENOENT;
		err = lock_volume(st, v);
		if (err)
			return err;
		op.kind = FMT_OP_ROLLBACK;
		op.id = v->id;
		op.src = src->id;
		err = log_op(st, &op);
		unlock_volume(st, v);
		return err;
	}
	case CTL_CHECKPOINT:
		if (st->read_only)
			return -EROFS;
		return checkpoint(st);
	case CTL_STATS:
		fill_stats(st, c->stats);
		return 0;
	}
	return -EINVAL;
}

static void ctl_submit(struct store_req *r)
{
	struct ctl *c = (struct ctl *)r;
	if (c->st->threads) {
		enqueue_log(c->st, r);
	} else {
		r->err = run_ctl(c->st, c);
		r->done(r);
	}
}

static int ctl_call(struct store *st, struct ctl *c)
{
	c->st = st;
	c->req.op = STORE_CTL;
	return submit_wait(&c->req, ctl_submit);
}

int store_vol_create(struct store *st, const char *name, uint64_t size)
{
	struct ctl c = {.kind = CTL_VOL_CREATE, .a = name, .size = size};
	return ctl_call(st, &c);
}
int store_vol_delete(struct store *st, const char *name)
{
	struct ctl c = {.kind = CTL_VOL_DELETE, .a = name};
	return ctl_call(st, &c);
}
int store_snap_create(struct store *st, const char *vol_at_snap)
{
	struct ctl c = {.kind = CTL_SNAP_CREATE, .a = vol_at_snap};
	return ctl_call(st, &c);
}
int store_snap_delete(struct store *st, const char *vol_at_snap)
{
	if (!strchr(vol_at_snap, '@'))
		return -EINVAL;
	return store_vol_delete(st, vol_at_snap);
}
int store_clone(struct store *st, const char *vol_at_snap, const char *new_vol)
{
	struct ctl c = {.kind = CTL_CLONE, .a = vol_at_snap, .b = new_vol};
	return ctl_call(st, &c);
}
int store_rollback(struct store *st, const char *vol_at_snap)
{
	struct ctl c = {.kind = CTL_ROLLBACK, .a = vol_at_snap};
	return ctl_call(st, &c);
}
int store_checkpoint(struct store *st)
{
	struct ctl c = {.kind = CTL_CHECKPOINT};
	return ctl_call(st, &c);
}

static bool rcu_enter(void)
{
	if (rcu_registered)
		return false;
	urcu_memb_register_thread();
	rcu_registered = true;
	return true;
}

static void rcu_leave(bool entered)
{
	if (entered) {
		urcu_memb_unregister_thread();
		rcu_registered = false;
	}
}

/* List and info run on the calling thread, not the log thread: the walk
 * for "unique" must never hold up writes.  vol_lock keeps the list still;
 * RCU keeps the nodes. */
int store_list(struct store *st, struct store_vol_info **out, size_t *n)
{
	bool entered = rcu_enter();
	size_t k = 0;

	pthread_mutex_lock(&st->vol_lock);
	struct store_vol_info *infos = calloc(st->nvols ? st->nvols : 1, sizeof(*infos));
	if (infos) {
		urcu_memb_read_lock();
		for (struct volume *v = st->vols; v; v = v->next)
			fill_info_locked(st, v, &infos[k++]);
		urcu_memb_read_unlock();
	}
	pthread_mutex_unlock(&st->vol_lock);
	rcu_leave(entered);
	if (!infos)
		return -ENOMEM;
	*out = infos;
	*n = k;
	return 0;
}

int store_info(struct store *st, const char *name, struct store_vol_info *out)
{
	bool entered = rcu_enter();
	int err;

	pthread_mutex_lock(&st->vol_lock);
	struct volume *v = find_export(st, name, &err);
	if (v) {
		urcu_memb_read_lock();
		fill_info_locked(st, v, out);
		urcu_memb_read_unlock();
	}
	pthread_mutex_unlock(&st->vol_lock);
	rcu_leave(entered);
	return v ? 0 : err;
}

/* Runs on the log thread (the counters' only writer) for a consistent view. */
void store_get_stats(struct store *st, struct store_stats *out)
{
	struct ctl c = {.kind = CTL_STATS, .stats = out};
	ctl_call(st, &c);
}

/* ---- open, recovery, format ----------------------------------------- */

static struct store *store_alloc(struct blkdev *dev, uint64_t nsegs, const struct store_opts *o)
{
	struct store *st = calloc(1, sizeof(*st));
	if (!st)
		return NULL;
	st->dev = dev;
	st->nsegs = nsegs;
	st->a = alloc_new(nsegs);
	st->compact = compact_new();
	if (!st->a || !st->compact) {
		alloc_free(st->a);
		compact_free(st->compact);
		free(st);
		return NULL;
	}
	st->next_vol_id = 1;
	st->reserve_segs = nsegs / 64 > 8 ? nsegs / 64 : 8;
	st->ckpt_bytes = o && o->checkpoint_bytes ? o->checkpoint_bytes : DEFAULT_CKPT_BYTES;
	st->ckpt_secs = o && o->checkpoint_secs ? o->checkpoint_secs : DEFAULT_CKPT_SECS;
	st->read_only = o && o->read_only;
	st->last_ckpt = time(NULL);
	pthread_mutex_init(&st->vol_lock, NULL);
	pthread_mutex_init(&st->qlock, NULL);
	pthread_cond_init(&st->qcond, NULL);
	pthread_mutex_init(&st->rlock, NULL);
	pthread_cond_init(&st->rcond, NULL);
	return st;
}

static void store_dealloc(struct store *st)
{
	while (st->vols) {
		struct volume *v = st->vols;
		st->vols = v->next;
		volume_free(st, v);
	}
	urcu_memb_barrier();
	log_destroy(&st->log);
	alloc_free(st->a);
	compact_free(st->compact);
	scratch_free(&st->scr);
	free(st->ap);
	free(st->pend);
	free(st->readers);
	pthread_mutex_destroy(&st->vol_lock);
	pthread_mutex_destroy(&st->qlock);
	pthread_cond_destroy(&st->qcond);
	pthread_mutex_destroy(&st->rlock);
	pthread_cond_destroy(&st->rcond);
	free(st);
}

int store_probe(struct blkdev *dev)
{
	char buf[FMT_BLOCK];
	for (uint64_t slot = 0; slot < 2; slot++) {
		if ((slot + 1) * FMT_BLOCK > dev->size)
			return 0;
		int err = blkdev_pread(dev, buf, sizeof(buf), slot * FMT_BLOCK);
		if (err)
			return err;
		if (!memcmp(buf, FMT_SB_MAGIC, 8))
			return 1;
	}
	return 0;
}

int store_format(struct blkdev *dev)
{
	uint64_t nsegs = dev->size / FMT_SEG_BYTES;
	struct store *st;
	int err;

	if (nsegs < FMT_MIN_SEGS)
		return -EINVAL; /* too small */
	st = store_alloc(dev, nsegs, NULL);
	if (!st)
		return -ENOMEM;
	memcpy(st->sb.magic, FMT_SB_MAGIC, 8);
	st->sb.version = FMT_VERSION;
	st->sb.block_size = FMT_BLOCK;
	st->sb.seg_blocks = FMT_SEG_BLOCKS;
	st->sb.nsegs = nsegs;
	st->sb.created = (uint64_t)time(NULL);
	if (getrandom(st->sb.uuid, sizeof(st->sb.uuid), 0) < 0)
		memset(st->sb.uuid, 0x5a, sizeof(st->sb.uuid));
	uint64_t head = alloc_take_seg(st->a);
	uint64_t next = alloc_take_seg(st->a);
	log_init(&st->log, dev, st->a, head, 0, next, 1, 0);
	/* Both slots: the checkpoint writes generation 1 into slot 1, then
	 * generation 2 goes to slot 0, so a pool never has an empty slot. */
	err = checkpoint(st);
	if (!err)
		err = sb_write(st);
	st->dev = NULL;
	store_dealloc(st);
	return err;
}

static int read_node(void *arg, uint64_t addr, struct fmt_node *out)
{
	struct store *st = arg;
	int err = blkdev_pread(st->dev, out, FMT_BLOCK, addr * FMT_BLOCK);
	if (err)
		return err;
	uint32_t crc = out->crc;
	out->crc = 0;
	if (out->magic != FMT_NODE_MAGIC || out->self != addr || crc32c(0, out, FMT_BLOCK) != crc ||
	    out->level > 3)
		return -EILSEQ;
	out->crc = crc;
	return 0;
}

static int read_super(struct store *st, const char **why)
{
	struct fmt_super sb[2];
	int e[2];
	for (int i = 0; i < 2; i++) {
		int err = blkdev_pread(st->dev, &sb[i], FMT_BLOCK, (uint64_t)i * FMT_BLOCK);
		if (err) {
			*why = "cannot read the superblocks";
			return err;
		}
		e[i] = sb_valid(&sb[i], (uint64_t)i);
	}
	if (e[0] == -ENOENT && e[1] == -ENOENT) {
		*why = "not a cowbd pool (no superblock magic)";
		return -ENODATA;
	}
	if (e[0] == -EPROTONOSUPPORT || e[1] == -EPROTONOSUPPORT) {
		*why = "pool format version is newer than this cowbd supports";
		return -EPROTONOSUPPORT;
	}
	int pick = -1;
	for (int i = 0; i < 2; i++)
		if (!e[i] && (pick < 0 || sb[i].generation > sb[pick].generation))
			pick = i;
	if (pick < 0) {
		*why = "both superblocks are damaged (checksum or fields)";
		return -EILSEQ;
	}
	if (sb[pick].nsegs > st->dev->size / FMT_SEG_BYTES) {
		*why = "pool is larger than the device it is on (truncated?)";
		return -EILSEQ;
	}
	st->sb = sb[pick];
	return 0;
}

static struct volume *replay_vol(struct store *st, uint32_t id, struct volume **cache)
{
	if (*cache && (*cache)->id == id)
		return *cache;
	*cache = find_id(st, id);
	return *cache;
}

/* Load the checkpoint the superblock names. */
static int load_checkpoint(struct store *st, const char **why, struct fmt_summary *sum)
{
	uint64_t addr = st->sb.ckpt_addr;
	uint8_t *rec = NULL;
	int err;

	if (addr >= st->a->nblocks || alloc_seg_of(addr) == 0)
		goto damaged;
	err = blkdev_pread(st->dev, sum, FMT_BLOCK, addr * FMT_BLOCK);
	if (err)
		return err;
	if (log_summary_valid(sum, addr) || sum->crc != st->sb.ckpt_crc ||
	    sum->lsn != st->sb.ckpt_lsn || sum->nblocks == 0)
		goto damaged;
	unsigned n = sum->nblocks;
	rec = malloc((size_t)n * FMT_BLOCK);
	if (!rec)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		if (sum->e[i].type != FMT_E_CKPT || sum->e[i].lba != i)
			goto damaged;
		err = blkdev_pread(st->dev, rec + (size_t)i * FMT_BLOCK, FMT_BLOCK,
		                   (addr + 1 + i) * FMT_BLOCK);
		if (err)
			goto out;
		if (crc32c(0, rec + (size_t)i * FMT_BLOCK, FMT_BLOCK) != sum->e[i].crc)
			goto damaged;
	}
	struct fmt_ckpt *h = (struct fmt_ckpt *)rec;
	if (h->magic != FMT_CKPT_MAGIC || h->nsegs != st->nsegs || h->nvols > max_vols(st->nsegs) ||
	    ckpt_record_bytes(h->nvols, h->nsegs) > (size_t)n * FMT_BLOCK || !h->head_seg ||
	    h->head_seg >= st->nsegs || sum->next_seg >= st->nsegs)
		goto damaged;
	st->next_vol_id = h->next_vol_id;
	struct tree_loader *ld = tree_loader_new(st->a, read_node, st);
	if (!ld) {
		err = -ENOMEM;
		goto out;
	}
	const struct fmt_vol *fv = (const struct fmt_vol *)(rec + sizeof(*h));
	for (uint64_t i = 0; i < h->nvols; i++, fv++) {
		if (!memchr(fv->name, 0, sizeof(fv->name)) || find_id(st, fv->id) ||
		    fv->levels != levels_for_size(fv->size) || !fv->levels) {
			tree_loader_free(ld);
			goto damaged;
		}
		struct volume *v = volume_new(st, fv->id, fv->name, fv->size, fv->created);
		if (!v) {
			tree_loader_free(ld);
			err = -ENOMEM;
			goto out;
		}
		v->snapshot = fv->flags & FMT_VOL_SNAPSHOT;
		v->parent_id = fv->parent;
		v->origin_id = fv->origin;
		volume_link(st, v);
		err = tree_load(ld, &v->tree, fv->root, fv->levels);
		if (err) {
			tree_loader_free(ld);
			if (err == -EILSEQ)
				goto damaged_tree;
			goto out;
		}
	}
	tree_loader_free(ld);
	/* The bitmap must cover every segment the trees use. */
	const uint8_t *bm = (const uint8_t *)fv;
	for (uint64_t s = 1; s < st->nsegs; s++) {
		bool used = bm[s / 8] & (1u << (s % 8));
		if (st->a->seg_live[s] && !used)
			st->bitmap_mismatch++;
		if (used)
			alloc_mark_used(st->a, s);
	}
	alloc_mark_used(st->a, h->head_seg);
	st->ckpt_blocks[0] = addr;
	alloc_ref(st->a, addr);
	for (unsigned i = 0; i < n; i++) {
		st->ckpt_blocks[1 + i] = addr + 1 + i;
		alloc_ref(st->a, addr + 1 + i);
	}
	st->nckpt_blocks = 1 + n;
	st->ckpt_lsn = sum->lsn;
	free(rec);
	return 0;

damaged_tree:
	*why = "damaged block tree node (checksum, address or level)";
	free(rec);
	return -EILSEQ;
damaged:
	*why = "damaged checkpoint record";
	err = -EILSEQ;
out:
	free(rec);
	return err;
}

/* Follow the log from the checkpoint, applying every batch that continues
 * the chain; stop at the first that does not (a torn or stale tail). */
static int replay(struct store *st, const struct fmt_summary *ck, const char **why)
{
	struct fmt_summary *s = malloc(sizeof(*s));
	char *blk = malloc(FMT_BLOCK);
	uint64_t pos = ck->self + 1 + ck->nblocks;
	uint64_t seg = alloc_seg_of(ck->self), next = ck->next_seg;
	uint64_t lsn = ck->lsn + 1, nbatches = 0, nblocks = 0;
	uint32_t prev = ck->crc;
	struct volume *cache = NULL;
	int err = 0;

	if (!s || !blk) {
		err = -ENOMEM;
		goto out;
	}
	if (next)
		alloc_mark_used(st->a, next);
	for (;;) {
		bool ok = false;
		/* Try the block after the last batch, then the next segment. */
		for (int attempt = 0; attempt < 2 && !ok; attempt++) {
			uint64_t at = attempt == 0 ? pos : next * FMT_SEG_BLOCKS;
			if (attempt == 0 && alloc_seg_of(pos) != seg)
				continue;
			if (attempt == 1 && (!next || next >= st->nsegs))
				break;
			if (blkdev_pread(st->dev, s, FMT_BLOCK, at * FMT_BLOCK))
				continue;
			if (log_summary_valid(s, at) || s->lsn != lsn || s->prev_crc != prev)
				continue;
			/* Every carried block must match its CRC (torn write?). */
			bool intact = true;
			unsigned k = 0;
			for (unsigned i = 0; i < s->nentries && intact; i++) {
				if (s->e[i].type == FMT_E_TRIM)
					continue;
				k++;
				if (s->e[i].type == FMT_E_NODE)
					continue;
				if (blkdev_pread(st->dev, blk, FMT_BLOCK, (at + k) * FMT_BLOCK) ||
				    crc32c(0, blk, FMT_BLOCK) != s->e[i].crc)
					intact = false;
			}
			if (!intact)
				continue;
			ok = true;
			pos = at;
		}
		if (!ok)
			break;
		seg = alloc_seg_of(pos);
		alloc_mark_used(st->a, seg);
		if (s->next_seg && s->next_seg < st->nsegs) {
			next = s->next_seg;
			alloc_mark_used(st->a, next);
		}
		unsigned k = 0;
		for (unsigned i = 0; i < s->nentries; i++) {
			const struct fmt_entry *e = &s->e[i];
			uint64_t baddr = pos + 1 + k;
			struct volume *v = NULL;
			if (e->type != FMT_E_TRIM)
				k++;
			if (e->type == FMT_E_DATA || e->type == FMT_E_TRIM) {
				v = replay_vol(st, e->vol, &cache);
				uint64_t nb = v ? (v->size + FMT_BLOCK - 1) / FMT_BLOCK : 0;
				if (!v || v->snapshot || e->lba >= nb ||
				    (e->type == FMT_E_TRIM && e->count > nb - e->lba)) {
					*why = "log entry for a missing volume or out of range";
					err = -EILSEQ;
					goto out;
				}
			}
			switch (e->type) {
			case FMT_E_DATA:
				err = tree_set(&v->tree, st->a, e->lba, baddr);
				nblocks++;
				break;
			case FMT_E_TRIM:
				err = tree_trim(&v->tree, st->a, e->lba, e->lba + e->count);
				break;
			case FMT_E_OP:
				if (blkdev_pread(st->dev, blk, FMT_BLOCK, baddr * FMT_BLOCK)) {
					err = -EIO;
					break;
				}
				cache = NULL;
				err = apply_op(st, (const struct fmt_op *)blk);
				if (err == -EILSEQ)
					*why = "log holds a control operation that does not apply";
				break;
			case FMT_E_NODE:
			case FMT_E_CKPT:
			case FMT_E_MOVE:
				/* nodes of an unfinished checkpoint, copies the
				 * compactor made after the last one: unused */
				break;
			default:
				*why = "unknown log entry type";
				err = -EILSEQ;
			}
			if (err)
				goto out;
		}
		pos += 1 + s->nblocks;
		prev = s->crc;
		lsn++;
		nbatches++;
	}
	if (nbatches)
		say_info("recovery: replayed %llu batches (%llu data blocks) after the checkpoint",
		         (unsigned long long)nbatches, (unsigned long long)nblocks);
	/* The head stays in the last batch's segment (possibly full: then the
	 * first write moves on to next). */
	log_init(&st->log, st->dev, st->a, seg, pos - seg * FMT_SEG_BLOCKS, next == seg ? 0 : next,
	         lsn, prev);
	st->dirty = nbatches > 0;
out:
	free(s);
	free(blk);
	return err;
}

struct store *store_open(struct blkdev *dev, const struct store_opts *opts, const char **why)
{
	static const char *dummy;
	struct fmt_summary *ck = NULL;
	struct store *st;
	int err;

	if (!why)
		why = &dummy;
	*why = "out of memory";
	if (dev->size < FMT_MIN_SEGS * FMT_SEG_BYTES) {
		*why = "device too small to hold a cowbd pool";
		errno = EILSEQ;
		return NULL;
	}
	st = store_alloc(dev, dev->size / FMT_SEG_BYTES, opts);
	if (!st) {
		errno = ENOMEM;
		return NULL;
	}
	err = read_super(st, why);
	if (err)
		goto fail;
	if (st->sb.nsegs != st->nsegs) {
		/* The device grew: use only what the pool was made with. */
		alloc_free(st->a);
		st->nsegs = st->sb.nsegs;
		st->a = alloc_new(st->nsegs);
		if (!st->a) {
			err = -ENOMEM;
			goto fail;
		}
		st->reserve_segs = st->nsegs / 64 > 8 ? st->nsegs / 64 : 8;
	}
	ck = malloc(sizeof(*ck));
	if (!ck) {
		err = -ENOMEM;
		goto fail;
	}
	err = load_checkpoint(st, why, ck);
	if (err)
		goto fail;
	err = replay(st, ck, why);
	if (err)
		goto fail;
	free(ck);
	ck = NULL;
	if (!st->read_only) {
		/* Start from a fresh checkpoint: the log replayed above is then
		 * no longer needed, and dead segments become free. */
		err = checkpoint(st);
		if (err) {
			*why = "cannot write a checkpoint after recovery";
			goto fail;
		}
		unsigned nr = opts && opts->readers ? opts->readers : DEFAULT_READERS;
		st->readers = calloc(nr, sizeof(*st->readers));
		if (!st->readers) {
			err = -ENOMEM;
			goto fail;
		}
		st->threads = true;
		if (pthread_create(&st->log_thread, NULL, log_thread_main, st)) {
			st->threads = false;
			err = -EAGAIN;
			*why = "cannot start the log thread";
			goto fail;
		}
		for (unsigned i = 0; i < nr; i++) {
			if (pthread_create(&st->readers[i], NULL, reader_main, st))
				break;
			st->nreaders++;
		}
	} else {
		/* Read-only: reads still need reader threads. */
		st->readers = calloc(1, sizeof(*st->readers));
		if (st->readers && !pthread_create(&st->readers[0], NULL, reader_main, st))
			st->nreaders = 1;
	}
	return st;

fail:
	free(ck);
	st->dev = NULL; /* the caller still owns dev on failure */
	store_dealloc(st);
	errno = -err;
	return NULL;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	if (st->threads) {
		pthread_mutex_lock(&st->qlock);
		st->stopping = true;
		pthread_cond_signal(&st->qcond);
		pthread_mutex_unlock(&st->qlock);
		pthread_join(st->log_thread, NULL);
	}
	pthread_mutex_lock(&st->rlock);
	st->rstop = true;
	pthread_cond_broadcast(&st->rcond);
	pthread_mutex_unlock(&st->rlock);
	for (unsigned i = 0; i < st->nreaders; i++)
		pthread_join(st->readers[i], NULL);
	struct blkdev *dev = st->dev;
	store_dealloc(st);
	blkdev_close(dev);
}

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
	int bad = 0;
	uint64_t verified = 0;

	if (!s || !blk || !seen) {
		bad = 1;
		goto out;
	}
	for (uint64_t seg = 1; seg < st->nsegs; seg++) {
		if (!st->a->seg_live[seg])
			continue;
		uint64_t base = seg * FMT_SEG_BLOCKS, pos = base;
		memset(seen, 0, FMT_SEG_BLOCKS);
		while (pos < base + FMT_SEG_BLOCKS) {
			if (blkdev_pread(st->dev, s, FMT_BLOCK, pos * FMT_BLOCK) ||
			    log_summary_valid(s, pos))
				break;
			seen[pos - base] = 1;
			unsigned k = 0;
			for (unsigned i = 0; i < s->nentries; i++) {
				if (s->e[i].type == FMT_E_TRIM)
					continue;
				uint64_t b = pos + 1 + (k++);
				seen[b - base] = 1;
				if ((s->e[i].type != FMT_E_DATA && s->e[i].type != FMT_E_MOVE) ||
				    !st->a->ref[b])
					continue;
				if (blkdev_pread(st->dev, blk, FMT_BLOCK, b * FMT_BLOCK) ||
				    crc32c(0, blk, FMT_BLOCK) != s->e[i].crc) {
					if (bad < 10)
						say_error(
						    "check: data block %llu (volume %u block %llu) "
						    "fails its checksum",
						    (unsigned long long)b, s->e[i].vol,
						    (unsigned long long)s->e[i].lba);
					bad++;
				} else {
					verified++;
				}
			}
			pos += 1 + s->nblocks;
		}
		for (uint64_t b = base; b < base + FMT_SEG_BLOCKS; b++)
			if (st->a->ref[b] && !seen[b - base]) {
				if (bad < 10)
					say_error(
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

int store_check(struct store *st)
{
	unsigned n = 0, i = 0;
	for (struct volume *v = st->vols; v; v = v->next)
		n++;
	struct tree **trees = calloc(n ? n : 1, sizeof(*trees));
	if (!trees)
		return 1;
	for (struct volume *v = st->vols; v; v = v->next)
		trees[i++] = &v->tree;
	int bad = tree_check_all(trees, n, st->a, st->ckpt_blocks, st->nckpt_blocks);
	free(trees);
	bad += check_segments(st);
	if (st->bitmap_mismatch) {
		say_error(
		    "check: %u segments hold live blocks but the checkpoint bitmap marks them free",
		    st->bitmap_mismatch);
		bad += (int)st->bitmap_mismatch;
	}
	for (struct volume *v = st->vols; v; v = v->next) {
		if (v->snapshot && !find_id(st, v->parent_id)) {
			say_error("check: snapshot %llu belongs to missing volume %llu",
			          (unsigned long long)v->id, (unsigned long long)v->parent_id);
			bad++;
		}
	}
	return bad;
}
