#!/bin/bash
# data_metadata_cache.sh — cowbd with a tiny node cache (--metadata-cache 1M,
# about 250 leaves) under fio (nbd engine) 4k random writes with
# verify=crc32c scattered over 8 GiB of a volume (several thousand leaves:
# most nodes must be evicted and read back), a snapshot between two write
# passes, verify-only passes of the volume and of the snapshot (reads that
# load what was evicted), then the same after a restart.  Checks: no verify
# error, evictions and loads counted, the cache back under its bound once
# the writer has run, cowbd-check clean; prints cowbd's RSS.
. "$(dirname "$0")/lib.sh"
requires fio
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] && [ -x "$BUILD/cowbd-check" ] ||
	fail "build/cowbd, cowctl or cowbd-check missing"
fio --enghelp=nbd >/dev/null 2>&1 || { echo "requires fio with the nbd engine"; exit 77; }

BOUND=$((1 << 20))
stat_of() { # FIELD...: integers from one `cowctl --json stats`
	cowctl --json stats | /usr/bin/python3 -c "import json,sys
s = json.load(sys.stdin)['stats']
print(' '.join(str(s[f]) for f in sys.argv[1:]))" "$@"
}
rss() { awk '/^VmRSS/ {print $2 " kB"}' "/proc/$COWBD_PID/status"; }
# jobfile NAME EXPORT BASE-GiB SEED: 6000 random 4k writes over 4 GiB
jobfile() {
	cat >"$T/$1.fio" <<JOB
[global]
ioengine=nbd
uri=$(uri "$2")
iodepth=16
rw=randwrite
bs=4k
verify=crc32c
do_verify=1
verify_fatal=1
end_fsync=1
randseed=$4
offset=$3g
size=4g
number_ios=6000
[w]
JOB
}
# The writer evicts between rounds and when a reader's load passes the
# bound: within a few seconds of the last load the cache is under it
# (dirty nodes aside: a checkpoint first).
under_bound() { # WHEN
	local b n l e
	ok checkpoint
	for _ in $(seq 1 50); do
		read -r b n l e < <(stat_of cache_bytes cache_nodes cache_loads cache_evictions)
		[ "$b" -le "$BOUND" ] && break
		sleep 0.1
	done
	[ "$b" -le "$BOUND" ] || fail "$1: $b bytes of nodes resident, bound $BOUND"
	echo "ok: $1: $n nodes, $b bytes (bound $BOUND); $l loads, $e evictions; cowbd RSS $(rss)"
}

cowbd_start --metadata-cache 1M
[ "$(stat_of cache_bound)" -eq "$BOUND" ] || fail "cache_bound $(stat_of cache_bound), want $BOUND"
ok volume create vol0 8G
jobfile p1 vol0 0 11
jobfile p2 vol0 4 12
jobfile s1 vol0@s1 0 11
runfio "write+verify pass 1" "$T/p1.fio"
ok snapshot create vol0@s1
runfio "write+verify pass 2" "$T/p2.fio"
under_bound "after writing"
runfio "verify-only pass 1 on vol0" --verify_only "$T/p1.fio"
runfio "verify-only pass 1 on the snapshot" --verify_only "$T/s1.fio"
[ "$(stat_of cache_evictions)" -gt 2000 ] || fail "only $(stat_of cache_evictions) evictions"
[ "$(stat_of cache_loads)" -gt 2000 ] || fail "only $(stat_of cache_loads) loads"
under_bound "after reading"

cowbd_stop
check_pool "after clean stop"
cowbd_restart --metadata-cache 1M
runfio "verify-only pass 2 after restart" --verify_only "$T/p2.fio"
runfio "verify-only snapshot after restart" --verify_only "$T/s1.fio"
under_bound "after restart"
cowbd_stop
check_pool "at the end"
echo "data_metadata_cache: all checks passed"
