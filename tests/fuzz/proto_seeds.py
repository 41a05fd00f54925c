#!/usr/bin/env python3
# proto_seeds.py — write starting inputs for fuzz_proto into a directory:
# whole client streams (byte 0 = chunking seed, then client flags, options,
# requests) covering each option and command once, so the fuzzer starts in
# transmission rather than having to discover IHAVEOPT by itself.
# Byte 0 also picks the TLS mode (bits 1-2); seed 0x59 keeps TLS off.
# fuzz_proto runs the real server on these bytes: after an acknowledged
# NBD_OPT_STARTTLS they go to GnuTLS (the handshake fails), and requests get
# handles 1, 2, 3, ... so the harness can match every reply to its request.
# Usage: tests/fuzz/proto_seeds.py DIR
import os, struct, sys

OPT_MAGIC = 0x49484156454F5054
REQ_MAGIC = 0x25609513

def opt(o, data=b""):
    return struct.pack(">QII", OPT_MAGIC, o, len(data)) + data

def go(name, infos=(), o=7):
    n = name.encode()
    return opt(o, struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos)) +
               b"".join(struct.pack(">H", i) for i in infos))

def meta(export, *queries):
    e = export.encode()
    return (struct.pack(">I", len(e)) + e + struct.pack(">I", len(queries)) +
            b"".join(struct.pack(">I", len(q)) + q.encode() for q in queries))

_handles = iter(range(1, 1 << 32))

def req(cmd, off=0, length=0, flags=0, handle=None, payload=b""):
    h = next(_handles) if handle is None else handle
    return struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, h, off, length) + payload

EXT_MAGIC = 0x21e41c71
PAYLOAD_LEN = 1 << 5

def ereq(cmd, off=0, length=0, flags=0, payload=b""):
    """An extended (32-byte) request, after NBD_OPT_EXTENDED_HEADERS."""
    return struct.pack(">IHHQQQ", EXT_MAGIC, flags, cmd, next(_handles), off, length) + payload

FLAGS = struct.pack(">I", 3)
seeds = {
    "list_abort": FLAGS + opt(3) + opt(2),
    "info_go": FLAGS + go("vol0", (1, 3), 6) + go("vol0", (1,)) + req(0, 0, 4096) + req(2),
    "export_name": struct.pack(">I", 1) + opt(1, b"vol0") + req(0, 8192, 512) + req(3) + req(2),
    "unknown_export": FLAGS + go("nope") + opt(99, b"xx") + go("vol0@snap") + req(1, 0, 4, payload=b"abcd"),
    "snap_ro": FLAGS + go("vol0@snap") + req(0, 8192, 65536) + req(4, 0, 4096) + req(6, 0, 4096) + req(3),
    "writes": FLAGS + go("vol0") + req(1, 4096, 8, 1, payload=b"12345678") + req(4, 0, 4096, 1) +
              req(6, 0, 8192, 3) + req(3) + req(5, 0, 1) + req(7, 0, 1) + req(0, 1 << 20, 1) +
              req(1, 1 << 20, 1, payload=b"x") + req(0, 2**64 - 1, 2) + req(2),
    "odd": FLAGS + go("odd") + req(0, 3 * 4096, 1536) + req(0, 3 * 4096, 1537) + req(2),
    "big": FLAGS + go("big") + req(0, (1 << 40) - 4096, 4096) + req(0, 0, 32 << 20) +
           req(1, 0, (32 << 20) + 1) + req(2),
    "bad_magic": FLAGS + go("vol0") + struct.pack(">I", 0) + b"\0" * 24,
    "too_long": FLAGS + struct.pack(">QII", OPT_MAGIC, 7, 1 << 20),
    "bad_flags": struct.pack(">I", 4),
    # Structured replies and base:allocation (NBD_OPT_STRUCTURED_REPLY,
    # LIST/SET_META_CONTEXT), then DF reads, BLOCK_STATUS with REQ_ONE, CACHE.
    "structured": FLAGS + opt(8) + opt(9, meta("vol0", "base:")) +
                  opt(10, meta("vol0", "base:allocation")) + go("vol0", (3,)) +
                  req(0, 0, 65536, 4) + req(0, 8192, 4096) + req(7, 0, 1 << 20) +
                  req(7, 4096, 8192, 8) + req(5, 0, 4096) + req(0, 1 << 20, 1) + req(2),
    "meta_snap": FLAGS + opt(10, meta("vol0@snap", "base:allocation", "qemu:dirty")) + opt(8) +
                 go("vol0@snap") + req(7, 0, 4096) + req(2),
    # The qemu contexts: each BLOCK_STATUS answered with one chunk per context.
    "qemu_ctx": FLAGS + opt(8) + opt(9, meta("vol0", "qemu:")) +
                opt(10, meta("vol0", "base:allocation", "qemu:allocation-depth",
                             "qemu:dirty-bitmap:snap")) + go("vol0") +
                req(1, 0, 8, payload=b"abcdefgh") + req(7, 0, 1 << 20) + req(2),
    # Extended headers: 32-byte requests, extended reply chunks, 64-bit
    # lengths, BLOCK_STATUS_EXT, a PAYLOAD_LEN write and a context filter.
    "extended": FLAGS + opt(11) + opt(8) +
                opt(10, meta("vol0", "base:allocation", "qemu:allocation-depth")) + go("vol0") +
                ereq(1, 4096, 8, PAYLOAD_LEN, b"12345678") + ereq(0, 0, 8192) +
                ereq(7, 0, 1 << 40) +
                ereq(7, 0, 12, PAYLOAD_LEN, struct.pack(">QI", 1 << 20, 3)) +
                ereq(4, 0, 1 << 36) + ereq(3) + ereq(2),
    "extended_compact": FLAGS + opt(11) + go("vol0") + req(0, 0, 512) + ereq(2),
}
# Byte 0 bits 1-2 pick the TLS mode: 0 off, 1 allowed, 2 required.
tls_seeds = {
    "starttls_allow": (0x02, FLAGS + opt(5) + opt(3) + go("vol0") + req(0, 0, 512) + req(2)),
    "starttls_require": (0x04, FLAGS + opt(3) + go("vol0") + opt(5) + opt(8) + go("vol0") + req(2)),
    "require_export_name": (0x04, FLAGS + opt(1, b"vol0")),
    "starttls_off": (0x00, FLAGS + opt(5) + opt(2)),
}
os.makedirs(sys.argv[1], exist_ok=True)
for name, body in seeds.items():
    for seed in (0, 0x59):
        with open(os.path.join(sys.argv[1], "seed-%s-%d" % (name, seed)), "wb") as f:
            f.write(bytes([seed]) + body)
for name, (seed, body) in tls_seeds.items():
    with open(os.path.join(sys.argv[1], "seed-%s" % name), "wb") as f:
        f.write(bytes([seed]) + body)
