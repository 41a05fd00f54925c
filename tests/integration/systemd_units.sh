#!/bin/bash
# systemd_units.sh — the units `make install` puts in place, checked without
# systemd as PID 1:
#  - `systemd-analyze verify` of cowbd.service, cowbd.socket,
#    cowbd-control.socket and an instance of cowbd@.service is silent (installed with SBINDIR pointing at a
#    cowbd that exists, as verify needs; the default path is checked too);
#  - `systemd-analyze security --offline` puts cowbd.service and
#    cowbd@.service at exposure 2.0 ("OK") or below;
#  - systemd-sysusers makes the cowbd user, in group disk, and
#    systemd-tmpfiles its directories, in a scratch root;
#  - the hardening does not break the daemon: every system call cowbd makes
#    (strace) while socket-activated, notifying, feeding the watchdog,
#    serving NBD and control requests, reloading and stopping is allowed by
#    the unit's SystemCallFilter= lines, and every socket it makes is of a
#    family RestrictAddressFamilies= lists.
. "$(dirname "$0")/lib.sh"
requires systemd-analyze systemd-sysusers systemd-tmpfiles systemd-socket-activate strace \
	nbdsh nbdinfo /usr/bin/python3 make

# ---- verify -------------------------------------------------------------
R="$T/root"
make -s -C "$TOP" install-systemd PREFIX="$R/usr" SBINDIR="$R/usr/sbin" >"$T/make.out" 2>&1 ||
	fail "make install-systemd: $(cat "$T/make.out")"
install -D -m 0755 "$BUILD/cowbd" "$R/usr/sbin/cowbd"
UNITS="$R/usr/lib/systemd/system"
grep -q "^ExecStart=$R/usr/sbin/cowbd " "$UNITS/cowbd.service" ||
	fail "install did not point ExecStart at SBINDIR"
# Any line is a complaint (an unknown key, a missing binary): silence is clean.
SYSTEMD_UNIT_PATH="$UNITS:" systemd-analyze verify "$UNITS/cowbd.service" \
	"$UNITS/cowbd.socket" "$UNITS/cowbd-control.socket" cowbd@pool1.service >"$T/verify.out" 2>&1
rc=$?
[ $rc = 0 ] && [ ! -s "$T/verify.out" ] ||
	fail "systemd-analyze verify (exit $rc): $(cat "$T/verify.out")"
echo "ok: systemd-analyze verify is clean"

# ---- the default install (PREFIX=/usr) -----------------------------------
D="$T/dest"
make -s -C "$TOP" install-systemd DESTDIR="$D" PREFIX=/usr >"$T/make.out" 2>&1 ||
	fail "make install-systemd DESTDIR: $(cat "$T/make.out")"
for f in usr/lib/systemd/system/cowbd.service usr/lib/systemd/system/cowbd@.service \
	usr/lib/systemd/system/cowbd.socket \
	usr/lib/systemd/system/cowbd-control.socket usr/lib/sysusers.d/cowbd.conf \
	usr/lib/tmpfiles.d/cowbd.conf; do
	[ -f "$D/$f" ] || fail "make install-systemd PREFIX=/usr: $f missing"
done
grep -q '^ExecStart=/usr/sbin/cowbd --config /etc/cowbd/cowbd.conf$' \
	"$D/usr/lib/systemd/system/cowbd.service" || fail "ExecStart does not name /usr/sbin/cowbd"
grep -q '^ExecStart=/usr/sbin/cowbd --config /etc/cowbd/%i.conf$' \
	"$D/usr/lib/systemd/system/cowbd@.service" || fail "cowbd@.service: ExecStart is not per instance"

ln -s cowbd@.service "$D/usr/lib/systemd/system/cowbd@pool1.service" # an instance to rate
for unit in cowbd.service cowbd@pool1.service; do
	systemd-analyze security --offline=yes "$D/usr/lib/systemd/system/$unit" \
		>"$T/security.out" 2>&1 || fail "systemd-analyze security: $(tail -n 5 "$T/security.out")"
	score=$(sed -n "s/.*Overall exposure level for $unit: \([0-9.]*\) .*/\1/p" "$T/security.out")
	[ -n "$score" ] || fail "no exposure score for $unit: $(tail -n 5 "$T/security.out")"
	awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' ||
		fail "$unit: exposure $score is over 2.0: $(grep '✗' "$T/security.out")"
	echo "ok: systemd-analyze security: $unit exposure $score (at most 2.0)"
done
rm "$D/usr/lib/systemd/system/cowbd@pool1.service"

mkdir -p "$D/etc"
grep '^disk:' /etc/group >"$D/etc/group" # the host's group disk, as on a real system
systemd-sysusers --root="$D" >"$T/sysusers.out" 2>&1 || fail "systemd-sysusers: $(cat "$T/sysusers.out")"
grep -q '^cowbd:x:[0-9]*:[0-9]*:.*:/var/lib/cowbd:' "$D/etc/passwd" || fail "no user cowbd"
grep -qE '^disk:x:[0-9]+:(.*,)?cowbd(,.*)?$' "$D/etc/group" || fail "cowbd is not in group disk"
systemd-tmpfiles --root="$D" --create >"$T/tmpfiles.out" 2>&1 ||
	fail "systemd-tmpfiles: $(cat "$T/tmpfiles.out")"
uid=$(awk -F: '$1 == "cowbd" { print $3 }' "$D/etc/passwd")
for d in var/lib/cowbd run/cowbd; do
	[ "$(stat -c '%u %a' "$D/$d")" = "$uid 750" ] || fail "/$d: $(stat -c '%u %a' "$D/$d")"
done
echo "ok: sysusers makes cowbd (in group disk), tmpfiles its directories"

# ---- the syscall filter and address families against a real run --------
/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])
while True: s.recv(4096)' "$T/notify.sock" &
SINK=$!
trap 'kill $SINK 2>/dev/null; cleanup' EXIT
PORT=$(random_port)
# (LeakSanitizer cannot run under ptrace: a sanitizer build skips the leak check.)
CTL="$T/passed-control.sock" # passed too: cowctl below talks to it
strace -f -qq -o "$T/trace" systemd-socket-activate -l "127.0.0.1:$PORT" -l "$CTL" \
	--fdname=nbd:control \
	-E NOTIFY_SOCKET="$T/notify.sock" -E WATCHDOG_USEC=1000000 \
	-E ASAN_OPTIONS=detect_leaks=0 \
	"$BUILD/cowbd" --pool "$POOL" --create 1G >>"$LOG" 2>&1 &
COWBD_PID=$!
for _ in $(seq 1 100); do grep -q "Listening on" "$LOG" && break; sleep 0.05; done
nbdinfo --list "nbd://127.0.0.1:$PORT/" >/dev/null || fail "the socket-activated cowbd did not serve"
ok volume create vol0 64M
nbdsh -u "nbd://127.0.0.1:$PORT/vol0" -c "
import os
for i in range(64): h.pwrite(os.urandom(1 << 20), i << 20)
h.flush(); h.trim(1 << 20, 0); h.zero(1 << 20, 2 << 20); h.pread(1 << 20, 0)" ||
	fail "nbdsh workload"
ok snapshot create vol0@s
ok clone vol0@s vol1
ok volume delete vol1
ok stats
sleep 1.5 # watchdog rounds
CPID=$(pgrep -P "$COWBD_PID" | head -n 1) # strace's child: cowbd
[ -n "$CPID" ] || fail "no cowbd under strace"
kill -HUP "$CPID"
sleep 0.3
kill -TERM "$CPID"
wait "$COWBD_PID" || fail "cowbd under strace exited $?"
COWBD_PID=""
cat >"$T/filters.py" <<'PY'
import functools, re, subprocess, sys
trace, unit = open(sys.argv[1]).read().splitlines(), open(sys.argv[2]).read().splitlines()

@functools.lru_cache(None)
def expand(name):
    if not name.startswith("@"):
        return frozenset([name])
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True,
                         text=True, check=True).stdout.splitlines()[1:]
    return frozenset().union(*(expand(w.strip()) for w in out if w.strip() and not w.strip().startswith("#")))

allow, deny = set(), set()
for line in unit:
    if line.startswith("SystemCallFilter="):
        v = line.split("=", 1)[1]
        (deny if v.startswith("~") else allow).update(*(expand(w) for w in v.lstrip("~").split()))
    if line.startswith("RestrictAddressFamilies="):
        families = set(line.split("=", 1)[1].split())
# Only what cowbd does: from the exec of cowbd on (systemd-socket-activate
# before it is the same process).
start = next(i for i, l in enumerate(trace) if re.search(r'execve\("[^"]*/cowbd".* = 0$', l))
used, fams = set(), set()
for l in trace[start + 1:]:
    m = re.match(r"\d+ +(?:<\.\.\. )?([a-z0-9_]+)[( ]", l)
    if m:
        used.add(m.group(1))
    m = re.search(r"\bsocket\((AF_[A-Z0-9]+)", l)
    if m:
        fams.add(m.group(1))
bad = sorted(used - (allow - deny))
print("%d system calls used, %d allowed by the unit; families %s" % (len(used), len(allow - deny), sorted(fams)))
assert not bad, "used but not allowed by SystemCallFilter=: %s" % bad
assert fams <= families, "socket families not in RestrictAddressFamilies=: %s" % sorted(fams - families)
PY
/usr/bin/python3 "$T/filters.py" "$T/trace" "$D/usr/lib/systemd/system/cowbd.service" ||
	fail "the unit's filters refuse what cowbd does"
echo "ok: every system call and socket family cowbd used is allowed by the unit"

# ---- the same for a pool in RADOS (librados' threads and sockets) --------
if [ -z "${COWBD_TEST_CEPH_CONF:-}" ]; then
	echo "SKIP: the filters with a RADOS pool: no test cluster (COWBD_TEST_CEPH_CONF)"
	exit 0
fi
RPOOL="sdu-$$-$(date +%s)"
rados_clean() {
	rados -c "$COWBD_TEST_CEPH_CONF" --id cowbd -p cowbd ls 2>/dev/null | grep "^$RPOOL\." |
		xargs -r rados -c "$COWBD_TEST_CEPH_CONF" --id cowbd -p cowbd rm 2>/dev/null
}
trap 'kill $SINK 2>/dev/null; rados_clean; cleanup' EXIT
PORT=$(random_port)
CTL="$T/rados-control.sock"
: >"$LOG"
strace -f -qq -o "$T/trace-rados" env NOTIFY_SOCKET="$T/notify.sock" WATCHDOG_USEC=1000000 \
	ASAN_OPTIONS=detect_leaks=0 "$BUILD/cowbd" --pool "rados:cowbd/$RPOOL" \
	--rados-conf "$COWBD_TEST_CEPH_CONF" --rados-id cowbd --cache "$T/rados.cache" \
	--cache-size 64M --create 1G --listen "127.0.0.1:$PORT" --control "$CTL" >>"$LOG" 2>&1 &
COWBD_PID=$!
for _ in $(seq 1 300); do grep -q "listening on" "$LOG" && break; sleep 0.1; done
grep -q "listening on" "$LOG" || fail "cowbd on a RADOS pool did not start: $(tail -n 5 "$LOG")"
ok volume create vol0 64M
nbdsh -u "nbd://127.0.0.1:$PORT/vol0" -c "
import os
for i in range(32): h.pwrite(os.urandom(1 << 20), i << 20)
h.flush(); h.trim(1 << 20, 0); h.pread(1 << 20, 0)" || fail "nbdsh workload on the RADOS pool"
ok snapshot create vol0@s
sleep 1.5
CPID=$(pgrep -P "$COWBD_PID" | head -n 1)
[ -n "$CPID" ] || fail "no cowbd under strace (RADOS pool)"
kill -HUP "$CPID"
sleep 0.3
kill -TERM "$CPID"
wait "$COWBD_PID" || fail "cowbd on a RADOS pool under strace exited $?"
COWBD_PID=""
/usr/bin/python3 "$T/filters.py" "$T/trace-rados" "$D/usr/lib/systemd/system/cowbd@.service" ||
	fail "the unit's filters refuse what cowbd does with a RADOS pool"
echo "ok: with a RADOS pool too (librados included)"
