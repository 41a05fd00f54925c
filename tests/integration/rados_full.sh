#!/bin/bash
# rados_full.sh — a RADOS pool that fills up (issue 14, docs/RADOS.md "A full pool"):
# with a quota on the Ceph pool just above what is there, host A writes and flushes
# 1 MiB at a time until a write is refused: it must be refused with ENOSPC (the pool
# turns full while the Ceph pool still has the reserve), never EIO, and the pool must
# not fail (a FLUSH still succeeds, every flushed MiB reads back). The quota lifted,
# 32 MiB go in within 30 s, without a restart. With the quota put back below the reserve, A
# restarts: it opens, serves every flushed MiB, and refuses writes with ENOSPC.
. "$(dirname "$0")/lib.sh"
requires nbdsh /usr/bin/python3
ceph_cluster

adm() { timeout 60 ceph -c "$CEPH_CONF" "$@"; }
quota() { # the Ceph pool's byte quota (0: none)
	adm osd pool get-quota "$CEPH_POOL" -f json |
		/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["quota_max_bytes"])'
}
# set_quota BYTES: set, and seen set (a command that failed or timed out
# must not leave an earlier quota in place unnoticed: the steps below tell
# a pool that stayed full from one that did not recover only by it).
set_quota() {
	local i
	for i in 1 2 3 4 5; do
		adm osd pool set-quota "$CEPH_POOL" max_bytes "$1" >/dev/null 2>&1
		[ "$(quota 2>/dev/null)" = "$1" ] && return 0
		echo "set-quota max_bytes $1: not in place yet (try $i)"
		sleep 2
	done
	return 1
}
quota_clear() { set_quota 0; }
# used: the Ceph pool's bytes as its quota counts them
used() {
	adm osd pool get-quota "$CEPH_POOL" -f json |
		/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["current_num_bytes"])'
}
# settled_used: used, once the figure stopped moving.  The monitors learn the
# pool's usage from reports the OSDs send every few seconds, so right after
# writes it lags them: a quota set from it can fall below what the pool
# already holds, and Ceph then holds every write, which cowbd (whose view
# lags the same way) cannot refuse with ENOSPC: it fails the write after
# --rados-timeout (docs/RADOS.md "Not yet").  Equal for 10 s: settled.
settled_used() {
	local a b c i
	a=$(used)
	for i in $(seq 1 12); do
		sleep 5
		b=$(used)
		if [ "$a" = "$b" ]; then
			sleep 5
			c=$(used)
			[ "$b" = "$c" ] && { echo "$c"; return 0; }
			b=$c
		fi
		a=$b
	done
	echo "the pool's usage did not settle within a minute" >&2
	return 1
}
trap 'rc=$?; quota_clear >/dev/null; ceph_cleanup $rc' EXIT
adm osd pool get-quota "$CEPH_POOL" >/dev/null 2>&1 || { echo "no admin access to the cluster"; exit 77; }

# fill A B: write and flush MiB A, A+1, ... up to B until one is refused; adds what
# was flushed to the model (rmodel's), prints "N ERRNO" (N MiB flushed; the errno
# name of the refusal, or "none").
fill() {
	/usr/bin/python3 - "$(huri a vol0)" "$T" "$1" "$2" <<'PY'
import json, os, random, sys, nbd
M = 1 << 20
uri, sd, a, b = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
mp = os.path.join(sd, "model.json")
model = json.load(open(mp)) if os.path.exists(mp) else {}
h = nbd.NBD()
h.connect_uri(uri)
n, err = 0, "none"
for off in range(a, b):
    name = "full/%d" % off
    try:
        h.pwrite(random.Random(name).randbytes(M), off * M)
        h.flush()
    except nbd.Error as e:
        err = str(e.errno or e)  # libnbd's errno name, e.g. ENOSPC
        break
    model[str(off)] = name
    n += 1
json.dump(model, open(mp + ".tmp", "w"))
os.replace(mp + ".tmp", mp)
try:
    h.flush()  # the pool is full, not failed: a FLUSH still succeeds
    print(n, err.replace(" ", "_"))
except nbd.Error as e:
    print(n, "flush-failed:" + str(e).replace(" ", "_"))
h.shutdown()
PY
}

host_start a --create 2G || fail "host a: exit ${HRC[a]}"
hctl a volume create vol0 1G >/dev/null || fail "volume create"
rmodel a write 0 8 a || fail "host a: write"
# 400 MiB above what the pool holds: the 256 MiB reserve and a segment leave about
# 140 MiB for writes, less the writes the usage figures have not counted yet.
set_quota $(($(used) + (400 << 20))) || fail "set-quota"
read -r n err < <(fill 8 600) || fail "fill"
echo "full after $n MiB: $err"
[ "$err" = ENOSPC ] || fail "the write that found the pool full failed with $err"
[ "$n" -ge 16 ] || fail "only $n MiB written before the pool turned full"
[ "$(lines a "refusing new writes until there is room")" -ge 1 ] || fail "no line says the pool is full"
[ "$(lines a "failing every write")" = 0 ] || fail "the pool failed instead of turning full"
rmodel a verify || fail "flushed data differs on the full pool"

quota_clear || fail "the quota cannot be cleared"
# The space watcher looks every second. A write may go in before it saw the
# quota go: while the pool is full the objects of its free segments are
# removed, and its figure can creep over the reserve as the usage report
# catches up with them, for a few MiB until the pool turns full again. So:
# within 30 s of the quota going, 32 MiB go in (a refused write is tried
# again a second later), and the watcher said it had room with the figure
# of a pool without the quota (more than the 400 MiB the quota left).
at=$((8 + n))
end=$((at + 32))
t0=$SECONDS
while :; do
	read -r n2 err < <(fill $at $end) || fail "fill after the quota went"
	at=$((at + n2))
	[ $at -ge $end ] && break
	[ "$err" = ENOSPC ] || fail "a write after the quota went failed with $err"
	[ $((SECONDS - t0)) -lt 30 ] ||
		fail "30 s after the quota went, $((32 - (end - at))) of 32 MiB went in"
	sleep 1
done
grep -o "has room again (about [0-9]* MiB" "$T/a.log" | awk '$5 > 400 { ok = 1 } END { exit !ok }' ||
	fail "no line says the pool has room again with the quota gone"
host_stop a

# Below the reserve, above what the pool holds: Ceph takes writes, cowbd must
# refuse them.
u=$(settled_used) || fail "settled usage"
set_quota $((u + (64 << 20))) || fail "set-quota"
host_start a || fail "host a on the full pool: exit ${HRC[a]}"
rmodel a verify || fail "flushed data differs after a restart on the full pool"
read -r n3 err < <(fill 900 901) || fail "fill on the reopened full pool"
[ "$n3" = 0 ] && [ "$err" = ENOSPC ] ||
	fail "a write to the reopened full pool: $n3 MiB, $err"
host_stop a
echo "rados_full: all checks passed"
