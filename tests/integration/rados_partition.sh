#!/bin/bash
# rados_partition.sh — a host that lost its pool while it was away is fenced (issue 14,
# docs/RADOS.md). Host A writes and flushes 16 MiB, then is stopped (SIGSTOP) with a
# client connected. Host B takes the pool over after A's 5 s lease and overwrites
# [0, 4) MiB. A write is queued to A while it is still stopped, then A is continued:
# that write or the flush after it fails, and from then on every write, flush and read
# fails with EIO; A says "fenced" once. B serves its data. Then B stops cleanly (the
# lock is free, only the blocklist stands in A's way) and A is asked to write and flush
# again: no object of the pool changes (names, sizes, contents). Host C, with an empty
# cache, reads B's data back from RADOS.
. "$(dirname "$0")/lib.sh"
requires nbdsh /usr/bin/python3
ceph_cluster

# The client of host A: connects, then at each line on its stdin ("go"), tries a
# write over [0, 4) MiB, a flush and a read, and reports each as "ok" or the errno.
cat >"$T/late.py" <<'PY'
import errno, sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
print("connected", flush=True)
for rnd in sys.stdin:
    res = []
    for what, op in (("write", lambda: h.pwrite(b"A" * (4 << 20), 0)),
                     ("flush", lambda: h.flush()),
                     ("read", lambda: h.pread(4096, 0))):
        try:
            op()
            res.append("%s=ok" % what)
        except nbd.Error as e:
            res.append("%s=%s" % (what, errno.errorcode.get(e.errno, e.errno)))
    print(" ".join(res), flush=True)
PY

# snapshot FILE: every object of the pool with its size and checksum
snapshot() {
	local o
	for o in $(rados_objects); do
		echo "$o $(rados_do get "$o" - | md5sum)"
	done >"$1"
	[ -s "$1" ] || fail "no objects in the pool"
}

host_start a --create 1G --rados-lease 5 || fail "host a: exit ${HRC[a]}"
hctl a volume create vol0 64M >/dev/null || fail "volume create"
rmodel a write 0 16 a || fail "host a: write"
mkfifo "$T/go"
/usr/bin/python3 "$T/late.py" "$(huri a vol0)" <"$T/go" >"$T/late.out" 2>&1 &
LATE=$!
exec 7>"$T/go"
for _ in $(seq 1 100); do grep -q connected "$T/late.out" && break; sleep 0.1; done
grep -q connected "$T/late.out" || fail "client of host a: $(cat "$T/late.out")"

kill -STOP "${HPID[a]}"
t0=$(date +%s)
host_start b || fail "host b could not take the pool over (exit ${HRC[b]})"
echo "host b took over after $(($(date +%s) - t0)) s"
rmodel b write 0 4 b || fail "host b: write"

# A's next write: sent while A is stopped, served when it wakes
echo go >&7
sleep 0.5
kill -CONT "${HPID[a]}"
for _ in $(seq 1 600); do [ "$(wc -l <"$T/late.out")" -ge 2 ] && break; sleep 0.1; done
r1=$(sed -n 2p "$T/late.out")
echo "host a, first requests after it woke: $r1"
case "$r1" in
"") fail "host a did not answer within 60 s" ;;
"write=ok flush=ok"*) fail "host a wrote and flushed after losing its pool: $r1" ;;
esac
echo go >&7
for _ in $(seq 1 600); do [ "$(wc -l <"$T/late.out")" -ge 3 ] && break; sleep 0.1; done
r2=$(sed -n 3p "$T/late.out")
[ "$r2" = "write=EIO flush=EIO read=EIO" ] || fail "host a, fenced, answered: '$r2'"
echo "host a, then: $r2"
[ "$(lines a fenced)" = 1 ] || fail "host a: $(lines a fenced) lines say 'fenced', want 1"
rmodel b verify || fail "host b's data changed by host a"

host_stop b
snapshot "$T/before"
echo go >&7
for _ in $(seq 1 600); do [ "$(wc -l <"$T/late.out")" -ge 4 ] && break; sleep 0.1; done
r3=$(sed -n 4p "$T/late.out")
[ "$r3" = "write=EIO flush=EIO read=EIO" ] || fail "host a, with the lock free: '$r3'"
exec 7>&-
wait "$LATE"
snapshot "$T/after"
cmp -s "$T/before" "$T/after" ||
	fail "host a changed the pool's objects: $(diff "$T/before" "$T/after" | head -n 5)"
echo "ok: host a's attempts changed none of the $(wc -l <"$T/before") objects"
host_kill9 a

host_start c || fail "host c: exit ${HRC[c]}"
rmodel c verify || fail "host b's data, read from RADOS, differs"
host_stop c
echo "rados_partition: all checks passed"
