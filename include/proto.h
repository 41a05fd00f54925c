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
#include <sys/uio.h>

#include "diff.h"
#include "nbd.h"
#include "store.h"

/* Largest option data accepted; a longer option is a denial-of-service
 * attempt (no option cowbd knows needs more than 4 + 4096 + 2 + 2*n bytes)
 * and gets a hard disconnect.  Callers must be able to buffer this much
 * plus one option header. */
#define PROTO_OPT_MAX (64u << 10)
/* Largest READ/WRITE payload (advertised as the maximum block size), and
 * with extended headers the largest payload of any request: a longer
 * NBD_CMD_FLAG_PAYLOAD_LEN gets a hard disconnect (the spec's SHOULD). */
#define PROTO_MAX_PAYLOAD STORE_MAX_REQ
/* Request headers: compact (28 bytes) or extended (32); callers must be
 * able to buffer the larger. */
#define PROTO_REQ_HDR_MAX sizeof(struct nbd_extended_header)
/* Advertised minimum and preferred block sizes. */
#define PROTO_MIN_BLOCK  1u
#define PROTO_PREF_BLOCK STORE_BLOCK_SIZE

/* Context ids cowbd gives in NBD_OPT_SET_META_CONTEXT. */
#define PROTO_META_ALLOC_ID 1u /* base:allocation */
#define PROTO_META_DIRTY_ID 2u /* qemu:dirty-bitmap:SNAP */
#define PROTO_META_DEPTH_ID 3u /* qemu:allocation-depth */
#define PROTO_META_NCTX     3u /* ids are 1 .. PROTO_META_NCTX */
#define PROTO_META_BIT(id)  (1u << (id))
/* Largest BLOCK_STATUS payload (NBD_FLAG_BLOCK_STATUS_PAYLOAD) that can be
 * valid: the effect length and each context id once.  A longer one names
 * an id twice or one not selected: EINVAL, its payload discarded unread. */
#define PROTO_BS_PAYLOAD_MAX (8u + 4u * PROTO_META_NCTX)

/* What an export lookup yields.  proto zeroes it before ops->open. */
struct proto_export {
	uint64_t size;
	bool read_only;
	void *handle; /* the caller's; passed back to ops->close */
	/* Optional NBD_INFO_DESCRIPTION text ("" = none). */
	char desc[128];
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

/* The qemu: metadata contexts (docs/PROTOCOL.md).  Optional: with no
 * table (proto.meta_ops NULL) only base:allocation exists.  Sources are
 * opened at NBD_OPT_SET_META_CONTEXT on the export handle ops->open gave
 * and kept (they hold what they read) until a later SET, STARTTLS or
 * proto_fini; the caller answers BLOCK_STATUS from them. */
struct proto_meta_ops {
	/* Call emit once per snapshot a qemu:dirty-bitmap:NAME can name on
	 * export handle; stop and return emit's error.  0 or -errno. */
	int (*snapshots)(void *ctx, void *handle, int (*emit)(void *arg, const char *snap),
	                 void *arg);
	/* Open the source of qemu:dirty-bitmap:snap (or, snap NULL, of
	 * qemu:allocation-depth) for export handle: 0 and *src, -ENOENT (no
	 * such snapshot), or another -errno. */
	int (*open)(void *ctx, void *handle, const char *snap, void **src);
	void (*close)(void *ctx, void *src);
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
	/* NBD_OPT_STARTTLS acknowledged: the caller sends what is buffered
	 * (the ACK must go out in plaintext), runs the TLS handshake, then
	 * calls proto_tls_started().  Bytes the client sent after the option,
	 * before the handshake, are a protocol violation (plaintext injected
	 * ahead of TLS): the caller must hang up rather than read them. */
	PROTO_STARTTLS,
};

/* TLS policy for option haggling (the spec's NOTLS / FORCEDTLS modes, and
 * SELECTIVETLS with no TLS-only export). */
enum proto_tls {
	PROTO_TLS_OFF,     /* STARTTLS → NBD_REP_ERR_POLICY */
	PROTO_TLS_ALLOW,   /* STARTTLS accepted; plaintext options served too */
	PROTO_TLS_REQUIRE, /* before TLS: every option but STARTTLS/ABORT →
	                    * NBD_REP_ERR_TLS_REQD, EXPORT_NAME → disconnect */
};

struct proto {
	enum proto_phase phase;
	const struct proto_ops *ops;
	void *ctx;
	bool no_zeroes;          /* client set NBD_FLAG_C_NO_ZEROES */
	bool shutting_down;      /* answer options with NBD_REP_ERR_SHUTDOWN */
	struct proto_export exp; /* valid in PROTO_TRANSMISSION */
	uint16_t tflags;         /* transmission flags sent for exp */
	bool structured;         /* replies in chunks: STRUCTURED_REPLY or EXTENDED_HEADERS */
	bool extended;           /* NBD_OPT_EXTENDED_HEADERS acknowledged: 32-byte
	                          * headers both ways (docs/PROTOCOL.md) */
	/* NBD_OPT_SET_META_CONTEXT selected these contexts for meta_name;
	 * they are active in transmission only if the export chosen has that
	 * name (a later SET replaces the selection, even a failed one). */
	bool meta_alloc;                       /* base:allocation */
	void *meta_dirty;                      /* qemu:dirty-bitmap:meta_dirty_name's source */
	void *meta_depth;                      /* qemu:allocation-depth's source */
	const struct proto_meta_ops *meta_ops; /* set by the caller after proto_init */
	bool meta_active;                      /* PROTO_TRANSMISSION: BLOCK_STATUS allowed */
	char meta_name[NBD_STRING_MAX + 1];
	char meta_dirty_name[NAMES_PART_MAX + 1];
	enum proto_tls tls_mode; /* set by the caller after proto_init */
	/* An option refused by policy (TLS required, STARTTLS with TLS off),
	 * in words, for the caller to log and clear ("" = none). */
	char refused[96];
	bool tls; /* TLS is established (proto_tls_started) */
};

/* A decoded and validated transmission request. */
struct proto_req {
	uint16_t type, flags; /* NBD_CMD_*, NBD_CMD_FLAG_* as received */
	uint64_t handle;
	uint64_t offset;
	uint64_t length; /* effect length (64 bits with extended headers) */
	/* Bytes of payload that follow the header on the wire (a compact
	 * WRITE: length; extended: length with NBD_CMD_FLAG_PAYLOAD_LEN), even
	 * when the request is rejected: the caller must then read and discard
	 * them.  At most PROTO_MAX_PAYLOAD with extended headers. */
	uint32_t payload;
	/* BLOCK_STATUS with a payload (NBD_FLAG_BLOCK_STATUS_PAYLOAD): the
	 * caller reads its payload bytes and passes them to
	 * proto_request_payload() before acting on the request. */
	bool bs_payload;
	/* 0: execute op; else -errno to reply with, without executing (the
	 * reply builders translate it: proto_nbd_error). */
	int error;
	bool disc; /* NBD_CMD_DISC: finish in-flight requests, then close */
	bool noop; /* valid but nothing to do (length 0, CACHE): reply success */
	/* Reply with structured chunks (a READ after NBD_OPT_STRUCTURED_REPLY,
	 * or BLOCK_STATUS); errors then go out as NBD_REPLY_TYPE_ERROR. */
	bool structured;
	bool block_status; /* valid NBD_CMD_BLOCK_STATUS: answer from store_map */
	bool df;           /* READ with NBD_CMD_FLAG_DF: one data chunk */
	bool req_one;      /* BLOCK_STATUS with NBD_CMD_FLAG_REQ_ONE: one extent */
	bool extended;     /* reply with extended headers */
	/* BLOCK_STATUS: answer these contexts (PROTO_META_BIT of their ids):
	 * every selected one, or those a payload names. */
	unsigned contexts;
	enum store_op op;
	uint32_t store_flags; /* STORE_FUA, STORE_NO_HOLE */
};

void proto_init(struct proto *p, const struct proto_ops *ops, void *ctx);
/* Close the export handle, if any.  Only once nothing uses it any more. */
void proto_fini(struct proto *p);

/* The TLS handshake that PROTO_STARTTLS asked for has completed: option
 * haggling resumes (inside TLS).  Anything negotiated in plaintext before
 * (structured replies, meta contexts) is forgotten, as the spec requires,
 * so a man in the middle cannot have chosen it. */
void proto_tls_started(struct proto *p);

/* ---- handover (docs/ARCHITECTURE.md, "Upgrades without downtime") ----
 * What a connection has negotiated, so that another process can carry on
 * with the same socket: conn.c saves it, the new daemon restores it. */
struct proto_state {
	enum proto_phase phase; /* PROTO_CLIENT_FLAGS, PROTO_OPTIONS or PROTO_TRANSMISSION */
	bool no_zeroes, structured, extended;
	/* PROTO_TRANSMISSION: the export as the client was told it */
	uint64_t size;
	uint16_t tflags;
	bool read_only;
	/* the metadata contexts selected for meta_name (none: all false, "") */
	bool meta_alloc, meta_depth;
	char meta_dirty[NAMES_PART_MAX + 1]; /* qemu:dirty-bitmap:SNAP's SNAP, "" none */
	char meta_name[NBD_STRING_MAX + 1];
};

/* Fill out from p, which is in one of the three phases above, outside TLS. */
void proto_save(const struct proto *p, struct proto_state *out);

/* Carry on in p (fresh from proto_init, with meta_ops set) from s.  In
 * transmission, export name is opened through ops->open and must give the
 * size, read-only flag and transmission flags the client was told; the
 * selected contexts are opened again.  Never trusts s: returns 0, or
 * -ESTALE (the export or a context is not what the client was told),
 * -EPROTO (a phase or a field that cannot be), or an open's -errno; on
 * failure p holds nothing (proto_fini is still fine). */
int proto_restore(struct proto *p, const char *name, const struct proto_state *s);

/* Append the server greeting to out.  0 or -ENOMEM. */
int proto_greet(struct proto *p, struct proto_buf *out);

/* Feed handshake bytes.  Consumes whole messages only and appends replies
 * to out.  Returns the number of bytes consumed (0: need more data), or a
 * negative errno meaning "hard disconnect now" (-EPROTO for a framing or
 * flag violation, -ENOENT for an unknown NBD_OPT_EXPORT_NAME, -E2BIG for
 * option data over PROTO_OPT_MAX, -ENOMEM, -EACCES for NBD_OPT_EXPORT_NAME
 * before TLS when TLS is required).  Stops consuming as soon as the phase
 * becomes PROTO_TRANSMISSION, PROTO_CLOSE or PROTO_STARTTLS; bytes after
 * that are left for the caller. */
ssize_t proto_handshake(struct proto *p, const uint8_t *in, size_t len, struct proto_buf *out);

/* Decode and validate one request header from in: the compact one, or
 * after NBD_OPT_EXTENDED_HEADERS the extended one.  Returns the header
 * size (28 or 32) with *req filled, 0 when len is too short, or a hard
 * disconnect: -EPROTO (bad magic, or the header style not negotiated),
 * -E2BIG (an extended payload length over PROTO_MAX_PAYLOAD).  Validation
 * failures do not fail the call: they set req->error.  Cost: a few
 * compares. */
int proto_request(struct proto *p, const uint8_t *in, size_t len, struct proto_req *req);

/* req->bs_payload: in holds its req->payload bytes (at most
 * PROTO_BS_PAYLOAD_MAX): the effect length and the context ids to answer.
 * Sets req->length and req->contexts, or req->error (-EINVAL: malformed,
 * an id twice or not selected; a bad range as for any BLOCK_STATUS).
 * Clears req->payload and req->bs_payload (the bytes are consumed). */
void proto_request_payload(const struct proto *p, struct proto_req *req, const uint8_t *in);

/* ---- replies --------------------------------------------------------
 * Every reply is assembled here, as iovecs over the reply's own header
 * area (a simple reply header, or structured chunk headers) and the
 * caller's data buffer (READ data, BLOCK_STATUS descriptors), which must
 * stay alive until the iovecs are sent, in order.  Results come in as 0 or
 * -errno and leave as NBD error values (proto_nbd_error): the caller never
 * names an NBD error.  Pure functions: no allocation, no I/O. */
#define PROTO_READ_CHUNKS 16 /* chunks per structured READ reply */
#define PROTO_READ_PIECES 8  /* separate buffers a READ's data may come in */
#define PROTO_REPLY_IOV   (2 * PROTO_READ_CHUNKS + PROTO_READ_PIECES)
/* Caller's buffer bytes per BLOCK_STATUS extent: 8 (compact) or 16
 * (NBD_REPLY_TYPE_BLOCK_STATUS_EXT); size buffers for the larger. */
#define PROTO_BS_DESC    sizeof(struct nbd_block_descriptor_ext)
#define PROTO_CHUNK_HDR  sizeof(struct nbd_extended_header) /* a chunk header, at most */
#define PROTO_CHUNK_HOLE (PROTO_CHUNK_HDR + 12)             /* a READ chunk's header, at most */

struct proto_reply {
	uint64_t handle; /* the client's, echoed byte for byte */
	uint64_t offset; /* the request's: extended headers echo it */
	bool structured; /* reply in chunks (proto_req.structured) */
	bool extended;   /* ... with extended headers (proto_req.extended) */
	bool df;         /* READ: exactly one data chunk */
	unsigned niov;
	uint32_t len; /* bytes in iov[0, niov) */
	struct iovec iov[PROTO_REPLY_IOV];
	uint8_t hdr[PROTO_READ_CHUNKS * PROTO_CHUNK_HOLE];
};

/* Take from a decoded request what its reply needs; no iovecs yet. */
void proto_reply_init(struct proto_reply *r, const struct proto_req *req);

/* A reply that carries no data back, for err 0 or -errno: a simple reply,
 * or for a structured request an NBD_REPLY_TYPE_ERROR chunk (err) or a
 * NONE chunk (success: a structured READ of length 0).  For rejected
 * requests (proto_req.error), no-ops, and store results of every command
 * but READ. */
void proto_reply_status(struct proto_reply *r, int err);

/* A READ of len bytes at offset finished with err (0 or -errno); on
 * success buf holds the data.  Simple: header + data.  Structured: data
 * and hole chunks tiling the range, as proto_read_runs() splits it, the
 * last with DONE; a failure is one ERROR_OFFSET chunk at offset (the store
 * does not say which byte failed, so the whole range is reported bad). */
void proto_reply_read(struct proto_reply *r, int err, uint64_t offset, const uint8_t *buf,
                      uint32_t len);
/* The same for a successful READ whose len bytes lie in n (at most
 * PROTO_READ_PIECES) consecutive pieces: the reply's iovecs point into
 * them. */
void proto_reply_read_pieces(struct proto_reply *r, uint64_t offset, const struct iovec *piece,
                             unsigned n, uint32_t len);

/* The answers to one BLOCK_STATUS, one per active context: a context not
 * selected has a NULL array. */
struct proto_bs {
	int err; /* 0, or the first -errno a source gave: the reply is an error */
	const struct store_extent *alloc; /* base:allocation, from store_map */
	unsigned nalloc;
	const struct store_run *dirty; /* qemu:dirty-bitmap: value 1 = dirty */
	unsigned ndirty;
	const struct store_run *depth; /* qemu:allocation-depth: the depth */
	unsigned ndepth;
};

/* BLOCK_STATUS: one chunk per context present in bs (base:allocation,
 * then the dirty bitmap, then the depth; DONE on the last), or one
 * NBD_REPLY_TYPE_ERROR chunk (bs->err, or EIO when a context has no run:
 * a chunk needs one).  Compact: NBD_REPLY_TYPE_BLOCK_STATUS, extent
 * lengths of 32 bits (the request's length is, so they fit); extended:
 * NBD_REPLY_TYPE_BLOCK_STATUS_EXT, 64-bit lengths (one extent may cover
 * a whole volume).  desc, (nalloc + ndirty + ndepth) * PROTO_BS_DESC
 * bytes, receives the wire descriptors. */
void proto_reply_block_status(struct proto_reply *r, const struct proto_bs *bs, uint8_t *desc);

/* How a successful structured READ goes out: runs of data and of zeroes. */
struct proto_run {
	uint32_t off, len; /* relative to the request */
	bool hole;         /* all zero bytes: sent as NBD_REPLY_TYPE_OFFSET_HOLE */
};
/* Split the len bytes read at offset (buf) into at most max runs (max >=
 * 1): maximal runs of 4 KiB blocks (aligned to the export, the partial
 * blocks at either end included) that are all zero bytes become holes, the
 * rest data; once max-1 runs are used, the remainder is one data run.
 * df (NBD_CMD_FLAG_DF) gives exactly one data run.  len must be > 0.
 * Any all-zero block may be sent as a hole, allocated or not: a hole chunk
 * only promises that the range reads as zeroes, and checking the bytes
 * actually read (instead of the allocation map) stays right when a write
 * races with the read.  Returns the number of runs.  Cost: scans the zero blocks in full, stops
 * at the first nonzero word of every other block. */
unsigned proto_read_runs(const uint8_t *buf, uint64_t offset, uint32_t len, bool df,
                         struct proto_run *runs, unsigned max);
/* The same over data in n consecutive pieces (their lengths add to len). */
unsigned proto_read_runs_pieces(const struct iovec *piece, unsigned n, uint64_t offset,
                                uint32_t len, bool df, struct proto_run *runs, unsigned max);

/* Translate a store result (0 or -errno) into an NBD error value.  The
 * only errno→NBD mapping in cowbd. */
uint32_t proto_nbd_error(int err);

#endif
