#!/usr/bin/env bash
# bench/bench.sh — `make bench`: cowbd beside the servers a user would pick
# instead, in one run, on loopback, driven by the same fio job list.
#
# Usage: bash bench/bench.sh [BUILD-DIR]        (make bench [QUICK=1])
#
# Servers (columns): cowbd (fresh pool, volume "bench"), nbdkit file on a
# preallocated file, nbdkit memory, nbd-server on a preallocated file,
# qemu-nbd on qcow2 (--cache=none, Linux AIO), nbdkit null (the ceiling of
# what fio + libnbd + loopback carry); and on block devices (loop devices
# with direct I/O over preallocated files, detached at the end): cowbd-blk
# (the pool on the device) and nbdkit-file-blk.  A server whose binary is
# missing or that does not start is reported as skipped.
#
# Per round, for each workload, every server runs the job in turn (A B C ...,
# then B C A ... in the next round); the report gives medians over rounds,
# the min..max spread, and the server's CPU time per operation (utime+stime
# from /proc/PID/stat before and after the job, over the operations fio
# counted; for 1 MiB jobs, per 1 MiB operation), and fio's p50/p99/p99.9
# completion latency; for cowbd, its `cowctl stats` counters over the job.
# Then cowbd-only jobs: 4k random write right after a snapshot vs without;
# 4k random write with checkpoints running (--checkpoint-interval CKPT_ON)
# vs without (CKPT_OFF, more than a job writes); compaction under load (a
# small pool overwritten with snapshots taken and deleted until the
# compactor runs, then 4k random writes while it runs vs after idle
# cleaning; write amplification; allocated over live space); snapshot/clone
# latency on an empty volume vs one with MAP_BLOCKS mapped blocks, RSS per
# mapped extent, recovery time after kill -9 with RECOVERY_MIB written since
# the checkpoint.  With SCALE="6 7 8" (exponents), the scale section
# (bench/scale.sh): open, recovery, RSS and random reads at 10^E mapped
# blocks on generated pools; QUICK=1 runs it at 10^5.  With SNAPS=N
# (e.g. 100000), the snapshot section (bench/snap_scale.sh): a generated
# pool of N snapshots opened, listed, added to and deleted from.  Last, the
# RADOS section (bench/rados.sh, issue 14): cowbd on a pool in a 1-OSD Ceph
# cluster of its own beside `rados bench` and beside a local pool; skipped
# with QUICK=1, RADOS=0, MATRIX_ONLY=1 or without Ceph.
#
# Output: Markdown on stdout; build/bench/results.csv (medians, ratios),
# build/bench/raw.csv (every run), build/bench/logs/; the run before this
# one's in build/bench/previous/.  Large files live in
# build/bench/work/ and are removed at the end (KEEP=1 keeps them).
#
# Environment: QUICK=1 (1 round of ~1 s jobs: a smoke test), ROUNDS, RUNTIME
# (seconds per timed job), SIZE_MIB (export size), SERVERS (space-separated
# subset of the ids below), JOBS (space-separated subset of the job matrix's
# workload ids, e.g. "sw1m sr1m"), MATRIX_ONLY=1 (skip the cowbd-only jobs:
# a quick A/B of the matrix), COWBD_JOBS (space-separated subset of the
# cowbd-only parts: snap ckpt cmp meta rec wa ccost — snapshot writes,
# checkpoint latency, compaction under load, metadata pool, recovery,
# bench-wa, bench-compact_cost; default all), MAP_BLOCKS, RECOVERY_MIB, COWBD_ARGS (extra cowbd
# options for every start), COWBD_RECOVERY_ARGS (extra options for the
# recovery pool, e.g. to push the checkpoint interval above RECOVERY_MIB),
# COW_BLK_MIB (cowbd-blk's device), CKPT_ON / CKPT_OFF (checkpoint intervals
# of the two checkpoint-job pools), CK_RUNTIME (seconds per checkpoint job),
# CMP_POOL_MIB / CMP_VOL_MIB (compaction job's pool and volume),
# CMP_CHURN_MAX (overwrite passes at most before measuring), CMP_IDLE_SECS
# (longest wait for idle cleaning in a round), CMP_END_SECS (at the end),
# RADOS_ONLY=1 (the RADOS section alone; its own knobs: bench/rados.sh).
set -u
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
export LC_ALL=C
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_SRC="$TOP/bench"
BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$TOP/$BUILD" ;; esac
OUT="$BUILD/bench"
WORK="$OUT/work"
LOGS="$OUT/logs"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

if [ -n "${QUICK:-}" ] && [ "${QUICK:-0}" != 0 ]; then
	QUICK=1
	: "${ROUNDS:=1}" "${RUNTIME:=1}" "${SIZE_MIB:=256}"
	: "${MAP_BLOCKS:=16384}" "${RECOVERY_MIB:=64}" "${REPS:=3}" "${COW_POOL_SIZE:=8G}"
	: "${COW_BLK_MIB:=1024}" "${CMP_POOL_MIB:=512}" "${CMP_CHURN_MAX:=12}" "${CMP_IDLE_SECS:=20}"
	: "${CMP_END_SECS:=20}"
else
	QUICK=0
	: "${ROUNDS:=3}" "${RUNTIME:=3}" "${SIZE_MIB:=1024}"
	: "${MAP_BLOCKS:=1000000}" "${RECOVERY_MIB:=1024}" "${REPS:=7}" "${COW_POOL_SIZE:=40G}"
	: "${COW_BLK_MIB:=16384}" "${CMP_POOL_MIB:=4096}" "${CMP_CHURN_MAX:=20}" "${CMP_IDLE_SECS:=60}"
	: "${CMP_END_SECS:=240}"
fi
# Checkpoint jobs: CKPT_ON makes several checkpoints per job, CKPT_OFF none
# (more log than a job writes; before each job the bench checkpoints, which
# also restarts the daemon's 30 s timer).
: "${CKPT_ON:=32M}" "${CKPT_OFF:=1T}" "${CK_RUNTIME:=$RUNTIME}"
# Compaction job: a volume of 3/8 of its pool.
: "${CMP_VOL_MIB:=$((CMP_POOL_MIB * 3 / 8))}"
# The cowbd-only parts (COWBD_JOBS), each run when listed.
: "${COWBD_JOBS:=snap ckpt cmp meta rec wa ccost}"
cowbd_job() { case " $COWBD_JOBS " in *" $1 "*) return 0 ;; esac; return 1; }
KNOWN_SERVERS="cowbd nbdkit-file nbdkit-memory nbd-server qemu-nbd nbdkit-null cowbd-blk nbdkit-file-blk"
: "${SERVERS:=$KNOWN_SERVERS}"
# The recovery pool checkpoints only every 2x RECOVERY_MIB of log, so that
# all of RECOVERY_MIB is past the last checkpoint when cowbd is killed.
: "${COWBD_ARGS:=}" "${COWBD_RECOVERY_ARGS:=--checkpoint-interval $((RECOVERY_MIB * 2 > 4 ? RECOVERY_MIB * 2 : 4))M}"
read -r -a SERVER_LIST <<<"$SERVERS"
COWBD_EXTRA=()
[ -n "$COWBD_ARGS" ] && read -r -a COWBD_EXTRA <<<"$COWBD_ARGS"
export ROUNDS RUNTIME SIZE_MIB

# shellcheck source=bench/lib.sh
. "$BENCH_SRC/lib.sh"

for t in fio nbdinfo; do
	command -v "$t" >/dev/null 2>&1 || { say "$t is not installed (make deps)"; exit 1; }
done
"$PY" -c 'import json' 2>/dev/null || { say "python3 is not installed (make deps)"; exit 1; }

cleanup() {
	bench_stop_all
	[ -n "${COW_PID:-}" ] && stop_pid "$COW_PID" 10
	loop_detach_all
	if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

# The run before this one moves to $OUT/previous (one run kept): a by-hand
# MATRIX_ONLY run right after a full one would otherwise erase its report.
if [ -e "$OUT/report.md" ] || [ -e "$OUT/raw.csv" ]; then
	rm -rf "$OUT/previous"
	mkdir -p "$OUT/previous" || exit 1
	for f in report.md results.csv raw.csv workloads.tsv servers.tsv logs; do
		if [ -e "$OUT/$f" ]; then mv "$OUT/$f" "$OUT/previous/" || exit 1; fi
	done
fi
rm -rf "$WORK" "$LOGS"
rm -f "$OUT/results.csv" "$OUT/report.md" # never leave an older run's results beside this one's raw data
mkdir -p "$WORK" "$LOGS" || exit 1
RAW="$OUT/raw.csv"
META="$OUT/workloads.tsv"
SRVTSV="$OUT/servers.tsv"
# cowbd's counters recorded per job (as differences over the job), and their
# columns in raw.csv (FLUSHes the server counted beside fio's "flushes").
STATS_FIELDS=(syncs batches batch_blocks checkpoints compactions compacted_blocks
	flushes fua_requests bytes_written compact_ns ckpt_log_ns ckpt_sync_ns)
STATS_COLS=(syncs batches batch_blocks checkpoints compactions compacted_blocks
	srv_flushes fua_requests bytes_written compact_ns ckpt_log_ns ckpt_sync_ns)
echo "round,workload,server,value,unit,ops,cpu_ticks,status,p50_us,p99_us,p999_us,max_us,flushes,secs,wbytes,host_wbytes,$(
	IFS=,
	echo "${STATS_COLS[*]}"
),disk_wbytes" >"$RAW"
# The device under $WORK: bytes that reached it during each matrix job.
DISK_SYS=$(disk_dev "$WORK")
: >"$META"
: >"$SRVTSV"
START_S=$(date +%s)

# qemu-nbd --cache=none needs O_DIRECT on the filesystem holding build/.
if dd if=/dev/zero of="$WORK/.odirect" bs=4096 count=1 oflag=direct 2>/dev/null; then
	QEMU_CACHE=none QEMU_AIO=native
else
	QEMU_CACHE=writeback QEMU_AIO=threads
fi
rm -f "$WORK/.odirect"

# ---- workloads -----------------------------------------------------------
# id | unit | label | fio arguments (uri, engine, output added by fio_run)
TB="--time_based --runtime=$RUNTIME"
S="--size=${SIZE_MIB}M"
declare -A WL_ARGS=() WL_UNIT=()
WORKLOADS=()
workload() { # section id unit label target fio-args
	WL_UNIT[$2]=$3
	WL_ARGS[$2]=$6
	if [ "$1" = main ]; then
		case " ${JOBS:-$2} " in *" $2 "*) ;; *) return 0 ;; esac
		WORKLOADS+=("$2")
	fi
	printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$META"
}
workload main rw4k1 IOPS "4k randwrite qd32, 1 conn" "cowbd >= 1.0x nbdkit file, >= 2x qemu-nbd" \
	"--name=rw4k1 --rw=randwrite --bs=4k --iodepth=32 $S $TB"
workload main rw4k2 IOPS "4k randwrite qd32, 2 conns" ">= 1.0x nbdkit file" \
	"--name=rw4k2 --rw=randwrite --bs=4k --iodepth=32 --numjobs=2 $S $TB"
workload main rw4kf IOPS "4k randwrite qd32, FLUSH every 16" ">= 0.5x cowbd without flushes" \
	"--name=rw4kf --rw=randwrite --bs=4k --iodepth=32 --fsync=16 $S $TB"
workload main rr4k IOPS "4k randread qd32" ">= 1.0x nbdkit file" \
	"--name=rr4k --rw=randread --bs=4k --iodepth=32 $S $TB"
workload main sw1m MB/s "1 MiB seq write qd8" ">= 1.0x nbdkit file" \
	"--name=sw1m --rw=write --bs=1M --iodepth=8 $S $TB"
# The same with a FLUSH after every 256 writes: each server must then put
# the data on the disk within the job (without FLUSHes a 1 GiB export can
# stay in the page cache; cowbd's log cannot: see docs/PERFORMANCE.md).
workload main sw1mf MB/s "1 MiB seq write qd8, FLUSH every 256 MiB" ">= 1.0x nbdkit file" \
	"--name=sw1mf --rw=write --bs=1M --iodepth=8 --fsync=256 $S $TB"
workload main sr1m MB/s "1 MiB seq read qd8" ">= 1.0x nbdkit file" \
	"--name=sr1m --rw=read --bs=1M --iodepth=8 $S $TB"
workload ckpt ck4k IOPS "4k randwrite qd32, ${CK_RUNTIME} s" "p99.9 with checkpoints <= 2x without" \
	"--name=ck4k --rw=randwrite --bs=4k --iodepth=32 $S --time_based --runtime=$CK_RUNTIME"
# Each pass picks other blocks (--randrepeat=0): with fio's fixed seed every
# pass would overwrite the blocks the last one wrote, whose segments then die
# whole and are freed without the compactor.
CMP_S="--size=${CMP_VOL_MIB}M --randrepeat=0"
workload cmp cmp_fill MB/s "compaction pool: fill" "" "--name=cmp_fill --rw=write --bs=1M --iodepth=8 $CMP_S"
workload cmp cmp_churn IOPS "compaction pool: overwrite half, a snapshot held" "" \
	"--name=cmp_churn --rw=randwrite --bs=4k --iodepth=32 $CMP_S --number_ios=$((CMP_VOL_MIB * 128))"
workload cmp cmp_load IOPS "4k randwrite qd32 while the compactor runs" ">= 0.7x idle" \
	"--name=cmp_load --rw=randwrite --bs=4k --iodepth=32 $CMP_S $TB"
workload cmp cmp_idle IOPS "4k randwrite qd32 after idle cleaning" "" \
	"--name=cmp_idle --rw=randwrite --bs=4k --iodepth=32 $CMP_S $TB"
workload cmp cmp_clean s "idle cleaning: seconds until used/live <= 1.2 or no progress" "" ""
workload cmp cmp_ratio_load x "allocated / live right after the loaded job" "" ""
workload cmp cmp_ratio_idle x "allocated / live after idle cleaning" "" ""
workload cmp cmp_clean_end s "idle cleaning at the end" "" ""
workload cmp cmp_ratio_end x "allocated / live at the end" "<= 1.2" ""
workload cmp cmp_total - "the whole compaction job after the fill" "" ""
workload cowbd snap0 IOPS "4k randwrite qd32, no new snapshot" "" "${WL_ARGS[rw4k1]}"
workload cowbd snap1 IOPS "4k randwrite qd32, right after a snapshot" "" "${WL_ARGS[rw4k1]}"
workload cowbd ctl_ping ms "control socket round trip: ping (connect to reply)" "" ""
workload cowbd snap_empty ms "snapshot create, empty 100 GiB volume (socket round trip)" "< 1 ms" ""
workload cowbd snap_full ms "snapshot create, 100 GiB volume with $MAP_BLOCKS mapped blocks (socket round trip)" "< 1 ms, = empty" ""
workload cowbd clone_empty ms "clone of the empty volume's snapshot (socket round trip)" "< 1 ms" ""
workload cowbd clone_full ms "clone of the mapped volume's snapshot (socket round trip)" "< 1 ms, = empty" ""
workload cowbd cowctl_noop ms "cowctl volume info, wall time (process start + socket)" "" ""
workload cowbd cowctl_snap ms "cowctl snapshot create of the mapped volume, wall time" "" ""
workload cowbd diff_0 ms "diff between two snapshots with nothing written between, 100 GiB volume with $MAP_BLOCKS mapped blocks (socket round trip)" "milliseconds" ""
workload cowbd diff_1000 ms "diff of a snapshot against the volume after 1,000 scattered 4k writes, same volume (socket round trip)" "milliseconds, not seconds" ""
workload cowbd map_iops IOPS "4k writes mapping $MAP_BLOCKS scattered blocks (every other block)" "" ""
workload cowbd rss_before KiB "VmRSS before mapping" "" ""
workload cowbd rss_after KiB "VmRSS after mapping $MAP_BLOCKS blocks" "bounded, reported" ""
workload cowbd rss_per_extent B "RSS growth per mapped extent" "<= 32 B" ""
workload cowbd rec_ctl ms "restart after kill -9 following a ${RECOVERY_MIB} MiB write: control socket up" "<= 2000 ms (1 GiB since checkpoint)" ""
workload cowbd rec_nbd ms "restart after kill -9 following a ${RECOVERY_MIB} MiB write: export answers" "<= 2000 ms (1 GiB since checkpoint)" ""

# The RADOS section (bench/rados.sh), with the matrix's sw1m job; it skips
# itself (one line) with QUICK=1, RADOS=0 or without Ceph.
rados_section() {
	SW1M=${WL_ARGS[sw1m]} COWBD_ARGS=$COWBD_ARGS QUICK=$QUICK bash "$BENCH_SRC/rados.sh" "$BUILD"
}
if [ -n "${RADOS_ONLY:-}" ] && [ "$RADOS_ONLY" != 0 ]; then
	rados_section | tee "$OUT/report.md"
	exit "${PIPESTATUS[0]}"
fi

# One row of raw.csv: round workload server value unit ops ticks status,
# then optionally p50 p99 p99.9 max flushes secs wbytes host_wbytes and the
# STATS_FIELDS differences (fields left out are empty).
record() {
	local IFS=,
	echo "$*" >>"$RAW"
}

# Differences of two cow_stats lines, comma-separated; empty fields when
# either is missing.
stats_delta() { # before after
	local -a a b out=()
	local i
	read -r -a a <<<"$1"
	read -r -a b <<<"$2"
	for ((i = 0; i < ${#STATS_FIELDS[@]}; i++)); do
		if [ -n "${a[i]:-}" ] && [ -n "${b[i]:-}" ]; then out+=($((b[i] - a[i]))); else out+=(""); fi
	done
	local IFS=,
	echo "${out[*]}"
}

# One fio job against one server; records value, ops, server CPU ticks,
# latency, flushes and, for cowbd, its counters and host write bytes over the
# job.  Leaves the bytes the job wrote in LAST_WBYTES.
run_job() { # round workload server
	local r=$1 wl=$2 id=$3 pid=${SRV_PID[$3]:-} ctl=${SRV_CTL[$3]:-} t0 t1 val
	local ops iops bw err p50 p99 p999 max fl secs wb s0="" s1="" w0="" w1="" hw="" d0 d1 dw=""
	LAST_WBYTES=0
	if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
		[ -n "${SRV_SKIP[$id]:-}" ] || SRV_SKIP[$id]="server died (see $LOGS/$id.log)"
		return 1
	fi
	# Start every job with no dirty page cache left by the previous one, so
	# that a FLUSH pays for its own writes only and writeback does not steal
	# CPU from the next server's job.
	sync
	if [ -n "$ctl" ]; then
		s0=$(cow_stats "$ctl" "${STATS_FIELDS[@]}")
		w0=$(io_wbytes "$pid")
	fi
	d0=$(disk_wbytes "$DISK_SYS")
	t0=$(cpu_ticks "$pid")
	# shellcheck disable=SC2086
	read -r ops iops bw err p50 p99 p999 max fl secs wb < <(fio_run "${SRV_URI[$id]}" \
		"$WORK/fio-$wl-$id-$r.json" ${WL_ARGS[$wl]})
	t1=$(cpu_ticks "$pid")
	d1=$(disk_wbytes "$DISK_SYS")
	[ -n "$d0" ] && [ -n "$d1" ] && dw=$((d1 - d0))
	if [ -n "$ctl" ]; then
		w1=$(io_wbytes "$pid")
		s1=$(cow_stats "$ctl" "${STATS_FIELDS[@]}")
		[ -n "$w0" ] && [ -n "$w1" ] && hw=$((w1 - w0))
	fi
	LAST_WBYTES=${wb:-0}
	cp "$WORK/fio-$wl-$id-$r.json" "$LOGS/" 2>/dev/null
	if [ "${WL_UNIT[$wl]}" = IOPS ]; then val=$iops; else val=$(awk -v b="$bw" 'BEGIN{printf "%.1f", b / 1e6}'); fi
	record "$r" "$wl" "$id" "$val" "${WL_UNIT[$wl]}" "$ops" $((t1 - t0)) "$err" \
		"$p50" "$p99" "$p999" "$max" "$fl" "$secs" "$wb" "$hw" "$(stats_delta "$s0" "$s1")" "$dw"
	printf 'bench: round %s %-9s %-15s %10s %-4s p99.9 %8s µs (%s ops, %s ticks) %s\n' \
		"$r" "$wl" "$id" "$val" "${WL_UNIT[$wl]}" "$p999" "$ops" $((t1 - t0)) "$err" >&2
}

# Fill server ID's export once with 1 MiB writes, so that reads read data.
fill_export() { # id mib
	local err
	read -r _ _ _ err _ < <(fio_run "${SRV_URI[$1]}" "$WORK/fill-$1.json" \
		--name=fill --rw=write --bs=1M --iodepth=8 "--size=$2M")
	[ "$err" = ok ] || say "$1: filling the export failed ($err)"
}

say "build $BUILD; rounds $ROUNDS; ${RUNTIME}s jobs; export ${SIZE_MIB} MiB; quick=$QUICK;" \
	"qemu-nbd cache=$QEMU_CACHE aio=$QEMU_AIO; load $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- start every server, fill its export once ----------------------------
ACTIVE=()
for id in "${SERVER_LIST[@]}"; do
	if ! declare -F "start_${id//-/_}" >/dev/null; then
		SRV_SKIP[$id]="unknown server id (known: $KNOWN_SERVERS)"
		say "$id skipped: ${SRV_SKIP[$id]}"; continue
	fi
	if bench_start "$id"; then
		say "$id up at ${SRV_URI[$id]} (pid ${SRV_PID[$id]}${SRV_LOOP[$id]:+, on ${SRV_LOOP[$id]}})"
		fill_export "$id" "$SIZE_MIB"
		ACTIVE+=("$id")
	else
		say "$id skipped: ${SRV_SKIP[$id]}"
	fi
done

say "servers up and filled after $(( $(date +%s) - START_S )) s"

# ---- the job matrix: A B C ... per workload, ROUNDS times ------------------
# Round r starts at server r-1 (A B C, B C A, C A B, ...) so that no server
# always runs first after a workload switch.
n=${#ACTIVE[@]}
for r in $(seq 1 "$ROUNDS"); do
	for wl in "${WORKLOADS[@]}"; do
		for k in $(seq 0 $((n - 1))); do
			run_job "$r" "$wl" "${ACTIVE[$(( (k + r - 1) % n ))]}"
		done
	done
done

say "job matrix done after $(( $(date +%s) - START_S )) s"

# ---- cowbd only ------------------------------------------------------------

# 4k random writes with checkpoints running vs without: two daemons on
# like pools, one checkpointing every CKPT_ON of log, one every CKPT_OFF;
# per round both run the job (order rotated), each after a checkpoint of its
# own so that both start clean.  The counters recorded over each job show
# how many checkpoints ran in it.
cowbd_checkpoints() {
	local r k id ids=(cowbd-nockpt cowbd-ckpt)
	if ! cowbd_server cowbd-nockpt "$COW_POOL_SIZE" "${SIZE_MIB}M" --checkpoint-interval "$CKPT_OFF" ||
		! cowbd_server cowbd-ckpt "$COW_POOL_SIZE" "${SIZE_MIB}M" --checkpoint-interval "$CKPT_ON"; then
		say "checkpoint jobs skipped: ${SRV_SKIP[cowbd-nockpt]:-${SRV_SKIP[cowbd-ckpt]:-}}"
	else
		for id in "${ids[@]}"; do fill_export "$id" "$SIZE_MIB"; done
		for r in $(seq 1 "$ROUNDS"); do
			for k in 0 1; do
				id=${ids[$(( (k + r - 1) % 2 ))]}
				cowctl_at "${SRV_CTL[$id]}" checkpoint >>"$LOGS/cowbd.log" 2>&1 ||
					say "$id: cowctl checkpoint failed"
				run_job "$r" ck4k "$id"
			done
		done
	fi
	for id in "${ids[@]}"; do server_stop "$id"; rm -f "$WORK/$id.pool"; done
}

# Wait while the idle daemon cleans: until used/live <= 1.2, or a poll
# finds no compactor pass since the last, or MAX seconds; prints the
# seconds waited.  The daemon cleans after 1 s without a request, one pass
# per idle second, and a stats request is a request: poll every 4 s.
cmp_wait_idle() { # ctl max-secs
	local t0 now ratio c last_c=""
	t0=$(now_ns)
	while :; do
		read -r ratio c < <(cow_stats "$1" used_over_live compactions)
		now=$(now_ns)
		if [ -z "${c:-}" ] || [ "$c" = "$last_c" ] || awk -v x="$ratio" 'BEGIN{exit !(x <= 1.2)}' ||
			[ $(( (now - t0) / 1000000000 )) -ge "$2" ]; then
			break
		fi
		last_c=$c
		sleep 4
	done
	awk -v a="$t0" -v b="$now" 'BEGIN{printf "%.1f", (b - a) / 1e9}'
}

# Compaction under load: a pool of CMP_POOL_MIB with a volume of CMP_VOL_MIB,
# filled once.  Per round: overwrite half the volume at random with a
# snapshot held, delete the snapshot (its old blocks die scattered over the
# log), again until the compactor has run; then 4k random writes while it
# runs (cmp_load); then the idle daemon cleans (cmp_clean, its used/live
# before and after); then the same job on the cleaned pool (cmp_idle).
# cmp_total holds the counters and client bytes from after the fill to the end;
# at the end the idle daemon cleans for up to CMP_END_SECS more
# (cmp_clean_end, cmp_ratio_end).
cowbd_compaction() {
	local id=cowbd-cmp ctl r i c0 c1 s0 s_start s_end w0 w1 wsum=0 secs
	cowbd_server "$id" "${CMP_POOL_MIB}M" "${CMP_VOL_MIB}M" ||
		{ say "compaction job skipped: ${SRV_SKIP[$id]}"; server_stop "$id"; return 1; }
	ctl=${SRV_CTL[$id]}
	run_job 1 cmp_fill "$id"
	s_start=$(cow_stats "$ctl" "${STATS_FIELDS[@]}")
	w0=$(io_wbytes "${SRV_PID[$id]}")
	for r in $(seq 1 "$ROUNDS"); do
		c0=$(cow_stats "$ctl" compactions)
		c1=$c0
		for i in $(seq 1 "$CMP_CHURN_MAX"); do
			cowctl_at "$ctl" snapshot create "bench@churn$r-$i" >>"$LOGS/cowbd.log" 2>&1 ||
				say "$id: snapshot create failed"
			run_job "$r" cmp_churn "$id" || break
			wsum=$((wsum + LAST_WBYTES))
			cowctl_at "$ctl" snapshot delete "bench@churn$r-$i" >>"$LOGS/cowbd.log" 2>&1 ||
				say "$id: snapshot delete failed"
			c1=$(cow_stats "$ctl" compactions)
			[ "${c1:-0}" -gt "${c0:-0}" ] && break
		done
		say "round $r: $((${c1:-0} - ${c0:-0})) compactor passes after $i overwrite passes"
		run_job "$r" cmp_load "$id"
		wsum=$((wsum + LAST_WBYTES))
		record "$r" cmp_ratio_load "$id" "$(cow_stats "$ctl" used_over_live)" x 0 0 ok
		s0=$(cow_stats "$ctl" "${STATS_FIELDS[@]}")
		secs=$(cmp_wait_idle "$ctl" "$CMP_IDLE_SECS")
		record "$r" cmp_clean "$id" "$secs" s 0 0 ok "" "" "" "" "" "" 0 "" \
			"$(stats_delta "$s0" "$(cow_stats "$ctl" "${STATS_FIELDS[@]}")")"
		record "$r" cmp_ratio_idle "$id" "$(cow_stats "$ctl" used_over_live)" x 0 0 ok
		run_job "$r" cmp_idle "$id"
		wsum=$((wsum + LAST_WBYTES))
	done
	s0=$(cow_stats "$ctl" "${STATS_FIELDS[@]}")
	secs=$(cmp_wait_idle "$ctl" "$CMP_END_SECS")
	s_end=$(cow_stats "$ctl" "${STATS_FIELDS[@]}")
	record 1 cmp_clean_end "$id" "$secs" s 0 0 ok "" "" "" "" "" "" 0 "" "$(stats_delta "$s0" "$s_end")"
	record 1 cmp_ratio_end "$id" "$(cow_stats "$ctl" used_over_live)" x 0 0 ok
	w1=$(io_wbytes "${SRV_PID[$id]}")
	record 1 cmp_total "$id" "" - 0 0 ok "" "" "" "" "" "" "$wsum" \
		"$([ -n "$w0" ] && [ -n "$w1" ] && echo $((w1 - w0)))" "$(stats_delta "$s_start" "$s_end")"
	server_stop "$id"
	rm -f "$WORK/$id.pool"
}

cowbd_only() {
	local r
	# (1) random writes right after a snapshot vs without, back to back.
	for r in $(seq 1 "$ROUNDS"); do
		cowbd_job snap || break
		run_job "$r" snap0 cowbd
		cowctl snapshot create "bench@bench-$r" >>"$LOGS/cowbd.log" 2>&1 ||
			{ say "cowctl snapshot create failed"; break; }
		run_job "$r" snap1 cowbd
	done
	server_stop cowbd
	rm -f "$WORK/cowbd.pool"
	if cowbd_job ckpt; then cowbd_checkpoints; fi
	if cowbd_job cmp; then cowbd_compaction; fi
	if cowbd_job meta; then cowbd_metadata; fi
	if cowbd_job rec; then cowbd_recovery; fi
}

# (2) a pool with an empty volume and one with MAP_BLOCKS mapped blocks.
cowbd_metadata() {
	local r i t0 t1 port pid before after mapped ops iops err rc v w
	COW_POOL="$WORK/meta.pool" COW_CTL="$WORK/meta.sock"
	rm -f "$COW_POOL"
	port=$(free_port)
	cowbd_launch "$port" "$COW_POOL" "$COW_CTL" --create "$COW_POOL_SIZE" "${COWBD_EXTRA[@]}" ||
		{ say "cowbd (metadata pool) did not start"; return 1; }
	pid=$COW_PID
	SRV_PID[cowbd-meta]=$pid SRV_URI[cowbd-meta]="nbd://127.0.0.1:$port/full"
	for v in empty full warm; do cowctl volume create "$v" 100G >>"$LOGS/cowbd.log" 2>&1; done
	# warm up buffers and threads on another volume, so RSS growth is the tree's
	fio_run "nbd://127.0.0.1:$port/warm" "$WORK/warm.json" --name=warm --rw=randwrite \
		--bs=4k --iodepth=32 --size=64M --number_ios=4096 >/dev/null
	sleep 0.5
	before=$(rss_kib "$pid")
	t0=$(cpu_ticks "$pid")
	read -r ops iops _ err _ < <(fio_run "nbd://127.0.0.1:$port/full" "$WORK/map.json" \
		--name=map --rw=write:4k --bs=4k --iodepth=32 --size=100G --number_ios="$MAP_BLOCKS")
	t1=$(cpu_ticks "$pid")
	sleep 0.5
	after=$(rss_kib "$pid")
	mapped=$(cowctl --json volume info full 2>/dev/null |
		"$PY" -c 'import json,sys; print(json.load(sys.stdin)["volume"]["used"] // 4096)' 2>/dev/null)
	say "mapped $ops blocks ($iops IOPS, $err); cowbd reports mapped_blocks=${mapped:-?}; RSS $before -> $after KiB"
	record 1 map_iops cowbd "$iops" IOPS "$ops" $((t1 - t0)) "$err"
	record 1 rss_before cowbd "$before" KiB 0 0 ok
	record 1 rss_after cowbd "$after" KiB 0 0 ok
	record 1 rss_per_extent cowbd "$(awk -v a="$after" -v b="$before" -v n="${ops:-0}" \
		'BEGIN{ if (n > 0) printf "%.1f", (a - b) * 1024 / n; else print 0 }')" B "$ops" 0 "$err"
	# snapshot/clone latency at the socket (no process start), then with cowctl.
	# Each is durable on reply (one fdatasync of the pool), so first write back
	# what the mapping left dirty: the sync then covers the operation alone.
	sync
	"$PY" "$BENCH_SRC/ctl_time.py" "$COW_CTL" "$REPS" 2>>"$LOGS/cowctl.log" |
		while read -r w i ms st; do record "$i" "$w" cowbd "$ms" ms 1 0 "$st"; done
	for i in $(seq 1 "$REPS"); do
		for w in cowctl_noop cowctl_snap; do
			t0=$(now_ns)
			if [ "$w" = cowctl_noop ]; then
				cowctl volume info empty
			else
				cowctl snapshot create "full@c$i"
			fi >>"$LOGS/cowctl.log" 2>&1
			rc=$?
			t1=$(now_ns)
			record "$i" "$w" cowbd "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b - a) / 1e6}')" \
				ms 1 0 "$([ $rc = 0 ] && echo ok || echo "cowctl-exit-$rc")"
		done
	done
	# diff cost (issue 11): follows what changed, not the volume's size
	"$PY" "$BENCH_SRC/ctl_time.py" "$COW_CTL" "$REPS" --diff diff_0 full@t1 full@t2 \
		2>>"$LOGS/cowctl.log" | while read -r w i ms st; do record "$i" "$w" cowbd "$ms" ms 1 0 "${st%%:*}"; done
	fio_run "nbd://127.0.0.1:$port/full" "$WORK/diff.json" --name=diff --rw=randwrite \
		--bs=4k --iodepth=32 --size=100G --number_ios=1000 >/dev/null
	"$PY" "$BENCH_SRC/ctl_time.py" "$COW_CTL" "$REPS" --diff diff_1000 "full@c$REPS" \
		2>>"$LOGS/cowctl.log" | while read -r w i ms st; do
		[ "$i" = 1 ] && say "diff after 1,000 writes: ${st#ok:} bytes changed"
		record "$i" "$w" cowbd "$ms" ms 1 0 "${st%%:*}"
	done
	stop_pid "$pid" 20
	SRV_PID[cowbd-meta]=""
	rm -f "$COW_POOL"
}

# (3) recovery: write RECOVERY_MIB, kill -9, time the restart.
cowbd_recovery() {
	local r t0 t1 port err
	COW_POOL="$WORK/rec.pool" COW_CTL="$WORK/rec.sock"
	rm -f "$COW_POOL"
	port=$(free_port)
	local extra=("${COWBD_EXTRA[@]}")
	[ -n "$COWBD_RECOVERY_ARGS" ] && read -r -a extra <<<"$COWBD_ARGS $COWBD_RECOVERY_ARGS"
	cowbd_launch "$port" "$COW_POOL" "$COW_CTL" --create "$((RECOVERY_MIB * 4 + 1024))M" "${extra[@]}" ||
		{ say "cowbd (recovery pool) did not start"; return 1; }
	SRV_PID[cowbd-rec]=$COW_PID
	cowctl volume create rec "$((RECOVERY_MIB + 64))M" >>"$LOGS/cowbd.log" 2>&1
	for r in $(seq 1 "$ROUNDS"); do
		cowctl checkpoint >>"$LOGS/cowbd.log" 2>&1
		read -r _ _ _ err _ < <(fio_run "nbd://127.0.0.1:$port/rec" "$WORK/rec.json" \
			--name=rec --rw=write --bs=1M --iodepth=8 --size="${RECOVERY_MIB}M")
		# What the daemon says is in the log past its last checkpoint (cowbd
		# checkpoints on its own every 256 MiB of log unless told otherwise,
		# see COWBD_RECOVERY_ARGS): LSNs count summaries, one per batch.
		cowctl --json stats 2>/dev/null | "$PY" -c 'import json, sys
s = json.load(sys.stdin)["stats"]
print("bench: before kill -9: log_lsn %s checkpoint_lsn %s (%s batches past it), checkpoints %s" % (
    s.get("log_lsn"), s.get("checkpoint_lsn"), s.get("log_lsn", 0) - s.get("checkpoint_lsn", 0),
    s.get("checkpoints")))' >&2
		kill -9 "$COW_PID"
		wait "$COW_PID" 2>/dev/null
		t0=$(now_ns)
		if ! cowbd_launch "$port" "$COW_POOL" "$COW_CTL" "${extra[@]}"; then
			say "cowbd did not restart after kill -9 (see $LOGS/cowbd.log)"
			record "$r" rec_ctl cowbd "" ms 0 0 restart-failed
			break
		fi
		t1=$(now_ns)
		SRV_PID[cowbd-rec]=$COW_PID
		wait_nbd "nbd://127.0.0.1:$port/rec" "$COW_PID" 60
		record "$r" rec_ctl cowbd "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", (b - a) / 1e6}')" ms 1 0 "$err"
		record "$r" rec_nbd cowbd "$(awk -v a="$t0" -v b="$(now_ns)" 'BEGIN{printf "%.1f", (b - a) / 1e6}')" ms 1 0 "$err"
	done
	stop_pid "$COW_PID" 20
	SRV_PID[cowbd-rec]=""
	rm -f "$COW_POOL"
}

for id in "${ACTIVE[@]}"; do
	[ "$id" = cowbd ] || server_stop "$id"
done
case " ${ACTIVE[*]} " in
*" cowbd "*) [ -n "${MATRIX_ONLY:-}" ] || cowbd_only ;;
esac
bench_stop_all
say "cowbd-only jobs done after $(( $(date +%s) - START_S )) s"

for id in "${SERVER_LIST[@]}"; do
	printf '%s\t%s\n' "$id" "${SRV_SKIP[$id]:-}" >>"$SRVTSV"
done

# ---- report ------------------------------------------------------------------
{
	echo "# cowbd bench — $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "Machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)," \
		"$(awk '/^MemTotal/ {printf "%.0f GiB RAM", $2 / 1048576}' /proc/meminfo), kernel $(uname -r);" \
		"$(fio --version), nbdkit $(nbdkit --version 2>/dev/null | awk '{print $2}')," \
		"$(qemu-nbd --version 2>/dev/null | awk 'NR==1 {print $1, $2}')," \
		"nbd-server $(nbd-server -V 2>&1 | awk '/version/ {print $NF; exit}')."
	echo "Run: $ROUNDS round(s), ${RUNTIME} s timed jobs, ${SIZE_MIB} MiB exports, loopback TCP," \
		"qemu-nbd --cache=$QEMU_CACHE --aio=$QEMU_AIO; load average at end $(cut -d' ' -f1-3 /proc/loadavg);" \
		"took $(( $(date +%s) - START_S )) s."
	echo
} >"$OUT/report.md"
"$PY" "$BENCH_SRC/report.py" "$RAW" "$META" "$SRVTSV" "$OUT/results.csv" "$(getconf CLK_TCK)" \
	>>"$OUT/report.md" || { say "report failed"; exit 1; }
# The compactor near full: the store itself over an in-memory pool (bench/wa.c).
if [ -x "$BUILD/bench-wa" ] && [ -z "${MATRIX_ONLY:-}" ] && cowbd_job wa; then
	if [ "$QUICK" = 1 ]; then
		WA_ARGS=(256 10000 70) WA_IDLE=3
	else
		WA_ARGS=(1024 100000 70 80 90) WA_IDLE=30
	fi
	{
		echo
		echo "Compaction near full (\`bench-wa ${WA_ARGS[*]}\`: a ${WA_ARGS[0]} MiB in-memory pool, a volume" \
			"of the given fill written once, then ${WA_ARGS[1]} random 4 KiB overwrites):"
		echo
		WA_IDLE_SECS=$WA_IDLE "$BUILD/bench-wa" "${WA_ARGS[@]}" || echo "(bench-wa failed)"
	} >>"$OUT/report.md"
fi
# A compaction pass against the snapshots sharing its victims (bench/compact_cost.c).
if [ -x "$BUILD/bench-compact_cost" ] && [ -z "${MATRIX_ONLY:-}" ] && cowbd_job ccost; then
	CC_ARGS=(64 1 1000)
	[ "$QUICK" = 1 ] && CC_ARGS=(16 1 10)
	{
		echo
		echo "A compaction pass against the snapshots sharing the victims' live blocks" \
			"(\`bench-compact_cost ${CC_ARGS[*]}\`: a ${CC_ARGS[0]} MiB volume 10% live in its first" \
			"segments, then S snapshots each with a path of its own):"
		echo
		TMPDIR=$WORK "$BUILD/bench-compact_cost" "${CC_ARGS[@]}" || echo "(bench-compact_cost failed)"
	} >>"$OUT/report.md"
fi
# Metadata at scale (bench/scale.sh): pools from the generator at 10^SCALE
# mapped blocks; QUICK=1 runs it at 10^5 only, as a smoke test.
[ "$QUICK" = 1 ] && : "${SCALE:=5}"
if [ -n "${SCALE:-}" ] && [ -z "${MATRIX_ONLY:-}" ]; then
	SCALE=$SCALE QUICK=$QUICK bash "$BENCH_SRC/scale.sh" "$BUILD" >>"$OUT/report.md" ||
		echo "(bench/scale.sh failed: see build/bench/scale/logs)" >>"$OUT/report.md"
fi
# Snapshots at scale (bench/snap_scale.sh): a generated pool of SNAPS.
if [ -n "${SNAPS:-}" ] && [ -z "${MATRIX_ONLY:-}" ]; then
	{
		echo
		echo "## A pool of $SNAPS snapshots (bench/snap_scale.sh)"
		echo
		echo '```'
		SNAPS=$SNAPS bash "$BENCH_SRC/snap_scale.sh" "$BUILD" || echo "(bench/snap_scale.sh failed)"
		echo '```'
	} >>"$OUT/report.md"
fi
if [ -z "${MATRIX_ONLY:-}" ]; then
	rados_section >>"$OUT/report.md" ||
		echo "(bench/rados.sh failed: see build/bench/rados/logs)" >>"$OUT/report.md"
fi
cat "$OUT/report.md"
say "results: $OUT/results.csv, raw runs: $RAW, logs: $LOGS"
