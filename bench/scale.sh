#!/usr/bin/env bash
# bench/scale.sh — the scale section of `make bench` (issue 13): open time,
# recovery time, RSS and 4k random read IOPS of cowbd against the number of
# mapped blocks, on pools made by the generator (build/cowbd-genpool), with
# the per-block slopes and the line extrapolated to 10^10 mapped blocks.
#
# Usage: bash bench/scale.sh [BUILD-DIR] [EXPONENTS]
#        SCALE="6 7 8" make bench        (make bench QUICK=1: 10^5 only)
#
# For each exponent E (10^E mapped blocks in one dense volume "vol0"):
#  1. generate the pool (timed; disk used is what the sparse file holds);
#  2. open after clean shutdown, RUNS times: once with the pool file's pages
#     dropped from the page cache (posix_fadvise through dd iflag=nocache,
#     this file only), then warm; time from exec to the control socket and to
#     `nbdinfo` answering; RSS right after; medians of the warm runs;
#  3. a checkpoint, RECOVERY MiB of 4k random writes over the whole volume
#     (the daemon checkpoints every 2x RECOVERY, so all of it is in the log),
#     kill -9, open again: time to the control socket and to `nbdinfo`, and
#     the batches the daemon says it replayed;
#  4. a fresh clean open, then 4k random reads qd32 over the whole volume
#     for READ_SECS (fio --ioengine=nbd, as the bench): IOPS, p99, RSS at the
#     end, the peak (VmHWM) and the tree nodes held (cowctl stats).  If
#     `cowbd --help` lists --metadata-cache, once per cache size: 100% and
#     1% of the metadata (the pool's disk use, which is all metadata: the
#     data blocks are holes), then 128M, in that order; otherwise once,
#     uncapped, and the report says so.
# Output: Markdown on stdout (progress on stderr); build/bench/scale/scale.csv.
# Pools live in build/bench/scale/work and are deleted after each size
# (KEEP=1 keeps them); one run at a time per build (a lock).  Everything it
# starts is stopped on exit.
#
# Environment: SCALE (exponents, default "5"), RUNS (opens per size, default
# 3), RECOVERY (MiB, default 256; QUICK=1: 16), READ_SECS (default 5;
# QUICK=1: 1), GEN_ARGS (extra generator options, e.g. "--snapshots 4").
set -u
export LC_ALL=C PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="${BENCH_SRC%/bench}/$BUILD" ;; esac
EXPS=${2:-${SCALE:-5}}
OUT="$BUILD/bench/scale"
WORK="$OUT/work"
LOGS="$OUT/logs"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
if [ "${QUICK:-0}" != 0 ]; then
	: "${RECOVERY:=16}" "${READ_SECS:=1}"
else
	: "${RECOVERY:=256}" "${READ_SECS:=5}"
fi
: "${RUNS:=3}" "${GEN_ARGS:=}"
RUNTIME=$READ_SECS # fio_run's timeout
# shellcheck source=bench/lib.sh
. "$BENCH_SRC/lib.sh"

GEN="$BUILD/cowbd-genpool"
for b in "$GEN" "$BUILD/cowbd" "$BUILD/cowctl" fio nbdinfo; do
	command -v "$b" >/dev/null 2>&1 || { say "scale: $b missing (make; make deps)"; exit 1; }
done
mkdir -p "$OUT" || exit 1
# One run at a time per build: a second would delete the first one's pools.
exec 9>"$OUT/.lock"
flock -n 9 || { say "scale: another bench/scale.sh is running on $OUT"; exit 1; }
COW_PID=""
cleanup() {
	stop_pid "$COW_PID" 20
	[ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM
rm -rf "$WORK" "$LOGS"
mkdir -p "$WORK" "$LOGS" || exit 1
CSV="$OUT/scale.csv"
echo "blocks,gen_s,disk_mb,open_cold_ctl_ms,open_cold_nbd_ms,open_ctl_ms,open_nbd_ms,rss_open_kib,rec_ctl_ms,rec_nbd_ms,rec_batches,cache,read_iops,read_p99_us,rss_read_kib,hwm_read_kib,cache_read_kib" >"$CSV"
CACHE_OPT=0
"$BUILD/cowbd" --help 2>&1 | grep -q -- "--metadata-cache" && CACHE_OPT=1

ms_since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN{printf "%.0f", (b - a) / 1e6}'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR] = $1} END {print NR ? v[int((NR + 1) / 2)] : ""}'; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

# Open POOL (args after); sets COW_PID, T_CTL and T_NBD (ms from exec to the
# control socket and to nbdinfo answering on vol0), RSS (KiB right after).
open_pool() { # pool args...
	local pool=$1 t0
	shift
	PORT=$(free_port)
	t0=$(now_ns)
	cowbd_launch "$PORT" "$pool" "$WORK/ctl.sock" "$@" || { COW_PID=""; return 1; }
	T_CTL=$(ms_since "$t0")
	wait_nbd "nbd://127.0.0.1:$PORT/vol0" "$COW_PID" 120 || return 1
	T_NBD=$(ms_since "$t0")
	RSS=$(rss_kib "$COW_PID")
}

# Drop the pool file's pages from the page cache (this file only).
drop_cache() { dd if="$1" iflag=nocache count=0 status=none 2>/dev/null; }

# 4k random reads over the whole volume; prints "iops p99 rss hwm cache":
# RSS and VmHWM (peak) in KiB at the end, and the daemon's own figure for
# the tree nodes it holds (cowctl stats cache_bytes, in KiB).
read_job() { # tag
	local ops iops p99 err
	read -r ops iops _ err _ p99 _ < <(fio_run "nbd://127.0.0.1:$PORT/vol0" "$WORK/read-$1.json" \
		--name=rr --rw=randread --bs=4k --iodepth=32 --norandommap --randrepeat=0 \
		--time_based --runtime="$READ_SECS")
	cp "$WORK/read-$1.json" "$LOGS/" 2>/dev/null
	[ "$err" = ok ] || say "scale: read job $1: $err ($ops ops)"
	local cache
	cache=$(cow_stats "$WORK/ctl.sock" cache_bytes)
	echo "$iops $p99 $(rss_kib "$COW_PID") $(hwm_kib "$COW_PID") $((${cache:-0} / 1024))"
}

one_size() { # exponent
	local e=$1 n pool="$WORK/g$1.img" size_mib need avail t0 gen_s disk_kb i
	local cold_ctl cold_nbd ctl=() nbd=() rss=() rec_ctl rec_nbd batches caches c opt
	n=$(awk -v e="$e" 'BEGIN{printf "%.0f", 10 ^ e}')
	# Room for the volume's blocks (holes), log, checkpoints and the recovery writes.
	size_mib=$((n * 4096 * 13 / 10 / 1048576 + RECOVERY * 4 + 1024))
	need=$((n * 60 / 1024 + RECOVERY * 3 * 1024 + 1048576)) # KiB, generous
	avail=$(df -Pk "$WORK" | awk 'NR == 2 {print $4}')
	if [ "$avail" -lt "$need" ]; then
		say "scale: 10^$e skipped: $avail KiB free, need ~$need"
		return 1
	fi
	say "scale: 10^$e: generating ($size_mib MiB sparse pool)"
	t0=$(now_ns)
	# shellcheck disable=SC2086
	"$GEN" "$pool" --size "${size_mib}M" --blocks "$n" $GEN_ARGS >>"$LOGS/gen.log" 2>&1 ||
		{ say "scale: 10^$e: generator failed (see $LOGS/gen.log)"; return 1; }
	gen_s=$(awk -v a="$t0" -v b="$(now_ns)" 'BEGIN{printf "%.1f", (b - a) / 1e9}')
	disk_kb=$(du -k "$pool" | cut -f1)
	say "scale: 10^$e: generated in $gen_s s, $disk_kb KiB on disk"

	# (2) open after clean shutdown: run 1 cold, the rest warm.
	for i in $(seq 1 "$RUNS"); do
		[ "$i" = 1 ] && drop_cache "$pool"
		open_pool "$pool" || { say "scale: 10^$e: open failed (see $LOGS/cowbd.log)"; return 1; }
		if [ "$i" = 1 ]; then
			cold_ctl=$T_CTL cold_nbd=$T_NBD
		fi
		if [ "$i" != 1 ] || [ "$RUNS" = 1 ]; then
			ctl+=("$T_CTL") nbd+=("$T_NBD") rss+=("$RSS")
		fi
		say "scale: 10^$e: open $i$([ "$i" = 1 ] && echo " (cold)"): control socket $T_CTL ms, nbdinfo $T_NBD ms, RSS $RSS KiB"
		stop_pid "$COW_PID" 60
		COW_PID=""
	done

	# (3) RECOVERY MiB in the log past the checkpoint, kill -9, open again.
	opt=(--checkpoint-interval "$((RECOVERY * 2))M")
	open_pool "$pool" "${opt[@]}" || { say "scale: 10^$e: open failed"; return 1; }
	COW_CTL="$WORK/ctl.sock"
	cowctl checkpoint >>"$LOGS/cowbd.log" 2>&1 || say "scale: cowctl checkpoint failed"
	fio_run "nbd://127.0.0.1:$PORT/vol0" "$WORK/rec.json" --name=rec --rw=randwrite --bs=4k \
		--iodepth=32 --norandommap --randrepeat=0 --io_size="${RECOVERY}M" >/dev/null
	kill -9 "$COW_PID"
	wait "$COW_PID" 2>/dev/null
	local mark
	mark=$(wc -l <"$LOGS/cowbd.log")
	if open_pool "$pool" "${opt[@]}"; then
		rec_ctl=$T_CTL rec_nbd=$T_NBD
		batches=$(tail -n +"$((mark + 1))" "$LOGS/cowbd.log" |
			sed -n 's/.*recovery: replayed \([0-9]*\) batches.*/\1/p' | tail -1)
		say "scale: 10^$e: after kill -9 with $RECOVERY MiB of 4k writes: control socket $rec_ctl ms, nbdinfo $rec_nbd ms, ${batches:-?} batches replayed"
	else
		rec_ctl="" rec_nbd="" batches=""
		say "scale: 10^$e: open after kill -9 failed (see $LOGS/cowbd.log)"
	fi
	stop_pid "$COW_PID" 60
	COW_PID=""

	# (4) random reads over the whole volume, per metadata cache size.
	if [ "$CACHE_OPT" = 1 ]; then
		caches="$((disk_kb / 1024 + 1))M $((disk_kb / 1024 / 100 + 1))M 128M"
	else
		caches="uncapped"
	fi
	for c in $caches; do
		opt=()
		[ "$c" = uncapped ] || opt=(--metadata-cache "$c")
		open_pool "$pool" "${opt[@]}" || { say "scale: 10^$e: open failed"; return 1; }
		local iops p99 r_rss r_hwm r_cache
		read -r iops p99 r_rss r_hwm r_cache < <(read_job "$e-$c")
		say "scale: 10^$e: 4k random reads, cache $c: $iops IOPS, p99 $p99 µs, RSS $r_rss KiB (peak $r_hwm), nodes held $r_cache KiB"
		echo "$n,$gen_s,$((disk_kb / 1024)),$cold_ctl,$cold_nbd,$(echo "${ctl[*]}" | median),$(echo "${nbd[*]}" | median),$(echo "${rss[*]}" | median),$rec_ctl,$rec_nbd,$batches,$c,$iops,$p99,$r_rss,$r_hwm,$r_cache" >>"$CSV"
		stop_pid "$COW_PID" 60
		COW_PID=""
	done
	[ -n "${KEEP:-}" ] || rm -f "$pool"
}

say "scale: sizes 10^{$EXPS}; $RUNS opens per size; recovery $RECOVERY MiB; reads $READ_SECS s;" \
	"metadata cache option: $([ "$CACHE_OPT" = 1 ] && echo yes || echo absent); load $(cut -d' ' -f1-3 /proc/loadavg)"
for e in $EXPS; do one_size "$e"; done

# ---- report ------------------------------------------------------------------
"$PY" "$BENCH_SRC/scale_report.py" "$CSV" "$RECOVERY" "$READ_SECS" "$CACHE_OPT" "$RUNS" "$GEN_ARGS"
