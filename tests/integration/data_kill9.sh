#!/bin/bash
# data_kill9.sh — invariants 1 and 2 against the real daemon.  Six kill -9
# cycles on one pool.  Each cycle writes to vol0 (aligned, unaligned and
# large writes, trims, zeroes), FLUSHes, then FUA writes (durable with no
# flush), then plain unflushed writes; kill -9; `cowbd-check` must pass on
# the crashed pool; after restart every flushed or FUA byte reads back
# exactly as an in-memory model of the whole volume says, and each piece of
# an unflushed write (its part inside one 4 KiB block) reads either all old
# or all new, never a mix (a torn tail is discarded, never half-applied).
# The last cycle kills the daemon *during* a running load: fio randwrite at
# iodepth 16 plus a writer doing FUA writes that logs each write's intent
# before sending it and its acknowledgement after the reply; after restart
# every block the writer touched holds its last acknowledged version or one
# issued after it (fua_oracle.py, which tests itself first), and all data
# flushed before the load is there.  The cycles' workload comes from SEED
# (random unless given; printed).
. "$(dirname "$0")/lib.sh"
requires nbdsh fio /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] && [ -x "$BUILD/cowbd-check" ] ||
	fail "build/cowbd, cowctl or cowbd-check missing"
TESTDIR=$(cd "$(dirname "$0")" && pwd)
export TESTDIR
/usr/bin/python3 "$TESTDIR/fua_oracle.py" || fail "the FUA oracle fails its self-test"
seed_init

VOLSIZE=$((64 << 20))
cat >"$T/k.py" <<'PY'
# k.py URI STATEDIR COMMAND [ARG]
#   check         read the whole volume; pending writes resolve to old or new
#                 per 4 KiB piece; everything else must equal the model
#   cycle N       flushed writes/trims/zeroes, FUA writes, unflushed writes
#   settle A B    write seeded data to [A,B), flush, model it exactly
#   fuaload A B   FUA-write 4 KiB blocks in [A,B) until killed; log each
#                 write's intent before it, its ack after (fua_oracle.py)
#   checkload A B every block in [A,B) holds what fua_oracle allows; the
#                 model takes what was read
# STATEDIR/masked holds "A B": a range no model can predict (fio's load),
# taken as read by the next check.
import json, os, random, sys, nbd
sys.path.insert(0, os.environ["TESTDIR"])
import fua_oracle
uri, sd, cmd = sys.argv[1], sys.argv[2], sys.argv[3]
BS = 4096
SIZE = 64 << 20
LOAD = (48 << 20, 64 << 20)           # region the load cycle scribbles on
mpath, ppath = os.path.join(sd, "model.bin"), os.path.join(sd, "pending.json")
model = bytearray(open(mpath, "rb").read()) if os.path.exists(mpath) else bytearray(SIZE)
pending = json.load(open(ppath)) if os.path.exists(ppath) else []
maskpath = os.path.join(sd, "masked")
masked = tuple(map(int, open(maskpath).read().split())) if os.path.exists(maskpath) else None

def save():
    with open(mpath + ".tmp", "wb") as f:
        f.write(model)
    os.replace(mpath + ".tmp", mpath)
    json.dump(pending, open(ppath, "w"))

h = nbd.NBD()
h.connect_uri(uri)
assert h.get_size() == SIZE, h.get_size()

def readall():
    out = bytearray()
    for off in range(0, SIZE, 8 << 20):
        out += h.pread(8 << 20, off)
    return out

def pieces(off, n):                    # split [off, off+n) at 4 KiB boundaries
    end = off + n
    while off < end:
        e = min(end, (off // BS + 1) * BS)
        yield off, e
        off = e

if cmd == "check":
    got = readall()
    mixed = 0
    for p in pending:
        off, new = p["off"], bytes.fromhex(p["new"])
        old = model[off:off + len(new)]
        for a, b in pieces(off, len(new)):
            g = got[a:b]
            if g == new[a - off:b - off]:
                model[a:b] = g
            elif g != old[a - off:b - off]:
                mixed += 1
                print("unflushed write piece [%d,%d) is neither old nor new" % (a, b))
    if masked:
        lo, hi = masked
        model[lo:hi] = got[lo:hi]
    bad = [i for i in range(0, SIZE, BS) if got[i:i + BS] != model[i:i + BS]]
    for i in bad[:10]:
        j = next(k for k in range(BS) if got[i + k] != model[i + k])
        print("block at %d differs from the model first at byte %d: got %r want %r"
              % (i, i + j, bytes(got[i + j:i + j + 8]), bytes(model[i + j:i + j + 8])))
    pending = []
    save()
    if bad or mixed:
        sys.exit("check: %d blocks differ from the model, %d torn pieces" % (len(bad), mixed))
    print("check: %d MiB match the model" % (SIZE >> 20))

elif cmd == "cycle":
    n = int(sys.argv[4])
    rng = random.Random("%s/%d" % (os.environ["SEED"], n))
    hi = LOAD[0]                       # stay below the load region
    def rnd_range(maxlen):
        ln = rng.randrange(1, maxlen + 1)
        return rng.randrange(0, hi - ln), ln
    # A: writes of every shape, trims, zeroes; then FLUSH
    for i in range(60):
        kind = i % 6
        if kind == 0:                  # aligned 4 KiB
            off, ln = rng.randrange(hi // BS) * BS, BS
        elif kind == 1:                # small unaligned
            off, ln = rnd_range(700)
        elif kind == 2:                # unaligned, crosses blocks
            off, ln = rnd_range(3 * BS)
        elif kind == 3:                # large
            off, ln = rnd_range(1 << 20)
        if kind <= 3:
            data = rng.randbytes(ln)
            h.pwrite(data, off)
            model[off:off + ln] = data
        elif kind == 4:
            off, ln = rnd_range(64 << 10)
            h.trim(ln, off)
            model[off:off + ln] = bytes(ln)
        else:
            off, ln = rnd_range(64 << 10)
            h.zero(ln, off, nbd.CMD_FLAG_NO_HOLE if i % 2 else 0)
            model[off:off + ln] = bytes(ln)
    h.flush()
    # B: FUA writes, no flush after them
    for i in range(20):
        off, ln = rnd_range(2 * BS) if i % 2 else (rng.randrange(hi // BS) * BS, BS)
        data = rng.randbytes(ln)
        h.pwrite(data, off, nbd.CMD_FLAG_FUA)
        model[off:off + ln] = data
    # C: unflushed writes, pairwise disjoint: may survive or not, per piece
    taken = []
    while len(taken) < 15:
        off, ln = rnd_range(3 * BS)
        if any(off < b and a < off + ln for a, b in taken):
            continue
        taken.append((off, off + ln))
        data = rng.randbytes(ln)
        h.pwrite(data, off)
        pending.append({"off": off, "new": data.hex()})
    save()
    print("cycle %d: 60 flushed ops, 20 FUA writes, 15 unflushed writes" % n)

elif cmd == "settle":
    a, b = int(sys.argv[4]), int(sys.argv[5])
    data = random.Random(a).randbytes(b - a)
    for o in range(0, b - a, 8 << 20):     # keep under the 32 MiB maximum
        h.pwrite(data[o:o + (8 << 20)], a + o)
    h.flush()
    model[a:b] = data
    if masked and a <= masked[0] and masked[1] <= b:
        os.unlink(maskpath)
    save()

elif cmd == "fuaload":
    a, b = int(sys.argv[4]), int(sys.argv[5])
    # line-buffered: each line reaches the kernel at its newline, so the
    # intent is on record before the request leaves
    log = open(os.path.join(sd, "fua.log"), "a", buffering=1)
    i = 0
    while True:
        off = a + (i * 7 % ((b - a) // BS)) * BS
        log.write("issue %d %d\n" % (off, i))
        h.pwrite(fua_oracle.version_data(i), off, nbd.CMD_FLAG_FUA)
        log.write("ack %d %d\n" % (off, i))
        i += 1

elif cmd == "checkload":
    a, b = int(sys.argv[4]), int(sys.argv[5])
    got = bytearray()
    for off in range(a, b, 8 << 20):
        got += h.pread(min(8 << 20, b - off), off)
    with open(os.path.join(sd, "fua.log")) as f:
        lines = f.readlines()
    problems, counts = fua_oracle.judge(
        lines, range(a, b, BS), lambda o: bytes(got[o - a:o - a + BS]),
        lambda o: bytes(model[o:o + BS]))
    for p in problems[:10]:
        print(p)
    if problems:
        sys.exit("checkload: %d of %d blocks hold what no acknowledged or later write "
                 "put there" % (len(problems), (b - a) // BS))
    if not counts["acked"] + counts["later"]:
        sys.exit("checkload: no acknowledged FUA write to check")
    print("checkload: %(acked)d blocks hold their last acknowledged FUA write, %(later)d a "
          "write issued after it, %(unacked)d an unacknowledged one, %(baseline)d their "
          "data from before the load" % counts)
    model[a:b] = got
    save()
h.shutdown()
PY

k() { /usr/bin/python3 "$T/k.py" "$(uri vol0)" "$T" "$@"; }

POOL_SIZE=512M cowbd_start
cowctl volume create vol0 64M >/dev/null || fail "volume create"
k settle 0 $((64 << 20)) || fail "initial fill"

for n in 1 2 3 4 5; do
	k cycle $n || fail "cycle $n writes"
	# one cycle checkpoints before the crash, so recovery starts from a
	# checkpoint that is not the pool's first
	[ $n = 3 ] && { cowctl checkpoint >/dev/null || fail "cowctl checkpoint"; }
	cowbd_kill9
	check_pool "after kill -9 #$n"
	cowbd_restart
	k check || fail "cycle $n: data after kill -9 differs from the model"
done

# kill -9 during a running load, after known data was flushed: fio on the
# load region's top half, a FUA writer logging acks on its bottom half.
LO=$((48 << 20)) MID=$((56 << 20)) HI=$((64 << 20))
k settle 0 $LO || fail "settle before load"
echo "$MID $HI" >"$T/masked"
cat >"$T/load.fio" <<JOB
[load]
ioengine=nbd
uri=$(uri vol0)
iodepth=16
rw=randwrite
bsrange=512-64k
offset=$MID
size=$((HI - MID))
time_based=1
runtime=600
fsync=32
JOB
fio "$T/load.fio" >"$T/load.out" 2>&1 &
FIO_PID=$!
k fuaload $LO $MID >"$T/fuaload.out" 2>&1 &
FUA_PID=$!
# Kill once the FUA writer has gone round its 2048 blocks and more, so the
# write in flight hits a block with an acknowledged version (the case the
# oracle must get right); a bound in time, not a nap, however slow the machine.
acks() { cat "$T/fua.log" 2>/dev/null | grep -c '^ack '; }
for _ in $(seq 1 1200); do
	kill -0 $FUA_PID 2>/dev/null || { cat "$T/fuaload.out"; fail "FUA writer died before the kill"; }
	[ "$(acks)" -gt 2500 ] && break
	sleep 0.1
done
[ "$(acks)" -gt 2500 ] || fail "only $(acks) FUA writes acknowledged in 120 s"
kill -0 $FIO_PID 2>/dev/null || { cat "$T/load.out"; fail "fio load died before the kill"; }
cowbd_kill9
wait $FIO_PID $FUA_PID 2>/dev/null
echo "ok: killed under load after $(acks) acknowledged FUA writes"
check_pool "after kill -9 under load"
cowbd_restart
k checkload $LO $MID || fail "acknowledged FUA writes lost in the kill under load"
k check || fail "flushed data before the load differs after kill -9 under load"

# the pool keeps working: settle the load region, clean stop, final check
k settle $LO $HI || fail "settle after load"
cowbd_stop
check_pool "after clean stop"
cowbd_restart
k check || fail "final check after clean restart"
cowbd_stop
echo "data_kill9: all checks passed"
