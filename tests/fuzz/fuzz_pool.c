/* fuzz_pool.c — libFuzzer target for opening a damaged pool: superblock,
 * checkpoint, summary, node and control-record validation and recovery
 * (store_open read-only, store_check, reads), as cowbd-check uses them.
 *
 * Two small valid pools are built once (64 MiB, the minimum): volumes,
 * data, a snapshot, a clone, trims, a checkpoint, then more data, trims and
 * control operations in the log after it, as a daemon killed at that
 * moment leaves it.  The second (the compacted seed) also filled a segment
 * and trimmed it again before the checkpoint, and compacted: the blocks
 * left in that segment were copied (MOVE2 entries), the segment retired
 * (its life in the segment table moved on) and the checkpoint wrote its
 * forwarding blocks (struct fmt_fwd); and it has a chain of three
 * forwarding blocks of two tags in a segment of life 3 and a life without
 * a table (install_fwd), which no small compaction makes.  Their images
 * are kept as the seeds;
 * the metadata blocks of each (both superblocks, every summary, every
 * block a summary carries: nodes, count pages, segment tables, volume
 * table and forwarding blocks too) are listed in scan order.
 * Each input is a list of patches onto the blocks of one seed, applied to
 * a copy-on-write view of it (tests/lib/faultdev: a device that reads the
 * seed, shows only the patched blocks over it and aborts on a write), so
 * an execution costs one open, not a format.
 *
 * Input: byte 0 holds flags (bit 0: reseal — after patching, recompute
 * every checksum the patches broke, in dependency order: carried block →
 * its summary entry → summary → next summary's prev_crc and superblock
 * ckpt_crc → superblock; nodes carry their own CRC — so the fuzzer gets
 * past the checksums to the semantic checks behind them; bit 2: patch the
 * compacted seed, so inputs saved before it existed keep their meaning).
 * Then records:
 *   op (1 byte): bits 0-2 n-1 (n = 1..8 bytes), bits 3-4 how:
 *                0 write, 1 xor, 2 add (n-byte little-endian), 3 write a
 *                boundary value (table below; index in the first byte)
 *   idx (2 bytes LE): metadata block, modulo their number
 *   off (2 bytes LE): with bit 15 clear, the byte in the block (modulo
 *                4096 - n); with bit 15 set, a field of the block's kind
 *                (superblock, summary header or entry, node header or
 *                slot, checkpoint header or volume record, control op,
 *                count page, segment table header or entry (version 5:
 *                page, live, life, forwarding chain), volume table block,
 *                forwarding block header (seg, next, tag, n) or entry
 *                (whole, its index, its address)), numbered by the low
 *                bits; n is then the field's width
 *   n bytes of operand
 * Fields make the interesting hits likely: a random byte offset lands on
 * nvols or a node's level about once in 4096 tries.
 *
 * Checked: the open either succeeds or returns NULL with errno EILSEQ,
 * EPROTONOSUPPORT or ENODATA and a reason in why; a read-only open never writes; an
 * opened store survives store_check, store_list, reads and store_map of
 * every volume, and store_close; no leak, no hang, no sanitizer report.
 */
#undef NDEBUG
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "crc32c.h"
#include "faultdev.h"
#include "format.h"
#include "fwd.h"
#include "log.h"
#include "say.h"
#include "store.h"
#include "store_int.h"
#include "testpool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define POOL_SEGS  FMT_MIN_SEGS
#define POOL_BYTES ((uint64_t)POOL_SEGS * FMT_SEG_BYTES)
#define NBLOCKS    (POOL_BYTES / FMT_BLOCK)
#define MAX_META   4096

/* ---- the seed and its map ------------------------------------------- */

/* M_SEALED: a count page, segment table, volume table or forwarding block
 * (its own CRC at offset 4, like a node). */
enum meta_kind { M_SUPER, M_SUMMARY, M_NODE, M_CARRIED, M_SEALED };

struct meta {
	uint64_t addr;
	enum meta_kind kind;
	int sum;        /* M_CARRIED, M_SEALED: index of the summary in sums[] */
	unsigned entry; /* M_CARRIED, M_SEALED: entry index in that summary */
};

struct sum_info {
	uint64_t addr, lsn;
};

/* One seed pool and the map of its metadata blocks. */
struct seed {
	const char *name;
	uint8_t *img;
	struct blkdev *dev; /* holds img */
	uint32_t version;   /* its superblock's */
	bool no_data;       /* list no data block (the other seed has them) */
	struct meta meta[MAX_META];
	unsigned nmeta;
	struct sum_info sums[MAX_META];
	unsigned nsums;
	int meta_of[NBLOCKS]; /* block -> index in meta[] + 1, 0 = none */
};

#define SEED_COMPACTED 4u /* the flag (byte 0) that picks seeds[1] */

static struct seed seeds[2] = {{.name = "seed"}, {.name = "compacted seed", .no_data = true}};
static bool verbose; /* FUZZ_VERBOSE set: log the seeds, the patches, the store */
static const char *const kind_name[] = {"superblock", "summary", "node", "carried block",
                                        "sealed block"};

/* ---- building the seed ------------------------------------------------ */

static void put(struct store *st, const char *name, uint64_t lba, unsigned nblk, uint8_t fill)
{
	static uint8_t buf[16 * FMT_BLOCK];
	struct vol *v;
	int err;

	assert(nblk <= 16);
	memset(buf, fill, sizeof(buf));
	for (unsigned i = 0; i < nblk; i++)
		memcpy(buf + i * FMT_BLOCK, &lba, sizeof(lba)); /* every block differs */
	if ((err = store_vol_open(st, name, &v)))
		testpool_die(name, err);
	if ((err = store_write(v, buf, lba * FMT_BLOCK, nblk * FMT_BLOCK, 0)))
		testpool_die("store_write", err);
	store_vol_close(v);
}

static void trim(struct store *st, const char *name, uint64_t lba, unsigned nblk)
{
	struct vol *v;
	int err;

	if ((err = store_vol_open(st, name, &v)))
		testpool_die(name, err);
	if ((err = store_trim(v, lba * FMT_BLOCK, nblk * FMT_BLOCK, 0)) || (err = store_flush(v)))
		testpool_die("store_trim", err);
	store_vol_close(v);
}

/* Fill a segment with blocks of "a" and trim them again: the log moves on
 * to the next segment and leaves this one mostly dead, with the blocks
 * written before still live in it; a checkpoint, so that the last one is
 * no longer in it either; compact it (copies, a retired life, forwarding
 * entries). */
static void retire_a_segment(struct store *st)
{
	size_t len = 128 * FMT_BLOCK; /* few batches: few summaries to list */
	uint8_t *buf = malloc(len);
	struct vol *v;
	int64_t moved;
	int err;

	if (!buf)
		testpool_die("malloc", ENOMEM);
	memset(buf, 10, len);
	if ((err = store_vol_open(st, "a", &v)))
		testpool_die("a", err);
	for (uint64_t lba = 1024; lba < 2048; lba += 128)
		if ((err = store_write(v, buf, lba * FMT_BLOCK, len, 0)))
			testpool_die("store_write", err);
	store_vol_close(v);
	free(buf);
	trim(st, "a", 1024, 1024);
	if ((err = store_checkpoint(st)))
		testpool_die("store_checkpoint", err);
	if ((moved = store_compact(st)) <= 0)
		testpool_die("store_compact moved nothing", moved ? (int)-moved : EAGAIN);
}

/* Forwarding state no small compaction makes, installed while the store
 * is idle (as test_ckpt_fwd does) for the next checkpoint to write: in
 * segment FWD_SEG (which the log does not reach) life 3, 506 entries of
 * tag 1 (a chain of two blocks) and 3 of tag 2 (a third block), each to
 * one of the last blocks of the log's segment (in use: cowbd-check
 * refuses a copy in a free segment; and past what the log writes there,
 * so that no other name is forwarded to them); in FWD_SEG + 1 life 1 and
 * no table.  No tree names these blocks: they are there for the decoder,
 * the chain walk and the check. */
#define FWD_SEG 14u
static void install_fwd(struct store *st)
{
	static struct fwd_ent e[509];
	struct fwd *f = alloc_fwd(st->a);
	uint64_t to = (log_head_seg(st->log) + 1) * FMT_SEG_BLOCKS - 509;
	int err;

	for (unsigned i = 0; i < 509; i++)
		e[i] = (struct fwd_ent){.blk = to + i,
		                        .tag = i < 506 ? 1 : 2,
		                        .idx = (uint16_t)(i < 506 ? i : 100 * (i - 505))};
	if ((err = fwd_seg_install(f, FWD_SEG, 3, e, 509)) ||
	    (err = fwd_seg_install(f, FWD_SEG + 1, 1, NULL, 0)))
		testpool_die("fwd_seg_install", -err);
	fwd_mark_dirty(f, FWD_SEG);
	fwd_mark_dirty(f, FWD_SEG + 1);
}

static void build_seed(struct seed *sd, bool compacted)
{
	struct store_opts opts = {.readers = 1, .checkpoint_secs = 3600};
	struct blkdev *dev = blkdev_mem_new(POOL_BYTES);
	struct store *st;
	int err;

	if (!dev)
		testpool_die("blkdev_mem_new", errno);
	st = testpool_new(dev, &opts);
	/* "a" needs a two-level tree (more than 504 blocks). */
	if ((err = store_vol_create(st, "a", 8u << 20)) ||
	    (err = store_vol_create(st, "b", (1u << 20) + 512)))
		testpool_die("store_vol_create", err);
	put(st, "a", 0, 16, 1);
	put(st, "a", 700, 4, 2);
	put(st, "a", 2047, 1, 3);
	put(st, "b", 255, 1, 4);
	if ((err = store_snap_create(st, "a@s1")))
		testpool_die("store_snap_create", err);
	put(st, "a", 8, 4, 5);
	trim(st, "a", 700, 2);
	if ((err = store_clone(st, "a@s1", "c")))
		testpool_die("store_clone", err);
	put(st, "c", 1000, 3, 6);
	if (compacted) {
		retire_a_segment(st);
		install_fwd(st);
	}
	if ((err = store_checkpoint(st)))
		testpool_die("store_checkpoint", err);
	/* The log after the checkpoint: data, a trim, control operations. */
	put(st, "a", 1, 2, 7);
	trim(st, "c", 0, 4);
	if ((err = store_vol_create(st, "d", 64u << 10)) || (err = store_snap_create(st, "c@s2")))
		testpool_die("store control", err);
	put(st, "d", 3, 1, 8);
	put(st, "c", 1001, 1, 9);
	trim(st, "b", 255, 1); /* flushes */
	/* Copy what a kill -9 now would leave; store_close would checkpoint. */
	sd->img = malloc(POOL_BYTES);
	if (!sd->img || (err = blkdev_pread(dev, sd->img, POOL_BYTES, 0)))
		testpool_die("copy the seed", err ? err : ENOMEM);
	store_close(st);
	/* What every run reads, through its patches (never flushed: only
	 * what reads see matters). */
	struct iovec iov = {.iov_base = sd->img, .iov_len = POOL_BYTES};
	sd->dev = blkdev_mem_new(POOL_BYTES);
	if (!sd->dev || (err = blkdev_pwritev(sd->dev, &iov, 1, 0)))
		testpool_die("the seed device", err ? err : ENOMEM);
}

static void add_meta(struct seed *sd, uint64_t addr, enum meta_kind kind, int sum, unsigned entry)
{
	if (sd->nmeta == MAX_META || sd->meta_of[addr])
		return;
	sd->meta[sd->nmeta] = (struct meta){addr, kind, sum, entry};
	sd->meta_of[addr] = (int)++sd->nmeta;
}

static bool summary_ok(const struct fmt_summary *s, uint64_t addr)
{
	struct fmt_summary c;

	if (s->magic != FMT_SUM_MAGIC || s->self != addr || s->nentries > FMT_SUM_ENTRIES)
		return false;
	memcpy(&c, s, sizeof(c));
	c.crc = 0;
	return crc32c(0, &c, sizeof(c)) == s->crc;
}

/* List the metadata blocks of the seed: the batches lie contiguous from
 * the start of each segment.  Learn its version from the newer
 * superblock. */
static void map_seed(struct seed *sd)
{
	uint64_t gen = 0;

	for (uint64_t slot = 0; slot < 2; slot++) {
		const struct fmt_super *sb = (const void *)(sd->img + slot * FMT_BLOCK);
		if (sb->generation > gen) {
			gen = sb->generation;
			sd->version = sb->version;
		}
	}
	add_meta(sd, 0, M_SUPER, -1, 0);
	add_meta(sd, 1, M_SUPER, -1, 0);
	for (uint64_t seg = 1; seg < POOL_SEGS; seg++) {
		uint64_t pos = seg * FMT_SEG_BLOCKS;

		while (pos < (seg + 1) * FMT_SEG_BLOCKS) {
			const struct fmt_summary *s = (const void *)(sd->img + pos * FMT_BLOCK);
			unsigned k = 0;

			if (!summary_ok(s, pos) || sd->nsums == MAX_META)
				break;
			sd->sums[sd->nsums] = (struct sum_info){pos, s->lsn};
			add_meta(sd, pos, M_SUMMARY, (int)sd->nsums, 0);
			for (unsigned i = 0; i < s->nentries; i++) {
				if (s->e[i].type == FMT_E_TRIM)
					continue;
				k++;
				if (sd->no_data && s->e[i].type == FMT_E_DATA)
					continue;
				add_meta(sd, pos + k,
				         s->e[i].type == FMT_E_NODE       ? M_NODE
				         : fmt_entry_sealed(s->e[i].type) ? M_SEALED
				                                          : M_CARRIED,
				         (int)sd->nsums, i);
			}
			sd->nsums++;
			pos += 1 + s->nblocks;
		}
	}
}

/* The type of the summary entry that carries m (M_CARRIED, M_SEALED). */
static unsigned carried_type(const struct seed *sd, const struct meta *m)
{
	const struct fmt_summary *s = (const void *)(sd->img + sd->sums[m->sum].addr * FMT_BLOCK);
	return s->e[m->entry].type;
}

/* ---- patching ----------------------------------------------------------- */

static const uint64_t boundary[] = {
    0,
    1,
    2,
    3,
    4,
    5,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fffffff,
    0x80000000,
    0xffffffff,
    0x100000000ull,
    0x7fffffffffffffffull,
    0x8000000000000000ull,
    0xffffffffffffffffull,
    POOL_SEGS - 1,
    POOL_SEGS,
    POOL_SEGS + 1,
    FMT_SEG_BLOCKS - 1,
    FMT_SEG_BLOCKS,
    NBLOCKS - 1,
    NBLOCKS,
    FMT_SUM_ENTRIES,
    FMT_SUM_ENTRIES + 1,
    FMT_FANOUT - 1,
    FMT_FANOUT,
    FMT_BLOCK,
    0x0200000000000000ull, /* times sizeof(struct fmt_vol) wraps */
    0x0100000000000000ull,
};

/* A field of a metadata block: offset and width. */
struct field {
	uint16_t off, n;
};
#define F(type, member)                                                                            \
	{                                                                                          \
		offsetof(type, member), sizeof(((type *)0)->member)                                \
	}
#define FN(type, member, n)                                                                        \
	{                                                                                          \
		offsetof(type, member), n                                                          \
	}

static const struct field super_fields[] = {
    F(struct fmt_super, crc),        F(struct fmt_super, version),
    F(struct fmt_super, self),       F(struct fmt_super, generation),
    F(struct fmt_super, block_size), F(struct fmt_super, seg_blocks),
    F(struct fmt_super, nsegs),      F(struct fmt_super, ckpt_addr),
    F(struct fmt_super, ckpt_lsn),   F(struct fmt_super, ckpt_crc),
    FN(struct fmt_super, magic, 8),
};
static const struct field sum_fields[] = {
    F(struct fmt_summary, magic),    F(struct fmt_summary, crc),
    F(struct fmt_summary, self),     F(struct fmt_summary, lsn),
    F(struct fmt_summary, next_seg), F(struct fmt_summary, prev_crc),
    F(struct fmt_summary, nentries), F(struct fmt_summary, nblocks),
};
static const struct field entry_fields[] = {
    F(struct fmt_entry, vol), F(struct fmt_entry, type),  F(struct fmt_entry, lba),
    F(struct fmt_entry, crc), F(struct fmt_entry, count),
};
static const struct field node_fields[] = {
    F(struct fmt_node, magic), F(struct fmt_node, crc),     F(struct fmt_node, self),
    F(struct fmt_node, level), F(struct fmt_node, nmapped),
};
static const struct field cpage_fields[] = {
    F(struct fmt_cpage, magic), F(struct fmt_cpage, crc),  F(struct fmt_cpage, self),
    F(struct fmt_cpage, seg),   F(struct fmt_cpage, enc),  F(struct fmt_cpage, part),
    F(struct fmt_cpage, nover), F(struct fmt_cpage, live),
};
static const struct field stab_fields[] = {
    F(struct fmt_stab, magic),     F(struct fmt_stab, crc), F(struct fmt_stab, self),
    F(struct fmt_stab, first_seg), F(struct fmt_stab, n),
};
static const struct field stab5_entry_fields[] = {
    F(struct fmt_stab_entry5, page0), F(struct fmt_stab_entry5, page1_live),
    F(struct fmt_stab_entry5, fwd),   F(struct fmt_stab_entry5, life),
    F(struct fmt_stab_entry5, held),  FN(struct fmt_stab_entry5, page1_live, 6),
};
static const struct field fwd_fields[] = {
    F(struct fmt_fwd, magic), F(struct fmt_fwd, crc),  F(struct fmt_fwd, self),
    F(struct fmt_fwd, seg),   F(struct fmt_fwd, next), F(struct fmt_fwd, tag),
    F(struct fmt_fwd, n),
};
/* Of one forwarding entry: all of it, its index (the top 16 bits: a new
 * index puts the entries out of order or repeats one), its address. */
static const struct field fwd_entry_fields[] = {{0, 8}, {6, 2}, {0, 6}};
static const struct field vtab_fields[] = {
    F(struct fmt_vtab, magic),      F(struct fmt_vtab, crc), F(struct fmt_vtab, self),
    F(struct fmt_vtab, first_slot), F(struct fmt_vtab, n),
};
static const struct field ckpt_fields[] = {
    F(struct fmt_ckpt, magic),       F(struct fmt_ckpt, version), F(struct fmt_ckpt, lsn),
    F(struct fmt_ckpt, next_vol_id), F(struct fmt_ckpt, nvols),   F(struct fmt_ckpt, nsegs),
    F(struct fmt_ckpt, head_seg),    F(struct fmt_ckpt, nvtab),
};
static const struct field vol_fields[] = {
    F(struct fmt_vol, id),        F(struct fmt_vol, size),   F(struct fmt_vol, root),
    F(struct fmt_vol, parent),    F(struct fmt_vol, origin), F(struct fmt_vol, created),
    F(struct fmt_vol, levels),    F(struct fmt_vol, flags),  FN(struct fmt_vol, name, 8),
    FN(struct fmt_vol, total, 6),
};
static const struct field op_fields[] = {
    F(struct fmt_op, magic),    F(struct fmt_op, kind), F(struct fmt_op, id),
    F(struct fmt_op, src),      F(struct fmt_op, size), F(struct fmt_op, created),
    FN(struct fmt_op, name, 8),
};
#define NF(a) (sizeof(a) / sizeof((a)[0]))

/* Field f of a sealed block of sd: a segment table (either form) or a
 * forwarding block, header fields first, then those of the entries in
 * use.  False for another kind. */
static bool pick_table_field(const struct seed *sd, const struct meta *m, unsigned f,
                             struct field *out)
{
	const uint8_t *b = sd->img + m->addr * FMT_BLOCK;
	unsigned type = carried_type(sd, m), j;

	if (type == FMT_E_STAB && sd->version > FMT_VERSION_V4) {
		const struct fmt_stab5 *t = (const void *)b;
		if (f % 4 == 0) {
			*out = stab_fields[(f / 4) % NF(stab_fields)];
			return true;
		}
		j = (f / 4 / NF(stab5_entry_fields)) % (t->n ? t->n : 1);
		*out = stab5_entry_fields[(f / 4) % NF(stab5_entry_fields)];
		out->off += offsetof(struct fmt_stab5, e) + j * sizeof(struct fmt_stab_entry5);
		return true;
	}
	if (type == FMT_E_STAB) {
		if (f % 4 == 0) {
			*out = stab_fields[(f / 4) % NF(stab_fields)];
			return true;
		}
		/* an entry's page address or live count */
		*out = (struct field){offsetof(struct fmt_stab, e) + 8 * ((f / 4) % 64), 8};
		return true;
	}
	if (type == FMT_E_FWD) {
		const struct fmt_fwd *fw = (const void *)b;
		if (f % 4 == 0) {
			*out = fwd_fields[(f / 4) % NF(fwd_fields)];
			return true;
		}
		j = (f / 4 / NF(fwd_entry_fields)) % (fw->n ? fw->n : 1);
		*out = fwd_entry_fields[(f / 4) % NF(fwd_entry_fields)];
		out->off += offsetof(struct fmt_fwd, ent) + 8 * j;
		return true;
	}
	return false;
}

/* Field number f of metadata block m of sd (header fields first, then
 * those of the first few entries, slots or volume records).  False when
 * the block has no fields (data). */
static bool pick_field(const struct seed *sd, const struct meta *m, unsigned f, struct field *out)
{
	const struct fmt_summary *s;
	unsigned j;

	switch (m->kind) {
	case M_SUPER:
		*out = super_fields[f % NF(super_fields)];
		return true;
	case M_SUMMARY:
		if (f % 4 == 0) {
			*out = sum_fields[(f / 4) % NF(sum_fields)];
			return true;
		}
		s = (const void *)(sd->img + m->addr * FMT_BLOCK);
		j = (f / NF(entry_fields)) % (s->nentries ? s->nentries : 1);
		*out = entry_fields[f % NF(entry_fields)];
		out->off += offsetof(struct fmt_summary, e) + j * sizeof(struct fmt_entry);
		return true;
	case M_NODE:
		if (f % 4 == 0) {
			*out = node_fields[(f / 4) % NF(node_fields)];
			return true;
		}
		*out = (struct field){offsetof(struct fmt_node, slot) + 8 * ((f / 4) % 16), 8};
		if (f & 2) /* some slot the seed uses: most are 0 */
			for (j = 0; j < FMT_FANOUT; j++) {
				const struct fmt_node *nd =
				    (const void *)(sd->img + m->addr * FMT_BLOCK);

				if (nd->slot[(j + f) % FMT_FANOUT]) {
					out->off = offsetof(struct fmt_node, slot) +
					           8 * ((j + f) % FMT_FANOUT);
					break;
				}
			}
		return true;
	case M_SEALED:
		if (pick_table_field(sd, m, f, out))
			return true;
		if (carried_type(sd, m) == FMT_E_VTAB) {
			if (f % 4 == 0) {
				*out = vtab_fields[(f / 4) % NF(vtab_fields)];
				return true;
			}
			/* a field of one of the first records */
			j = (f / NF(vol_fields)) % 4;
			*out = vol_fields[f % NF(vol_fields)];
			out->off += offsetof(struct fmt_vtab, v) + j * sizeof(struct fmt_vol);
			return true;
		}
		if (f % 4 == 0) {
			*out = cpage_fields[(f / 4) % NF(cpage_fields)];
			return true;
		}
		/* a count (u16 narrow; a u32 of a wide part lands here too) */
		*out = (struct field){FMT_CPAGE_HDR + 2 * ((f / 4) % 1024), 2};
		return true;
	case M_CARRIED:
		s = (const void *)(sd->img + sd->sums[m->sum].addr * FMT_BLOCK);
		if (s->e[m->entry].type == FMT_E_OP) {
			*out = op_fields[f % NF(op_fields)];
			return true;
		}
		if (s->e[m->entry].type != FMT_E_CKPT || s->e[m->entry].lba != 0)
			return false;
		if (f % 4 == 0) {
			*out = ckpt_fields[(f / 4) % NF(ckpt_fields)];
			return true;
		}
		/* one of the first volume table block addresses */
		*out = (struct field){sizeof(struct fmt_ckpt) + 8 * ((f / 4) % 4), 8};
		return true;
	}
	return false;
}

static void patch(uint8_t *b, unsigned how, const uint8_t *arg, unsigned n)
{
	uint64_t v = 0, a = 0;

	switch (how) {
	case 0:
		memcpy(b, arg, n);
		break;
	case 1:
		for (unsigned i = 0; i < n; i++)
			b[i] ^= arg[i];
		break;
	case 2:
		memcpy(&v, b, n);
		memcpy(&a, arg, n);
		v += a;
		memcpy(b, &v, n);
		break;
	default:
		v = boundary[arg[0] % (sizeof(boundary) / sizeof(boundary[0]))];
		memcpy(b, &v, n);
		break;
	}
}

static void set_crc(uint8_t *b, size_t at)
{
	uint32_t z = 0, crc;

	memcpy(b + at, &z, 4);
	crc = crc32c(0, b, FMT_BLOCK);
	memcpy(b + at, &crc, 4);
}

/* Recompute the checksums the patches broke, leaves first. */
static void reseal(const struct seed *sd, struct faultdev *c)
{
	bool sum_dirty[MAX_META] = {0};
	uint8_t *b;

	for (unsigned i = 0; i < c->npatch; i++) {
		int m = sd->meta_of[c->patch_addr[i]];

		if (!m)
			continue;
		const struct meta *mm = &sd->meta[m - 1];

		if (mm->kind == M_NODE || mm->kind == M_SEALED) {
			set_crc(c->patch_blk[i], offsetof(struct fmt_node, crc));
		} else if (mm->kind == M_CARRIED) {
			uint32_t crc = crc32c(0, c->patch_blk[i], FMT_BLOCK);

			if ((b = faultdev_patch(c, sd->sums[mm->sum].addr))) {
				memcpy(b + offsetof(struct fmt_summary, e) +
				           mm->entry * sizeof(struct fmt_entry) +
				           offsetof(struct fmt_entry, crc),
				       &crc, 4);
				sum_dirty[mm->sum] = true;
			}
		} else if (mm->kind == M_SUMMARY) {
			sum_dirty[mm->sum] = true;
		}
	}
	/* Summaries in LSN order: each change moves on down the chain. */
	for (;;) {
		int pick = -1;

		for (unsigned s = 0; s < sd->nsums; s++)
			if (sum_dirty[s] && (pick < 0 || sd->sums[s].lsn < sd->sums[pick].lsn))
				pick = (int)s;
		if (pick < 0)
			break;
		sum_dirty[pick] = false;
		if (!(b = faultdev_patch(c, sd->sums[pick].addr)))
			continue;
		set_crc(b, offsetof(struct fmt_summary, crc));
		uint32_t crc;

		memcpy(&crc, b + offsetof(struct fmt_summary, crc), 4);
		for (unsigned s = 0; s < sd->nsums; s++) {
			uint8_t *nb;

			if (sd->sums[s].lsn != sd->sums[pick].lsn + 1 ||
			    !(nb = faultdev_patch(c, sd->sums[s].addr)))
				continue;
			memcpy(nb + offsetof(struct fmt_summary, prev_crc), &crc, 4);
			sum_dirty[s] = true;
		}
		for (uint64_t slot = 0; slot < 2; slot++) {
			const struct fmt_super *sb = (const void *)(sd->img + slot * FMT_BLOCK);
			uint8_t *sbb = faultdev_patched(c, slot);
			uint64_t addr;

			memcpy(&addr,
			       (sbb ? sbb : (const uint8_t *)sb) +
			           offsetof(struct fmt_super, ckpt_addr),
			       8);
			if (addr == sd->sums[pick].addr && (sbb = faultdev_patch(c, slot)))
				memcpy(sbb + offsetof(struct fmt_super, ckpt_crc), &crc, 4);
		}
	}
	for (uint64_t slot = 0; slot < 2; slot++)
		if ((b = faultdev_patched(c, slot)))
			set_crc(b, offsetof(struct fmt_super, crc));
}

/* ---- one execution -------------------------------------------------------- */

static void exercise(struct store *st)
{
	struct store_vol_info *vi;
	struct store_extent ext[16];
	uint8_t *buf = malloc(2 * FMT_BLOCK);
	size_t n;

	assert(buf);
	(void)store_check(st);
	if (store_list(st, &vi, &n)) {
		free(buf);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		struct vol *v;
		uint64_t size, at[3];
		unsigned next;

		if (store_vol_open(st, vi[i].name, &v))
			continue;
		size = store_vol_size(v);
		at[0] = 0;
		at[1] = size / 2;
		at[2] = size >= 2 * FMT_BLOCK ? size - 2 * FMT_BLOCK : 0;
		for (unsigned k = 0; k < 3; k++) {
			uint32_t len =
			    size - at[k] < 2 * FMT_BLOCK ? (uint32_t)(size - at[k]) : 2 * FMT_BLOCK;
			int err = store_read(v, buf, at[k], len);

			assert(err == 0 || err == -EIO || err == -EILSEQ);
		}
		(void)store_map(v, 0, size, ext, 16, &next);
		store_vol_close(v);
	}
	free(vi);
	free(buf);
}

/* Forwarding blocks of sd written for the compactor's own moves (not of
 * install_fwd's segments): the compacted seed needs some, else its
 * compaction forwarded nothing. */
static unsigned compactor_fwd_blocks(const struct seed *sd)
{
	unsigned n = 0;
	for (unsigned i = 0; i < sd->nmeta; i++) {
		const struct meta *m = &sd->meta[i];
		const struct fmt_summary *s =
		    (const void *)(sd->img + (m->sum >= 0 ? sd->sums[m->sum].addr : 0) * FMT_BLOCK);
		n += m->kind == M_SEALED && s->e[m->entry].type == FMT_E_FWD &&
		     s->e[m->entry].lba != FWD_SEG && s->e[m->entry].lba != FWD_SEG + 1;
	}
	return n;
}

static void list_seed(const struct seed *sd)
{
	fprintf(stderr,
	        "fuzz_pool: %s (flag %u %s): version %u, %u metadata blocks, %u summaries\n",
	        sd->name, SEED_COMPACTED, sd == &seeds[1] ? "set" : "clear", sd->version, sd->nmeta,
	        sd->nsums);
	for (unsigned i = 0; i < sd->nmeta; i++) {
		const struct meta *m = &sd->meta[i];

		fprintf(stderr, "fuzz_pool: idx %u: block %llu, %s", i, (unsigned long long)m->addr,
		        kind_name[m->kind]);
		if (m->kind == M_CARRIED || m->kind == M_SEALED) {
			const struct fmt_summary *s =
			    (const void *)(sd->img + sd->sums[m->sum].addr * FMT_BLOCK);
			fprintf(stderr, " (entry type %u, lba %llu)", s->e[m->entry].type,
			        (unsigned long long)s->e[m->entry].lba);
		}
		fprintf(stderr, "\n");
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	verbose = getenv("FUZZ_VERBOSE") != NULL;
	say_max_level = verbose ? SAY_DEBUG : SAY_ERROR;
	for (unsigned i = 0; i < 2; i++) {
		struct store_opts opts = {.read_only = true};
		struct seed *sd = &seeds[i];
		struct faultdev *dev;
		struct store *st;

		build_seed(sd, i == 1);
		map_seed(sd);
		/* Each seed itself must open clean. */
		dev = faultdev_over(sd->dev);
		dev->no_writes = true;
		st = testpool_open(&dev->dev, &opts);
		if (store_check(st))
			testpool_die(sd->name, EILSEQ);
		store_close(st);
		faultdev_free(dev);
		if (verbose)
			list_seed(sd);
	}
	if (!compactor_fwd_blocks(&seeds[1]))
		testpool_die("the compacted seed has no forwarding block of the compactor's",
		             ENODATA);
	store_thread_register();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct store_opts opts = {.read_only = true};
	struct faultdev *c;
	struct store *st;
	const char *why = NULL;
	const struct seed *sd;
	size_t at = 1;

	if (size < 1)
		return 0;
	sd = &seeds[(data[0] & SEED_COMPACTED) != 0];
	c = faultdev_over(sd->dev);
	c->no_writes = true; /* a read-only open never writes */
	while (size - at >= 5) {
		unsigned op = data[at], n = (op & 7) + 1, how = (op >> 3) & 3;
		unsigned idx = data[at + 1] | data[at + 2] << 8;
		unsigned off = data[at + 3] | data[at + 4] << 8;
		const struct meta *m = &sd->meta[idx % sd->nmeta];
		struct field fl;
		uint8_t *b;

		at += 5;
		if (size - at < n)
			break;
		if ((off & 0x8000) && pick_field(sd, m, off & 0x7fff, &fl)) {
			off = fl.off;
			if (fl.n < n)
				n = fl.n;
		} else {
			off = (off & 0x7fff) % (FMT_BLOCK - n + 1);
		}
		if ((b = faultdev_patch(c, m->addr)))
			patch(b + off, how, data + at, n);
		if (verbose)
			fprintf(stderr,
			        "fuzz_pool: patch block %llu (%s) at byte %u, %u bytes, how %u\n",
			        (unsigned long long)m->addr, kind_name[m->kind], off, n, how);
		at += (op & 7) + 1;
	}
	if (data[0] & 1)
		reseal(sd, c);

	errno = 0;
	st = store_open(&c->dev, &opts, &why);
	if (verbose)
		fprintf(stderr, "fuzz_pool: store_open: %s\n", st ? "opened" : why);
	if (!st) {
		/* A clear refusal: damage, a newer format, or no pool. */
		assert(errno == EILSEQ || errno == EPROTONOSUPPORT || errno == ENODATA);
		assert(why && *why);
		faultdev_free(c);
		return 0;
	}
	exercise(st);
	store_close(st);
	faultdev_free(c);
	return 0;
}
