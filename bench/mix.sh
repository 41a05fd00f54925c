#!/bin/bash
# mix.sh — by hand (not part of `make bench`): a FLUSH-heavy client beside
# a plain writer on one daemon (docs/PERFORMANCE.md, "FLUSHes on a thread
# of their own").  A fresh pool with two 1 GiB volumes, each filled once
# with 1 MiB writes; then at once, for SECONDS, `fio --rw=randwrite
# --bs=4k --iodepth=32` on volume a and the same with a FLUSH every 16
# writes on volume b.  Prints each job's IOPS, p99 and p99.9 completion
# latency, the server CPU µs per operation of both (from /proc/PID/stat),
# and what the daemon counted meanwhile: rounds, syncs, summary versions
# written again, checkpoints, compaction passes.
#
# Usage: bench/mix.sh BUILD [SECONDS]   (default 6 s)
# Env: POOL (pool size, 4G), PORT (a free one), ARGS (extra cowbd options).
set -u
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=$1 RUNTIME=${2:-6} PY=python3
# shellcheck source=bench/lib.sh
. "$BENCH_SRC/lib.sh"
LOGS=$(mktemp -d /tmp/cowbd-mix.XXXXXX)
COW_PID="" FIO_PID=""
trap 'stop_pid "$FIO_PID"; stop_pid "$COW_PID"; rm -rf "$LOGS"' EXIT
PORT=${PORT:-$(free_port)} U=nbd://127.0.0.1:$PORT
# shellcheck disable=SC2086 # ARGS split on purpose
if ! cowbd_launch "$PORT" "$LOGS/pool" "$LOGS/ctl" --create "${POOL:-4G}" ${ARGS:-}; then
	cat "$LOGS/cowbd.log" >&2
	exit 1
fi
fail() {
	echo "mix.sh: $1" >&2
	cat "$LOGS/fio.log" >&2
	exit 1
}
for v in a b; do
	cowctl_at "$LOGS/ctl" volume create "$v" 1G >/dev/null || fail "volume $v"
	read -r ops _ _ err _ < <(fio_run "$U/$v" "$LOGS/fill-$v.json" --name=fill --rw=write \
		--bs=1M --iodepth=8 --size=1G)
	if [ "$err" != ok ] || [ "$ops" -le 0 ]; then fail "filling $v"; fi
done
cowctl_at "$LOGS/ctl" --json stats >"$LOGS/s0" || fail "stats"
c0=$(cpu_ticks "$COW_PID")
J="--rw=randwrite --bs=4k --iodepth=32 --time_based --runtime=$RUNTIME"
# shellcheck disable=SC2086 # J split on purpose
fio_run "$U/a" "$LOGS/a.json" --name=plain $J >"$LOGS/a.out" &
FIO_PID=$!
# shellcheck disable=SC2086
read -r bops biops _ berr _ bp99 bp999 _ < <(fio_run "$U/b" "$LOGS/b.json" --name=flush16 \
	--fsync=16 $J)
wait "$FIO_PID"
FIO_PID=""
read -r aops aiops _ aerr _ ap99 ap999 _ <"$LOGS/a.out"
c1=$(cpu_ticks "$COW_PID")
cowctl_at "$LOGS/ctl" --json stats >"$LOGS/s1" || fail "stats"
if [ "$aerr" != ok ] || [ "$berr" != ok ] || [ "$aops" -le 0 ] || [ "$bops" -le 0 ]; then
	fail "fio"
fi
awk -v a="$aiops" -v a1="$ap99" -v a2="$ap999" -v b="$biops" -v b1="$bp99" -v b2="$bp999" \
	-v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n=$((aops + bops)) \
	'BEGIN{printf "plain iops %.0f p99 %.2f ms p99.9 %.2f ms | flush16 iops %.0f p99 %.2f ms p99.9 %.2f ms | cpu %.1f us/op\n",
		a, a1 / 1000, a2 / 1000, b, b1 / 1000, b2 / 1000, c * 1e6 / hz / n}'
"$PY" - "$LOGS/s0" "$LOGS/s1" <<'PY'
import json, sys

def stats(path):
    s = json.load(open(path))
    return s.get("stats", s)

a, b = stats(sys.argv[1]), stats(sys.argv[2])
print(" ".join("%s %d" % (k, b.get(k, 0) - a.get(k, 0))
               for k in ("batches", "syncs", "flushes", "summary_rewrites", "inline_rounds",
                         "checkpoints", "compactions")))
PY
