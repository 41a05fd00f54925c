#!/bin/bash
# data_qemu.sh — qemu's NBD client and nbdcopy against cowbd, byte for byte.
# A 32 MiB random image with zero runs is imported with `qemu-img convert
# -n` (parallel, out of order: -W) into a volume pre-filled with 0xff, so
# the image's zero runs must really be written as zeroes; `qemu-img compare`
# proves equality.  qemu-io then writes aligned and unaligned patterns,
# write-zeroes and discards, and reads them back with -P; the same edits are
# applied to the local image and the whole volume is compared again.
# nbdcopy round trips (NBD -> file, file -> NBD, NBD -> NBD) are compared
# with cmp.  Finally one FLUSH, kill -9, restart: everything compares again.
. "$(dirname "$0")/lib.sh"
requires qemu-img qemu-io nbdcopy nbdsh cmp
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] || fail "build/cowbd or build/cowctl missing"

M=$((1 << 20))
SRC="$T/src.raw"
# a 32 MiB image: random data with zero runs (some aligned, some not)
/usr/bin/python3 - "$SRC" <<'PY' || fail "make image"
import random, sys
rng = random.Random(42)
img = bytearray(rng.randbytes(32 << 20))
for off, n in [(0, 65536), (3 << 20, 1 << 20), (5 << 20, 4096), (7 << 20, 2 << 20),
               ((12 << 20) + 512, 3 * 4096), ((20 << 20) + 100, 200000)]:
    img[off:off + n] = bytes(n)
open(sys.argv[1], "wb").write(img)
PY

cowbd_start
cowctl volume create vol0 32M >/dev/null || fail "volume create vol0"
cowctl volume create vol1 32M >/dev/null || fail "volume create vol1"
cowctl volume create vol2 32M >/dev/null || fail "volume create vol2"
U0=$(uri vol0) U1=$(uri vol1) U2=$(uri vol2)

compare() { # WHAT IMAGE URI
	qemu-img compare -f raw -F raw "$2" "$3" >"$T/cmp.out" 2>&1 ||
		fail "$1: qemu-img compare: $(cat "$T/cmp.out")"
	echo "ok: $1: $(cat "$T/cmp.out")"
}
qio() { # URI CMDS...: qemu-io on an NBD URI or a local raw file
	local target=$1; shift
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	qemu-io -f raw "${args[@]}" "$target" >"$T/qio.out" 2>&1 ||
		fail "qemu-io $target $*: $(cat "$T/qio.out")"
	grep -qi 'pattern verification failed\|error\|failed' "$T/qio.out" &&
		fail "qemu-io $target: $(cat "$T/qio.out")"
	return 0
}

# pre-fill with 0xff so the image's zero runs must be written for real
qio "$U0" "write -P 0xff 0 32M" "flush"
qio "$U0" "read -P 0xff 0 32M"
qemu-img convert -n -W -f raw -O raw "$SRC" "$U0" >"$T/conv.out" 2>&1 ||
	fail "qemu-img convert: $(cat "$T/conv.out")"
compare "after qemu-img convert" "$SRC" "$U0"
# the compare is not vacuous: one differing byte is noticed
qio "$U1" "write -P 0x01 0 32M"
qemu-img compare -f raw -F raw "$SRC" "$U1" >/dev/null 2>&1 &&
	fail "qemu-img compare saw no difference against a different volume"

# qemu-io: aligned, unaligned, crossing blocks, zeroes and discard; applied
# identically to the local image so the whole volume can be compared again
EDITS=(
	"write -P 0xab 1M 64k"
	"write -P 0xcd 4097 1000"
	"write -P 0x5a 8191 2"
	"write -P 0x11 $((9 * M - 100)) 300000"
	"write -z $((10 * M)) 128k"
	"write -z 12345 5000"
	"write -P 0x77 $((32 * M - 4096)) 4096"
	"aio_write -P 0x22 $((16 * M)) 512k"
	"aio_write -P 0x33 $((17 * M + 7)) 4096"
	"aio_flush"
)
qio "$U0" "${EDITS[@]}" "flush"
qio "$SRC" "${EDITS[@]}"
qio "$U0" "read -P 0xab 1M 64k" "read -P 0xcd 4097 1000" "read -P 0x5a 8191 2" \
	"read -P 0x11 $((9 * M - 100)) 300000" "read -P 0 $((10 * M)) 128k" \
	"read -P 0 12345 5000" "read -P 0x77 $((32 * M - 4096)) 4096" \
	"read -P 0x22 $((16 * M)) 512k" "read -P 0x33 $((17 * M + 7)) 4096"
echo "ok: qemu-io patterns read back"
compare "after qemu-io edits" "$SRC" "$U0"
# discard: cowbd reads trimmed ranges as zeroes
qio "$U0" "discard $((20 * M)) 1M" "read -P 0 $((20 * M)) 1M" "flush"
qio "$SRC" "write -z $((20 * M)) 1M"
compare "after discard" "$SRC" "$U0"

# nbdcopy round trips
nbdcopy "$U0" "$T/out0.raw" || fail "nbdcopy vol0 -> file"
cmp "$SRC" "$T/out0.raw" || fail "nbdcopy vol0 -> file differs"
nbdcopy "$U0" "$U1" || fail "nbdcopy vol0 -> vol1"
nbdcopy "$U1" "$T/out1.raw" || fail "nbdcopy vol1 -> file"
cmp "$SRC" "$T/out1.raw" || fail "nbdcopy vol0 -> vol1 -> file differs"
head -c $((32 * M)) /dev/urandom >"$T/rnd.raw"
nbdcopy --flush "$T/rnd.raw" "$U2" || fail "nbdcopy file -> vol2"
nbdcopy "$U2" "$T/out2.raw" || fail "nbdcopy vol2 -> file"
cmp "$T/rnd.raw" "$T/out2.raw" || fail "nbdcopy file -> vol2 -> file differs"
echo "ok: nbdcopy round trips"

# one FLUSH per volume on a fresh connection covers the other connections'
# completed writes; kill -9 and everything compares again
for v in vol0 vol1 vol2; do
	nbdsh -u "$(uri $v)" -c "h.flush()" || fail "flush $v"
done
cowbd_kill9
cowbd_restart
compare "vol0 after kill -9" "$SRC" "$U0"
compare "vol1 after kill -9" "$SRC" "$U1"
compare "vol2 after kill -9" "$T/rnd.raw" "$U2"
cowbd_stop
"$BUILD/cowbd-check" "$POOL" >"$T/check.out" 2>&1 || fail "cowbd-check: $(cat "$T/check.out")"
echo "data_qemu: all checks passed"
