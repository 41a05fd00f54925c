#!/bin/bash
# Snapshot, clone and rollback data semantics through the real daemon:
# a snapshot keeps reading the bytes it was taken with while the origin and
# a clone are rewritten; a snapshot export is read-only; a clone starts as
# the snapshot and diverges on its own; rollback restores the snapshot's
# bytes.  All I/O via nbdsh (libnbd).
. "$(dirname "$0")/lib.sh"
requires nbdsh /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] || fail "build/cowbd or build/cowctl missing"

# nbd EXPORT PYTHON: run python with h connected to EXPORT (names with '@'
# are passed as an export name, not through a URI).
nbd() {
	nbdsh -c "h.set_export_name('$1')" -c "h.connect_tcp('127.0.0.1', '$PORT')" \
		-c "$2" || fail "nbdsh on $1: $2"
}
# expect EXPORT OFFSET CHAR: 4 KiB at OFFSET read as CHAR repeated
# (CHAR 0 = zeroes)
expect() {
	local b="b'$3'*4096"
	[ "$3" = 0 ] && b="bytes(4096)"
	nbd "$1" "d = h.pread(4096, $2)
assert d == $b, '$1 at $2: got %r..., want $3' % d[:8]"
	echo "ok: $1 @ $2 reads $3"
}

cowbd_start
M=$((1 << 20))
ok volume create vol0 64M
nbd vol0 "h.pwrite(b'A'*4096, 0); h.pwrite(b'B'*4096, $M); h.pwrite(b'E'*4096, 63*$M); h.flush()"
ok snapshot create vol0@s1
# overwrite after the snapshot, trim another block, write a new one
nbd vol0 "h.pwrite(b'C'*4096, 0); h.trim(4096, $M); h.pwrite(b'F'*4096, 2*$M); h.flush()"

expect vol0 0 C
expect vol0 $M 0
expect vol0 $((2 * M)) F
expect vol0@s1 0 A
expect vol0@s1 $M B
expect vol0@s1 $((2 * M)) 0
expect vol0@s1 $((63 * M)) E

# a snapshot export is read-only: the server says so and refuses writes
nbd vol0@s1 "assert h.is_read_only()
try:
    h.pwrite(b'X'*4096, 0)
    raise SystemExit('write to snapshot succeeded')
except nbd.Error as e:
    print('write to snapshot refused:', e)
assert h.pread(4096, 0) == b'A'*4096"
nbd vol0@s1 "assert h.get_size() == 64 << 20"

# clone: starts as the snapshot, diverges without touching it or vol0
ok clone vol0@s1 c1
expect c1 0 A
expect c1 $M B
nbd c1 "h.pwrite(b'D'*4096, 0); h.pwrite(b'G'*4096, $M + 100); h.flush()"
expect c1 0 D
nbd c1 "d = h.pread(4096, $M); assert d[:100] == b'B'*100 and d[100:] == b'G'*3996, d[:120]"
expect vol0@s1 0 A
expect vol0@s1 $M B
expect vol0 0 C
expect vol0 $M 0

# a second snapshot taken later sees the later state
ok snapshot create vol0@s2
nbd vol0 "h.pwrite(b'H'*4096, 0); h.flush()"
expect vol0@s2 0 C
expect vol0@s1 0 A

# space accounting is visible: vol0 and the snapshot map blocks
ok --json volume info vol0
/usr/bin/python3 -c '
import json, sys
v = json.load(open(sys.argv[1]))["volume"]
assert v["used"] >= 3 * 4096, v
assert sorted(v["snapshots"]) == ["vol0@s1", "vol0@s2"], v
' "$T/out" || fail "info vol0: $(cat "$T/out")"

# rollback to s1: vol0 reads the snapshot again; s1, s2 and c1 unchanged
ok rollback vol0@s1
expect vol0 0 A
expect vol0 $M B
expect vol0 $((2 * M)) 0
expect vol0 $((63 * M)) E
expect vol0@s1 0 A
expect vol0@s2 0 C
expect c1 0 D
# and it keeps working as a volume afterwards
nbd vol0 "h.pwrite(b'I'*4096, 0); h.flush()"
expect vol0 0 I
expect vol0@s1 0 A

# everything survives kill -9
cowbd_kill9
cowbd_restart
expect vol0 0 I
expect vol0 $M B
expect vol0@s1 0 A
expect vol0@s1 $M B
expect vol0@s2 0 C
expect c1 0 D
echo "cowctl_snapshot: all checks passed"
