#!/bin/bash
# bench/snap_scale.sh — a pool of 10^5 snapshots (issue 13): open time and
# RSS, a paged listing with figures, snapshot create and delete latency, RSS
# afterwards and after a reopen.
#
#   bash bench/snap_scale.sh [BUILD]
#   SNAPS=100000 BLOCKS=20000 CHURN=1 CACHE=64M bash bench/snap_scale.sh
#
# The pool is made by cowbd-genpool (a volume "vol0" of BLOCKS mapped blocks
# and SNAPS snapshots "vol0@sN", CHURN % of the blocks rewritten between two
# snapshots, so each has a root of its own; 100000 snapshots: ~2 min and
# 1.6 GB of disk in a sparse 400 GiB file in TMPDIR).  cowbd runs with
# --metadata-cache CACHE.  "open" is from exec to the first answer on the
# control socket, after dropping the page cache (as root) for the first.
# Latencies: 20 creates of new snapshots, 20 deletes of old ones (each
# holding some blocks alone), 20 deletes of the new ones, each one `cowctl`
# run, min / median / max in ms.  Everything it starts is stopped on exit.
set -u
export PATH="/usr/bin:$PATH"
BUILD=${1:-$(cd "$(dirname "$0")/.." && pwd)/build}
SNAPS=${SNAPS:-100000}
BLOCKS=${BLOCKS:-20000}
CHURN=${CHURN:-1}
CACHE=${CACHE:-64M}
W=$(mktemp -d "${TMPDIR:-/tmp}/cowbd-snaps.XXXXXX")
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$W"' EXIT
P=$W/pool.img
CTL=$W/ctl.sock
PORT=$((20000 + RANDOM % 10000))
ms() { echo $((($(date +%s%N) - $1) / 1000000)); }
rss() { awk '/VmRSS/ { printf "%.0f MiB", $2 / 1024 }' /proc/$PID/status; }
ctl() { "$BUILD/cowctl" --control "$CTL" "$@"; }
start() {
	local t=$(date +%s%N)
	"$BUILD/cowbd" --pool "$P" --listen 127.0.0.1:$PORT --control "$CTL" \
		--metadata-cache "$CACHE" >>"$W/log" 2>&1 &
	PID=$!
	until [ -S "$CTL" ] && ctl pool status >/dev/null 2>&1; do
		kill -0 $PID 2>/dev/null || { echo "cowbd died: $(tail -3 "$W/log")"; exit 1; }
		sleep 0.02
	done
	echo "$1: $(ms $t) ms, RSS $(rss)"
}
stop() { kill $PID; wait $PID; PID=""; }
lat() { # what, then one cowctl command per line on stdin
	while read -r cmd; do
		local t=$(date +%s%N)
		ctl $cmd >/dev/null || echo "FAILED: $cmd" >&2
		ms $t
	done | sort -n | awk -v w="$1" '{ a[NR] = $1 }
		END { printf "%s (ms): min %d median %d max %d\n", w, a[1], a[int(NR / 2) + 1], a[NR] }'
}

t=$(date +%s%N)
"$BUILD/cowbd-genpool" "$P" --size 400G --blocks "$BLOCKS" --snapshots "$SNAPS" \
	--churn "$CHURN" >"$W/gen" 2>&1 || { cat "$W/gen"; exit 1; }
echo "generated in $(ms $t) ms: $(head -1 "$W/gen" | cut -d: -f2-)"
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || echo "(page cache not dropped: not root)"
start "open, cold page cache"
t=$(date +%s%N)
ctl snapshot list vol0 --page-size 1000 >"$W/list"
echo "snapshot list vol0 (figures, pages of 1000): $(ms $t) ms, $(($(wc -l <"$W/list") - 1)) snapshots, RSS $(rss)"
sleep 2
echo "RSS 2 s later: $(rss)"
seq 1 20 | sed 's/^/snapshot create vol0@new/' | lat "snapshot create x20"
seq 1 20 | awk -v n="$SNAPS" '{ print "snapshot delete vol0@s" int($1 * (n - 1) / 21) }' |
	lat "snapshot delete x20 (old, some blocks their own)"
seq 1 20 | sed 's/^/snapshot delete vol0@new/' | lat "snapshot delete x20 (new, sharing all)"
echo "RSS after: $(rss); $(ctl stats | grep 'metadata cache' | sed 's/  */ /g')"
stop
start "reopen, warm page cache"
stop
"$BUILD/cowbd-check" "$P" >"$W/check" 2>&1 && echo "cowbd-check: clean" ||
	{ echo "cowbd-check FAILED:"; tail -5 "$W/check"; exit 1; }
