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
# iodepth 16 plus a writer doing FUA writes and logging each acknowledged
# one; after restart every logged FUA write and all data flushed before the
# load is there.
. "$(dirname "$0")/lib.sh"
requires nbdsh fio /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] && [ -x "$BUILD/cowbd-check" ] ||
	fail "build/cowbd, cowctl or cowbd-check missing"

VOLSIZE=$((64 << 20))
cat >"$T/k.py" <<'PY'
# k.py URI STATEDIR COMMAND [ARG]
#   check         read the whole volume; pending writes resolve to old or new
#                 per 4 KiB piece; everything else must equal the model
#   cycle N       flushed writes/trims/zeroes, FUA writes, unflushed writes
#   settle A B    write seeded data to [A,B), flush, model it exactly
#   fuaload A B   FUA-write 4 KiB blocks in [A,B) until killed, log each ack
#   checkload A B every logged FUA write in [A,B) reads back
import json, os, random, sys, nbd
uri, sd, cmd = sys.argv[1], sys.argv[2], sys.argv[3]
BS = 4096
SIZE = 64 << 20
LOAD = (48 << 20, 64 << 20)           # region the load cycle scribbles on
mpath, ppath = os.path.join(sd, "model.bin"), os.path.join(sd, "pending.json")
model = bytearray(open(mpath, "rb").read()) if os.path.exists(mpath) else bytearray(SIZE)
pending = json.load(open(ppath)) if os.path.exists(ppath) else []
masked = os.path.exists(os.path.join(sd, "masked"))

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
        lo, hi = LOAD
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
    rng = random.Random(1000 + n)
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
    if masked:
        os.unlink(os.path.join(sd, "masked"))
    save()

elif cmd == "fuaload":
    a, b = int(sys.argv[4]), int(sys.argv[5])
    log = open(os.path.join(sd, "fua.log"), "a", buffering=1)
    i = 0
    while True:
        off = a + (i * 7 % ((b - a) // BS)) * BS
        seed = i
        h.pwrite(random.Random(seed).randbytes(BS), off, nbd.CMD_FLAG_FUA)
        log.write("%d %d\n" % (off, seed))   # only after the reply
        i += 1

elif cmd == "checkload":
    last = {}
    for line in open(os.path.join(sd, "fua.log")):
        if line.endswith("\n"):
            off, seed = map(int, line.split())
            last[off] = seed
    bad = 0
    for off, seed in sorted(last.items()):
        if h.pread(BS, off) != random.Random(seed).randbytes(BS):
            bad += 1
            print("acknowledged FUA write at %d (seed %d) lost" % (off, seed))
    if bad or not last:
        sys.exit("checkload: %d of %d acknowledged FUA blocks lost" % (bad, len(last)))
    print("checkload: %d acknowledged FUA blocks all present" % len(last))
h.shutdown()
PY

k() { /usr/bin/python3 "$T/k.py" "$(uri vol0)" "$T" "$@"; }
check_pool() {
	"$BUILD/cowbd-check" "$POOL" >"$T/check.out" 2>&1 ||
		fail "cowbd-check $1 (exit $?): $(tail -n 5 "$T/check.out")"
	echo "ok: cowbd-check clean $1"
}

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
touch "$T/masked"
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
runtime=60
fsync=32
JOB
fio "$T/load.fio" >"$T/load.out" 2>&1 &
FIO_PID=$!
k fuaload $LO $MID >"$T/fuaload.out" 2>&1 &
FUA_PID=$!
sleep 2
kill -0 $FIO_PID 2>/dev/null || { cat "$T/load.out"; fail "fio load died before the kill"; }
kill -0 $FUA_PID 2>/dev/null || { cat "$T/fuaload.out"; fail "FUA writer died before the kill"; }
cowbd_kill9
wait $FIO_PID $FUA_PID 2>/dev/null
echo "ok: killed under load after $(wc -l <"$T/fua.log") acknowledged FUA writes"
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
