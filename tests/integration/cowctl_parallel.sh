#!/bin/bash
# The golden-image day: one snapshot cloned into 100 VM disks by 100
# cowctl processes started at once.  More clients than the daemon serves
# at a time must queue, not fail; every clone exists once, reads the golden
# bytes, and survives kill -9.
. "$(dirname "$0")/lib.sh"
requires nbdsh /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] || fail "build/cowbd or build/cowctl missing"
N=100

cowbd_start
cowctl volume create gold 1G >/dev/null || fail "create gold"
nbdsh -u "$(uri gold)" -c "h.pwrite(b'G'*65536, 0); h.flush()" || fail "write gold"
cowctl snapshot create gold@v1 >/dev/null || fail "snapshot gold"

start=$(date +%s.%N)
pids=()
for i in $(seq 1 $N); do
	cowctl clone gold@v1 "vm$i" >"$T/clone$i.out" 2>&1 &
	pids+=($!)
done
bad=0
for i in $(seq 1 $N); do
	wait "${pids[$((i - 1))]}" || { bad=$((bad + 1)); echo "clone vm$i: $(cat "$T/clone$i.out")"; }
done
end=$(date +%s.%N)
[ $bad -eq 0 ] || fail "$bad of $N parallel clones failed"
echo "ok: $N parallel clones in $(echo "$end - $start" | bc 2>/dev/null || echo "?") s"

check() {
	cowctl --json volume list | /usr/bin/python3 -c '
import json, sys
n = int(sys.argv[1])
v = {x["name"]: x for x in json.load(sys.stdin)["volumes"]}
assert len(v) == n + 1, len(v)
for i in range(1, n + 1):
    assert v["vm%d" % i]["origin"] == "gold@v1", v["vm%d" % i]
' $N || fail "volume list after clones"
	for i in 1 50 $N; do
		nbdsh -u "$(uri "vm$i")" -c "assert h.pread(65536, 0) == b'G'*65536" || fail "vm$i data"
	done
}
check
cowbd_kill9
cowbd_restart
check
echo "cowctl_parallel: all checks passed"
