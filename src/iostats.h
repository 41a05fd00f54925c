/* iostats.h — the per-volume I/O counters behind store_vol_io (store.h):
 * their layout in the volume record and the calls that count a completed
 * request.  Private to the store's files (store_int.h includes it).
 *
 * Counters are bumped with relaxed atomic adds at completion, never under
 * a lock.  A volume's reads complete on the loop thread (store_read_try,
 * store_map) and the reader threads; its writes, trims, zeroes and flushes
 * on the log thread (or an inline round's loop in its place), FLUSH and
 * FUA requests on the syncer: the two sides sit on cache lines of their own (64
 * bytes of padding around each, since the record is calloc'd and only
 * 16-byte aligned), so the log thread and the readers never share one for
 * a volume's counters. */
#ifndef COWBD_IOSTATS_H
#define COWBD_IOSTATS_H
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "clock.h"
#include "store.h"

#define IOSTATS_PAD 64 /* a cache line */

/* One command's counts. */
struct iostats_cmd {
	uint64_t ops, bytes, errors;
};

/* One latency histogram: per bucket (not cumulative), and the sum. */
struct iostats_hist {
	uint64_t sum_ns;
	uint64_t n[STORE_IO_BUCKETS];
};

/* The commands one group of threads completes: READ, CACHE and
 * BLOCK_STATUS (hist: READ) on the read side; WRITE, TRIM, ZERO and FLUSH
 * (hist: WRITE, FLUSH) on the write side. */
struct iostats_side {
	struct iostats_cmd cmd[4];
	struct iostats_hist hist[2];
};

/* In every volume record (zeroed with it).  seen: a request has been
 * counted (set once by the first, never cleared; store_vol_io copies only
 * the records with it or attached).  Written once in the record's life,
 * it stays in the readers' caches: testing it costs the count a load. */
struct iostats {
	char pad0[IOSTATS_PAD];
	struct iostats_side rd;
	char pad1[IOSTATS_PAD];
	struct iostats_side wr;
	char pad2[IOSTATS_PAD];
	bool seen;
};

struct store_req;
struct volume;

/* CLOCK_MONOTONIC in nanoseconds (vDSO: no system call). */
static inline uint64_t iostats_now(void)
{
	return mono_ns();
}

/* Does command c carry a latency (its submission must be stamped)?  READ,
 * WRITE and FLUSH: store_io_timed's, inline for store_submit. */
static inline bool iostats_timed(enum store_io_cmd c)
{
	return c == STORE_IO_READ || c == STORE_IO_WRITE || c == STORE_IO_FLUSH;
}
/* Count a completed request (not a job) in its volume: r->err, r->len,
 * and for a timed command the time since r->t_submit.  Before done(). */
void iostats_done(struct store_req *r);
/* Count one completed command on v: len bytes, err (0 or -errno), and,
 * for a timed command, the time since t0 (iostats_now). */
void iostats_count(struct volume *v, enum store_io_cmd c, uint64_t len, int err, uint64_t t0);

/* v's counters before its first attach (v->io set, zeroed): 0 or -ENOMEM.
 * Caller holds vt.lock. */
int iostats_attach(struct volume *v);

#endif
