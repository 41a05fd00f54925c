#!/bin/bash
# rados_failover.sh — a pool in RADOS outlives its host (issue 14, docs/RADOS.md).
# Host A (its own port and cache) writes and flushes 16 MiB of self-checking blocks
# and a fio crc32c-verified region, then dies (kill -9) without closing the pool.
# Host B (another port, another cache, same cluster) takes the pool over once A's
# 5 s lease ran out: it says "took over" once, and every flushed block and fio's
# region read back through it; it writes more. A started again with its old cache
# cannot have the pool while B renews its lease: it exits 1 after one line saying
# who holds it (having waited its own lease + 5 s), and B goes on serving the same data.
# B's lease is 15 s: a host that serves on must not miss a renewal on a loaded machine.
. "$(dirname "$0")/lib.sh"
requires fio nbdsh /usr/bin/python3
fio --enghelp=nbd >/dev/null 2>&1 || { echo "requires fio with the nbd engine"; exit 77; }
ceph_cluster

# fiojob WHO ONLY-VERIFY: crc32c-verified random writes over [32, 48) MiB of vol0
fiojob() {
	cat >"$T/v.fio" <<JOB
[v]
ioengine=nbd
uri=$(huri "$1" vol0)
rw=randwrite
bs=16k
iodepth=8
offset=32m
size=16m
verify=crc32c
verify_fatal=1
verify_only=$2
randseed=14
end_fsync=1
JOB
	runfio "$3" "$T/v.fio"
}

host_start a --create 1G --rados-lease 5 || fail "host a: exit ${HRC[a]}"
hctl a volume create vol0 64M >/dev/null || fail "volume create"
rmodel a write 0 16 a || fail "host a: write"
fiojob a 0 "write+verify through host a"
host_kill9 a

t0=$(date +%s)
host_start b --rados-lease 15 || fail "host b could not take the pool over (exit ${HRC[b]})"
echo "host b serves after $(($(date +%s) - t0)) s"
[ "$(lines b "took over")" = 1 ] || fail "host b: no single 'took over' line"
rmodel b verify || fail "flushed data lost in the failover"
fiojob b 1 "verify-only through host b"
rmodel b write 16 24 b || fail "host b: write"

host_start a --rados-lease 5 && fail "host a started again beside host b"
[ "${HRC[a]}" = 1 ] || fail "host a restarted: exit ${HRC[a]}, want 1"
tail -n 1 "$T/a.log" | grep -q "held by" ||
	fail "host a restarted: its last line does not say who holds the pool"
echo "host a restarted: $(tail -n 1 "$T/a.log")"
rmodel b verify || fail "data changed after host a's attempt"
fiojob b 1 "verify-only through host b after host a's attempt"
host_stop b
echo "rados_failover: all checks passed"
