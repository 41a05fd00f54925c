#!/bin/bash
# data_verify.sh — invariant 8: no data read returns bytes whose checksum
# fails.  vol0 (4 MiB) is filled with data unique per block and flushed; the
# daemon stops; one byte inside the data block of lba 77 is flipped in the
# pool file (found by its contents); `cowbd-check` must report that pool
# block; after a restart every read touching lba 77 — the whole block, 512
# bytes of it, a 64 KiB range around it, from a snapshot too — gets EIO
# (never bytes), every other block reads back right, the log names volume,
# block and offset once however often it is read, and `cowctl stats` counts
# one bad block and each refused read.  Overwriting the block heals the
# volume: it reads back, and `cowbd-check` is clean again (the damaged copy
# is no longer live).  `cowctl scrub --wait` on the clean pool exits 0; on the
# damaged one it names the block by both names that map it (vol0 and
# vol0@s1, offset 77*4096, its pool block) and exits 1, `--json` says the
# same, `--status` repeats it; after the heal a new pass is clean again.
. "$(dirname "$0")/lib.sh"
requires nbdsh /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] && [ -x "$BUILD/cowbd-check" ] ||
	fail "build/cowbd, cowctl or cowbd-check missing"

BAD=77
cat >"$T/v.py" <<'PY'
# v.py URI COMMAND [ARGS]
#   fill                unique data in every block, flush
#   find POOL LBA       print the byte offset of LBA's block in the pool file
#   reads BAD           BAD's reads get EIO, every other block reads right
#   partial BAD         a 512-byte write into BAD gets EIO (no fresh checksum)
#   heal BAD            overwrite BAD, flush; then everything reads right
import hashlib, sys, nbd

BS = 4096
uri, cmd = sys.argv[1], sys.argv[2]

def block(lba, gen=0):
    seed = hashlib.sha256(b"cowbd-vr %d %d" % (lba, gen)).digest()
    return (seed * (BS // len(seed)))[:BS]

def conn():
    h = nbd.NBD()
    h.connect_uri(uri)
    return h

def eio(h, n, off, what):
    try:
        h.pread(n, off)
    except nbd.Error as e:
        if e.errno != "EIO":
            sys.exit("%s: errno %s, not EIO" % (what, e.errno))
        return
    sys.exit("%s: read returned bytes" % what)

def all_but(h, bad, gen_of=lambda lba: 0):
    nblocks = h.get_size() // BS
    for lba in range(nblocks):
        if lba == bad:
            continue
        if h.pread(BS, lba * BS) != block(lba, gen_of(lba)):
            sys.exit("lba %d reads other bytes" % lba)
    # large reads on either side of the bad block
    lo = b"".join(block(l, gen_of(l)) for l in range(0, bad))
    if lo and h.pread(len(lo), 0) != lo:
        sys.exit("the range before the bad block reads other bytes")
    hi = b"".join(block(l, gen_of(l)) for l in range(bad + 1, nblocks))
    if hi and h.pread(len(hi), (bad + 1) * BS) != hi:
        sys.exit("the range after the bad block reads other bytes")

if cmd == "fill":
    h = conn()
    for lba in range(h.get_size() // BS):
        h.pwrite(block(lba), lba * BS)
    h.flush()
elif cmd == "find":
    want, hits = block(int(sys.argv[4])), []
    with open(sys.argv[3], "rb") as f:
        off = 0
        while True:
            b = f.read(BS)
            if not b:
                break
            if b == want:
                hits.append(off)
            off += BS
    if len(hits) != 1:
        sys.exit("lba's block found %d times in the pool" % len(hits))
    print(hits[0])
elif cmd == "reads":
    bad = int(sys.argv[3])
    h = conn()
    eio(h, BS, bad * BS, "the whole block")
    eio(h, 512, bad * BS + 1024, "512 bytes inside it")
    eio(h, 65536, bad * BS - 32768, "64 KiB around it")
    eio(h, 1, bad * BS + BS - 1, "its last byte")
    all_but(h, bad)
elif cmd == "snapreads":
    bad = int(sys.argv[3])
    h = conn()
    eio(h, BS, bad * BS, "the snapshot's block")
    all_but(h, bad)
elif cmd == "partial":
    # A write of part of the bad block merges with its current bytes: it
    # must fail rather than give the damage a fresh checksum.
    bad = int(sys.argv[3])
    h = conn()
    try:
        h.pwrite(b"\x11" * 512, bad * BS + 1024)
    except nbd.Error as e:
        if e.errno != "EIO":
            sys.exit("partial write: errno %s, not EIO" % e.errno)
    else:
        sys.exit("a partial write into the bad block succeeded (laundered?)")
    eio(h, BS, bad * BS, "the bad block after a refused partial write")
elif cmd == "heal":
    bad = int(sys.argv[3])
    h = conn()
    h.pwrite(block(bad, 1), bad * BS)
    h.flush()
    if h.pread(BS, bad * BS) != block(bad, 1):
        sys.exit("the rewritten block reads other bytes")
    all_but(h, -1, lambda lba: 1 if lba == bad else 0)
PY
v() { /usr/bin/python3 "$T/v.py" "$@"; }
# scrub_json FILE: check the --json report of a pass that met the damage:
# "done", one damaged block named by vol0 and vol0@s1 at lba BAD's offset.
scrub_json() {
	/usr/bin/python3 - "$1" $((BAD * 4096)) "$PHYS" <<'PY'
import json, sys
sc = json.load(open(sys.argv[1]))["scrub"]
off, phys = int(sys.argv[2]), int(sys.argv[3])
assert sc["state"] == "done", sc
assert sc["damaged_blocks"] == 1 and sc["damaged_more"] == 0, sc
got = [(d["name"], d["offset"], d["pool_block"]) for d in sc["damaged"]]
assert got == [("vol0", off, phys), ("vol0@s1", off, phys)], got
assert sc["volumes_done"] == sc["volumes_total"] == 2, sc
assert sc["blocks_walked"] == sc["blocks_total"] == 2048, sc
assert sc["blocks_checked"] == 1024, sc  # vol0@s1 shares every block
PY
}
stat_() { # FIELD: a field of `cowctl --json stats`
	cowctl --json stats | /usr/bin/python3 -c 'import json, sys
print(json.load(sys.stdin)["stats"][sys.argv[1]])' "$1"
}

POOL_SIZE=128M cowbd_start
ok volume create vol0 4M
v "$(uri vol0)" fill || fail "fill"
ok snapshot create vol0@s1
ok scrub --wait
grep -q "scrub pass 1 done in .*2 of 2 volumes, 1024 blocks checked .* 0 damaged" "$T/out" ||
	fail "clean scrub: $(cat "$T/out")"
ok scrub --status
echo "ok: scrub of the clean pool exits 0: $(head -n 1 "$T/out")"
cowbd_stop
check_pool "before the damage"

OFF=$(v - find "$POOL" $BAD) || fail "cannot find lba $BAD's block in the pool"
PHYS=$((OFF / 4096))
/usr/bin/python3 - "$POOL" $((OFF + 1234)) <<'PY' || fail "flip"
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2]))
    b = f.read(1)
    f.seek(int(sys.argv[2]))
    f.write(bytes([b[0] ^ 0x10]))
PY
echo "ok: flipped a byte of pool block $PHYS (vol0 lba $BAD)"
if "$BUILD/cowbd-check" "$POOL" >"$T/check.out" 2>&1; then
	fail "cowbd-check calls the damaged pool clean"
fi
grep -q "data block $PHYS .*fails its checksum" "$T/check.out" ||
	fail "cowbd-check does not name pool block $PHYS: $(tail -n 5 "$T/check.out")"
echo "ok: cowbd-check reports pool block $PHYS"

cowbd_restart
cowctl scrub --wait >"$T/scrub.out" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "scrub of the damaged pool exits $rc, not 1: $(cat "$T/scrub.out")"
for name in vol0 vol0@s1; do
	grep -qx "damaged: $name offset $((BAD * 4096)) (pool block $PHYS)" "$T/scrub.out" ||
		fail "scrub does not name $name at lba $BAD: $(cat "$T/scrub.out")"
done
[ "$(grep -c '^damaged:' "$T/scrub.out")" = 2 ] || fail "scrub names more: $(cat "$T/scrub.out")"
cowctl --json scrub --status >"$T/scrub.json"
[ $? -eq 1 ] || fail "scrub --status after damage does not exit 1"
scrub_json "$T/scrub.json" || fail "scrub --json --status"
cowctl scrub --wait --json >"$T/scrub.json"
[ $? -eq 1 ] || fail "scrub --wait --json of the damaged pool does not exit 1"
scrub_json "$T/scrub.json" || fail "scrub --wait --json"
echo "ok: cowctl scrub names pool block $PHYS as vol0 and vol0@s1 offset $((BAD * 4096)), exit 1"
v "$(uri vol0)" reads $BAD || fail "reads of vol0"
v "$(uri vol0@s1)" snapreads $BAD || fail "reads of the snapshot"
v "$(uri vol0)" reads $BAD || fail "reads of vol0, again"
echo "ok: every read of lba $BAD gets EIO, every other block reads right"
n=$(grep -c "volume vol0 (id [0-9]*) block $BAD (offset $((BAD * 4096))) at pool block $PHYS fails its checksum" "$LOG")
[ "$n" = 1 ] || fail "the log names the bad block $n times, not once"
[ "$(stat_ bad_blocks)" = 1 ] || fail "stats: bad_blocks $(stat_ bad_blocks), not 1"
r=$(stat_ bad_reads)
[ "$r" -ge 9 ] || fail "stats: bad_reads $r, fewer than the 9 refused reads"
echo "ok: logged once, counted (bad_blocks 1, bad_reads $r)"

v "$(uri vol0)" partial $BAD || fail "partial write into the bad block"
echo "ok: a partial write into the bad block gets EIO and leaves it unreadable"
ok snapshot delete vol0@s1
v "$(uri vol0)" heal $BAD || fail "heal"
ok scrub --wait
grep -q "scrub pass 3 done in .*1 of 1 volumes, 1024 blocks checked .* 0 damaged" "$T/out" ||
	fail "scrub after the heal: $(cat "$T/out")"
echo "ok: after the heal a scrub is clean"
cowbd_stop
check_pool "after the damaged block was overwritten"
