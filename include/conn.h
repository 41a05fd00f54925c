/* conn.h — NBD listeners and client connections on a libev loop.
 *
 * A conn_server owns the listening sockets and every client connection of
 * one event loop.  Everything here runs on that loop's thread, except the
 * store's completion callback, which only queues the finished request and
 * wakes the loop (ev_async).  See the state machine at the top of conn.c.
 */
#ifndef COWBD_CONN_H
#define COWBD_CONN_H
#include <stddef.h>

struct ev_loop;
struct store;
struct conn_server;

/* Per-connection limits.  Above either, the server stops reading from that
 * socket until replies have gone out (backpressure), so a client that
 * pipelines requests and never reads replies holds bounded memory. */
#define CONN_MAX_REQS  256u        /* requests accepted, reply not yet sent */
#define CONN_MAX_BYTES (64u << 20) /* payload bytes held in buffers */

/* New server for loop, serving exports of st.  NULL + errno on failure. */
struct conn_server *conn_server_new(struct ev_loop *loop, struct store *st);

/* Bind and listen on "HOST:PORT" or "[IPV6]:PORT" (every address HOST
 * resolves to).  Returns 0 or -errno with a one-line reason in err
 * (EADDRINUSE reads "Address already in use").  Accepting starts when the
 * loop runs. */
int conn_listen_tcp(struct conn_server *s, const char *hostport, char *err, size_t errlen);

/* Same for a unix stream socket at path (a stale socket file is replaced;
 * the file is removed again by conn_server_free). */
int conn_listen_unix(struct conn_server *s, const char *path, char *err, size_t errlen);

/* Begin a graceful stop: close the listeners, stop reading from every
 * client, drop connections still in the handshake, let requests already
 * accepted finish and their replies go out, then close each connection.
 * When the last one is gone, ev_break() the loop.  Clients that do not
 * read their replies are cut off after a grace period.  Idempotent. */
void conn_server_stop(struct conn_server *s);

/* Number of open connections (including ones waiting for the store). */
unsigned conn_server_count(const struct conn_server *s);

/* Free the server once its loop has returned after conn_server_stop()
 * (no connection left) and the store has been closed: a store thread may
 * still be inside ev_async_send() on the server's watcher until
 * store_close() has joined it.  NULL is a no-op. */
void conn_server_free(struct conn_server *s);

#endif
