#!/usr/bin/env bash
# bench/profile.sh — where a server's cycles go under one fio workload.
#
# Usage: bash bench/profile.sh [BUILD-DIR] [SERVER] [WORKLOAD...]
#   SERVER    cowbd (default) or any bench.sh server id (nbdkit-file, ...)
#   WORKLOAD  randwrite (default), randread, write1m, read1m, fsync16, mc2
#
# Starts the server on loopback with a SIZE_MIB export (default 2048), fills
# it once, then per workload runs fio for RUNTIME s (default 8) while
#   perf stat   counts the server's syscalls, context switches and CPU time,
#   perf record samples it (cpu-clock, 999 Hz, call graphs with
#               CALLGRAPH=fp|dwarf|none, default dwarf),
# and prints per-operation figures plus the top symbols (self time) and,
# for dwarf/fp, the top callers.  Everything lands in build/bench/profile/.
# IDLE=SECS syncs and leaves the server idle that long before each
# workload, as between the bench's jobs (cowbd discards free segments
# while idle).
# perf must be installed (linux-perf); no hardware counters are needed.
set -u
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
export LC_ALL=C
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_SRC="$TOP/bench"
BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$TOP/$BUILD" ;; esac
SERVER=${2:-cowbd}
shift 2 2>/dev/null
WLS=("$@")
[ ${#WLS[@]} -gt 0 ] || WLS=(randwrite)
OUT="$BUILD/bench/profile"
WORK="$OUT/work"
LOGS="$OUT"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
: "${SIZE_MIB:=2048}" "${RUNTIME:=8}" "${CALLGRAPH:=dwarf}" "${COW_POOL_SIZE:=40G}" "${COW_BLK_MIB:=16384}"
COWBD_EXTRA=()
[ -n "${COWBD_ARGS:-}" ] && read -r -a COWBD_EXTRA <<<"$COWBD_ARGS"
QEMU_CACHE=none QEMU_AIO=native
# shellcheck source=bench/lib.sh
. "$BENCH_SRC/lib.sh"
command -v perf >/dev/null || { say "perf is not installed (apt-get install linux-perf)"; exit 1; }

cleanup() { bench_stop_all; loop_detach_all; [ -n "${KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$WORK"
mkdir -p "$WORK"

bench_start "$SERVER" || { say "$SERVER: ${SRV_SKIP[$SERVER]}"; exit 1; }
PID=${SRV_PID[$SERVER]}
URI=${SRV_URI[$SERVER]}
say "$SERVER pid $PID at $URI"
fio_run "$URI" "$WORK/fill.json" --name=fill --rw=write --bs=1M --iodepth=8 --size="${SIZE_MIB}M" >/dev/null

for wl in "${WLS[@]}"; do
	case $wl in
	randwrite) args="--rw=randwrite --bs=4k --iodepth=32" ;;
	randread) args="--rw=randread --bs=4k --iodepth=32" ;;
	fsync16) args="--rw=randwrite --bs=4k --iodepth=32 --fsync=16" ;;
	mc2) args="--rw=randwrite --bs=4k --iodepth=32 --numjobs=2" ;;
	write1m) args="--rw=write --bs=1M --iodepth=8" ;;
	read1m) args="--rw=read --bs=1M --iodepth=8" ;;
	*) say "unknown workload $wl"; continue ;;
	esac
	if [ "${IDLE:-0}" != 0 ]; then
		sync
		sleep "$IDLE"
	fi
	# fio runs RUNTIME + 3 s; perf samples RUNTIME s from its second second.
	# shellcheck disable=SC2086
	fio_run "$URI" "$WORK/$wl.json" --name="$wl" $args --size="${SIZE_MIB}M" \
		--time_based --runtime=$((RUNTIME + 3)) >"$WORK/$wl.res" &
	FIO=$!
	sleep 1.5
	case $CALLGRAPH in
	dwarf) cg=(--call-graph dwarf,16384) ;;
	fp) cg=(-g) ;;
	*) cg=() ;;
	esac
	perf stat -x, -e raw_syscalls:sys_enter,context-switches,task-clock -p "$PID" \
		-o "$OUT/$SERVER-$wl.stat" -- sleep "$RUNTIME" &
	STAT=$!
	perf record -q -F 999 -e cpu-clock "${cg[@]}" -p "$PID" -o "$WORK/$wl.perf" -- sleep "$RUNTIME" \
		>/dev/null 2>&1
	wait "$STAT"
	wait "$FIO"
	read -r ops iops _ err _ <"$WORK/$wl.res"
	# ops over the whole fio run; perf saw RUNTIME s of it: scale by IOPS instead.
	{
		echo "== $SERVER $wl: $iops IOPS ($err); per operation, over ${RUNTIME} s of sampling:"
		awk -F, -v iops="$iops" -v t="$RUNTIME" '
			$3 == "raw_syscalls:sys_enter" { printf "  syscalls/op        %.2f\n", $1 / (iops * t) }
			$3 == "context-switches"      { printf "  context switches/op %.2f\n", $1 / (iops * t) }
			$3 == "task-clock"            { printf "  CPU µs/op          %.2f (%.2f CPUs busy)\n", $1 * 1000 / (iops * t), $1 / (t * 1000) }
		' "$OUT/$SERVER-$wl.stat"
		echo "-- top symbols (self):"
		perf report -i "$WORK/$wl.perf" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
			grep -E '^ +[0-9.]+%' | head -40
		if [ ${#cg[@]} -gt 0 ]; then
			echo "-- top call chains (children, cowbd frames):"
			perf report -i "$WORK/$wl.perf" --children --sort sym --stdio -g none 2>/dev/null |
				grep -E '^ +[0-9.]+%' | head -40
		fi
	} | tee "$OUT/$SERVER-$wl.txt"
done
