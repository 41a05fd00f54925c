/* test_tls.c — cmocka tests for tls.c: PSK file parsing and the one-line
 * errors for bad credential files, then real sessions over a socketpair
 * against an in-process GnuTLS PSK client, driven non-blocking from one
 * thread: the handshake, a wrong key, bytes through tls_recv and
 * tls_sendmsg, the "same bytes again after EAGAIN" sending contract with
 * a socket that fills up, and tls_pending() for plaintext GnuTLS holds.
 * (X.509 sessions need certtool-made certificates: tests/integration.)
 */
#undef NDEBUG
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tls.h"

static const char KEY_HEX[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

static char tmpdir[64];

static char *write_file(const char *name, const char *text)
{
	static char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static int setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_tls.XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* Loading path must fail with a message containing want. */
static void expect_psk_error(const char *text, const char *want)
{
	char err[512] = "";
	char *path = write_file("bad.psk", text);
	struct tls_creds *cr = tls_creds_load(NULL, path, err, sizeof(err));

	assert_null(cr);
	if (!strstr(err, want))
		fail_msg("error \"%s\" lacks \"%s\"", err, want);
	assert_non_null(strstr(err, "bad.psk"));
}

static void psk_file_errors(void **state)
{
	char err[512] = "", path[256];
	struct tls_creds *cr;

	expect_psk_error("", "no username:hexkey line");
	expect_psk_error("alice\n", "line 1: expected username:hexkey");
	expect_psk_error("alice:00ff\n:0011\n", "line 2: empty username");
	expect_psk_error("alice:0g\n", "line 1: key is not hex");
	expect_psk_error("alice:001\n", "line 1: key must be");
	expect_psk_error("alice:\n", "line 1: key must be");
	expect_psk_error("alice:00\nbob:11\nalice:22\n", "line 3: username listed twice");

	snprintf(path, sizeof(path), "%s/nosuch.psk", tmpdir);
	cr = tls_creds_load(NULL, path, err, sizeof(err));
	assert_null(cr);
	assert_non_null(strstr(err, "nosuch.psk: No such file or directory"));

	cr = tls_creds_load(NULL, NULL, err, sizeof(err));
	assert_null(cr);
	assert_non_null(strstr(err, "--tls-certs"));
}

static void psk_file_ok(void **state)
{
	char err[512] = "";
	char text[512];
	struct tls_creds *cr;

	snprintf(text, sizeof(text), "alice:%s\r\n\n# comment\nbob:00FF\n", KEY_HEX);
	cr = tls_creds_load(NULL, write_file("ok.psk", text), err, sizeof(err));
	if (!cr)
		fail_msg("%s", err);
	assert_string_equal(tls_creds_describe(cr), "PSK (2 users)");
	tls_creds_free(cr);
	tls_creds_free(NULL);
}

static void x509_dir_errors(void **state)
{
	char err[512] = "", dir[128];
	struct tls_creds *cr;

	snprintf(dir, sizeof(dir), "%s/certs", tmpdir);
	cr = tls_creds_load(dir, NULL, err, sizeof(err));
	assert_null(cr);
	assert_non_null(strstr(err, "certs/ca-cert.pem: No such file or directory"));

	assert_int_equal(mkdir(dir, 0700), 0);
	write_file("certs/ca-cert.pem", "not a certificate\n");
	write_file("certs/server-cert.pem", "x\n");
	cr = tls_creds_load(dir, NULL, err, sizeof(err));
	assert_null(cr);
	assert_non_null(strstr(err, "server-key.pem: No such file or directory"));

	write_file("certs/server-key.pem", "x\n");
	cr = tls_creds_load(dir, NULL, err, sizeof(err));
	assert_null(cr);
	assert_non_null(strstr(err, "ca-cert.pem"));
}

/* ---- live sessions over a socketpair ------------------------------- */

struct pair {
	struct tls_creds *cr;
	struct tls_session *srv;
	gnutls_session_t cli;
	gnutls_psk_client_credentials_t ccred;
	int fd[2]; /* [0] server, [1] client */
};

static void pair_open(struct pair *p, const char *client_key_hex)
{
	char err[512] = "", text[256];
	uint8_t key[32];
	gnutls_datum_t k = {.data = key, .size = sizeof(key)};

	snprintf(text, sizeof(text), "alice:%s\n", KEY_HEX);
	p->cr = tls_creds_load(NULL, write_file("s.psk", text), err, sizeof(err));
	if (!p->cr)
		fail_msg("%s", err);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fd), 0);
	p->srv = tls_session_new(p->cr, p->fd[0]);
	assert_non_null(p->srv);

	for (size_t i = 0; i < sizeof(key); i++)
		sscanf(client_key_hex + 2 * i, "%2hhx", &key[i]);
	assert_int_equal(gnutls_psk_allocate_client_credentials(&p->ccred), 0);
	assert_int_equal(
	    gnutls_psk_set_client_credentials(p->ccred, "alice", &k, GNUTLS_PSK_KEY_RAW), 0);
	assert_int_equal(gnutls_init(&p->cli, GNUTLS_CLIENT | GNUTLS_NONBLOCK), 0);
	assert_int_equal(
	    gnutls_priority_set_direct(p->cli, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", NULL), 0);
	assert_int_equal(gnutls_credentials_set(p->cli, GNUTLS_CRD_PSK, p->ccred), 0);
	gnutls_transport_set_int(p->cli, p->fd[1]);
}

static void pair_close(struct pair *p)
{
	tls_session_free(p->srv);
	gnutls_deinit(p->cli);
	gnutls_psk_free_client_credentials(p->ccred);
	tls_creds_free(p->cr);
	close(p->fd[0]);
	close(p->fd[1]);
}

/* Alternate both handshakes until each is done or one fails.  Returns the
 * server's result. */
static int pair_handshake(struct pair *p)
{
	int srv = -EAGAIN, cli = GNUTLS_E_AGAIN;

	for (int i = 0; i < 1000 && (srv == -EAGAIN || cli == GNUTLS_E_AGAIN); i++) {
		if (srv == -EAGAIN)
			srv = tls_handshake(p->srv);
		if (cli == GNUTLS_E_AGAIN || cli == GNUTLS_E_INTERRUPTED)
			cli = gnutls_handshake(p->cli);
		if (srv != -EAGAIN && srv != 0)
			break;
	}
	return srv;
}

static void psk_handshake_and_data(void **state)
{
	struct pair p;
	static uint8_t big[300000], got[300000];
	uint8_t hdr[16];
	size_t n = 0;
	char desc[128];

	pair_open(&p, KEY_HEX);
	assert_int_equal(pair_handshake(&p), 0);
	assert_non_null(strstr(tls_describe(p.srv, desc, sizeof(desc)), "PSK user alice"));

	/* Client → server, through tls_recv. */
	for (size_t i = 0; i < 50000; i++)
		big[i] = (uint8_t)(i * 7);
	assert_int_equal(gnutls_record_send(p.cli, big, 50000), 16384);
	assert_int_equal(gnutls_record_send(p.cli, big + 16384, 50000 - 16384), 16384);
	assert_int_equal(gnutls_record_send(p.cli, big + 32768, 50000 - 32768), 16384);
	assert_int_equal(gnutls_record_send(p.cli, big + 49152, 50000 - 49152), 848);
	/* A short read leaves plaintext inside GnuTLS: tls_pending says so. */
	assert_int_equal(tls_recv(p.srv, got, 10), 10);
	assert_true(tls_pending(p.srv) > 0);
	ssize_t r = tls_recv(p.srv, got + 10, sizeof(got) - 10);
	assert_int_equal(r, 50000 - 10);
	assert_memory_equal(got, big, 50000);
	assert_int_equal(tls_pending(p.srv), 0);
	errno = 0;
	assert_int_equal(tls_recv(p.srv, got, sizeof(got)), -1);
	assert_int_equal(errno, EAGAIN);

	/* Server → client: many small and one large iovec, while the socket
	 * fills; the caller re-offers the untaken bytes, as conn does. */
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 13 + 1);
	memset(hdr, 0xab, sizeof(hdr));
	struct iovec iov[4] = {
	    {hdr, 16},
	    {big, 5},
	    {hdr, 3},
	    {big + 5, sizeof(big) - 5},
	};
	size_t total = 16 + 5 + 3 + sizeof(big) - 5, sent = 0, recvd = 0;
	static uint8_t want[16 + 5 + 3 + sizeof(big) - 5];
	static uint8_t rcv[sizeof(want)];
	int eagains = 0;

	memcpy(want, hdr, 16);
	memcpy(want + 16, big, 5);
	memcpy(want + 21, hdr, 3);
	memcpy(want + 24, big + 5, sizeof(big) - 5);
	while (recvd < total) {
		if (sent < total) {
			struct iovec cur[4];
			struct msghdr m = {.msg_iov = cur};
			size_t skip = sent;

			for (int i = 0; i < 4; i++) { /* iov from byte `sent` on */
				if (skip >= iov[i].iov_len) {
					skip -= iov[i].iov_len;
					continue;
				}
				cur[m.msg_iovlen].iov_base = (uint8_t *)iov[i].iov_base + skip;
				cur[m.msg_iovlen++].iov_len = iov[i].iov_len - skip;
				skip = 0;
			}
			ssize_t w = tls_sendmsg(p.srv, &m);

			if (w < 0) {
				assert_int_equal(errno, EAGAIN);
				assert_true(tls_want_write(p.srv));
				eagains++;
			} else {
				sent += (size_t)w;
				assert_true(sent <= total);
			}
		}
		/* Read only a little each round so the socket fills up. */
		ssize_t c =
		    gnutls_record_recv(p.cli, rcv + recvd, n++ % 3 ? 1000 : sizeof(rcv) - recvd);

		if (c > 0)
			recvd += (size_t)c;
		else
			assert_true(c == GNUTLS_E_AGAIN);
	}
	assert_int_equal(sent, total);
	assert_memory_equal(rcv, want, total);
	assert_true(eagains > 0); /* the pending-record path really ran */

	/* close_notify: the server sees the end of the stream. */
	assert_int_equal(gnutls_bye(p.cli, GNUTLS_SHUT_WR), 0);
	assert_int_equal(tls_recv(p.srv, got, sizeof(got)), 0);
	pair_close(&p);
}

static void psk_wrong_key(void **state)
{
	struct pair p;
	char bad[65];

	memcpy(bad, KEY_HEX, sizeof(bad));
	bad[0] = 'f';
	pair_open(&p, bad);
	int r = pair_handshake(&p);

	assert_true(r < 0 && r != -EAGAIN);
	assert_string_not_equal(tls_strerror(p.srv), "no error");
	pair_close(&p);
}

static void peer_vanishes(void **state)
{
	struct pair p;
	uint8_t buf[64];

	pair_open(&p, KEY_HEX);
	assert_int_equal(pair_handshake(&p), 0);
	close(p.fd[1]); /* no close_notify */
	p.fd[1] = open("/dev/null", O_RDONLY);
	assert_int_equal(tls_recv(p.srv, buf, sizeof(buf)), 0);
	pair_close(&p);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(psk_file_errors),        T(psk_file_ok),   T(x509_dir_errors),
	    T(psk_handshake_and_data), T(psk_wrong_key), T(peer_vanishes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
