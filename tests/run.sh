#!/bin/sh
# Test runner behind `make check`, `check-unit`, `check-integration`, `check-vm`.
# Usage: tests/run.sh BUILD-DIR all|unit|integration|vm
#
# A test is a unit-test binary (build/tests/test_*) or a script
# (tests/integration/*.sh, tests/vm/check.sh).  It passes with exit 0, is
# skipped with exit 77, fails otherwise.  A script may also report several
# results itself with lines "PASS: name", "FAIL: name", "SKIP: name"; those
# are counted instead (plus one failure if it exits non-zero without a FAIL).
# Ends with the line "N passed, N failed, N skipped"; exit 1 if any failed.
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

run_one() { # name command...
	name=$1; shift
	log="$LOGDIR/$(echo "$name" | tr '/ ' '__').log"
	start=$(date +%s)
	timeout -k 10 "$TEST_TIMEOUT" "$@" >"$log" 2>&1
	rc=$?
	secs=$(( $(date +%s) - start ))
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

if [ "$SUITE" = all ] || [ "$SUITE" = unit ]; then
	for t in "$BUILD"/tests/test_*; do
		[ -x "$t" ] || continue
		run_one "unit/$(basename "$t")" $VG "$t"
	done
fi
if [ "$SUITE" = all ] || [ "$SUITE" = integration ]; then
	for t in "$TOP"/tests/integration/*.sh; do
		[ "$(basename "$t")" = lib.sh ] && continue
		run_one "integration/$(basename "$t" .sh)" bash "$t"
	done
fi
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
