/* conn.h — NBD listeners and client connections on libev loops.
 *
 * A conn_server owns the listening sockets and every client connection.
 * It runs on one event loop (the server's: the calls below are made on
 * its thread unless they say otherwise), which accepts and serves
 * connections, and may start loop threads (conn_server_set_loops), each
 * serving its share of the connections on a loop of its own.  The store's
 * completion callback only queues the finished request and wakes the
 * connection's loop (ev_async).  See the state machine at the top of
 * conn.c.
 */
#ifndef COWBD_CONN_H
#define COWBD_CONN_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "names.h"
#include "proto.h"
#include "sockets.h"

struct config;
struct ev_loop;
struct store;
struct conn_server;
struct tls_creds;

/* Per-connection defaults.  Above either, the server stops reading from
 * that socket until replies have gone out (backpressure), so a client that
 * pipelines requests and never reads replies holds bounded memory (the
 * request that crosses the line is still taken, so at most max_bytes plus
 * one 64 MiB payload, PROTO_MAX_PAYLOAD: under 128 MiB by default).  A
 * request is taken whenever less than max_bytes is held, so one of the
 * largest always fits, and a connection pipelines two 32 MiB requests or
 * one 64 MiB request at a time. */
#define CONN_MAX_REQS                  256u        /* requests accepted, reply not yet sent */
#define CONN_MAX_BYTES                 (64u << 20) /* payload bytes held in buffers */
#define CONN_DEFAULT_MAX_CONNS         1024u
#define CONN_DEFAULT_HANDSHAKE_TIMEOUT 30.0 /* seconds */
#define CONN_MAX_LOOPS                 64   /* the server's loop and its loop threads */

struct conn_limits {
	/* Open connections (counting ones still waiting for the store);
	 * a connection over it is accepted and closed at once. */
	unsigned max_conns;
	double handshake_timeout; /* seconds from accept to transmission; 0 = none */
	double idle_timeout;      /* seconds without traffic or requests; 0 = off */
	unsigned max_reqs;        /* per connection, see CONN_MAX_REQS */
	size_t max_bytes;         /* per connection, see CONN_MAX_BYTES */
};

/* New server for loop, serving exports of st, with the default limits.
 * Call on the loop's thread: it registers that thread with the store
 * (store_thread_register) since READs and BLOCK_STATUS are served there
 * when they need no disk wait.  NULL + errno on failure. */
struct conn_server *conn_server_new(struct ev_loop *loop, struct store *st);

/* Serve connections on n loops (1 .. CONN_MAX_LOOPS): the server's and
 * n - 1 loop threads, each registered with the store.  A new connection
 * goes to the loop serving the fewest; it stays there.  Once, before any
 * listener or connection.  0, or -EINVAL, or -ENOMEM / a pthread_create
 * error with the threads started so far kept (conn_server_loops says how
 * many loops there are). */
int conn_server_set_loops(struct conn_server *s, unsigned n);

/* Large READs (64 KiB..1 MiB) served on a loop: sent from a view of the
 * pool's mapping, copied into a buffer first, or (auto, the default)
 * whichever each loop measures cheaper (conn_int.h, struct conn_ways).
 * Any thread, any time: the next READ follows it. */
enum conn_read_views { CONN_READ_VIEWS_AUTO, CONN_READ_VIEWS_ON, CONN_READ_VIEWS_OFF };
void conn_server_set_read_views(struct conn_server *s, enum conn_read_views mode);
unsigned conn_server_loops(const struct conn_server *s);
/* Microseconds since the least recent running loop thread last ran its
 * timer (every CONN_LOOP_TICK: 0.25 s); 0 without loop threads.  Loop
 * threads the server parked (a handover's attach holds them until the
 * resume) are not counted.  Any thread: the watchdog's look at loops that
 * hang. */
uint64_t conn_server_loop_age_us(struct conn_server *s);

/* Replace the limits (NULL: defaults; a zero max_* field: its default).
 * Before the loop runs, or live on the loop's thread (SIGHUP): max_conns
 * counts from the next accept, the handshake timeout applies to
 * connections accepted from then on, max_reqs/max_bytes and a non-zero
 * idle timeout to every connection at its next check (turning the idle
 * timeout off stops the running idle timers). */
void conn_server_set_limits(struct conn_server *s, const struct conn_limits *l);

/* TLS for every connection accepted from now on: creds NULL = off
 * (NBD_OPT_STARTTLS → NBD_REP_ERR_POLICY); else STARTTLS is offered, and
 * with require every option before it gets NBD_REP_ERR_TLS_REQD.  creds
 * stays the caller's and must outlive the server. */
void conn_server_set_tls(struct conn_server *s, struct tls_creds *creds, bool require);

/* Per-export access rules (config.h) for exports opened or listed from now
 * on; NULL: none (every client may use every export).  A client the
 * rules refuse gets the answer of an unknown export at NBD_OPT_GO, INFO
 * and EXPORT_NAME, and NBD_OPT_LIST leaves the export out; connections
 * already in transmission are not touched.  rules stays the caller's; on
 * the loop's thread, so the caller may free the previous rules once this
 * returns. */
void conn_server_set_access(struct conn_server *s, const struct config *rules);

/* Bind and listen on "HOST:PORT" or "[IPV6]:PORT" (every address HOST
 * resolves to).  Returns 0 or -errno with a one-line reason in err
 * (EADDRINUSE reads "Address already in use").  Accepting starts when the
 * loop runs. */
int conn_server_listen_tcp(struct conn_server *s, const char *hostport, char *err, size_t errlen);

/* Same for a unix stream socket at path, under the stale-socket policy of
 * sockets.h: a stale socket file is replaced, a live one ("in use") or a
 * non-socket is refused; conn_server_free removes the file if it is still
 * the one created here. */
int conn_server_listen_unix(struct conn_server *s, const char *path, char *err, size_t errlen);

/* Accept on fd, a listening stream socket made by someone else (socket
 * activation: the service manager bound it), TCP or unix.  The server
 * owns fd from now on, whatever the result: it is made non-blocking and
 * close-on-exec, and closed at stop; a unix socket's file is never
 * removed (its maker owns it).  The caller has checked that fd is a
 * listening stream socket.  Returns 0, or -EMFILE (too many listeners) or
 * a fcntl() -errno with a one-line reason in err and fd closed. */
int conn_server_listen_fd(struct conn_server *s, int fd, char *err, size_t errlen);

/* Serve a connected stream socket fd (TCP or unix; blocking or not) as if
 * it had just been accepted: greeting, handshake, transmission, counted
 * against max_conns.  The server owns fd from now on, whatever the result:
 * 0, or -EMFILE (over max_conns), -ESHUTDOWN (stopping), -ENOMEM, a
 * fcntl() -errno, with fd closed.  On the loop's thread.  For sockets not
 * accepted here: socket activation, a handover, the fuzzer's socketpair. */
int conn_server_adopt(struct conn_server *s, int fd);

/* Begin a graceful stop: close the listeners, stop reading from every
 * client, drop connections still in the handshake, let requests already
 * accepted finish and their replies go out, then close each connection.
 * When the last one is gone, ev_break() the loop.  Clients that do not
 * read their replies are cut off after a grace period.  Idempotent. */
void conn_server_stop(struct conn_server *s);

/* Number of open connections (including ones waiting for the store). */
unsigned conn_server_count(const struct conn_server *s);

/* Connection counters for metrics.  Any thread (atomics, and the
 * connection list's lock for the per-loop counts). */
struct conn_server_stats {
	unsigned clients;       /* open now, as conn_server_count */
	unsigned long accepted; /* taken into service since start (accepted or adopted) */
	unsigned long refused;  /* closed at once: over --max-connections */
	unsigned loops;         /* event loops (conn_server_loops) */
	unsigned loop_clients[CONN_MAX_LOOPS]; /* connections each serves (started ones) */
};
void conn_server_get_stats(struct conn_server *s, struct conn_server_stats *out);

/* One open connection, as `cowctl clients` lists it. */
struct conn_client {
	char peer[64];    /* "ADDR:PORT", "[ADDR6]:PORT" or a unix socket's peer */
	char export[144]; /* the export served; "" before transmission */
	uint64_t since;   /* accepted, unix seconds */
	bool tls;         /* in transmission over TLS */
	uint64_t bytes_read, bytes_written; /* payload of READs / WRITEs taken */
	unsigned loop;                      /* serving it: 0 the server's, then its loop threads */
};
/* A malloc'd copy of the open connections (*n of them; the caller frees
 * it): 0 or -ENOMEM.  Any thread; holds the list's lock only to copy. */
int conn_server_clients(struct conn_server *s, struct conn_client **out, size_t *n);

/* ---- handover (docs/ARCHITECTURE.md, "Upgrades without downtime") ----
 * A connection in a phase that can be carried on (waiting for the client's
 * flags, between options, or in transmission between requests) is a
 * socket plus this description; a new cowbd process restores it. */
#define CONN_HANDOFF_BUF_MAX (256u << 10) /* received, not yet parsed: rbuf at most */
#define CONN_HANDOFF_LST     16           /* listeners: CONN_MAX_LISTENERS */

struct conn_state {
	struct proto_state proto;
	char export[NAMES_FULL_MAX + 1]; /* in transmission: the volume's name */
	uint64_t since, nreq, bytes_read, bytes_written;
	uint32_t nbuf; /* bytes received and not parsed yet ... */
	uint8_t *buf;  /* ... malloc'd (NULL when nbuf is 0) */
};

/* Everything one server hands to the next process. */
struct conn_handoff {
	struct sockets_unix lst[CONN_HANDOFF_LST]; /* listeners (path: a file to own) */
	unsigned nlst;
	int *fds; /* connections: fds[i] with conns[i] */
	struct conn_state *conns;
	size_t nconns;
	unsigned long accepted, refused; /* the server's counters */
	unsigned closed;                 /* connections not handed over (TLS) */
};

/* Stop accepting and stop every connection at its next request boundary;
 * once all are quiet (conn_quiet), or after timeout seconds, ev_break()
 * the loop.  On the loop thread; idempotent. */
void conn_server_pause(struct conn_server *s, double timeout);
/* Has the pause reached quiet? */
bool conn_server_quiet(struct conn_server *s);
/* Accept and serve again: after a pause that is given up, and on the new
 * side after conn_server_attach.  On the loop thread. */
void conn_server_resume(struct conn_server *s);
/* After a quiet pause, take every listener and connection out of s into
 * h (sockets open, none closed; TLS connections closed and counted in
 * h->closed): s serves nothing afterwards and is freed as usual.  0, or
 * -ENOMEM with s as it was. */
int conn_server_detach(struct conn_server *s, struct conn_handoff *h);
/* Serve what h holds: listeners (and their files, to remove at the end)
 * and connections, paused until conn_server_resume.  The fds become the
 * server's; a connection whose state does not fit the store any more is
 * closed and counted in *closed.  h's counters continue.  Before the loop
 * runs.  0, or -EMFILE (too many listeners, their fds closed). */
int conn_server_attach(struct conn_server *s, const struct conn_handoff *h, unsigned *closed);
/* Free what h holds; close_fds: close its sockets too (never unlinking a
 * file: the other process has them). */
void conn_handoff_free(struct conn_handoff *h, bool close_fds);

/* Free the server (on the loop's thread) once its loop has returned after conn_server_stop()
 * (no connection left) and the store has been closed: a store thread may
 * still be inside ev_async_send() on the server's watcher until
 * store_close() has joined it.  NULL is a no-op. */
void conn_server_free(struct conn_server *s);

#endif
