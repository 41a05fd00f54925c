#!/bin/bash
# nbd_exthdr.sh — extended headers (NBD_OPT_EXTENDED_HEADERS) and 64 MiB
# requests, by hand and from the clients that speak them:
#   raw socket (nbd_raw.py ext_*): every request and reply form — extended
#           request and reply headers for NONE, OFFSET_DATA/HOLE, ERROR and
#           ERROR_OFFSET, BLOCK_STATUS_EXT over a 1 TiB thin volume in one
#           reply (base:allocation, qemu:allocation-depth,
#           qemu:dirty-bitmap:s1), the BLOCK_STATUS payload filter,
#           PAYLOAD_LEN writes and misplaced payloads, the refusals (compact
#           header after negotiation, EXPORT_NAME, a payload over 64 MiB),
#           64 MiB round trips in both header styles, 64 MiB + 1 refused
#   Debian 13 clients in a trixie chroot (tests/lib/trixie.sh, cached in
#           $BUILD/trixie; skipped with the reason when it cannot be made):
#           libnbd >= 1.18 (nbdinfo, nbdinfo --map, nbdsh with its python3,
#           nbdcopy) and qemu-img >= 8.2 — each connection checked in
#           cowbd's log to have negotiated extended headers
# Layout of big (1 TiB): 4 KiB written at 0 and at 512 GiB, snapshot s1,
# 4 KiB at 768 GiB.
. "$(dirname "$0")/lib.sh"
requires nbdsh md5sum
[ -x "$BUILD/cowctl" ] || { echo "requires $BUILD/cowctl (not built yet)"; exit 77; }
RAW="$(dirname "$0")/nbd_raw.py"
G=$((1 << 30))

POOL_SIZE=1G cowbd_start --verbose
ok volume create vol0 256M
ok volume create big 1T
poke() { # VOLUME OFFSET BYTE: 4 KiB of BYTE at OFFSET (compact, host libnbd)
	/usr/bin/python3 -c "import sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(sys.argv[3].encode() * 4096, int(sys.argv[2])); h.flush(); h.shutdown()" \
		"$(uri "$1")" "$2" "$3" || fail "write $1 at $2"
}
poke big 0 a
poke big $((512 * G)) b
ok snapshot create big@s1
poke big $((768 * G)) c

/usr/bin/python3 "$RAW" "$PORT" ext_requests ext_refusals ext_block_status ext_big_io \
	big_write_einval || fail "raw extended headers"
echo "PASS: raw extended headers and 64 MiB requests"

# ---- the real clients, from Debian 13 ---------------------------------------
R="$BUILD/trixie"
why=$(bash "$TOP/tests/lib/trixie.sh" "$R")
case $? in
0) [ -z "$why" ] || echo "$why" ;;
77) echo "SKIP: trixie clients ($why)"; cowbd_stop; exit 0 ;;
*) fail "trixie chroot: $why" ;;
esac
in_chroot() { chroot "$R" "$@"; }
ver=$(in_chroot nbdinfo --version | sed -n 's/^libnbd \([0-9.]*\).*/\1/p')
qver=$(in_chroot qemu-img --version | sed -n 's/^qemu-img version \([0-9.]*\).*/\1/p')
[ "$(printf '%s\n' 1.18 "$ver" | sort -V | head -n 1)" = 1.18 ] || fail "libnbd $ver < 1.18"
[ "$(printf '%s\n' 8.2 "$qver" | sort -V | head -n 1)" = 8.2 ] || fail "qemu-img $qver < 8.2"
echo "clients: libnbd $ver, qemu-img $qver"

# Every connection logged since mark must have negotiated extended headers
# (cowbd --verbose names the header style of each).
mark=$(wc -l <"$LOG")
all_extended() { # WHAT
	local s
	s=$(tail -n +"$((mark + 1))" "$LOG" | grep ': serving ') || fail "$1: no connection logged"
	grep -v 'with extended headers' <<<"$s" && fail "$1: a connection without extended headers"
	mark=$(wc -l <"$LOG")
}

out=$(in_chroot nbdinfo --no-content "$(uri big)") || fail "nbdinfo"
for want in "using extended packets" "block_size_maximum: 67108864" "export-size: $((1 << 40))"; do
	grep -q "$want" <<<"$out" || fail "nbdinfo lacks '$want': $out"
done
map=$(in_chroot nbdinfo --map "$(uri big)") || fail "nbdinfo --map"
want=$(printf '%s %s %s\n' 0 4096 0 4096 $((512 * G - 4096)) 3 $((512 * G)) 4096 0 \
	$((512 * G + 4096)) $((256 * G - 4096)) 3 $((768 * G)) 4096 0 $((768 * G + 4096)) \
	$((256 * G - 4096)) 3)
[ "$(awk '{print $1, $2, $3}' <<<"$map")" = "$want" ] || fail "nbdinfo --map: $map"
map=$(in_chroot nbdinfo --map=qemu:dirty-bitmap:s1 "$(uri big)") || fail "nbdinfo --map dirty"
want=$(printf '%s %s %s\n' 0 $((768 * G)) 0 $((768 * G)) 4096 1 $((768 * G + 4096)) \
	$((256 * G - 4096)) 0)
[ "$(awk '{print $1, $2, $3}' <<<"$map")" = "$want" ] || fail "nbdinfo --map dirty: $map"
all_extended "nbdinfo"
echo "PASS: nbdinfo and nbdinfo --map (base:allocation, qemu:dirty-bitmap:s1) over 1 TiB"

# nbdsh (python3-libnbd on the chroot's own python3): the whole map in one
# reply, the payload filter, 64 MiB requests.
cat >"$R/tmp/exthdr.py" <<'PY'
import os, sys
import nbd
T, G, M = 1 << 40, 1 << 30, 1 << 20
h = nbd.NBD()
for c in ("base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:s1"):
    h.add_meta_context(c)
h.connect_uri(sys.argv[1])
assert h.get_extended_headers_negotiated(), "extended headers not negotiated"
assert h.can_block_status_payload(), "BLOCK_STATUS_PAYLOAD not advertised"
assert h.get_block_size(nbd.SIZE_MAXIMUM) == 64 * M
calls = []
def cb(metacontext, offset, entries, err):
    calls.append((metacontext, offset, list(entries)))
    return 0
h.block_status_64(T, 0, cb)
got = {m: e for m, _, e in calls}
assert len(calls) == 3 and set(got) == {"base:allocation", "qemu:allocation-depth",
                                         "qemu:dirty-bitmap:s1"}, calls
for m, e in got.items():  # entries are (length, flags) pairs
    assert sum(ln for ln, _ in e) == T, (m, "not the whole volume in one reply", e)
assert any(ln > 4 * G for ln, _ in got["base:allocation"]), "no 64-bit extent"
assert got["qemu:dirty-bitmap:s1"] == [(768 * G, 0), (4096, 1), (256 * G - 4096, 0)], got
calls.clear()
h.block_status_filter(T, 0, ["qemu:dirty-bitmap:s1"], cb)
assert [m for m, _, _ in calls] == ["qemu:dirty-bitmap:s1"], calls
blob = os.urandom(64 * M)
h.pwrite(blob, 100 * G + 1)
assert h.pread(64 * M, 100 * G + 1) == blob
# (64 MiB + 1 is libnbd's own limit too: it never sends it; nbd_raw.py does)
h.shutdown()
print("nbdsh ok")
PY
in_chroot nbdsh -c "import sys; sys.argv = ['exthdr', '$(uri big)']" \
	-c "exec(open('/tmp/exthdr.py').read())" || fail "nbdsh: extended headers"
all_extended "python3-libnbd"
echo "PASS: nbdsh block status of 1 TiB in one reply, filter, 64 MiB requests"

# nbdcopy round trip: a sparse image with data, copied in and out.
in_chroot sh -c 'head -c 8M /dev/urandom >/tmp/img && truncate -s 200M /tmp/img &&
	head -c 3M /dev/urandom | dd of=/tmp/img bs=1M seek=150 conv=notrunc status=none &&
	truncate -s 256M /tmp/img' || fail "image"
in_chroot nbdcopy /tmp/img "$(uri vol0)" || fail "nbdcopy in"
in_chroot nbdcopy "$(uri vol0)" /tmp/back || fail "nbdcopy out"
a=$(md5sum <"$R/tmp/img") b=$(md5sum <"$R/tmp/back")
[ "$a" = "$b" ] || fail "nbdcopy round trip differs: $a vs $b"
all_extended "nbdcopy"
echo "PASS: nbdcopy round trip (md5 $a)"

# qemu-img: convert onto the export, compare with it, map it.
ok volume create vol1 256M
in_chroot qemu-img convert -n -f raw -O raw /tmp/img "$(uri vol1)" || fail "qemu-img convert"
in_chroot qemu-img compare -f raw -F raw /tmp/img "$(uri vol1)" >/dev/null ||
	fail "qemu-img compare"
in_chroot qemu-img convert -f raw -O raw "$(uri vol1)" /tmp/back2 || fail "qemu-img convert out"
cmp "$R/tmp/img" "$R/tmp/back2" || fail "qemu-img round trip differs"
in_chroot qemu-img map --output=json -f raw "$(uri big)" >"$T/qmap" || fail "qemu-img map"
grep -q "\"start\": $((512 * G + 4096)), \"length\": $((256 * G - 4096)), .*\"data\": false" \
	"$T/qmap" || fail "qemu-img map: $(cat "$T/qmap")"
all_extended "qemu-img"
echo "PASS: qemu-img convert, compare and map"
rm -f "$R/tmp/img" "$R/tmp/back" "$R/tmp/back2" "$R/tmp/exthdr.py"
cowbd_stop
