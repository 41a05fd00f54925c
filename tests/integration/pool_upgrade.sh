#!/bin/bash
# pool_upgrade.sh — pools of format versions 2, 3 and 4, each written by the
# cowbd of that version (tests/fixtures/pool-vV.img.gz: snapshot, resize,
# clone, rename, a log to replay after kill -9), open in this cowbd:
# cowbd-check (read-only) leaves each at its version; a read-write open
# replays the log and upgrades it to the current version (the one cowbd
# makes new pools at: 5) with its first checkpoint; every export reads what
# the old daemon read (pool-vV.md5), before and after restarts, a checkpoint,
# a compaction (which forwards blocks the old version named) and a kill -9,
# and cowbd-check is clean at each step.
. "$(dirname "$0")/lib.sh"
requires nbdcopy
FIX="$TOP/tests/fixtures"
POOL_SIZE=64M cowbd_start # the current version: a new pool's
cowbd_stop
CUR=$(pool_version)
same_data() { # when
	while read -r e sum; do
		got=$(nbdcopy "$(uri "$e")" - | md5sum | cut -d' ' -f1)
		[ "$got" = "$sum" ] || fail "$e reads differently $1 ($got, want $sum)"
	done <"$FIX/pool-v$V.md5"
	echo "ok: every export reads as the version $V daemon read it ($1)"
}
from() { # V: one fixture, upgraded
	V=$1
	if [ "$V" -ge "$CUR" ]; then
		echo "skip: version $V is not older than this cowbd's ($CUR)"
		return
	fi
	rm -f "$POOL"
	gzip -dc "$FIX/pool-v$V.img.gz" >"$POOL" || fail "cannot unpack the version $V fixture"
	[ "$(pool_version)" = "$V" ] || fail "the fixture is not a version $V pool"
	check_pool "of the version $V pool"
	[ "$(pool_version)" = "$V" ] || fail "cowbd-check changed the pool"

	PORT=$(random_port)
	cowbd_restart
	grep -q "recovery: replayed" "$LOG" || fail "no log was replayed"
	[ "$(pool_version)" = $CUR ] || fail "the pool is at version $(pool_version) after a read-write open"
	ok --json pool status
	grep -q "\"format_version\": *$CUR" "$T/out" || fail "pool status: $(cat "$T/out")"
	same_data "after the upgrade"
	cowbd_stop
	check_pool "after the upgrade"

	cowbd_restart
	same_data "reopened at version $CUR"
	nbdsh -u "$(uri v)" -c "h.pwrite(b'x' * 4096, 0); h.flush()" || fail "write failed"
	ok checkpoint
	ok compact # blocks the old version named (tag 0), now forwarded
	nbdsh -u "$(uri v)" -c "h.pwrite(b'y' * 4096, 4096); h.flush()" || fail "write failed"
	cowbd_kill9
	check_pool "after a checkpoint, a compaction and kill -9 at version $CUR"
	grep -Eq "check: [1-9][0-9]* forwarded blocks" "$T/check.out" ||
		fail "the compaction forwarded nothing: $(grep forwarded "$T/check.out")"
	cowbd_restart
	[ "$(pool_version)" = $CUR ] || fail "the pool is at version $(pool_version) after a checkpoint"
	[ "$(nbdcopy "$(uri v)" - | head -c 8192 | md5sum | cut -d' ' -f1)" = \
		"$( (head -c 4096 /dev/zero | tr '\0' x; head -c 4096 /dev/zero | tr '\0' y) | md5sum | cut -d' ' -f1)" ] ||
		fail "a flushed write is gone"
	grep -v '^v ' "$FIX/pool-v$V.md5" >"$T/rest.md5"
	while read -r e sum; do
		[ "$(nbdcopy "$(uri "$e")" - | md5sum | cut -d' ' -f1)" = "$sum" ] || fail "$e changed"
	done <"$T/rest.md5"
	cowbd_stop
	check_pool "at the end (from version $V)"
}
from 2
from 3
from 4
echo "PASS"
