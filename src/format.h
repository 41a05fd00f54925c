/* format.h — the on-disk format of a cowbd pool (docs/FORMAT.md says the
 * same in prose; change both together).
 *
 * All integers little-endian, fixed width; every metadata block is 4 KiB and
 * carries a magic, a CRC32C over the whole block (crc field zeroed) and its
 * own block address, and is validated on every read.
 *
 *   block 0, 1          superblock slots A and B (the newer valid one wins)
 *   segment 0           reserved (holds the superblocks, and in block 2 the
 *                       advisory owner record blkdev.c writes)
 *   segments 1..n-1     the log: batches written strictly append-only
 *
 * A batch = one summary block + the blocks its entries carry, contiguous in
 * one segment.  Summaries chain: each holds the LSN (previous + 1) and the
 * CRC of the previous summary, so recovery stops at the first batch that
 * does not continue the chain (torn or stale).  Every summary of a segment
 * names the segment the log continues in (next_seg), chosen when the log
 * enters the segment.
 */
#ifndef COWBD_FORMAT_H
#define COWBD_FORMAT_H
#include <assert.h>
#include <stdint.h>

#define FMT_BLOCK      4096u
#define FMT_SEG_BLOCKS 1024u /* 4 MiB segments */
#define FMT_SEG_BYTES  (FMT_BLOCK * FMT_SEG_BLOCKS)
/* Version 2 added FMT_OP_VOL_RESIZE and FMT_OP_VOL_RENAME: a version 1
 * pool stays at 1 until it first logs one of them (store_ctl.c raises the
 * superblock's version, durably, before logging it).  Version 3 keeps the
 * reference counts on disk (count pages and segment tables, written by
 * every checkpoint; the record lists the tables) and each node's subtree
 * total in its image, so that open reads no tree: docs/METADATA.md.
 * Version 4 moves the volume table out of the checkpoint record into volume
 * table blocks (struct fmt_vtab) that checkpoints rewrite only when one of
 * their records changed; the record lists them, so a pool holds far more
 * than the ~5,000 records one record had room for.  Version 5 names blocks
 * (fwd.h: a tree slot holds a block's birth address and the tag of its
 * segment's life then) and keeps the forwarding map on disk: segment table
 * entries of 32 bytes with each segment's life and forwarding chain
 * (struct fmt_stab5, struct fmt_fwd), and MOVE2 entries.  A version 4 pool
 * already is one (every slot a name of tag 0, every life 0, no chain).
 * New pools are made at version 5; an older pool's first read-write
 * checkpoint writes what it lacks (from version 3, the volume table blocks;
 * from 4 or older, every segment table in the version 5 form) and a current
 * record.  A version 1 or 2 pool is opened the old
 * way (every tree read, counts rebuilt) and its first checkpoint, which
 * rewrites every node and every count page, is the upgrade: the superblock
 * naming it says the current version, the single atomic switch (a read-only
 * open leaves it as it is).  A cowbd that knows an older version refuses a
 * newer pool ("newer format"). */
#define FMT_VERSION    5u
#define FMT_VERSION_V4 4u /* segment tables without lives or forwarding */
#define FMT_VERSION_V3 3u /* the volume table inside the checkpoint record */
#define FMT_VERSION_V2 2u /* counts rebuilt at open; nodes without totals */
#define FMT_VERSION_V1 1u /* a pool without resize or rename ops */
#define FMT_MIN_SEGS   16u

#define FMT_SB_MAGIC    "COWBDSB1"
#define FMT_SUM_MAGIC   0x4d535743u /* "CWSM" */
#define FMT_NODE_MAGIC  0x444e5743u /* "CWND" */
#define FMT_CKPT_MAGIC  0x4b435743u /* "CWCK" */
#define FMT_OP_MAGIC    0x504f5743u /* "CWOP" */
#define FMT_CPAGE_MAGIC 0x50435743u /* "CWCP" */
#define FMT_STAB_MAGIC  0x54535743u /* "CWST" */
#define FMT_VTAB_MAGIC  0x54565743u /* "CWVT" */

struct fmt_super {
	char magic[8];
	uint32_t crc;
	uint32_t version;
	uint64_t self;       /* 0 or 1 */
	uint64_t generation; /* +1 each write; slot = generation % 2 */
	uint32_t block_size;
	uint32_t seg_blocks;
	uint64_t nsegs;
	uint8_t uuid[16];
	uint64_t created;   /* unix seconds */
	uint64_t ckpt_addr; /* block of the checkpoint batch's summary */
	uint64_t ckpt_lsn;
	uint32_t ckpt_crc; /* that summary's crc */
	uint32_t pad;
	uint8_t zero[FMT_BLOCK - 96];
};
static_assert(sizeof(struct fmt_super) == FMT_BLOCK, "superblock is one block");

enum fmt_entry_type {
	FMT_E_DATA = 1, /* a data block of (vol, lba) follows */
	FMT_E_TRIM = 2, /* unmap (vol, lba .. lba+count-1); no block */
	FMT_E_NODE = 3, /* a tree node block follows (written at checkpoints) */
	FMT_E_OP = 4,   /* a control operation block follows (struct fmt_op) */
	FMT_E_CKPT = 5, /* a checkpoint record block follows */
	FMT_E_MOVE = 6, /* a block the compactor copied from address lba follows;
	                 * the trees learn the new address at the next checkpoint */
	/* version 3, written by checkpoints (entry crc 0, like nodes: the
	 * block is sealed once the log gave its address) */
	FMT_E_CPAGE = 7, /* a count page of segment lba follows (vol: its part) */
	FMT_E_STAB = 8,  /* segment table block number lba follows */
	/* version 4, written by checkpoints, sealed */
	FMT_E_VTAB = 9, /* volume table block number lba follows */
	/* version 5 */
	FMT_E_MOVE2 = 10, /* a block the compactor copied follows; lba: its birth
	                   * address (its name's address), vol: its birth tag.
	                   * Replay ignores it like MOVE; its entry's crc checks
	                   * the block, as for DATA */
	FMT_E_FWD = 11,   /* a forwarding block of segment lba follows (sealed,
	                   * written by checkpoints) */
};

/* Blocks that carry their own CRC and address (sealed after the log gave
 * the address): their entry's crc is 0. */
static inline int fmt_entry_sealed(unsigned type)
{
	return type == FMT_E_NODE || type == FMT_E_CPAGE || type == FMT_E_STAB ||
	       type == FMT_E_VTAB || type == FMT_E_FWD;
}

struct fmt_entry {
	uint32_t vol;
	uint16_t type;
	uint16_t pad;
	uint64_t lba;   /* block number within the volume */
	uint32_t crc;   /* CRC32C of the block carried, 0 if none */
	uint32_t count; /* TRIM: number of blocks; else 1 */
};
static_assert(sizeof(struct fmt_entry) == 24, "entry size");

#define FMT_SUM_HDR     64u
#define FMT_SUM_ENTRIES ((FMT_BLOCK - FMT_SUM_HDR) / sizeof(struct fmt_entry))

struct fmt_summary {
	uint32_t magic;
	uint32_t crc;
	uint64_t self;
	uint64_t lsn;
	uint64_t next_seg;
	uint64_t boot_id; /* random per daemon start: makes every summary's crc unique */
	uint32_t prev_crc;
	uint16_t nentries;
	uint16_t nblocks; /* blocks carried after this summary */
	uint64_t time;    /* unix seconds */
	uint64_t pad;
	struct fmt_entry e[FMT_SUM_ENTRIES];
	uint8_t tail[FMT_BLOCK - FMT_SUM_HDR - FMT_SUM_ENTRIES * sizeof(struct fmt_entry)];
};
static_assert(sizeof(struct fmt_summary) == FMT_BLOCK, "summary is one block");

/* Tree node: a radix node of FMT_FANOUT 8-byte slots.  Leaf slots hold the
 * physical block of a data block (0 = hole); interior slots the block of a
 * child node (0 = none).  Level 0 is a leaf. */
#define FMT_NODE_HDR 64u
#define FMT_FANOUT   ((FMT_BLOCK - FMT_NODE_HDR) / 8u) /* 504 */
struct fmt_node {
	uint32_t magic;
	uint32_t crc;
	uint64_t self;
	uint8_t level;
	uint8_t pad[7];
	uint64_t nmapped; /* non-zero slots */
	uint64_t total;   /* mapped blocks in this subtree (read from version 3 on;
	                   * 0 in nodes older binaries wrote) */
	uint8_t pad2[24];
	uint64_t slot[FMT_FANOUT];
};
static_assert(sizeof(struct fmt_node) == FMT_BLOCK, "node is one block");

#define FMT_VOL_SNAPSHOT 1u

struct fmt_vol {
	uint64_t id;
	uint64_t size;    /* bytes */
	uint64_t root;    /* block of root node, 0 = empty */
	uint64_t parent;  /* snapshot: id of its volume */
	uint64_t origin;  /* clone: id of the snapshot it came from */
	uint64_t created; /* unix seconds */
	uint8_t levels;
	uint8_t flags;
	uint8_t total[6]; /* version 4: blocks mapped in the tree (48 bits, little-
	                   * endian: its root's total); 0 before */
	char name[72];    /* NUL-terminated; snapshots hold the SNAP part only */
};
static_assert(sizeof(struct fmt_vol) == 128, "vol record size");

/* Checkpoint record: one or more blocks carried by FMT_E_CKPT entries
 * (entry.lba = index of the block in the record).  Block 0 starts with this
 * header; then up to version 3 nvols struct fmt_vol, from version 4 the
 * addresses (u64) of the nvtab volume table blocks (0: a block none of
 * whose slots is in use); then, up to version 2, the segment bitmap (bit
 * set = segment in use), from version 3 the addresses (u64) of the segment
 * tables, ceil(nsegs / FMT_STAB_ENTRIES) of them, packed across blocks. */
struct fmt_ckpt {
	uint32_t magic;
	uint32_t version;
	uint64_t lsn;
	uint64_t next_vol_id;
	uint64_t nvols;
	uint64_t nsegs;
	uint64_t head_seg; /* segment the log was in */
	uint64_t nvtab;    /* version 4: volume table blocks listed (else 0) */
	uint64_t pad;
};
static_assert(sizeof(struct fmt_ckpt) == 64, "ckpt header size");

enum fmt_op_kind {
	FMT_OP_VOL_CREATE = 1,
	FMT_OP_VOL_DELETE = 2,
	FMT_OP_SNAP_CREATE = 3,
	FMT_OP_CLONE = 4,
	FMT_OP_ROLLBACK = 5,
	/* version 2 */
	FMT_OP_VOL_RESIZE = 6, /* id: the volume; size: its new size (blocks past a
	                        * smaller size are unmapped by the same op) */
	FMT_OP_VOL_RENAME = 7, /* id: the volume; name: its new name (its snapshots
	                        * keep their own part: VOL@SNAP becomes NEW@SNAP) */
};

/* Control operation record, replayed by recovery in log order. */
struct fmt_op {
	uint32_t magic;
	uint32_t kind;
	uint64_t id;      /* volume the op creates or acts on */
	uint64_t src;     /* snapshot/clone/rollback: the source id */
	uint64_t size;    /* create, resize: bytes */
	uint64_t created; /* unix seconds */
	char name[72];
	uint8_t zero[FMT_BLOCK - 112];
};
static_assert(sizeof(struct fmt_op) == FMT_BLOCK, "op is one block");

/* Count pages and segment tables (docs/FORMAT.md, docs/METADATA.md): the
 * space map's on-disk form, written by every version 3 checkpoint (pages
 * of the segments whose counts changed, the tables naming them) and read
 * at open (the tables) and on demand (the pages).  Encoded and validated
 * by cpage.c.
 *
 * Count page: the reference counts of one segment's FMT_SEG_BLOCKS blocks;
 * a segment whose counts are all 0 has none.  Narrow (one block): a u16 per
 * block, 0xFFFF meaning "see the overflow entries", which hold the exact
 * count of every block counted >= 0xFFFF, sorted by idx.  Wide (two
 * blocks, part 0 and 1), only when more than FMT_CPAGE_OVER blocks
 * overflow: a u32 per block, the first FMT_CPAGE_WIDE0 in part 0. */
#define FMT_CPAGE_HDR    64u
#define FMT_CPAGE_NARROW 1u
#define FMT_CPAGE_WIDE   2u
#define FMT_CPAGE_OVER   ((FMT_BLOCK - FMT_CPAGE_HDR - 2u * FMT_SEG_BLOCKS) / 8u) /* 248 */
#define FMT_CPAGE_WIDE0  ((FMT_BLOCK - FMT_CPAGE_HDR) / 4u)                       /* 1008 */
#define FMT_CPAGE_ESC    0xFFFFu /* a narrow count that lives in an overflow entry */

struct fmt_cpage_over {
	uint16_t idx; /* block within the segment */
	uint16_t pad;
	uint32_t count; /* >= FMT_CPAGE_ESC */
};
static_assert(sizeof(struct fmt_cpage_over) == 8, "overflow entry size");

struct fmt_cpage {
	uint32_t magic;
	uint32_t crc;
	uint64_t self;
	uint64_t seg;   /* the segment whose counts these are */
	uint8_t enc;    /* FMT_CPAGE_NARROW or FMT_CPAGE_WIDE */
	uint8_t part;   /* wide: 0 or 1; narrow: 0 */
	uint16_t nover; /* narrow: overflow entries used; wide: 0 */
	uint16_t live;  /* blocks of the segment with count > 0 (both parts say it) */
	uint16_t pad;
	uint8_t pad2[32];
	union {
		struct {
			uint16_t cnt[FMT_SEG_BLOCKS];
			struct fmt_cpage_over over[FMT_CPAGE_OVER];
		} narrow;
		uint32_t wide[FMT_CPAGE_WIDE0]; /* part 1: blocks 1008..1023, then zeros */
	};
};
static_assert(sizeof(struct fmt_cpage) == FMT_BLOCK, "count page is one block");

/* Segment table block: for segments first_seg .. first_seg + n - 1, where
 * the count page is and how many live blocks the segment has; from version
 * 5 also the segment's life and its forwarding chain.  The entry size
 * follows the pool's version (the checkpoint record's, which is the
 * superblock's): 16 bytes up to version 4 (struct fmt_stab), 32 from
 * version 5 (struct fmt_stab5); the header is the same. */
#define FMT_STAB_HDR     64u
#define FMT_STAB_ENTRIES ((FMT_BLOCK - FMT_STAB_HDR) / 16u) /* 252 */
#define FMT_STAB_ADDR48  ((1ull << 48) - 1)

struct fmt_stab_entry {
	uint64_t page0;      /* narrow page or wide part 0; 0 = no page (no live block) */
	uint64_t page1_live; /* wide part 1's block (48 bits, 0 = narrow) | live << 48 */
};
static_assert(sizeof(struct fmt_stab_entry) == 16, "segment table entry size");

struct fmt_stab {
	uint32_t magic;
	uint32_t crc;
	uint64_t self;
	uint64_t first_seg;
	uint32_t n; /* entries used; the rest are zero */
	uint32_t pad;
	uint8_t pad2[32];
	struct fmt_stab_entry e[FMT_STAB_ENTRIES];
};
static_assert(sizeof(struct fmt_stab) == FMT_BLOCK, "segment table is one block");

/* Version 5: a segment's life (the tag its blocks are named with now,
 * 0..FMT_TAG_MAX: the compactor retiring it moves it on) and the first
 * block of its forwarding chain. */
#define FMT_STAB_ENTRIES5 ((FMT_BLOCK - FMT_STAB_HDR) / 32u) /* 126 */
#define FMT_TAG_MAX       0xFFFFFu                           /* 20 bits: fwd.h FWD_TAG_MASK */

struct fmt_stab_entry5 {
	uint64_t page0;      /* as in struct fmt_stab_entry */
	uint64_t page1_live; /* as in struct fmt_stab_entry */
	uint64_t fwd;        /* the segment's first forwarding block, 0: none */
	uint32_t life;       /* <= FMT_TAG_MAX */
	uint32_t held;       /* forwarding blocks (of any segment's chain) that lie in
	                      * this segment: open holds them without reading chains */
};
static_assert(sizeof(struct fmt_stab_entry5) == 32, "v5 segment table entry size");

struct fmt_stab5 {
	uint32_t magic; /* FMT_STAB_MAGIC */
	uint32_t crc;
	uint64_t self;
	uint64_t first_seg;
	uint32_t n;
	uint32_t pad;
	uint8_t pad2[32];
	struct fmt_stab_entry5 e[FMT_STAB_ENTRIES5];
};
static_assert(sizeof(struct fmt_stab5) == FMT_BLOCK, "v5 segment table is one block");

/* Forwarding block (version 5): where blocks of an old life of segment seg
 * live now.  Each entry = the block's address now (low 48 bits) | its index
 * in seg << 48, sorted by index; unused entries zero.  One block holds
 * entries of one tag (the life they were born in); the blocks of a
 * segment's chain (next: the following block, 0 = the last) list all its
 * entries in (tag, index) order, a tag of more than FMT_FWD_ENTRIES
 * entries spanning consecutive blocks. */
#define FMT_FWD_MAGIC     0x57465743u /* "CWFW" */
#define FMT_FWD_HDR       64u
#define FMT_FWD_ENTRIES   ((FMT_BLOCK - FMT_FWD_HDR) / 8u) /* 504 */
#define FMT_FWD_IDX_SHIFT 48u

struct fmt_fwd {
	uint32_t magic;
	uint32_t crc;
	uint64_t self;
	uint64_t seg;
	uint64_t next; /* the chain's next block, 0: the last */
	uint32_t tag;  /* <= FMT_TAG_MAX */
	uint32_t n;    /* entries used, 1..FMT_FWD_ENTRIES */
	uint8_t pad[24];
	uint64_t ent[FMT_FWD_ENTRIES];
};
static_assert(sizeof(struct fmt_fwd) == FMT_BLOCK, "forwarding block is one block");

/* Volume table block (version 4): the records of slots first_slot ..
 * first_slot + FMT_VTAB_ENTRIES - 1; a slot not in use is all zero (id 0).
 * A volume keeps its slot for life (the lowest free one when a checkpoint
 * first writes it), so a checkpoint rewrites only the blocks whose records
 * changed.  Records are in slot order, not id order. */
#define FMT_VTAB_HDR     128u
#define FMT_VTAB_ENTRIES ((FMT_BLOCK - FMT_VTAB_HDR) / sizeof(struct fmt_vol)) /* 31 */

struct fmt_vtab {
	uint32_t magic;
	uint32_t crc;
	uint64_t self;
	uint64_t first_slot; /* block number x FMT_VTAB_ENTRIES */
	uint32_t n;          /* slots in use */
	uint32_t pad;
	uint8_t pad2[96];
	struct fmt_vol v[FMT_VTAB_ENTRIES];
};
static_assert(sizeof(struct fmt_vtab) == FMT_BLOCK, "volume table block is one block");

#endif
