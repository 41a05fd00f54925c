#!/usr/bin/env bash
# bench/bench.sh — `make bench`: cowbd beside the servers a user would pick
# instead, in one run, on loopback, driven by the same fio job list.
#
# Usage: bash bench/bench.sh [BUILD-DIR]        (make bench [QUICK=1])
#
# Servers (columns): cowbd (fresh pool, volume "bench"), nbdkit file on a
# preallocated file, nbdkit memory, nbd-server on a preallocated file,
# qemu-nbd on qcow2 (--cache=none, Linux AIO), nbdkit null (the ceiling of
# what fio + libnbd + loopback carry).  A server whose binary is missing or
# that does not start is reported as skipped.
#
# Per round, for each workload, every server runs the job in turn (A B C ...,
# then B C A ... in the next round); the report gives medians over rounds,
# the min..max spread, and the server's CPU time per operation (utime+stime
# from /proc/PID/stat before and after the job, over the operations fio
# counted; for 1 MiB jobs, per 1 MiB operation).  Then cowbd-only jobs:
# 4k random write right after a snapshot vs without, snapshot/clone latency on
# an empty volume vs one with MAP_BLOCKS mapped blocks, RSS per mapped extent,
# recovery time after kill -9 with RECOVERY_MIB written since the checkpoint.
#
# Output: Markdown on stdout; build/bench/results.csv (medians, ratios),
# build/bench/raw.csv (every run), build/bench/logs/.  Large files live in
# build/bench/work/ and are removed at the end (KEEP=1 keeps them).
#
# Environment: QUICK=1 (1 round of ~1 s jobs: a smoke test), ROUNDS, RUNTIME
# (seconds per timed job), SIZE_MIB (export size), SERVERS (space-separated
# subset of the ids below), MAP_BLOCKS, RECOVERY_MIB, COWBD_ARGS (extra cowbd
# options for every start), COWBD_RECOVERY_ARGS (extra options for the
# recovery pool, e.g. to push the checkpoint interval above RECOVERY_MIB).
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
	: "${ROUNDS:=1}" "${RUNTIME:=1}" "${SIZE_MIB:=512}"
	: "${MAP_BLOCKS:=16384}" "${RECOVERY_MIB:=64}" "${REPS:=3}" "${COW_POOL_SIZE:=8G}"
else
	QUICK=0
	: "${ROUNDS:=3}" "${RUNTIME:=3}" "${SIZE_MIB:=1024}"
	: "${MAP_BLOCKS:=1000000}" "${RECOVERY_MIB:=1024}" "${REPS:=7}" "${COW_POOL_SIZE:=40G}"
fi
: "${SERVERS:=cowbd nbdkit-file nbdkit-memory nbd-server qemu-nbd nbdkit-null}"
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
	if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

rm -rf "$WORK" "$LOGS"
rm -f "$OUT/results.csv" "$OUT/report.md" # never leave an older run's results beside this one's raw data
mkdir -p "$WORK" "$LOGS" || exit 1
RAW="$OUT/raw.csv"
META="$OUT/workloads.tsv"
SRVTSV="$OUT/servers.tsv"
echo "round,workload,server,value,unit,ops,cpu_ticks,status" >"$RAW"
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
	printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$META"
	WL_UNIT[$2]=$3
	WL_ARGS[$2]=$6
	[ "$1" = main ] && WORKLOADS+=("$2")
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
workload main sr1m MB/s "1 MiB seq read qd8" ">= 1.0x nbdkit file" \
	"--name=sr1m --rw=read --bs=1M --iodepth=8 $S $TB"
workload cowbd snap0 IOPS "4k randwrite qd32, no new snapshot" "" "${WL_ARGS[rw4k1]}"
workload cowbd snap1 IOPS "4k randwrite qd32, right after a snapshot" ">= 0.9x without" "${WL_ARGS[rw4k1]}"
workload cowbd ctl_ping ms "control socket round trip: ping (connect to reply)" "" ""
workload cowbd snap_empty ms "snapshot create, empty 100 GiB volume (socket round trip)" "< 1 ms" ""
workload cowbd snap_full ms "snapshot create, 100 GiB volume with $MAP_BLOCKS mapped blocks (socket round trip)" "< 1 ms, = empty" ""
workload cowbd clone_empty ms "clone of the empty volume's snapshot (socket round trip)" "< 1 ms" ""
workload cowbd clone_full ms "clone of the mapped volume's snapshot (socket round trip)" "< 1 ms, = empty" ""
workload cowbd cowctl_noop ms "cowctl volume info, wall time (process start + socket)" "" ""
workload cowbd cowctl_snap ms "cowctl snapshot create of the mapped volume, wall time" "" ""
workload cowbd map_iops IOPS "4k writes mapping $MAP_BLOCKS scattered blocks (every other block)" "" ""
workload cowbd rss_before KiB "VmRSS before mapping" "" ""
workload cowbd rss_after KiB "VmRSS after mapping $MAP_BLOCKS blocks" "bounded, reported" ""
workload cowbd rss_per_extent B "RSS growth per mapped extent" "<= 32 B" ""
workload cowbd rec_ctl ms "restart after kill -9 following a ${RECOVERY_MIB} MiB write: control socket up" "<= 2000 ms (1 GiB since checkpoint)" ""
workload cowbd rec_nbd ms "restart after kill -9 following a ${RECOVERY_MIB} MiB write: export answers" "<= 2000 ms (1 GiB since checkpoint)" ""

record() { # round workload server value unit ops ticks status
	echo "$1,$2,$3,$4,$5,$6,$7,$8" >>"$RAW"
}

# One fio job against one server; records value, ops and server CPU ticks.
run_job() { # round workload server
	local r=$1 wl=$2 id=$3 pid=${SRV_PID[$3]:-} t0 t1 ops iops bw err val
	if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
		[ -n "${SRV_SKIP[$id]:-}" ] || SRV_SKIP[$id]="server died (see $LOGS/$id.log)"
		return 1
	fi
	# Start every job with no dirty page cache left by the previous one, so
	# that a FLUSH pays for its own writes only and writeback does not steal
	# CPU from the next server's job.
	sync
	t0=$(cpu_ticks "$pid")
	# shellcheck disable=SC2086
	read -r ops iops bw err < <(fio_run "${SRV_URI[$id]}" "$WORK/fio-$wl-$id-$r.json" ${WL_ARGS[$wl]})
	t1=$(cpu_ticks "$pid")
	cp "$WORK/fio-$wl-$id-$r.json" "$LOGS/" 2>/dev/null
	if [ "${WL_UNIT[$wl]}" = IOPS ]; then val=$iops; else val=$(awk -v b="$bw" 'BEGIN{printf "%.1f", b / 1e6}'); fi
	record "$r" "$wl" "$id" "$val" "${WL_UNIT[$wl]}" "$ops" $((t1 - t0)) "$err"
	printf 'bench: round %s %-6s %-14s %10s %s  (%s ops, %s ticks) %s\n' \
		"$r" "$wl" "$id" "$val" "${WL_UNIT[$wl]}" "$ops" $((t1 - t0)) "$err" >&2
}

say "build $BUILD; rounds $ROUNDS; ${RUNTIME}s jobs; export ${SIZE_MIB} MiB; quick=$QUICK;" \
	"qemu-nbd cache=$QEMU_CACHE aio=$QEMU_AIO; load $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- start every server, fill its export once ----------------------------
ACTIVE=()
for id in "${SERVER_LIST[@]}"; do
	if ! declare -F "start_${id//-/_}" >/dev/null; then
		SRV_SKIP[$id]="unknown server id (known: cowbd nbdkit-file nbdkit-memory nbd-server qemu-nbd nbdkit-null)"
		say "$id skipped: ${SRV_SKIP[$id]}"; continue
	fi
	if bench_start "$id"; then
		say "$id up at ${SRV_URI[$id]} (pid ${SRV_PID[$id]})"
		read -r _ _ _ err < <(fio_run "${SRV_URI[$id]}" "$WORK/fill-$id.json" \
			--name=fill --rw=write --bs=1M --iodepth=8 "--size=${SIZE_MIB}M")
		[ "$err" = ok ] || say "$id: filling the export failed ($err)"
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
cowbd_only() {
	local r i t0 t1 port pid before after mapped ops iops err rc v w
	# (1) random writes right after a snapshot vs without, back to back.
	for r in $(seq 1 "$ROUNDS"); do
		run_job "$r" snap0 cowbd
		cowctl snapshot create "bench@bench-$r" >>"$LOGS/cowbd.log" 2>&1 ||
			{ say "cowctl snapshot create failed"; break; }
		run_job "$r" snap1 cowbd
	done
	server_stop cowbd
	rm -f "$WORK/cowbd.pool"

	# (2) a pool with an empty volume and one with MAP_BLOCKS mapped blocks.
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
	read -r ops iops _ err < <(fio_run "nbd://127.0.0.1:$port/full" "$WORK/map.json" \
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
	stop_pid "$pid" 20
	SRV_PID[cowbd-meta]=""
	rm -f "$COW_POOL"

	# (3) recovery: write RECOVERY_MIB, kill -9, time the restart.
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
		read -r _ _ _ err < <(fio_run "nbd://127.0.0.1:$port/rec" "$WORK/rec.json" \
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
*" cowbd "*) cowbd_only ;;
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
if [ -x "$BUILD/bench-wa" ]; then
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
cat "$OUT/report.md"
say "results: $OUT/results.csv, raw runs: $RAW, logs: $LOGS"
