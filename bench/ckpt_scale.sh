#!/usr/bin/env bash
# bench/ckpt_scale.sh — checkpoints on a large volume: how long the log
# thread stops writes for one (docs/PERFORMANCE.md, issue 12 item 2).
#
# Usage: bash bench/ckpt_scale.sh [BUILD-DIR] [RUNS]
#
# Per run: a fresh pool, a VOL volume written whole with 1 MiB writes, the
# daemon stopped and started again (so that its counters hold nothing of
# the fill and of the checkpoints it took), then 4k random writes qd32 over
# the whole volume for SECS seconds at the default checkpoint interval.
# Prints one line per run: IOPS, checkpoints, the log thread's time per
# checkpoint and its longest single stretch on one (ckpt_log_max_ns: writes
# waited that long), leaves and count pages written ahead (the pre-copy),
# fio's p99 / p99.9 / worst completion latency, and write amplification
# (bytes the pool was written over bytes clients wrote, since the restart).  With BASE=DIR (another
# build), runs alternate between BASE and BUILD-DIR.
#
# Environment: VOL (default 8G), POOL (sparse pool file, default 24G),
# SECS (default 30), WORK (default BUILD-DIR/bench/ckpt_scale).
set -u
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
export LC_ALL=C
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-build}
RUNS=${2:-1}
case "$BUILD" in /*) ;; *) BUILD="$TOP/$BUILD" ;; esac
VOL=${VOL:-8G}
POOL=${POOL:-24G}
SECS=${SECS:-30}
WORK=${WORK:-$BUILD/bench/ckpt_scale}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
PID=""

for t in fio "$BUILD/cowbd" "$BUILD/cowctl"; do
	command -v "$t" >/dev/null || { echo "ckpt_scale: $t missing" >&2; exit 2; }
done
if [ -n "${BASE:-}" ]; then
	case "$BASE" in /*) ;; *) BASE="$TOP/$BASE" ;; esac
	[ -x "$BASE/cowbd" ] || { echo "ckpt_scale: $BASE/cowbd missing" >&2; exit 2; }
fi

cleanup() {
	[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$("$PY" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
uri="nbd://127.0.0.1:$port/v"

# start BUILD [cowbd options]: the daemon, up when its control socket answers.
start() {
	local b=$1
	shift
	rm -f "$WORK/ctl"
	"$b/cowbd" --pool "$WORK/pool" --listen "127.0.0.1:$port" --control "$WORK/ctl" "$@" \
		>>"$WORK/cowbd.log" 2>&1 &
	PID=$!
	for _ in $(seq 300); do
		"$b/cowctl" --control "$WORK/ctl" --timeout 5 pool status >/dev/null 2>&1 && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "ckpt_scale: cowbd did not start (see $WORK/cowbd.log)" >&2
	exit 1
}

stop() {
	kill "$PID" && wait "$PID"
	PID=""
}

one() { # build
	local b=$1
	rm -rf "$WORK"
	mkdir -p "$WORK"
	start "$b" --create "$POOL"
	"$b/cowctl" --control "$WORK/ctl" volume create v "$VOL" >/dev/null || exit 1
	fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=8 --size="$VOL" \
		>/dev/null || exit 1
	stop
	start "$b"
	fio --name=rw --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k --iodepth=32 \
		--size="$VOL" --time_based --runtime="$SECS" --output-format=json \
		--output="$WORK/fio.json" >/dev/null || exit 1
	"$b/cowctl" --control "$WORK/ctl" --json stats >"$WORK/stats.json" || exit 1
	stop
	"$PY" - "$WORK" "$b" <<'PY'
import json, sys
d, b = sys.argv[1], sys.argv[2]
s = json.load(open(d + "/stats.json"))["stats"]
w = json.load(open(d + "/fio.json"))["jobs"][0]["write"]
p = w["clat_ns"]["percentile"]
n = s["checkpoints"]
print("%s: %.0f IOPS, %d checkpoints, log thread %.1f ms per checkpoint, longest stretch %.1f ms, "
      "written ahead: %d leaves %d pages; p99 %.2f p99.9 %.2f worst %.1f ms; "
      "write amplification %.3f" % (
          b, w["iops"], n, s["ckpt_log_ns"] / 1e6 / max(n, 1), s["ckpt_log_max_ns"] / 1e6,
          s.get("ckpt_precopy_nodes", 0), s.get("ckpt_precopy_pages", 0),
          p["99.000000"] / 1e6, p["99.900000"] / 1e6, w["clat_ns"]["max"] / 1e6,
          s["bytes_written"] / max(1, s["client_write_bytes"])))
PY
}

for _ in $(seq "$RUNS"); do
	[ -n "${BASE:-}" ] && one "$BASE"
	one "$BUILD"
done
