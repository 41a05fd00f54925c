#!/usr/bin/python3
"""nbd_views.py — the driver of nbd_views.sh: READs answered from a view of
the pool's page cache (conn.c conn_view, reader.c store_read_view).

Usage: nbd_views.py PORT SCENARIO...  (data refused partial-simple
       partial-structured vanish; refused and vanish need data first)
Environment: COWCTL (the cowctl binary), CTL (its control socket), MPORT
(cowbd's --metrics port), POOL (the pool file), SEED (the workload seed).

Scenarios (each exits non-zero with a message on the first wrong answer):
  data        vol0: 32 MiB of random data written with 1 MiB writes, odd-sized
              and unaligned writes, blocks of zeros, single blocks rewritten
              (reads in several physical pieces); read back with 1 MiB, 64 KiB
              and other aligned READs over structured replies, simple replies
              and 32 READs in flight: every byte as written, structured chunks
              as proto.c splits a READ (zero blocks as holes, 16 at most, DF:
              one), read_views grown by more than half of the aligned
              64 KiB..1 MiB READs and by no more than their number; each 1 MiB
              READ moves it by 0 or 1, and by 0 when the pool file shows its
              blocks in more than 8 physical runs (a reply takes 8 pieces).
  refused     vol0: READs the view path must refuse (unaligned offset or
              length, a hole, a trimmed block, under 64 KiB, over 1 MiB, 11
              physical runs): right bytes, read_views unchanged.
  partial-S   vol1: a raw client (S: simple or structured replies, a 64 KiB
              receive buffer) sends 48 1 MiB READs without reading; once the
              server has served them all (metrics: vol1's completed READs),
              another connection overwrites the range and flushes, cowctl
              compacts and checkpoints, and a new volume is filled until the
              freed segments are reused (a segment must have been freed and most of
              the old blocks must be gone from the pool file, or the check
              could not fail); then every reply must hold the data from
              before the overwrite, whole (structured: chunks tiling the
              range), each handle once; the new data reads back after.
  vanish      vol0: clients that queue 32 1 MiB READs and go (close, RST, or
              after part of the first reply; simple and structured replies):
              the next client reads the right data, the connection leaves
              `cowctl clients` within 10 s, and a checkpoint (which waits for
              every read-side section) completes.
"""
import fcntl
import hashlib
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.request

import nbd

M = 1 << 20
K64 = 64 << 10
BLK = 4096
PORT = int(sys.argv[1])
COWCTL, CTL, MPORT, POOL = os.environ["COWCTL"], os.environ["CTL"], os.environ["MPORT"], \
    os.environ["POOL"]
SEED = os.environ.get("SEED", "0")

NBD_MAGIC = 0x4E42444D41474943
OPT_MAGIC = 0x49484156454F5054
REP_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
CHUNK_MAGIC = 0x668E33EF
OPT_GO, OPT_STRUCTURED_REPLY = 7, 8
REP_ACK, REP_INFO = 1, 3
CMD_READ = 0
CHUNK_NONE, CHUNK_DATA, CHUNK_HOLE = 0, 1, 2
FLAG_DONE = 1


def die(msg):
    sys.exit("FAILED: " + msg)


def rnd(tag):
    return random.Random("%s/%s" % (SEED, tag))


def blob(tag, n):
    return rnd(tag).randbytes(n)


def ctl(*args):
    try:
        p = subprocess.run([COWCTL, "--control", CTL, "--timeout", "30"] + list(args),
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        die("cowctl %s: no answer in 60 s" % " ".join(args))
    if p.returncode:
        die("cowctl %s: exit %d: %s" % (" ".join(args), p.returncode, p.stderr.strip()))
    return p.stdout


def stats():
    return json.loads(ctl("--json", "stats"))["stats"]


def views():
    return stats()["read_views"]


def compactions():
    return stats()["compactions"]


def read_ops(vol):
    """READs of vol completed by the store (the metrics page)."""
    page = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % MPORT, timeout=10).read()
    for line in page.decode().splitlines():
        m = re.match(r'^cowbd_volume_ops_total\{(.*)\} (\S+)$', line)
        if m and 'volume="%s"' % vol in m.group(1) and 'op="read"' in m.group(1):
            return int(float(m.group(2)))
    return 0


def conn(name, structured=True):
    h = nbd.NBD()
    h.set_export_name(name)
    if not structured:
        h.set_request_structured_replies(False)
    h.connect_tcp("127.0.0.1", str(PORT))
    if h.get_structured_replies_negotiated() != structured:
        die("structured replies negotiated: %s, wanted %s"
            % (h.get_structured_replies_negotiated(), structured))
    return h


def same(got, want, what):
    if got == want:
        return
    if len(got) != len(want):
        die("%s: %d bytes, wanted %d" % (what, len(got), len(want)))
    i = next(i for i in range(len(want)) if got[i] != want[i])
    nbad = sum(1 for b in range(0, len(want), BLK) if got[b:b + BLK] != want[b:b + BLK])
    die("%s: differs from byte %d on (%d of %d 4 KiB blocks differ)"
        % (what, i, nbad, (len(want) + BLK - 1) // BLK))


# ---- raw wire ----------------------------------------------------------------

def recvn(s, n):
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = s.recv_into(view[got:], n - got)
        if not k:
            raise EOFError("server closed after %d of %d bytes" % (got, n))
        got += k
    return bytes(buf)


def raw_go(name, structured=False, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect(("127.0.0.1", PORT))
    magic, opt, hflags = struct.unpack(">QQH", recvn(s, 18))
    if magic != NBD_MAGIC or opt != OPT_MAGIC or not hflags & 1:
        die("greeting: %#x %#x %#x" % (magic, opt, hflags))
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES

    def rep():
        magic, o, rtype, length = struct.unpack(">QIII", recvn(s, 20))
        if magic != REP_MAGIC:
            die("option reply magic %#x" % magic)
        return o, rtype, recvn(s, length)

    if structured:
        s.sendall(struct.pack(">QII", OPT_MAGIC, OPT_STRUCTURED_REPLY, 0))
        o, rtype, _ = rep()
        if o != OPT_STRUCTURED_REPLY or rtype != REP_ACK:
            die("NBD_OPT_STRUCTURED_REPLY: reply %#x" % rtype)
    n = name.encode()
    s.sendall(struct.pack(">QII", OPT_MAGIC, OPT_GO, 4 + len(n) + 2) +
              struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
    while True:
        o, rtype, data = rep()
        if o != OPT_GO:
            die("reply to GO for option %d" % o)
        if rtype == REP_ACK:
            return s
        if rtype != REP_INFO:
            die("GO refused: reply %#x %r" % (rtype, data))


def read_req(handle, off, length):
    return struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, handle, off, length)


def raw_reply(s, structured, length):
    """One READ's reply: (handle, data); data reassembled from chunks (which
    must tile [0, length) exactly, the last with DONE)."""
    if not structured:
        magic, err, handle = struct.unpack(">IIQ", recvn(s, 16))
        if magic != SIMPLE_MAGIC:
            die("simple reply magic %#x" % magic)
        if err:
            die("READ %#x failed: error %d" % (handle, err))
        return handle, recvn(s, length)
    # Replies to different requests may interleave only between chunks; cowbd
    # sends each reply whole, so the chunks of one handle come together.
    buf, covered, handle = bytearray(length), [], None
    while True:
        magic, flags, ctype, h, clen = struct.unpack(">IHHQI", recvn(s, 20))
        if magic != CHUNK_MAGIC:
            die("chunk magic %#x" % magic)
        if handle is None:
            handle = h
        elif h != handle:
            die("chunk of %#x inside the reply to %#x" % (h, handle))
        body = recvn(s, clen)
        if ctype == CHUNK_DATA:
            off, = struct.unpack(">Q", body[:8])
            n = clen - 8
            pos = off - handle_off[h]
            buf[pos:pos + n] = body[8:]
            covered.append((pos, n))
        elif ctype == CHUNK_HOLE:
            off, n = struct.unpack(">QI", body)
            pos = off - handle_off[h]
            buf[pos:pos + n] = bytes(n)
            covered.append((pos, n))
        elif ctype != CHUNK_NONE:
            die("READ %#x: chunk type %d (%r)" % (h, ctype, body[:64]))
        if flags & FLAG_DONE:
            break
    at = 0
    for pos, n in sorted(covered):
        if pos != at or n == 0:
            die("READ %#x: chunks do not tile the range: %s" % (handle, sorted(covered)))
        at += n
    if at != length:
        die("READ %#x: chunks cover %d of %d bytes" % (handle, at, length))
    return handle, bytes(buf)


handle_off = {}

# ---- scenarios ---------------------------------------------------------------

DATA_MIB = 32


def data_model():
    """Write vol0's first 32 MiB; return the model of its 64 MiB."""
    r = rnd("data")
    model = bytearray(64 * M)
    h = conn("vol0")

    def put(buf, off):
        h.pwrite(bytes(buf), off)
        model[off:off + len(buf)] = buf

    for i in range(DATA_MIB):
        put(r.randbytes(M), i * M)
        if i % 4 == 3:  # odd-sized, unaligned writes break the log's runs
            n = r.choice([1, 511, 4097, 3 * BLK + 100, K64 + 3, 200000])
            put(r.randbytes(n), r.randrange(0, (i + 1) * M - n))
    # Blocks of zeros (written: data, not holes), after the odd writes so
    # that the chunks they make are those these MiBs were designed for.
    buf = bytearray(r.randbytes(M))  # MiB 3: zero blocks at both ends and inside
    for b in list(range(0, 16)) + list(range(100, 103)) + list(range(240, 256)):
        buf[b * BLK:(b + 1) * BLK] = bytes(BLK)
    put(buf, 3 * M)
    buf = bytearray(r.randbytes(M))  # MiB 4: more zero/data alternations than chunks
    for b in range(0, 64, 2):
        buf[b * BLK:(b + 1) * BLK] = bytes(BLK)
    put(buf, 4 * M)
    put(bytes(M), 9 * M)  # MiB 9: all zeros
    # Single blocks rewritten: READs of these MiBs come in several pieces
    # (MiB 12: 5 runs or more, 14: 7 or more, 13: 11 or more, over the 8
    # pieces a reply takes: refused by the view path).
    for mib, blocks in ((12, (10, 200)), (13, (1, 50, 99, 150, 254)), (14, (0, 64, 128))):
        for b in blocks:
            put(r.randbytes(BLK), mib * M + b * BLK)
    h.flush()
    h.shutdown()
    return model


def expect_chunks(data, most=16):
    """The chunks of a READ of data at a block boundary: [off, len, hole]
    (proto.c proto_read_runs: runs of zero and nonzero blocks; out of
    chunks, the rest is data)."""
    runs, pos, n = [], 0, len(data)
    while pos < n:
        blk = min(BLK, n - pos)
        k = len(runs)
        if k == most - 1 and not runs[-1][2]:
            runs[-1][1] = n - runs[-1][0]
            return [tuple(r) for r in runs]
        hole = data[pos:pos + blk] == bytes(blk)
        if k and runs[-1][2] == hole:
            runs[-1][1] += blk
        elif k == most - 1:
            runs.append([pos, n - pos, False])
            return [tuple(r) for r in runs]
        else:
            runs.append([pos, blk, hole])
        pos += blk
    return [tuple(r) for r in runs]


def chunks_of(h, length, off, flags=0):
    got = []

    def cb(sub, o, status, err):
        got.append((o, len(sub), status))
        return 0

    buf = h.pread_structured(length, off, cb, flags)
    got.sort()
    at = off
    for o, n, st in got:
        if o != at:
            die("chunks of READ(%d, %d) do not tile it: %s" % (off, length, got))
        at += n
    if at != off + length:
        die("chunks of READ(%d, %d) end at %d" % (off, length, at))
    return buf, got


def layout(model, nmib):
    """Physical runs of each MiB's blocks, found by looking the (random, so
    unique) blocks up in the pool file; None where a block is not found
    exactly once (zeros, a copy the compactor left)."""
    want = {}
    for o in range(0, nmib * M, BLK):
        want.setdefault(hashlib.blake2b(model[o:o + BLK], digest_size=16).digest(), []).append(o)
    where = {}
    with open(POOL, "rb") as f:
        blk = 0
        while True:
            chunk = f.read(16 * M)
            if not chunk:
                break
            for o in range(0, len(chunk), BLK):
                d = hashlib.blake2b(chunk[o:o + BLK], digest_size=16).digest()
                if d in want:
                    where.setdefault(d, []).append(blk + o // BLK)
            blk += len(chunk) // BLK
    out = []
    for i in range(nmib):
        phys = []
        for b in range(256):
            d = hashlib.blake2b(model[i * M + b * BLK:i * M + (b + 1) * BLK], digest_size=16).digest()
            p = where.get(d, [])
            phys.append(p[0] if len(p) == 1 and len(want[d]) == 1 else None)
        if None in phys:
            out.append(None)
        else:
            out.append(1 + sum(1 for b in range(1, 256) if phys[b] != phys[b - 1] + 1))
    return out


def scenario_data():
    model = data_model()
    # The layout holds while no compaction pass moves blocks: a pass counted
    # after this would make the per-READ checks below skip (one that moved
    # blocks before the scan left copies: those MiBs have no known layout).
    c0 = compactions()
    runs = layout(model, DATA_MIB)
    mv = memoryview(model)
    r = rnd("reads")
    print("data: wrote %d MiB (seed %s)" % (DATA_MIB, SEED))
    for structured in (True, False):
        h = conn("vol0", structured)
        kind = "structured" if structured else "simple"
        v0, eligible = views(), 0
        per = []  # (MiB, physical runs or None, read_views step)
        for i in range(DATA_MIB):
            before = views()
            same(h.pread(M, i * M), mv[i * M:(i + 1) * M], "%s 1 MiB READ at MiB %d" % (kind, i))
            step = views() - before
            per.append((i, runs[i], step))
            if step not in (0, 1):
                die("%s: one READ (MiB %d) moved read_views by %d" % (kind, i, step))
            if step and runs[i] is not None and runs[i] > 8 and compactions() == c0:
                die("%s: the READ of MiB %d, in %d physical runs (over the 8 pieces a reply "
                    "takes), counted as a view" % (kind, i, runs[i]))
            eligible += 1
        few = [p for p in per if p[1] is not None and p[1] <= 8]
        many = [p for p in per if p[1] is not None and p[1] > 8]
        print("data: %s 1 MiB READs: %d of %d in at most 8 physical runs were views (runs: %s); "
              "%d in more runs, none a view; %d of unknown layout"
              % (kind, sum(p[2] for p in few), len(few), sorted({p[1] for p in few}), len(many),
                 len(per) - len(few) - len(many)))
        for j in range(48):
            n = r.choice([K64, K64, K64, 128 << 10, 256 << 10, 512 << 10, 960 << 10])
            off = r.randrange(0, (DATA_MIB * M - n) // BLK + 1) * BLK
            same(h.pread(n, off), mv[off:off + n], "%s %d-byte READ at %d" % (kind, n, off))
            eligible += 1
        # 32 READs in flight: several view replies queued in one event
        bufs = [nbd.Buffer(M) for _ in range(DATA_MIB)]
        cookies = [h.aio_pread(bufs[i], i * M) for i in range(DATA_MIB)]
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for i, c in enumerate(cookies):
            if not h.aio_command_completed(c):
                die("aio READ %d not completed" % i)
            same(bufs[i].to_bytearray(), mv[i * M:(i + 1) * M], "%s READ in flight at MiB %d"
                 % (kind, i))
        eligible += DATA_MIB
        v1 = views()
        print("data: %s replies: read_views +%d for %d aligned READs of 64 KiB..1 MiB"
              % (kind, v1 - v0, eligible))
        if v1 - v0 > eligible:
            die("%s: read_views grew by %d for %d READs" % (kind, v1 - v0, eligible))
        if 2 * (v1 - v0) <= eligible:
            die("%s: read_views grew by %d only, for %d aligned READs of data just written"
                % (kind, v1 - v0, eligible))
        if structured:
            # Blocks of zeros inside a view: hole chunks where the bytes are
            # zero, at most 16 chunks (then the rest is data), as proto.c says.
            for mib in (3, 4, 9, 12, 13, 14):
                buf, ch = chunks_of(h, M, mib * M)
                same(buf, mv[mib * M:(mib + 1) * M], "structured chunks of MiB %d" % mib)
                want = [(mib * M + o, n, nbd.READ_HOLE if hole else nbd.READ_DATA)
                        for o, n, hole in expect_chunks(mv[mib * M:(mib + 1) * M])]
                if ch != want:
                    die("MiB %d: chunks %s, wanted %s" % (mib, ch, want))
            assert len(expect_chunks(mv[4 * M:5 * M])) == 16  # the test's own design
            assert [c for c in expect_chunks(mv[9 * M:10 * M])] == [(0, M, True)]
            buf, ch = chunks_of(h, M, 3 * M, nbd.CMD_FLAG_DF)
            same(buf, mv[3 * M:4 * M], "MiB 3 with DF")
            if ch != [(3 * M, M, nbd.READ_DATA)]:
                die("MiB 3 with DF: chunks %s" % ch)
            print("data: structured chunks ok (zero blocks as holes, DF, 16-chunk limit)")
        h.shutdown()
    return model, runs, c0


def scenario_refused(model, runs, c0):
    # vol0 as scenario data left it, plus a trimmed 64 KiB inside MiB 20
    h = conn("vol0")
    h.trim(K64, 20 * M + 128 * 1024)
    model[20 * M + 128 * 1024:20 * M + 192 * 1024] = bytes(K64)
    h.flush()
    h.shutdown()
    mv = memoryview(model)
    reads = [
        (M, 1, "unaligned offset"),
        (M, 2 * M + 512, "offset 512 into a block"),
        (M - 512, 2 * M, "length not whole blocks"),
        (M + 100, 5 * M, "unaligned length"),
        (M, DATA_MIB * M - M // 2, "half data, half never written"),
        (M, DATA_MIB * M - BLK, "one block of data, the rest a hole"),
        (M, 40 * M, "all hole"),
        (M, 20 * M, "a trimmed block inside"),
        (K64 - BLK, 6 * M, "under 64 KiB"),
        (BLK, 6 * M, "one block"),
        (M + BLK, 7 * M, "over 1 MiB"),
        (2 * M, 10 * M, "2 MiB"),
    ]
    for structured in (True, False):
        h = conn("vol0", structured)
        v0 = views()
        for n, off, what in reads:
            same(h.pread(n, off), mv[off:off + n], "%s (%s replies)"
                 % (what, "structured" if structured else "simple"))
        v1 = views()
        if v1 != v0:
            die("READs the view path must refuse changed read_views by %d (%s replies)"
                % (v1 - v0, "structured" if structured else "simple"))
        # MiB 13: at least 11 physical runs (5 single blocks rewritten inside
        # it), over the 8 pieces a reply takes; refused unless a compaction
        # pass moved its blocks since the layout was seen
        same(h.pread(M, 13 * M), mv[13 * M:14 * M], "MiB 13 (over 8 physical runs)")
        v2 = views()
        if v2 != v1:
            if runs[13] is not None and compactions() == c0:
                die("the READ of MiB 13, in %d physical runs, counted as a view" % runs[13])
            print("refused: MiB 13 counted as a view, but a compaction moved blocks meanwhile "
                  "(runs then: %s)" % runs[13])
        v1 = v2
        # a positive control (not asserted: the page cache decides)
        same(h.pread(M, 2 * M), mv[2 * M:3 * M], "control READ")
        print("refused: %d READs right, read_views unchanged (%s replies); a 1 MiB READ "
              "of data after them: %s" % (len(reads), "structured" if structured else "simple",
                                          "a view" if views() == v1 + 1 else "not a view"))
        h.shutdown()
    print("refused: MiB 13 in %s physical runs; %d compaction passes so far"
          % (runs[13], compactions()))


PARTIAL_N = 48


def old_data(tag):
    """The 48 MiB the raw client must see: random, with zero blocks, some MiBs
    rewritten in single blocks (pieces); returns it after writing it to vol1."""
    r = rnd(tag)
    data = bytearray(r.randbytes(PARTIAL_N * M))
    for i in range(0, PARTIAL_N, 3):
        for b in (5, 6, 7, 130):
            data[i * M + b * BLK:i * M + (b + 1) * BLK] = bytes(BLK)
    h = conn("vol1")
    for i in range(PARTIAL_N):
        h.pwrite(bytes(data[i * M:(i + 1) * M]), i * M)
    for i in range(1, PARTIAL_N, 4):
        for b in (20, 90, 91, 200):
            blk = r.randbytes(BLK)
            data[i * M + b * BLK:i * M + (b + 1) * BLK] = blk
            h.pwrite(blk, i * M + b * BLK)
    h.flush()
    return h, bytes(data)


def pool_blocks_left(hashes):
    """How many of the 4 KiB blocks with these digests the pool file still holds."""
    left = set()
    with open(POOL, "rb") as f:
        while True:
            chunk = f.read(16 * M)
            if not chunk:
                break
            for o in range(0, len(chunk), BLK):
                d = hashlib.blake2b(chunk[o:o + BLK], digest_size=16).digest()
                if d in hashes:
                    left.add(d)
    return len(left)


def scenario_partial(mode):
    structured = mode == "structured"
    h, old = old_data("old-" + mode)
    new = blob("new-" + mode, PARTIAL_N * M)
    ops0, v0 = read_ops("vol1"), views()
    # A receive buffer of 64 KiB: the kernel queues a few MiB at most of the
    # 48 MiB of replies; the rest waits in the server.
    s = raw_go("vol1", structured, rcvbuf=K64)
    handle_off.clear()
    reqs = b""
    for i in range(PARTIAL_N):
        hd = 0x7700 + i
        handle_off[hd] = i * M
        reqs += read_req(hd, i * M, M)
    s.sendall(reqs)
    # Every READ served (by a view, the loop thread or a reader thread)
    # before anything is overwritten: then each reply must be the old data.
    t0 = time.monotonic()
    while read_ops("vol1") < ops0 + PARTIAL_N:
        if time.monotonic() - t0 > 30:
            die("partial %s: %d of %d READs served in 30 s"
                % (mode, read_ops("vol1") - ops0, PARTIAL_N))
        time.sleep(0.05)
    time.sleep(0.5)
    v1 = views()
    print("partial %s: 48 READs served, %d of them as views (%s)"
          % (mode, v1 - v0, "the rest read into buffers" if v1 - v0 < PARTIAL_N else "all"))
    # Overwrite the range, free the old blocks and reuse their segments.
    old_hashes = {hashlib.blake2b(old[o:o + BLK], digest_size=16).digest()
                  for o in range(0, len(old), BLK)} - {hashlib.blake2b(bytes(BLK),
                                                                        digest_size=16).digest()}
    freed0 = stats()["segments_freed"]
    for i in range(PARTIAL_N):
        h.pwrite(new[i * M:(i + 1) * M], i * M)
    h.flush()
    ctl("compact", "--wait")
    ctl("checkpoint")
    # New data into a volume of its own (never overwritten, so nothing it
    # writes is freed meanwhile) until the freed segments holding the old
    # blocks have been written over: most of the old blocks gone from the
    # pool file (a tenth left at most, half at worst).
    fvol = "fill-" + mode
    ctl("volume", "create", fvol, "512M")
    f = conn(fvol)
    step, off, left = 32, 0, pool_blocks_left(old_hashes)
    while left > len(old_hashes) // 10 and off < 512:
        fill = blob("fill-%s-%d" % (mode, off), step * M)
        for i in range(step):
            f.pwrite(fill[i * M:(i + 1) * M], (off + i) * M)
        f.flush()
        ctl("checkpoint")
        off += step
        left = pool_blocks_left(old_hashes)
    f.shutdown()
    freed1 = stats()["segments_freed"]
    print("partial %s: overwritten; %d segments freed; %d MiB written elsewhere; %d of %d old "
          "data blocks still in the pool file" % (mode, freed1 - freed0, off, left,
                                                  len(old_hashes)))
    if freed1 == freed0:
        die("partial %s: no segment was freed: the check would not see stale views" % mode)
    if left > len(old_hashes) // 2:
        die("partial %s: the old blocks' segments were not reused: the check would not see "
            "stale views" % mode)
    # What the kernel holds of the replies (the client's receive queue; the
    # server's send queue, at most net.ipv4.tcp_wmem's maximum): the rest
    # waited in the server, copied out of the mapping at the end of the event.
    queued = struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    try:
        wmax = int(open("/proc/sys/net/ipv4/tcp_wmem").read().split()[2])
    except (OSError, IndexError, ValueError):
        wmax = 0
    print("partial %s: %d KiB of the replies in the client's socket, at most %d KiB in the "
          "server's, of %d KiB" % (mode, queued >> 10, wmax >> 10, (PARTIAL_N * M) >> 10))
    # Now take the replies: each the old data, whole.
    seen = set()
    for _ in range(PARTIAL_N):
        hd, got = raw_reply(s, structured, M)
        if hd not in handle_off or hd in seen:
            die("partial %s: reply for handle %#x (unknown or twice)" % (mode, hd))
        seen.add(hd)
        i = handle_off[hd] // M
        if got != old[i * M:(i + 1) * M]:
            which = "the new data" if got == new[i * M:(i + 1) * M] else "neither old nor new"
            same(got, old[i * M:(i + 1) * M], "partial %s: reply to the READ of MiB %d "
                 "(it holds %s)" % (mode, i, which))
    s.close()
    same(h.pread(M, 7 * M), new[7 * M:8 * M], "partial %s: a fresh READ after" % mode)
    for i in range(PARTIAL_N):
        same(h.pread(M, i * M), new[i * M:(i + 1) * M], "partial %s: MiB %d after" % (mode, i))
    h.shutdown()
    ctl("volume", "delete", fvol)
    print("partial %s: all %d replies hold the data as it was when read; the new data "
          "reads back" % (mode, PARTIAL_N))


def clients():
    return json.loads(ctl("--json", "clients"))["clients"]


def scenario_vanish(model):
    for how in ("close", "rst", "midreply", "close-structured"):
        s = raw_go("vol0", structured=how.endswith("structured"), rcvbuf=K64)
        s.sendall(b"".join(read_req(0x100 + i, (i % DATA_MIB) * M, M) for i in range(32)))
        if how == "rst":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "midreply":
            recvn(s, 16 + M // 2)
        s.close()
        # the next client is served, with the right data
        h = conn("vol0")
        got = h.pread(M, 5 * M)
        h.shutdown()
        same(got, model[5 * M:6 * M], "vanish %s: MiB 5 of vol0 afterwards" % how)
        t0 = time.monotonic()
        while clients():
            if time.monotonic() - t0 > 10:
                die("vanish %s: connections still listed 10 s later: %s" % (how, clients()))
            time.sleep(0.05)
        # A checkpoint waits for every read-side section to end: one left
        # open by the dropped connection's views would hang it.
        h = conn("vol2")
        h.pwrite(blob("vanish-" + how, K64), 0)
        h.flush()
        h.shutdown()
        ctl("checkpoint")
        print("vanish %s: dropped, the next client served" % how)


def main():
    model = None
    for sc in sys.argv[2:]:
        if sc == "data":
            model, runs, c0 = scenario_data()
        elif sc == "refused" and model:
            scenario_refused(model, runs, c0)
        elif sc in ("partial-simple", "partial-structured"):
            scenario_partial(sc.split("-")[1])
        elif sc == "vanish" and model:
            scenario_vanish(model)
        else:
            die("unknown scenario %s (refused and vanish need data first)" % sc)


if __name__ == "__main__":
    main()
