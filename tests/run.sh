#!/bin/bash
# Test runner behind `make check`, `check-unit`, `check-integration`, `check-vm`.
# Usage: tests/run.sh BUILD-DIR all|unit|integration|vm
#
# The unit tier runs UNIT_JOBS binaries at a time (default: the number of CPUs,
# at most 2), the slowest first (SLOW_UNITS); the binaries share nothing but
# the Ceph cluster. The integration tier runs its scripts one at a time in
# two lanes (INTEGRATION_LANES): those that use the Ceph cluster, which stop
# and start its daemons, and the others; once the Ceph lane is through its
# own, it takes the others' from the end of their queue. The VM tier runs one
# guest at a time.
#
# A test is a unit-test binary (build/tests/test_*) or a script
# (tests/integration/*.sh, tests/vm/check.sh).  It passes with exit 0, is
# skipped with exit 77, fails otherwise.  A script may also report several
# results itself with lines "PASS: name", "FAIL: name", "SKIP: name"; those
# are counted instead (plus one failure if it exits non-zero without a FAIL).
# Ends with the line "N passed, N failed, N skipped"; exit 1 if any failed.
#
# The tests that use Ceph RADOS (a binary or script naming COWBD_TEST_CEPH_CONF, a
# script calling lib.sh's ceph_cluster) share one throwaway cluster (tests/ceph/cluster.sh:
# three OSDs, pool cowbd of size 3, min_size 2) in $BUILD/ceph. When the run has such
# tests, it starts in the background before the first tier, the first of them waits for
# it, and from then on every test gets COWBD_TEST_CEPH_CONF, COWBD_TEST_CEPH_ID and
# COWBD_TEST_CEPH_POOL. It is stopped after the integration tier and on any exit. A
# cluster that could not start (or Ceph not installed) gives COWBD_TEST_CEPH_ERROR
# instead: the RADOS scripts skip on it, or fail under CI=true. COWBD_TEST_CEPH_CONF set
# by the caller names a cluster to use instead.
set -u
BUILD=${1:-build}
SUITE=${2:-all}
TOP=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$TOP/$BUILD" ;; esac
export BUILD TOP
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
LOGDIR="$BUILD/test-logs"
mkdir -p "$LOGDIR"
pass=0 fail=0 skip=0
failed_names=""
# VALGRIND=1: each unit binary runs under memcheck, and an invalid access
# or a definite/indirect leak fails it.  Some run 30-50 times slower there:
# the default bound is an hour instead of ten minutes.
VG="" bound=600
if [ "${VALGRIND:-0}" != 0 ]; then
	VG="valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect"
	bound=3600
fi
TEST_TIMEOUT=${TEST_TIMEOUT:-$bound}

CEPH_DIR="$BUILD/ceph"
CEPH_JOB=""     # the background `cluster.sh start`, until ceph_wait
CEPH_UP=0       # a cluster of ours runs in CEPH_DIR

# uses_ceph TEST: the test binary or script uses the cluster
uses_ceph() {
	case "$1" in
	*/lib.sh) false ;;
	*.sh) grep -qsE '^[[:space:]]*ceph_cluster|COWBD_TEST_CEPH_CONF' "$1" ;;
	*) grep -qs COWBD_TEST_CEPH_CONF "$1" ;;
	esac
}

# ceph_start: start the cluster in the background if a test of this run uses it.
ceph_start() {
	[ -z "${COWBD_TEST_CEPH_CONF:-}" ] || return 0
	for t in $(case "$SUITE" in all | unit) echo "$BUILD"/tests/test_* ;; esac) \
		$(case "$SUITE" in all | integration) echo "$TOP"/tests/integration/*.sh ;; esac); do
		uses_ceph "$t" && break
	done
	uses_ceph "$t" || return 0
	for c in ceph-mon ceph-mgr ceph-osd ceph rados; do
		command -v "$c" >/dev/null 2>&1 && continue
		COWBD_TEST_CEPH_ERROR="$c not installed (make deps)"
		export COWBD_TEST_CEPH_ERROR
		return 0
	done
	# a cluster left by a run killed with SIGKILL; stop signals only its own daemons
	bash "$TOP/tests/ceph/cluster.sh" stop "$CEPH_DIR" >/dev/null 2>&1
	rm -rf "$CEPH_DIR"
	CEPH_T0=$(date +%s)
	bash "$TOP/tests/ceph/cluster.sh" start "$CEPH_DIR" 3 >"$LOGDIR/ceph_cluster.log" 2>&1 &
	CEPH_JOB=$!
	CEPH_UP=1
}

# ceph_wait: once the background start is over, export what the tests need.
ceph_wait() {
	[ -n "$CEPH_JOB" ] || return 0
	ceph_t=$(date +%s)
	wait "$CEPH_JOB"
	ceph_rc=$?
	CEPH_JOB=""
	if [ $ceph_rc -eq 0 ]; then
		COWBD_TEST_CEPH_CONF="$CEPH_DIR/ceph.conf"
		COWBD_TEST_CEPH_ID=cowbd
		COWBD_TEST_CEPH_POOL=cowbd
		export COWBD_TEST_CEPH_CONF COWBD_TEST_CEPH_ID COWBD_TEST_CEPH_POOL
		echo "ceph: $(tail -n 1 "$LOGDIR/ceph_cluster.log"); started $((ceph_t - CEPH_T0)) s" \
			"before the first test using it, which waited $(($(date +%s) - ceph_t)) s"
	else
		COWBD_TEST_CEPH_ERROR="the test cluster did not start (exit $ceph_rc): $LOGDIR/ceph_cluster.log"
		export COWBD_TEST_CEPH_ERROR
		echo "ceph: $COWBD_TEST_CEPH_ERROR:"
		sed -n '0,/^cluster.sh: start .* failed at:/p' "$LOGDIR/ceph_cluster.log" |
			tail -n 10 | sed 's/^/    /'
	fi
}

# ceph_started: no start of the cluster is still under way.
ceph_started() {
	[ -z "$CEPH_JOB" ] || ! kill -0 "$CEPH_JOB" 2>/dev/null
}

# ceph_stop: stop our cluster (a start still running is ended first), remove its files.
ceph_stop() {
	[ "$CEPH_UP" = 1 ] || return 0
	if [ -n "$CEPH_JOB" ]; then
		kill "$CEPH_JOB" 2>/dev/null
		wait "$CEPH_JOB" 2>/dev/null
		CEPH_JOB=""
	elif [ -n "${COWBD_TEST_CEPH_CONF:-}" ]; then
		kb=0
		for f in "$CEPH_DIR"/run/*.pid; do
			k=$(awk '/^VmHWM:/ { print $2 }' "/proc/$(cat "$f")/status" 2>/dev/null)
			kb=$((kb + ${k:-0}))
		done
		echo "ceph: stopping the cluster; its daemons' peak RSS: $((kb / 1024)) MiB"
	fi
	bash "$TOP/tests/ceph/cluster.sh" stop "$CEPH_DIR" >>"$LOGDIR/ceph_cluster.log" 2>&1
	[ -n "${KEEP_TEST_DIR:-}" ] || rm -rf "$CEPH_DIR"
	CEPH_UP=0
	unset COWBD_TEST_CEPH_CONF COWBD_TEST_CEPH_ID COWBD_TEST_CEPH_POOL
}
declare -A RUNNING=() # started tests not yet reported: pid -> name

# stop_running: end the tests still running (an interrupted run): their
# timeout(1), which passes the signal on, then the subshell around it.
stop_running() {
	for pid in "${!RUNNING[@]}"; do
		pkill -TERM -P "$pid" 2>/dev/null
		kill "$pid" 2>/dev/null
	done
}
trap 'stop_running; ceph_stop' EXIT
trap 'exit 130' INT TERM

# start_one NAME COMMAND...: run it in the background into its log; its exit
# status and seconds go to the log's .rc file when it ends.
start_one() {
	name=$1; shift
	log="$LOGDIR/$(echo "$name" | tr '/ ' '__').log"
	rm -f "$log.rc"
	(
		start=$(date +%s)
		timeout -k 10 "$TEST_TIMEOUT" "$@" >"$log" 2>&1
		rc=$?
		echo "$rc $(($(date +%s) - start))" >"$log.rc"
	) &
	RUNNING[$!]=$name
}

# reap_one: wait for one started test to end and report it.
reap_one() {
	local pid
	wait -n -p pid "${!RUNNING[@]}"
	report_one "${RUNNING[$pid]}"
	unset "RUNNING[$pid]"
	REAPED=$pid
}

# report_one NAME: count and print the result of an ended test.
report_one() {
	name=$1
	log="$LOGDIR/$(echo "$name" | tr '/ ' '__').log"
	read -r rc secs <"$log.rc" 2>/dev/null || { rc=125; secs=0; }
	rm -f "$log.rc"
	np=$(grep -c '^PASS: ' "$log")
	nf=$(grep -c '^FAIL: ' "$log")
	ns=$(grep -c '^SKIP: ' "$log")
	if [ $((np + nf + ns)) -gt 0 ]; then
		grep -E '^(PASS|FAIL|SKIP): ' "$log" | sed "s|^|  $name: |"
		if [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ "$nf" -eq 0 ]; then
			nf=1; echo "  $name: FAIL: exit status $rc"
		fi
		pass=$((pass + np)); fail=$((fail + nf)); skip=$((skip + ns))
		[ "$nf" -gt 0 ] && failed_names="$failed_names $name"
	elif [ $rc -eq 0 ]; then
		echo "PASS: $name (${secs}s)"; pass=$((pass + 1))
	elif [ $rc -eq 77 ]; then
		echo "SKIP: $name ($(tail -n 1 "$log"))"; skip=$((skip + 1))
	else
		echo "FAIL: $name (exit $rc, ${secs}s); last lines of $log:"
		tail -n 25 "$log" | sed 's/^/    /'
		fail=$((fail + 1)); failed_names="$failed_names $name"
	fi
}

run_one() { # name command...: one test, alone
	start_one "$@"
	reap_one
}

# The unit binaries that take longest (under ASan: a minute or more each),
# started first so that the jobs end together; the order changes nothing else.
SLOW_UNITS="test_tree_cache test_store test_space_map test_segio_obj test_upgrade test_vtab_scale test_ckpt test_diff test_scrub test_fuzz_pool test_objstore"
cpus=$(nproc 2>/dev/null || echo 1)
UNIT_JOBS=${UNIT_JOBS:-$((cpus < 2 ? cpus : 2))}
# INTEGRATION_LANES=2: the scripts that use the Ceph cluster (which mostly
# wait: for leases, timeouts, OSDs marked down) run one at a time beside the
# others, which run one at a time too, until the Ceph ones are done: then
# that lane runs the others' last ones (so two of those may overlap).
INTEGRATION_LANES=${INTEGRATION_LANES:-$((cpus < 2 ? 1 : 2))}

ceph_start
if [ "$SUITE" = all ] || [ "$SUITE" = unit ]; then
	units=""
	for n in $SLOW_UNITS; do
		[ -x "$BUILD/tests/$n" ] && units="$units $BUILD/tests/$n"
	done
	for t in "$BUILD"/tests/test_*; do
		[ -x "$t" ] || continue
		case " $SLOW_UNITS " in *" $(basename "$t") "*) continue ;; esac
		units="$units $t"
	done
	for t in $units; do
		uses_ceph "$t" && ceph_wait
		while [ ${#RUNNING[@]} -ge "$UNIT_JOBS" ]; do reap_one; done
		start_one "unit/$(basename "$t")" $VG "$t"
	done
	while [ ${#RUNNING[@]} -gt 0 ]; do reap_one; done
fi
if [ "$SUITE" = all ] || [ "$SUITE" = integration ]; then
	local_q=() ceph_q=()
	for t in "$TOP"/tests/integration/*.sh; do
		[ "$(basename "$t")" = lib.sh ] && continue
		if [ "$INTEGRATION_LANES" -ge 2 ] && uses_ceph "$t"; then
			ceph_q+=("$t")
		else
			local_q+=("$t")
		fi
	done
	lane_local="" lane_ceph="" # the pid each lane runs
	start_script() { # SCRIPT: start it in the background ($! its pid)
		uses_ceph "$1" && ceph_wait
		start_one "integration/$(basename "$1" .sh)" bash "$1"
	}
	while :; do
		if [ -z "$lane_local" ] && [ ${#local_q[@]} -gt 0 ]; then
			start_script "${local_q[0]}"
			lane_local=$! local_q=("${local_q[@]:1}")
		fi
		if [ -z "$lane_ceph" ]; then
			# the Ceph lane waits for the cluster only when nothing else
			# runs; its own done, it takes the others from the end of
			# their queue (one lane: its queue is empty, and it stays idle)
			if [ ${#ceph_q[@]} -gt 0 ] && { ceph_started || [ -z "$lane_local" ]; }; then
				start_script "${ceph_q[0]}"
				lane_ceph=$! ceph_q=("${ceph_q[@]:1}")
			elif [ "$INTEGRATION_LANES" -ge 2 ] && [ ${#ceph_q[@]} -eq 0 ] && [ ${#local_q[@]} -gt 0 ]; then
				start_script "${local_q[-1]}"
				lane_ceph=$!
				unset 'local_q[-1]'
			fi
		fi
		[ ${#RUNNING[@]} -gt 0 ] || break
		reap_one
		[ "$REAPED" = "$lane_local" ] && lane_local=""
		[ "$REAPED" = "$lane_ceph" ] && lane_ceph=""
	done
fi
ceph_stop # before the VM tier: its guests want the memory

if [ "$SUITE" = all ] || [ "$SUITE" = vm ]; then
	# One test per guest, so that each gets its own TEST_TIMEOUT (and its
	# boot VM_TIMEOUT inside it): the guests' scenarios grow, and a shared
	# budget let a slow first guest starve the second one's last scenario.
	guests=${VM_GUESTS:-busybox systemd}
	[ "${VM_SERVER:-cowbd}" = nbdkit ] && guests=busybox # the systemd guest installs cowbd
	if [ -f "$TOP/tests/vm/check.sh" ]; then
		for g in $guests; do
			run_one "vm-$g" env VM_GUESTS="$g" bash "$TOP/tests/vm/check.sh"
		done
	fi
fi
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
