#!/bin/bash
# Smoke test of `make bench QUICK=1`: the benchmark runs end to end (cowbd
# beside nbdkit file, 1 s jobs, and on loop devices when this host can attach
# them) and produces every table and the CSV: latency beside each result,
# the flush figures (cowbd's from its own counters: every FLUSH fio sent
# received), checkpoints seen in the job that should have them and none in
# the one that should not, the compactor running during the loaded job and
# the log thread's share of it, the scale section's row at 10^5 mapped
# blocks, no loop device left behind, and the report of the run before kept
# in build/bench/previous.  It checks that the bench works, not how fast
# anything is.
. "$(dirname "$0")/lib.sh"
requires fio nbdkit
# A verdict's ratio is never printed rounded onto the target's other side
# (the 2026-12-04 run printed "0.90× | ≥ 0.9× | missed" for 0.896).
python3 - "$TOP/bench" <<'EOF' || fail "report.py's judge() prints a ratio that contradicts its verdict"
import sys
sys.path.insert(0, sys.argv[1])
from report import judge
for args, want in [((0.8958, 0.9, True), ("0.896×", "**missed**")),
                   ((0.89999, 0.9, True), ("0.89999×", "**missed**")),
                   ((0.9, 0.9, True), ("0.90×", "met")),
                   ((0.4996, 0.5, False), ("0.50×", "met")),
                   ((0.503, 0.5, False), ("0.503×", "**missed**")),
                   ((1.199, 1.2, False), ("1.20×", "met")),
                   ((2.67, 1.0, False), ("2.67×", "**missed**"))]:
    got = judge(*args)
    if got != want:
        sys.exit("judge%r = %r, want %r" % (args, got, want))
EOF
case "$BUILD" in *san*) echo "skipped under sanitizers (timings only)"; exit 77 ;; esac
out="$T/bench.out"
servers="cowbd nbdkit-file"
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null && [ -e /dev/loop-control ]; then
	servers="$servers cowbd-blk nbdkit-file-blk"
else
	echo "no loop devices here (not root or no losetup): file columns only"
fi
# The run before this one is kept in bench/previous: a report there (this
# test's own stand-in when there is none) must be there afterwards.
mkdir -p "$BUILD/bench"
made=""
[ -e "$BUILD/bench/report.md" ] || { echo "bench_quick: a report before the run" >"$BUILD/bench/report.md"; made=1; }
before=$(sha256sum <"$BUILD/bench/report.md")
QUICK=1 SERVERS="$servers" bash "$TOP/bench/bench.sh" "$BUILD" >"$out" 2>&1 ||
	{ tail -n 30 "$out"; fail "bench failed"; }
[ "$(sha256sum <"$BUILD/bench/previous/report.md" 2>/dev/null)" = "$before" ] ||
	fail "the report before this run is not in bench/previous"
[ -z "$made" ] || rm -rf "$BUILD/bench/previous"
show() { grep -F "$1" "$out" | head -n 3; }
if grep -q 'skipped' "$out"; then grep 'skipped' "$out"; fail "a server or job was skipped"; fi
# No bench script may stumble (bash's own errors name the script and a
# line), and the RADOS section, which QUICK=1 never runs, must say so.
if grep -E '^[^ ]*bench/[a-z_]+\.sh: line [0-9]+: ' "$out"; then fail "a bench script failed"; fi
grep -q '^RADOS pool (bench/rados.sh): not run with QUICK=1' "$out" ||
	{ grep -i rados "$out" | head -n 5; fail "bench/rados.sh did not answer QUICK=1 as it should"; }
[ -s "$BUILD/bench/results.csv" ] || fail "no results.csv"
num='[0-9][0-9.]*'
# Every row of the main table: a result, CPU and three latency percentiles.
grep -Eq "^\| 4k randwrite qd32, 1 conn \| \*\*cowbd\*\* \| ${num}k? IOPS \| [^|]* \| $num \| $num \| $num \| $num \| $num×" "$out" ||
	{ show '4k randwrite qd32, 1 conn'; fail "no cowbd row with latency in the table"; }
rows=$(grep -Ec "^\|[^|]*\| [^|]+ \| ${num}k? (IOPS|MB/s) \| [^|]* \| $num \| $num \| $num \| $num \|" "$out")
want=$(( $(wc -w <<<"$servers") * 7 ))
[ "$rows" = "$want" ] || fail "$rows table rows with latency, want $want"
case " $servers " in *" cowbd-blk "*)
	grep -Eq "^\|  \| \*\*cowbd, loop device\*\* \| ${num}k? IOPS" "$out" ||
		fail "no cowbd block-device row"
	grep -q '^|  | nbdkit file, loop device | ' "$out" || fail "no nbdkit file block-device row"
	;;
esac
# DESIGN.md's figures: a row each, a ratio with its verdict where both
# servers ran (nbdkit null does not run here).
fig='^\| [^|]+ ÷ nbdkit (null|file)[^|]* \| ([0-9.]+×|–) \| [≤≥] [0-9.]+× \| (met|\*\*missed\*\*|not measured) \|$'
nt=$(grep -Ec "$fig" "$out")
[ "$nt" = 11 ] || { grep -A 14 "^DESIGN.md's figures" "$out"; fail "$nt rows of DESIGN.md's figures, want 11"; }
for f in "4k randread qd32: server CPU per op ÷ nbdkit file.s \| $num× \| ≤ 0.5×" \
	"1 MiB seq write qd8: MB/s ÷ nbdkit file \| $num× \| ≥ 1.0×"; do
	grep -Eq "^\| $f \| (met|\*\*missed\*\*) \|$" "$out" || { show "${f%%:*}"; fail "no verdict for: $f"; }
done
grep -Eq '^\| 4k randread qd32: IOPS ÷ nbdkit null \| – \| ≥ 0.9× \| not measured \|$' "$out" ||
	fail "the ÷ nbdkit null figures without nbdkit null in the run"
# The two cowbd-only ratios, each with its verdict: after a snapshot
# against DESIGN.md's 0.95× (the report said 0.9× before), FLUSHes every 16
# against the bench's 0.5×.
verdict='\((met|\*\*missed\*\*)\)'
grep -Eq "^\| 4k randwrite after snapshot ÷ without \| $num× $verdict \| ≥ 0\.95× \|$" "$out" ||
	{ show 'after snapshot ÷'; fail "no snapshot ratio with its verdict against 0.95×"; }
grep -Eq "^\| 4k randwrite with FLUSH every 16 ÷ without \(main table\) \| $num× $verdict \| ≥ 0\.5× \|$" "$out" ||
	{ show 'FLUSH every 16 ÷'; fail "no FLUSH ratio with its verdict against 0.5×"; }
# Flushes: cowbd's syncs and FLUSHes counted over the job, every FLUSH fio
# completed received by the server.
grep -Eq "^\| \*\*cowbd\*\* \| ${num}k? IOPS \| $num× \| $num \| $num \| $num \| $num \| $num \| $num \| $num \| 1\.000 \|" "$out" ||
	{ show '| **cowbd** |'; fail "no flush figures for cowbd, or FLUSHes received != sent"; }
# Large writes and the disk: a row per job and server; what cowbd took with
# FLUSHes in between reached the disk during the job (when the work
# directory has a block device to count on).
for job in sw1m sw1mf; do
	grep -Eq "^\| $job \| \*\*cowbd\*\* \| $num MB/s \| $num× \| ($num|–) \| $num \|" "$out" ||
		{ show "| $job |"; fail "no $job row in the disk table"; }
done
dpc=$(awk -F'|' '$2 == " sw1mf " && $3 == " **cowbd** " {print $6}' "$out" | tr -d ' ')
case $dpc in
–) echo "no block device under $BUILD/bench: disk bytes not counted" ;;
*) awk -v d="$dpc" 'BEGIN{exit !(d >= 0.5)}' ||
	{ show '| sw1mf |'; fail "cowbd's flushed writes: $dpc disk bytes per client byte, want >= 0.5"; } ;;
esac
# Checkpoints: several in the job with a small interval, none without.
on=$(awk -F'|' '$2 ~ /^ checkpoints running / {print $8}' "$out" | tr -d ' ')
off=$(awk -F'|' '$2 ~ /^ no checkpoint / {print $8}' "$out" | tr -d ' ')
if ! [ "${on:-0}" -ge 2 ] 2>/dev/null; then
	show checkpoints
	fail "checkpoint job saw '$on' checkpoints, want >= 2"
fi
[ "$off" = 0 ] || { show checkpoint; fail "job without checkpoints saw '$off'"; }
grep -Eq "^p99.9 with checkpoints ÷ without: \*\*$num×\*\*" "$out" || fail "no checkpoint latency ratio"
# Compaction: the compactor ran during the loaded job; the figures are there.
grep -Eq "^\| 4k randwrite qd32 while the compactor runs \| ${num}k? IOPS; .*compactor in each job: [1-9][0-9]* passes" "$out" ||
	{ show 'compactor runs'; fail "the compactor did not run during the loaded job"; }
grep -Eq "^\| log thread's time while the compactor runs \(share of the job\) \| compacting $num%, on checkpoints $num%: $num% in all" "$out" ||
	{ show "log thread's time"; fail "no share of the loaded job for the log thread"; }
for what in 'IOPS while compacting ÷ after cleaning' 'write amplification during the loaded job' \
	'allocated ÷ live at the end'; do
	grep -Eq "^\| ${what}[^|]* \| \**$num×" "$out" || { show "$what"; fail "no figure for: $what"; }
done
# Metadata at scale (bench/scale.sh at 10^5): open times, the batches
# replayed after kill -9, read IOPS and RSS, all measured.
grep -Eq "^\| 10\^5 \| $num s \| $num MB \| $num s / $num s \| $num s / $num s \| $num MiB \| $num s / $num s \| [1-9][0-9]* \| [^|]+ \| $num \| $num µs \| $num MiB \| $num MiB \|" "$out" ||
	{ show '| 10^5 |'; fail "no scale row at 10^5"; }
leftover=$(losetup -a 2>/dev/null | grep -F "$BUILD/bench/work")
[ -z "$leftover" ] || fail "loop devices left attached: $leftover"
echo "bench smoke run ok ($servers)"
