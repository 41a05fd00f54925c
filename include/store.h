/* store.h — the copy-on-write block store: volumes, snapshots, clones,
 * reads, writes, trims and flushes over one pool (see docs/FORMAT.md).
 *
 * Threads: store_open() starts one log thread (the only writer of trees,
 * allocator and log) and a few reader threads.  Data-path requests go in
 * with store_submit() from any thread and complete through req->done,
 * called on a store thread.  Control operations (store_vol_create, ...) are
 * synchronous: they return once the change is durable.
 *
 * Errors: 0 or negative errno.  -EINVAL bad range/argument, -ENOSPC pool
 * full or write past the end, -EPERM write to a snapshot, -ENOENT no such
 * volume, -EEXIST name taken, -EBUSY volume attached (or being deleted or
 * rolled back), -ENOTEMPTY volume still has snapshots,
 * -EIO device failure (sticky: every later write and flush fails too),
 * -EILSEQ damaged metadata, -EROFS pool opened read-only.
 */
#ifndef COWBD_STORE_H
#define COWBD_STORE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blkdev.h"
#include "names.h"

#define STORE_BLOCK_SIZE 4096u
#define STORE_MAX_REQ    (64u << 20) /* largest read/write payload (as nbdkit) */

struct store;
struct vol; /* an open handle on a volume or snapshot (an export) */

struct store_opts {
	unsigned readers;          /* reader threads; 0 = default (4) */
	uint64_t checkpoint_bytes; /* log bytes between checkpoints; 0 = default */
	unsigned checkpoint_secs;  /* seconds between checkpoints; 0 = default */
	uint64_t cache_bytes;      /* bound on tree node memory; 0 = default (1/16 of
	                            * RAM, at least 64 MiB) */
	bool read_only;            /* open for cowbd-check: no threads, no writes */
	uint64_t count_pages;      /* count pages kept in memory after a checkpoint
	                            * (docs/METADATA.md); 0 = default (16,384: 64 MiB) */
	uint64_t fwd_bytes;        /* forwarding tables kept in memory after a
	                            * checkpoint; 0 = default (64 MiB) */
};

/* Volumes (with snapshots and clones) every pool can hold at least; the
 * largest pool that guarantees it (store_format refuses larger ones with
 * -EFBIG).  No pool holds more than STORE_MAX_VOLS (each record is in
 * memory while the pool is open). */
#define STORE_MIN_VOLS 100000
#define STORE_MAX_VOLS 1000000
uint64_t store_max_pool_bytes(void);

/* Make a new, empty pool on dev.  Writes both superblock slots and an
 * initial checkpoint; dev is left open.  -EFBIG if larger than store_max_pool_bytes(), -EINVAL if
 * smaller than 64 MiB, else 0 or the device's -errno. */
int store_format(struct blkdev *dev);

/* Is there a cowbd pool on dev?  1 yes, 0 no (dev holds no pool magic),
 * negative errno when it cannot tell. */
int store_probe(struct blkdev *dev);

/* Open the pool on dev: pick the newest valid superblock, load the
 * checkpoint, replay the log after it (discarding a torn tail) and start
 * the threads.  On success the store owns dev (store_close closes it); on
 * failure the caller still does.  A pool whose recovery cannot write its
 * checkpoint (full, or the device refuses writes) opens read-only with a
 * warning (store_get_stats says so) rather than not at all.  Returns NULL + errno
 * (EILSEQ damaged, EPROTONOSUPPORT newer format, ENODATA not a pool); *why, if non-NULL,
 * receives a static one-line reason.  -ENODATA: no pool on dev at all. */
struct store *store_open(struct blkdev *dev, const struct store_opts *opts, const char **why);

/* The same three over any segment backend (src/segio.h; a RADOS pool is
 * one): a backend whose nsegs is 0 has no size of its own and holds the
 * pool store_format_io made with nsegs segments.  store_open_io takes io
 * over on success (store_close closes it); on failure the caller keeps
 * it. */
struct segio;
int store_format_io(struct segio *io, uint64_t nsegs);
int store_probe_io(struct segio *io);
struct store *store_open_io(struct segio *io, const struct store_opts *opts, const char **why);

/* Checkpoint (unless read-only), stop threads, close the device. */
void store_close(struct store *st);

/* ---- data path ---------------------------------------------------- */

/* Open the export "VOL" or "VOL@SNAP".  Snapshots open read-only.  A volume
 * with open handles cannot be deleted or rolled back. */
int store_vol_open(struct store *st, const char *export_name, struct vol **out);
void store_vol_close(struct vol *v);
uint64_t store_vol_size(const struct vol *v);
bool store_vol_readonly(const struct vol *v);
const char *store_vol_name(const struct vol *v);

enum store_op {
	STORE_READ,
	STORE_WRITE,
	STORE_TRIM,  /* unmap: reads zeroes afterwards */
	STORE_ZERO,  /* write zeroes (a hole unless STORE_NO_HOLE) */
	STORE_FLUSH, /* every write completed before it is durable */
	STORE_CACHE, /* read-ahead hint */
};
#define STORE_FUA     1u /* write/trim/zero durable before completion */
#define STORE_NO_HOLE 2u /* zero: allocate rather than unmap */

struct store_req {
	/* set by the caller */
	enum store_op op;
	uint32_t flags;
	uint64_t off; /* bytes; any alignment */
	uint32_t len; /* bytes; <= STORE_MAX_REQ */
	void *buf;    /* READ: filled; WRITE: read until done is called;
	               * store_bs_submit (diff.h): its struct store_bs */
	struct vol *vol;
	void (*done)(struct store_req *req); /* called once, on a store thread
	                                      * (or the submitter's: see store_submit) */
	void *priv;                          /* caller's */
	/* set by the store before done() */
	int err;
	/* store-private */
	uint64_t t_submit; /* CLOCK_MONOTONIC ns at submission (timed commands) */
	struct store_req *next;
	int (*job)(struct store_req *req); /* non-NULL: a job for the log thread, not I/O */
};

/* Queue a request.  Never blocks on I/O; done() may run before this returns
 * (on this thread): a request refused at admission, or one whose thread
 * has stopped (the log thread's or the readers', as store_close stops
 * them), which gets -ESHUTDOWN rather than waiting for ever. */
void store_submit(struct store_req *req);

/* Submission in batches: store_submit_plugged() queues a request like
 * store_submit(), except that those for the log thread (WRITE, TRIM, ZERO,
 * FLUSH) wait in the plug until store_unplug(), which hands them over with
 * one lock and one wake-up.  A connection that parsed thirty 4 KiB writes
 * from one recv() wakes the log thread once, and its next round takes all
 * thirty.  The plug hands itself over once it holds STORE_PLUG_BYTES of
 * WRITE payload (large writes are not held back) or on a request for
 * another store.  The caller must unplug before it waits for anything: a
 * request left in the plug never completes.  Zero-initialise it; one
 * thread uses it. */
struct store_plug {
	struct store *st;
	struct store_req *head, *tail;
	uint64_t bytes;
};
#define STORE_PLUG_BYTES (256u << 10)
void store_submit_plugged(struct store_plug *p, struct store_req *r);
void store_unplug(struct store_plug *p);

/* Serve a READ at once on the calling thread if that needs no disk wait
 * (every block a hole or in the page cache).  Returns true when done:
 * req->err is set and done() is NOT called.  False: nothing happened;
 * store_submit() it.  The thread must be registered (below).  Cost: a tree
 * walk and one preadv2(RWF_NOWAIT) per physically contiguous run. */
bool store_read_try(struct store_req *req);

/* Allocation map for NBD_CMD_BLOCK_STATUS: describe [off, off+len) as up
 * to max runs, each all data (hole = false) or all unmapped (hole = true:
 * reads as zeroes).  Runs are block-aligned inside; the first starts at
 * off, the last may end past off+len only if it ends at the volume's end
 * (never: runs are clipped to off+len).  *n receives the count.  Returns 0,
 * -EINVAL (range), -EIO, -EILSEQ or -ENOMEM (a tree node could not be
 * read).  Caller is a registered thread; reads tree nodes not in memory
 * (blocking: the event loop uses store_bs in diff.h, which can be told
 * not to); cost one tree walk per leaf or empty subtree crossed. */
struct store_extent {
	uint64_t len;
	bool hole;
};
int store_map(struct vol *v, uint64_t off, uint64_t len, struct store_extent *ext, unsigned max,
              unsigned *n);

/* A READ of whole blocks, every one of them in the page cache (a file or
 * block device pool): its blocks are verified in place and the pieces
 * point at them in a read-only mapping of the pool, one piece per run of
 * physically contiguous blocks (at most max), so that the caller sends
 * them with no copy.  Call inside store_read_lock(): the pieces stay
 * valid, and hold the volume's data, until the matching
 * store_read_unlock().  Read their bytes only by handing them to a system
 * call (send, writev: a device error there is EFAULT) or inside
 * store_view_guard.  use (may be NULL): what reads the bytes first (a
 * reply that looks for zero blocks), run on the verified pieces inside
 * store_view_guard, with arg.  True: answered and counted in the volume's
 * I/O statistics (req->err: 0 with *n pieces, use run; or -EIO for a
 * damaged block, as store_read_try, use not run).  False: nothing happened
 * and nothing was counted (a hole, part of a block, more runs than max,
 * not in memory, a backend without views, or use cut short by a fault:
 * the bytes could not be read), *n is 0: read it another way, which
 * counts it.  Cost: a tree walk, a mincore per run and one CRC32C pass. */
bool store_read_view(struct store_req *req, struct iovec *piece, unsigned max, unsigned *n,
                     int (*use)(void *arg), void *arg);
/* A read-side section for store_read_view: short (nothing inside waits
 * for the disk or for a grace period; a damaged block's report takes two
 * short locks, as on the reader threads), nests, and a thread may hold
 * several views in one. */
void store_read_lock(void);
void store_read_unlock(void);
/* fn(arg) with faults on a view's bytes caught: fn's result, or -EIO when
 * one could not be read (fn was cut short: it must take no lock and
 * allocate nothing). */
int store_view_guard(int (*fn)(void *arg), void *arg);

/* Threads that call store_read_try or store_map register once (liburcu). */
void store_thread_register(void);
void store_thread_unregister(void);

/* Synchronous helpers (block the calling thread).  Return 0 or -errno. */
int store_read(struct vol *v, void *buf, uint64_t off, uint32_t len);
int store_write(struct vol *v, const void *buf, uint64_t off, uint32_t len, uint32_t flags);
int store_trim(struct vol *v, uint64_t off, uint32_t len, uint32_t flags);
int store_zero(struct vol *v, uint64_t off, uint32_t len, uint32_t flags);
int store_flush(struct vol *v);

/* ---- control plane (synchronous, durable on return) ---------------
 * Safe to call from any thread, concurrently: each runs on the log thread,
 * in order with the data path.  Deleting a volume that has snapshots is
 * -ENOTEMPTY; deleting a snapshot that is the origin of a clone is -EBUSY
 * (the clone's history — what `diff` compares — goes through it).  A clone
 * whose origin snapshot is gone (pools from before that rule) lists its
 * origin as "(deleted)". */

int store_vol_create(struct store *st, const char *name, uint64_t size);
int store_vol_delete(struct store *st, const char *name);
int store_snap_create(struct store *st, const char *vol_at_snap);
int store_snap_delete(struct store *st, const char *vol_at_snap);
int store_clone(struct store *st, const char *vol_at_snap, const char *new_vol);
int store_rollback(struct store *st, const char *vol_at_snap);

/* Resize volume name to size bytes (a multiple of 512).  Growing works
 * while the volume is attached: connections opened from now on see the
 * new size, open ones keep the size they were given until they reconnect.
 * Shrinking needs STORE_RESIZE_SHRINK (else -EPERM), a detached volume
 * (-EBUSY) and a size that is a multiple of STORE_BLOCK_SIZE (-EINVAL);
 * the blocks past the new end are unmapped by the same logged operation.
 * The volume's block tree keeps its depth: sizes outside
 * store_resize_range() of the current size are -ERANGE.  Snapshots and
 * clones keep their own sizes.  The same size is a no-op (0).  Also
 * -ENOENT, -EINVAL (name, size, a snapshot), -ENOSPC, -EIO, -EROFS. */
#define STORE_RESIZE_SHRINK 1u
int store_vol_resize(struct store *st, const char *name, uint64_t size, unsigned flags);
/* The sizes a volume of size bytes can be resized to in place: those
 * whose block tree has as many levels ([*lo, *hi], bytes). */
void store_resize_range(uint64_t size, uint64_t *lo, uint64_t *hi);
/* Rename volume old_name to new_name; its snapshots follow (VOL@SNAP
 * becomes NEW@SNAP), clones keep pointing at their origin.  Refused while
 * the volume or one of its snapshots is attached (-EBUSY: an export name
 * in use must not change under its client), when new_name is taken
 * (-EEXIST, also for new_name == old_name), for a snapshot or an invalid
 * name (-EINVAL), -ENOENT, -ENOSPC, -EIO, -EROFS. */
int store_vol_rename(struct store *st, const char *old_name, const char *new_name);
/* One compaction pass now, as the space policy runs while idle (segments
 * up to 90% live, a bounded batch of blocks), and the checkpoint that
 * frees its victims; segments already dead are freed by that checkpoint
 * too.  Returns blocks moved (0: nothing worth moving) or -errno (-EROFS,
 * -EIO).  Runs on the log thread between rounds: clients wait at most one
 * pass.  Blocks. */
int64_t store_compact(struct store *st);
/* Write a checkpoint now. */
int store_checkpoint(struct store *st);
/* Run a no-op on the log thread and wait for it: returns 0 once the log
 * thread has taken and finished everything queued before it (a liveness
 * probe for a watchdog), -ESHUTDOWN at once when the log thread has
 * stopped (store_close; every control call that needs it does the same).
 * Blocks; not on the loop thread. */
int store_ping(struct store *st);
/* How long the FLUSH/FUA sync running now has run (µs), 0 when none
 * runs: the syncer answers them off the log thread, so a sync stuck in
 * the device shows here and not in store_ping.  Any thread. */
uint64_t store_sync_age_us(struct store *st);
/* Test fault: hold the log thread for secs seconds (nothing is written
 * meanwhile).  Blocks the caller as long. */
int store_stall_log(struct store *st, unsigned secs);

/* Why the store refused a control operation, from the volume table as it
 * stands (store_explain): the policy's reasons live with the policy, and
 * callers turn them into words. */
enum store_why_code {
	STORE_WHY_OTHER = 0,     /* nothing more to say than the errno */
	STORE_WHY_EXISTS,        /* subject: the name that is taken */
	STORE_WHY_NO_VOLUME,     /* subject: the volume part of the name */
	STORE_WHY_NO_SNAPSHOT,   /* subject: "vol@snap" (the volume exists) */
	STORE_WHY_ATTACHED,      /* subject is attached; count: open handles */
	STORE_WHY_HAS_SNAPSHOTS, /* subject (a volume) has count snapshots */
	STORE_WHY_HAS_CLONES,    /* subject (a snapshot) is the origin of count
	                          * clones; names[]: the first few */
	STORE_WHY_BUSY,          /* another delete/rollback holds it */
	STORE_WHY_POOL_FULL,
	STORE_WHY_POOL_FAILED, /* sticky I/O failure: writes fail until restart */
	STORE_WHY_READ_ONLY,
	STORE_WHY_SHRINK,    /* resize smaller without STORE_RESIZE_SHRINK */
	STORE_WHY_RANGE,     /* resize outside [lo, hi] (store_resize_range) */
	STORE_WHY_UNALIGNED, /* shrink to a size not a multiple of the block size */
};
#define STORE_WHY_NAMES 3
struct store_why {
	enum store_why_code code;
	unsigned count;
	char subject[NAMES_FULL_MAX + 1];
	char names[STORE_WHY_NAMES][NAMES_FULL_MAX + 1];
	uint64_t size, lo, hi; /* resize: the current size and the range allowed */
};
enum store_ctl_op {
	STORE_OP_VOL_CREATE,
	STORE_OP_VOL_DELETE,
	STORE_OP_SNAP_CREATE,
	STORE_OP_SNAP_DELETE,
	STORE_OP_CLONE,
	STORE_OP_ROLLBACK,
	STORE_OP_LOOKUP, /* info, list, checkpoint: no change refused */
	STORE_OP_VOL_RESIZE,
	STORE_OP_VOL_RENAME,
};
/* Explain err, which op on name (and new_name, for a clone or rename;
 * resize: new_size) returned.
 * Any thread; takes the volume table's lock; never blocks on I/O. */
void store_explain(struct store *st, enum store_ctl_op op, const char *name, const char *new_name,
                   int err, struct store_why *why);
/* store_explain for a resize of name to new_size. */
void store_explain_resize(struct store *st, const char *name, uint64_t new_size, int err,
                          struct store_why *why);

struct store_vol_info {
	char name[NAMES_FULL_MAX + 1]; /* "vol" or "vol@snap" */
	uint64_t id;
	uint64_t size;          /* bytes */
	uint64_t mapped_blocks; /* blocks mapped in its tree */
	uint64_t unique_blocks; /* blocks only it references (freed if deleted) */
	bool snapshot;
	char origin[NAMES_FULL_MAX + 1]; /* clone: the snapshot it came from, else "" */
	uint64_t created;                /* unix seconds */
	unsigned attached;               /* open handles */
	unsigned nsnapshots;             /* a volume in store_list_page: its snapshots */
};

/* List volumes (and snapshots) into a malloc'd array; *n gets the count.
 * Returns 0 or -errno; free(*out) afterwards.  Counting blocks walks the
 * nodes each record holds alone and reads those not in memory (blocking):
 * not for the event loop. */
int store_list(struct store *st, struct store_vol_info **out, size_t *n);
int store_info(struct store *st, const char *name, struct store_vol_info *out);
/* store_list without the block counts (mapped_blocks and unique_blocks
 * 0): walks no tree, reads nothing; the volume table's lock is all it
 * takes.  For the event loop (NBD_OPT_LIST). */
int store_list_names(struct store *st, struct store_vol_info **out, size_t *n);

/* One page of a listing, in id order.  Ids only grow and are never reused,
 * so a walk that passes the last id of each page as the next page's after
 * sees every entry that exists throughout exactly once, whatever is
 * created, deleted or renamed meanwhile (a new entry comes after every
 * older one: it is seen if it appears before the walk passes its id). */
#define STORE_LIST_PAGE_MAX 10000u /* entries per page, at most */
#define STORE_LIST_FIGURES  1u     /* fill unique_blocks too */
struct store_list_req {
	bool snapshots;     /* false: volumes (clones too); true: snapshots */
	const char *volume; /* snapshots of this volume only; NULL: all */
	uint64_t after;     /* entries whose id is greater (0: from the start) */
	unsigned max;       /* page size, 1..STORE_LIST_PAGE_MAX */
	unsigned flags;     /* STORE_LIST_FIGURES */
};
/* Fill out[0 .. *n) (room for q->max) with the entries q asks for, and
 * *more: whether more follow the last.  A volume's entry counts its
 * snapshots (nsnapshots); mapped_blocks is its root's count (O(1)).
 * unique_blocks is 0 unless STORE_LIST_FIGURES: then each entry costs a
 * walk of the tree nodes only it holds (tree_count), with the lock dropped
 * for any node not in memory (an entry deleted meanwhile keeps its place,
 * unique 0).  Returns 0, -EINVAL (max, or a volume name that is not one),
 * -ENOENT (no such volume), -ENOMEM, -EIO (figures: a tree that kept
 * changing under its walk).  Any thread; without figures, one hold of the
 * volume table's lock, O(entries in the table * log max) and no tree node
 * read; memory O(max). */
int store_list_page(struct store *st, const struct store_list_req *q, struct store_vol_info *out,
                    size_t *n, bool *more);

struct store_stats {
	uint64_t pool_bytes, segment_bytes;
	uint64_t segments, segments_free, segments_pending;
	uint64_t blocks_live; /* data + metadata blocks referenced */
	uint64_t log_lsn, checkpoint_lsn;
	uint64_t batches, batch_blocks, syncs, checkpoints;
	/* versions of summaries kept open written again in place (log.h) */
	uint64_t summary_rewrites;
	/* rounds an event loop ran itself (writer_inline), and those of
	 * them slow enough to turn inline rounds off for a while */
	uint64_t inline_rounds, inline_slow;
	uint64_t compactions, compacted_blocks, segments_freed;
	/* verified reads: data blocks found failing their checksum (each
	 * counted once), and reads answered EIO for one (reader threads add
	 * to these with atomic increments) */
	uint64_t bad_blocks, bad_reads;
	/* READs answered from a view of the pool's page cache, their bytes
	 * sent from there with no copy (store_read_view; atomic increments) */
	uint64_t read_views;
	uint64_t compact_skipped_bad; /* damaged blocks the compactor left in place */
	uint64_t checkpoint_ns;       /* time checkpoints took, each from begin to finish */
	uint64_t client_write_bytes;  /* WRITE payload bytes completed without error (the
	                               * denominator of write amplification: bytes_written
	                               * were written to the pool for them) */
	/* What the pool's time and bytes went to (docs/CONTROL.md, `stats`):
	 * FLUSH requests, and WRITE/TRIM/ZERO requests with FUA, that reached
	 * the log thread; every byte the store wrote to its segment backend
	 * (log appends: data, summaries, tree nodes, checkpoint records,
	 * compaction copies) and superblock slots; CLOCK_MONOTONIC time the
	 * log thread spent in compaction passes (choosing victims, copying)
	 * and on checkpoints (writing nodes and record, a synchronous one's
	 * sync and superblock, waiting for and finishing a background one),
	 * and the committer thread's sync and superblock write of background
	 * checkpoints.  Counted since the store opened.  Of the log
	 * thread's checkpoint time, the longest single stretch (writes
	 * wait that long), and the tree leaves and count pages periodic
	 * checkpoints wrote ahead of themselves, between rounds (their
	 * pre-copy). */
	uint64_t flushes, fua_requests;
	uint64_t bytes_written;
	uint64_t compact_ns, ckpt_log_ns, ckpt_sync_ns;
	uint64_t ckpt_log_max_ns, ckpt_precopy_nodes, ckpt_precopy_pages;
	bool failed;                  /* sticky I/O failure */
	bool read_only;               /* opened read-only (asked for, or below) */
	bool read_only_fallback;      /* read-only because open could not write a checkpoint */
	uint32_t format_version;      /* the pool's (FORMAT.md: 3, or 1 or 2 opened read-only) */
	uint64_t count_pages;         /* count pages in memory (4 KiB each) */
	uint64_t count_pages_evicted; /* dropped back to disk after checkpoints, ever */
	/* the tree node cache (docs/METADATA.md, step 3): nodes in memory and
	 * their bytes, the bound, nodes read on demand and evicted */
	uint64_t cache_nodes, cache_bytes, cache_bound, cache_loads, cache_evictions;
};
void store_get_stats(struct store *st, struct store_stats *out);

/* ---- I/O counters per volume and snapshot (iostats.c) -----------------
 * Every request that completes counts once in its volume's record: ops,
 * bytes and errors per command, and the latency of READ, WRITE and FLUSH
 * (submission to completion; a READ served at once by store_read_try is
 * timed there).  Store requests are counted, so a TRIM, ZERO or CACHE that
 * the caller splits into STORE_MAX_REQ parts counts once per part;
 * BLOCK_STATUS counts once per request asking for base:allocation
 * (store_bs) and once per store_map call.  The counters live in the
 * volume record (gone with it) and are updated with relaxed atomics, the
 * read side and the write side on separate cache lines: no lock on the
 * data path. */
enum store_io_cmd {
	STORE_IO_READ,
	STORE_IO_WRITE,
	STORE_IO_TRIM,
	STORE_IO_ZERO,
	STORE_IO_FLUSH,
	STORE_IO_CACHE,
	STORE_IO_BLOCK_STATUS,
	STORE_IO_CMDS,
};
/* Latency histograms: READ, WRITE and FLUSH (STORE_IO_TIMED of them, in
 * that order), each STORE_IO_BUCKETS buckets, bucket i counting latencies
 * <= store_io_bucket_ns[i] (and above the previous bound); the last has no
 * upper bound. */
#define STORE_IO_TIMED   3
#define STORE_IO_BUCKETS 15
extern const uint64_t store_io_bucket_ns[STORE_IO_BUCKETS - 1];

struct store_vol_io {
	char name[NAMES_FULL_MAX + 1]; /* "vol" or "vol@snap" */
	uint64_t size;
	bool snapshot;
	struct {
		uint64_t ops;    /* requests completed, failed ones included */
		uint64_t bytes;  /* their lengths, failed ones excluded (FLUSH: 0) */
		uint64_t errors; /* completed with an error */
	} cmd[STORE_IO_CMDS];
	struct {
		uint64_t sum_ns;                  /* latencies added up */
		uint64_t count[STORE_IO_BUCKETS]; /* per bucket, not cumulative */
	} lat[STORE_IO_TIMED];
};
/* "read", "write", "trim", "zero", "flush", "cache", "block_status". */
const char *store_io_cmd_name(enum store_io_cmd c);
/* The histogram index of c (0 .. STORE_IO_TIMED-1), or -1 if not timed. */
int store_io_timed(enum store_io_cmd c);
/* The volume table's totals, kept as records come and go. */
struct store_vol_totals {
	uint64_t volumes;     /* volumes and clones */
	uint64_t snapshots;   /* snapshots */
	uint64_t provisioned; /* the sum of the volumes' and clones' sizes */
};
/* The counters of the records that are active: a request counted since
 * the store opened, or attached now (any other's are all zero, and a pool
 * of 10^5 snapshots has mostly those), in volume-table order, into a
 * malloc'd array (*n the count, maybe 0; free(*out) afterwards); and
 * every record's totals into *tot, exact.  0 or -ENOMEM.  Any thread;
 * holds the volume table's lock for one pass over the records, reading a
 * flag in each and copying only the active ones; a copy taken while I/O
 * runs may be a few requests apart between fields. */
int store_vol_io(struct store *st, struct store_vol_io **out, size_t *n,
                 struct store_vol_totals *tot);

/* ---- scrub (scrub.c) ------------------------------------------------
 * A background pass that reads every data block mapped by the volumes and
 * snapshots that exist when it starts, each pool block once however many
 * trees share it, verifies it like any read, and reports the damaged ones
 * by every name and byte offset that maps them.  At most one pass at a
 * time; it runs at a bounded rate, sleeps between chunks of at most 64
 * blocks and never holds a lock a client waits on for longer than a chunk's
 * tree lookups.  Works on a read-only pool too.  Volumes deleted during a
 * pass are skipped from then on; blocks written after it started may be
 * left out. */
#define STORE_SCRUB_RATE_DEFAULT (64ull << 20) /* bytes per second */
#define STORE_SCRUB_RATE_MIN     4096u         /* one block per second */
#define STORE_SCRUB_REPORT_MAX   1000u         /* damaged (name, offset) pairs kept */

enum store_scrub_state {
	STORE_SCRUB_IDLE,    /* no pass since open */
	STORE_SCRUB_RUNNING, /* a pass is reading */
	STORE_SCRUB_DONE,    /* the last pass read everything */
	STORE_SCRUB_STOPPED, /* the last pass was stopped (store_scrub_stop or close) */
	STORE_SCRUB_FAILED,  /* the last pass ended on an error (err), not on damage */
};

struct store_scrub_status {
	enum store_scrub_state state;
	unsigned pass;              /* passes started since open (this one's number) */
	uint64_t started, finished; /* unix seconds; 0 = not yet */
	uint64_t rate;              /* bytes per second */
	unsigned volumes_done, volumes_total;
	uint64_t blocks_checked; /* distinct pool blocks read and verified */
	uint64_t blocks_walked;  /* mapped blocks visited, shared ones once per tree */
	uint64_t blocks_total;   /* mapped blocks at the start: blocks_walked's goal (an estimate:
	                          * volumes change while the pass runs) */
	uint64_t damaged_blocks; /* distinct pool blocks found damaged */
	uint64_t damaged_names;  /* (name, offset) pairs that map them; the first
	                          * STORE_SCRUB_REPORT_MAX are kept */
	int err;                 /* STORE_SCRUB_FAILED: why (-errno) */
};

struct store_scrub_damage {
	char name[NAMES_FULL_MAX + 1]; /* "vol" or "vol@snap", when the pass met it */
	uint64_t offset;               /* bytes into the volume */
	uint64_t pool_block;           /* the block's address in the pool (FMT_BLOCK units) */
};

/* Start a pass at rate bytes per second (0: STORE_SCRUB_RATE_DEFAULT).
 * Returns 0, -EALREADY (a pass is running), -EINVAL (rate below
 * STORE_SCRUB_RATE_MIN), -ESHUTDOWN (the store is closing), -ENOMEM or
 * -EAGAIN (no thread).  Any thread; never blocks on I/O. */
int store_scrub_start(struct store *st, uint64_t rate);
/* Stop the running pass, if any, and wait for it (at most one chunk's
 * reads).  Any thread but a pass's own. */
void store_scrub_stop(struct store *st);
/* The running or last pass into *out, and its first max damaged pairs
 * into dmg (may be NULL when max is 0), in the order found.  Returns how
 * many were copied.  Any thread; never blocks on I/O. */
unsigned store_scrub_status(struct store *st, struct store_scrub_status *out,
                            struct store_scrub_damage *dmg, unsigned max);
/* "idle", "running", "done", "stopped" or "failed". */
const char *store_scrub_state_name(enum store_scrub_state s);

/* Offline consistency check of an opened (read-only) store: checksums were
 * verified on load; this compares block reference counts and the free
 * bitmap with what the trees reference.  Prints problems with say_error();
 * returns the number found. */
int store_check(struct store *st);

#endif
