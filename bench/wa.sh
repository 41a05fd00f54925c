#!/bin/bash
# wa.sh — by hand (not part of `make bench`): what a 4k random write costs
# cowbd, in log blocks, checkpoints and CPU (docs/PERFORMANCE.md,
# "Summaries kept open across rounds"; bench/wa.c is another thing, the
# compactor near full).  One daemon on a fresh pool with a 1 GiB volume
# filled once with 1 MiB writes, then `fio --rw=randwrite --bs=4k
# --iodepth=32` for SECONDS, FIO_ARGS added.  Prints IOPS, p99 and p99.9
# completion latency, server CPU µs per operation (from /proc/PID/stat)
# and every number of `cowctl --json stats` that changed during the run,
# as a delta and per operation.
#
# Usage: bench/wa.sh BUILD [SECONDS] [FIO_ARGS...]   (default 10 s)
#   e.g. bench/wa.sh build 6
# Env: POOL (pool size, 4G), PORT (a free one), ARGS (extra cowbd options).
set -u
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=$1 RUNTIME=${2:-10} PY=python3
shift $(($# < 2 ? $# : 2))
# shellcheck source=bench/lib.sh
. "$BENCH_SRC/lib.sh"
LOGS=$(mktemp -d /tmp/cowbd-wa.XXXXXX)
COW_PID=""
trap 'stop_pid "$COW_PID"; rm -rf "$LOGS"' EXIT
PORT=${PORT:-$(free_port)} U=nbd://127.0.0.1:$PORT/v
# shellcheck disable=SC2086 # ARGS split on purpose
if ! cowbd_launch "$PORT" "$LOGS/pool" "$LOGS/ctl" --create "${POOL:-4G}" ${ARGS:-} ||
	! cowctl_at "$LOGS/ctl" volume create v 1G >/dev/null; then
	cat "$LOGS/cowbd.log" >&2
	exit 1
fi
# fio's errors are in fio.log; show them when a run fails.
fio_ok() { # err ops
	[ "$1" = ok ] && [ "$2" -gt 0 ] && return 0
	cat "$LOGS/fio.log" >&2
	exit 1
}
read -r ops _ _ err _ < <(fio_run "$U" "$LOGS/fill.json" --name=fill --rw=write --bs=1M \
	--iodepth=8 --size=1G)
fio_ok "$err" "$ops"
cowctl_at "$LOGS/ctl" --json stats >"$LOGS/s0" || exit 1
c0=$(cpu_ticks "$COW_PID")
read -r ops iops _ err _ p99 p999 _ < <(fio_run "$U" "$LOGS/rw.json" --name=rw --rw=randwrite \
	--bs=4k --iodepth=32 --time_based --runtime="$RUNTIME" "$@")
c1=$(cpu_ticks "$COW_PID")
cowctl_at "$LOGS/ctl" --json stats >"$LOGS/s1" || exit 1
fio_ok "$err" "$ops"
awk -v i="$iops" -v a="$p99" -v b="$p999" -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$ops" \
	'BEGIN{printf "iops %.0f p99 %.2f ms p99.9 %.2f ms cpu %.1f us/op\n", i, a / 1000, b / 1000, c * 1e6 / hz / n}'
"$PY" - "$LOGS/s0" "$LOGS/s1" "$ops" <<'PY'
import json, sys

def numbers(path):
    """Every integer of a stats reply by its path (volumes by name)."""
    out = {}
    def walk(x, p):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, p + k + ".")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, p + str(v.get("name", i) if isinstance(v, dict) else i) + ".")
        elif isinstance(x, int) and not isinstance(x, bool):
            out[p[:-1]] = x
    walk(json.load(open(path)), "")
    return out

a, b, ops = numbers(sys.argv[1]), numbers(sys.argv[2]), int(sys.argv[3])
for k in sorted(b):
    if b[k] != a.get(k, 0):
        print("%s %d (per op %.3f)" % (k, b[k] - a.get(k, 0), (b[k] - a.get(k, 0)) / ops))
PY
