/* handover.h — handing a running cowbd's sockets to a new cowbd process
 * (`cowctl upgrade`; docs/ARCHITECTURE.md, "Upgrades without downtime").
 *
 * The old process starts the new binary with one end of a unix
 * SOCK_SEQPACKET socket pair (--handover-fd N) and they talk in small
 * versioned messages, little-endian, one per packet:
 *
 *   new → old  OFFER   handover version, newest pool format it reads, pid
 *   old → new  START   version, counts, the server's counters
 *              LISTENER / CONTROL (+ one fd each)   listening sockets
 *              CONN (+ one fd) then DATA...          one connection each
 *              END
 *   new → old  READY (connections carried on, closed) | FAIL (why)
 *   old → new  COMMIT | ABORT
 *
 * Until COMMIT the new process reads and writes nothing on any socket, so
 * the old one can take everything back (roll back) when the new one fails
 * or dies.  Every field the new process receives is checked here (sizes,
 * strings, counts, one fd per packet that carries one) before conn.c
 * checks it against the store (proto_restore).
 *
 * Layer: the daemon's, beside main.c; knows conn.h's handoff, not its
 * structs.  No threads: every call blocks, each wait bounded by a
 * timeout.
 */
#ifndef COWBD_HANDOVER_H
#define COWBD_HANDOVER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "conn.h"
#include "sockets.h"

#define HANDOVER_VERSION 1u /* bump when a message or a field changes */

struct handover; /* the old side's view of one handover */

/* What the new process told about itself. */
struct handover_offer {
	uint32_t version;     /* HANDOVER_VERSION it speaks */
	uint32_t pool_format; /* newest pool format version it opens */
	pid_t pid;
	char cowbd[64]; /* its COWBD_VERSION */
};

/* Old side: start binary with argv (argv[0] is replaced by binary; any
 * --handover-fd is dropped, a new one added) and wait for its OFFER.
 * It is refused here, before anything stops, when it speaks another
 * handover version or cannot open a pool of format pool_format.  Returns
 * the handover, or NULL with one line in err (not found, not executable,
 * exited or killed before offering, refused) and the child reaped. */
struct handover *handover_spawn(const char *binary, char *const *argv, uint32_t pool_format,
                                char *err, size_t errlen);
const struct handover_offer *handover_offered(const struct handover *h);

/* The pool a handover is about: the new process must open the same file
 * or device (its configuration might name another). */
struct handover_pool {
	uint64_t dev, ino;
};

/* Old side: send the pool's identity, the listeners, the control socket
 * (ctl; fd -1: none) and the connections of ho, then wait for READY.  0 with *carried and *closed
 * as the new process counted them, or -errno with its FAIL reason (or what went wrong: it died,
 * timed out) in err. */
int handover_send(struct handover *h, const struct handover_pool *pool,
                  const struct conn_handoff *ho, const struct sockets_unix *ctl, unsigned *carried,
                  unsigned *closed, char *err, size_t errlen);

/* Old side, the end: COMMIT (the new process serves from now on; h is
 * freed, the child not waited for: it outlives us), or ABORT (the new
 * process lets go of everything and exits; waited for, killed after a
 * timeout, then h is freed).  NULL is a no-op for abort. */
void handover_commit(struct handover *h);
void handover_abort(struct handover *h);

/* New side: say who we are on fd (the --handover-fd).  0 or -errno. */
int handover_offer(int fd, uint32_t pool_format);

/* New side: receive everything up to END into ho and ctl (ctl->fd -1 when
 * none came).  0, or -errno with one line in err (the old process went
 * away: -EPIPE; a malformed message: -EPROTO); on failure every fd
 * received is closed and ho is empty. */
int handover_receive(int fd, struct handover_pool *pool, struct conn_handoff *ho,
                     struct sockets_unix *ctl, char *err, size_t errlen);

/* New side: READY, then wait for the verdict.  0: go on (COMMIT, or the
 * old process vanished: it cannot take the sockets back, so we serve);
 * -ECANCELED: ABORT (let go of everything, touch no socket). */
int handover_ready(int fd, unsigned carried, unsigned closed);

/* New side: FAIL with why (best effort). */
void handover_fail(int fd, const char *why);

/* A restart through the service manager's fd store (`systemctl restart`):
 * the same description written to file (a memfd), with the connections'
 * sockets referred to by index.  Save: *fds (malloc'd) gets ho's sockets
 * in index order, for the caller to store; 0 or -errno.  Load: fds[i] is
 * the socket stored for index i (-1: none came back); each one used is
 * taken (set to -1), the rest stay the caller's.  0, or -errno with one
 * line in err and ho empty. */
int handover_save(int file, const struct handover_pool *pool, const struct conn_handoff *ho,
                  int **fds, size_t *nfds);
int handover_load(int file, int *fds, size_t nfds, struct handover_pool *pool,
                  struct conn_handoff *ho, char *err, size_t errlen);

#endif
