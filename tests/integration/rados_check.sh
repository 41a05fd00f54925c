#!/bin/bash
# rados_check.sh — cowbd-check on a pool kept in RADOS (rados:POOL/NAME):
#  - while a daemon serves it: checked without the lock, the first line
#    names the holder, the last says the result may be stale, nothing is
#    written (the daemon keeps its lock and goes on serving);
#  - once the daemon stopped: clean, exit 0, no holder named;
#  - a damaged data block in a segment object: DAMAGED, exit 1;
#  - a name with no pool behind it: exit 2 ("not a cowbd pool").
. "$(dirname "$0")/lib.sh"
requires /usr/bin/python3 nbdsh
ceph_cluster
CHECK=("$BUILD/cowbd-check" --rados-conf "$CEPH_CONF" --rados-id "$CEPH_ID")

host_start a --create 1G || fail "host a did not start"
hctl a volume create vol0 64M >/dev/null || fail "volume create"
rmodel a write 0 16 one >/dev/null || fail "write"

"${CHECK[@]}" "$RPOOL" >"$T/check.out" 2>"$T/check.err" || fail "live check: exit $? $(cat "$T/check.err")"
grep "^cowbd-check:" "$T/check.err" | head -n 1 | grep -q "pool $RPOOL is held by client\.[0-9]* at .*; checking it anyway" ||
	fail "live check did not name the holder: $(cat "$T/check.err")"
tail -n 1 "$T/check.out" | grep -qx "$RPOOL: clean (pool in use: may be stale)" ||
	fail "live check said: $(tail -n 1 "$T/check.out")"
rmodel a write 16 24 two >/dev/null || fail "the daemon stopped serving after a check"
[ "$(lines a fenced)" = 0 ] || fail "the check fenced the daemon: $(cat "$T/a.log")"
echo "ok: a served pool is checked without its lock, the holder named"

host_stop a
"${CHECK[@]}" "$RPOOL" >"$T/check.out" 2>"$T/check.err" || fail "check: exit $? $(cat "$T/check.err")"
tail -n 1 "$T/check.out" | grep -qx "$RPOOL: clean" || fail "check said: $(cat "$T/check.out")"
! grep -q "held by" "$T/check.err" || fail "a stopped pool is said held: $(cat "$T/check.err")"
echo "ok: a stopped pool checks clean"

# Flip a byte in the middle of segment 1's object (16 MiB of data went in:
# its blocks are data, checksummed in their batches' summaries).
obj="$RNAME.seg.0000000000000001"
rados_do get "$obj" "$T/seg" || fail "get $obj"
/usr/bin/python3 -c '
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read())
assert len(b) > (2 << 20), len(b)
b[(2 << 20) + 100] ^= 0x5a
open(p, "wb").write(b)' "$T/seg"
rados_do put "$obj" "$T/seg" || fail "put $obj"
"${CHECK[@]}" "$RPOOL" >"$T/check.out" 2>"$T/check.err"
rc=$?
[ $rc = 1 ] || fail "damaged pool: exit $rc: $(cat "$T/check.out" "$T/check.err")"
tail -n 1 "$T/check.out" | grep -q "^$RPOOL: DAMAGED" || fail "damaged pool said: $(cat "$T/check.out")"
echo "ok: a damaged block in a segment object: DAMAGED, exit 1"

"${CHECK[@]}" "rados:$CEPH_POOL/$RNAME-none" >"$T/check.out" 2>"$T/check.err"
rc=$?
[ $rc = 2 ] && grep -q "not a cowbd pool" "$T/check.err" ||
	fail "no pool: exit $rc: $(cat "$T/check.err")"
echo "ok: a name with no pool: exit 2"
