#!/bin/bash
# data_snapshot.sh — invariant 3: a snapshot reads the same bytes forever.
# vol0 (16 MiB) is filled and snapshotted as s1; s1's SHA-256 is recorded
# and rechecked after every step: rewrites, trims and zeroes of vol0 (also
# unaligned), a clone c1 of s1 that is rewritten, a snapshot of the clone,
# a second snapshot s2 taken between two overwrites of the same range and
# then deleted (its dead blocks must be freed, s1's shared ones not), full
# rewrites of vol0 with checkpoints until more than the pool's size has been
# written (so freed segments are reused: s1's blocks must not be among
# them), `cowctl checkpoint`, kill -9 + restart, rollback vol0@s1.  Every
# volume, clone and snapshot is compared with a model the test keeps.  The
# data and the mutations come from SEED (random unless given; printed).
. "$(dirname "$0")/lib.sh"
requires nbdsh /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] && [ -x "$BUILD/cowbd-check" ] ||
	fail "build/cowbd, cowctl or cowbd-check missing"
# jq_ PATH: a field of the last `ok --json` reply, e.g. jq_ .stats.syncs
jq_() {
	/usr/bin/python3 -c 'import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].strip(".").split("."):
    v = v[k]
print(v)' "$T/out" "$1"
}

cat >"$T/s.py" <<'PY'
# s.py PORT STATEDIR COMMAND ARGS   (models: STATEDIR/m.<export>.bin)
#   fill VOL SEED          random data over the whole volume, flush
#   copy SRC DST           DST's model := SRC's model (after snapshot/clone)
#   mutate VOL SEED N      N random writes/trims/zeroes (unaligned too), flush
#   rewrite VOL SEED A B   rewrite [A,B) MiB with random data, flush
#   check EXPORT...        each export reads exactly its model; s1's SHA-256
#                          equals the one recorded at the first check
#   readonly EXPORT        writes to the export are refused
import hashlib, os, random, shutil, sys, nbd
port, sd, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
SIZE, BS, CH = 16 << 20, 4096, 8 << 20
mp = lambda name: os.path.join(sd, "m.%s.bin" % name)

def conn(name):
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_tcp("127.0.0.1", port)
    assert h.get_size() == SIZE, (name, h.get_size())
    return h

def load(name):
    return bytearray(open(mp(name), "rb").read())

def save(name, m):
    open(mp(name) + ".tmp", "wb").write(m)
    os.replace(mp(name) + ".tmp", mp(name))

def run_rng(seed):                     # the step's seed within the run's SEED
    return random.Random("%s/%d" % (os.environ["SEED"], seed))

def wrote(n):                          # bytes written so far, all commands
    p = os.path.join(sd, "written")
    t = int(open(p).read()) if os.path.exists(p) else 0
    open(p, "w").write(str(t + n))

def readall(h):
    return b"".join(h.pread(CH, o) for o in range(0, SIZE, CH))

if cmd == "fill":
    vol, seed = args[0], int(args[1])
    m = bytearray(run_rng(seed).randbytes(SIZE))
    h = conn(vol)
    for o in range(0, SIZE, CH):
        h.pwrite(m[o:o + CH], o)
    h.flush()
    save(vol, m)
    wrote(SIZE)
elif cmd == "copy":
    shutil.copyfile(mp(args[0]), mp(args[1]))
elif cmd == "mutate":
    vol, seed, n = args[0], int(args[1]), int(args[2])
    rng = run_rng(seed)
    m = load(vol)
    h = conn(vol)
    for i in range(n):
        ln = rng.choice([BS, 1, 513, 3 * BS + 17, 100000, 1 << 20])
        off = rng.randrange(SIZE - ln)
        if i % 4 == 3 or ln == BS:
            off -= off % BS
        op = rng.random()
        if op < 0.6:
            d = rng.randbytes(ln)
            h.pwrite(d, off, nbd.CMD_FLAG_FUA if i % 7 == 0 else 0)
            m[off:off + ln] = d
            wrote(ln)
        elif op < 0.8:
            h.trim(ln, off)
            m[off:off + ln] = bytes(ln)
        else:
            h.zero(ln, off, nbd.CMD_FLAG_NO_HOLE if i % 2 else 0)
            m[off:off + ln] = bytes(ln)
    h.flush()
    save(vol, m)
elif cmd == "rewrite":
    vol, seed, a, b = args[0], int(args[1]), int(args[2]) << 20, int(args[3]) << 20
    m = load(vol)
    d = run_rng(seed).randbytes(b - a)
    h = conn(vol)
    for o in range(0, b - a, CH):
        h.pwrite(d[o:o + CH], a + o)
    h.flush()
    m[a:b] = d
    save(vol, m)
    wrote(b - a)
elif cmd == "check":
    bad = 0
    for name in args:
        got = readall(conn(name))
        want = load(name)
        if got != want:
            bad += 1
            diff = [i for i in range(0, SIZE, BS) if got[i:i + BS] != want[i:i + BS]]
            print("%s: %d of %d blocks differ from the model, first at %d"
                  % (name, len(diff), SIZE // BS, diff[0]))
        if name == "vol0@s1":
            sha = hashlib.sha256(got).hexdigest()
            sp = os.path.join(sd, "s1.sha256")
            if not os.path.exists(sp):
                open(sp, "w").write(sha)
            elif open(sp).read() != sha:
                bad += 1
                print("vol0@s1: SHA-256 changed: %s, was %s" % (sha, open(sp).read()))
    if bad:
        sys.exit("check: %d exports differ" % bad)
    print("ok: %s read their models" % " ".join(args))
elif cmd == "readonly":
    h = conn(args[0])
    assert h.is_read_only()
    try:
        h.pwrite(b"X" * BS, 0)
        sys.exit("write to %s succeeded" % args[0])
    except nbd.Error as e:
        assert e.errno == "EPERM", e
PY
s() { /usr/bin/python3 "$T/s.py" "$PORT" "$T" "$@" || fail "s.py $*"; }

seed_init
POOL_SIZE=128M cowbd_start
ok volume create vol0 16M
s fill vol0 1
ok snapshot create vol0@s1
s copy vol0 vol0@s1
s check vol0@s1 vol0
s readonly vol0@s1

# rewrite, trim, zero parts of vol0 (unaligned too)
s mutate vol0 2 80
s check vol0@s1 vol0

# clone s1 into c1; c1 starts as s1, then diverges
ok clone vol0@s1 c1
s copy vol0@s1 c1
s check c1 vol0@s1
s mutate c1 3 80
s check vol0@s1 c1 vol0
# a snapshot of the clone, then more writes to the clone
ok snapshot create c1@cs1
s copy c1 c1@cs1
s mutate c1 4 60
s check c1@cs1 c1 vol0@s1

# s2 between two overwrites of the same range [2,6) MiB of vol0: deleting
# s2 must free its own blocks but not s1's, which s2 shares
s rewrite vol0 5 2 6
ok snapshot create vol0@s2
s copy vol0 vol0@s2
s rewrite vol0 6 2 6
s mutate vol0 7 60
s check vol0@s2 vol0@s1 vol0
# s2's own blocks are the first overwrite of [2,6): 4 MiB unique
ok --json volume info vol0@s2
uniq=$(jq_ .volume.unique)
[ "$uniq" -ge $((4 << 20)) ] || fail "vol0@s2 unique $uniq, want >= 4 MiB"
ok --json stats
live0=$(jq_ .stats.blocks_live)
ok snapshot delete vol0@s2
s check vol0@s1 vol0 c1 c1@cs1
ok checkpoint
ok --json stats
live1=$(jq_ .stats.blocks_live)
echo "blocks_live $live0 -> $live1 after deleting vol0@s2 (unique $uniq bytes)"
[ $((live0 - live1)) -ge $((uniq / 4096 - 256)) ] ||
	fail "deleting vol0@s2 freed $((live0 - live1)) blocks, want about $((uniq / 4096))"
s check vol0@s1 vol0 c1

# kill -9 and restart
cowbd_kill9
check_pool "after kill -9"
cowbd_restart
s check vol0@s1 vol0 c1 c1@cs1

# full rewrites of vol0 with checkpoints between them until more than the
# 128 MiB pool has been written in all, so freed segments get reused; s1 (a
# eighth of the pool) must not lose a block to that
for i in 1 2 3 4 5 6 7; do
	s rewrite vol0 $((10 + i)) 0 16
	ok checkpoint
done
s mutate c1 20 50
[ "$(cat "$T/written")" -gt $((128 << 20)) ] ||
	fail "only $(cat "$T/written") bytes written: segments were not reused"
s check vol0@s1 vol0 c1 c1@cs1
ok --json stats
echo "after rewrites: $(jq_ .stats.segments_free) of $(jq_ .stats.segments) segments free"
cowbd_kill9
check_pool "after kill -9 following the rewrites"
cowbd_restart
s check vol0@s1 vol0 c1 c1@cs1

# rollback (vol0 detached: no connection is open): vol0 reads s1 again
ok rollback vol0@s1
s copy vol0@s1 vol0
s check vol0 vol0@s1 c1
s mutate vol0 30 60
s check vol0@s1 vol0
cowbd_kill9
check_pool "after rollback and kill -9"
cowbd_restart
s check vol0@s1 vol0 c1 c1@cs1
cowbd_stop
check_pool "after clean stop"
echo "data_snapshot: all checks passed"
