#!/bin/bash
# check_report.sh — cowbd-check reports every problem it counts: on a pool
# whose 50 data blocks each have a flipped byte, it prints the first 10 of
# the kind, then "... and 40 more bad data checksums", and ends with the
# summary "POOL: DAMAGED: 50 problems (50 bad data checksums)", exit 1;
# with --all it prints all 50 and no "more" line.  A clean pool ends with
# "POOL: clean", exit 0.  Wrong arguments: the usage line, exit 2.
. "$(dirname "$0")/lib.sh"
requires python3
python3 -c 'import nbd' 2>/dev/null || { echo "requires python3-libnbd"; exit 77; }
N=50

POOL_SIZE=128M cowbd_start
ok volume create vol0 16M
# Every data block starts with a marker, so the test can find them in the
# pool file without knowing the layout.
python3 - "$(uri vol0)" $N <<'PY' || fail "writing the blocks"
import os, sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(int(sys.argv[2])):
    h.pwrite(b"COWDATA!" + i.to_bytes(8, "little") + os.urandom(4080), i * 4096 * 3)
h.flush()
h.shutdown()
PY
cowbd_stop

"$BUILD/cowbd-check" "$POOL" >"$T/check.out" 2>"$T/check.err" || fail "clean pool: exit $?"
[ "$(tail -n 1 "$T/check.out")" = "$POOL: clean" ] || fail "clean pool: last line $(tail -n 1 "$T/check.out")"
echo "ok: clean pool: $(tail -n 1 "$T/check.out")"

/usr/bin/python3 - "$POOL" $N <<'PY' || fail "damaging the pool"
import sys
path, want = sys.argv[1], int(sys.argv[2])
hit = 0
with open(path, "r+b") as f:
    off = 0
    while True:
        f.seek(off)
        b = f.read(4096)
        if len(b) < 4096:
            break
        if b.startswith(b"COWDATA!"):
            f.seek(off + 100)
            f.write(bytes([b[100] ^ 0xFF]))
            hit += 1
        off += 4096
sys.exit(0 if hit == want else "found %d marked blocks, wanted %d" % (hit, want))
PY

"$BUILD/cowbd-check" "$POOL" >"$T/check.out" 2>"$T/check.err"
rc=$?
[ $rc = 1 ] || fail "damaged pool: exit $rc, wanted 1"
shown=$(grep -c "fails its checksum" "$T/check.err")
[ "$shown" = 10 ] || fail "damaged pool: $shown problem lines, wanted the first 10"
grep -qx "cowbd-check: \.\.\. and $((N - 10)) more bad data checksums" "$T/check.err" ||
	fail "no '... and $((N - 10)) more' line: $(tail -n 3 "$T/check.err")"
[ "$(tail -n 1 "$T/check.out")" = "$POOL: DAMAGED: $N problems ($N bad data checksums)" ] ||
	fail "damaged pool: summary $(tail -n 1 "$T/check.out")"
echo "ok: damaged pool: $(tail -n 1 "$T/check.err"); $(tail -n 1 "$T/check.out")"

"$BUILD/cowbd-check" --all "$POOL" >"$T/check.out" 2>"$T/check.err"
[ $? = 1 ] || fail "--all: exit status"
shown=$(grep -c "fails its checksum" "$T/check.err")
[ "$shown" = $N ] || fail "--all: $shown problem lines, wanted $N"
if grep -q "more bad data checksums" "$T/check.err"; then fail "--all: a 'more' line"; fi
[ "$(tail -n 1 "$T/check.out")" = "$POOL: DAMAGED: $N problems ($N bad data checksums)" ] ||
	fail "--all: summary $(tail -n 1 "$T/check.out")"
echo "ok: --all prints all $N"
# Usage errors: exit 2 and the usage line, never a check of something else.
for args in "" "--all" "-x" "$POOL $POOL" "--all --all"; do
	# shellcheck disable=SC2086
	"$BUILD/cowbd-check" $args >"$T/check.out" 2>&1
	rc=$?
	[ $rc = 2 ] && grep -q "^usage: cowbd-check \[--all\] POOL" "$T/check.out" ||
		fail "cowbd-check $args: exit $rc: $(cat "$T/check.out")"
done
echo "ok: usage errors exit 2"
echo "check_report: all checks passed"
