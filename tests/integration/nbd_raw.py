#!/usr/bin/python3
"""nbd_raw.py — a raw-socket NBD client for hostile-input tests.

Usage: nbd_raw.py PORT SCENARIO...   (env COWBD_PID for the memory check)

Each scenario speaks the NBD wire protocol by hand, breaks it in one way,
and checks the server's answer: the NBD error the spec names, or a hard
disconnect.  Prints "ok SCENARIO" per scenario; exits 1 on the first
unexpected answer.  Used by nbd_badinput.sh; the shell then checks that the
server still serves others and that its fd count went back to the baseline.
"""
import os
import socket
import struct
import sys
import time

NBD_MAGIC = 0x4E42444D41474943
OPT_MAGIC = 0x49484156454F5054
REP_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_GO = 1, 2, 3, 7
REP_ACK, REP_INFO = 1, 3
REP_ERR_UNSUP = 0x80000001
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE = 0, 1, 2, 3, 4, 5
CMD_BLOCK_STATUS = 7
EPERM, EINVAL, ENOSPC = 1, 22, 28

PORT = 0


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def recvn(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            raise EOFError("server closed after %d of %d bytes" % (len(buf), n))
        buf += d
    return buf


def expect_eof(s, what, timeout=5):
    """The server must hang up (possibly after sending some bytes)."""
    s.settimeout(timeout)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return
    except ConnectionResetError:
        return
    except socket.timeout:
        raise Fail("%s: server did not disconnect" % what)


def hello(flags=3):
    s = socket.create_connection(("127.0.0.1", PORT))
    s.settimeout(10)
    magic, opt, hflags = struct.unpack(">QQH", recvn(s, 18))
    check(magic == NBD_MAGIC and opt == OPT_MAGIC, "greeting magic")
    check(hflags & 1, "FIXED_NEWSTYLE advertised")
    s.sendall(struct.pack(">I", flags))
    return s


def send_opt(s, opt, data=b""):
    s.sendall(struct.pack(">QII", OPT_MAGIC, opt, len(data)) + data)


def read_rep(s):
    magic, opt, rtype, length = struct.unpack(">QIII", recvn(s, 20))
    check(magic == REP_MAGIC, "option reply magic")
    return opt, rtype, recvn(s, length)


def go(name="vol0"):
    s = hello()
    n = name.encode()
    send_opt(s, OPT_GO, struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
    size = None
    while True:
        opt, rtype, data = read_rep(s)
        check(opt == OPT_GO, "reply to GO")
        if rtype == REP_INFO and struct.unpack(">H", data[:2])[0] == 0:
            size, flags = struct.unpack(">QH", data[2:12])
        elif rtype == REP_ACK:
            break
        else:
            check(rtype == REP_INFO, "GO failed: reply type %#x" % rtype)
    check(size is not None, "NBD_INFO_EXPORT sent")
    return s, size


def send_req(s, cmd, off, length, flags=0, handle=0x1122334455667788, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, handle, off, length) + payload)


def read_reply(s, datalen=0):
    magic, err, handle = struct.unpack(">IIQ", recvn(s, 16))
    check(magic == SIMPLE_MAGIC, "simple reply magic")
    data = recvn(s, datalen) if err == 0 and datalen else b""
    return err, handle, data


def roundtrip(s, cmd, off, length, flags=0, payload=b"", datalen=0):
    send_req(s, cmd, off, length, flags, 0xABCD, payload)
    err, handle, data = read_reply(s, datalen)
    check(handle == 0xABCD, "handle echoed")
    return err, data


# ---- scenarios ---------------------------------------------------------

def bad_client_flags():
    s = hello(flags=0x80)
    expect_eof(s, "unknown client flag")


def bad_option_magic():
    s = hello()
    s.sendall(struct.pack(">QII", OPT_MAGIC ^ 1, OPT_LIST, 0))
    expect_eof(s, "bad option magic")


def option_huge():
    s = hello()
    s.sendall(struct.pack(">QII", OPT_MAGIC, OPT_GO, 1 << 20) + b"x" * 1000)
    expect_eof(s, "option longer than the cap")


def option_unknown():
    s = hello()
    send_opt(s, 0x1234, b"abc")
    opt, rtype, _ = read_rep(s)
    check(opt == 0x1234 and rtype == REP_ERR_UNSUP, "unknown option -> ERR_UNSUP")
    send_opt(s, OPT_ABORT)
    opt, rtype, _ = read_rep(s)
    check(opt == OPT_ABORT and rtype == REP_ACK, "ABORT acked")
    expect_eof(s, "after ABORT")


def export_name_unknown():
    s = hello()
    send_opt(s, OPT_EXPORT_NAME, b"no-such-volume")
    expect_eof(s, "EXPORT_NAME of an unknown export")


def export_name_ok():
    for flags, pad in ((1, 124), (3, 0)):
        s = hello(flags)
        send_opt(s, OPT_EXPORT_NAME, b"vol0")
        size, tflags = struct.unpack(">QH", recvn(s, 10))
        check(tflags & 1 and size > 0, "EXPORT_NAME reply")
        check(recvn(s, pad) == b"\0" * pad if pad else True, "zero padding")
        err, data = roundtrip(s, CMD_READ, 0, 512, datalen=512)
        check(err == 0 and len(data) == 512, "read after EXPORT_NAME")
        send_req(s, CMD_DISC, 0, 0)
        expect_eof(s, "after DISC")


def truncated_option():
    s = hello()
    s.sendall(struct.pack(">QII", OPT_MAGIC, OPT_GO, 100) + b"\0\0\0\x04vol")
    s.close()


def bad_request_magic():
    s, _ = go()
    s.sendall(struct.pack(">IHHQQI", 0xDEADBEEF, 0, CMD_READ, 1, 0, 512))
    expect_eof(s, "bad request magic")


def bad_magic_after_reads():
    # Requests before a framing error are answered in full, then the
    # server hangs up: a bad header ends the stream, not what came before.
    s, _ = go()
    reqs = b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, h, 0, 256 << 10)
                    for h in range(1, 5))
    s.sendall(reqs + struct.pack(">IHHQQI", 0xDEADBEEF, 0, CMD_READ, 9, 0, 512))
    s.settimeout(10)
    for h in range(1, 5):
        err, handle, data = read_reply(s, 256 << 10)
        check(err == 0 and handle == h and len(data) == 256 << 10,
              "reply %d of 4 before the bad header in full" % h)
    expect_eof(s, "bad request magic after reads")


def truncated_header():
    s, _ = go()
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, 1, 0, 512)[:11])
    s.close()


def vanish_mid_payload():
    s, _ = go()
    send_req(s, CMD_WRITE, 0, 1 << 20, payload=b"x" * 1000)
    s.close()


def vanish_mid_reply():
    s, _ = go()
    for i in range(16):
        send_req(s, CMD_READ, 0, 32 << 20, handle=i)
    recvn(s, 100)  # the first reply has started
    s.close()


def flush_args():
    s, _ = go()
    check(roundtrip(s, CMD_FLUSH, 1, 0)[0] == EINVAL, "FLUSH with offset -> EINVAL")
    check(roundtrip(s, CMD_FLUSH, 0, 1)[0] == EINVAL, "FLUSH with length -> EINVAL")
    check(roundtrip(s, CMD_FLUSH, 0, 0)[0] == 0, "FLUSH")
    send_req(s, CMD_DISC, 0, 0)
    expect_eof(s, "after DISC")


def unknown_commands():
    s, size = go()
    # BLOCK_STATUS without a negotiated meta context, RESIZE (not
    # advertised), an unknown command
    for cmd in (CMD_BLOCK_STATUS, 8, 0x55):
        check(roundtrip(s, cmd, 0, 512)[0] == EINVAL, "command %#x -> EINVAL" % cmd)
    check(roundtrip(s, CMD_CACHE, 0, 512)[0] == 0, "CACHE")
    check(roundtrip(s, CMD_CACHE, size - 1, 2)[0] == EINVAL, "CACHE past the end -> EINVAL")
    # A rejected WRITE's payload must be drained, not parsed as requests:
    # make the payload look like a request header.
    fake = struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, 7, 0, 512) * 100
    check(roundtrip(s, CMD_WRITE, 0, len(fake), flags=0x8000, payload=fake)[0] == EINVAL,
          "WRITE with an unknown flag -> EINVAL")
    check(roundtrip(s, CMD_WRITE, size, len(fake), payload=fake)[0] == ENOSPC,
          "WRITE past the end -> ENOSPC")
    check(roundtrip(s, CMD_READ, size - 1, 2)[0] == EINVAL, "READ past the end -> EINVAL")
    check(roundtrip(s, CMD_TRIM, 2**64 - 512, 1024)[0] == EINVAL, "offset+length overflow")
    err, data = roundtrip(s, CMD_READ, 0, 512, datalen=512)
    check(err == 0 and len(data) == 512, "READ after rejected requests")


def big_write_einval():
    s, _ = go()
    n = (64 << 20) + 4096
    send_req(s, CMD_WRITE, 0, n, handle=0xABCD)
    chunk = b"\x25\x60\x95\x13" * 16384
    left = n
    while left:
        k = min(left, len(chunk))
        s.sendall(chunk[:k])
        left -= k
    err, handle, _ = read_reply(s)
    check(err == EINVAL and handle == 0xABCD, "64 MiB + 4 KiB WRITE -> EINVAL")
    err, data = roundtrip(s, CMD_READ, 0, 4096, datalen=4096)
    check(err == 0, "READ after a drained oversized payload")


def write_then_disc():
    s, _ = go()
    send_req(s, CMD_WRITE, 4096, 4096, handle=5, payload=b"d" * 4096)
    send_req(s, CMD_DISC, 0, 0)
    err, handle, _ = read_reply(s)
    check(err == 0 and handle == 5, "in-flight WRITE answered before DISC closes")
    expect_eof(s, "after DISC")


def snapshot_eperm():
    s, _ = go("vol0@snap")
    check(roundtrip(s, CMD_WRITE, 0, 512, payload=b"s" * 512)[0] == EPERM, "WRITE -> EPERM")
    check(roundtrip(s, CMD_TRIM, 0, 512)[0] == EPERM, "TRIM -> EPERM")
    err, _ = roundtrip(s, CMD_READ, 0, 512, datalen=512)
    check(err == 0, "snapshot READ")


def send_while_taken(s, data, seconds):
    """Send DATA on S without blocking for SECONDS at most, as far as the
    server takes it; returns the number of bytes sent (less than all when
    the server stopped reading)."""
    s.setblocking(False)
    sent = 0
    deadline = time.time() + seconds
    while sent < len(data) and time.time() < deadline:
        try:
            sent += s.send(data[sent:])
        except BlockingIOError:
            time.sleep(0.02)
    return sent


def rss_kib(pid):
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def never_read():
    """Pipeline far more READ data than the per-connection cap and never read
    a reply: the server must stop reading, so its memory stays bounded."""
    pid = os.environ.get("COWBD_PID")
    before = rss_kib(pid) if pid else 0
    s, _ = go()
    # 1M requests (28 MB of headers, 1 TiB of replies): more than socket
    # buffers can hold, so the sender blocks unless the server keeps reading.
    hdrs = struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, 1, 0, 1 << 20) * (1 << 20)
    sent = send_while_taken(s, hdrs, 3)
    time.sleep(1)
    after = rss_kib(pid) if pid else 0
    s.close()
    check(sent < len(hdrs), "server kept reading 1 TiB of READs without replies")
    if pid:
        check(after - before < 200 * 1024, "RSS grew by %d KiB" % (after - before))


# ---- structured replies and meta contexts ------------------------------

STRUCT_MAGIC = 0x668E33EF
OPT_STRUCTURED_REPLY, OPT_LIST_META, OPT_SET_META = 8, 9, 10
REP_META_CONTEXT = 4
REP_ERR_INVALID, REP_ERR_UNKNOWN = 0x80000003, 0x80000006
T_NONE, T_DATA, T_HOLE, T_BS, T_ERROR, T_ERROR_OFFSET = 0, 1, 2, 5, 32769, 32770
FLAG_DONE = 1
FLAG_SEND_DF = 1 << 7
CMD_FLAG_DF, CMD_FLAG_REQ_ONE = 4, 8


def read_any_reply(s):
    """One simple reply header, or one structured chunk: returns
    ("simple", err, handle, b"") or ("chunk", flags, type, handle, payload)."""
    magic = struct.unpack(">I", recvn(s, 4))[0]
    if magic == SIMPLE_MAGIC:
        err, handle = struct.unpack(">IQ", recvn(s, 12))
        return ("simple", err, handle, b"")
    check(magic == STRUCT_MAGIC, "reply magic %#x" % magic)
    flags, rtype, handle, length = struct.unpack(">HHQI", recvn(s, 16))
    return ("chunk", flags, rtype, handle, recvn(s, length))


def go_flags(s, name=b"vol0"):
    send_opt(s, OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    tflags = size = None
    while True:
        opt, rtype, data = read_rep(s)
        if rtype == REP_INFO and struct.unpack(">H", data[:2])[0] == 0:
            size, tflags = struct.unpack(">QH", data[2:12])
        elif rtype == REP_ACK:
            return tflags, size
        else:
            check(rtype == REP_INFO, "GO failed: %#x" % rtype)


def meta_opt(opt, name, queries):
    d = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    for q in queries:
        d += struct.pack(">I", len(q)) + q
    return opt, d


def meta_contexts(s, opt, name, queries):
    """Send a LIST/SET_META_CONTEXT; [(id, name)] on ACK, else the error type."""
    send_opt(s, *meta_opt(opt, name, queries))
    out = []
    while True:
        o, rtype, data = read_rep(s)
        check(o == opt, "reply to the option")
        if rtype == REP_ACK:
            return out
        if rtype != REP_META_CONTEXT:
            return rtype
        out.append((struct.unpack(">I", data[:4])[0], data[4:]))


def status_einval_then_disc(s, handle, what):
    """BLOCK_STATUS with no context selected is EINVAL (a simple reply or an
    error chunk); then DISC."""
    send_req(s, CMD_BLOCK_STATUS, 0, 4096, handle=handle)
    r = read_any_reply(s)
    err = r[1] if r[0] == "simple" else struct.unpack(">I", r[4][:4])[0]
    check(err == EINVAL, what)
    send_req(s, CMD_DISC, 0, 0)
    expect_eof(s, "after DISC")


def structured_raw():
    s = hello()
    send_opt(s, OPT_STRUCTURED_REPLY, b"x")
    check(read_rep(s)[1] == REP_ERR_INVALID, "STRUCTURED_REPLY with data -> ERR_INVALID")
    send_opt(s, OPT_STRUCTURED_REPLY)
    check(read_rep(s)[1] == REP_ACK, "STRUCTURED_REPLY acked")
    tflags, size = go_flags(s)
    check(tflags & FLAG_SEND_DF, "SEND_DF advertised after structured replies")
    send_req(s, CMD_READ, size - 1, 2, handle=1)
    r = read_any_reply(s)
    check(r[0] == "chunk" and r[1] == FLAG_DONE and r[2] == T_ERROR and r[3] == 1,
          "READ past end -> ERROR chunk with DONE: %r" % (r[:4],))
    check(struct.unpack(">IH", r[4][:6]) == (EINVAL, 0), "EINVAL, empty message")
    send_req(s, CMD_READ, 0, 512, flags=CMD_FLAG_REQ_ONE, handle=2)
    r = read_any_reply(s)
    check(r[0] == "chunk" and r[2] == T_ERROR and struct.unpack(">I", r[4][:4])[0] == EINVAL,
          "READ with REQ_ONE -> EINVAL chunk")
    send_req(s, CMD_READ, 0, 0, handle=3)
    r = read_any_reply(s)
    check(r[0] == "chunk" and r[1] == FLAG_DONE and r[2] == T_NONE and r[4] == b"",
          "zero-length READ -> NONE chunk")
    base = 1 << 20
    send_req(s, 6, base, 3 * 4096, handle=4)  # WRITE_ZEROES: a known layout
    check(read_any_reply(s)[:3] == ("simple", 0, 4), "WRITE_ZEROES -> simple reply")
    send_req(s, CMD_WRITE, base + 4096, 4096, handle=4, payload=b"q" * 4096)
    check(read_any_reply(s)[:3] == ("simple", 0, 4), "WRITE -> simple reply")
    send_req(s, CMD_READ, base, 3 * 4096, handle=5)
    got = []
    while True:
        r = read_any_reply(s)
        check(r[0] == "chunk" and r[3] == 5, "READ chunks")
        off = struct.unpack(">Q", r[4][:8])[0]
        if r[2] == T_HOLE:
            got.append(("hole", off, struct.unpack(">I", r[4][8:12])[0]))
        else:
            check(r[2] == T_DATA, "data chunk")
            got.append(("data", off, r[4][8:]))
        if r[1] & FLAG_DONE:
            break
    check(got == [("hole", base, 4096), ("data", base + 4096, b"q" * 4096),
                  ("hole", base + 8192, 4096)],
          "hole/data/hole: %r" % [(g[0], g[1]) for g in got])
    send_req(s, CMD_READ, base, 3 * 4096, flags=CMD_FLAG_DF, handle=6)
    r = read_any_reply(s)
    check(r[0] == "chunk" and r[1] == FLAG_DONE and r[2] == T_DATA and len(r[4]) == 8 + 3 * 4096,
          "DF READ -> one data chunk")
    status_einval_then_disc(s, 7, "BLOCK_STATUS without a meta context -> EINVAL")


def meta_raw():
    s = hello()
    send_opt(s, *meta_opt(OPT_LIST_META, b"vol0", []))
    check(read_rep(s)[1] == REP_ERR_INVALID, "LIST_META_CONTEXT before STRUCTURED_REPLY")
    send_opt(s, OPT_STRUCTURED_REPLY)
    check(read_rep(s)[1] == REP_ACK, "STRUCTURED_REPLY")

    def contexts(opt, name, queries):
        return meta_contexts(s, opt, name, queries)

    got = contexts(OPT_LIST_META, b"vol0", [])
    check(got[:2] == [(0, b"base:allocation"), (0, b"qemu:allocation-depth")] and
          all(i == 0 and n.startswith(b"qemu:dirty-bitmap:") for i, n in got[2:]),
          "LIST all: %r" % got)
    check(contexts(OPT_LIST_META, b"vol0", [b"base:"]) == [(0, b"base:allocation")], "LIST base:")
    check(contexts(OPT_LIST_META, b"vol0", [b"qemu:dirty-bitmap:a"]) == [], "LIST other namespace")
    check(contexts(OPT_LIST_META, b"nosuch", []) == REP_ERR_UNKNOWN, "LIST unknown export")
    check(contexts(OPT_SET_META, b"vol0", []) == [], "SET nothing")
    # option data that lies about its query length
    send_opt(s, OPT_SET_META, struct.pack(">I", 4) + b"vol0" + struct.pack(">II", 1, 999) + b"ab")
    check(read_rep(s)[1] == REP_ERR_INVALID, "SET with a bad query length")
    got = contexts(OPT_SET_META, b"vol0", [b"base:allocation", b"x-foo:bar"])
    check(len(got) == 1 and got[0][1] == b"base:allocation" and got[0][0] != 0, "SET: %r" % got)
    ctx = got[0][0]
    _, size = go_flags(s)
    send_req(s, CMD_BLOCK_STATUS, 0, size, handle=9)
    r = read_any_reply(s)
    check(r[0] == "chunk" and r[1] == FLAG_DONE and r[2] == T_BS and r[3] == 9, "BLOCK_STATUS chunk")
    check(struct.unpack(">I", r[4][:4])[0] == ctx, "context id")
    descs = [struct.unpack(">II", r[4][i:i + 8]) for i in range(4, len(r[4]), 8)]
    check(descs and sum(n for n, _ in descs) <= size and all(n for n, _ in descs), "extents")
    send_req(s, CMD_BLOCK_STATUS, 0, 0, handle=10)
    r = read_any_reply(s)
    check(r[0] == "chunk" and r[2] == T_ERROR and struct.unpack(">I", r[4][:4])[0] == EINVAL,
          "BLOCK_STATUS length 0 -> EINVAL")
    send_req(s, CMD_BLOCK_STATUS, size - 4096, 8192, flags=CMD_FLAG_REQ_ONE, handle=11)
    r = read_any_reply(s)
    check(r[0] == "chunk" and r[2] == T_ERROR, "BLOCK_STATUS past end -> error")
    send_req(s, CMD_BLOCK_STATUS, 0, size, flags=CMD_FLAG_REQ_ONE, handle=12)
    r = read_any_reply(s)
    check(r[2] == T_BS and len(r[4]) == 12, "REQ_ONE -> one extent")
    send_req(s, CMD_DISC, 0, 0)
    expect_eof(s, "after DISC")


def qemu_meta_raw():
    """qemu:dirty-bitmap:SNAP and qemu:allocation-depth by hand.  Needs vol0
    with snapshots s1 and s2 (in that order) and vol1 with snapshot x."""
    s = hello()
    send_opt(s, OPT_STRUCTURED_REPLY)
    check(read_rep(s)[1] == REP_ACK, "STRUCTURED_REPLY")
    L, S = OPT_LIST_META, OPT_SET_META
    dirty = [b"qemu:dirty-bitmap:s1", b"qemu:dirty-bitmap:s2"]
    got = meta_contexts(s, L, b"vol0", [])
    check(got == [(0, c) for c in [b"base:allocation", b"qemu:allocation-depth"] + dirty],
          "LIST all: %r" % got)
    got = meta_contexts(s, L, b"vol0@s2", [b"qemu:"])
    check(got == [(0, c) for c in [b"qemu:allocation-depth"] + dirty], "LIST qemu:: %r" % got)
    got = meta_contexts(s, L, b"vol0@s1", [b"qemu:dirty-bitmap:", b"qemu:dirty-bitmap:s1"])
    check(got == [(0, c) for c in dirty], "LIST qemu:dirty-bitmap:: %r" % got)
    got = meta_contexts(s, L, b"vol0", [b"qemu:dirty-bitmap:s2", b"qemu:dirty-bitmap:s2"])
    check(got == [(0, dirty[1])], "LIST by name, once: %r" % got)
    # names that are not vol0's snapshots are ignored, not errors
    for bad in (b"qemu:dirty-bitmap:x", b"qemu:dirty-bitmap:vol1@x", b"qemu:dirty-bitmap:nope",
                b"qemu:dirty-bitmap:" + b"y" * 200, b"qemu:nonsense", b"qemu:dirty-bitmap:s1x"):
        check(meta_contexts(s, L, b"vol0", [bad]) == [], "LIST %r ignored" % bad)
        check(meta_contexts(s, S, b"vol0", [bad]) == [], "SET %r ignored" % bad)
    check(meta_contexts(s, S, b"vol0", [b"qemu:", b"qemu:dirty-bitmap:"]) == [],
          "SET wildcards select nothing")
    check(meta_contexts(s, L, b"vol9", [b"qemu:"]) == REP_ERR_UNKNOWN, "LIST unknown export")
    got = meta_contexts(s, S, b"vol0@s2", [b"qemu:dirty-bitmap:vol1@x", b"qemu:dirty-bitmap:s1",
                                           b"qemu:dirty-bitmap:s2", b"qemu:allocation-depth",
                                           b"base:allocation"])
    names = [n for _, n in got]
    check(sorted(names) == [b"base:allocation", b"qemu:allocation-depth", dirty[0]],
          "SET: one bitmap, the depth, base: %r" % got)
    ids = {n: i for i, n in got}
    check(len(set(ids.values())) == 3 and 0 not in ids.values(), "distinct ids: %r" % got)
    _, size = go_flags(s, b"vol0@s2")
    for flags, handle in ((0, 21), (CMD_FLAG_REQ_ONE, 22)):
        send_req(s, CMD_BLOCK_STATUS, 0, size, flags=flags, handle=handle)
        seen = {}
        while True:
            r = read_any_reply(s)
            check(r[0] == "chunk" and r[2] == T_BS and r[3] == handle, "BLOCK_STATUS chunk: %r" % (r[:4],))
            cid = struct.unpack(">I", r[4][:4])[0]
            descs = [struct.unpack(">II", r[4][i:i + 8]) for i in range(4, len(r[4]), 8)]
            check(descs and all(n for n, _ in descs) and sum(n for n, _ in descs) <= size,
                  "extents of context %d" % cid)
            check(not flags or len(descs) == 1, "REQ_ONE: one extent per context")
            check(cid not in seen, "one chunk per context")
            seen[cid] = descs
            if r[1] & FLAG_DONE:
                break
        check(sorted(seen) == sorted(ids.values()), "a chunk for every context: %r" % seen)
        check(all(st in (0, 1) for _, st in seen[ids[dirty[0]]]), "dirty flags are bit 0")
    send_req(s, CMD_DISC, 0, 0)
    expect_eof(s, "after DISC")
    # a SET whose every query is unknown leaves nothing: BLOCK_STATUS is EINVAL
    s = hello()
    send_opt(s, OPT_STRUCTURED_REPLY)
    check(read_rep(s)[1] == REP_ACK, "STRUCTURED_REPLY")
    check(meta_contexts(s, S, b"vol0", [b"qemu:dirty-bitmap:x"]) == [], "SET of vol1's snapshot")
    go_flags(s)
    status_einval_then_disc(s, 23, "no context selected -> EINVAL")


def vanish_mid_chunks():
    """Structured replies: the client hangs up in the middle of a chunked
    reply (DF forces 32 MiB data chunks; without DF, hole chunks)."""
    s = hello()
    send_opt(s, OPT_STRUCTURED_REPLY)
    check(read_rep(s)[1] == REP_ACK, "STRUCTURED_REPLY")
    go_flags(s)
    for i in range(8):
        send_req(s, CMD_READ, 0, 32 << 20, flags=CMD_FLAG_DF if i % 2 else 0, handle=i)
    recvn(s, 100)
    s.close()


# ---- extended headers (NBD_OPT_EXTENDED_HEADERS) -------------------------

XREQ_MAGIC, XREP_MAGIC = 0x21E41C71, 0x6E8A278C
OPT_EXTENDED_HEADERS = 11
REP_ERR_EXT_HEADER_REQD = 0x8000000A
T_BS_EXT = 6
FLAG_BLOCK_STATUS_PAYLOAD = 1 << 12
CMD_FLAG_PAYLOAD_LEN = 1 << 5
CMD_WRITE_ZEROES = 6
INFO_BLOCK_SIZE = 3
MAX_PAYLOAD = 64 << 20
TIB = 1 << 40


def send_xreq(s, cmd, off, length, flags=0, handle=0x1122334455667788, payload=b""):
    s.sendall(struct.pack(">IHHQQQ", XREQ_MAGIC, flags, cmd, handle, off, length) + payload)


def read_xchunk(s):
    """One extended reply chunk: (flags, type, handle, offset, payload)."""
    magic, flags, rtype, handle, off, length = struct.unpack(">IHHQQQ", recvn(s, 32))
    check(magic == XREP_MAGIC, "extended reply magic %#x" % magic)
    check(length <= MAX_PAYLOAD + 8, "reply length %d" % length)
    return flags, rtype, handle, off, recvn(s, length)


def xerr(payload):
    return struct.unpack(">I", payload[:4])[0]


def xroundtrip(s, cmd, off, length, flags=0, payload=b"", handle=0xABCD):
    """A request whose reply is one chunk: (type, payload); checks DONE, the
    handle and the echoed offset."""
    send_xreq(s, cmd, off, length, flags, handle, payload)
    fl, rtype, h, o, data = read_xchunk(s)
    check(h == handle and o == off and fl & FLAG_DONE, "one chunk, DONE, handle and offset echoed")
    return rtype, data


def xhello(name=b"vol0", meta=()):
    """Extended headers (STRUCTURED_REPLY first: the spec allows it and the
    later option takes precedence), contexts meta selected on name, GO with
    NBD_INFO_BLOCK_SIZE.  Returns (socket, size, tflags, max payload, ids)."""
    s = hello()
    send_opt(s, OPT_EXTENDED_HEADERS, b"x")
    check(read_rep(s)[1] == REP_ERR_INVALID, "EXTENDED_HEADERS with data -> ERR_INVALID")
    send_opt(s, OPT_STRUCTURED_REPLY)
    check(read_rep(s)[1] == REP_ACK, "STRUCTURED_REPLY")
    send_opt(s, OPT_EXTENDED_HEADERS)
    check(read_rep(s)[1] == REP_ACK, "EXTENDED_HEADERS acked")
    send_opt(s, OPT_STRUCTURED_REPLY)
    check(read_rep(s)[1] == REP_ERR_EXT_HEADER_REQD, "STRUCTURED_REPLY after -> EXT_HEADER_REQD")
    ids = {}
    if meta:
        got = meta_contexts(s, OPT_SET_META, name, list(meta))
        check(isinstance(got, list) and len(got) == len(meta), "SET: %r" % (got,))
        ids = {n: i for i, n in got}
    send_opt(s, OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">HH", 1, INFO_BLOCK_SIZE))
    size = tflags = maxp = None
    while True:
        opt, rtype, data = read_rep(s)
        if rtype == REP_ACK:
            break
        check(rtype == REP_INFO, "GO failed: %#x" % rtype)
        info = struct.unpack(">H", data[:2])[0]
        if info == 0:
            size, tflags = struct.unpack(">QH", data[2:12])
        elif info == INFO_BLOCK_SIZE:
            maxp = struct.unpack(">III", data[2:14])[2]
    return s, size, tflags, maxp, ids


def ext_requests():
    """Every command and reply form with extended headers on vol0."""
    s, size, tflags, maxp, _ = xhello()
    check(maxp == MAX_PAYLOAD, "NBD_INFO_BLOCK_SIZE maximum %r" % maxp)
    check(tflags & FLAG_SEND_DF, "SEND_DF")
    check(not tflags & FLAG_BLOCK_STATUS_PAYLOAD, "no BLOCK_STATUS_PAYLOAD without contexts")
    base, PL = 2 << 20, CMD_FLAG_PAYLOAD_LEN
    check(xroundtrip(s, CMD_WRITE_ZEROES, base, 3 * 4096) == (T_NONE, b""), "WRITE_ZEROES -> NONE")
    check(xroundtrip(s, CMD_WRITE, base + 4096, 4096, PL, b"x" * 4096) == (T_NONE, b""),
          "WRITE (PAYLOAD_LEN) -> NONE chunk, never a simple reply")
    # READ: hole, data, hole chunks; the header offset is the request's
    send_xreq(s, CMD_READ, base, 3 * 4096, handle=5)
    got = []
    while True:
        fl, rtype, h, o, data = read_xchunk(s)
        check(h == 5 and o == base, "READ chunk header")
        off = struct.unpack(">Q", data[:8])[0]
        got.append((rtype, off, struct.unpack(">I", data[8:12])[0] if rtype == T_HOLE else data[8:]))
        if fl & FLAG_DONE:
            break
    check(got == [(T_HOLE, base, 4096), (T_DATA, base + 4096, b"x" * 4096),
                  (T_HOLE, base + 8192, 4096)], "hole/data/hole: %r" % [g[:2] for g in got])
    rtype, data = xroundtrip(s, CMD_READ, base, 3 * 4096, CMD_FLAG_DF)
    check(rtype == T_DATA and data[8:] == bytes(4096) + b"x" * 4096 + bytes(4096), "DF READ")
    rtype, data = xroundtrip(s, CMD_READ, size - 1, 2)
    check(rtype == T_ERROR and xerr(data) == EINVAL, "READ past the end -> ERROR chunk")
    rtype, data = xroundtrip(s, CMD_READ, 0, MAX_PAYLOAD + 1)
    check(rtype == T_ERROR and xerr(data) == EINVAL, "READ of 64 MiB + 1 -> EINVAL")
    check(xroundtrip(s, CMD_FLUSH, 0, 0) == (T_NONE, b""), "FLUSH -> NONE")
    check(xroundtrip(s, CMD_TRIM, base + 4096, 4096) == (T_NONE, b""), "TRIM -> NONE")
    check(xroundtrip(s, CMD_CACHE, 0, size) == (T_NONE, b""), "CACHE of the whole export")
    # the spec says a WRITE MUST set PAYLOAD_LEN; qemu's client does not:
    # its length is the payload all the same (as qemu's server reads it)
    check(xroundtrip(s, CMD_WRITE, base + 8192, 4096, 0, b"y" * 4096) == (T_NONE, b""),
          "WRITE without PAYLOAD_LEN (qemu) -> its payload is taken")
    rtype, data = xroundtrip(s, CMD_READ, base + 8192, 4096)
    check(rtype == T_DATA and data[8:] == b"y" * 4096, "... and written")
    # a payload where none belongs: consumed (it looks like requests), EINVAL
    fake = struct.pack(">IHHQQQ", XREQ_MAGIC, 0, CMD_READ, 7, 0, 512) * 100
    for cmd in (CMD_READ, CMD_TRIM, CMD_FLUSH, 0x55):
        rtype, data = xroundtrip(s, cmd, 0, len(fake), PL, fake)
        check(rtype == T_ERROR and xerr(data) == EINVAL, "cmd %d with a payload -> EINVAL" % cmd)
    rtype, data = xroundtrip(s, CMD_WRITE, size, len(fake), PL, fake)
    check(rtype == T_ERROR and xerr(data) == ENOSPC, "WRITE past the end -> ENOSPC, drained")
    rtype, data = xroundtrip(s, CMD_READ, base + 4096, 4, CMD_FLAG_DF)
    check(rtype == T_DATA and data[8:] == bytes(4), "READ after drained payloads (trimmed)")
    send_xreq(s, CMD_DISC, 0, 0)
    expect_eof(s, "after DISC")


def ext_refusals():
    """What the spec forbids after extended headers: NBD_OPT_EXPORT_NAME (a
    hard disconnect: it cannot carry an error), a compact request header (a
    framing error), a payload over the maximum (hard disconnect); and an
    extended header without the negotiation."""
    s = hello()
    send_opt(s, OPT_EXTENDED_HEADERS)
    check(read_rep(s)[1] == REP_ACK, "EXTENDED_HEADERS")
    send_opt(s, OPT_EXPORT_NAME, b"vol0")
    expect_eof(s, "EXPORT_NAME after EXTENDED_HEADERS")
    s = xhello()[0]
    send_req(s, CMD_READ, 0, 512)
    expect_eof(s, "a compact header after EXTENDED_HEADERS")
    s = xhello()[0]
    send_xreq(s, CMD_WRITE, 0, MAX_PAYLOAD + 1, CMD_FLAG_PAYLOAD_LEN, payload=b"z" * 4096)
    expect_eof(s, "a WRITE payload of 64 MiB + 1")
    s, _ = go()
    send_xreq(s, CMD_READ, 0, 512)
    expect_eof(s, "an extended header without EXTENDED_HEADERS")


def bs_chunks(s, handle):
    """The BLOCK_STATUS_EXT chunks of one reply: {id: [(len, status)]}, or the
    NBD error of an error chunk."""
    seen = {}
    while True:
        fl, rtype, h, o, data = read_xchunk(s)
        check(h == handle, "BLOCK_STATUS handle")
        if rtype == T_ERROR:
            check(fl & FLAG_DONE, "error chunk with DONE")
            return xerr(data)
        check(rtype == T_BS_EXT, "BLOCK_STATUS_EXT, never 32-bit BLOCK_STATUS: %d" % rtype)
        cid, n = struct.unpack(">II", data[:8])
        check(len(data) == 8 + 16 * n and n > 0, "descriptor count %d" % n)
        descs = [struct.unpack(">QQ", data[8 + 16 * i:24 + 16 * i]) for i in range(n)]
        check(all(ln for ln, _ in descs) and cid not in seen, "extents of context %d" % cid)
        seen[cid] = descs
        if fl & FLAG_DONE:
            return seen


def ext_block_status():
    """base:allocation, qemu:allocation-depth and qemu:dirty-bitmap:s1 on
    big, a 1 TiB thin volume (nbd_exthdr.sh: 4 KiB written at 0 and at
    512 GiB before snapshot s1, 4 KiB at 768 GiB after): the whole volume in
    one reply, 64-bit extents, the payload filter."""
    A, D, B = b"base:allocation", b"qemu:allocation-depth", b"qemu:dirty-bitmap:s1"
    s, size, tflags, _, ids = xhello(b"big", (A, D, B))
    check(size == TIB, "big is 1 TiB")
    check(tflags & FLAG_BLOCK_STATUS_PAYLOAD, "BLOCK_STATUS_PAYLOAD advertised")
    G = 1 << 30
    send_xreq(s, CMD_BLOCK_STATUS, 0, TIB, handle=1)
    seen = bs_chunks(s, 1)
    check(isinstance(seen, dict) and sorted(seen) == sorted(ids.values()), "one chunk per context")
    for name, want in ((A, [(4096, 0), (512 * G - 4096, 3), (4096, 0), (256 * G - 4096, 3),
                            (4096, 0), (256 * G - 4096, 3)]),
                       (D, [(4096, 1), (512 * G - 4096, 0), (4096, 1), (256 * G - 4096, 0),
                            (4096, 1), (256 * G - 4096, 0)]),
                       (B, [(768 * G, 0), (4096, 1), (256 * G - 4096, 0)])):
        check(seen[ids[name]] == want, "%s over 1 TiB in one reply: %r" % (name, seen[ids[name]]))
    send_xreq(s, CMD_BLOCK_STATUS, 4096, TIB - 4096, CMD_FLAG_REQ_ONE, handle=2)
    seen = bs_chunks(s, 2)
    check(all(len(d) == 1 for d in seen.values()), "REQ_ONE: one extent each")
    check(seen[ids[A]] == [(512 * G - 4096, 3)], "a 512 GiB hole in one extent: %r" % seen[ids[A]])
    PL = CMD_FLAG_PAYLOAD_LEN

    def filtered(off, length, want, handle):
        p = struct.pack(">Q", length) + b"".join(struct.pack(">I", ids[n]) for n in want)
        send_xreq(s, CMD_BLOCK_STATUS, off, len(p), PL, handle, p)
        return bs_chunks(s, handle)

    seen = filtered(0, TIB, [D], 3)
    check(list(seen) == [ids[D]] and len(seen[ids[D]]) == 6, "payload: the depth only: %r" % seen)
    seen = filtered(700 * G, 324 * G, [B, A], 4)
    check(sorted(seen) == sorted([ids[A], ids[B]]) and seen[ids[B]][1] == (4096, 1),
          "payload: the bitmap and the allocation: %r" % seen)
    for bad, what in ((struct.pack(">QII", 4096, ids[A], ids[A]), "an id twice"),
                      (struct.pack(">QI", 4096, 99), "an unknown id"),
                      (struct.pack(">Q", 4096), "no id"),
                      (struct.pack(">QI", TIB + 1, ids[A]), "a range past the end"),
                      (b"\xff" * 4096, "4 KiB of payload")):
        send_xreq(s, CMD_BLOCK_STATUS, 0, len(bad), PL, 9, bad)
        check(bs_chunks(s, 9) == EINVAL, "payload with %s -> EINVAL" % what)
    send_xreq(s, CMD_BLOCK_STATUS, 0, TIB, handle=10)  # still in step
    check(isinstance(bs_chunks(s, 10), dict), "BLOCK_STATUS after refused payloads")
    send_xreq(s, CMD_DISC, 0, 0)
    expect_eof(s, "after DISC")


def ext_big_io():
    """64 MiB WRITE and READ round trips in both header styles; 64 MiB + 1
    refused (compact: EINVAL once the payload is drained)."""
    blob = os.urandom(MAX_PAYLOAD)
    s = xhello()[0]
    check(xroundtrip(s, CMD_WRITE, 4096, MAX_PAYLOAD, CMD_FLAG_PAYLOAD_LEN, blob) == (T_NONE, b""),
          "64 MiB extended WRITE")
    rtype, data = xroundtrip(s, CMD_READ, 4096, MAX_PAYLOAD, CMD_FLAG_DF)
    check(rtype == T_DATA and data[8:] == blob, "64 MiB extended READ (DF: one chunk)")
    send_xreq(s, CMD_DISC, 0, 0)
    expect_eof(s, "after DISC")
    s, _ = go()
    check(roundtrip(s, CMD_WRITE, 0, MAX_PAYLOAD, payload=blob[::-1])[0] == 0, "64 MiB WRITE")
    err, data = roundtrip(s, CMD_READ, 0, MAX_PAYLOAD, datalen=MAX_PAYLOAD)
    check(err == 0 and data == blob[::-1], "64 MiB READ")
    check(roundtrip(s, CMD_READ, 0, MAX_PAYLOAD + 1)[0] == EINVAL, "READ of 64 MiB + 1 -> EINVAL")

SCENARIOS = {f.__name__: f for f in (
    bad_client_flags, bad_option_magic, option_huge, option_unknown, export_name_unknown,
    export_name_ok, truncated_option, bad_request_magic, bad_magic_after_reads,
    truncated_header, vanish_mid_payload, vanish_mid_reply, flush_args, unknown_commands, big_write_einval,
    write_then_disc, snapshot_eperm, never_read, structured_raw, meta_raw,
    qemu_meta_raw, vanish_mid_chunks, ext_requests, ext_refusals, ext_block_status,
    ext_big_io)}


def main():
    global PORT
    PORT = int(sys.argv[1])
    for name in sys.argv[2:]:
        try:
            SCENARIOS[name]()
        except (Fail, EOFError, OSError) as e:
            print("FAILED %s: %s" % (name, e))
            sys.exit(1)
        print("ok %s" % name)


if __name__ == "__main__":
    main()
