#!/bin/bash
# nbd_structured.sh — structured replies, base:allocation and the info
# and command extras, as real clients see them:
#   nbdinfo: contexts, can_df/can_cache/can_fast_zero, description (INFO and LIST)
#   libnbd: READ chunks (data vs hole, DF = one chunk), BLOCK_STATUS with and
#           without REQ_ONE against a model of what was written, CACHE,
#           FAST_ZERO, WRITE_ZEROES with and without NO_HOLE
#   nbdinfo --map, qemu-img map: the allocation the model predicts
#   qemu-img convert, nbdcopy: copies are sparse and byte-identical
#   qemu-io: reads and writes patterns through the same server
#   raw socket: error chunks, NONE chunk for a zero-length READ
. "$(dirname "$0")/lib.sh"
requires nbdsh nbdinfo
[ -x "$BUILD/cowctl" ] || { echo "requires $BUILD/cowctl (not built yet)"; exit 77; }
RAW="$(dirname "$0")/nbd_raw.py"
M=$((1 << 20))

cowbd_start --unix "$T/nbd.sock"
cowctl volume create vol0 64M >/dev/null || fail "volume create"

out=$(nbdinfo "$(uri vol0)") || fail "nbdinfo"
for want in "using structured packets" "base:allocation" "can_df: true" "can_cache: true" \
	"can_fast_zero: true" "description: volume, 67108864 bytes" "block_size_preferred: 4096"; do
	grep -q "$want" <<<"$out" || fail "nbdinfo lacks '$want': $out"
done

# Layout: data at [1M, 1M+8K) and [5M, 5M+4K); [6M, 6M+4K) written with zero
# bytes (allocated, reads zero); [9M, 9M+64K) written then trimmed;
# [10M, 10M+64K) written then zeroed with NO_HOLE; the rest never written.
/usr/bin/python3 - "$(uri vol0)" <<'PY' || fail "structured replies / block status"
import sys, nbd
M = 1 << 20
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(sys.argv[1])
assert h.get_structured_replies_negotiated()
assert h.can_meta_context("base:allocation") and h.can_df() and h.can_cache()
assert h.can_fast_zero()
h.pwrite(b"a" * 8192, 1 * M)
h.pwrite(b"b" * 4096, 5 * M)
h.pwrite(bytes(4096), 6 * M)
h.pwrite(b"t" * 65536, 9 * M)
h.trim(65536, 9 * M)
h.pwrite(b"z" * 65536, 10 * M)
h.zero(65536, 10 * M, nbd.CMD_FLAG_NO_HOLE)
h.zero(4096, 20 * M, nbd.CMD_FLAG_FAST_ZERO)
h.cache(4 * M, 0)
h.flush()

# READ chunks: holes where the bytes are zero, data elsewhere, tiling the range
chunks = []
def cb(sub, off, status, err):
    chunks.append((off, len(sub), status))
    return 0
buf = h.pread_structured(12 * M, 0, cb)
exp = bytearray(12 * M)
exp[1 * M:1 * M + 8192] = b"a" * 8192
exp[5 * M:5 * M + 4096] = b"b" * 4096
assert buf == exp, "content"
chunks.sort()
pos = 0
for off, n, st in chunks:
    assert off == pos, (off, pos, chunks)
    pos += n
assert pos == 12 * M
kinds = [(off, n, st) for off, n, st in chunks]
want = [(0, 1 * M, nbd.READ_HOLE), (1 * M, 8192, nbd.READ_DATA),
        (1 * M + 8192, 4 * M - 8192, nbd.READ_HOLE), (5 * M, 4096, nbd.READ_DATA),
        (5 * M + 4096, 7 * M - 4096, nbd.READ_HOLE)]
assert kinds == want, kinds
print("ok read chunks:", len(chunks))

# DF: one data chunk, even over holes
chunks.clear()
h.pread_structured(2 * M, 0, cb, nbd.CMD_FLAG_DF)
assert chunks == [(0, 2 * M, nbd.READ_DATA)], chunks
# unaligned read inside data, and across a data/hole edge
chunks.clear()
assert h.pread_structured(100, 1 * M + 8100, cb) == b"a" * 92 + bytes(8)
assert sorted(chunks) == [(1 * M + 8100, 92, nbd.READ_DATA), (1 * M + 8192, 8, nbd.READ_HOLE)], chunks

# BLOCK_STATUS: the allocation map (written zeroes are data; trimmed and
# NO_HOLE-zeroed ranges are holes: cowbd always unmaps)
ext = []
def bs(ctx, off, entries, err):
    assert ctx == "base:allocation"
    ext.append((off, list(entries)))
    return 0
def runs(off, length, flags=0):
    ext.clear()
    h.block_status(length, off, bs, flags)
    assert len(ext) == 1
    start, e = ext[0]
    assert start == off
    out, pos = [], off
    for i in range(0, len(e), 2):
        out.append((pos, e[i], e[i + 1]))
        pos += e[i]
    return out
HZ = nbd.STATE_HOLE | nbd.STATE_ZERO
got = runs(0, 64 * M)
want = [(0, 1 * M, HZ), (1 * M, 8192, 0), (1 * M + 8192, 4 * M - 8192, HZ),
        (5 * M, 4096, 0), (5 * M + 4096, 1 * M - 4096, HZ), (6 * M, 4096, 0),
        (6 * M + 4096, 58 * M - 4096, HZ)]
assert got == want, got
# REQ_ONE: a single extent, starting at the offset, within the request
assert runs(1 * M + 4096, 4 * M, nbd.CMD_FLAG_REQ_ONE) == [(1 * M + 4096, 4096, 0)]
assert runs(0, 64 * M, nbd.CMD_FLAG_REQ_ONE) == [(0, 1 * M, HZ)]
assert runs(3 * M, 4096, nbd.CMD_FLAG_REQ_ONE) == [(3 * M, 4096, HZ)]
# unaligned request: first extent starts at the request offset
assert runs(1 * M + 100, 200) == [(1 * M + 100, 200, 0)]
h.shutdown()
print("ok block status")
PY

# What nbdinfo --map and qemu-img map say must match the model.
map=$(nbdinfo --map "$(uri vol0)") || fail "nbdinfo --map"
want="0 1048576 3 hole,zero
1048576 8192 0 data
1056768 4186112 3 hole,zero
5242880 4096 0 data
5246976 1044480 3 hole,zero
6291456 4096 0 data
6295552 60813312 3 hole,zero"
[ "$(awk '{print $1, $2, $3, $4}' <<<"$map")" = "$want" ] || fail "nbdinfo --map: $map"
# The same over the unix socket.
[ "$(nbdinfo --map "nbd+unix:///vol0?socket=$T/nbd.sock" | awk '{print $1, $2, $3, $4}')" = "$want" ] ||
	fail "nbdinfo --map over the unix socket"
echo "ok nbdinfo --map"

if command -v qemu-img >/dev/null; then
	qmap=$(qemu-img map --output=json "$(uri vol0)") || fail "qemu-img map"
	/usr/bin/python3 - "$qmap" <<'PY' || fail "qemu-img map: $qmap"
import json, sys
M = 1 << 20
m = [(e["start"], e["length"], e["data"], e["zero"]) for e in json.loads(sys.argv[1])]
data = [(s, n) for s, n, d, z in m if d]
assert data == [(1 * M, 8192), (5 * M, 4096), (6 * M, 4096)], m
assert all(z for s, n, d, z in m if not d), m
assert sum(n for s, n, d, z in m) == 64 * M
PY
	echo "ok qemu-img map"
	# convert to a local file: sparse, identical
	qemu-img convert -O raw "$(uri vol0)" "$T/copy.raw" || fail "qemu-img convert"
	qemu-img compare -f raw -F raw "$T/copy.raw" "$(uri vol0)" >/dev/null || fail "qemu-img compare"
	used=$(du -k "$T/copy.raw" | cut -f1)
	[ "$used" -le 1024 ] || fail "qemu-img convert copy not sparse: $used KiB used"
	# and back into a new volume: only the data becomes allocated
	cowctl volume create vol1 64M >/dev/null || fail "volume create vol1"
	qemu-img convert -n -O raw "$T/copy.raw" "$(uri vol1)" || fail "qemu-img convert to nbd"
	qemu-img compare -f raw -F raw "$T/copy.raw" "$(uri vol1)" >/dev/null || fail "compare vol1"
	mapped=$(nbdinfo --map "$(uri vol1)" | awk '$3 == 0 {n += $2} END {print n + 0}')
	[ "$mapped" -le $((64 * 1024)) ] || fail "qemu-img convert allocated $mapped bytes in vol1"
	echo "ok qemu-img convert (copy uses $used KiB; vol1 has $mapped bytes mapped)"
fi

if command -v nbdcopy >/dev/null; then
	nbdcopy "$(uri vol0)" "$T/copy2.raw" || fail "nbdcopy out"
	cmp "$T/copy2.raw" "$T/copy.raw" 2>/dev/null || [ ! -e "$T/copy.raw" ] || fail "nbdcopy content"
	used=$(du -k "$T/copy2.raw" | cut -f1)
	[ "$used" -le 1024 ] || fail "nbdcopy copy not sparse: $used KiB used"
	cowctl volume create vol2 64M >/dev/null || fail "volume create vol2"
	nbdcopy "$T/copy2.raw" "$(uri vol2)" || fail "nbdcopy in"
	mapped=$(nbdinfo --map "$(uri vol2)" | awk '$3 == 0 {n += $2} END {print n + 0}')
	[ "$mapped" -le $((64 * 1024)) ] || fail "nbdcopy allocated $mapped bytes in vol2"
	nbdcopy "$(uri vol2)" "$T/copy3.raw" && cmp "$T/copy2.raw" "$T/copy3.raw" || fail "nbdcopy round trip"
	echo "ok nbdcopy (copy uses $used KiB; vol2 has $mapped bytes mapped)"
fi

if command -v qemu-io >/dev/null; then
	qemu-io -f raw "$(uri vol0)" -c "read -P 0x61 1M 8K" -c "read -P 0 2M 1M" \
		-c "write -P 0x77 30M 64K" -c "read -P 0x77 30M 64K" -c "write -z 30M 4K" \
		-c "read -P 0 30M 4K" -c "flush" >"$T/qio.out" 2>&1 ||
		fail "qemu-io: $(cat "$T/qio.out")"
	grep -qi "fail\|error\|mismatch" "$T/qio.out" && fail "qemu-io: $(cat "$T/qio.out")"
	echo "ok qemu-io"
fi

# Option and LIST descriptions
out=$(nbdinfo --list "nbd://127.0.0.1:$PORT/") || fail "nbdinfo --list"
grep -q "description: volume, 67108864 bytes" <<<"$out" || fail "list descriptions: $out"

COWBD_PID=$COWBD_PID /usr/bin/python3 "$RAW" "$PORT" structured_raw meta_raw || fail "raw structured"
kill -0 "$COWBD_PID" || fail "cowbd died"
cowbd_stop
echo "structured replies ok"
