/* sockets.h — listening sockets: TCP "HOST:PORT" listeners and unix
 * stream sockets with one stale-socket policy, shared by the NBD listeners
 * (conn) and the control socket (control).
 *
 * The unix-socket policy, in full:
 *   - a path that exists and is not a socket is never touched (refused);
 *   - a socket someone still answers on is never replaced ("in use");
 *   - a socket nobody answers on (stale, left by a dead process) is
 *     replaced atomically: the new socket is bound under a temporary name,
 *     given its mode, listening, then renamed over the path, so there is
 *     no moment when a client finds no socket or one with a wider mode;
 *   - on close the path is unlinked only if it is still the socket file
 *     we created (same device and inode), never a successor's.
 *
 * Layer: a transport helper below conn and control; knows nothing of NBD
 * or JSON.  No threads, no locks, no global state; every call may block
 * briefly (mkdir, bind, a connect to probe a local socket, getaddrinfo).
 */
#ifndef COWBD_SOCKETS_H
#define COWBD_SOCKETS_H
#include <stddef.h>
#include <sys/types.h>
#include <sys/un.h>

#define SOCKETS_MKDIR    (1u << 0) /* create missing parent directories (mode 0750) */
#define SOCKETS_NONBLOCK (1u << 1) /* the listening socket is non-blocking */

/* A listening unix socket and the identity of the file it created. */
struct sockets_unix {
	int fd; /* -1 once closed */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t dev;
	ino_t ino;
};

/* Longest path sockets_listen_unix() accepts (room is kept for the
 * temporary name it binds first). */
#define SOCKETS_UNIX_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 17)

/* Is anyone answering on the unix socket at path?  1 yes (including a
 * full backlog), 0 no (nothing there, or a stale socket), -errno when it
 * cannot tell.  Connects and closes at once: the peer sees an empty
 * connection. */
int sockets_probe_unix(const char *path);

/* Listen on a unix stream socket at path, with the policy above.  mode:
 * the socket file's permissions, set before anyone can connect (0: leave
 * what the umask gives).  flags: SOCKETS_MKDIR, SOCKETS_NONBLOCK.  The
 * socket is close-on-exec.  Returns 0 with *u filled, or -errno with a
 * one-line reason naming path in err: -ENAMETOOLONG, -EEXIST ("exists and
 * is not a socket"), -EADDRINUSE ("is in use by a running daemon"), or
 * the error of mkdir/socket/bind/listen/rename. */
int sockets_listen_unix(struct sockets_unix *u, const char *path, mode_t mode, unsigned flags,
                        char *err, size_t errlen);

/* Close u->fd if still open (sets it to -1) and unlink u->path if it is
 * still the socket file sockets_listen_unix() created.  Idempotent. */
void sockets_close_unix(struct sockets_unix *u);

/* Bind and listen on "HOST:PORT" or "[IPV6]:PORT" ("" or ":PORT": every
 * local address): one non-blocking, close-on-exec socket per address HOST
 * resolves to (IPv6 ones V6ONLY, all SO_REUSEADDR), at most max of them,
 * stored in fds[0..*n).  Returns 0, or -errno with a one-line reason in
 * err ("listen HOST:PORT: Address already in use"; -EMFILE when HOST
 * resolves to more than max addresses) and nothing left open. */
int sockets_listen_tcp(const char *hostport, int *fds, unsigned max, unsigned *n, char *err,
                       size_t errlen);

/* Is hostport well formed for sockets_listen_tcp ("HOST:PORT" or
 * "[IPV6]:PORT", port 0-65535)?  0, or -EINVAL with the reason in err.
 * Resolves nothing. */
int sockets_check_hostport(const char *hostport, char *err, size_t errlen);

/* "ADDR:PORT" of a TCP peer, "unix:FD" for a unix one, "?:0" when
 * getpeername fails. */
void sockets_peer_name(int fd, char *out, size_t n);

/* The address a socket is bound to, for a log line: "ADDR:PORT",
 * "[IPV6]:PORT", "unix:PATH", "unix:(unnamed)", or "?" when getsockname
 * fails. */
void sockets_local_name(int fd, char *out, size_t n);

#endif
