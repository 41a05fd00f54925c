#!/bin/bash
# daemon_signals.sh — signals never kill cowbd except SIGTERM/SIGINT, which
# stop it cleanly.  Under a write/read/verify load (libnbd, plaintext in
# tls = allow mode, set in the configuration file):
#  - SIGHUP reloads the PSK file: a user added to it is served after the
#    SIGHUP and not before; a broken file is refused with one line and the
#    credentials in use stay ("reload failed, keeping the old ...");
#  - SIGHUP reads the configuration file again: log-level and a limit
#    change live (debug lines appear), an access rule applies to the next
#    client, keys that need a restart get one line each; a file with a bad
#    line (or no file) keeps the running configuration, naming FILE:LINE;
#  - SIGUSR1, SIGUSR2 and SIGPIPE are ignored (USR1/USR2 with a log line);
#  - the daemon stays alive and the load sees no error;
# then SIGTERM exits 0, the control socket is removed and the pool checks
# clean.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tls_lib.bash"
requires nbdinfo python3
python3 -c 'import nbd' 2>/dev/null || { echo "requires python3-libnbd"; exit 77; }

tls_make_psk
cp "$PSK/keys.psk" "$T/live.psk"
cat >"$T/live.conf" <<EOF
[cowbd]
tls = allow
tls-psk = $T/live.psk
EOF
cowbd_start --config "$T/live.conf"
ok volume create vol0 64M
pu() { echo "nbds://$1@127.0.0.1:$PORT/vol0?tls-psk-file=$2"; }
alive() { kill -0 "$COWBD_PID" 2>/dev/null || fail "$1: cowbd died"; }
logged() { # WHAT PATTERN: the log has a line matching PATTERN (fixed string)
	for _ in $(seq 1 100); do
		grep -qF -- "$2" "$LOG" && return 0
		sleep 0.05
	done
	fail "$1: no log line '$2'"
}

# The load: write a block, read it back, compare, flush now and then, until
# $T/stop appears.  Any error or mismatch ends it with a non-zero status.
python3 - "$(uri vol0)" "$T/stop" >"$T/load.out" 2>&1 <<'PY' &
import os, random, sys, nbd
uri, stop = sys.argv[1:3]
h = nbd.NBD()
h.connect_uri(uri)
rnd = random.Random(1)
n = 0
while not os.path.exists(stop):
    off = rnd.randrange(0, (64 << 20) // 4096) * 4096
    data = os.urandom(4096)
    h.pwrite(data, off)
    if h.pread(4096, off) != data:
        sys.exit("mismatch at %d" % off)
    if n % 64 == 0:
        h.flush()
    n += 1
h.shutdown()
print("load: %d write/read pairs, no error" % n)
PY
LOAD=$!
sleep 0.5
kill -0 "$LOAD" 2>/dev/null || fail "the load ended at once: $(cat "$T/load.out")"

# A user the running daemon does not know yet.
psktool -u carol -p "$T/carol.psk" >/dev/null 2>&1 || fail "psktool"
if nbdinfo --size "$(pu carol "$T/carol.psk")" >/dev/null 2>&1; then fail "carol served before she was added"; fi

for i in 1 2 3; do
	kill -USR1 "$COWBD_PID"; kill -USR2 "$COWBD_PID"; kill -PIPE "$COWBD_PID"
	sleep 0.1
	alive "SIGUSR1/SIGUSR2/SIGPIPE round $i"
done
logged "SIGUSR1" "signal SIGUSR1 ignored"
logged "SIGUSR2" "signal SIGUSR2 ignored"
echo "ok: SIGUSR1, SIGUSR2, SIGPIPE ignored under load"

cat "$T/carol.psk" >>"$T/live.psk"
kill -HUP "$COWBD_PID"
logged "SIGHUP" "SIGHUP: reloaded TLS credentials"
alive "SIGHUP"
[ "$(nbdinfo --size "$(pu carol "$T/carol.psk")")" = 67108864 ] || fail "carol not served after SIGHUP"
[ "$(nbdinfo --size "$(pu alice "$PSK/keys.psk")")" = 67108864 ] || fail "alice not served after SIGHUP"
echo "ok: SIGHUP reloaded the PSK file (a new user is served)"

printf 'alice:zz\n' >"$T/live.psk"
kill -HUP "$COWBD_PID"
logged "SIGHUP with a broken file" "SIGHUP: reload failed, keeping the old TLS credentials: "
alive "SIGHUP with a broken file"
[ "$(nbdinfo --size "$(pu carol "$T/carol.psk")")" = 67108864 ] ||
	fail "the credentials in use were dropped by a failed reload"
for i in 1 2 3; do kill -HUP "$COWBD_PID"; sleep 0.1; alive "SIGHUP round $i"; done
echo "ok: a failed reload keeps the credentials in use"

# ---- the configuration file --------------------------------------------------
cp "$PSK/keys.psk" "$T/live.psk"
cat >>"$T/live.conf" <<EOF
log-level = debug
max-connections = 50
checkpoint-interval = 64M
unix = $T/nbd.sock
[export vol1]
allow = 127.0.0.2/32
EOF
ok volume create vol1 64M
nbdinfo --size "$(uri vol1)" >/dev/null || fail "vol1 not served before the reload"
kill -HUP "$COWBD_PID"
logged "SIGHUP of the file" "SIGHUP: access rules for 1 export(s) from $T/live.conf"
alive "SIGHUP of the file"
for l in "SIGHUP: log-level debug" "SIGHUP: limits: max-connections 50," \
	"SIGHUP: checkpoint-interval changed; it takes effect when cowbd is restarted" \
	"SIGHUP: unix changed; it takes effect when cowbd is restarted"; do
	grep -qF "$l" "$LOG" || fail "no log line '$l'"
done
grep -q "SIGHUP: \(pool\|listen\|control\|create\).*restart" "$LOG" &&
	fail "a key that did not change was said to need a restart"
if nbdinfo --size "$(uri vol1)" >/dev/null 2>&1; then fail "vol1 served after allow = 127.0.0.2/32"; fi
logged "the access rule" "export vol1 refused: access denied (address not allowed)"
[ "$(nbdinfo --size "$(uri vol0)")" = 67108864 ] || fail "vol0 not served after the reload"
logged "log-level debug" "cowbd: debug: "
[ ! -e "$T/nbd.sock" ] || fail "a unix listener appeared without a restart"
echo "ok: SIGHUP applied log-level, limits and access rules live, named unix and checkpoint-interval"

lines=$(wc -l <"$LOG")
printf '[cowbd]\ntls = allow\ntls-psk = %s\nlog-level = error\nbogus = 1\n' "$T/live.psk" >"$T/live.conf"
kill -HUP "$COWBD_PID"
logged "SIGHUP of a bad file" \
	"cowbd: error: SIGHUP: $T/live.conf:5: unknown key 'bogus' in [cowbd]; keeping the running configuration"
alive "SIGHUP of a bad file"
if nbdinfo --size "$(uri vol1)" >/dev/null 2>&1; then fail "a bad file dropped the access rules"; fi
[ "$(nbdinfo --size "$(uri vol0)")" = 67108864 ] || fail "vol0 not served after a bad file"
tail -n +"$lines" "$LOG" | grep -q "cowbd: debug: " || fail "a bad file changed the log level"
tail -n +"$lines" "$LOG" | grep -q "SIGHUP: log-level\|SIGHUP: access rules" &&
	fail "a bad file was partly applied"
rm "$T/live.conf"
kill -HUP "$COWBD_PID"
logged "SIGHUP of a missing file" "SIGHUP: cannot read $T/live.conf: No such file or directory; keeping"
alive "SIGHUP of a missing file"
echo "ok: a bad or missing file at SIGHUP keeps the running configuration, naming FILE:LINE"

touch "$T/stop"
wait "$LOAD" || fail "the load saw an error: $(cat "$T/load.out")"
echo "ok: $(cat "$T/load.out")"

kill -TERM "$COWBD_PID"
wait "$COWBD_PID"; rc=$?
COWBD_PID=""
[ $rc = 0 ] || fail "cowbd exited $rc after SIGTERM"
[ ! -e "$CTL" ] || fail "control socket left after SIGTERM"
grep -q "stopped" "$LOG" || fail "no 'stopped' line"
check_pool "after the signals"
echo "daemon_signals: all checks passed"
