#!/bin/bash
# upgrade_fail.sh — `cowctl upgrade` when the new process does not take
# over, with a client writing (FUA) and reading back all along: a missing
# binary, one that is not executable, one that crashes at start, one that
# exits, one speaking another handover version, one that cannot open this
# pool's format (refused up front), one that refuses the pool after the old
# one closed it (rolled back).  Each time cowctl exits 1 with the reason,
# the same pid serves on, the client sees no error and never reconnects;
# then a good upgrade still works.  Then kill -9 of the old process during
# the handover: after it sent everything (the new one serves on, the
# client notices nothing) and before (the new one gives up; a restart
# recovers every acknowledged write).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/upgrade_lib.bash"
requires /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] && [ -x "$BUILD/cowbd-check" ] ||
	fail "build/cowbd, cowctl or cowbd-check missing"

cat >"$T/steady.py" <<'PY'
# steady.py PORT STATEDIR: FUA-write random 4 KiB blocks of vol0 and read a
# written one back, until STATEDIR/stop exists; the acknowledged writes go
# to STATEDIR/steady.json (offset -> byte).  Exit 0 with no error, 2 when a
# request failed (the connection went away).  steady.py PORT STATEDIR
# verify: every acknowledged write reads back.
import json, os, random, sys, time, nbd
port, sd = sys.argv[1], sys.argv[2]
BS, path = 4096, os.path.join(sd, "steady.json")
h = nbd.NBD()
h.set_export_name("vol0")
h.connect_tcp("127.0.0.1", port)
known = json.load(open(path)) if os.path.exists(path) else {}
if sys.argv[3:] == ["verify"]:
    bad = [o for o, b in known.items() if h.pread(BS, int(o)) != bytes([b]) * BS]
    if bad:
        sys.exit("%d acknowledged writes lost, first at %s" % (len(bad), bad[0]))
    print("verified %d acknowledged writes" % len(known))
    sys.exit(0)
rnd, n, code = random.Random(), 0, 0
try:
    while not os.path.exists(os.path.join(sd, "stop")):
        off, b = rnd.randrange(4096) * BS, rnd.randrange(256)
        h.pwrite(bytes([b]) * BS, off, nbd.CMD_FLAG_FUA)
        known[str(off)] = b
        o = rnd.choice(list(known))
        if h.pread(BS, int(o)) != bytes([known[o]]) * BS:
            sys.exit("read back wrong data at %s" % o)
        n += 1
        time.sleep(0.001)
except nbd.Error as e:
    print("request failed after %d rounds: %s" % (n, e))
    code = 2
json.dump(known, open(path, "w"))
print("steady: %d rounds" % n)
sys.exit(code)
PY

steady_start() {
	rm -f "$T/stop"
	/usr/bin/python3 "$T/steady.py" "$PORT" "$T" >"$T/steady.out" 2>&1 &
	STEADY=$!
	sleep 1
	kill -0 $STEADY 2>/dev/null || fail "the writer did not start: $(cat "$T/steady.out")"
}
steady_stop() { # expected exit status
	touch "$T/stop"
	wait $STEADY; rc=$?
	[ $rc -eq "$1" ] || fail "writer exited $rc, want $1: $(cat "$T/steady.out")"
	cat "$T/steady.out"
}

# refused WHY-PATTERN ARGS...: cowctl upgrade ARGS must exit 1 saying so, and
# the same daemon serve on.
refused() {
	local want=$1 pid=$COWBD_PID rc why; shift
	cowctl upgrade "$@" >"$T/out" 2>"$T/err"; rc=$?
	[ $rc -eq 1 ] || fail "upgrade $*: exit $rc, want 1 ($(cat "$T/err"))"
	why=$(cat "$T/err")
	grep -q -- "$want" "$T/err" || fail "upgrade $*: '$why' does not say '$want'"
	kill -0 "$pid" 2>/dev/null || fail "upgrade $*: the old daemon died"
	[ "$(pgrep -P "$REAPER_PID")" = "$pid" ] || fail "upgrade $*: another process serves"
	ok clients
	[ "$(grep -c vol0 "$T/out")" -eq 1 ] || fail "upgrade $*: the client is not served any more"
	echo "ok: refused: $why"
}

wrapper() { # NAME FAULT: a new binary that is cowbd with a test fault
	printf '#!/bin/sh\nCOWBD_TEST_HANDOVER=%s exec %s "$@"\n' "$2" "$BUILD/cowbd" >"$T/$1"
	chmod +x "$T/$1"
}

up_start --loop-threads 2 # rolling back restores connections onto both loops
ok volume create vol0 16M
steady_start
BASE=$(accepted)

refused "No such file or directory" --binary "$T/missing"
printf '#!/bin/sh\nexit 0\n' >"$T/plain"
refused "Permission denied" --binary "$T/plain"
printf '#!/bin/sh\nkill -SEGV $$\n' >"$T/crash" && chmod +x "$T/crash"
refused "killed by signal 11" --binary "$T/crash"
printf '#!/bin/sh\nexit 3\n' >"$T/exit3" && chmod +x "$T/exit3"
refused "exited with status 3" --binary "$T/exit3"
wrapper v99 offer-version:99
refused "handover version 99" --binary "$T/v99"
wrapper f0 offer-format:0
refused "opens pools up to format 0" --binary "$T/f0"
wrapper refuse refuse-pool
refused "refused: cannot open pool" --binary "$T/refuse"
grep -q "upgrade failed, serving on" "$LOG" || fail "no rollback in the log"

old=$COWBD_PID
up_upgrade
[ "$COWBD_PID" != "$old" ] || fail "a good upgrade after the failures did not happen"
echo "ok: then a good upgrade: pid $old -> $COWBD_PID"
steady_stop 0
[ "$(accepted)" -eq "$BASE" ] || fail "the client reconnected: $(accepted) connections, want $BASE"
/usr/bin/python3 "$T/steady.py" "$PORT" "$T" verify || fail "after the failed upgrades"
up_stop

# kill -9 of the old process once it sent everything: the new one serves on.
COWBD_TEST_HANDOVER=sent up_start
steady_start
BASE=$(accepted)
old=$COWBD_PID
cowctl upgrade >"$T/out" 2>"$T/err" && fail "upgrade reported success though the old one died"
for _ in $(seq 1 100); do
	COWBD_PID=$(pgrep -P "$REAPER_PID")
	[ -n "$COWBD_PID" ] && [ "$COWBD_PID" != "$old" ] && ! kill -0 "$old" 2>/dev/null && break
	sleep 0.1
done
[ -n "$COWBD_PID" ] && [ "$COWBD_PID" != "$old" ] || fail "no new process after kill -9 at 'sent'"
sleep 1
steady_stop 0
[ "$(accepted)" -eq "$BASE" ] || fail "the client reconnected after kill -9 at 'sent'"
echo "ok: kill -9 after sending: pid $COWBD_PID serves on, the client noticed nothing"
/usr/bin/python3 "$T/steady.py" "$PORT" "$T" verify || fail "after kill -9 at 'sent'"
up_stop

# kill -9 of the old process before it sent anything: the new one gives up,
# the connection dies with the old one, a restart recovers.
COWBD_TEST_HANDOVER=paused up_start
steady_start
cowctl upgrade >"$T/out" 2>"$T/err" && fail "upgrade reported success though the old one died"
wait "$REAPER_PID"
COWBD_PID=""
grep -q "cannot take over: handover: the old process went away" "$LOG" ||
	fail "the new process did not say why it gave up"
steady_stop 2
cowbd_restart
/usr/bin/python3 "$T/steady.py" "$PORT" "$T" verify || fail "after kill -9 at 'paused' and a restart"
cowbd_stop
check_pool "after the failed upgrades and two kill -9"
echo "PASS: failed upgrades roll back; kill -9 during a handover loses nothing acknowledged"
