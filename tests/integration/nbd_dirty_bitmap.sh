#!/bin/bash
# nbd_dirty_bitmap.sh — qemu:dirty-bitmap:SNAP and qemu:allocation-depth as
# real clients see them, and an incremental backup made with standard tools:
#   nbdinfo: the contexts listed for a volume and for a snapshot
#   libnbd (nbdsh): block status of qemu:dirty-bitmap:s1 on vol0@s2 and on
#           vol0 (live), and of qemu:allocation-depth on vol0 and a clone,
#           against a model of the writes the test made (every written
#           block dirty, no other; depth 0/1/2 as written where)
#   nbdinfo --map: the same dirty map, as a backup script would read it
#   backup: nbdcopy of vol0@s1, then only the dirty extents of vol0@s2
#           against s1 copied into it: cmp equals vol0@s2 byte for byte
#           (and did not before the increment)
#   qemu-img map with x-dirty-bitmap, when qemu-img supports it
#   raw socket (nbd_raw.py qemu_meta_raw): LIST/SET replies, ids, one
#           chunk per context, unknown and other volumes' names ignored
. "$(dirname "$0")/lib.sh"
export PATH="/usr/bin:$PATH"
requires nbdsh nbdinfo nbdcopy cmp
[ -x "$BUILD/cowctl" ] || { echo "requires $BUILD/cowctl (not built yet)"; exit 77; }
RAW="$(dirname "$0")/nbd_raw.py"

cowbd_start
ok volume create vol0 64M
ok volume create vol1 16M
ok snapshot create vol1@x

# The workload: a driver that writes and keeps a model (a version per 4 KiB
# block: each write a new one, trim/zero a hole) in $T/model.json.
cat >"$T/work.py" <<'PY'
import json, os, sys, nbd
uri, step, path = sys.argv[1], sys.argv[2], sys.argv[3]
B = 4096
model = json.load(open(path)) if os.path.exists(path) else {"next": 0, "ver": {}}
ver = {int(k): v for k, v in model["ver"].items()}
h = nbd.NBD()
h.connect_uri(uri)
def data(v, n):
    return (b"%08d" % v) * (n // 8) + b"x" * (n % 8)
def write(off, n):
    for b in range(off // B, (off + n + B - 1) // B):
        model["next"] += 1
        ver[b] = model["next"]
    h.pwrite(data(model["next"], n), off)
def hole(off, n, how):
    assert off % B == 0 and n % B == 0
    (h.trim if how == "trim" else h.zero)(n, off)
    for b in range(off // B, (off + n) // B):
        ver.pop(b, None)
M = 1 << 20
if step == "base":
    write(0, 4 * M)
    write(8 * M, 256 * 1024)
    write(20 * M + 100, 5000)
    write(40 * M, 8 * M)
elif step == "s2":
    write(1 * M, 64 * 1024)          # inside data written before
    write(3 * M + 4000, 200)         # a partial write across a block edge
    write(30 * M, 12 * 1024)         # where nothing was
    hole(8 * M, 128 * 1024, "trim")  # data trimmed
    hole(44 * M, 1 * M, "zero")      # data zeroed
    hole(60 * M, 64 * 1024, "trim")  # a hole trimmed: unchanged
    for i in range(64):              # scattered single blocks
        write(40 * M + i * 32 * 1024, B)
elif step == "live":
    write(50 * M, 8192)
    hole(0, 256 * 1024, "zero")
h.flush()
h.shutdown()
model["ver"] = ver
json.dump(model, open(path, "w"))
PY
# the model of a snapshot is a copy taken when it is made
work() { /usr/bin/python3 "$T/work.py" "$(uri "$1")" "$2" "$T/model.json" || fail "workload $2"; }
work vol0 base
ok snapshot create vol0@s1
cp "$T/model.json" "$T/s1.json"
work vol0 s2
ok snapshot create vol0@s2
cp "$T/model.json" "$T/s2.json"
work vol0 live
cp "$T/model.json" "$T/live.json"

# Listing: every snapshot of the export's volume, the depth, base:allocation
for exp in vol0 vol0@s2; do
	out=$(nbdinfo "$(uri "$exp")") || fail "nbdinfo $exp"
	for want in base:allocation qemu:allocation-depth qemu:dirty-bitmap:s1 qemu:dirty-bitmap:s2; do
		grep -q "$want" <<<"$out" || fail "nbdinfo $exp lacks $want: $out"
	done
	grep -q "qemu:dirty-bitmap:x" <<<"$out" && fail "vol1's snapshot listed for $exp"
done
out=$(nbdinfo "$(uri vol1)") || fail "nbdinfo vol1"
grep -q "qemu:dirty-bitmap:x" <<<"$out" || fail "vol1 lacks its bitmap: $out"
grep -q "qemu:dirty-bitmap:s1" <<<"$out" && fail "vol0's snapshot listed for vol1"
# --list: every export with its own contexts (vol1@x: x, not s1)
nbdinfo --list --json "nbd://127.0.0.1:$PORT/" >"$T/list.json" || fail "nbdinfo --list"
/usr/bin/python3 - "$T/list.json" <<'PY' || fail "nbdinfo --list contexts"
import json, sys
ex = {e["export-name"]: set(e.get("contexts", [])) for e in json.load(open(sys.argv[1]))["exports"]}
d = lambda *s: {"base:allocation", "qemu:allocation-depth"} | {"qemu:dirty-bitmap:" + x for x in s}
want = {"vol0": d("s1", "s2"), "vol0@s1": d("s1", "s2"), "vol0@s2": d("s1", "s2"),
        "vol1": d("x"), "vol1@x": d("x")}
assert ex == want, ex
PY
echo "ok listing"

# Block status through libnbd against the model: dirty exactly where the
# versions differ (every written block, no other), in pieces of any size.
cat >"$T/check.py" <<'PY'
import json, sys, nbd
uri, ctx, older, newer = sys.argv[1:5]
B = 4096
def load(p):
    return {int(k): v for k, v in json.load(open(p))["ver"].items()}
a, b = load(older), load(newer)
h = nbd.NBD()
h.add_meta_context(ctx)
h.connect_uri(uri)
assert h.can_meta_context(ctx), ctx
size = h.get_size()
got = {}
def cb(metacontext, offset, entries, err):
    if metacontext != ctx:
        return 0
    pos = offset
    for i in range(0, len(entries), 2):
        n, flags = entries[i], entries[i + 1]
        assert n > 0, (offset, n)
        # a request of unaligned length ends in part of a block: the next
        # one starts there, and both must say the same of it
        for blk in range(pos // B, (pos + n + B - 1) // B):
            assert got.setdefault(blk, flags) == flags, (blk, got[blk], flags)
        pos += n
    last[0] = pos
    return 0
last = [0]
off = 0
step = int(sys.argv[5]) if len(sys.argv) > 5 else size
while off < size:
    h.block_status(min(step, size - off), off, cb)
    assert last[0] > off
    off = last[0]
if ctx.startswith("qemu:dirty-bitmap:"):
    want = {blk: int(a.get(blk) != b.get(blk)) for blk in range(size // B)}
else:  # depth along b's chain, where a is the origin snapshot's model (or None)
    want = {blk: 0 if blk not in b else 2 if a.get(blk) == b[blk] else 1 for blk in range(size // B)}
bad = [blk for blk in range(size // B) if got.get(blk) != want[blk]]
assert not bad, "%s: %d blocks differ, first %r: got %r want %r" % (
    ctx, len(bad), bad[:5], [got.get(x) for x in bad[:5]], [want[x] for x in bad[:5]])
print("ok %s on %s: %d of %d blocks flagged" % (ctx, uri.rsplit("/", 1)[1],
      sum(1 for v in got.values() if v), size // B))
PY
check() { /usr/bin/python3 "$T/check.py" "$@" || fail "block status $2 on $1"; }
check "$(uri vol0@s2)" qemu:dirty-bitmap:s1 "$T/s1.json" "$T/s2.json"
check "$(uri vol0@s2)" qemu:dirty-bitmap:s1 "$T/s1.json" "$T/s2.json" 1234567
check "$(uri vol0)" qemu:dirty-bitmap:s1 "$T/s1.json" "$T/live.json"
check "$(uri vol0)" qemu:dirty-bitmap:s2 "$T/s2.json" "$T/live.json"
# a snapshot newer than the export: the blocks that differ between them
check "$(uri vol0@s1)" qemu:dirty-bitmap:s2 "$T/s2.json" "$T/s1.json"
check "$(uri vol0@s2)" qemu:dirty-bitmap:s2 "$T/s2.json" "$T/s2.json"
echo '{"next": 0, "ver": {}}' >"$T/none.json"
check "$(uri vol0)" qemu:allocation-depth "$T/none.json" "$T/live.json"

# Allocation depth of a clone of s1: 1 where the clone wrote, 2 inherited
ok clone vol0@s1 c1
cp "$T/s1.json" "$T/model.json"
work c1 live
check "$(uri c1)" qemu:allocation-depth "$T/s1.json" "$T/model.json"
echo "ok libnbd block status"

# nbdinfo --map as a backup script reads it, then the incremental backup:
# a full copy of s1, and of s2 only what the bitmap calls dirty.
nbdinfo --json --map=qemu:dirty-bitmap:s1 "$(uri vol0@s2)" >"$T/map.json" ||
	fail "nbdinfo --map qemu:dirty-bitmap:s1"
nbdcopy "$(uri vol0@s1)" "$T/backup.img" || fail "nbdcopy of vol0@s1"
nbdcopy "$(uri vol0@s2)" "$T/s2.img" || fail "nbdcopy of vol0@s2"
cmp -s "$T/backup.img" "$T/s2.img" && fail "s1 and s2 read the same: the test proves nothing"
/usr/bin/python3 - "$T/map.json" "$T/s1.json" "$T/s2.json" <<'PY' || fail "nbdinfo --map"
import json, sys
ext = json.load(open(sys.argv[1]))
a, b = ({int(k): v for k, v in json.load(open(p))["ver"].items()} for p in sys.argv[2:4])
dirty = set()
pos = 0
for e in ext:
    assert e["offset"] == pos, e
    pos += e["length"]
    if e["type"] & 1:
        dirty.update(range(e["offset"] // 4096, (e["offset"] + e["length"]) // 4096))
want = {blk for blk in set(a) | set(b) if a.get(blk) != b.get(blk)}
assert dirty == want, (sorted(dirty - want)[:5], sorted(want - dirty)[:5])
print("ok nbdinfo --map: %d dirty extents, %d blocks" % (sum(e["type"] & 1 for e in ext), len(dirty)))
PY
nbdsh -u "$(uri vol0@s2)" -c "
import json
out = open('$T/backup.img', 'r+b')
copied = 0
for e in json.load(open('$T/map.json')):
    if e['type'] & 1:
        out.seek(e['offset'])
        out.write(h.pread(e['length'], e['offset']))
        copied += e['length']
print('incremental: %d bytes copied' % copied)
" || fail "applying the dirty extents"
cmp "$T/backup.img" "$T/s2.img" || fail "backup of s1 + dirty extents differs from vol0@s2"
echo "ok incremental backup"

# qemu-img's x-dirty-bitmap reports a dirty extent as not data
if command -v qemu-img >/dev/null; then
	opts="driver=nbd,export=vol0@s2,server.type=inet,server.host=127.0.0.1,server.port=$PORT"
	if qemu-img map --output=json --image-opts "$opts,x-dirty-bitmap=qemu:dirty-bitmap:s1" \
		>"$T/qmap.json" 2>"$T/qmap.err"; then
		/usr/bin/python3 - "$T/qmap.json" "$T/map.json" <<'PY' || fail "qemu-img map x-dirty-bitmap"
import json, sys
q = json.load(open(sys.argv[1]))
n = json.load(open(sys.argv[2]))
def blocks(ext, key, dirty_if):
    s = set()
    for e in ext:
        if dirty_if(e):
            s.update(range(e[key[0]] // 4096, (e[key[0]] + e[key[1]]) // 4096))
    return s
got = blocks(q, ("start", "length"), lambda e: not e["data"])
want = blocks(n, ("offset", "length"), lambda e: e["type"] & 1)
assert got == want, (sorted(got ^ want)[:5])
print("ok qemu-img map x-dirty-bitmap: %d dirty blocks" % len(got))
PY
	else
		echo "skip qemu-img map x-dirty-bitmap: $(head -n 1 "$T/qmap.err")"
	fi
fi

COWBD_PID=$COWBD_PID /usr/bin/python3 "$RAW" "$PORT" qemu_meta_raw || fail "raw meta contexts"
kill -0 "$COWBD_PID" || fail "cowbd died"
cowbd_stop
echo "dirty bitmaps ok"
