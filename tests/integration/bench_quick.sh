#!/bin/bash
# Smoke test of `make bench QUICK=1`: the benchmark runs end to end (cowbd
# beside nbdkit file, 1 s jobs) and produces its table and CSV.  It checks
# that the bench works, not how fast anything is.
. "$(dirname "$0")/lib.sh"
requires fio nbdkit
case "$BUILD" in *san*) echo "skipped under sanitizers (timings only)"; exit 77 ;; esac
out="$T/bench.out"
QUICK=1 SERVERS="cowbd nbdkit-file" bash "$TOP/bench/bench.sh" "$BUILD" >"$out" 2>&1 ||
	{ tail -n 30 "$out"; fail "bench failed"; }
grep -q '^| 4k randwrite qd32, 1 conn | \*\*cowbd\*\*' "$out" || { tail -n 30 "$out"; fail "no cowbd row in the table"; }
grep -q 'nbdkit file' "$out" || fail "no nbdkit file row"
[ -s "$BUILD/bench/results.csv" ] || fail "no results.csv"
if grep -q 'skipped' "$out"; then grep 'skipped' "$out"; fail "a server was skipped"; fi
echo "bench smoke run ok"
