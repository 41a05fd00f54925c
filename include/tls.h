/* tls.h — TLS for NBD connections (NBD_OPT_STARTTLS), on GnuTLS.
 *
 * Two objects.  A struct tls_creds holds the server's credentials, loaded
 * once at startup: X.509 (a directory with ca-cert.pem, server-cert.pem,
 * server-key.pem, the names nbdkit and qemu use) and/or PSK (a psktool
 * file of "username:hexkey" lines).  A struct tls_session is one
 * connection's TLS state over a non-blocking socket it does not own.
 *
 * Everything is non-blocking: tls_handshake() and the record calls return
 * -EAGAIN (or -1 with errno EAGAIN, like recv/sendmsg) and the caller waits
 * for the direction tls_want_write() names.  Decrypted bytes GnuTLS has
 * buffered but not yet handed out are invisible to poll/epoll: after a
 * read, the caller must look at tls_pending() before waiting for the
 * socket again.
 *
 * Layer: a transport helper for conn (below it, beside proto); knows
 * nothing of NBD.  Credentials are read-only after load and may be shared
 * by every session of every thread; a session is used by one thread.
 */
#ifndef COWBD_TLS_H
#define COWBD_TLS_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

struct tls_creds;
struct tls_session;

/* File names inside the --tls-certs directory. */
#define TLS_CA_FILE   "ca-cert.pem"
#define TLS_CERT_FILE "server-cert.pem"
#define TLS_KEY_FILE  "server-key.pem"

/* Load credentials: X.509 from certs_dir (NULL: none), PSK from psk_file
 * (NULL: none); at least one must be given.  With X.509, every client must
 * present a certificate signed by ca-cert.pem (as qemu-nbd's default
 * verify-peer=on); with PSK, the client's username must be in the file and
 * its key must match.  Returns the credentials, or NULL with a one-line
 * reason in err naming the file ("…/server-key.pem: No such file or
 * directory", "psk.keys line 3: key is not hex").  Reads files; call at
 * startup only. */
struct tls_creds *tls_creds_load(const char *certs_dir, const char *psk_file, char *err,
                                 size_t errlen);

/* Human-readable summary for the startup log ("X.509 + PSK (2 users)"). */
const char *tls_creds_describe(const struct tls_creds *cr);

/* Free credentials once no session uses them.  NULL is a no-op. */
void tls_creds_free(struct tls_creds *cr);

/* A server-side session over fd (non-blocking, stays the caller's to
 * close).  NULL + errno (ENOMEM, EIO) on failure.  Cheap: no I/O. */
struct tls_session *tls_session_new(struct tls_creds *cr, int fd);

/* Free the session; does not send anything and does not close fd.  NULL
 * is a no-op. */
void tls_session_free(struct tls_session *s);

/* Advance the handshake.  0: done, records may flow; -EAGAIN: call again
 * once the socket is ready in the direction tls_want_write() says; any
 * other -errno: the handshake failed (bad certificate, unknown PSK user,
 * peer hung up, …) and the connection must be dropped; tls_strerror()
 * says why.  Never blocks. */
int tls_handshake(struct tls_session *s);

/* After -EAGAIN (or EAGAIN from a record call): true if GnuTLS is waiting
 * to write, false if to read. */
bool tls_want_write(const struct tls_session *s);

/* Like recv(2) on the decrypted stream: > 0 bytes read (as many as are
 * available without blocking, up to len), 0 at the end of the stream
 * (close_notify, or the peer closed the socket), -1 with errno EAGAIN
 * (nothing available now), EINTR never, ECONNRESET/EPROTO (fatal: the
 * session is unusable, later calls fail the same way). */
ssize_t tls_recv(struct tls_session *s, void *buf, size_t len);

/* Like sendmsg(2) on the plaintext stream: returns the bytes of m's iovecs
 * taken (from the start, possibly fewer than all), or -1 with errno
 * EAGAIN or a fatal error (EPIPE, EPROTO).  Contract: after EAGAIN, or
 * after a short return, the next call must pass the same bytes not yet
 * taken at the start of m (it may add more after them); GnuTLS may hold
 * an encrypted record of those bytes that has only partly reached the
 * socket.  Cost: one record (≤ 16 KiB) per send(2). */
ssize_t tls_sendmsg(struct tls_session *s, const struct msghdr *m);

/* Decrypted bytes buffered inside GnuTLS, ready for tls_recv() without
 * the socket becoming readable. */
size_t tls_pending(const struct tls_session *s);

/* Best effort, non-blocking: send close_notify.  Call before shutdown(). */
void tls_bye(struct tls_session *s);

/* Reason for the last failure of this session (static string). */
const char *tls_strerror(const struct tls_session *s);

/* One-line description of an established session for debug logs
 * ("TLS1.3 X.509 CN=client" / "TLS1.3 PSK alice"), into buf. */
const char *tls_describe(const struct tls_session *s, char *buf, size_t len);

/* The identity an established session proved, for access rules: the PSK
 * username, or the client certificate's subject DN in RFC 4514 form
 * ("CN=client,O=Example": most specific first, as `certtool -i` prints
 * it), into buf.  NULL when there is none (an anonymous session) or it
 * does not fit in len. */
const char *tls_peer_identity(const struct tls_session *s, char *buf, size_t len);

#endif
