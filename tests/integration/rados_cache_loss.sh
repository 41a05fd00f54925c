#!/bin/bash
# rados_cache_loss.sh — the local cache is only a cache (issue 14, docs/RADOS.md): host
# A writes and flushes 24 MiB of vol0 and a snapshot of it, stops, and loses its cache
# file; started again it opens the pool from RADOS alone and reads every flushed MiB
# and the snapshot back. Then the same after a kill -9 (the pool not closed: A takes it
# over from its own dead self once the 5 s lease ran out) with more data written since.
. "$(dirname "$0")/lib.sh"
requires nbdsh /usr/bin/python3
ceph_cluster

# snap_sum: checksum of the snapshot's 64 MiB as host a serves it
snap_sum() {
	nbdsh -c "h.set_export_name('vol0@s1')" -c "h.connect_tcp('127.0.0.1', '${HPORT[a]}')" -c '
import hashlib
print(hashlib.sha256(b"".join(h.pread(8 << 20, o) for o in range(0, 64 << 20, 8 << 20))).hexdigest())'
}

host_start a --create 1G --rados-lease 5 || fail "host a: exit ${HRC[a]}"
hctl a volume create vol0 64M >/dev/null || fail "volume create"
rmodel a write 0 16 a || fail "host a: write"
hctl a snapshot create vol0@s1 >/dev/null || fail "snapshot create"
rmodel a write 8 24 a2 || fail "host a: write after the snapshot"
snap=$(snap_sum) || fail "snapshot read"
host_stop a

rm "$T/a.cache"
host_start a --rados-lease 5 || fail "host a without its cache (clean stop): exit ${HRC[a]}"
rmodel a verify || fail "flushed data differs without the cache (clean stop)"
[ "$(snap_sum)" = "$snap" ] || fail "the snapshot differs without the cache (clean stop)"
rmodel a write 24 32 a3 || fail "host a: write after the first restart"
host_kill9 a

rm "$T/a.cache"
host_start a --rados-lease 5 || fail "host a without its cache (kill -9): exit ${HRC[a]}"
[ "$(lines a "took over")" = 1 ] || fail "host a: no single 'took over' line after kill -9"
rmodel a verify || fail "flushed data differs without the cache (kill -9)"
[ "$(snap_sum)" = "$snap" ] || fail "the snapshot differs without the cache (kill -9)"
host_stop a
echo "rados_cache_loss: all checks passed"
