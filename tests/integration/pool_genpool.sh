#!/bin/bash
# pool_genpool.sh — the scale-test generator (tools/cowbd-genpool.c): the pool
# it makes without writing its data costs a few percent of the mapped bytes
# on disk, is clean to cowbd-check (every data block verified against its
# summary CRC; at format version 3 every count page against the counts
# recomputed from the trees), and cowbd serves it: the volumes and
# snapshots asked for, every mapped block reads as zeroes and is reported
# allocated, and the churn between two snapshots is exactly the stripe the
# generator rewrote.  By default it writes the version cowbd makes new
# pools at (5: segment tables with lives, 126 segments per table); version 4
# and 2 pools of the same shape are clean too, and cowbd opens them and
# upgrades them (version 4 at its first checkpoint, which rewrites every
# segment table in the version 5 form).  Usage errors exit 2 and an
# existing file is never touched.
. "$(dirname "$0")/lib.sh"
requires nbdinfo /usr/bin/python3
G="$BUILD/cowbd-genpool"
[ -x "$G" ] || fail "$G missing"

# The version of a new pool.
POOL_SIZE=64M cowbd_start
cowbd_stop
CUR=$(pool_version)
rm -f "$POOL"

"$G" >"$T/out" 2>&1; rc=$?
[ $rc -eq 2 ] || fail "no arguments: exit $rc, want 2"
"$G" "$T/x.img" --size 1G --blocks 10 --churn 101 >"$T/out" 2>&1; rc=$?
[ $rc -eq 2 ] || fail "--churn 101: exit $rc, want 2"
"$G" "$T/x.img" --size 1Q --blocks 10 >"$T/out" 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q -- "--size" "$T/out" || fail "--size 1Q: exit $rc: $(cat "$T/out")"
for v in 1 $((CUR + 1)); do
	"$G" "$T/x.img" --size 1G --blocks 10 --format-version $v >"$T/out" 2>&1; rc=$?
	[ $rc -eq 2 ] || fail "--format-version $v: exit $rc, want 2"
done
echo keep >"$T/exists"
"$G" "$T/exists" --size 1G --blocks 10 >"$T/out" 2>&1; rc=$?
[ $rc -eq 1 ] && [ "$(cat "$T/exists")" = keep ] || fail "an existing file: exit $rc, or changed"
echo "ok: usage errors and an existing file"

N=200000 CHURN=5
"$G" "$POOL" --size 2G --blocks $N --volumes 2 --snapshots 4 --churn $CHURN >"$T/gen.out" 2>&1 ||
	fail "generation failed: $(cat "$T/gen.out")"
cat "$T/gen.out"
grep -q "format version $CUR" "$T/gen.out" && [ "$(pool_version)" = "$CUR" ] ||
	fail "not version $CUR (a new pool's): $(cat "$T/gen.out")"
used=$(du -k "$POOL" | cut -f1)
[ "$used" -lt $((N * 4 / 20)) ] || fail "the pool uses $used KiB on disk for $((N * 4)) KiB mapped"
echo "ok: $((N * 4)) KiB mapped in $used KiB of disk"
check_pool "after generation"

PORT=$(random_port)
cowbd_restart
ok --json volume list
/usr/bin/python3 - "$T/out" "$N" <<'PY' || fail "volume list: $(cat "$T/out")"
import json, sys
v = json.load(open(sys.argv[1]))
vols = v if isinstance(v, list) else v.get("volumes", v)
names = sorted(x["name"] for x in vols)
assert names[:2] == ["vol0", "vol1"], names
PY
ok --json snapshot list
for s in vol0@s0 vol0@s1 vol1@s0 vol1@s1; do
	grep -q "\"$s\"" "$T/out" || fail "snapshot $s missing: $(cat "$T/out")"
done
half=$((N / 2)) stripe=$((N / 2 * CHURN / 100))
/usr/bin/python3 - "$(uri vol0)" "$half" <<'PY' || fail "vol0's data"
import sys, nbd
h = nbd.NBD(); h.add_meta_context("base:allocation"); h.connect_uri(sys.argv[1]); n = int(sys.argv[2])
for lba in (0, 1, n // 2, n - 1):
    assert h.pread(4096, lba * 4096) == bytes(4096), lba
mapped = []
def cb(ctx, off, ents, err):
    for i in range(0, len(ents), 2):
        mapped.append((off, ents[i], ents[i + 1] & 1)); off += ents[i]
    return 0
at = 0
while at < n * 4096:
    before = len(mapped)
    h.block_status(n * 4096 - at, at, cb)
    at = mapped[-1][0] + mapped[-1][1]
holes = [m for m in mapped if m[2]]
assert not holes, holes[:3]
PY
echo "ok: vol0's $half blocks read as zeroes and are allocated"
nbdinfo --map=qemu:dirty-bitmap:s0 "$(uri vol0@s1)" >"$T/map" 2>&1 || fail "nbdinfo: $(cat "$T/map")"
dirty=$(awk '$3 == 1 { n += $2 } END { print n + 0 }' "$T/map")
first=$(awk '$3 == 1 { print $1; exit }' "$T/map")
[ "$dirty" -eq $((stripe * 4096)) ] && [ "$first" -eq 0 ] ||
	fail "vol0@s1 since s0: $dirty bytes dirty from $first, want $((stripe * 4096)) from 0: $(head "$T/map")"
echo "ok: vol0@s1 differs from vol0@s0 in exactly the rewritten stripe ($stripe blocks)"
cowbd_stop
check_pool "after serving"

# The same shape at versions 4 and 2: clean, and cowbd opens and upgrades it.
for v in 4 2; do
	[ $v -lt "$CUR" ] || continue
	rm -f "$POOL"
	"$G" "$POOL" --size 2G --blocks $N --volumes 2 --snapshots 4 --churn $CHURN \
		--format-version $v >"$T/gen.out" 2>&1 ||
		fail "version $v generation failed: $(cat "$T/gen.out")"
	grep -q "format version $v" "$T/gen.out" && [ "$(pool_version)" = $v ] ||
		fail "not version $v: $(cat "$T/gen.out")"
	check_pool "after generation at version $v"
	[ "$(pool_version)" = $v ] || fail "cowbd-check changed the version $v pool"
	cowbd_restart
	ok --json snapshot list
	grep -q '"vol1@s1"' "$T/out" || fail "version $v: snapshot vol1@s1 missing: $(cat "$T/out")"
	ok checkpoint
	[ "$(pool_version)" = "$CUR" ] || fail "version $v: at version $(pool_version) after a checkpoint"
	cowbd_stop
	check_pool "after serving the version $v pool (now at version $CUR)"
done
