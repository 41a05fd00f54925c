#!/bin/bash
# pool_upgrade.sh — pools of format versions 2 and 3, each written by the
# cowbd of that version (tests/fixtures/pool-vV.img.gz: snapshot, resize,
# clone, rename, a log to replay after kill -9), open in this cowbd:
# cowbd-check (read-only) leaves each at its version; a read-write open
# replays the log and upgrades it to the current version (4) with its first
# checkpoint; every export reads what the old daemon read (pool-vV.md5),
# before and after restarts and a kill -9, and cowbd-check is clean at each
# step.
. "$(dirname "$0")/lib.sh"
requires nbdcopy
FIX="$TOP/tests/fixtures"
version() { # the superblock's format version (both slots: the newer wins)
	/usr/bin/python3 -c "
import struct, sys
f = open(sys.argv[1], 'rb')
best = (-1, 0)
for slot in (0, 1):
    f.seek(slot * 4096)
    b = f.read(4096)
    if b[:8] != b'COWBDSB1':
        continue
    ver, = struct.unpack_from('<I', b, 12)
    gen, = struct.unpack_from('<Q', b, 24)
    best = max(best, (gen, ver))
print(best[1])" "$POOL"
}
same_data() { # when
	while read -r e sum; do
		got=$(nbdcopy "$(uri "$e")" - | md5sum | cut -d' ' -f1)
		[ "$got" = "$sum" ] || fail "$e reads differently $1 ($got, want $sum)"
	done <"$FIX/pool-v$V.md5"
	echo "ok: every export reads as the version $V daemon read it ($1)"
}
from() { # V: one fixture, upgraded
	V=$1
	rm -f "$POOL"
	gzip -dc "$FIX/pool-v$V.img.gz" >"$POOL" || fail "cannot unpack the version $V fixture"
	[ "$(version)" = "$V" ] || fail "the fixture is not a version $V pool"
	check_pool "of the version $V pool"
	[ "$(version)" = "$V" ] || fail "cowbd-check changed the pool"

	PORT=$(random_port)
	cowbd_restart
	grep -q "recovery: replayed" "$LOG" || fail "no log was replayed"
	[ "$(version)" = 4 ] || fail "the pool is at version $(version) after a read-write open"
	ok --json pool status
	grep -q '"format_version": *4' "$T/out" || fail "pool status: $(cat "$T/out")"
	same_data "after the upgrade"
	cowbd_stop
	check_pool "after the upgrade"

	cowbd_restart
	same_data "reopened at version 4"
	nbdsh -u "$(uri v)" -c "h.pwrite(b'x' * 4096, 0); h.flush()" || fail "write failed"
	cowbd_kill9
	check_pool "after kill -9 at version 4"
	cowbd_restart
	[ "$(nbdcopy "$(uri v)" - | head -c 4096 | tr -d x | wc -c)" = 0 ] || fail "the flushed write is gone"
	grep -v '^v ' "$FIX/pool-v$V.md5" >"$T/rest.md5"
	while read -r e sum; do
		[ "$(nbdcopy "$(uri "$e")" - | md5sum | cut -d' ' -f1)" = "$sum" ] || fail "$e changed"
	done <"$T/rest.md5"
	cowbd_stop
	check_pool "at the end (from version $V)"
}
from 2
from 3
echo "PASS"
