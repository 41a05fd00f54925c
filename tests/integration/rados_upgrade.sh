#!/bin/bash
# rados_upgrade.sh — `cowctl upgrade` on a cowbd serving a pool in RADOS:
# the old process closes the pool (gives its lock back) before the new one
# opens it, so the new one takes the lock at once (no lease to wait for),
# fences nobody, keeps the connected client and serves every flushed write;
# the old process exits.
. "$(dirname "$0")/lib.sh"
requires /usr/bin/python3 nbdsh
ceph_cluster

host_start a --create 1G || fail "host a did not start"
hctl a volume create vol0 64M >/dev/null || fail "volume create"
rmodel a write 0 8 one >/dev/null || fail "write"
old=${HPID[a]}
hctl a upgrade >"$T/up.out" 2>&1 || fail "upgrade: $(cat "$T/up.out")"
grep -q "^upgraded: pid $old handed over to pid [0-9]*" "$T/up.out" || fail "upgrade said: $(cat "$T/up.out")"
new=$(sed -n 's/^upgraded: pid [0-9]* handed over to pid \([0-9]*\).*/\1/p' "$T/up.out")
wait "$old" || fail "the old process exited $?"
HPID[a]=$new # ceph_cleanup ends it if the test fails
rmodel a verify >/dev/null || fail "reads after the upgrade"
rmodel a write 8 12 two >/dev/null || fail "write after the upgrade"
rmodel a verify >/dev/null || fail "reads after a write"
[ "$(lines a 'took over from')" = 0 ] || fail "the new process fenced the old one: $(cat "$T/a.log")"
[ "$(lines a 'fenced')" = 0 ] || fail "fenced: $(cat "$T/a.log")"
echo "ok: upgrade hands a RADOS pool over without a lease wait or a fence"
kill -TERM "$new"
for _ in $(seq 1 100); do kill -0 "$new" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$new" 2>/dev/null || fail "the new process did not stop"
HPID[a]=""
