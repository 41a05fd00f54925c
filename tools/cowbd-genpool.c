/* cowbd-genpool — a test tool: make a large, valid pool without writing
 * its data.  It lays the pool out itself, as a pool fresh from its last
 * checkpoint: the log holds every data block (left a hole in a new sparse
 * file: zeroes, whose CRC32C the summaries record), then every tree node,
 * then (version 3) the count pages and segment tables, (version 4) the
 * volume table blocks, then the checkpoint record, named by both
 * superblocks.  At version 5 every segment has life 0 and no forwarding
 * chain (nothing was ever compacted), so every tree slot's name is the
 * block's address.  10^8 mapped blocks (400 GiB of
 * volume) cost a few GiB of disk.  The shape is regular, so every address
 * and every reference count is computed, not looked up: memory is O(tree
 * nodes + segments), never a word per block.
 *
 * Usage: cowbd-genpool POOL --size SIZE --blocks N [--volumes V]
 *                      [--snapshots S] [--spread K] [--churn PCT]
 *                      [--format-version 2|3|4|5]
 *   POOL        a new file (refused if it exists)
 *   --size      pool size (e.g. 600G; sparse)
 *   --blocks    4 KiB blocks mapped in all, spread over the volumes
 *   --volumes   volumes (default 1), named vol0, vol1, ...
 *   --snapshots snapshots in all (default 0), spread over the volumes,
 *               named VOL@sN; between two snapshots of a volume, PCT % of
 *               its blocks are written again (--churn, default 1), so each
 *               snapshot owns some blocks of its own
 *   --spread    map every K-th block of a volume (default 1: dense; 2: half
 *               the extents end at every block, the worst case for memory)
 *   --format-version  5 (default: count pages, opens without reading the
 *               trees; volume table blocks; segment tables with lives),
 *               4 (segment tables without lives) or 3 (the volume table
 *               inside the checkpoint record): cowbd upgrades either at
 *               its first checkpoint; or 2 (no space map: cowbd upgrades
 *               it at open, by reading every tree)
 * Prints what it made and how long it took.  Exit 0, 1 on failure, 2 on a
 * usage error.  Not installed: for scale tests and benchmarks
 * (docs/PERFORMANCE.md, "Metadata at scale").
 *
 * The shape.  Volume v maps blocks k = 0..n-1 at lba k*spread.  After its
 * snapshot j (j = 0..S-1) pass j writes its stripe again: the stripe's
 * blocks get new data blocks, and every tree node over them a new copy.
 * State t (t < S: snapshot t; t = S: the volume) holds the initial blocks
 * and passes 0..t-1.  A node is identified by (level, index, version q):
 * q the last pass before t that touched its range (-1: none), so node
 * (L, i) has 1 + |P(L, i)| copies, P the passes touching it.  Counts
 * (version 3): a data block counts the leaf copies holding it, a node the
 * parent copies and volume records pointing at it; pages, tables, the
 * record and its summary count nothing (the checkpoint owns them). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <time.h>

#include "../src/cpage.h"
#include "../src/format.h"
#include "blkdev.h"
#include "crc32c.h"
#include "names.h"

#define BS    FMT_BLOCK
#define CHUNK (1024u * 1024 / BS) /* volumes end on a whole MiB */

/* ---- the log stream ------------------------------------------------------
 * Every carried block goes into batches of one summary and up to
 * FMT_SUM_ENTRIES blocks, six full batches and one of 1 + PER_SEG - 6 *
 * FMT_SUM_ENTRIES blocks per segment, from segment 1 on: the address of
 * the c-th carried block is a formula (gen_addr). */
#define PER_SEG (FMT_SEG_BLOCKS - 7) /* carried blocks per segment: 1017 */

static uint64_t gen_addr(uint64_t c)
{
	uint64_t r = c % PER_SEG;
	return (1 + c / PER_SEG) * FMT_SEG_BLOCKS + r / FMT_SUM_ENTRIES * (FMT_SUM_ENTRIES + 1) +
	       1 + r % FMT_SUM_ENTRIES;
}

struct out {
	struct blkdev *dev;
	uint64_t nsegs;
	uint64_t c;             /* carried blocks so far */
	struct fmt_summary sum; /* the batch being filled */
	uint64_t sum_addr;      /* its address (0: none) */
	uint64_t lsn, boot_id;
	uint32_t prev_crc;
	uint64_t written; /* blocks written (the rest are holes) */
};

static int put_block(struct out *o, const void *blk, uint64_t addr)
{
	struct iovec v = {.iov_base = (void *)blk, .iov_len = BS};
	o->written++;
	return blkdev_pwritev(o->dev, &v, 1, addr * BS);
}

/* Seal the batch being filled and write its summary. */
static int seal(struct out *o)
{
	struct fmt_summary *s = &o->sum;
	if (!o->sum_addr)
		return 0;
	s->magic = FMT_SUM_MAGIC;
	s->self = o->sum_addr;
	s->lsn = o->lsn++;
	s->next_seg = o->sum_addr / FMT_SEG_BLOCKS + 1;
	s->boot_id = o->boot_id;
	s->prev_crc = o->prev_crc;
	s->time = (uint64_t)time(NULL);
	s->crc = 0;
	s->crc = crc32c(0, s, BS);
	o->prev_crc = s->crc;
	o->sum_addr = 0;
	return put_block(o, s, s->self);
}

/* Carry blk (NULL: zeroes, left a hole) with entry e at gen_addr(o->c). */
static int carry(struct out *o, const struct fmt_entry *e, const void *blk)
{
	uint64_t addr = gen_addr(o->c), r = o->c % PER_SEG;
	int err = 0;

	if (addr / FMT_SEG_BLOCKS + 2 >= o->nsegs) /* room for the record's segment and the next */
		return -ENOSPC;

	if (r % FMT_SUM_ENTRIES == 0) { /* a new batch */
		if ((err = seal(o)))
			return err;
		memset(&o->sum, 0, sizeof(o->sum));
		o->sum_addr = addr - 1;
	}
	o->sum.e[o->sum.nentries++] = *e;
	o->sum.nblocks++;
	o->c++;
	return blk ? put_block(o, blk, addr) : 0;
}

/* ---- the shape ------------------------------------------------------------ */

/* One tree level of a volume: node i exists if its range maps a block;
 * its copies are versions {-1} + P(i), P(i) = pass[start[i] .. start[i+1]),
 * ascending; copy m of node i is entry start[i] + i + m of addr[]/count[]. */
struct level {
	uint64_t nnodes;
	uint64_t *start; /* nnodes + 1 */
	uint32_t *pass;
	uint64_t *addr;  /* per copy: where it was written */
	uint32_t *count; /* per copy: parent copies + volume records */
};

struct vplan {
	uint64_t id, n, size, stripe, base; /* base: carried number of block 0 */
	unsigned snaps, levels;
	uint64_t *at, *len, *cum; /* per pass: stripe start, length, blocks before it */
	struct level lv[4];
};

struct gen {
	const char *path;
	uint64_t size, blocks;
	unsigned volumes, snapshots, spread, churn, version;
	struct vplan *v;
	uint64_t ndata, nnode_copies;
	uint64_t now; /* every record's creation time */
};

static const uint64_t span[5] = {1, FMT_FANOUT, (uint64_t)FMT_FANOUT *FMT_FANOUT,
                                 (uint64_t)FMT_FANOUT *FMT_FANOUT *FMT_FANOUT,
                                 (uint64_t)FMT_FANOUT *FMT_FANOUT *FMT_FANOUT *FMT_FANOUT};

/* Mapped blocks of v in lba range [lo, hi). */
static uint64_t mapped_in(const struct gen *g, const struct vplan *v, uint64_t lo, uint64_t hi)
{
	uint64_t a = (lo + g->spread - 1) / g->spread, b = (hi + g->spread - 1) / g->spread;
	if (b > v->n)
		b = v->n;
	return b > a ? b - a : 0;
}

/* Blocks mapped under node i of level l (0: the node does not exist). */
static uint64_t node_total(const struct gen *g, const struct vplan *v, unsigned l, uint64_t i)
{
	return mapped_in(g, v, i * span[l + 1], (i + 1) * span[l + 1]);
}

/* The blocks k of v under node i of level l: [*ka, *kb). */
static void node_kspan(const struct gen *g, const struct vplan *v, unsigned l, uint64_t i,
                       uint64_t *ka, uint64_t *kb)
{
	*ka = (i * span[l + 1] + g->spread - 1) / g->spread;
	*kb = ((i + 1) * span[l + 1] + g->spread - 1) / g->spread;
	if (*kb > v->n)
		*kb = v->n;
}

static bool in_pass(const struct vplan *v, uint32_t p, uint64_t k)
{
	return k >= v->at[p] && k < v->at[p] + v->len[p];
}

/* Does pass p write a block under node i of level l? */
static bool pass_touches(const struct gen *g, const struct vplan *v, uint32_t p, unsigned l,
                         uint64_t i)
{
	uint64_t ka, kb;
	node_kspan(g, v, l, i, &ka, &kb);
	return (v->at[p] > ka ? v->at[p] : ka) <
	       (v->at[p] + v->len[p] < kb ? v->at[p] + v->len[p] : kb);
}

/* P(i) for every node of level l, as CSR (counted, then filled). */
static int level_plan(const struct gen *g, struct vplan *v, unsigned l)
{
	struct level *L = &v->lv[l];
	uint64_t np;

	L->nnodes = v->n ? ((v->n - 1) * g->spread) / span[l + 1] + 1 : 0;
	L->start = calloc(L->nnodes + 1, sizeof(*L->start));
	if (!L->start)
		return -ENOMEM;
	for (int fill = 0; fill < 2; fill++) {
		for (uint32_t p = 0; p < v->snaps; p++) {
			if (!v->len[p])
				continue;
			uint64_t first = v->at[p] * g->spread / span[l + 1];
			uint64_t last = (v->at[p] + v->len[p] - 1) * g->spread / span[l + 1];
			for (uint64_t i = first; i <= last; i++)
				if (pass_touches(g, v, p, l, i)) {
					if (fill)
						L->pass[L->start[i + 1]] = p;
					L->start[i + 1]++;
				}
		}
		if (fill)
			break;
		for (uint64_t i = 0; i < L->nnodes; i++) /* counts -> where each node begins */
			L->start[i + 1] += L->start[i];
		np = L->start[L->nnodes];
		memmove(L->start + 1, L->start, L->nnodes * sizeof(*L->start));
		L->pass = malloc((np ? np : 1) * sizeof(*L->pass));
		if (!L->pass)
			return -ENOMEM;
	}
	L->addr = calloc(np + L->nnodes + 1, sizeof(*L->addr));
	L->count = calloc(np + L->nnodes + 1, sizeof(*L->count));
	return L->addr && L->count ? 0 : -ENOMEM;
}

/* Copies of node i: versions -1 and P(i); copy m's version. */
static uint64_t ncopies(const struct level *L, uint64_t i)
{
	return 1 + L->start[i + 1] - L->start[i];
}

static int64_t copy_version(const struct level *L, uint64_t i, uint64_t m)
{
	return m ? (int64_t)L->pass[L->start[i] + m - 1] : -1;
}

/* Entry of copy m of node i in addr[]/count[]. */
static uint64_t copy_slot(const struct level *L, uint64_t i, uint64_t m)
{
	return L->start[i] + i + m;
}

/* The copy of node i in a state whose passes end at q: the last pass of
 * P(i) <= q (0: none, version -1). */
static uint64_t copy_at(const struct level *L, uint64_t i, int64_t q)
{
	uint64_t m = ncopies(L, i) - 1;
	while (m && copy_version(L, i, m) > q)
		m--;
	return m;
}

/* The pass that wrote the data of block k as of version q of its leaf i
 * (-1: the first fill). */
static int64_t last_write(const struct vplan *v, uint64_t i, uint64_t k, int64_t q)
{
	const struct level *L = &v->lv[0];
	for (uint64_t m = ncopies(L, i) - 1; m; m--) {
		int64_t p = copy_version(L, i, m);
		if (p <= q && in_pass(v, (uint32_t)p, k))
			return p;
	}
	return -1;
}

/* Carried number of block k's data as written by pass p (-1: first). */
static uint64_t data_c(const struct vplan *v, uint64_t k, int64_t p)
{
	return v->base + (p < 0 ? k : v->n + v->cum[p] + (k - v->at[p]));
}

/* References to block k's data of pass p: the leaf copies holding it,
 * those from version p until the next pass that writes k again. */
static uint32_t data_count(const struct gen *g, const struct vplan *v, uint64_t k, int64_t p)
{
	const struct level *L = &v->lv[0];
	uint64_t i = k * g->spread / span[1];
	uint32_t n = 0;

	for (uint64_t m = 0; m < ncopies(L, i); m++) {
		int64_t q = copy_version(L, i, m);
		if (q > p && in_pass(v, (uint32_t)q, k))
			break;
		n += q >= p;
	}
	return n;
}

/* ---- planning -------------------------------------------------------------- */

static unsigned levels_for(uint64_t nblocks)
{
	for (unsigned l = 1; l <= 4; l++)
		if (nblocks <= span[l])
			return l;
	return 0;
}

/* Volume i's share of blocks and snapshots, its stripes and tree levels
 * (the generator's old rules: dense shares, the next stripe each pass). */
static int vol_plan(struct gen *g, unsigned i, uint64_t n, unsigned snaps, uint64_t *id)
{
	struct vplan *v = &g->v[i];
	int err = 0;

	v->id = (*id)++;
	*id += snaps;
	v->n = n;
	v->snaps = snaps;
	/* A whole number of MiB past the last mapped block. */
	v->size = ((n * g->spread + CHUNK - 1) / CHUNK) * CHUNK * BS;
	if (!v->size)
		v->size = CHUNK * BS;
	v->levels = levels_for(v->size / BS);
	if (!v->levels)
		return -EFBIG;
	v->stripe = n * g->churn / 100;
	v->at = calloc(snaps + 1, sizeof(*v->at));
	v->len = calloc(snaps + 1, sizeof(*v->len));
	v->cum = calloc(snaps + 1, sizeof(*v->cum));
	if (!v->at || !v->len || !v->cum)
		return -ENOMEM;
	for (unsigned p = 0; p < snaps; p++) {
		v->at[p] = v->stripe ? (p * v->stripe) % n : 0;
		v->len[p] = v->at[p] + v->stripe <= n ? v->stripe : n - v->at[p];
		v->cum[p + 1] = v->cum[p] + v->len[p];
	}
	v->base = g->ndata;
	g->ndata += n + v->cum[snaps];
	for (unsigned l = 0; l < v->levels && !err; l++)
		err = level_plan(g, v, l);
	return err;
}

static int plan(struct gen *g)
{
	uint64_t per = (g->blocks + g->volumes - 1) / g->volumes, left = g->blocks, id = 1;
	unsigned snaps_left = g->snapshots;
	int err = 0;

	g->v = calloc(g->volumes, sizeof(*g->v));
	if (!g->v)
		return -ENOMEM;
	for (unsigned i = 0; i < g->volumes && !err; i++) {
		uint64_t n = left < per ? left : per;
		unsigned snaps = (snaps_left + (g->volumes - i) - 1) / (g->volumes - i);
		left -= n;
		snaps_left -= snaps;
		err = vol_plan(g, i, n, snaps, &id);
	}
	return err;
}

static void plan_free(struct gen *g)
{
	for (unsigned i = 0; g->v && i < g->volumes; i++) {
		struct vplan *v = &g->v[i];
		free(v->at);
		free(v->len);
		free(v->cum);
		for (unsigned l = 0; l < 4; l++) {
			free(v->lv[l].start);
			free(v->lv[l].pass);
			free(v->lv[l].addr);
			free(v->lv[l].count);
		}
	}
	free(g->v);
}

/* ---- writing ------------------------------------------------------------- */

/* Every data block, volume by volume, first fill then pass by pass: holes
 * whose summary entries carry the CRC of zeroes. */
static int write_data(const struct gen *g, struct out *o, uint32_t zcrc)
{
	int err = 0;
	for (unsigned i = 0; i < g->volumes && !err; i++) {
		const struct vplan *v = &g->v[i];
		for (int64_t p = -1; p < (int64_t)v->snaps && !err; p++) {
			uint64_t k0 = p < 0 ? 0 : v->at[p],
			         k1 = p < 0 ? v->n : v->at[p] + v->len[p];
			for (uint64_t k = k0; k < k1 && !err; k++) {
				struct fmt_entry e = {.vol = (uint32_t)v->id,
				                      .type = FMT_E_DATA,
				                      .lba = k * g->spread,
				                      .crc = zcrc,
				                      .count = 1};
				err = carry(o, &e, NULL);
			}
		}
	}
	return err;
}

/* Seal img at the stream's next address and carry it. */
static int carry_sealed(struct out *o, const struct fmt_entry *e, void *img, uint64_t *addr)
{
	*addr = gen_addr(o->c);
	cpage_seal(img, *addr);
	return carry(o, e, img);
}

/* Copy m of node i of level l of v, its children's copies written. */
static int write_copy(const struct gen *g, struct out *o, struct vplan *v, unsigned l, uint64_t i,
                      uint64_t m, struct fmt_node *img)
{
	struct level *L = &v->lv[l];
	int64_t q = copy_version(L, i, m);
	uint64_t total = 0;

	memset(img, 0, sizeof(*img));
	img->magic = FMT_NODE_MAGIC;
	img->level = (uint8_t)l;
	for (unsigned s = 0; s < FMT_FANOUT; s++) {
		uint64_t j = i * FMT_FANOUT + s;
		if (l == 0) {
			if (j % g->spread || j / g->spread >= v->n)
				continue;
			uint64_t k = j / g->spread;
			img->slot[s] = gen_addr(data_c(v, k, last_write(v, i, k, q)));
			total++;
		} else {
			struct level *C = &v->lv[l - 1];
			if (j >= C->nnodes || !node_total(g, v, l - 1, j))
				continue;
			uint64_t c = copy_slot(C, j, copy_at(C, j, q));
			img->slot[s] = C->addr[c];
			C->count[c]++;
			total += node_total(g, v, l - 1, j);
		}
		img->nmapped++;
	}
	if (g->version > FMT_VERSION_V2) /* version 2 as older binaries wrote it: 0 */
		img->total = total;
	struct fmt_entry e = {.type = FMT_E_NODE, .count = 1};
	return carry_sealed(o, &e, img, &L->addr[copy_slot(L, i, m)]);
}

/* Every node copy of every volume, children first; then each state's
 * root counts its volume record. */
static int write_nodes(const struct gen *g, struct out *o)
{
	struct fmt_node *img = malloc(sizeof(*img));
	int err = img ? 0 : -ENOMEM;

	for (unsigned vi = 0; vi < g->volumes && !err; vi++) {
		struct vplan *v = &g->v[vi];
		for (unsigned l = 0; l < v->levels && !err; l++) {
			struct level *L = &v->lv[l];
			for (uint64_t i = 0; i < L->nnodes && !err; i++)
				for (uint64_t m = 0;
				     node_total(g, v, l, i) && m < ncopies(L, i) && !err; m++)
					err = write_copy(g, o, v, l, i, m, img);
		}
		struct level *R = &v->lv[v->levels - 1];
		for (int64_t t = 0; R->nnodes && t <= (int64_t)v->snaps; t++)
			R->count[copy_slot(R, 0, copy_at(R, 0, t - 1))]++;
	}
	free(img);
	return err;
}

/* The root of v in state t (snapshot t, or t = snaps: the volume). */
static uint64_t root_of(const struct vplan *v, unsigned t)
{
	const struct level *R = &v->lv[v->levels - 1];
	return R->nnodes ? R->addr[copy_slot(R, 0, copy_at(R, 0, (int64_t)t - 1))] : 0;
}

/* Counts of the counted blocks (data, then nodes) in the order they were
 * carried: one call per block. */
struct walk {
	const struct gen *g;
	unsigned vi, l;
	int64_t p;
	uint64_t k, i, m;
	bool nodes;
};

static uint32_t walk_next(struct walk *w)
{
	for (;;) {
		const struct vplan *v = &w->g->v[w->vi];
		if (!w->nodes) {
			uint64_t k1 = w->p < 0 ? v->n : v->at[w->p] + v->len[w->p];
			if (w->k < k1)
				return data_count(w->g, v, w->k++, w->p);
			if (++w->p < (int64_t)v->snaps) {
				w->k = v->at[w->p];
				continue;
			}
			w->p = -1;
			w->k = 0;
			if (++w->vi == w->g->volumes) {
				w->vi = 0;
				w->nodes = true;
			}
			continue;
		}
		const struct level *L = &v->lv[w->l];
		if (w->i < L->nnodes) {
			if (node_total(w->g, v, w->l, w->i) && w->m < ncopies(L, w->i))
				return L->count[copy_slot(L, w->i, w->m++)];
			w->i++;
			w->m = 0;
			continue;
		}
		w->i = 0;
		if (++w->l == v->levels) {
			w->l = 0;
			w->vi++;
		}
	}
}

/* Version 3: the count page of every segment holding the first ncounted
 * carried blocks; ents[] learns where each went and its live blocks. */
static int write_pages(const struct gen *g, struct out *o, uint64_t ncounted,
                       struct cpage_ent *ents)
{
	uint32_t *cnt = malloc(FMT_SEG_BLOCKS * sizeof(*cnt));
	struct fmt_cpage *img = malloc(2 * sizeof(*img));
	struct walk w = {.g = g, .p = -1};
	int err = cnt && img ? 0 : -ENOMEM;

	for (uint64_t c = 0; c < ncounted && !err;) {
		uint64_t s = gen_addr(c) / FMT_SEG_BLOCKS, addr[2] = {0, 0};
		uint32_t live = 0;
		memset(cnt, 0, FMT_SEG_BLOCKS * sizeof(*cnt));
		for (; c < ncounted && gen_addr(c) / FMT_SEG_BLOCKS == s; c++) {
			uint32_t refs = walk_next(&w);
			cnt[gen_addr(c) % FMT_SEG_BLOCKS] = refs;
			live += refs > 0;
		}
		unsigned n = cpage_encode(s, cnt, img);
		for (unsigned part = 0; part < n && !err; part++) {
			struct fmt_entry e = {
			    .vol = part, .type = FMT_E_CPAGE, .lba = s, .count = 1};
			err = carry_sealed(o, &e, &img[part], &addr[part]);
		}
		ents[s] = (struct cpage_ent){.page0 = addr[0], .page1 = addr[1], .live = live};
	}
	free(cnt);
	free(img);
	return err;
}

/* Segment tables in a pool of version v (3 on): one address each in the
 * record. */
static uint64_t ntab_of(const struct out *o, unsigned v)
{
	unsigned per = cpage_stab_entries(v);
	return (o->nsegs + per - 1) / per;
}

/* Version 3: every segment table (segments 0 .. nsegs-1), addresses to
 * taddr[]; from version 5 with each segment's life and forwarding chain
 * (ents[] has 0 for both: no segment was ever retired). */
static int write_tables(struct out *o, unsigned version, const struct cpage_ent *ents,
                        uint64_t *taddr)
{
	unsigned per = cpage_stab_entries(version);
	union {
		struct fmt_stab v3;
		struct fmt_stab5 v5;
	} *t = malloc(sizeof(*t));
	int err = t ? 0 : -ENOMEM;

	for (uint64_t first = 0, i = 0; first < o->nsegs && !err; first += per, i++) {
		unsigned n = (unsigned)(o->nsegs - first < per ? o->nsegs - first : per);
		struct fmt_entry e = {.type = FMT_E_STAB, .lba = i, .count = 1};
		if (version > FMT_VERSION_V4)
			cpage_stab5_encode(&t->v5, first, n, ents + first);
		else
			cpage_stab_encode(&t->v3, first, n, ents + first);
		err = carry_sealed(o, &e, t, &taddr[i]);
	}
	free(t);
	return err;
}

static uint64_t nvols_all(const struct gen *g)
{
	return g->volumes + g->snapshots;
}

/* Record k of the volume table: volume i, then its snapshots (t = 1..). */
static void vol_record(const struct gen *g, uint64_t k, struct fmt_vol *fv)
{
	unsigned i = 0;
	while (k > g->v[i].snaps)
		k -= g->v[i++].snaps + 1;
	const struct vplan *v = &g->v[i];
	unsigned t = (unsigned)k;
	*fv = (struct fmt_vol){.id = t ? v->id + t : v->id,
	                       .size = v->size,
	                       .root = root_of(v, t ? t - 1 : v->snaps),
	                       .parent = t ? v->id : 0,
	                       .created = g->now,
	                       .levels = (uint8_t)v->levels,
	                       .flags = t ? FMT_VOL_SNAPSHOT : 0};
	uint64_t total = node_total(g, v, v->levels - 1, 0);
	for (unsigned b = 0; g->version > FMT_VERSION_V3 && b < sizeof(fv->total); b++)
		fv->total[b] = (uint8_t)(total >> (8 * b));
	if (t)
		snprintf(fv->name, sizeof(fv->name), "s%u", t - 1);
	else
		snprintf(fv->name, sizeof(fv->name), "vol%u", i);
}

static uint64_t nvtab_of(const struct gen *g)
{
	return (nvols_all(g) + FMT_VTAB_ENTRIES - 1) / FMT_VTAB_ENTRIES;
}

/* Version 4: the volume table blocks (record k in slot k), addresses to vaddr[]. */
static int write_vtab(const struct gen *g, struct out *o, uint64_t *vaddr)
{
	struct fmt_vtab *t = malloc(sizeof(*t));
	int err = t ? 0 : -ENOMEM;

	for (uint64_t b = 0, k = 0; b < nvtab_of(g) && !err; b++) {
		struct fmt_entry e = {.type = FMT_E_VTAB, .lba = b, .count = 1};
		memset(t, 0, sizeof(*t));
		t->magic = FMT_VTAB_MAGIC;
		t->first_slot = k;
		for (; t->n < FMT_VTAB_ENTRIES && k < nvols_all(g); k++)
			vol_record(g, k, &t->v[t->n++]);
		err = carry_sealed(o, &e, t, &vaddr[b]);
	}
	free(t);
	return err;
}

/* The record's blocks: header; the volume table's blocks (4) or a fmt_vol
 * per volume then per snapshot of it (2, 3); the segment tables'
 * addresses (3 on) or the bitmap of segments in use (2: all up to the
 * log's head and the one after). */
static void encode_record(const struct gen *g, const struct out *o, uint64_t head,
                          const uint64_t *taddr, const uint64_t *vaddr, uint8_t *rec)
{
	struct fmt_ckpt *h = (struct fmt_ckpt *)rec;
	uint8_t *p = rec + sizeof(*h);

	*h = (struct fmt_ckpt){.magic = FMT_CKPT_MAGIC,
	                       .version = g->version,
	                       .lsn = o->lsn,
	                       .next_vol_id = 1 + nvols_all(g),
	                       .nvols = nvols_all(g),
	                       .nsegs = o->nsegs,
	                       .head_seg = head};
	if (g->version > FMT_VERSION_V3) {
		h->nvtab = nvtab_of(g);
		memcpy(p, vaddr, h->nvtab * 8);
		p += h->nvtab * 8;
	} else {
		for (uint64_t k = 0; k < nvols_all(g); k++, p += sizeof(struct fmt_vol))
			vol_record(g, k, (struct fmt_vol *)p);
	}
	if (g->version > FMT_VERSION_V2) {
		memcpy(p, taddr, ntab_of(o, g->version) * 8);
		return;
	}
	for (uint64_t s = 0; s <= head + 1; s++)
		p[s / 8] |= (uint8_t)(1u << (s % 8));
}

/* The checkpoint batch after the stream (in the next segment if it does
 * not fit in this one); sb learns where. */
static int write_record(const struct gen *g, struct out *o, const uint64_t *taddr,
                        const uint64_t *vaddr, struct fmt_super *sb)
{
	size_t bytes =
	    sizeof(struct fmt_ckpt) +
	    (g->version > FMT_VERSION_V3 ? nvtab_of(g) * 8
	                                 : nvols_all(g) * sizeof(struct fmt_vol)) +
	    (g->version > FMT_VERSION_V2 ? ntab_of(o, g->version) * 8 : (o->nsegs + 7) / 8);
	unsigned nblk = (unsigned)((bytes + BS - 1) / BS);
	uint64_t at = o->c ? gen_addr(o->c - 1) + 1 : FMT_SEG_BLOCKS;
	int err = seal(o);

	if (err)
		return err;
	if (nblk > FMT_SUM_ENTRIES)
		return -E2BIG;
	if (at % FMT_SEG_BLOCKS + 1 + nblk > FMT_SEG_BLOCKS)
		at = (at / FMT_SEG_BLOCKS + 1) * FMT_SEG_BLOCKS;
	if (at / FMT_SEG_BLOCKS + 1 >= o->nsegs)
		return -ENOSPC;
	uint8_t *rec = calloc(nblk, BS);
	if (!rec)
		return -ENOMEM;
	encode_record(g, o, at / FMT_SEG_BLOCKS, taddr, vaddr, rec);
	memset(&o->sum, 0, sizeof(o->sum));
	o->sum_addr = at;
	for (unsigned i = 0; i < nblk && !err; i++) {
		const uint8_t *b = rec + (size_t)i * BS;
		o->sum.e[i] = (struct fmt_entry){
		    .type = FMT_E_CKPT, .lba = i, .crc = crc32c(0, b, BS), .count = 1};
		o->sum.nentries++;
		o->sum.nblocks++;
		err = put_block(o, b, at + 1 + i);
	}
	free(rec);
	if (!err)
		err = seal(o);
	sb->ckpt_addr = at;
	sb->ckpt_lsn = o->sum.lsn;
	sb->ckpt_crc = o->sum.crc;
	return err;
}

/* Both slots, the same checkpoint (slot 0 the newer). */
static int write_super(struct out *o, struct fmt_super *sb, unsigned version)
{
	int err = 0;
	memcpy(sb->magic, FMT_SB_MAGIC, 8);
	sb->version = version;
	sb->block_size = FMT_BLOCK;
	sb->seg_blocks = FMT_SEG_BLOCKS;
	sb->nsegs = o->nsegs;
	sb->created = (uint64_t)time(NULL);
	if (getrandom(sb->uuid, sizeof(sb->uuid), 0) != sizeof(sb->uuid))
		return -EIO;
	for (unsigned slot = 0; slot < 2 && !err; slot++) {
		sb->generation = 2 - slot;
		sb->self = slot;
		sb->crc = 0;
		sb->crc = crc32c(0, sb, sizeof(*sb));
		err = put_block(o, sb, slot);
	}
	return err;
}

/* ---- the command ----------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: cowbd-genpool POOL --size SIZE --blocks N [--volumes V] [--snapshots S]\n"
	        "                     [--spread K] [--churn PCT] [--format-version 2|3|4|5]\n");
}

static int parse(int argc, char **argv, struct gen *g)
{
	static const struct option opts[] = {
	    {"size", required_argument, NULL, 's'},
	    {"blocks", required_argument, NULL, 'b'},
	    {"volumes", required_argument, NULL, 'v'},
	    {"snapshots", required_argument, NULL, 'n'},
	    {"spread", required_argument, NULL, 'k'},
	    {"churn", required_argument, NULL, 'c'},
	    {"format-version", required_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;
	*g = (struct gen){.volumes = 1, .spread = 1, .churn = 1, .version = FMT_VERSION};
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *end = NULL;
		unsigned long long v = 0;
		if (c != 's' && c != 'h' && c != '?') {
			errno = 0;
			v = strtoull(optarg, &end, 10);
			if (errno || end == optarg || *end || (c != 'b' && v > 1000000)) {
				fprintf(stderr, "cowbd-genpool: bad number '%s'\n", optarg);
				return 2;
			}
		}
		switch (c) {
		case 's': {
			char msg[NAMES_MSG_MAX];
			if (names_parse_size(optarg, 1, UINT64_MAX, &g->size, msg, sizeof(msg))) {
				fprintf(stderr, "cowbd-genpool: --size: %s\n", msg);
				return 2;
			}
			break;
		}
		case 'b':
			g->blocks = v;
			break;
		case 'v':
			g->volumes = (unsigned)v;
			break;
		case 'n':
			g->snapshots = (unsigned)v;
			break;
		case 'k':
			g->spread = (unsigned)v;
			break;
		case 'c':
			g->churn = (unsigned)v;
			break;
		case 'f':
			g->version = (unsigned)v;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1 || !g->size || !g->blocks || !g->volumes || !g->spread ||
	    g->churn > 100 || g->version < FMT_VERSION_V2 || g->version > FMT_VERSION) {
		usage(stderr);
		return 2;
	}
	g->path = argv[optind];
	return 0;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int fail(const char *what, int err)
{
	fprintf(stderr, "cowbd-genpool: %s: %s\n", what,
	        err == -ENOSPC ? "the pool is too small for these blocks" : strerror(-err));
	return 1;
}

/* Data, nodes, (3 on) pages and tables, (4 on) the volume table, the
 * record, the superblocks. */
static int generate(struct gen *g, struct out *o)
{
	uint64_t ntab = ntab_of(o, g->version);
	struct cpage_ent *ents = calloc(o->nsegs, sizeof(*ents));
	uint64_t *taddr = calloc(ntab, sizeof(*taddr));
	uint64_t *vaddr = calloc(nvtab_of(g) + 1, sizeof(*vaddr));
	struct fmt_super sb = {0};
	int err = ents && taddr && vaddr ? 0 : -ENOMEM;

	g->now = (uint64_t)time(NULL);
	char *zero = calloc(1, BS);

	if (!err && !zero)
		err = -ENOMEM;
	if (!err)
		err = write_data(g, o, crc32c(0, zero, BS));
	if (!err)
		err = write_nodes(g, o);
	g->nnode_copies = o->c - g->ndata;
	if (!err && g->version > FMT_VERSION_V2)
		err = write_pages(g, o, o->c, ents);
	if (!err && g->version > FMT_VERSION_V2)
		err = write_tables(o, g->version, ents, taddr);
	if (!err && g->version > FMT_VERSION_V3)
		err = write_vtab(g, o, vaddr);
	if (!err)
		err = write_record(g, o, taddr, vaddr, &sb);
	if (!err)
		err = blkdev_flush(o->dev);
	if (!err)
		err = write_super(o, &sb, g->version);
	if (!err)
		err = blkdev_flush(o->dev);
	free(zero);
	free(ents);
	free(taddr);
	free(vaddr);
	return err;
}

int main(int argc, char **argv)
{
	struct gen g;
	int rc = parse(argc, argv, &g), err;
	if (rc)
		return rc;

	struct blkdev *dev = blkdev_create_file(g.path, g.size);
	if (!dev)
		return fail(g.path, -errno);
	struct out o = {.dev = dev, .nsegs = dev->size / FMT_SEG_BYTES, .lsn = 1};
	double t0 = now();
	if (getrandom(&o.boot_id, sizeof(o.boot_id), 0) != sizeof(o.boot_id))
		o.boot_id = (uint64_t)time(NULL);
	err = plan(&g);
	if (!err)
		err = generate(&g, &o);
	plan_free(&g);
	blkdev_close(dev);
	if (err)
		return fail("writing", err);
	printf("%s: %llu blocks mapped in %u volumes and %u snapshots (spread %u, churn %u%%), "
	       "format version %u; %llu data blocks left as holes, %llu node blocks, %llu blocks "
	       "written; %.1f s\n",
	       g.path, (unsigned long long)g.blocks, g.volumes, g.snapshots, g.spread, g.churn,
	       g.version, (unsigned long long)g.ndata, (unsigned long long)g.nnode_copies,
	       (unsigned long long)o.written, now() - t0);
	return 0;
}
