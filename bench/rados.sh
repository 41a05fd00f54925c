#!/usr/bin/env bash
# bench/rados.sh — the RADOS section of `make bench` (issue 14): cowbd with its
# pool in Ceph RADOS beside the cluster's own `rados bench` and beside a local
# pool, on a 1-OSD cluster of its own (tests/ceph/cluster.sh), in one run.
#
# Usage: bash bench/rados.sh [BUILD-DIR]
#        make bench (its last section)  RADOS_ONLY=1 make bench (this only)
#
# Skipped with one line on stdout when RADOS=0, when QUICK=1 (the cluster's
# start alone takes 10-25 s on the 2-core CI machine; make check runs the
# quick bench) or when Ceph is not installed (make deps-ceph).
#
# Measured, ROUNDS times (order rotated per round), medians reported:
#  a. `rados bench -p cowbd SECS write -b 1M -t 8` as client.cowbd, its
#     objects removed after each round (`rados cleanup`);
#  b. cowbd on pool rados:cowbd/bench: the matrix's sw1m job (1 MiB
#     sequential writes qd8, fio over NBD) for SECS on volume "seq";
#     MiB/s and the ratio to (a) (target >= 0.8x);
#  c. 4 KiB random reads qd32 of cached data for JOB_SECS: volume "bench"
#     (RR_MIB) written with 1 MiB writes and read once before the rounds, on
#     the RADOS pool (cache of CACHE_SIZE) and on a local pool file
#     (cowbd --pool FILE); IOPS and the ratio (target >= 0.9x);
#  d. 4 KiB random writes qd1 with a FLUSH after each (fio --fsync=1) for
#     JOB_SECS on volume "flush" of both pools: fio's completion latency of
#     the writes and the latency of the FLUSHes (fio's sync percentiles).
# Output: Markdown on stdout (progress on stderr); build/bench/rados/raw.csv
# (every run) and logs/ (cowbd, fio JSON, rados bench, the cluster's logs
# are in work/ceph/log until the end; KEEP=1 keeps work/).  Everything it
# starts, the cluster included, is stopped on exit.
#
# Environment: ROUNDS (3), SECS (20: a and b), JOB_SECS (10: c and d),
# SIZE_MIB (volume "seq", 1024), RR_MIB (512), CACHE_SIZE (1G), OSD_GIB
# (the OSD's sparse block file, 16; the free space needed is 2 GiB more),
# COWBD_ARGS (extra options for both daemons), SW1M (the fio arguments of
# the matrix's sw1m job; bench.sh passes its own, --size and --runtime are
# this section's).
set -u
export LC_ALL=C PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=${BENCH_SRC%/bench}
BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$TOP/$BUILD" ;; esac
OUT="$BUILD/bench/rados"
WORK="$OUT/work"
LOGS="$OUT/logs"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
: "${ROUNDS:=3}" "${SECS:=20}" "${JOB_SECS:=10}" "${SIZE_MIB:=1024}" "${RR_MIB:=512}"
: "${CACHE_SIZE:=1G}" "${SW1M:=--name=sw1m --rw=write --bs=1M --iodepth=8}"
RUNTIME=$SECS # fio_run's timeout
COWBD_EXTRA=()
[ -n "${COWBD_ARGS:-}" ] && read -r -a COWBD_EXTRA <<<"$COWBD_ARGS"
# shellcheck source=bench/lib.sh
. "$BENCH_SRC/lib.sh"

skip() {
	echo
	echo "RADOS pool (bench/rados.sh): skipped ($*)."
	exit 0
}
[ "${RADOS:-1}" != 0 ] || skip "RADOS=0"
if [ "${QUICK:-0}" != 0 ]; then
	# Not a skip (bench_quick.sh fails on those): QUICK=1 never runs it.
	echo
	echo "RADOS pool (bench/rados.sh): not run with QUICK=1 (the cluster's start alone takes" \
		"10-25 s; make bench or RADOS_ONLY=1 make bench runs it)."
	exit 0
fi
for b in ceph-mon ceph-mgr ceph-osd rados; do
	command -v "$b" >/dev/null 2>&1 || skip "Ceph is not installed: $b missing (make deps-ceph)"
done
for b in "$BUILD/cowbd" "$BUILD/cowctl" fio nbdinfo; do
	command -v "$b" >/dev/null 2>&1 || { say "rados: $b missing (make; make deps)"; exit 1; }
done

mkdir -p "$OUT" || exit 1
# One run at a time per build: a second would stop the first one's cluster.
exec 9>"$OUT/.lock"
flock -n 9 || { say "rados: another bench/rados.sh is running on $OUT"; exit 1; }
CEPH="$WORK/ceph"
cleanup() {
	bench_stop_all
	bash "$TOP/tests/ceph/cluster.sh" stop "$CEPH" 2>>"$LOGS/cluster.log"
	cp "$CEPH"/log/*.log "$LOGS/" 2>/dev/null
	[ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM
rm -rf "$WORK" "$LOGS"
mkdir -p "$WORK" "$LOGS" || exit 1
RAW="$OUT/raw.csv"
echo "round,job,server,value,unit,p50_us,p99_us,sync_p50_us,sync_p99_us,status" >"$RAW"
START_S=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# cluster.sh gives its OSD a 10 GiB block file, and one 20 s `rados bench`
# alone writes 8-12 GB when the machine is quiet: the OSD then stops at its
# full ratio, holds every write (lease renewals too: the cowbd under test
# fences itself) and the round fails (seen with 16 GiB: 13.5 GB from rados
# bench beside the pool's 4 GiB).  CEPH_ARGS (read by every Ceph daemon and
# tool) makes it OSD_GIB instead; the file is sparse and holds at most a
# `rados bench` run plus the pool (--create 4G: its objects stay within
# that), so the free space needed is OSD_GIB + 2 GiB here.
: "${OSD_GIB:=32}"
avail=$(df -Pk "$OUT" | awk 'NR == 2 {print int($4 / 1048576)}')
if [ "${avail:-0}" -lt $((OSD_GIB + 2)) ]; then
	echo
	echo "RADOS pool (bench/rados.sh): not run (${avail:-?} GiB free in $OUT, it needs $((OSD_GIB + 2)))."
	exit 0
fi
say "rados: starting a 1-OSD cluster in $CEPH"
# (the daemons must not inherit the lock's descriptor: they would hold it)
CEPH_ARGS="--bluestore_block_size=$((OSD_GIB << 30))" \
	bash "$TOP/tests/ceph/cluster.sh" start "$CEPH" 1 >&2 2>>"$LOGS/cluster.log" 9>&- ||
	{ say "rados: the cluster did not start (see $LOGS/cluster.log)"; exit 1; }
RADOS_CLI=(rados -c "$CEPH/ceph.conf" --id cowbd -p cowbd)

record() {
	local IFS=,
	echo "$*" >>"$RAW"
}

# a. The cluster's own figure: MiB/s (rados bench prints MiB/s as "MB/sec").
job_rados_bench() { # round
	local txt="$LOGS/rados-bench-$1.txt" v st=ok
	sync
	timeout $((SECS * 4 + 60)) "${RADOS_CLI[@]}" bench "$SECS" write -b 1M -t 8 >"$txt" 2>&1 ||
		st=rados-bench-failed
	v=$(awk -F: '/^Bandwidth \(MB\/sec\)/ {gsub(/ /, "", $2); print $2}' "$txt")
	[ -n "$v" ] || st=rados-bench-failed
	timeout 120 "${RADOS_CLI[@]}" cleanup >>"$LOGS/rados-cleanup.log" 2>&1 ||
		say "rados: rados cleanup failed (see $LOGS/rados-cleanup.log)"
	record "$1" seqw rados-bench "$v" MiB/s "" "" "" "" "$st"
	say "rados: round $1 rados bench write: $v MiB/s ($st)"
}

# One fio job on server ID's volume VOL; records value (MiB/s for UNIT
# MiB/s, else IOPS), write-or-read completion latency, FLUSH latency.
job_fio() { # round job id vol unit fio-args...
	local r=$1 job=$2 id=$3 vol=$4 unit=$5 json ops iops bw err p50 p99 sp50 sp99 v
	shift 5
	json="$LOGS/fio-$job-$id-$r.json"
	if ! kill -0 "${SRV_PID[$id]:-0}" 2>/dev/null; then
		record "$r" "$job" "$id" "" "$unit" "" "" "" "" server-died
		return 1
	fi
	sync
	read -r ops iops bw err p50 p99 _ < <(fio_run "${SRV_URI[$id]%/bench}/$vol" "$json" "$@")
	read -r sp50 sp99 < <("$PY" "$BENCH_SRC/rados_report.py" sync "$json" 2>>"$LOGS/fio.log")
	[ "${sp50:--}" != - ] || sp50="" sp99=""
	if [ "$unit" = MiB/s ]; then v=$(awk -v b="$bw" 'BEGIN{printf "%.1f", b / 1048576}'); else v=$iops; fi
	record "$r" "$job" "$id" "$v" "$unit" "$p50" "$p99" "${sp50:-}" "${sp99:-}" "$err"
	say "rados: round $r $job $id: $v $unit, p50 $p50 µs, p99 $p99 µs${sp50:+, FLUSH p50 $sp50 µs p99 $sp99 µs} ($ops ops, $err)"
}

# cowbd on the RADOS pool and on a local pool file, volumes "bench" (RR_MIB,
# the cached reads), "flush" (RR_MIB) and, on the RADOS pool, "seq".
COW_SERVER_POOL=rados:cowbd/bench cowbd_server cowbd-rados 4G "${RR_MIB}M" --rados-conf "$CEPH/ceph.conf" \
	--rados-id cowbd --cache "$WORK/rados.cache" --cache-size "$CACHE_SIZE" ||
	{ say "rados: cowbd on the RADOS pool: ${SRV_SKIP[cowbd-rados]}"; exit 1; }
cowbd_server cowbd-local 4G "${RR_MIB}M" ||
	{ say "rados: cowbd on a local pool: ${SRV_SKIP[cowbd-local]}"; exit 1; }
for vol in cowbd-rados:flush cowbd-local:flush "cowbd-rados:seq ${SIZE_MIB}M"; do
	read -r id name size <<<"${vol/:/ }"
	if ! cowctl_at "${SRV_CTL[$id]}" volume create "$name" "${size:-${RR_MIB}M}" >>"$LOGS/cowbd.log" 2>&1; then
		say "rados: $id: volume create $name failed"
		exit 1
	fi
done
say "rados: cluster and both pools up after $(($(date +%s) - START_S)) s"

# a and b, order rotated per round.
for r in $(seq 1 "$ROUNDS"); do
	for k in 0 1; do
		if [ $(((k + r) % 2)) = 1 ]; then
			job_rados_bench "$r"
		else
			# shellcheck disable=SC2086
			job_fio "$r" seqw cowbd-rados seq MiB/s $SW1M "--size=${SIZE_MIB}M" --time_based "--runtime=$SECS"
		fi
	done
done

# c and d: the read region written and read once on both pools (the RADOS
# pool's cache then holds it, its file in the page cache like the local
# pool's), then per round both jobs on both pools.
for id in cowbd-rados cowbd-local; do
	for rw in write read; do
		read -r _ _ _ err _ < <(fio_run "${SRV_URI[$id]}" "$WORK/fill.json" \
			--name="fill-$rw" --rw="$rw" --bs=1M --iodepth=8 "--size=${RR_MIB}M")
		[ "$err" = ok ] || say "rados: $id: $rw of the read region failed ($err)"
	done
done
ids=(cowbd-rados cowbd-local)
for r in $(seq 1 "$ROUNDS"); do
	for k in 0 1; do
		id=${ids[$(((k + r - 1) % 2))]}
		job_fio "$r" rr4k "$id" bench IOPS --name=rr4k --rw=randread --bs=4k --iodepth=32 \
			"--size=${RR_MIB}M" --time_based "--runtime=$JOB_SECS"
	done
	for k in 0 1; do
		id=${ids[$(((k + r - 1) % 2))]}
		job_fio "$r" flush "$id" flush IOPS --name=flush --rw=randwrite --bs=4k --iodepth=1 --fsync=1 \
			"--size=${RR_MIB}M" --time_based "--runtime=$JOB_SECS"
	done
done

LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
bench_stop_all
echo
echo "## RADOS pool (bench/rados.sh, issue 14)"
echo
echo "A 1-OSD Ceph $(rados --version 2>/dev/null | awk '{print $3}') cluster on this host" \
	"(tests/ceph/cluster.sh: bluestore on a sparse file, size 1); $ROUNDS round(s), order rotated;" \
	"${SECS} s write jobs, ${JOB_SECS} s read and FLUSH jobs; cache $CACHE_SIZE, read region" \
	"$RR_MIB MiB; load average at start $LOAD0, at end $LOAD1; took $(($(date +%s) - START_S)) s."
echo
"$PY" "$BENCH_SRC/rados_report.py" table "$RAW" || say "rados: report failed"
say "rados: raw runs: $RAW, logs: $LOGS"
