#!/bin/bash
# rados_cluster_down.sh — the cluster stops answering (every OSD frozen
# with SIGSTOP) under a cowbd serving a pool in it, with --rados-timeout 3:
#  - a write and flush fail with EIO within the timeout's reach (not a
#    hang), and the log says once that writes and flushes fail from now on
#    while reads go on;
#  - reads of data in the local cache still answer, with the data flushed
#    before;
#  - once the OSDs answer again, a restart of cowbd opens the pool and
#    reads everything flushed before, and writes work again.
. "$(dirname "$0")/lib.sh"
requires /usr/bin/python3 nbdsh
ceph_cluster
RUN="${CEPH_CONF%/ceph.conf}/run"
OSDS=()
thaw() {
	local p
	for p in "${OSDS[@]}"; do kill -CONT "$p" 2>/dev/null; done
	OSDS=()
}
trap 'thaw; ceph_cleanup' EXIT

host_start a --create 1G --rados-timeout 3 || fail "host a did not start"
hctl a volume create vol0 64M >/dev/null || fail "volume create"
rmodel a write 0 8 one >/dev/null || fail "write"

for f in "$RUN"/osd.*.pid; do OSDS+=("$(cat "$f")"); done
[ ${#OSDS[@]} -ge 1 ] || fail "no OSD pid files in $RUN"
kill -STOP "${OSDS[@]}"
start=$(date +%s)
/usr/bin/python3 - "$(huri a vol0)" <<'PY' >"$T/down.out" 2>&1 || fail "writes during the outage: $(cat "$T/down.out")"
import sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
try:
    h.pwrite(b"x" * 65536, 32 << 20)
    h.flush()
    sys.exit("a write and flush succeeded with every OSD stopped")
except nbd.Error as e:
    assert "Input/output error" in str(e), e
    print("failed as it should: %s" % e)
PY
took=$(($(date +%s) - start))
[ $took -le 20 ] || fail "the failed flush took $took s (timeout 3 s)"
[ "$(lines a 'failing every write and flush from now on (reads go on)')" = 1 ] ||
	fail "the log does not say writes fail: $(tail -n 5 "$T/a.log")"
echo "ok: a flush fails in $took s with every OSD stopped"
rmodel a verify >/dev/null || fail "cached reads during the outage"
echo "ok: cached reads go on during the outage"

thaw
host_stop a
host_start a || fail "host a did not start after the outage"
rmodel a verify >/dev/null || fail "reads after the restart"
rmodel a write 8 12 two >/dev/null || fail "write after the restart"
rmodel a verify >/dev/null || fail "reads after a new write"
echo "ok: after the outage a restart reads everything flushed, and writes work"
