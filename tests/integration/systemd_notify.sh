#!/bin/bash
# systemd_notify.sh — Type=notify as systemd sees it, without systemd: cowbd
# runs with NOTIFY_SOCKET pointing at a datagram socket a small python
# listener reads (it plays the service manager and logs every field with
# its arrival time).
# Daemon 1 (no watchdog):
#  - STATUS "opening pool" comes first; READY=1 arrives only once the NBD
#    port accepts and the control socket exists (the listener connects the
#    moment READY=1 arrives), with the status "serving 0 volumes ...";
#  - the status is refreshed: a volume and a connected client show up in it;
#  - SIGHUP: RELOADING=1, then READY=1 again;
#  - no WATCHDOG=1 without WATCHDOG_USEC;
#  - SIGTERM: STOPPING=1, exit 0.
# Daemon 2 (WATCHDOG_USEC=2 s, WATCHDOG_PID its own pid through exec, and
# the test-only fault COWBD_TEST_STALL_LOG holding the log thread 4 s from
# 3 s after start): WATCHDOG=1 arrives at least every 1.7 s before the
# stall, none for over 3 s while the log thread is held (a watchdog line in
# the log names it), and regularly again after.
. "$(dirname "$0")/lib.sh"
requires /usr/bin/python3 nbdsh

cat >"$T/listen.py" <<'PY'
# listen.py SOCK LOG PORT CTL: a service manager's notify socket.  Each field
# of each datagram goes to LOG as "SECONDS FIELD"; on READY=1 it also logs
# "PROBE port=open|closed ctl=yes|no" from a connect made at that moment.
import os, socket, sys, time
path, log, port, ctl = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
out = open(log, "a", buffering=1)
t0 = time.monotonic()
while True:
    msg = s.recv(4096).decode()
    now = time.monotonic() - t0
    for field in msg.split("\n"):
        out.write("%.3f %s\n" % (now, field))
        if field == "READY=1":
            c = socket.socket()
            try:
                c.connect(("127.0.0.1", port))
                state = "open"
            except OSError:
                state = "closed"
            c.close()
            out.write("%.3f PROBE port=%s ctl=%s\n" % (now, state, "yes" if os.path.exists(ctl) else "no"))
PY

LISTENER=""
stop_listener() { [ -z "$LISTENER" ] || { kill "$LISTENER" 2>/dev/null; wait "$LISTENER" 2>/dev/null; LISTENER=""; }; }
trap 'stop_listener; cleanup' EXIT

start_listener() { # NAME: socket $T/NAME.sock, log $T/NAME.log
	rm -f "$T/$1.sock"
	: >"$T/$1.log"
	/usr/bin/python3 "$T/listen.py" "$T/$1.sock" "$T/$1.log" "$PORT" "$CTL" &
	LISTENER=$!
	for _ in $(seq 1 100); do [ -S "$T/$1.sock" ] && return 0; sleep 0.05; done
	fail "the notify listener did not start"
}

# start_notified NAME [ENV=VALUE...]: cowbd with NOTIFY_SOCKET=$T/NAME.sock
# and the variables given; exec keeps the pid, so WATCHDOG_PID=$$ is cowbd's.
start_notified() {
	local name=$1; shift
	env "$@" NOTIFY_SOCKET="$T/$name.sock" bash -c 'export WATCHDOG_PID=$$; exec "$@"' _ \
		"$BUILD/cowbd" --pool "$POOL" --create 1G --listen "127.0.0.1:$PORT" \
		--control "$CTL" >>"$LOG" 2>&1 &
	COWBD_PID=$!
}

got() { # NAME PATTERN [SECS]: wait for a line of $T/NAME.log matching PATTERN (ERE)
	for _ in $(seq 1 $((${3:-10} * 20))); do
		grep -qE -- "$2" "$T/$1.log" && return 0
		sleep 0.05
	done
	echo "--- $1.log:" >&2; cat "$T/$1.log" >&2
	fail "no notification matching '$2' in ${3:-10} s"
}
line_of() { grep -nE -- "$2" "$T/$1.log" | head -n 1 | cut -d: -f1; } # NAME PATTERN

# ---- daemon 1: readiness, status, reload, stop ------------------------
PORT=$(random_port)
start_listener d1
start_notified d1
got d1 '^[0-9.]+ READY=1$' 60
got d1 'PROBE'
probe=$(grep -m 1 PROBE "$T/d1.log")
[ "${probe#* }" = "PROBE port=open ctl=yes" ] ||
	fail "READY=1 came before the NBD port accepted or the control socket existed: $probe"
[ "$(line_of d1 'STATUS=opening pool')" -lt "$(line_of d1 'READY=1')" ] ||
	fail "no 'opening pool' status before READY=1: $(cat "$T/d1.log")"
got d1 'STATUS=serving 0 volumes and 0 snapshots to 0 clients'
echo "ok: READY=1 only once the port accepts and the control socket exists; statuses"

ok volume create vol0 64M
nbdsh -c "h.set_export_name('vol0')" -c "h.connect_tcp('127.0.0.1', '$PORT')" \
	-c "import time; time.sleep(15)" >/dev/null 2>&1 &
CLIENT=$!
got d1 'STATUS=serving 1 volume and 0 snapshots to 1 client$' 15
kill "$CLIENT" 2>/dev/null; wait "$CLIENT" 2>/dev/null
echo "ok: the status follows the volumes and clients"

kill -HUP "$COWBD_PID"
got d1 'RELOADING=1'
r=$(line_of d1 'RELOADING=1')
got d1 'READY=1' # the first one
for _ in $(seq 1 100); do
	[ "$(grep -c '^[0-9.]* READY=1$' "$T/d1.log")" -ge 2 ] && break
	sleep 0.05
done
ready2=$(grep -nE '^[0-9.]+ READY=1$' "$T/d1.log" | sed -n 2p | cut -d: -f1)
[ -n "$ready2" ] && [ "$ready2" -gt "$r" ] || fail "no READY=1 after RELOADING=1: $(cat "$T/d1.log")"
kill -0 "$COWBD_PID" || fail "SIGHUP killed cowbd"
echo "ok: SIGHUP is RELOADING=1 then READY=1"

if grep -q WATCHDOG "$T/d1.log"; then fail "WATCHDOG=1 sent without WATCHDOG_USEC"; fi
cowbd_stop
got d1 'STOPPING=1'
stop_listener
echo "ok: SIGTERM sends STOPPING=1 and exits 0; no watchdog unless asked"

# ---- daemon 2: the watchdog and a stalled log thread -------------------
start_listener d2
start_notified d2 WATCHDOG_USEC=2000000 COWBD_TEST_STALL_LOG=3:4
got d2 'READY=1' 60
sleep 10 # 3 s of watchdog, the 4 s stall, 3 s after it
cowbd_stop
stop_listener
/usr/bin/python3 - "$T/d2.log" <<'PY' || fail "watchdog timing (see above)"
import sys
lines = [l.split(" ", 1) for l in open(sys.argv[1]).read().splitlines()]
ready = min(float(t) for t, f in lines if f == "READY=1")
ts = [float(t) for t, f in lines if f == "WATCHDOG=1"]
gaps = [(b - a, a) for a, b in zip(ts, ts[1:])]
print("WATCHDOG=1 at", " ".join("%.1f" % (t - ready) for t in ts))
big = [(g, a) for g, a in gaps if g > 1.7]
# exactly one long silence: the 4 s stall (at least 3 s of it unfed)
assert len(big) == 1, "want one gap over 1.7 s (the stall), got %s" % big
g, a = big[0]
assert g >= 3.0, "the stall left a gap of only %.1f s" % g
before = [t for t in ts if t <= a]
after = [t for t in ts if t > a + g]
assert len(before) >= 2, "too few WATCHDOG=1 before the stall: %d" % len(before)
assert len(after) >= 2, "WATCHDOG=1 did not come back after the stall: %d" % len(after)
PY
grep -q 'watchdog: the log thread made no progress' "$LOG" ||
	fail "no watchdog line naming the log thread in the log"
echo "ok: WATCHDOG=1 every period, silent while the log thread is held, back after"
