/* proto.h — the NBD protocol over byte buffers: handshake state machine,
 * request decoding and validation, reply encoding.
 *
 * No sockets and no threads here: the caller (conn.c, or a unit test, or a
 * fuzzer) feeds received bytes in and gets back how many were consumed,
 * bytes to send, and validated requests to execute.  Exports are looked up
 * through a small ops table, so proto never calls the store itself; a
 * request comes out already translated to a store operation.  This is the
 * one place that knows NBD error numbers (proto_nbd_error).
 *
 * Not thread-safe: one struct proto per connection, used by one thread.
 */
#ifndef COWBD_PROTO_H
#define COWBD_PROTO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "nbd.h"
#include "store.h"

/* Largest option data accepted; a longer option is a denial-of-service
 * attempt (no option cowbd knows needs more than 4 + 4096 + 2 + 2*n bytes)
 * and gets a hard disconnect.  Callers must be able to buffer this much
 * plus one option header. */
#define PROTO_OPT_MAX (64u << 10)
/* Largest READ/WRITE payload (advertised as the maximum block size). */
#define PROTO_MAX_PAYLOAD STORE_MAX_REQ
/* Advertised minimum and preferred block sizes. */
#define PROTO_MIN_BLOCK  1u
#define PROTO_PREF_BLOCK STORE_BLOCK_SIZE

/* What an export lookup yields. */
struct proto_export {
	uint64_t size;
	bool read_only;
	void *handle; /* the caller's; passed back to ops->close */
};

struct proto_ops {
	/* Open export name (NUL-terminated, validated as a string).  Returns 0
	 * and fills *out, or -ENOENT (unknown export) or another -errno. */
	int (*open)(void *ctx, const char *name, struct proto_export *out);
	/* Release what open returned. */
	void (*close)(void *ctx, void *handle);
	/* Call emit once per export; stop and return emit's error if it fails.
	 * desc may be NULL.  Returns 0 or -errno. */
	int (*list)(void *ctx, int (*emit)(void *arg, const char *name, const char *desc),
	            void *arg);
};

/* Growable output buffer for handshake replies.  Starts zeroed. */
struct proto_buf {
	uint8_t *data;
	size_t len, cap;
};
void proto_buf_free(struct proto_buf *b);

enum proto_phase {
	PROTO_CLIENT_FLAGS, /* greeting sent, waiting for the 4 client flag bytes */
	PROTO_OPTIONS,      /* option haggling */
	PROTO_TRANSMISSION, /* export chosen: requests follow */
	PROTO_CLOSE,        /* send what is buffered, then close (NBD_OPT_ABORT) */
};

struct proto {
	enum proto_phase phase;
	const struct proto_ops *ops;
	void *ctx;
	bool no_zeroes;          /* client set NBD_FLAG_C_NO_ZEROES */
	bool shutting_down;      /* answer options with NBD_REP_ERR_SHUTDOWN */
	struct proto_export exp; /* valid in PROTO_TRANSMISSION */
	uint16_t tflags;         /* transmission flags sent for exp */
};

/* A decoded and validated transmission request. */
struct proto_req {
	uint16_t type, flags; /* NBD_CMD_*, NBD_CMD_FLAG_* as received */
	uint64_t handle;
	uint64_t offset;
	uint32_t length;
	/* Bytes of payload that follow the header on the wire (WRITE: length,
	 * even when the request is rejected: the caller must then read and
	 * discard them). */
	uint32_t payload;
	/* 0: execute op; else the NBD error to reply with, without executing. */
	uint32_t error;
	bool disc; /* NBD_CMD_DISC: finish in-flight requests, then close */
	bool noop; /* valid but nothing to do (length 0): reply success */
	enum store_op op;
	uint32_t store_flags; /* STORE_FUA, STORE_NO_HOLE */
};

void proto_init(struct proto *p, const struct proto_ops *ops, void *ctx);
/* Close the export handle, if any.  Only once nothing uses it any more. */
void proto_fini(struct proto *p);

/* Append the server greeting to out.  0 or -ENOMEM. */
int proto_greet(struct proto *p, struct proto_buf *out);

/* Feed handshake bytes.  Consumes whole messages only and appends replies
 * to out.  Returns the number of bytes consumed (0: need more data), or a
 * negative errno meaning "hard disconnect now" (-EPROTO for a framing or
 * flag violation, -ENOENT for an unknown NBD_OPT_EXPORT_NAME, -E2BIG for
 * option data over PROTO_OPT_MAX, -ENOMEM).  Stops consuming as soon as
 * the phase becomes PROTO_TRANSMISSION or PROTO_CLOSE; bytes after that
 * are left for the caller. */
ssize_t proto_handshake(struct proto *p, const uint8_t *in, size_t len, struct proto_buf *out);

/* Decode and validate one request header from in.  Returns the header
 * size (28) with *req filled, 0 when len is too short, or -EPROTO (bad
 * magic: hard disconnect).  Validation failures do not fail the call: they
 * set req->error.  Cost: a few compares. */
int proto_request(struct proto *p, const uint8_t *in, size_t len, struct proto_req *req);

/* Encode a simple reply header (16 bytes). */
void proto_reply(uint8_t out[sizeof(struct nbd_simple_reply)], uint64_t handle, uint32_t error);

/* Translate a store result (0 or -errno) into an NBD error value.  The
 * only errno→NBD mapping in cowbd. */
uint32_t proto_nbd_error(int err);

#endif
