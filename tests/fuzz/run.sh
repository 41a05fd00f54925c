#!/bin/sh
# Behind `make fuzz`: run each libFuzzer target for SECONDS on its corpus.
# Usage: tests/fuzz/run.sh FUZZ-BUILD-DIR SECONDS TARGET...
#
# New inputs go to tests/fuzz/corpus/TARGET/ (merge and minimise them before
# committing: see docs/TESTING.md), crashing inputs to
# tests/fuzz/crashes/TARGET/ (commit those: `make check` replays them).
# FUZZ_JOBS parallel jobs per target (default 1, fuzz_pool 4); FUZZ_ARGS extra libFuzzer
# flags.  Exit 1 if a target found a crash.
set -u
BUILD=$1 SECONDS_EACH=$2
shift 2
TOP=$(cd "$(dirname "$0")/../.." && pwd)
status=0
for t in "$@"; do
	corpus="$TOP/tests/fuzz/corpus/$t" crashes="$TOP/tests/fuzz/crashes/$t"
	mkdir -p "$corpus" "$crashes"
	seeds="" jobs=1 extra=""
	case $t in
	fuzz_proto)
		maxlen=8192
		seeds=$(mktemp -d)
		python3 "$TOP/tests/fuzz/proto_seeds.py" "$seeds" ;;
	fuzz_pool)
		# Each execution sleeps >= 10 ms in store_close's RCU barrier
		# (liburcu's call_rcu thread batches for 10 ms), so parallel
		# jobs cost little CPU.
		maxlen=512 jobs=4 extra="-len_control=0" ;;
	fuzz_control)
		maxlen=4096 extra="-dict=$TOP/tests/fuzz/fuzz_control.dict" ;;
	*) maxlen=4096 ;;
	esac
	JOBS=${FUZZ_JOBS:-$jobs}
	jobargs=""
	[ "$JOBS" -gt 1 ] && jobargs="-jobs=$JOBS -workers=$JOBS"
	log="$BUILD/$t.log"
	echo "fuzz: $t for ${SECONDS_EACH}s ($JOBS job(s)), log in $log"
	(cd "$BUILD" && "./$t" -max_total_time="$SECONDS_EACH" -max_len=$maxlen -timeout=20 \
		-rss_limit_mb=2048 -print_final_stats=1 $jobargs $extra \
		-artifact_prefix="$crashes/" ${FUZZ_ARGS:-} "$corpus" $seeds) >"$log" 2>&1
	rc=$?
	[ -n "$seeds" ] && rm -rf "$seeds"
	# With -jobs, the figures are in fuzz-N.log.
	for l in "$log" "$BUILD"/fuzz-*.log; do
		[ -f "$l" ] && grep -E '^(#[0-9]+\s+DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$l"
	done | sed "s/^/  $t: /"
	if [ $rc -ne 0 ]; then
		echo "fuzz: $t FAILED (exit $rc): see $log and $crashes/"
		status=1
	fi
	rm -f "$BUILD"/fuzz-*.log
done
exit $status
