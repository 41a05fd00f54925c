/* cpage.c — encoding and validating count pages, segment tables (the
 * space map's blocks) and forwarding blocks (format.h).  Layer: beside alloc, below ckpt; no I/O,
 * no state, no locks (cpage.h).
 *
 * A decoded block is trusted as exact, so decoding checks every field: a
 * count page that validates gives each block of its segment the count it
 * was written with, or the CRC failed.  Unused bytes must be zero, so a
 * block has exactly one valid form for given counts. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "cpage.h"
#include "crc32c.h"

/* CRC32C of a block whose crc field (bytes 4..7) counts as zero. */
static uint32_t block_crc(const void *blk)
{
	static const uint32_t zero;
	uint32_t c = crc32c(0, blk, 4);
	c = crc32c(c, &zero, sizeof(zero));
	return crc32c(c, (const uint8_t *)blk + 8, FMT_BLOCK - 8);
}

void cpage_seal(void *blk, uint64_t self)
{
	struct fmt_cpage *p = blk; /* magic, crc, self: the same in a table */
	p->self = self;
	p->crc = 0;
	p->crc = block_crc(p);
}

static bool all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static int bad(const char **why, const char *reason)
{
	*why = reason;
	return -EILSEQ;
}

/* ---- count pages ------------------------------------------------------ */

static void header(struct fmt_cpage *p, uint64_t seg, uint8_t enc, uint8_t part, uint32_t live)
{
	memset(p, 0, sizeof(*p));
	p->magic = FMT_CPAGE_MAGIC;
	p->seg = seg;
	p->enc = enc;
	p->part = part;
	p->live = (uint16_t)live;
}

static void encode_narrow(struct fmt_cpage *p, const uint32_t *counts)
{
	unsigned n = 0;
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++) {
		if (counts[i] < FMT_CPAGE_ESC) {
			p->narrow.cnt[i] = (uint16_t)counts[i];
			continue;
		}
		p->narrow.cnt[i] = FMT_CPAGE_ESC;
		p->narrow.over[n].idx = (uint16_t)i;
		p->narrow.over[n++].count = counts[i];
	}
	p->nover = (uint16_t)n;
}

unsigned cpage_encode(uint64_t seg, const uint32_t *counts, struct fmt_cpage img[2])
{
	unsigned live = 0, over = 0;
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++) {
		live += counts[i] > 0;
		over += counts[i] >= FMT_CPAGE_ESC;
	}
	if (!live)
		return 0;
	if (over <= FMT_CPAGE_OVER) {
		header(&img[0], seg, FMT_CPAGE_NARROW, 0, live);
		encode_narrow(&img[0], counts);
		return 1;
	}
	header(&img[0], seg, FMT_CPAGE_WIDE, 0, live);
	header(&img[1], seg, FMT_CPAGE_WIDE, 1, live);
	memcpy(img[0].wide, counts, FMT_CPAGE_WIDE0 * sizeof(*counts));
	memcpy(img[1].wide, counts + FMT_CPAGE_WIDE0,
	       (FMT_SEG_BLOCKS - FMT_CPAGE_WIDE0) * sizeof(*counts));
	return 2;
}

/* What every page and part must say of itself. */
static int check_header(const struct fmt_cpage *p, uint64_t addr, uint64_t seg, uint8_t part,
                        const char **why)
{
	if (p->magic != FMT_CPAGE_MAGIC)
		return bad(why, "not a count page (magic)");
	if (p->crc != block_crc(p))
		return bad(why, "count page checksum mismatch");
	if (p->self != addr)
		return bad(why, "count page written for another address");
	if (p->seg != seg)
		return bad(why, "count page of another segment");
	if (p->enc != FMT_CPAGE_NARROW && p->enc != FMT_CPAGE_WIDE)
		return bad(why, "count page of unknown encoding");
	if (p->part != part)
		return bad(why, "count page part out of place");
	if (p->pad || !all_zero(p->pad2, sizeof(p->pad2)))
		return bad(why, "count page header padding not zero");
	if (!p->live || p->live > FMT_SEG_BLOCKS)
		return bad(why, "count page live count out of range");
	return 0;
}

/* The overflow entries: sorted, unique, in range, each for an escaped
 * slot and holding a count that needs it; one per escaped slot. */
static int check_overflow(const struct fmt_cpage *p, const char **why)
{
	unsigned esc = 0;

	if (p->nover > FMT_CPAGE_OVER)
		return bad(why, "count page overflow entries out of range");
	for (unsigned i = 0; i < p->nover; i++) {
		const struct fmt_cpage_over *o = &p->narrow.over[i];
		if (o->idx >= FMT_SEG_BLOCKS || o->pad)
			return bad(why, "count page overflow entry out of range");
		if (i && o->idx <= p->narrow.over[i - 1].idx)
			return bad(why, "count page overflow entries unsorted or duplicate");
		if (o->count < FMT_CPAGE_ESC)
			return bad(why, "count page overflow entry holds a small count");
		if (p->narrow.cnt[o->idx] != FMT_CPAGE_ESC)
			return bad(why, "count page overflow entry for a block not escaped");
	}
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		esc += p->narrow.cnt[i] == FMT_CPAGE_ESC;
	if (esc != p->nover)
		return bad(why, "count page escaped count without an overflow entry");
	if (!all_zero(&p->narrow.over[p->nover],
	              (FMT_CPAGE_OVER - p->nover) * sizeof(p->narrow.over[0])))
		return bad(why, "count page unused overflow entries not zero");
	return 0;
}

static int decode_narrow(const struct fmt_cpage *p, uint32_t *counts, const char **why)
{
	int err = check_overflow(p, why);
	if (err)
		return err;
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		counts[i] = p->narrow.cnt[i];
	for (unsigned i = 0; i < p->nover; i++)
		counts[p->narrow.over[i].idx] = p->narrow.over[i].count;
	return 0;
}

static int decode_wide(const struct fmt_cpage *p0, const struct fmt_cpage *p1, uint32_t *counts,
                       const char **why)
{
	const unsigned tail = FMT_SEG_BLOCKS - FMT_CPAGE_WIDE0;
	unsigned over = 0;
	if (p1->enc != FMT_CPAGE_WIDE || p0->nover || p1->nover)
		return bad(why, "wide count page parts disagree");
	if (p1->live != p0->live)
		return bad(why, "wide count page parts disagree on live blocks");
	if (!all_zero(&p1->wide[tail], (FMT_CPAGE_WIDE0 - tail) * sizeof(p1->wide[0])))
		return bad(why, "wide count page part 1 tail not zero");
	memcpy(counts, p0->wide, FMT_CPAGE_WIDE0 * sizeof(*counts));
	memcpy(counts + FMT_CPAGE_WIDE0, p1->wide, tail * sizeof(*counts));
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		over += counts[i] >= FMT_CPAGE_ESC;
	if (over <= FMT_CPAGE_OVER)
		return bad(why, "wide count page that fits one block");
	return 0;
}

int cpage_decode(uint64_t seg, const void *img0, uint64_t addr0, const void *img1, uint64_t addr1,
                 uint32_t *counts, uint32_t *live, const char **why)
{
	const struct fmt_cpage *p0 = img0, *p1 = img1;
	unsigned n = 0;
	int err = check_header(p0, addr0, seg, 0, why);

	if (!err && p1)
		err = check_header(p1, addr1, seg, 1, why);
	if (err)
		return err;
	if ((p0->enc == FMT_CPAGE_WIDE) != (p1 != NULL))
		return bad(why, p1 ? "narrow count page given a second part"
		                   : "wide count page without its second part");
	err = p1 ? decode_wide(p0, p1, counts, why) : decode_narrow(p0, counts, why);
	if (err)
		return err;
	for (unsigned i = 0; i < FMT_SEG_BLOCKS; i++)
		n += counts[i] > 0;
	if (n != p0->live)
		return bad(why, "count page live count disagrees with its counts");
	*live = n;
	return 0;
}

/* ---- segment tables --------------------------------------------------- */

unsigned cpage_stab_entries(uint32_t version)
{
	return version > FMT_VERSION_V4 ? FMT_STAB_ENTRIES5 : FMT_STAB_ENTRIES;
}

/* The header both table forms share (struct fmt_stab's first 64 bytes). */
static void stab_header(struct fmt_stab *t, uint64_t first_seg, unsigned n)
{
	memset(t, 0, FMT_BLOCK);
	t->magic = FMT_STAB_MAGIC;
	t->first_seg = first_seg;
	t->n = n;
}

void cpage_stab_encode(struct fmt_stab *t, uint64_t first_seg, unsigned n,
                       const struct cpage_ent *e)
{
	stab_header(t, first_seg, n);
	for (unsigned i = 0; i < n; i++) {
		t->e[i].page0 = e[i].page0;
		t->e[i].page1_live = e[i].page1 | (uint64_t)e[i].live << 48;
	}
}

void cpage_stab5_encode(struct fmt_stab5 *t, uint64_t first_seg, unsigned n,
                        const struct cpage_ent *e)
{
	stab_header((struct fmt_stab *)t, first_seg, n);
	for (unsigned i = 0; i < n; i++)
		t->e[i] =
		    (struct fmt_stab_entry5){.page0 = e[i].page0,
		                             .page1_live = e[i].page1 | (uint64_t)e[i].live << 48,
		                             .fwd = e[i].fwd,
		                             .life = e[i].life,
		                             .held = e[i].held};
}

/* One entry: no page and no live block, or a page (and maybe its second
 * part) outside segment 0 and inside the pool, and some live blocks. */
static int check_entry(const struct cpage_ent *e, uint64_t nblocks, const char **why)
{
	if (e->live > FMT_SEG_BLOCKS)
		return bad(why, "segment table live count out of range");
	if (!e->page0)
		return e->page1 || e->live ? bad(why, "segment table entry without a page") : 0;
	if (!e->live)
		return bad(why, "segment table page for a segment with no live block");
	if (e->page0 < FMT_SEG_BLOCKS || e->page0 >= nblocks ||
	    (e->page1 && (e->page1 < FMT_SEG_BLOCKS || e->page1 >= nblocks)))
		return bad(why, "segment table page address out of range");
	if (e->page1 == e->page0)
		return bad(why, "segment table page parts at one address");
	return 0;
}

/* What both forms check before their entries: sealed at addr, a range of
 * the pool, at most cap entries of size each, the unused ones zero. */
static int check_stab(const struct fmt_stab *t, uint64_t addr, uint64_t nsegs, unsigned cap,
                      size_t each, const char **why)
{
	if (t->magic != FMT_STAB_MAGIC)
		return bad(why, "not a segment table (magic)");
	if (t->crc != block_crc(t))
		return bad(why, "segment table checksum mismatch");
	if (t->self != addr)
		return bad(why, "segment table written for another address");
	if (t->pad || !all_zero(t->pad2, sizeof(t->pad2)))
		return bad(why, "segment table header padding not zero");
	if (!t->n || t->n > cap || t->first_seg >= nsegs || t->n > nsegs - t->first_seg)
		return bad(why, "segment table range out of the pool");
	if (!all_zero((const uint8_t *)t + FMT_STAB_HDR + t->n * each, (cap - t->n) * each))
		return bad(why, "segment table unused entries not zero");
	return 0;
}

int cpage_stab_decode(const void *blk, uint64_t addr, uint64_t nsegs, uint64_t *first_seg,
                      unsigned *n, struct cpage_ent *e, const char **why)
{
	const struct fmt_stab *t = blk;
	int err = check_stab(t, addr, nsegs, FMT_STAB_ENTRIES, sizeof(t->e[0]), why);

	if (err)
		return err;
	memset(e, 0, FMT_STAB_ENTRIES * sizeof(*e));
	for (unsigned i = 0; i < t->n; i++) {
		e[i].page0 = t->e[i].page0;
		e[i].page1 = t->e[i].page1_live & FMT_STAB_ADDR48;
		e[i].live = (uint32_t)(t->e[i].page1_live >> 48);
		if ((err = check_entry(&e[i], nsegs * FMT_SEG_BLOCKS, why)))
			return err;
	}
	*first_seg = t->first_seg;
	*n = t->n;
	return 0;
}

int cpage_stab5_decode(const void *blk, uint64_t addr, uint64_t nsegs, uint64_t *first_seg,
                       unsigned *n, struct cpage_ent *e, const char **why)
{
	const struct fmt_stab5 *t = blk;
	uint64_t nblocks = nsegs * FMT_SEG_BLOCKS;
	int err = check_stab(blk, addr, nsegs, FMT_STAB_ENTRIES5, sizeof(t->e[0]), why);

	if (err)
		return err;
	memset(e, 0, FMT_STAB_ENTRIES5 * sizeof(*e));
	for (unsigned i = 0; i < t->n; i++) {
		const struct fmt_stab_entry5 *d = &t->e[i];
		e[i] = (struct cpage_ent){.page0 = d->page0,
		                          .page1 = d->page1_live & FMT_STAB_ADDR48,
		                          .live = (uint32_t)(d->page1_live >> 48),
		                          .life = d->life,
		                          .fwd = d->fwd,
		                          .held = d->held};
		if ((err = check_entry(&e[i], nblocks, why)))
			return err;
		if (d->held > FMT_SEG_BLOCKS - e[i].live)
			return bad(why, "segment table forwarding blocks held out of range");
		if (d->life > FMT_TAG_MAX)
			return bad(why, "segment table life out of range");
		if (d->fwd && (d->fwd < FMT_SEG_BLOCKS || d->fwd >= nblocks))
			return bad(why, "segment table forwarding address out of range");
	}
	*first_seg = t->first_seg;
	*n = t->n;
	return 0;
}

/* ---- forwarding blocks ------------------------------------------------ */

/* How many of e[0..n-1] one block takes: those of e[0]'s tag, at most
 * FMT_FWD_ENTRIES. */
static size_t fwd_run(const struct fwd_ent *e, size_t n)
{
	size_t k = 1;
	while (k < n && k < FMT_FWD_ENTRIES && e[k].tag == e[0].tag)
		k++;
	return k;
}

size_t cpage_fwd_blocks(const struct fwd_ent *e, size_t n)
{
	size_t blocks = 0;
	for (size_t i = 0; i < n; i += fwd_run(e + i, n - i))
		blocks++;
	return blocks;
}

unsigned cpage_fwd_encode(struct fmt_fwd *img, uint64_t seg, const struct fwd_ent *e, size_t n,
                          uint64_t next)
{
	unsigned k = (unsigned)fwd_run(e, n);

	memset(img, 0, sizeof(*img));
	img->magic = FMT_FWD_MAGIC;
	img->seg = seg;
	img->next = next;
	img->tag = e[0].tag;
	img->n = k;
	for (unsigned i = 0; i < k; i++)
		img->ent[i] = e[i].blk | (uint64_t)e[i].idx << FMT_FWD_IDX_SHIFT;
	return k;
}

/* The header: sealed at addr, of seg, a next block that can be one. */
static int check_fwd(const struct fmt_fwd *f, uint64_t addr, uint64_t seg, uint64_t nblocks,
                     const char **why)
{
	if (f->magic != FMT_FWD_MAGIC)
		return bad(why, "not a forwarding block (magic)");
	if (f->crc != block_crc(f))
		return bad(why, "forwarding block checksum mismatch");
	if (f->self != addr)
		return bad(why, "forwarding block written for another address");
	if (f->seg != seg)
		return bad(why, "forwarding block of another segment");
	if (!all_zero(f->pad, sizeof(f->pad)))
		return bad(why, "forwarding block header padding not zero");
	if (f->tag > FMT_TAG_MAX)
		return bad(why, "forwarding block tag out of range");
	if (!f->n || f->n > FMT_FWD_ENTRIES)
		return bad(why, "forwarding block entry count out of range");
	if (f->next && (f->next < FMT_SEG_BLOCKS || f->next >= nblocks || f->next == addr))
		return bad(why, "forwarding block next address out of range");
	if (!all_zero(&f->ent[f->n], (FMT_FWD_ENTRIES - f->n) * sizeof(f->ent[0])))
		return bad(why, "forwarding block unused entries not zero");
	return 0;
}

int cpage_fwd_decode(const void *blk, uint64_t addr, uint64_t seg, uint64_t nblocks,
                     struct fwd_ent *e, unsigned *n, uint64_t *next, const char **why)
{
	const struct fmt_fwd *f = blk;
	int err = check_fwd(f, addr, seg, nblocks, why);

	if (err)
		return err;
	for (unsigned i = 0; i < f->n; i++) {
		uint64_t to = f->ent[i] & FMT_STAB_ADDR48, idx = f->ent[i] >> FMT_FWD_IDX_SHIFT;
		if (idx >= FMT_SEG_BLOCKS)
			return bad(why, "forwarding entry index out of range");
		if (i && idx <= e[i - 1].idx)
			return bad(why, "forwarding entries unsorted or duplicate");
		if (to < FMT_SEG_BLOCKS || to >= nblocks)
			return bad(why, "forwarding entry address out of range");
		e[i] = (struct fwd_ent){.blk = to, .tag = f->tag, .idx = (uint16_t)idx};
	}
	*n = f->n;
	*next = f->next;
	return 0;
}
