/* nbd.h — NBD wire constants and message layouts, all in one place.
 *
 * Values follow doc/proto.md of the NetworkBlockDevice/nbd project.  Every
 * multi-byte field on the wire is big-endian; the packed structs below give
 * the exact layouts (their sizes are checked with static_assert) and are
 * filled or read with memcpy plus htobe / betoh conversions, never through
 * an unaligned pointer into a receive buffer.  Only proto.c interprets
 * these; see docs/PROTOCOL.md for which ones cowbd supports.  The
 * extended headers (NBD_OPT_EXTENDED_HEADERS and what depends on it) follow
 * the extension-ext-header branch of that document.
 */
#ifndef COWBD_NBD_H
#define COWBD_NBD_H
#include <assert.h>
#include <stdint.h>

/* ---- magics ------------------------------------------------------- */
#define NBD_MAGIC                  0x4e42444d41474943ull /* "NBDMAGIC" */
#define NBD_OPT_MAGIC              0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_REP_MAGIC              0x0003e889045565a9ull /* option reply */
#define NBD_REQUEST_MAGIC          0x25609513u           /* transmission request */
#define NBD_SIMPLE_REPLY_MAGIC     0x67446698u           /* simple reply */
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu           /* structured reply chunk */
#define NBD_EXTENDED_REQUEST_MAGIC 0x21e41c71u           /* request, extended headers */
#define NBD_EXTENDED_REPLY_MAGIC   0x6e8a278cu           /* reply chunk, extended headers */

/* ---- handshake flags (server, 16 bits) ---------------------------- */
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES      (1u << 1)

/* ---- client flags (32 bits) --------------------------------------- */
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* ---- transmission flags (16 bits) --------------------------------- */
#define NBD_FLAG_HAS_FLAGS            (1u << 0)
#define NBD_FLAG_READ_ONLY            (1u << 1)
#define NBD_FLAG_SEND_FLUSH           (1u << 2)
#define NBD_FLAG_SEND_FUA             (1u << 3)
#define NBD_FLAG_ROTATIONAL           (1u << 4)
#define NBD_FLAG_SEND_TRIM            (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES    (1u << 6)
#define NBD_FLAG_SEND_DF              (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN       (1u << 8)
#define NBD_FLAG_SEND_RESIZE          (1u << 9)
#define NBD_FLAG_SEND_CACHE           (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO       (1u << 11)
#define NBD_FLAG_BLOCK_STATUS_PAYLOAD (1u << 12) /* extended headers only */

/* ---- options ------------------------------------------------------ */
#define NBD_OPT_EXPORT_NAME       1u
#define NBD_OPT_ABORT             2u
#define NBD_OPT_LIST              3u
#define NBD_OPT_PEEK_EXPORT       4u /* withdrawn */
#define NBD_OPT_STARTTLS          5u
#define NBD_OPT_INFO              6u
#define NBD_OPT_GO                7u
#define NBD_OPT_STRUCTURED_REPLY  8u
#define NBD_OPT_LIST_META_CONTEXT 9u
#define NBD_OPT_SET_META_CONTEXT  10u
#define NBD_OPT_EXTENDED_HEADERS  11u

/* ---- option reply types ------------------------------------------- */
#define NBD_REP_ACK                 1u
#define NBD_REP_SERVER              2u
#define NBD_REP_INFO                3u
#define NBD_REP_META_CONTEXT        4u
#define NBD_REP_ERR(n)              (0x80000000u | (n))
#define NBD_REP_ERR_UNSUP           NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY          NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID         NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM        NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD        NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN         NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN        NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG         NBD_REP_ERR(9)
#define NBD_REP_ERR_EXT_HEADER_REQD NBD_REP_ERR(10)

/* ---- NBD_REP_INFO types (NBD_OPT_INFO / NBD_OPT_GO) ---------------- */
#define NBD_INFO_EXPORT      0u
#define NBD_INFO_NAME        1u
#define NBD_INFO_DESCRIPTION 2u
#define NBD_INFO_BLOCK_SIZE  3u

/* ---- commands ----------------------------------------------------- */
#define NBD_CMD_READ         0u
#define NBD_CMD_WRITE        1u
#define NBD_CMD_DISC         2u
#define NBD_CMD_FLUSH        3u
#define NBD_CMD_TRIM         4u
#define NBD_CMD_CACHE        5u
#define NBD_CMD_WRITE_ZEROES 6u
#define NBD_CMD_BLOCK_STATUS 7u
#define NBD_CMD_RESIZE       8u

/* ---- command flags (16 bits) -------------------------------------- */
#define NBD_CMD_FLAG_FUA       (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE   (1u << 1)
#define NBD_CMD_FLAG_DF        (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE   (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)
/* Extended headers only: the length field is a payload length (that many
 * bytes follow the header), not an effect length. */
#define NBD_CMD_FLAG_PAYLOAD_LEN (1u << 5)

/* ---- structured reply chunks (after NBD_OPT_STRUCTURED_REPLY) ------ */
#define NBD_REPLY_FLAG_DONE             (1u << 0)
#define NBD_REPLY_TYPE_NONE             0u
#define NBD_REPLY_TYPE_OFFSET_DATA      1u
#define NBD_REPLY_TYPE_OFFSET_HOLE      2u
#define NBD_REPLY_TYPE_BLOCK_STATUS     5u
#define NBD_REPLY_TYPE_BLOCK_STATUS_EXT 6u /* extended headers only */
#define NBD_REPLY_TYPE_ERROR            ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET     ((1u << 15) + 2)

/* ---- metadata contexts -------------------------------------------- */
#define NBD_META_BASE_ALLOCATION "base:allocation"
#define NBD_STATE_HOLE           (1u << 0) /* base:allocation: unallocated */
#define NBD_STATE_ZERO           (1u << 1) /* base:allocation: reads as zeroes */
/* qemu's namespace (qemu docs/interop/nbd.rst): a dirty bitmap per name,
 * and the allocation depth (the whole 32-bit status is the depth). */
#define NBD_META_QEMU_PREFIX "qemu:"
#define NBD_META_QEMU_DIRTY  "qemu:dirty-bitmap:" /* + bitmap name */
#define NBD_META_QEMU_DEPTH  "qemu:allocation-depth"
#define NBD_STATE_DIRTY      (1u << 0) /* qemu:dirty-bitmap: changed */

/* ---- error values in replies -------------------------------------- */
#define NBD_EPERM     1u
#define NBD_EIO       5u
#define NBD_ENOMEM    12u
#define NBD_EINVAL    22u
#define NBD_ENOSPC    28u
#define NBD_EOVERFLOW 75u
#define NBD_ENOTSUP   95u
#define NBD_ESHUTDOWN 108u

/* ---- limits ------------------------------------------------------- */
#define NBD_STRING_MAX   4096u /* the spec's cap on names and messages */
#define NBD_DEFAULT_PORT 10809

/* ---- message layouts ---------------------------------------------- */

/* S: first message of the newstyle handshake. */
struct nbd_greeting {
	uint64_t magic;     /* NBD_MAGIC */
	uint64_t opt_magic; /* NBD_OPT_MAGIC */
	uint16_t flags;     /* handshake flags */
} __attribute__((packed));
static_assert(sizeof(struct nbd_greeting) == 18, "nbd_greeting size");

/* C: header of one option; length bytes of data follow. */
struct nbd_option {
	uint64_t magic; /* NBD_OPT_MAGIC */
	uint32_t option;
	uint32_t length;
} __attribute__((packed));
static_assert(sizeof(struct nbd_option) == 16, "nbd_option size");

/* S: header of one option reply; length bytes of data follow. */
struct nbd_option_reply {
	uint64_t magic; /* NBD_REP_MAGIC */
	uint32_t option;
	uint32_t reply;
	uint32_t length;
} __attribute__((packed));
static_assert(sizeof(struct nbd_option_reply) == 20, "nbd_option_reply size");

/* S: reply to NBD_OPT_EXPORT_NAME (followed by 124 zero bytes unless
 * both sides agreed on NO_ZEROES). */
struct nbd_export_name_reply {
	uint64_t size;
	uint16_t flags; /* transmission flags */
} __attribute__((packed));
static_assert(sizeof(struct nbd_export_name_reply) == 10, "nbd_export_name_reply size");
#define NBD_EXPORT_NAME_PAD 124u

/* S: NBD_REP_INFO payloads. */
struct nbd_info_export {
	uint16_t info; /* NBD_INFO_EXPORT */
	uint64_t size;
	uint16_t flags;
} __attribute__((packed));
static_assert(sizeof(struct nbd_info_export) == 12, "nbd_info_export size");

struct nbd_info_block_size {
	uint16_t info; /* NBD_INFO_BLOCK_SIZE */
	uint32_t minimum;
	uint32_t preferred;
	uint32_t maximum;
} __attribute__((packed));
static_assert(sizeof(struct nbd_info_block_size) == 14, "nbd_info_block_size size");

/* C: transmission request; WRITE is followed by length bytes. */
struct nbd_request {
	uint32_t magic; /* NBD_REQUEST_MAGIC */
	uint16_t flags; /* command flags */
	uint16_t type;  /* NBD_CMD_* */
	uint64_t handle;
	uint64_t offset;
	uint32_t length;
} __attribute__((packed));
static_assert(sizeof(struct nbd_request) == 28, "nbd_request size");

/* C: transmission request (magic NBD_EXTENDED_REQUEST_MAGIC) and S: reply
 * chunk header (NBD_EXTENDED_REPLY_MAGIC; every reply, even one without
 * payload) after NBD_OPT_EXTENDED_HEADERS: one layout.  A request's length
 * is its payload's (that many bytes follow) with NBD_CMD_FLAG_PAYLOAD_LEN,
 * else the command's effect length; a reply's offset echoes the request's
 * and its length is the payload's. */
struct nbd_extended_header {
	uint32_t magic;
	uint16_t flags; /* NBD_CMD_FLAG_* / NBD_REPLY_FLAG_* */
	uint16_t type;  /* NBD_CMD_* / NBD_REPLY_TYPE_* */
	uint64_t handle;
	uint64_t offset;
	uint64_t length;
} __attribute__((packed));
static_assert(sizeof(struct nbd_extended_header) == 32, "nbd_extended_header size");

/* S: simple reply; a successful READ is followed by length bytes. */
struct nbd_simple_reply {
	uint32_t magic; /* NBD_SIMPLE_REPLY_MAGIC */
	uint32_t error; /* NBD_E* or 0 */
	uint64_t handle;
} __attribute__((packed));
static_assert(sizeof(struct nbd_simple_reply) == 16, "nbd_simple_reply size");

/* S: structured reply chunk header; length bytes of payload follow. */
struct nbd_structured_reply {
	uint32_t magic; /* NBD_STRUCTURED_REPLY_MAGIC */
	uint16_t flags; /* NBD_REPLY_FLAG_* */
	uint16_t type;  /* NBD_REPLY_TYPE_* */
	uint64_t handle;
	uint32_t length;
} __attribute__((packed));
static_assert(sizeof(struct nbd_structured_reply) == 20, "nbd_structured_reply size");

/* S: one extent of an NBD_REPLY_TYPE_BLOCK_STATUS chunk (after the 32-bit
 * context id). */
struct nbd_block_descriptor {
	uint32_t length;
	uint32_t status;
} __attribute__((packed));
static_assert(sizeof(struct nbd_block_descriptor) == 8, "nbd_block_descriptor size");

/* S: one extent of an NBD_REPLY_TYPE_BLOCK_STATUS_EXT chunk (after the
 * 32-bit context id and the 32-bit descriptor count). */
struct nbd_block_descriptor_ext {
	uint64_t length;
	uint64_t status;
} __attribute__((packed));
static_assert(sizeof(struct nbd_block_descriptor_ext) == 16, "nbd_block_descriptor_ext size");

#endif
