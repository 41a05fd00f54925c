#!/bin/bash
# data_multiconn.sh — several connections writing one volume at once, then a
# FLUSH on a single connection covers all of them (multi-conn), proven by
# kill -9 + restart.  Concurrently: fio with two jobs (two connections,
# randwrite with verify=crc32c on disjoint regions) and two writer
# processes laying interleaved unaligned stripes whose boundaries fall
# inside 4 KiB blocks.  Then the tight case: two processes, started on a
# barrier, pipeline writes to the same 4 KiB blocks (each its own byte range
# of each block, split points varying per block) for several rounds: no
# lost update, both ranges present in every block.  Flush on one connection
# only, kill -9, restart, everything is there.
. "$(dirname "$0")/lib.sh"
requires nbdsh fio /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] && [ -x "$BUILD/cowbd-check" ] ||
	fail "build/cowbd, cowctl or cowbd-check missing"

cat >"$T/m.py" <<'PY'
# m.py URI COMMAND ARGS
#   stripes WHO          WHO=0/1: interleaved unaligned stripes in [0,16M)
#   checkstripes
#   block WHO T0 ROUNDS  same-block writes in [16M,32M), start at time T0
#   checkblock ROUNDS
#   flush
import random, sys, time, nbd
uri, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
M, BS = 1 << 20, 4096
STRIPE, CUT = 8192, 4100              # stripe k: [k*8192, k*8192+4100) to 0
NSTRIPE = (16 * M) // STRIPE          # and [k*8192+4100, (k+1)*8192) to 1
B0, NBLK = 16 * M, 4096               # same-block region: 4096 blocks

def conn():
    h = nbd.NBD()
    h.connect_uri(uri)
    assert h.can_multi_conn()
    return h

def drain(h, limit=0):
    while h.aio_in_flight() > limit:
        h.poll(-1)

def pipelined(h, writes, depth=32):
    for buf, off in writes:
        drain(h, depth - 1)
        h.aio_pwrite(buf, off)
    drain(h)

def stripe(who, k):
    lo = k * STRIPE + (CUT if who else 0)
    hi = k * STRIPE + (STRIPE if who else CUT)
    return lo, random.Random(k * 2 + who).randbytes(hi - lo)

def split(k):                          # where block k is cut between 0 and 1
    return random.Random(~k).randrange(1, BS)

def piece(who, k, rnd):
    s = split(k)
    lo, hi = (0, s) if who == 0 else (s, BS)
    return B0 + k * BS + lo, bytes([(k * 7 + rnd * 31 + who * 101) % 251 + 1]) * (hi - lo)

if cmd == "stripes":
    who = int(args[0])
    h = conn()
    order = list(range(NSTRIPE))
    random.Random(who).shuffle(order)
    pipelined(h, [(d, lo) for lo, d in (stripe(who, k) for k in order)])
    h.shutdown()                       # no flush: another connection flushes
elif cmd == "checkstripes":
    h = conn()
    img = b"".join(h.pread(4 * M, o) for o in range(0, 16 * M, 4 * M))
    bad = 0
    for k in range(NSTRIPE):
        for who in (0, 1):
            lo, d = stripe(who, k)
            if img[lo:lo + len(d)] != d:
                bad += 1
                if bad <= 5:
                    print("stripe %d of writer %d at %d lost" % (k, who, lo))
    if bad:
        sys.exit("%d stripes lost" % bad)
    print("ok: all %d stripes of both writers present" % (2 * NSTRIPE))
elif cmd == "block":
    who, t0, rounds = int(args[0]), float(args[1]), int(args[2])
    h = conn()
    while time.time() < t0:
        time.sleep(0.001)
    for rnd in range(rounds):          # drained between rounds: in order
        pipelined(h, [(d, off) for off, d in (piece(who, k, rnd) for k in range(NBLK))])
    h.shutdown()
elif cmd == "checkblock":
    rounds = int(args[0])
    h = conn()
    img = h.pread(NBLK * BS, B0)
    lost = 0
    for k in range(NBLK):
        for who in (0, 1):
            off, d = piece(who, k, rounds - 1)
            if img[off - B0:off - B0 + len(d)] != d:
                lost += 1
                if lost <= 5:
                    print("block %d: range of writer %d lost (split at %d)" % (k, who, split(k)))
    if lost:
        sys.exit("%d lost updates in %d contended blocks" % (lost, NBLK))
    print("ok: %d blocks written by two connections at once: no lost update" % NBLK)
elif cmd == "flush":
    h = conn()
    h.flush()
    h.shutdown()
PY
m() { /usr/bin/python3 "$T/m.py" "$(uri vol0)" "$@"; }

cowbd_start
cowctl volume create vol0 64M >/dev/null || fail "volume create"
cat >"$T/fio.job" <<JOB
[global]
ioengine=nbd
uri=$(uri vol0)
iodepth=16
rw=randwrite
bs=4k
verify=crc32c
do_verify=1
size=8m
numjobs=2
offset=32m
offset_increment=8m
[two]
JOB

# phase 1: fio (2 connections) + two stripe writers, all at once, no flush
fio "$T/fio.job" >"$T/fio.out" 2>&1 &
FIO=$!
m stripes 0 & W0=$!
m stripes 1 & W1=$!
wait $W0 || fail "stripe writer 0"
wait $W1 || fail "stripe writer 1"
wait $FIO || { cat "$T/fio.out"; fail "fio with two connections"; }
[ "$(grep -c "connected to NBD server" "$T/fio.out")" = 2 ] ||
	{ cat "$T/fio.out"; fail "fio did not open two connections"; }
m checkstripes || fail "stripes before the crash"

# phase 2: the same 4 KiB blocks from two connections at once
t0=$(/usr/bin/python3 -c 'import time; print(time.time() + 1.0)')
m block 0 "$t0" 3 & B0=$!
m block 1 "$t0" 3 & B1=$!
wait $B0 || fail "block writer 0"
wait $B1 || fail "block writer 1"
m checkblock 3 || fail "lost updates before the crash"

# one FLUSH on one (new) connection covers every acknowledged write
m flush || fail "flush"
cowbd_kill9
check_pool "after kill -9"
cowbd_restart
m checkstripes || fail "stripes lost after kill -9 (flushed on another connection)"
m checkblock 3 || fail "same-block writes lost after kill -9"
fio --verify_only "$T/fio.job" >"$T/fio.out" 2>&1 ||
	{ cat "$T/fio.out"; fail "fio verify-only after kill -9"; }
echo "ok: fio's two connections' data verified after kill -9"
cowbd_stop
check_pool "after clean stop"
echo "data_multiconn: all checks passed"
