/* iostats.c — I/O counters per volume and snapshot: counting a completed
 * request in its volume record (iostats_done, iostats_count) and copying
 * the active records' counters out (store_vol_io).
 *
 * Counting costs a few relaxed atomic adds on the record's own cache
 * lines (iostats.h explains the layout), a load of the record's seen flag
 * (a store only at its first request) and, for READ, WRITE and FLUSH, a
 * clock read; no lock.  Reading takes vt.lock for one pass over the list
 * and copies only the records that are active (seen, or attached now): a
 * pool of 10^5 snapshots that nobody reads costs a pass, not 10^5 copies.
 * Counters are loaded relaxed, so a copy taken under load may be a few
 * requests apart between fields (a histogram's count is the sum of its
 * buckets, so the two always agree).
 *
 * Layer: inside the store, beside core.c (core_complete calls it) and
 * under reader.c and store.c; over vtab (names).  Locks: vt.lock, only
 * to copy. */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

static_assert(STORE_IO_READ == (int)STORE_READ && STORE_IO_WRITE == (int)STORE_WRITE &&
                  STORE_IO_TRIM == (int)STORE_TRIM && STORE_IO_ZERO == (int)STORE_ZERO &&
                  STORE_IO_FLUSH == (int)STORE_FLUSH && STORE_IO_CACHE == (int)STORE_CACHE,
              "store_io_cmd extends store_op");

/* 25 µs .. 1 s: a page-cache read to a sync on a slow disk. */
const uint64_t store_io_bucket_ns[STORE_IO_BUCKETS - 1] = {
    25000,   50000,    100000,   250000,   500000,    1000000,   2500000,
    5000000, 10000000, 25000000, 50000000, 100000000, 250000000, 1000000000,
};

/* Where each command counts: its side (0 read, 1 write), its slot there,
 * its histogram on that side (-1: none) and in store_vol_io (-1: none). */
static const struct {
	uint8_t side, slot;
	int8_t hist, timed;
	const char *name;
} where[STORE_IO_CMDS] = {
    [STORE_IO_READ] = {0, 0, 0, 0, "read"},
    [STORE_IO_WRITE] = {1, 0, 0, 1, "write"},
    [STORE_IO_TRIM] = {1, 1, -1, -1, "trim"},
    [STORE_IO_ZERO] = {1, 2, -1, -1, "zero"},
    [STORE_IO_FLUSH] = {1, 3, 1, 2, "flush"},
    [STORE_IO_CACHE] = {0, 1, -1, -1, "cache"},
    [STORE_IO_BLOCK_STATUS] = {0, 2, -1, -1, "block_status"},
};

const char *store_io_cmd_name(enum store_io_cmd c)
{
	return c < STORE_IO_CMDS ? where[c].name : "?";
}

int store_io_timed(enum store_io_cmd c)
{
	return c < STORE_IO_CMDS ? where[c].timed : -1;
}

static struct iostats_side *side_of(struct iostats *io, enum store_io_cmd c)
{
	return where[c].side ? &io->wr : &io->rd;
}

static void add(uint64_t *p, uint64_t n)
{
	__atomic_fetch_add(p, n, __ATOMIC_RELAXED);
}

static uint64_t load(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static unsigned bucket_of(uint64_t ns)
{
	unsigned i = 0;
	while (i < STORE_IO_BUCKETS - 1 && ns > store_io_bucket_ns[i])
		i++;
	return i;
}

int iostats_attach(struct volume *v)
{
	if (v->io)
		return 0;
	/* whole cache lines: the pads keep the two sides apart */
	size_t sz = (sizeof(*v->io) + IOSTATS_PAD - 1) / IOSTATS_PAD * IOSTATS_PAD;
	struct iostats *io = aligned_alloc(IOSTATS_PAD, sz);
	if (!io)
		return -ENOMEM;
	memset(io, 0, sz);
	v->io = io;
	return 0;
}

void iostats_count(struct volume *v, enum store_io_cmd c, uint64_t len, int err, uint64_t t0)
{
	struct iostats *io = v->io; /* set: the request came through a handle */
	struct iostats_side *s = side_of(io, c);
	struct iostats_cmd *k = &s->cmd[where[c].slot];

	if (!__atomic_load_n(&io->seen, __ATOMIC_RELAXED))
		__atomic_store_n(&io->seen, true, __ATOMIC_RELAXED);
	add(&k->ops, 1);
	if (err)
		add(&k->errors, 1);
	else
		add(&k->bytes, len);
	if (where[c].hist >= 0) {
		struct iostats_hist *h = &s->hist[where[c].hist];
		uint64_t now = iostats_now();
		uint64_t ns = now > t0 ? now - t0 : 0;
		add(&h->sum_ns, ns);
		add(&h->n[bucket_of(ns)], 1);
	}
}

void iostats_done(struct store_req *r)
{
	struct store *st = r->vol->st;

	iostats_count(r->vol->rec, (enum store_io_cmd)r->op, r->len, r->err, r->t_submit);
	if (r->op == STORE_WRITE && !r->err)
		add(&st->stats.client_write_bytes, r->len);
}

/* Copy v's counters into out.  Caller holds vt.lock. */
static void copy_locked(struct store *st, struct volume *v, struct store_vol_io *out)
{
	memset(out, 0, sizeof(*out));
	vtab_full_name(st, v, out->name, sizeof(out->name));
	out->size = v->size;
	out->snapshot = v->snapshot;
	for (unsigned c = 0; v->io && c < STORE_IO_CMDS; c++) {
		struct iostats_side *s = side_of(v->io, c);
		const struct iostats_cmd *k = &s->cmd[where[c].slot];
		out->cmd[c].ops = load(&k->ops);
		out->cmd[c].bytes = load(&k->bytes);
		out->cmd[c].errors = load(&k->errors);
		if (where[c].hist < 0)
			continue;
		const struct iostats_hist *h = &s->hist[where[c].hist];
		unsigned t = (unsigned)where[c].timed;
		out->lat[t].sum_ns = load(&h->sum_ns);
		for (unsigned b = 0; b < STORE_IO_BUCKETS; b++)
			out->lat[t].count[b] = load(&h->n[b]);
	}
}

/* Is v active: a request counted since open, or attached now?  Caller
 * holds vt.lock. */
static bool active_locked(const struct volume *v)
{
	return v->attached || (v->io && __atomic_load_n(&v->io->seen, __ATOMIC_RELAXED));
}

/* Room in *all, of *cap entries, for entry k (doubling); false on ENOMEM. */
static bool room(struct store_vol_io **all, size_t k, size_t *cap)
{
	if (k < *cap)
		return true;
	size_t c = *cap ? 2 * *cap : 16;
	struct store_vol_io *a = realloc(*all, c * sizeof(*a));
	if (!a)
		return false;
	*all = a;
	*cap = c;
	return true;
}

int store_vol_io(struct store *st, struct store_vol_io **out, size_t *n,
                 struct store_vol_totals *tot)
{
	struct store_vol_io *all = NULL;
	size_t k = 0, cap = 0;
	bool ok = true;

	pthread_mutex_lock(&st->vt.lock);
	tot->volumes = st->vt.n - st->vt.nsnaps;
	tot->snapshots = st->vt.nsnaps;
	tot->provisioned = st->vt.provisioned;
	for (struct volume *v = st->vt.list; v && ok; v = v->next)
		if (active_locked(v) && (ok = room(&all, k, &cap)))
			copy_locked(st, v, &all[k++]);
	pthread_mutex_unlock(&st->vt.lock);
	if (!ok) {
		free(all);
		return -ENOMEM;
	}
	*out = all;
	*n = k;
	return 0;
}
