/* conn_int.h — what conn.c (one connection's state machine) and
 * conn_server.c (listeners, accepting, limits, stopping, the exports table)
 * share: the connection and server structs and their private calls.
 * Private to those two files; everyone else uses conn.h. */
#ifndef COWBD_CONN_INT_H
#define COWBD_CONN_INT_H
#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "diff.h"
#include "names.h"
#include "nbd.h"
#include "proto.h"
#include "sockets.h"
#include "store.h"
#include "tls.h"

#define CONN_RBUF_SIZE     (256u << 10) /* >= one option header + PROTO_OPT_MAX */
#define CONN_SMALL_WRITE   (64u << 10)  /* payloads up to this wait in rbuf */
#define CONN_POOL_BUF      (4u << 20)   /* buffers up to this may stay pooled */
#define CONN_POOL_BYTES    (8u << 20)   /* ... up to this much per connection */
#define CONN_MMAP_MIN      (128u << 10) /* buffers this large are mmap'd (conn.c) */
#define CONN_IOV           128          /* iovecs per sendmsg */
#define CONN_STOP_GRACE    30.0         /* seconds before stop cuts clients off */
#define CONN_MAX_LISTENERS 16
#define CONN_MAP_EXTENTS   4096        /* extents per BLOCK_STATUS reply */
#define CONN_TRY_MAX       (1u << 20)  /* READs up to this try the loop thread first */
#define CONN_VIEW_MIN      (64u << 10) /* READs from this size go out from the page cache */
#define CONN_LOOP_TICK     0.25        /* seconds: a loop thread's watchdog stamp */

static_assert(CONN_RBUF_SIZE >= sizeof(struct nbd_option) + PROTO_OPT_MAX, "rbuf too small");
static_assert(CONN_RBUF_SIZE >= PROTO_REQ_HDR_MAX + CONN_SMALL_WRITE, "rbuf too small");
static_assert(CONN_SMALL_WRITE >= PROTO_BS_PAYLOAD_MAX, "a BLOCK_STATUS payload waits in rbuf");

struct conn;
struct conn_server;

/* Which way a large READ served on a loop thread goes: from a view of the
 * pool's mapping (store_read_view: one CRC pass over the mapping, the
 * send's copy) or copied into the request's buffer (store_read_try:
 * preadv2, a CRC pass over the copy, the send's copy).  Which costs less
 * depends on the machine: the copy goes through the kernel's own map of
 * the page cache, the view through this process's page tables, which a
 * hypervisor that shadows them (or a TLB shared with a busy client) can
 * make many times dearer to walk than the copy is to make.  So each loop
 * times both (ns per byte, before the reply is sent), takes the cheaper
 * and tries the other every CONN_WAY_PROBE-th READ to see if that
 * changed.  Only the loop's thread touches it. */
enum { CONN_WAY_VIEW, CONN_WAY_COPY };
#define CONN_WAY_PROBE    64u    /* every this-many eligible READ tries the dearer way */
#define CONN_WAY_DECAY    4u     /* each sample weighs 1/this of a way's figure */
#define CONN_WAY_SLACK_NS 10000u /* a sample may exceed twice the figure's by this */

struct conn_ways {
	uint64_t ns[2], bytes[2]; /* each way's decayed sums of time and bytes */
	unsigned samples[2];      /* each way's samples, capped */
	unsigned n;               /* READs picked for, to space the probes */
};

/* The way for the next large READ. */
unsigned conn_way_pick(struct conn_ways *w);

/* A READ of bytes went way and took ns to verify (not sent yet). */
void conn_way_note(struct conn_ways *w, unsigned way, uint64_t ns, uint64_t bytes);

/* A view of bytes was tried for ns, declined, and the READ goes to a
 * reader thread: the view way is charged the try and what the copy way's
 * figure expects of those bytes (a READ the view declined and the loop
 * copied is noted as a view's, with both times). */
void conn_way_declined(struct conn_ways *w, uint64_t ns, uint64_t bytes);

/* One event loop serving connections.  The server's own loop (the thread
 * that runs it: main's) is loops[0]; conn_server_set_loops adds loop
 * threads, each with its own loop.  A connection lives on one loop for
 * its whole life: its watchers, its completions and its plug are that
 * loop's, and only that loop's thread touches it, except while the
 * server has parked every loop thread (server_park in conn_server.c) to
 * act on all connections at once: stop, pause, resume, handover, limits. */
struct conn_loop {
	struct conn_server *srv;
	struct ev_loop *loop;
	ev_async wake;                   /* store threads finished requests */
	_Atomic(struct conn_req *) done; /* ... these, pushed by store threads */
	struct store_plug plug;          /* writes parsed, not yet handed over (conn_settle) */
	ev_prepare quiet_w;              /* pausing: are this loop's connections quiet? */
	_Atomic bool quiet;              /* ... yes (until the next pause) */
	unsigned nconns;                 /* connections on this loop; srv->list_lock */
	/* Connections given to this loop (loop_pick, an attach) and not gone
	 * yet (conn_free, or a start that failed): what loop_pick compares.
	 * Counted when given, so a socket on its way from the inbox to
	 * nconns is never missed. */
	_Atomic unsigned assigned;
	struct conn *conns;    /* ... these (lprev/lnext); its thread, or parked */
	struct conn_ways ways; /* large READs: view or copy; its thread */
	/* loop threads only (not loops[0]) */
	pthread_t thr;
	ev_async ctl; /* the server asks: adopt inbox fds, park, quit */
	int *inbox;   /* sockets to serve here; srv->park_lock */
	size_t ninbox, capinbox;
	bool parked;           /* srv->park_lock */
	_Atomic uint64_t tick; /* CLOCK_MONOTONIC µs of its timer's last run */
	ev_timer tick_w;
};

struct conn_req {
	struct store_req sr;
	struct conn *c;
	struct conn_req *next;      /* free list or reply queue (loop thread) */
	struct conn_req *done_next; /* completion stack */
	uint64_t end;               /* TRIM/ZERO split into parts: end offset */
	uint8_t *buf;
	size_t bufcap;
	uint32_t held; /* payload bytes counted in c->bytes */
	/* A BLOCK_STATUS: its question and answer (the runs in buf, after
	 * the reply's descriptors), worked out here or on a reader thread. */
	bool block_status;
	struct store_bs bs;
	/* The reply on the wire (proto assembles it over its own headers
	 * and buf); sent: bytes of it gone. */
	struct proto_reply out;
	uint32_t sent;
	/* A READ answered from a view (store_read_view): out's data iovecs
	 * point into the pool's mapping, valid only in the read-side section
	 * the event that made it holds (conn_views_end copies what is not
	 * sent by then into buf). */
	struct iovec view[PROTO_READ_PIECES];
	unsigned nview;
};

struct conn {
	struct conn_server *srv;
	struct conn_loop *lp;       /* the loop serving it */
	struct conn *prev, *next;   /* srv->conns */
	struct conn *lprev, *lnext; /* lp->conns */
	int fd;
	ev_io rio, wio;
	struct proto proto;
	struct proto_buf hout; /* handshake replies */
	size_t hout_sent;
	uint8_t *rbuf;
	size_t rstart, rend;
	struct conn_req *rx; /* large WRITE whose payload is arriving */
	uint32_t rx_got;
	bool rx_hdr_only;             /* the last request was a large WRITE: recv one header */
	uint64_t drain;               /* payload bytes of a rejected WRITE to discard */
	struct proto_req drain_reply; /* its error reply, sent once drained */
	bool drain_reply_due;
	struct conn_req *rq_head, *rq_tail; /* replies to send, in order */
	struct conn_req *free;
	ev_timer tmo;          /* handshake deadline, then idle timeout */
	ev_tstamp last_active; /* last byte received or sent */
	size_t pool_bytes;     /* buffer bytes kept on the free list */
	unsigned reqs;         /* accepted, reply not yet sent (or dropped) */
	unsigned submitted;    /* owned by the store right now */
	size_t bytes;          /* payload bytes held */
	bool draining;         /* reading is over (DISC, EOF, ABORT, shutdown) */
	bool dead;             /* socket closed */
	bool dirty;            /* on the wake handler's flush list */
	bool paused;           /* handover: no new request or option is taken */
	/* Inside this event: a read-side section is held for the views of
	 * the replies queued in it (conn_views_end closes it). */
	bool view_lock;
	unsigned views;
	struct conn *dirty_next;
	char peer[64];
	struct tls_session *tls; /* after NBD_OPT_STARTTLS; NULL: plaintext */
	/* for the close line: the export served ("" if none), the requests
	 * taken, and why it closed (the first reason set wins; conn_why) */
	char export[NAMES_FULL_MAX + 1];
	uint64_t nreq;
	const char *why;
	/* for conn_server_clients (control threads): since and tls_on are
	 * set under srv->list_lock, like export; the byte counts are
	 * atomics (payload of READs and WRITEs taken) */
	uint64_t since; /* accepted, unix seconds */
	bool tls_on;    /* in transmission over TLS */
	_Atomic uint64_t bytes_read, bytes_written;
};

/* A listening socket (TCP ones too: their sock.path is empty, so closing
 * unlinks nothing). */
struct listener {
	ev_io w;
	struct sockets_unix sock;
};

struct conn_server {
	struct ev_loop *loop; /* loops[0]'s: listeners, timers, stopping */
	struct store *st;
	struct conn_loop loops[CONN_MAX_LOOPS];
	unsigned nloops;
	unsigned next_loop;     /* round robin among loops with the fewest connections */
	_Atomic int read_views; /* enum conn_read_views */
	ev_async poke;          /* a loop thread: the last connection went, or quiet */
	ev_timer grace;
	struct listener lst[CONN_MAX_LISTENERS];
	unsigned nlst;
	struct conn *conns; /* every loop's */
	/* conns membership, each loop's nconns, and each connection's
	 * export/tls_on, for the control threads' client list; a loop
	 * thread takes it only to change them */
	pthread_mutex_t list_lock;
	/* open connections, counting those accepted and queued for a loop
	 * thread; atomic: loop threads close theirs, conn_server_get_stats
	 * reads it on any thread */
	_Atomic unsigned nconns;
	/* Parking the loop threads: park asks, each sets its parked and
	 * counts itself in nparked, then waits on park_cv until park is
	 * false again (or quit).  Inboxes too. */
	pthread_mutex_t park_lock;
	pthread_cond_t park_cv;
	bool park, quit;
	bool held; /* parked from conn_server_attach until conn_server_resume */
	unsigned nparked;
	/* Written only on the server's thread with every loop thread parked
	 * (or none started), so a loop thread reads them without a lock. */
	bool stopping;
	struct conn_limits lim;
	struct tls_creds *tls_creds; /* NULL: TLS off */
	enum proto_tls tls_mode;
	_Atomic unsigned long refused;  /* connections closed at once: over max_conns */
	_Atomic unsigned long accepted; /* connections taken into service */
	/* handover (conn_server_pause): not accepting, connections pausing;
	 * the poke breaks the loop once every loop is quiet, pause_tmo if
	 * they are not within the time given */
	bool pausing;
	ev_timer pause_tmo;
};

/* ---- conn.c: one connection ---------------------------------------- */

/* Start serving fd (connected, non-blocking) on lp, counted in
 * srv->nconns already: greeting, handshake deadline.  0, or -ENOMEM (fd
 * closed; the caller uncounts it).  On lp's thread, or with it parked. */
int conn_new(struct conn_loop *lp, int fd);
/* Bring c's watchers and timers in line with its state; frees it when it
 * is dead and the store holds none of its requests. */
void conn_settle(struct conn *c);
/* The server is stopping: read no more, finish in-flight requests (a
 * connection still in the handshake is closed). */
void conn_stop(struct conn *c);
/* The grace period is over: close now. */
void conn_cut(struct conn *c);
/* A loop's ev_async: store threads finished requests. */
void conn_on_wake(struct ev_loop *loop, ev_async *w, int revents);
/* One connection fewer in srv->nconns (a closed one, or one that never
 * started); when stopping and that was the last, wake the server's loop
 * to end it.  Any loop's thread. */
void conn_server_uncount(struct conn_server *s);
/* Handover: stop taking requests (on) at the next request boundary, a
 * payload being received or discarded still coming in; or carry on (off),
 * parsing what was received meanwhile.  c may be freed on return. */
void conn_pause(struct conn *c, bool on);
/* Paused, with nothing in flight, nothing to send, no payload half read,
 * in a phase a handover carries (conn.h: struct conn_state). */
bool conn_quiet(const struct conn *c);
/* Take a quiet c out of service, its socket open in *fd and its state in
 * *out (out->buf malloc'd), and free it: 0.  A TLS connection is closed
 * instead (close_notify, FIN): -EPROTONOSUPPORT. */
int conn_detach(struct conn *c, struct conn_state *out, int *fd);
/* Serve fd again on lp from a handed-over state, paused (conn_pause off
 * starts it); counted in srv->nconns already, not as accepted.  0, or
 * -ESTALE/-EPROTO (the state does not fit: proto_restore) or -ENOMEM,
 * with fd closed (the caller uncounts it). */
int conn_restore(struct conn_loop *lp, int fd, const struct conn_state *st);

/* ---- conn_server.c ------------------------------------------------- */

/* proto's window on the store: open, close and list exports. */
extern const struct proto_ops conn_server_export_ops;

#endif
