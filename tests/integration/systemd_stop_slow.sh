#!/bin/bash
# systemd_stop_slow.sh — a stop under a service manager whose fd store is on
# (FDSTORE set: SIGTERM pauses the connections to keep them, main_store),
# with the watchdog fed every 0.2 s and a slow disk (strace delays every
# fdatasync by 0.5 s), ends, and ends clean: cowbd exits 0 within 60 s,
# says "stopped", and the pool checks clean.  The service thread pings the
# log thread every round; the slow final checkpoint makes sure a round
# falls while the store closes.  Before the fix the store was closed
# before the service thread was stopped: its ping went to a log thread
# that had already left (or to a store already freed), nobody answered,
# and the stop hung in the join of the service thread, as a
# `systemctl stop cowbd` once did in the VM test (systemd-watchdog).
. "$(dirname "$0")/lib.sh"
requires /usr/bin/python3 strace

cat >"$T/listen.py" <<'PY'
# listen.py SOCK LOG: a service manager's notify socket; every field to LOG.
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
out = open(sys.argv[2], "a", buffering=1)
while True:
    for field in s.recv(4096).decode().split("\n"):
        out.write(field + "\n")
PY
LISTENER="" TRACER=""
stop_all() {
	[ -z "$TRACER" ] || { kill -9 "$TRACER" 2>/dev/null; wait "$TRACER" 2>/dev/null; }
	[ -z "$LISTENER" ] || { kill "$LISTENER" 2>/dev/null; wait "$LISTENER" 2>/dev/null; }
}
trap 'stop_all; cleanup' EXIT

# The pool, made and closed at full speed.
cowbd_start
ok volume create vol0 64M
cowbd_stop

/usr/bin/python3 "$T/listen.py" "$T/notify.sock" "$T/notify.log" &
LISTENER=$!
for _ in $(seq 1 100); do [ -S "$T/notify.sock" ] && break; sleep 0.05; done
[ -S "$T/notify.sock" ] || fail "the notify listener did not start"

rm -f "$CTL"
# LeakSanitizer cannot run under ptrace; AddressSanitizer's other checks stay on.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
	NOTIFY_SOCKET="$T/notify.sock" FDSTORE=16 WATCHDOG_USEC=400000 \
	strace -f -qq -o /dev/null -e trace=fdatasync -e inject=fdatasync:delay_enter=500000 \
	"$BUILD/cowbd" --pool "$POOL" --listen "127.0.0.1:$PORT" --control "$CTL" >>"$LOG" 2>&1 &
TRACER=$!
for _ in $(seq 1 1200); do
	grep -qx 'READY=1' "$T/notify.log" 2>/dev/null && break
	kill -0 "$TRACER" 2>/dev/null || fail "cowbd exited before READY=1"
	sleep 0.05
done
grep -qx 'READY=1' "$T/notify.log" || fail "no READY=1 within 60 s"
pid=$(pgrep -P "$TRACER" -x cowbd) || fail "no cowbd under strace $TRACER"
COWBD_PID=$pid # killed on exit (a tracer killed leaves its tracee running)
grep -qx 'WATCHDOG=1' "$T/notify.log" || sleep 1

kill -TERM "$pid"
for _ in $(seq 1 600); do
	kill -0 "$TRACER" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$TRACER" 2>/dev/null; then
	threads=$(ls "/proc/$pid/task" 2>/dev/null | wc -l)
	fail "cowbd (pid $pid) still runs 60 s after SIGTERM ($threads threads left)"
fi
wait "$TRACER"; rc=$?
TRACER="" COWBD_PID=""
[ "$rc" = 0 ] || fail "cowbd exited $rc after SIGTERM, wanted 0"
grep -q 'keeping 0 connection(s) in the service manager' "$LOG" ||
	fail "SIGTERM did not take the fd store's way (no 'keeping 0 connection(s)' line)"
tail -n 1 "$LOG" | grep -q 'info: stopped$' || fail "no 'stopped' line last"
grep -qx 'STOPPING=1' "$T/notify.log" || fail "no STOPPING=1"
"$BUILD/cowbd-check" "$POOL" >"$T/check.out" 2>&1 ||
	{ cat "$T/check.out"; fail "the pool does not check clean after the stop"; }
echo "ok: a slow stop with the fd store on and the watchdog fed ends clean"
