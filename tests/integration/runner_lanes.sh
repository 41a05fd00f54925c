#!/bin/bash
# runner_lanes.sh — tests/run.sh's integration lanes, on a tree of its own:
# six scripts that note when they start and end.  INTEGRATION_LANES=1 runs
# them one at a time (the second lane, which takes the others' scripts from
# the end of their queue once its Ceph ones are done, must not run at all);
# INTEGRATION_LANES=2 runs two at a time.  Each time all six pass, each once.
# (Each sleeps 1.5 s: under load the second lane's first script must start
# while the first lane's still runs.)
. "$(dirname "$0")/lib.sh"
R="$T/tree"
mkdir -p "$R/tests/integration" "$R/build" || fail "mkdir"
cp "$TOP/tests/run.sh" "$R/tests/" || fail "copy run.sh"
: >"$R/tests/integration/lib.sh"
for n in a b c d e f; do
	cat >"$R/tests/integration/$n.sh" <<EOF
#!/bin/bash
echo "start $n \$(date +%s.%N)" >>"$T/trace"
sleep 1.5
echo "end $n \$(date +%s.%N)" >>"$T/trace"
EOF
done
most_at_once() { # the most scripts running at one time, from the trace
	sort -k3 -n "$T/trace" | awk '$1 == "start" { if (++c > m) m = c } $1 == "end" { c-- } END { print m + 0 }'
}
for lanes in 1 2; do
	rm -f "$T/trace"
	# (in a subshell without the caller's cluster: none of these uses one)
	(
		for v in $(compgen -e | grep '^COWBD_TEST_CEPH'); do unset "$v"; done
		INTEGRATION_LANES=$lanes bash "$R/tests/run.sh" "$R/build" integration
	) >"$T/run$lanes.out" 2>&1 ||
		{ cat "$T/run$lanes.out"; fail "INTEGRATION_LANES=$lanes: the runner failed"; }
	tail -n 1 "$T/run$lanes.out" | grep -qx '6 passed, 0 failed, 0 skipped' ||
		{ cat "$T/run$lanes.out"; fail "INTEGRATION_LANES=$lanes: not 6 passed"; }
	[ "$(grep -c '^start ' "$T/trace")" = 6 ] || fail "INTEGRATION_LANES=$lanes: $(grep -c '^start ' "$T/trace") starts"
	m=$(most_at_once)
	[ "$m" = "$lanes" ] || fail "INTEGRATION_LANES=$lanes: $m scripts ran at once"
	echo "ok: INTEGRATION_LANES=$lanes: 6 scripts, at most $m at once"
done
