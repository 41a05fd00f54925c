/* store_int.h — what the store's own files share (private: nothing outside
 * src/store*.c, vtab.c, writer.c, reader.c, space.c, super.c, ckpt.c,
 * recover.c, check.c and core.c includes it; everyone else uses store.h).
 *
 * The store is split by concern, one file each (docs/ARCHITECTURE.md draws
 * the map); struct store gathers their state, one sub-struct per owning
 * file, and each field says who writes it and under which lock:
 *
 *   store.c      public entry points: open/close order, format, probe, submit
 *   store_ctl.c  control operations (one function each), list/info/stats
 *   check.c      the offline check
 *   recover.c    replay of the log after the checkpoint
 *   writer.c     the log thread: rounds, staging, group commit
 *   reader.c     reader threads, the lock-free read path, block status,
 *                every data block verified against its CRC (bcrc.c)
 *   space.c      every reserve / room / low-water rule; drives the compactor
 *   ckpt.c       checkpoint record encode/decode, writing a checkpoint
 *   super.c      the two superblock slots
 *   vtab.c       the volume table, export handles, applying logged ops
 *   core.c       pool-wide state: the sticky failure, scratch blocks, waiting
 *   iostats.c    per-volume I/O counters, bumped at completion (core_complete)
 *
 * Calls go down this list, never up (a file calls only files below it).
 */
#ifndef COWBD_STORE_INT_H
#define COWBD_STORE_INT_H
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "alloc.h"
#include "compact.h"
#include "format.h"
#include "iostats.h"
#include "log.h"
#include "map.h"
#include "segio.h"
#include "store.h"
#include "tree.h"

#define CKPT_MAX_BLOCKS ((unsigned)FMT_SUM_ENTRIES)

/* A segment's forwarding chain (format version 5) as the last checkpoint
 * wrote it: its first block (read by the map's loader on any thread) and,
 * once the log thread knows them, all its blocks, head first, each held
 * (ckpt.c; a chain found at open is held by the segment table's counts
 * until its blocks are known). */
struct ckpt_chain {
	uint64_t head;
	uint64_t *blk;
	uint32_t n;
	bool known;
};

/* A node of one of vtab.c's treaps: records ordered by id. */
struct vtab_node {
	struct vtab_node *l, *r;
	uint64_t id;
};

/* A volume or snapshot record.  flags are immutable after creation; name
 * and size change only on the log thread: the name by a rename (written
 * under vt.lock, with the volume and its snapshots locked against
 * attaches), the size by a rollback (volume locked) or a resize (written
 * under vt.lock with CMM_STORE_SHARED: a grow happens while attached, and
 * the data path reads it unlocked); tree.root is RCU-published for
 * readers; everything else belongs to the log thread; next/attached/locked
 * are under vt.lock. */
struct volume {
	struct volume *next; /* st->vt.list, under vt.lock */
	/* vtab.c's indexes, changed with the list (under vt.lock) */
	struct volume *prev;      /* st->vt.list */
	struct volume *name_next; /* vt.names: its chain */
	struct vtab_node ord;     /* vt.bases or vt.snaps, by its kind */
	struct vtab_node kin;     /* a snapshot among its volume's snapshots,
	                           * a clone among its origin's clones (vt.kin) */
	uint64_t id;
	uint64_t parent_id; /* snapshot: its volume */
	uint64_t origin_id; /* clone: the snapshot it came from */
	uint64_t size;
	uint64_t created;
	uint32_t slot; /* ckpt.c: 1 + its slot in the volume table on disk, 0: none yet */
	bool snapshot;
	char name[NAMES_PART_MAX + 1]; /* own part: "vol" or "snap" */
	struct tree tree;
	unsigned attached; /* under vt.lock */
	bool locked;       /* under vt.lock: being deleted or rolled back */
	/* writer.c: lba -> this round's latest staged block; valid only while
	 * pend_round == wr.round (reset lazily) */
	struct map pend;
	uint64_t pend_round;
	/* iostats.c: relaxed atomics, any thread.  Made at the record's
	 * first attach (every request comes through a handle) and kept until
	 * the record goes; NULL for a record never attached, as most
	 * snapshots are (900 bytes each: 90 MB at 10^5 records). */
	struct iostats *io;
};

/* An open handle on a volume record (an export). */
struct vol {
	struct store *st;
	struct volume *rec;
	char export_name[NAMES_FULL_MAX + 1];
};

/* Block-sized buffers for one round or one checkpoint (log thread). */
struct scratch {
	void **blk;
	size_t n, used;
};

/* One change staged in a round, applied once the round is written. */
struct apply {
	struct volume *v;
	uint64_t lba;
	uint64_t val; /* SET: physical block; TRIM: end lba */
	bool trim;
};

/* A thread asleep on a queue (core_queue_sleep_locked), on a condition
 * variable of its own: no condition variable of a queue ever has more than
 * one waiter (core.c says why). */
struct queue_sleeper {
	pthread_cond_t cond;
	struct queue_sleeper *next; /* under the queue's lock */
	bool woken;                 /* under the queue's lock: taken off the list */
};

/* A queue of requests handed to store threads.  Its threads leave once
 * stop is set and they find it empty; the thread that finds it so closes
 * it in the same hold of the lock (core_queue_close_locked), so a push
 * either lands before that last look, and is served, or finds it closed
 * and is answered -ESHUTDOWN: none waits in a queue nobody reads. */
struct req_queue {
	pthread_mutex_t lock;
	struct queue_sleeper *sleepers; /* under lock: its threads asleep, last to sleep first */
	struct store_req *head, *tail;  /* under lock */
	bool stop;                      /* under lock: threads leave when it drains */
	bool closed;                    /* under lock: pushes are refused (-ESHUTDOWN) */
};

struct store {
	/* Set at open, then fixed. */
	struct segio *io;
	struct blkdev *dev; /* what io runs on; closed by store_close */
	uint64_t nsegs;
	bool read_only;
	/* The trees' node cache (tree.h): made by ckpt_load, freed by
	 * store_dealloc; tree.c guards what is inside. */
	struct tree_cache *nc;
	uint64_t cache_bytes; /* its bound (store_opts), given to it by writer_start */
	/* Log thread (or the single-threaded opener) only. */
	struct alloc *a;
	struct log *log;
	struct fmt_super sb; /* super.c */
	/* core.c: sticky, set once by core_set_failed (log thread); read
	 * racily elsewhere, where a stale false costs only a later -EIO. */
	bool failed;
	struct scratch scr;       /* core.c, log thread */
	struct store_stats stats; /* counters: log thread */

	struct { /* vtab.c */
		/* list, n, attached, locked and the indexes.  Taken inside
		 * RCU read-side sections (reader_walk_locked retakes it in
		 * one): never wait for a grace period (synchronize_rcu) while
		 * holding it. */
		pthread_mutex_t lock;
		/* Every record in ascending id order (= creation order):
		 * written by the log thread, under lock.  The indexes below
		 * change with it: ids (id -> record), names (chained hash by
		 * volume id or 0 and own name), bases and snaps (treaps of
		 * the volumes and clones, and of the snapshots, by id), kin
		 * (id -> struct vtab_kin: the record's snapshots and clones,
		 * counted and by id; an entry lives while it has any). */
		struct volume *list, *tail;
		unsigned n;
		struct map ids, kin;
		struct volume **names;
		size_t names_cap;
		struct vtab_node *bases, *snaps;
		uint64_t next_id; /* log thread */
		/* Kept with the list (under lock), for totals without a
		 * walk (store_vol_io): the snapshots among the n records,
		 * and the sum of the others' sizes (resize and rollback
		 * change it too). */
		unsigned nsnaps;
		uint64_t provisioned;
	} vt;

	struct { /* writer.c */
		struct req_queue q;
		bool running; /* the log thread exists (stays true once stopped: ckpt_commit) */
		bool stopped; /* writer_stop joined it (its caller's thread only) */
		pthread_t thread;
		/* Held by whoever runs the log's work: the log thread, except
		 * while it sleeps for the queue, or an event loop running a
		 * round of its own writes inline (writer_inline).  Everything
		 * marked "log thread" below and in the store is under it. */
		pthread_mutex_t own;
		/* under q.lock: an inline round left work between rounds
		 * (kick); one ran since the log thread last looked (active);
		 * the log thread is not asleep in its queue: it may have taken
		 * work and not yet got own, and no inline round may go ahead
		 * of that work (awake) */
		bool kick, active, awake;
		uint64_t inline_off_until; /* under own: no inline round before (iostats_now) */
		/* round state (log thread) */
		struct apply *ap;
		size_t nap, ap_cap;
		uint64_t round;       /* rounds begun: dates each volume's pend map */
		uint64_t staged_cost; /* space.c's cost of what is staged, not yet applied */
		uint64_t parked_ns;   /* iostats_now() when idle roots were last parked */
		uint64_t trimmed_ns, trimmed_evictions; /* give_back: when, at how many */
		/* The syncer: a round's FLUSHes and FUA writes wait in sq for
		 * its next sync while the log thread goes on (writer.c).  A
		 * failed sync's error waits in sync_err (atomic) for the log
		 * thread to fail the pool with it; sync_since (atomic) is
		 * when the sync running now began (iostats_now), 0 between
		 * syncs: the watchdog's view of the syncer (store_sync_age). */
		struct req_queue sq;
		pthread_t sync_thread;
		bool sync_running;
		int sync_err;
		uint64_t sync_since;
	} wr;

	struct { /* reader.c */
		struct req_queue q;
		pthread_t *threads;
		unsigned n;
		/* verified reads (vr): the expected CRC of each data block
		 * (bcrc.h; made by reader_start, freed by reader_stop), and
		 * the bad blocks found, each logged once (under bad_lock) */
		struct bcrc *bcrc;
		pthread_mutex_t bad_lock;
		struct reader_bad *bad;
		unsigned nbad;
	} rd;

	struct {                                      /* ckpt.c (log thread) */
		uint64_t blocks[1 + CKPT_MAX_BLOCKS]; /* the durable checkpoint batch */
		unsigned nblocks;
		uint64_t interval_bytes, interval_secs;
		uint64_t log_blocks_at; /* log_blocks_written() at the last one */
		time_t last;
		bool dirty; /* anything logged since the last checkpoint */
		uint64_t lsn;
		unsigned bitmap_mismatch; /* found at load (for store_check) */
		/* The space map on disk (format version 3): each segment's
		 * count page (0: none; pg1: a wide page's second block) and
		 * each segment table, as the last checkpoint written or
		 * loaded names them; tables to rewrite at the next one. */
		uint64_t *pg0, *pg1;
		uint64_t *stab;
		uint8_t *stab_dirty;
		uint64_t nstab;
		uint32_t *counts; /* one segment's counts (scratch) */
		/* The volume table on disk (format version 4): each table
		 * block's address (0: none) and records as last written or
		 * read, and the blocks to rewrite anyway (compaction moves
		 * them); nvblk blocks in use, vcap in the arrays. */
		uint64_t *vblk;
		struct fmt_vol *vrec;
		uint8_t *vblk_dirty;
		uint64_t nvblk, vcap;
		/* The forwarding map on disk (format version 5): each
		 * segment's chain, the chain blocks held in all and, per
		 * segment, those lying in it (its table's held); the bytes
		 * of tables the map keeps in memory after a checkpoint. */
		struct ckpt_chain *chain;
		uint32_t *chain_in;
		uint64_t nchain, fwd_max;
		bool upgrade;       /* loaded from an older version: the next
		                     * checkpoint rewrites every node (and page) */
		uint64_t pages_max; /* count pages kept after a checkpoint */
		int emit_err;       /* why the last node emit failed */
		bool full_logged;   /* "postponed: no room" said once */
		struct fmt_node img;
		struct ckpt_bg *bg; /* the background commit (ckpt_bg_start) */
		uint64_t began_ns;  /* iostats_now() when the last one began */
		/* The pre-copy before a periodic checkpoint (ckpt_precopy):
		 * the volumes whose trees were dirty when it started, the one
		 * it is in (pre_i) and where in it (pre_from); then the count
		 * pages, the next segment to look at (pre_seg); leaves and
		 * pages per round; which pass it is and how many blocks were
		 * dirty when it began. */
		uint64_t *pre_ids;
		size_t pre_n, pre_i;
		uint64_t pre_from, pre_seg, pre_dirty;
		unsigned pre_slice, pre_pass;
	} ck;

	struct { /* space.c (log thread) */
		uint64_t reserve_segs;
		struct compact *compact;
		uint64_t futile_at; /* log_blocks_written() when a low-water pass found nothing */
		/* live blocks and free segments when make_room last found no
		 * room (UINT64_MAX: it found some) */
		uint64_t futile_live, futile_free;
		/* idle cleaning waits while this is nonzero (any thread:
		 * space_pause_idle) */
		int idle_paused;
	} sp;

	struct {                      /* scrub.c */
		pthread_mutex_t lock; /* everything below */
		pthread_cond_t wake;  /* stop asked: a pass sleeping between chunks wakes */
		pthread_t thread;     /* the pass, while joinable */
		bool joinable;
		bool stop;   /* the pass leaves at its next chunk */
		bool closed; /* the store is closing: no new pass */
		struct store_scrub_status status;
		struct store_scrub_damage *found; /* up to STORE_SCRUB_REPORT_MAX */
	} sc;
};

/* ---- core.c: pool-wide state ------------------------------------------ */

/* Mark the pool failed (sticky: writes, flushes and control changes get
 * -EIO until restart) and log why, once. */
void core_set_failed(struct store *st, int err, const char *what);
/* A FMT_BLOCK scratch buffer valid until core_scratch_reset; NULL on ENOMEM. */
void *core_scratch_get(struct store *st);
size_t core_scratch_used(const struct store *st);
void core_scratch_reset(struct store *st);
void core_scratch_free(struct store *st);
/* Complete a request: a data-path one counts in its volume (iostats.c),
 * before done() hands it back. */
static inline void core_complete(struct store_req *r, int err)
{
	r->err = err;
	if (!r->job)
		iostats_done(r);
	r->done(r);
}
/* Queues: init/destroy; push r at the tail and wake one sleeper; ask the
 * threads to stop (each leaves once the queue is empty).  A push to a
 * closed queue completes r with -ESHUTDOWN on the caller's thread, after
 * the lock is dropped (done() may submit again); it returns 0 or that. */
void core_queue_init(struct req_queue *q);
void core_queue_destroy(struct req_queue *q);
int core_queue_push(struct req_queue *q, struct store_req *r);
/* Push head..tail (linked by next, tail->next NULL) with one lock and one
 * wake; closed: every one of them is answered -ESHUTDOWN. */
int core_queue_push_list(struct req_queue *q, struct store_req *head, struct store_req *tail);
void core_queue_stop(struct req_queue *q);
/* Refuse every later push.  The _locked form is a queue thread's, at its
 * last look (stop set, the queue empty; caller holds q->lock).
 * core_queue_close is the stopper's, after it joined the threads: it also
 * answers -ESHUTDOWN whatever is still queued (there is nothing when a
 * thread closed it; a queue whose threads never started may hold some). */
void core_queue_close_locked(struct req_queue *q);
void core_queue_close(struct req_queue *q);
/* Wake the queue's waiter without giving it a request (it re-checks
 * whatever else it waits for). */
void core_queue_wake(struct req_queue *q);
/* Sleep on q until a push, stop or wake takes this thread off q's sleepers,
 * or until the CLOCK_REALTIME time until (NULL: no limit).  Caller holds
 * q->lock (released while asleep, held again on return) and re-checks what
 * it waits for: a woken thread may find the request taken by a thread that
 * was not asleep.  0 when woken, ETIMEDOUT. */
int core_queue_sleep_locked(struct req_queue *q, const struct timespec *until);
/* Submit r with submit() and block until it completes; returns r->err. */
int core_submit_wait(struct store_req *r, void (*submit)(struct store_req *));

/* ---- vtab.c: volume records and handles -------------------------------- */

/* Tree levels for a volume of size bytes; 0 if 0 or too large. */
unsigned vtab_levels_for_size(uint64_t size);
/* Lookups: caller holds vt.lock or is the log thread.  O(1) expected. */
struct volume *vtab_find_id(struct store *st, uint64_t id);
struct volume *vtab_find_base(struct store *st, const char *name);
struct volume *vtab_find_snap(struct store *st, uint64_t parent, const char *snap);
struct volume *vtab_find_export(struct store *st, const char *full, int *err);
/* Snapshots of volume v (O(1)); clones made from snapshot snap: their
 * count in O(1), the first max full names into names[] (by id) in
 * O(log n + max). */
unsigned vtab_snapshots(struct store *st, const struct volume *v);
unsigned vtab_clones(struct store *st, const struct volume *snap, char (*names)[NAMES_FULL_MAX + 1],
                     unsigned max);
/* "vol" or "vol@snap" (O(1)). */
void vtab_full_name(struct store *st, const struct volume *v, char *out, size_t len);
/* Visit, by ascending id from the first above after, the records of one
 * kind: with family NULL, every snapshot (snapshots) or every volume and
 * clone (!snapshots); else family's snapshots or family's clones.  fn
 * returns false to stop.  fn must not link or unlink.  Caller holds
 * vt.lock or is the log thread.  O(log n + records visited). */
typedef bool (*vtab_visit_fn)(struct volume *v, void *arg);
void vtab_walk(struct store *st, const struct volume *family, bool snapshots, uint64_t after,
               vtab_visit_fn fn, void *arg);
/* Do the list (id order, links, count) and every index agree?  NULL, or
 * what is wrong first.  Any thread (takes vt.lock).  O(n log n). */
const char *vtab_check(struct store *st);
/* New record (not linked); NULL on ENOMEM. */
struct volume *vtab_volume_new(uint64_t id, const char *name, uint64_t size, uint64_t created);
/* Add v (its kind, parent and origin set; its id in no record) to the
 * table and its indexes, in id order.  Log thread or the opener.  0 or
 * -ENOMEM (the table unchanged, the pool failed: core_set_failed).
 * O(log n) expected, O(1) of it for the list when v's id is the largest
 * (every create; a checkpoint in id order). */
int vtab_link(struct store *st, struct volume *v);
/* Drop every record (close). */
void vtab_free_all(struct store *st);
/* Apply a logged control operation (live or at replay); -EILSEQ if it does
 * not fit the table, -ENOMEM. */
int vtab_apply_op(struct store *st, const struct fmt_op *op);
/* Refuse new attaches while a delete/rollback is logged; -EBUSY if attached. */
int vtab_lock_volume(struct store *st, struct volume *v);
void vtab_unlock_volume(struct store *st, struct volume *v);
/* The same for v and every snapshot of v (a rename changes all their
 * export names); -EBUSY if any is attached. */
int vtab_lock_family(struct store *st, struct volume *v);
void vtab_unlock_family(struct store *st, struct volume *v);
/* Every volume's tree, malloc'd (log thread or single-threaded); *n the
 * count.  NULL on ENOMEM. */
struct tree **vtab_trees(struct store *st, unsigned *n);

/* ---- super.c: superblock slots ---------------------------------------- */

/* A fresh superblock for a pool of nsegs segments. */
void super_init(struct fmt_super *sb, uint64_t nsegs);
/* Read both slots and keep the newest valid one in st->sb; *why on error
 * (-ENODATA no pool, -EPROTONOSUPPORT newer, -EILSEQ damaged). */
int super_read(struct store *st, const char **why);
/* Write st->sb with the next generation into its slot, durably. */
int super_write(struct store *st);
/* Give sb the next generation, its slot and its CRC (super_write's first
 * step, for a superblock written off the log thread). */
void super_seal(struct fmt_super *sb);
/* Pool magic in either slot?  1, 0, or -errno. */
int super_probe(struct segio *io);

/* check.c: the most reference counts store_check holds at once (one
 * per block; more blocks are checked in several passes). */
extern uint64_t check_span_blocks;

/* ---- ckpt.c: checkpoints ----------------------------------------------- */

/* Volumes a pool of nsegs segments can hold: as many as its checkpoint
 * record has room to list the volume table blocks of (0 if its segment
 * tables alone do not fit), at most STORE_MAX_VOLS. */
unsigned ckpt_max_vols(uint64_t nsegs);
/* The most segments a pool may have for its record to hold min_vols. */
uint64_t ckpt_max_segs(unsigned min_vols);
/* The blocks the record takes once the table holds nvols volumes (0: as
 * it is). */
unsigned ckpt_record_blocks(const struct store *st, uint64_t nvols);
/* Write every dirty node, a checkpoint record and the superblock; then the
 * segments that died before it become free.  Log thread (or the opener).
 * 0 or -errno (the pool is failed then). */
int ckpt_write(struct store *st);
/* Is a checkpoint due (log bytes or seconds since the last), and none in
 * flight? */
bool ckpt_due(const struct store *st);
/* The periodic checkpoint, off the write path: write the dirty nodes and
 * the record into the log now, and leave the sync, the superblock flip
 * and the grace period to the background thread; ckpt_poll finishes it.
 * Without the thread (the opener), the same as ckpt_write.  Log thread. */
void ckpt_begin(struct store *st);
/* Before ckpt_begin, between rounds: write a slice of the dirty leaves,
 * so that the checkpoint itself writes only those changed since (and the
 * inner nodes) while writes wait.  Returns true when the pass over every
 * dirty tree is over (the call after its last slice) or not worth it:
 * then the caller begins the checkpoint; false while it goes on, and when
 * a write failed (the pool is failed, or full, as a checkpoint's failure
 * leaves it).  Log thread. */
bool ckpt_precopy(struct store *st);
/* Finish a checkpoint whose background part is done: its old blocks and
 * the segments that died before it go.  Cheap when there is none; the log
 * thread calls it between rounds. */
void ckpt_poll(struct store *st);
/* Wait for the checkpoint in flight, if any, and finish it.  Log thread. */
void ckpt_wait(struct store *st);
/* Has the background part of a checkpoint finished (ckpt_poll has work)?
 * Any thread (the writer's queue wait). */
bool ckpt_ready(struct store *st);
/* The background committer: started with the log thread, stopped after
 * it (nothing in flight by then: the log thread's last checkpoint waits). */
int ckpt_bg_start(struct store *st);
void ckpt_bg_stop(struct store *st);
/* Load the checkpoint st->sb names: volumes, trees, segment bitmap.  sum
 * receives its summary (replay starts after it). */
int ckpt_load(struct store *st, struct fmt_summary *sum, const char **why);
/* Segments holding the durable checkpoint: out[] gets up to
 * 1 + CKPT_MAX_BLOCKS; returns how many. */
unsigned ckpt_segments(const struct store *st, uint64_t *out);
/* Blocks the space map may add to the next checkpoint, at worst: a count
 * page (two blocks if wide) for every segment in use and every segment
 * table; for the space policy.  O(1). */
uint64_t ckpt_map_blocks(const struct store *st);
/* The compactor chose victim[seg] != 0: count pages and segment tables in
 * them are rewritten by the next checkpoint (they move out, as nodes do),
 * so that the victims die.  O(nsegs). */
void ckpt_move_map(struct store *st, const uint8_t *victim);
/* Free the space map's arrays (store_dealloc). */
void ckpt_free(struct store *st);

/* ---- space.c: the space policy ----------------------------------------- */

/* Free segments kept back for checkpoints and control operations. */
uint64_t space_reserve_segs(uint64_t nsegs);
/* Log blocks a data write of [off, off + len) bytes may take in a tree of
 * `levels` levels: its blocks, their summaries and the tree nodes it may
 * dirty (each written at the next checkpoint). */
uint64_t space_write_cost(const struct store *st, uint64_t off, uint64_t len, unsigned levels);
/* May data of that cost be staged now, beside what the round staged
 * (wr.staged_cost)?  0, or -EAGAIN: not now, but space_make_room may
 * help. */
int space_check_write(const struct store *st, uint64_t cost);
/* Checkpoint, then compact until a write of that cost fits or nothing
 * helps. */
void space_make_room(struct store *st, uint64_t cost);
/* May a trim/zero's whole blocks (which free space) be staged now?  0 or
 * -ENOSPC. */
int space_check_trim(const struct store *st);
/* May a control operation be logged now?  grows: it creates a volume,
 * snapshot or clone (a write: may checkpoint and compact first, as
 * space_make_room); else it deletes or rolls back (may use the reserve).
 * 0 or -ENOSPC. */
int space_check_ctl(struct store *st, bool grows);
/* Between rounds: clean ahead of need if free segments run low.  Returns
 * true if a pass moved something (and checkpointed). */
bool space_clean_low(struct store *st);
/* Whether space_clean_low would compact now (cheap: a test, no work). */
bool space_clean_due(const struct store *st);
/* Room for a checkpoint's pre-copy: its leaves are written twice when
 * changed again before the checkpoint, so only while the log has room
 * well beyond the checkpoint and the reserve (two segments). */
bool space_precopy_room(const struct store *st);
/* While idle: clean down towards the live data, else checkpoint if due,
 * else give some free segments back to the backend. */
void space_idle(struct store *st);
/* Hold idle cleaning off (pause) or let it go again; nests.  A pass of the
 * scrub holds it, so that no block it walks moves under it (it reads each
 * physical block once per pass).  Compaction to make room for writes is
 * never held.  Any thread; the next idle tick sees it. */
void space_pause_idle(struct store *st, bool pause);
/* A pass asked for by an operator (store_compact): segments up to the
 * idle-cleaning live fraction, whatever the pool's fill.  Blocks moved, 0
 * if nothing was worth moving, or -errno (pool failed). */
int64_t space_compact(struct store *st);

/* ---- writer.c: the log thread ----------------------------------------- */

int writer_start(struct store *st);
/* Stop after the queue drains (a final checkpoint is written); from then
 * on a request for the log thread is answered -ESHUTDOWN.  A second call
 * does nothing. */
void writer_stop(struct store *st);
/* Queue a write/trim/zero/flush or a job (r->job) for the log thread;
 * once it has stopped, r completes at once with -ESHUTDOWN. */
void writer_enqueue(struct store *st, struct store_req *r);
/* Run list (an event loop's plug, linked by next) as a round on the
 * calling thread when the log thread sleeps with nothing queued and the
 * round needs no read, sync or room to be made; true if it did (every
 * request is then completed).  Called outside any read-side section. */
bool writer_inline(struct store *st, struct store_req *list);

/* ---- reader.c: reads ------------------------------------------------- */

int reader_start(struct store *st, unsigned n);
void reader_stop(struct store *st);
/* Queue a READ, or a job (r->job: run on a reader thread, which completes
 * r with its value; I/O counters are the job's to keep). */
void reader_enqueue(struct store *st, struct store_req *r);
/* store_map of record v without counting it; with nowait, -EAGAIN rather
 * than read a tree node not in memory. */
int reader_map(struct volume *v, uint64_t off, uint64_t len, struct store_extent *ext, unsigned max,
               bool nowait, unsigned *n);
/* A walk of a record's tree for a caller that holds vt.lock, which no node
 * read may happen under (docs/METADATA.md): fn(&tree, true, arg) first;
 * if it meets a node not in memory (-EAGAIN), vt.lock is dropped, fn runs
 * again reading nodes (nowait false) on a copy of the tree (its root kept
 * by the caller's read-side section), and vt.lock is taken again.  That
 * answer stands if record id still has that root; if the root changed
 * meanwhile (rollback, a write copying a shared root) it walks again (at
 * most 64 times: -EIO).  fn must leave its whole answer in arg each time.
 * Caller holds rcu_read_lock and vt.lock, and *v is record id; holds
 * vt.lock again on return, *v the record found again (NULL: deleted,
 * -ENOENT).  Returns fn's value, -ENOENT or -EIO.  It waits for vt.lock
 * inside the read-side section: hence no grace-period wait under vt.lock
 * (struct store). */
typedef int (*reader_walk_fn)(const struct tree *t, bool nowait, void *arg);
int reader_walk_locked(struct store *st, uint64_t id, struct volume **v, reader_walk_fn fn,
                       void *arg);
/* Verified reads (vr).  Read data block phys, which (v, lba) maps, into
 * out (FMT_BLOCK) and check it against its CRC: 0, -EIO (damaged: logged
 * once, counted, remembered for scrub) or -errno.  For the log thread's
 * read-modify-write of a partial block, which must never launder a bad
 * block into a fresh CRC.  Any RCU-registered thread; blocks on I/O. */
int reader_read_block(struct store *st, struct volume *v, uint64_t lba, uint64_t phys, void *out);
/* A damaged block as remembered: the volume that read it (id) and where. */
struct reader_bad_block {
	uint64_t vol_id, lba, phys;
};
/* Copy up to max remembered damaged blocks, oldest first; returns how many
 * there are in all (may exceed max).  Any thread. */
unsigned reader_bad_blocks(struct store *st, struct reader_bad_block *out, unsigned max);
/* A thread that is not an RCU reader becomes one for a call; returns
 * whether it did (pass that to reader_rcu_leave). */
bool reader_rcu_enter(void);
void reader_rcu_leave(bool entered);
/* Whether the calling thread is an RCU reader (store_thread_register). */
bool reader_rcu_registered(void);

/* ---- scrub.c: the background scrub (public API in store.h) ------------- */

/* Set up st->sc (store_alloc) / free it (store_dealloc, after
 * scrub_shutdown).  scrub_shutdown refuses new passes and stops the
 * running one; it runs before the reader threads stop (store_stop). */
void scrub_init(struct store *st);
void scrub_shutdown(struct store *st);
void scrub_free(struct store *st);

/* ---- recover.c: replay ------------------------------------------------- */

/* Follow the log from the checkpoint whose summary is ck, applying every
 * batch that continues the chain; leaves st->log at the end. */
int recover_replay(struct store *st, const struct fmt_summary *ck, const char **why);

#endif
