# tests/integration/upgrade_lib.bash — sourced (after lib.sh) by the
# upgrade_*.sh tests.  After `cowctl upgrade` the daemon is another
# process, a child of the old one that outlives it: the test's shell cannot
# wait for it, and nothing here reaps orphans.  So cowbd runs under a small
# subreaper (prctl PR_SET_CHILD_SUBREAPER) that reaps every generation and
# exits with the status of the last one.
#
#   up_start [ARGS...]     new pool, cowbd under the reaper; COWBD_PID, REAPER_PID
#   up_upgrade [ARGS...]   cowctl --json upgrade ARGS; COWBD_PID follows; the
#                          pause (ms) is appended to $T/pauses
#   up_stop                SIGTERM to the daemon, the reaper must exit 0
#   accepted               NBD connections accepted so far (log lines, every
#                          generation writes to $LOG)
#   pause_summary          "median M ms, worst W ms" of $T/pauses

cat >"$T/reaper.py" <<'PY'
import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
code = 0
while True:
    try:
        _, st = os.wait()
    except ChildProcessError:
        break
    code = os.waitstatus_to_exitcode(st)
sys.exit(code if code >= 0 else 128 - code)
PY

up_start() {
	PORT=$(random_port)
	/usr/bin/python3 "$T/reaper.py" "$BUILD/cowbd" --pool "$POOL" --create "${POOL_SIZE:-1G}" \
		--listen "127.0.0.1:$PORT" --control "$CTL" "$@" >>"$LOG" 2>&1 &
	REAPER_PID=$!
	for _ in $(seq 1 1200); do
		kill -0 "$REAPER_PID" 2>/dev/null || fail "cowbd did not start"
		[ -S "$CTL" ] && break
		sleep 0.05
	done
	[ -S "$CTL" ] || fail "cowbd did not come up within 60 s"
	COWBD_PID=$(pgrep -P "$REAPER_PID")
	[ -n "$COWBD_PID" ] || fail "no cowbd under the reaper"
}

up_upgrade() {
	cowctl --json upgrade "$@" >"$T/up.json" 2>"$T/up.err" ||
		fail "cowctl upgrade $* failed: $(cat "$T/up.err")"
	COWBD_PID=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["upgrade"]["pid"])' "$T/up.json")
	/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["upgrade"]["pause_ms"])' \
		"$T/up.json" >>"$T/pauses"
	kill -0 "$COWBD_PID" 2>/dev/null || fail "new cowbd $COWBD_PID is not running"
}

up_stop() {
	kill -TERM "$COWBD_PID"
	wait "$REAPER_PID"; rc=$?
	COWBD_PID=""
	[ $rc -eq 0 ] || fail "cowbd exited $rc after SIGTERM"
}

accepted() { grep -c ': connected$' "$LOG"; }

pause_summary() {
	/usr/bin/python3 -c 'import statistics,sys
p = [float(x) for x in open(sys.argv[1])]
print("median %.1f ms, worst %.1f ms over %d handovers" % (statistics.median(p), max(p), len(p)))' "$T/pauses"
}
