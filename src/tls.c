/* tls.c — TLS sessions for NBD connections, on GnuTLS (layer: a transport
 * helper under conn, beside proto; knows nothing of NBD).
 *
 * Credentials are loaded once, at startup, and never change: an X.509
 * certificate credential (server certificate and key, plus ca-cert.pem as
 * the trust list for client certificates, which are required and verified
 * during the handshake), and/or a PSK table parsed from a psktool file and
 * served from memory by a lookup callback (GnuTLS's own file helper would
 * re-read the file at every handshake).  One priority cache is shared by
 * every session: TLS 1.2 and 1.3 only (the NBD spec's SHOULD), with the PSK
 * key exchanges added when PSK is configured.
 *
 * A session wraps a non-blocking socket it does not own.  GnuTLS reads and
 * writes it itself (NO_SIGNAL: never SIGPIPE); GNUTLS_E_AGAIN becomes
 * EAGAIN, and the direction it waited in is what tls_want_write() reports.
 * Sending keeps GnuTLS's rule that a record interrupted by EAGAIN must be
 * finished before anything else goes out: the record's size is remembered
 * and the next tls_sendmsg() first completes it (gnutls_record_send with no
 * data), then reports those bytes as taken.
 *
 * No locks: credentials are read-only after load; a session belongs to one
 * connection on one thread.
 */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tls.h"

#define TLS_RECORD   16384u       /* largest plaintext per TLS record */
#define TLS_SEND_MAX (512u << 10) /* plaintext encrypted per tls_sendmsg call */
#define TLS_PSK_LINE 4096         /* longest line accepted in a PSK file */
#define TLS_PSK_KEY  512u         /* longest key in bytes */
#define TLS_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define TLS_PRIO_PSK ":+ECDHE-PSK:+DHE-PSK:+PSK"

struct tls_psk_user {
	char *name;
	uint8_t *key;
	size_t keylen;
};

struct tls_creds {
	gnutls_certificate_credentials_t x509; /* NULL: no X.509 */
	gnutls_psk_server_credentials_t psk;   /* NULL: no PSK */
	struct tls_psk_user *users;
	size_t nusers;
	gnutls_priority_t prio;
	char desc[64];
};

struct tls_session {
	gnutls_session_t gs;
	struct tls_creds *cr;
	size_t send_pending; /* plaintext size of a record cut short by EAGAIN */
	int err;             /* last GnuTLS error, for tls_strerror */
	int dead;            /* errno of a fatal record error (sticky), or 0 */
	bool eof;
	bool bye_sent;
	uint8_t stage[TLS_RECORD]; /* gathers small iovecs into one record */
};

/* ---- credentials ---------------------------------------------------- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void psk_users_free(struct tls_creds *cr)
{
	for (size_t i = 0; i < cr->nusers; i++) {
		explicit_bzero(cr->users[i].key, cr->users[i].keylen);
		free(cr->users[i].key);
		free(cr->users[i].name);
	}
	free(cr->users);
	cr->users = NULL;
	cr->nusers = 0;
}

/* Parse one "username:hexkey" line (no newline) into cr->users.  Returns 0,
 * or -EINVAL with the reason in why, or -ENOMEM. */
static int psk_parse_line(struct tls_creds *cr, char *line, const char **why)
{
	char *colon = strchr(line, ':');
	const char *hex;
	size_t hexlen, namelen;
	struct tls_psk_user u, *nu;

	if (!colon) {
		*why = "expected username:hexkey";
		return -EINVAL;
	}
	namelen = (size_t)(colon - line);
	hex = colon + 1;
	hexlen = strlen(hex);
	if (namelen == 0) {
		*why = "empty username";
		return -EINVAL;
	}
	if (hexlen == 0 || hexlen % 2 || hexlen / 2 > TLS_PSK_KEY) {
		*why = "key must be 1-512 bytes written as an even number of hex digits";
		return -EINVAL;
	}
	*colon = '\0';
	for (size_t i = 0; i < cr->nusers; i++)
		if (strcmp(cr->users[i].name, line) == 0) {
			*why = "username listed twice";
			return -EINVAL;
		}
	u.keylen = hexlen / 2;
	u.key = malloc(u.keylen);
	u.name = strdup(line);
	if (!u.key || !u.name) {
		free(u.key);
		free(u.name);
		return -ENOMEM;
	}
	for (size_t i = 0; i < u.keylen; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			explicit_bzero(u.key, u.keylen);
			free(u.key);
			free(u.name);
			*why = "key is not hex";
			return -EINVAL;
		}
		u.key[i] = (uint8_t)(hi << 4 | lo);
	}
	nu = realloc(cr->users, (cr->nusers + 1) * sizeof(*nu));
	if (!nu) {
		explicit_bzero(u.key, u.keylen);
		free(u.key);
		free(u.name);
		return -ENOMEM;
	}
	cr->users = nu;
	cr->users[cr->nusers++] = u;
	return 0;
}

static int psk_load(struct tls_creds *cr, const char *path, char *err, size_t errlen)
{
	char line[TLS_PSK_LINE + 2];
	unsigned lineno = 0;
	FILE *f = fopen(path, "re");
	int rc = 0;

	if (!f) {
		snprintf(err, errlen, "TLS PSK file %s: %s", path, strerror(errno));
		return -errno;
	}
	while (fgets(line, sizeof(line), f)) {
		size_t n = strlen(line);
		const char *why = NULL;

		lineno++;
		if (n > TLS_PSK_LINE) {
			snprintf(err, errlen, "TLS PSK file %s line %u: line too long", path,
			         lineno);
			rc = -EINVAL;
			break;
		}
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0 || line[0] == '#')
			continue;
		rc = psk_parse_line(cr, line, &why);
		if (rc) {
			snprintf(err, errlen, "TLS PSK file %s line %u: %s", path, lineno,
			         why ? why : strerror(-rc));
			break;
		}
	}
	if (!rc && ferror(f)) {
		rc = -EIO;
		snprintf(err, errlen, "TLS PSK file %s: read error", path);
	}
	explicit_bzero(line, sizeof(line));
	fclose(f);
	if (!rc && cr->nusers == 0) {
		snprintf(err, errlen, "TLS PSK file %s: no username:hexkey line", path);
		rc = -EINVAL;
	}
	return rc;
}

/* GnuTLS asks for the key of the username the client sent. */
static int psk_lookup(gnutls_session_t gs, const char *username, gnutls_datum_t *key)
{
	struct tls_session *s = gnutls_session_get_ptr(gs);
	const struct tls_creds *cr = s->cr;

	for (size_t i = 0; i < cr->nusers; i++) {
		if (strcmp(cr->users[i].name, username) != 0)
			continue;
		key->data = gnutls_malloc(cr->users[i].keylen);
		if (!key->data)
			return -1;
		memcpy(key->data, cr->users[i].key, cr->users[i].keylen);
		key->size = (unsigned)cr->users[i].keylen;
		return 0;
	}
	return -1; /* unknown user: the handshake fails */
}

/* Check that path can be opened, for an error message that names it. */
static int file_ok(const char *path, char *err, size_t errlen)
{
	struct stat sb;

	if (stat(path, &sb) < 0 || access(path, R_OK) < 0) {
		snprintf(err, errlen, "TLS certificates: %s: %s", path, strerror(errno));
		return -errno;
	}
	if (!S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "TLS certificates: %s: not a regular file", path);
		return -EINVAL;
	}
	return 0;
}

static int x509_load(struct tls_creds *cr, const char *dir, char *err, size_t errlen)
{
	char ca[4096], cert[4096], key[4096];
	int r;

	if ((size_t)snprintf(ca, sizeof(ca), "%s/%s", dir, TLS_CA_FILE) >= sizeof(ca) ||
	    (size_t)snprintf(cert, sizeof(cert), "%s/%s", dir, TLS_CERT_FILE) >= sizeof(cert) ||
	    (size_t)snprintf(key, sizeof(key), "%s/%s", dir, TLS_KEY_FILE) >= sizeof(key)) {
		snprintf(err, errlen, "TLS certificates: directory name too long");
		return -ENAMETOOLONG;
	}
	if ((r = file_ok(ca, err, errlen)) || (r = file_ok(cert, err, errlen)) ||
	    (r = file_ok(key, err, errlen)))
		return r;
	r = gnutls_certificate_allocate_credentials(&cr->x509);
	if (r < 0) {
		cr->x509 = NULL;
		snprintf(err, errlen, "TLS certificates: %s", gnutls_strerror(r));
		return -ENOMEM;
	}
	r = gnutls_certificate_set_x509_trust_file(cr->x509, ca, GNUTLS_X509_FMT_PEM);
	if (r <= 0) {
		snprintf(err, errlen, "TLS certificates: %s: %s", ca,
		         r == 0 ? "no certificate in it" : gnutls_strerror(r));
		return -EINVAL;
	}
	r = gnutls_certificate_set_x509_key_file(cr->x509, cert, key, GNUTLS_X509_FMT_PEM);
	if (r < 0) {
		snprintf(err, errlen, "TLS certificates: %s with %s: %s", cert, key,
		         gnutls_strerror(r));
		return -EINVAL;
	}
	gnutls_certificate_set_known_dh_params(cr->x509, GNUTLS_SEC_PARAM_MEDIUM);
	return 0;
}

struct tls_creds *tls_creds_load(const char *certs_dir, const char *psk_file, char *err,
                                 size_t errlen)
{
	struct tls_creds *cr;
	const char *errpos = NULL;
	int r;

	if (!certs_dir && !psk_file) {
		snprintf(err, errlen, "TLS needs --tls-certs DIR or --tls-psk FILE");
		errno = EINVAL;
		return NULL;
	}
	cr = calloc(1, sizeof(*cr));
	if (!cr) {
		snprintf(err, errlen, "TLS: out of memory");
		return NULL;
	}
	if (certs_dir && x509_load(cr, certs_dir, err, errlen))
		goto fail_creds;
	if (psk_file) {
		if (psk_load(cr, psk_file, err, errlen))
			goto fail_creds;
		r = gnutls_psk_allocate_server_credentials(&cr->psk);
		if (r < 0) {
			cr->psk = NULL;
			snprintf(err, errlen, "TLS PSK: %s", gnutls_strerror(r));
			goto fail_creds;
		}
		gnutls_psk_set_server_credentials_function(cr->psk, psk_lookup);
		gnutls_psk_set_server_known_dh_params(cr->psk, GNUTLS_SEC_PARAM_MEDIUM);
	}
	r = gnutls_priority_init(&cr->prio, psk_file ? TLS_PRIORITY TLS_PRIO_PSK : TLS_PRIORITY,
	                         &errpos);
	if (r < 0) {
		cr->prio = NULL;
		snprintf(err, errlen, "TLS priority string: %s at \"%s\"", gnutls_strerror(r),
		         errpos ? errpos : "?");
		goto fail_creds;
	}
	if (certs_dir && psk_file)
		snprintf(cr->desc, sizeof(cr->desc), "X.509 + PSK (%zu user%s)", cr->nusers,
		         cr->nusers == 1 ? "" : "s");
	else if (certs_dir)
		snprintf(cr->desc, sizeof(cr->desc), "X.509");
	else
		snprintf(cr->desc, sizeof(cr->desc), "PSK (%zu user%s)", cr->nusers,
		         cr->nusers == 1 ? "" : "s");
	return cr;

fail_creds:
	tls_creds_free(cr);
	errno = EINVAL;
	return NULL;
}

const char *tls_creds_describe(const struct tls_creds *cr)
{
	return cr->desc;
}

void tls_creds_free(struct tls_creds *cr)
{
	if (!cr)
		return;
	if (cr->prio)
		gnutls_priority_deinit(cr->prio);
	if (cr->psk)
		gnutls_psk_free_server_credentials(cr->psk);
	if (cr->x509)
		gnutls_certificate_free_credentials(cr->x509);
	psk_users_free(cr);
	free(cr);
}

/* ---- sessions ------------------------------------------------------- */

struct tls_session *tls_session_new(struct tls_creds *cr, int fd)
{
	struct tls_session *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return NULL;
	s->cr = cr;
	r = gnutls_init(&s->gs, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
	if (r < 0) {
		free(s);
		errno = ENOMEM;
		return NULL;
	}
	r = gnutls_priority_set(s->gs, cr->prio);
	if (r >= 0 && cr->x509) {
		r = gnutls_credentials_set(s->gs, GNUTLS_CRD_CERTIFICATE, cr->x509);
		/* Clients must prove who they are, with a certificate our CA
		 * signed; verified during the handshake (no host name: the
		 * client's certificate names a client, not this server). */
		gnutls_certificate_server_set_request(s->gs, GNUTLS_CERT_REQUIRE);
		gnutls_session_set_verify_cert(s->gs, NULL, 0);
	}
	if (r >= 0 && cr->psk)
		r = gnutls_credentials_set(s->gs, GNUTLS_CRD_PSK, cr->psk);
	if (r < 0) {
		gnutls_deinit(s->gs);
		free(s);
		errno = EIO;
		return NULL;
	}
	gnutls_session_set_ptr(s->gs, s);
	gnutls_transport_set_int(s->gs, fd);
	return s;
}

void tls_session_free(struct tls_session *s)
{
	if (!s)
		return;
	gnutls_deinit(s->gs);
	explicit_bzero(s->stage, sizeof(s->stage));
	free(s);
}

/* Errors that mean the peer (or the network) went away rather than that
 * it spoke bad TLS. */
static int fatal_errno(int r)
{
	switch (r) {
	case GNUTLS_E_PUSH_ERROR:
		return EPIPE;
	case GNUTLS_E_PULL_ERROR:
	case GNUTLS_E_PREMATURE_TERMINATION:
		return ECONNRESET;
	default:
		return EPROTO;
	}
}

int tls_handshake(struct tls_session *s)
{
	/* Non-fatal results (warning alerts) just mean "call again"; bound
	 * them so a peer cannot keep us here. */
	for (int i = 0; i < 64; i++) {
		int r = gnutls_handshake(s->gs);

		if (r == GNUTLS_E_SUCCESS)
			return 0;
		if (r == GNUTLS_E_AGAIN)
			return -EAGAIN;
		s->err = r;
		if (r == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal(r))
			continue;
		return -fatal_errno(r);
	}
	return -EPROTO;
}

bool tls_want_write(const struct tls_session *s)
{
	return gnutls_record_get_direction(s->gs) == 1;
}

ssize_t tls_recv(struct tls_session *s, void *buf, size_t len)
{
	size_t got = 0;

	if (s->dead) {
		errno = s->dead;
		return -1;
	}
	while (got < len && !s->eof) {
		ssize_t r = gnutls_record_recv(s->gs, (uint8_t *)buf + got, len - got);

		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (r == 0) { /* close_notify */
			s->eof = true;
			break;
		}
		if (r == GNUTLS_E_AGAIN) {
			if (got)
				break;
			errno = EAGAIN;
			return -1;
		}
		s->err = (int)r;
		if (r == GNUTLS_E_INTERRUPTED)
			continue;
		if (r == GNUTLS_E_PREMATURE_TERMINATION) {
			/* The peer closed the socket without close_notify: an
			 * end of stream (NBD messages carry their own framing,
			 * so a truncation shows as a partial message). */
			s->eof = true;
			break;
		}
		/* Renegotiation is refused; warning alerts are skipped. */
		if (r != GNUTLS_E_REHANDSHAKE && !gnutls_error_is_fatal((int)r))
			continue;
		s->dead = fatal_errno((int)r);
		if (got)
			break; /* hand out what came before; fail next time */
		errno = s->dead;
		return -1;
	}
	return (ssize_t)got;
}

/* Move the cursor (idx, off) n bytes further through m's iovecs, past
 * any empty ones. */
static void iov_advance(const struct msghdr *m, size_t *idx, size_t *off, size_t n)
{
	while (*idx < m->msg_iovlen) {
		size_t k = m->msg_iov[*idx].iov_len - *off;

		if (n < k) {
			*off += n;
			return;
		}
		n -= k;
		(*idx)++;
		*off = 0;
	}
}

ssize_t tls_sendmsg(struct tls_session *s, const struct msghdr *m)
{
	size_t done = 0, idx = 0, off = 0;
	ssize_t r;

	if (s->dead) {
		errno = s->dead;
		return -1;
	}
	if (s->send_pending) {
		/* Finish the record EAGAIN interrupted: by contract its bytes
		 * are the first send_pending bytes of m. */
		do
			r = gnutls_record_send(s->gs, NULL, 0);
		while (r == GNUTLS_E_INTERRUPTED);
		if (r == GNUTLS_E_AGAIN) {
			errno = EAGAIN;
			return -1;
		}
		if (r < 0) {
			s->err = (int)r;
			goto fatal;
		}
		done = s->send_pending;
		s->send_pending = 0;
	}
	iov_advance(m, &idx, &off, done);
	while (idx < m->msg_iovlen && done < TLS_SEND_MAX) {
		const uint8_t *p;
		size_t n;

		if (m->msg_iov[idx].iov_len - off >= TLS_RECORD) {
			/* A full record straight from the caller's buffer. */
			p = (const uint8_t *)m->msg_iov[idx].iov_base + off;
			n = TLS_RECORD;
		} else {
			/* Gather small pieces (reply headers, short reads) into
			 * one record: one record and one send(2) for many. */
			size_t i = idx, o = off;

			for (n = 0; i < m->msg_iovlen && n < TLS_RECORD; i++, o = 0) {
				size_t k = m->msg_iov[i].iov_len - o;

				if (k > TLS_RECORD - n)
					k = TLS_RECORD - n;
				memcpy(s->stage + n, (const uint8_t *)m->msg_iov[i].iov_base + o,
				       k);
				n += k;
			}
			p = s->stage;
		}
		r = gnutls_record_send(s->gs, p, n);
		while (r == GNUTLS_E_INTERRUPTED)
			r = gnutls_record_send(s->gs, NULL, 0);
		if (r == GNUTLS_E_AGAIN) {
			/* Encrypted and queued inside GnuTLS but not all on the
			 * wire: reported as taken once it has gone. */
			s->send_pending = n;
			break;
		}
		if (r < 0) {
			s->err = (int)r;
			goto fatal;
		}
		done += (size_t)r;
		iov_advance(m, &idx, &off, (size_t)r);
	}
	if (done == 0 && idx < m->msg_iovlen) {
		errno = EAGAIN;
		return -1;
	}
	return (ssize_t)done;

fatal:
	s->dead = fatal_errno(s->err);
	if (done)
		return (ssize_t)done; /* the error shows on the next call */
	errno = s->dead;
	return -1;
}

size_t tls_pending(const struct tls_session *s)
{
	return gnutls_record_check_pending(s->gs);
}

void tls_bye(struct tls_session *s)
{
	if (s->bye_sent || s->dead)
		return;
	s->bye_sent = true;
	gnutls_bye(s->gs, GNUTLS_SHUT_WR); /* non-blocking: EAGAIN just drops it */
}

const char *tls_strerror(const struct tls_session *s)
{
	return s->err ? gnutls_strerror(s->err) : "no error";
}

/* The peer certificate's subject: its DN (RFC 4514: "CN=client,O=Example")
 * or, with cn_only, its common name, into buf.  false when there is none
 * or it cannot be read. */
static bool peer_subject(const struct tls_session *s, bool cn_only, char *buf, size_t len)
{
	unsigned n = 0;
	const gnutls_datum_t *certs = gnutls_certificate_get_peers(s->gs, &n);
	gnutls_x509_crt_t crt;
	gnutls_datum_t dn = {NULL, 0};
	size_t cnlen = len;
	bool ok = false;

	if (!certs || !n || gnutls_x509_crt_init(&crt) < 0)
		return false;
	if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) < 0)
		goto out;
	if (cn_only) {
		ok = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf,
		                                   &cnlen) >= 0;
	} else if (gnutls_x509_crt_get_dn3(crt, &dn, 0) >= 0) {
		ok = dn.size < len;
		if (ok)
			snprintf(buf, len, "%.*s", (int)dn.size, (const char *)dn.data);
		gnutls_free(dn.data);
	}
out:
	gnutls_x509_crt_deinit(crt);
	return ok;
}

const char *tls_peer_identity(const struct tls_session *s, char *buf, size_t len)
{
	const char *u;

	switch (gnutls_auth_get_type(s->gs)) {
	case GNUTLS_CRD_PSK:
		u = gnutls_psk_server_get_username(s->gs);
		if (!u || strlen(u) >= len)
			return NULL;
		return strcpy(buf, u);
	case GNUTLS_CRD_CERTIFICATE:
		return peer_subject(s, false, buf, len) ? buf : NULL;
	default:
		return NULL;
	}
}

const char *tls_describe(const struct tls_session *s, char *buf, size_t len)
{
	const char *ver = gnutls_protocol_get_name(gnutls_protocol_get_version(s->gs));

	if (!ver)
		ver = "TLS";
	if (gnutls_auth_get_type(s->gs) == GNUTLS_CRD_PSK) {
		const char *u = gnutls_psk_server_get_username(s->gs);

		snprintf(buf, len, "%s PSK user %s", ver, u ? u : "?");
		return buf;
	}
	if (gnutls_auth_get_type(s->gs) == GNUTLS_CRD_CERTIFICATE) {
		char cn[256];

		if (!peer_subject(s, true, cn, sizeof(cn)))
			snprintf(cn, sizeof(cn), "?");
		snprintf(buf, len, "%s X.509 client CN=%s", ver, cn);
		return buf;
	}
	snprintf(buf, len, "%s", ver);
	return buf;
}
