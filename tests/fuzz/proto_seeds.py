#!/usr/bin/env python3
# proto_seeds.py — write starting inputs for fuzz_proto into a directory:
# whole client streams (byte 0 = chunking seed, then client flags, options,
# requests) covering each option and command once, so the fuzzer starts in
# transmission rather than having to discover IHAVEOPT by itself.
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

def req(cmd, off=0, length=0, flags=0, handle=1, payload=b""):
    return struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, handle, off, length) + payload

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
}
os.makedirs(sys.argv[1], exist_ok=True)
for i, (name, body) in enumerate(seeds.items()):
    for seed in (0, 0x5b):
        with open(os.path.join(sys.argv[1], "seed-%s-%d" % (name, seed)), "wb") as f:
            f.write(bytes([seed]) + body)
