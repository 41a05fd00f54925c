/* cpage.h — the on-disk codec of the space map: count pages (one segment's
 * reference counts, format.h struct fmt_cpage), segment tables (where
 * each segment's page is and its live blocks, struct fmt_stab; from
 * version 5 also its life and forwarding chain, struct fmt_stab5) and
 * forwarding blocks (struct fmt_fwd: where blocks of a segment's old lives
 * are now).
 *
 * No I/O, no state, no locks: any thread.  Layer: beside alloc (which holds
 * the counts in memory), below ckpt (which writes and reads the blocks).
 * Encoding leaves self and crc zero; cpage_seal fills them once the log has
 * given the block its address (as ckpt.c does for tree nodes).  Decoding
 * validates everything a damaged or stale block could get wrong and
 * answers -EILSEQ with a reason; a decoded page is exact.
 */
#ifndef COWBD_CPAGE_H
#define COWBD_CPAGE_H
#include <stdint.h>

#include "format.h"
#include "fwd.h"

/* Encode seg's counts (FMT_SEG_BLOCKS of them) into img[0] (narrow) or
 * img[0..1] (wide: more than FMT_CPAGE_OVER counts >= FMT_CPAGE_ESC).
 * Returns the number of blocks filled, 0 when every count is 0 (such a
 * segment has no page).  O(FMT_SEG_BLOCKS). */
unsigned cpage_encode(uint64_t seg, const uint32_t *counts, struct fmt_cpage img[2]);

/* Set self and the CRC of a count page or segment table block (any block
 * that starts {u32 magic; u32 crc; u64 self}). */
void cpage_seal(void *blk, uint64_t self);

/* Decode seg's page: img0 as read from addr0 and, for a wide page, img1
 * from addr1 (NULL and 0 for a narrow one: the segment table says which).
 * Fills counts[FMT_SEG_BLOCKS] and *live.  Returns 0, or -EILSEQ with
 * *why set to a static reason (counts then undefined). */
int cpage_decode(uint64_t seg, const void *img0, uint64_t addr0, const void *img1, uint64_t addr1,
                 uint32_t *counts, uint32_t *live, const char **why);

/* One segment as a segment table records it. */
struct cpage_ent {
	uint64_t page0; /* 0: no page (live is 0) */
	uint64_t page1; /* 0: narrow */
	uint32_t live;
	uint32_t life; /* version 5: the segment's life (else 0) */
	uint64_t fwd;  /* version 5: its first forwarding block, 0 none (else 0) */
	uint32_t held; /* version 5: forwarding blocks lying in it (else 0) */
	uint32_t pad;  /* 0 (no hidden padding: entries are compared whole) */
};

/* Segment table entries per block in a pool of that version (252 up to
 * version 4, 126 from version 5). */
unsigned cpage_stab_entries(uint32_t version);

/* Encode entries e[0..n-1] for segments first_seg.. (n <= FMT_STAB_ENTRIES;
 * every address < 2^48; life and fwd must be 0: version 4 has no room for
 * them).  self and crc are left for cpage_seal. */
void cpage_stab_encode(struct fmt_stab *t, uint64_t first_seg, unsigned n,
                       const struct cpage_ent *e);

/* Decode a table block read from addr of a pool of nsegs segments into
 * *first_seg, *n and e[0..FMT_STAB_ENTRIES-1] (past *n: zero).  Returns 0 or
 * -EILSEQ with *why set. */
int cpage_stab_decode(const void *blk, uint64_t addr, uint64_t nsegs, uint64_t *first_seg,
                      unsigned *n, struct cpage_ent *e, const char **why);

/* Version 5 tables (struct fmt_stab5): the same with n <= FMT_STAB_ENTRIES5,
 * life <= FMT_TAG_MAX, fwd (0 or a block outside segment 0 inside the
 * pool) and held (<= FMT_SEG_BLOCKS, and with the live blocks at most the
 * segment's blocks) kept.  Decoding fills e[0..FMT_STAB_ENTRIES5-1]. */
void cpage_stab5_encode(struct fmt_stab5 *t, uint64_t first_seg, unsigned n,
                        const struct cpage_ent *e);
int cpage_stab5_decode(const void *blk, uint64_t addr, uint64_t nsegs, uint64_t *first_seg,
                       unsigned *n, struct cpage_ent *e, const char **why);

/* Forwarding blocks.  Encode the first block of segment seg's entries
 * e[0..n-1] (sorted by (tag, idx), as fwd_seg_get gives them): the
 * entries of e[0].tag, at most FMT_FWD_ENTRIES; returns how many it took
 * (>= 1; n must be >= 1).  next is the chain's next block (0: the last);
 * self and crc are left for cpage_seal.  A chain of m entries takes
 * cpage_fwd_blocks(e, m) blocks. */
unsigned cpage_fwd_encode(struct fmt_fwd *img, uint64_t seg, const struct fwd_ent *e, size_t n,
                          uint64_t next);
size_t cpage_fwd_blocks(const struct fwd_ent *e, size_t n);

/* Decode a forwarding block of seg read from addr, in a pool of nblocks
 * blocks: its entries into e[0..*n-1] (room for FMT_FWD_ENTRIES; blk, tag,
 * idx), the chain's next block into *next.  Returns 0 or -EILSEQ with *why
 * set. */
int cpage_fwd_decode(const void *blk, uint64_t addr, uint64_t seg, uint64_t nblocks,
                     struct fwd_ent *e, unsigned *n, uint64_t *next, const char **why);

#endif
