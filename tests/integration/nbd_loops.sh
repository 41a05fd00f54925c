#!/bin/bash
# nbd_loops.sh — --loop-threads: connections spread over the event loops
# and each loop thread serves its own.  With --loop-threads 3, six clients
# connect one after the other and `cowctl clients` must place two on each
# of loops 0, 1 and 2 (the fewest first); the two cowbd-loop threads must
# both have run (CPU time in /proc) while every client wrote its region
# and read back another's (one view across loops, a FLUSH on one covering
# the others).  Then an upgrade carries all six on (they keep working), a
# SIGHUP changes the limits while they are busy, and a SIGTERM with
# requests in flight on every loop ends cleanly; after a restart every
# acknowledged write reads back.  A bad --loop-threads is refused.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/upgrade_lib.bash"
requires /usr/bin/python3 nbdsh
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] || fail "build/cowbd or cowctl missing"

for bad in 0 65 x -1; do
	if "$BUILD/cowbd" --pool "$T/none" --loop-threads "$bad" --control "$T/c" >"$T/bad" 2>&1; then
		fail "--loop-threads $bad accepted"
	fi
	grep -q "loop-threads" "$T/bad" || fail "--loop-threads $bad: no reason given: $(cat "$T/bad")"
done

up_start --loop-threads 3
cowctl volume create vol0 256M >/dev/null || fail "volume create"
[ "$(grep -lx 'cowbd-loop[0-9]*' /proc/"$COWBD_PID"/task/*/comm | wc -l)" -eq 2 ] ||
	fail "want 2 cowbd-loop threads: $(cat /proc/"$COWBD_PID"/task/*/comm | tr '\n' ' ')"

# utime+stime of the cowbd-loop threads, one line each: NAME TICKS
loop_cpu() {
	for t in /proc/"$COWBD_PID"/task/*; do
		read -r name <"$t/comm"
		case "$name" in cowbd-loop*) echo "$name $(awk '{print $14 + $15}' "$t/stat")" ;; esac
	done | sort
}

mkfifo "$T/go" "$T/phase"
/usr/bin/python3 - "$PORT" "$T" >"$T/py.out" 2>&1 <<'PY' &
import os, sys, nbd
port, t = sys.argv[1], sys.argv[2]
N, M, CH = 6, 1 << 20, 64 << 10
REG = 32 * M  # each client's region

def pat(i, off, gen):
    return bytes([(i * 37 + off // CH + gen) & 0xFF]) * CH

def say(msg):
    with open(os.path.join(t, "phase"), "w") as f:
        f.write(msg + "\n")

def wait():
    with open(os.path.join(t, "go")) as f:
        return f.read().strip()

hs = []
for i in range(N):
    h = nbd.NBD()
    h.set_export_name("vol0")
    h.connect_tcp("127.0.0.1", port)
    hs.append(h)

def write_all(gen):
    # interleaved, 8 in flight per client, so every loop is busy at once
    for k in range(0, REG, 8 * CH):
        cookies = []
        for i, h in enumerate(hs):
            for j in range(8):
                off = k + j * CH
                cookies.append((h, h.aio_pwrite(pat(i, off, gen), i * REG + off)))
        for h, c in cookies:
            while not h.aio_command_completed(c):
                h.poll(-1)

def check_all(gen):
    for i, h in enumerate(hs):
        other = (i + 1) % N  # another client's region, likely another loop
        for off in range(0, REG, CH):
            got = h.pread(CH, other * REG + off)
            if got != pat(other, off, gen):
                sys.exit("client %d read client %d's block %d wrong (gen %d)" % (i, other, off // CH, gen))

say("connected")
wait()
write_all(1)
hs[3].flush()  # covers every client's acknowledged writes
check_all(1)
say("written")
wait()  # the upgrade happened
write_all(2)
hs[0].flush()
check_all(2)
say("after-upgrade")
wait()  # the test sends SIGHUP then SIGTERM while these are in flight
try:
    while True:
        write_all(2)
except nbd.Error as e:
    print("ended:", e)
PY
PY_PID=$!
# A failed check must not leave the client blocked on a fifo for ever.
trap 'kill "$PY_PID" 2>/dev/null; cleanup' EXIT
read -r p <"$T/phase"
[ "$p" = connected ] || fail "client: $(cat "$T/py.out")"

cowctl --json clients >"$T/clients.json" || fail "cowctl clients"
/usr/bin/python3 - "$T/clients.json" <<'PY' || fail "clients not spread over the loops: $(cat "$T/clients.json")"
import collections, json, sys
cl = json.load(open(sys.argv[1]))["clients"]
per = collections.Counter(c["loop"] for c in cl)
assert len(cl) == 6 and per == {0: 2, 1: 2, 2: 2}, per
PY
cowctl clients >"$T/clients.txt" || fail "cowctl clients"
[ "$(head -n 1 "$T/clients.txt" | awk '{print $NF}')" = LOOP ] &&
	[ "$(awk 'NR > 1 {print $NF}' "$T/clients.txt" | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')" = "0:2 1:2 2:2 " ] ||
	fail "cowctl clients (text) does not say the loops: $(cat "$T/clients.txt")"

loop_cpu >"$T/cpu0"
echo go >"$T/go"
read -r p <"$T/phase"
[ "$p" = written ] || fail "client: $(cat "$T/py.out")"
loop_cpu >"$T/cpu1"
join "$T/cpu0" "$T/cpu1" | awk '$3 <= $2 { bad = bad " " $1 } END { if (bad) { print bad; exit 1 } }' ||
	fail "a loop thread did not run: $(paste "$T/cpu0" "$T/cpu1")"

up_upgrade
[ "$(grep -lx 'cowbd-loop[0-9]*' /proc/"$COWBD_PID"/task/*/comm | wc -l)" -eq 2 ] ||
	fail "after the upgrade: want 2 cowbd-loop threads"
cowctl --json clients >"$T/clients.json" || fail "cowctl clients"
/usr/bin/python3 - "$T/clients.json" <<'PY' || fail "after the upgrade: $(cat "$T/clients.json")"
import collections, json, sys
cl = json.load(open(sys.argv[1]))["clients"]
per = collections.Counter(c["loop"] for c in cl)
assert len(cl) == 6 and per == {0: 2, 1: 2, 2: 2}, per
PY
echo go >"$T/go"
read -r p <"$T/phase"
[ "$p" = after-upgrade ] || fail "client after the upgrade: $(cat "$T/py.out")"

echo go >"$T/go"
sleep 0.3
kill -HUP "$COWBD_PID"
sleep 0.3
kill -0 "$COWBD_PID" || fail "cowbd died at SIGHUP"
up_stop # fails unless exit status 0
wait "$PY_PID"
grep -q "ended" "$T/py.out" || fail "client: $(cat "$T/py.out")"
grep -q "cut off" "$LOG" && fail "stop cut clients off: $(grep 'cut off' "$LOG")"

cowbd_restart
/usr/bin/python3 - "$PORT" <<'PY' || fail "data after the restart"
import sys, nbd
N, M, CH = 6, 1 << 20, 64 << 10
h = nbd.NBD()
h.set_export_name("vol0")
h.connect_tcp("127.0.0.1", sys.argv[1])
for i in range(N):
    for off in range(0, 32 * M, CH):
        want = bytes([(i * 37 + off // CH + 2) & 0xFF]) * CH
        if h.pread(CH, i * 32 * M + off) != want:
            sys.exit("client %d block %d lost" % (i, off // CH))
PY
cowbd_stop
echo "PASS: 6 clients on 3 loops (2 each, both loop threads ran), one view, carried through an upgrade, a SIGHUP and a clean stop"
