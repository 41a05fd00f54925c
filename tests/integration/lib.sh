# tests/integration/lib.sh — sourced by every integration test.
#
#   requires CMD...          skip (exit 77) unless every command exists
#   cowbd_start [ARGS...]    new pool in $T, cowbd on 127.0.0.1:$PORT, control $CTL
#                            (env POOL_SIZE, default 1G); sets COWBD_PID
#   cowbd_restart [ARGS...]  start again on the same pool and port
#   cowbd_stop               SIGTERM, expect exit 0
#   cowbd_kill9              kill -9 and reap
#   cowctl ARGS...           build/cowctl --control $CTL ARGS...
#   uri NAME                 nbd://127.0.0.1:$PORT/NAME
#   runfio WHAT FIO-ARGS...  fio (in $T) must exit 0 and report no verify error
#   fail MSG                 print "FAIL: MSG"-free message and exit 1
#   ok ARGS...               cowctl ARGS, reply in $T/out; fail with its stderr
#   check_pool WHEN          cowbd-check on $POOL (daemon stopped) must pass
#   pool_version             the format version $POOL's newer superblock says
#   cowbd_fds                open file descriptors of the running cowbd
#   fds_settle WHAT          wait (10 s at most) until cowbd_fds is back to $BASE:
#                            a connection's teardown may trail its client
#   serves WHAT              cowbd is alive and a new client is told vol0's size,
#                            which must be $VOL0_SIZE (bytes)
#   random_port              a loopback port below the kernel's ephemeral range
#   seed_init                SEED (from the environment, else random), exported
#                            and printed, so a failing run can be replayed
#   not_failed WHEN          `cowctl stats` must not report the failed state
#   known_py                 write $T/known.py, the data oracle a test's python
#                            driver imports: known.json of flushed ranges, conn,
#                            data, verify, write_mib
#   cowbd_try WANT POOL ARGS...  one more cowbd on POOL (port 0, control
#                            $T/try.sock), stopped by SIGTERM once it serves;
#                            its exit status must be WANT; output in $T/out
#   small_fs DIR SIZE        mount a tmpfs of SIZE on DIR (created), unmounted
#                            on exit after cowbd is stopped; skip (exit 77)
#                            when mounting is impossible (not root, no tmpfs)
# For the RADOS tests (tests/integration/rados_*.sh, docs/TESTING.md):
#   ceph_cluster             the cluster tests/run.sh started (COWBD_TEST_CEPH_CONF),
#                            else a private 3-OSD one in $T/ceph (a test run by hand);
#                            skip (exit 77) without Ceph or when run.sh's cluster did not
#                            start, fail instead under CI=true. Sets CEPH_CONF, CEPH_ID,
#                            CEPH_POOL, RNAME (t-PID-TEST, this test's pool) and RPOOL
#                            (rados:CEPH_POOL/RNAME); RNAME's objects are removed on exit
#   rados_do ARGS...         the rados CLI as CEPH_ID on CEPH_POOL (bounded: 60 s)
#   rados_objects            RNAME's objects, one a line, sorted
#   host_start WHO ARGS...   cowbd on RPOOL as host WHO (a, b, ...): port HPORT[WHO],
#                            control $T/WHO.sock, cache $T/WHO.cache (CACHE_SIZE, 256M),
#                            log $T/WHO.log, pid HPID[WHO]; returns once its control
#                            socket is there (120 s: a takeover waits for a lease), 1
#                            with its exit status in HRC[WHO] if it exited first
#   host_stop WHO            SIGTERM, expect exit 0
#   host_kill9 WHO           kill -9 and reap
#   hctl WHO ARGS...         cowctl on host WHO's control socket
#   huri WHO NAME            nbd://127.0.0.1:HPORT[WHO]/NAME
#   lines WHO PATTERN        how many lines of $T/WHO.log contain PATTERN
#   ceph_osd kill|start N    cluster.sh osd-kill/osd-start on the test's cluster
#   rmodel WHO CMD ARGS...   the data oracle of the RADOS tests on host WHO's vol0
#                            ($T/rmodel.py, state in $T/model.json): `write A B TAG`
#                            writes [A,B) MiB (data named by TAG and offset) and flushes;
#                            `load A B STOPFILE` does so 1 MiB at a time round [A,B)
#                            until STOPFILE exists; `verify` reads back every MiB
#                            written and flushed, the last data each was given
# Everything started is stopped and $T removed on exit.
set -u
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
: "${TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${BUILD:=$TOP/build}"
T=$(mktemp -d "${TMPDIR:-/tmp}/cowbd-test.XXXXXX")
POOL="$T/pool.img"
CTL="$T/control.sock"
COWBD_PID=""
PORT=""
LOG="$T/cowbd.log"
MOUNTS=""

cleanup() {
	if [ -n "$COWBD_PID" ] && kill -0 "$COWBD_PID" 2>/dev/null; then
		kill -9 "$COWBD_PID" 2>/dev/null
		wait "$COWBD_PID" 2>/dev/null
	fi
	for m in $MOUNTS; do umount "$m" || umount -l "$m"; done
	if [ -n "${KEEP_TEST_DIR:-}" ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
	echo "error: $*" >&2
	[ -z "${SEED:-}" ] || echo "(workload seed $SEED: rerun with SEED=$SEED)" >&2
	if [ -f "$LOG" ]; then echo "--- cowbd log tail:" >&2; tail -n 20 "$LOG" >&2; fi
	local h
	for h in "$T"/*.log; do # host_start's hosts
		head -n 1 "$h" 2>/dev/null | grep -q '^--- host ' || continue
		echo "--- $(basename "$h" .log)'s log tail:" >&2
		tail -n 12 "$h" >&2
	done
	exit 1
}

requires() {
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || { echo "requires $c (not installed)"; exit 77; }
	done
}

uri() { echo "nbd://127.0.0.1:$PORT/$1"; }

# fio writes verify-state files into its working directory: keep them in $T.
fio() { (cd "$T" && exec fio "$@"); }

cowctl() { "$BUILD/cowctl" --control "$CTL" "$@"; }

# runfio WHAT FIO-ARGS...: fio must exit 0 and report no verify error.
runfio() { # WHAT FIO-ARGS...
	local what=$1; shift
	fio "$@" >"$T/fio.out" 2>&1 || { cat "$T/fio.out" >&2; fail "fio $what (exit $?)"; }
	grep -qi 'verify.*fail\|bad magic\|crc32c.*mismatch' "$T/fio.out" &&
		{ cat "$T/fio.out" >&2; fail "fio $what reported verify errors"; }
	echo "ok: fio $what"
}

_cowbd_launch() { # create-flag args...
	"$BUILD/cowbd" --pool "$POOL" "$@" --listen "127.0.0.1:$PORT" \
		--control "$CTL" --foreground >>"$LOG" 2>&1 &
	COWBD_PID=$!
	# Recovery of a big log under sanitizers on a loaded machine takes
	# seconds: the bound is there for a hang, not for speed.
	for _ in $(seq 1 1200); do
		kill -0 "$COWBD_PID" 2>/dev/null || { wait "$COWBD_PID"; return 1; }
		[ -S "$CTL" ] && return 0
		sleep 0.05
	done
	fail "cowbd did not come up within 60 s"
}

# Ports from the ephemeral range can be taken by any client's connect() while
# the daemon is down between cowbd_kill9 and cowbd_restart: stay below it.
random_port() {
	local lo
	lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null) || lo=32768
	[ "${lo:-0}" -gt 11024 ] || lo=32768
	echo $((10000 + $(od -An -N2 -tu2 /dev/urandom) % (lo - 10000)))
}

cowbd_start() {
	for _ in 1 2 3 4 5; do
		PORT=$(random_port)
		_cowbd_launch --create "${POOL_SIZE:-1G}" "$@" && return 0
		grep -q "in use" "$LOG" || fail "cowbd failed to start"
		rm -f "$POOL"
	done
	fail "no free port"
}

cowbd_restart() {
	rm -f "$CTL"
	_cowbd_launch "$@" || fail "cowbd failed to restart"
}

cowbd_stop() {
	kill -TERM "$COWBD_PID"
	wait "$COWBD_PID"; rc=$?
	COWBD_PID=""
	[ $rc -eq 0 ] || fail "cowbd exited $rc after SIGTERM"
}

cowbd_kill9() {
	kill -9 "$COWBD_PID"
	wait "$COWBD_PID" 2>/dev/null
	COWBD_PID=""
}

ok() { cowctl "$@" >"$T/out" 2>"$T/err" || fail "cowctl $* failed: $(cat "$T/err")"; }

check_pool() {
	"$BUILD/cowbd-check" "$POOL" >"$T/check.out" 2>&1 ||
		fail "cowbd-check $1 (exit $?): $(tail -n 5 "$T/check.out")"
	echo "ok: cowbd-check clean $1"
}

pool_version() {
	/usr/bin/python3 -c "
import struct, sys
f = open(sys.argv[1], 'rb')
best = (-1, 0)
for slot in (0, 1):
    f.seek(slot * 4096)
    b = f.read(4096)
    if b[:8] != b'COWBDSB1':
        continue
    ver, = struct.unpack_from('<I', b, 12)
    gen, = struct.unpack_from('<Q', b, 24)
    best = max(best, (gen, ver))
print(best[1])" "$POOL"
}

cowbd_fds() { ls "/proc/$COWBD_PID/fd" | wc -l; }

fds_settle() {
	for _ in $(seq 1 200); do
		[ "$(cowbd_fds)" -le "$BASE" ] && return 0
		sleep 0.05
	done
	fail "$1: fds $(cowbd_fds), baseline $BASE (leak?)"
}

serves() {
	kill -0 "$COWBD_PID" 2>/dev/null || fail "$1: cowbd died"
	[ "$(nbdinfo --size "$(uri vol0)")" = "$VOL0_SIZE" ] || fail "$1: cannot serve another client"
}

seed_init() {
	: "${SEED:=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
	export SEED
	echo "seed $SEED (rerun with SEED=$SEED)"
}

small_fs() {
	mkdir -p "$1"
	mount -t tmpfs -o "size=$2,mode=0700" tmpfs "$1" 2>"$T/mount.err" ||
		{ echo "cannot mount a tmpfs: $(cat "$T/mount.err")"; exit 77; }
	MOUNTS="$MOUNTS $1"
}

not_failed() {
	ok --json stats
	/usr/bin/python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))["stats"]
assert not s["failed"], s' "$T/out" || fail "store is in the failed state $1"
	echo "ok: not failed $1"
}

known_py() {
	cat >"$T/known.py" <<'PY'
# known.py — the data oracle of a test driver run as DRIVER PORT STATEDIR ...:
# STATEDIR/known.json is {vol: [[off, len, seed]]}, the ranges written and
# flushed, whose bytes are data(seed, len).
import json, os, random, sys, nbd
M = 1 << 20
port, sd = sys.argv[1], sys.argv[2]
kp = os.path.join(sd, "known.json")
known = json.load(open(kp)) if os.path.exists(kp) else {}

def save():
    json.dump(known, open(kp, "w"))

def conn(name):
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_tcp("127.0.0.1", port)
    return h

def data(seed, n):
    return random.Random(seed).randbytes(n)

def verify(h, vol):
    for off, n, seed in known.get(vol, []):
        if h.pread(n, off) != data(seed, n):
            sys.exit("%s: flushed data at %d (+%d) differs" % (vol, off, n))

def write_mib(h, vol, a, b):
    """Write [a, b) MiB of vol (seed = offset), flush, remember; all must succeed."""
    for off in range(a * M, b * M, M):
        h.pwrite(data(off, M), off)
    h.flush()
    known.setdefault(vol, []).extend([off, M, off] for off in range(a * M, b * M, M))
    save()
    print("%s: wrote [%d, %d) MiB" % (vol, a, b))
PY
}

cowbd_try() {
	local want=$1 pool=$2 rc pid; shift 2
	# port 0: any free port, so no other listener can make the start fail
	"$BUILD/cowbd" --pool "$pool" "$@" --listen 127.0.0.1:0 --control "$T/try.sock" \
		>"$T/out" 2>&1 &
	pid=$!
	# up to 60 s for creation: a slow machine must not see SIGTERM mid-create
	for _ in $(seq 1 1200); do
		kill -0 $pid 2>/dev/null || break
		[ -S "$T/try.sock" ] && break
		sleep 0.05
	done
	if kill -0 $pid 2>/dev/null; then kill -TERM $pid; fi
	wait $pid; rc=$?
	[ ! -e "$T/try.sock" ] || { rm -f "$T/try.sock"; fail "cowbd on $pool $*: control socket left"; }
	[ "$rc" = "$want" ] || { cat "$T/out"; fail "cowbd on $pool $*: exit $rc, wanted $want"; }
}

# --- RADOS tests ---------------------------------------------------------------------
CEPH_OWN=""  # a cluster this test started itself (run by hand): stopped on exit
RNAME=""
declare -A HPID=() HPORT=() HRC=()

# ceph_cleanup [STATUS]: the EXIT trap (STATUS: the exit status, when called from a
# test's own trap)
ceph_cleanup() {
	local rc=${1:-$?} who f
	for who in "${!HPID[@]}"; do
		[ -n "${HPID[$who]}" ] || continue
		kill -CONT "${HPID[$who]}" 2>/dev/null # one stopped by a test dies too
		kill -9 "${HPID[$who]}" 2>/dev/null
		wait "${HPID[$who]}" 2>/dev/null
	done
	if [ -n "$RNAME" ] && [ -n "${CEPH_CONF:-}" ]; then
		rados_objects | xargs -r timeout 60 rados -c "$CEPH_CONF" --id "$CEPH_ID" \
			-p "$CEPH_POOL" rm ||
			echo "warning: objects of $RNAME left in pool $CEPH_POOL" >&2
	fi
	if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
		for f in "$T"/?.log; do
			[ -f "$f" ] || continue
			echo "--- tail of host $(basename "$f" .log)'s log:" >&2
			tail -n 15 "$f" >&2
		done
	fi
	[ -z "$CEPH_OWN" ] || bash "$TOP/tests/ceph/cluster.sh" stop "$CEPH_OWN"
	cleanup
}

# ceph_unusable WHY: skip, or fail under CI (CI installs Ceph: `make deps`).
ceph_unusable() {
	[ "${CI:-}" != true ] || fail "RADOS test cannot run under CI: $1"
	echo "skip: $1"
	exit 77
}

ceph_cluster() {
	local c
	trap ceph_cleanup EXIT
	if [ -z "${COWBD_TEST_CEPH_CONF:-}" ]; then
		[ -z "${COWBD_TEST_CEPH_ERROR:-}" ] || ceph_unusable "$COWBD_TEST_CEPH_ERROR"
		for c in ceph-mon ceph-mgr ceph-osd ceph rados; do
			command -v "$c" >/dev/null || ceph_unusable "$c not installed (make deps)"
		done
		echo "no COWBD_TEST_CEPH_CONF: starting a cluster in $T/ceph"
		CEPH_OWN="$T/ceph"
		bash "$TOP/tests/ceph/cluster.sh" start "$CEPH_OWN" 3 || fail "cluster start"
		COWBD_TEST_CEPH_CONF="$CEPH_OWN/ceph.conf"
	fi
	CEPH_CONF=$COWBD_TEST_CEPH_CONF
	CEPH_ID=${COWBD_TEST_CEPH_ID:-cowbd}
	CEPH_POOL=${COWBD_TEST_CEPH_POOL:-cowbd}
	[ -r "$CEPH_CONF" ] || fail "COWBD_TEST_CEPH_CONF: no $CEPH_CONF"
	RNAME="t-$$-$(basename "$0" .sh)"
	RPOOL="rados:$CEPH_POOL/$RNAME"
	echo "pool $RPOOL, cluster $CEPH_CONF"
}

rados_do() { timeout 60 rados -c "$CEPH_CONF" --id "$CEPH_ID" -p "$CEPH_POOL" "$@"; }

rados_objects() { rados_do ls | grep -F "$RNAME." | grep "^$RNAME\." | sort; }

ceph_osd() { # kill|start N
	bash "$TOP/tests/ceph/cluster.sh" "osd-$1" "${CEPH_CONF%/ceph.conf}" "$2" ||
		fail "osd-$1 $2"
}

host_start() {
	local who=$1
	shift
	rm -f "$T/$who.sock"
	for _ in 1 2 3 4 5; do
		HPORT[$who]=$(random_port)
		echo "--- host $who: cowbd $*" >>"$T/$who.log"
		"$BUILD/cowbd" --pool "$RPOOL" --rados-conf "$CEPH_CONF" --rados-id "$CEPH_ID" \
			--cache "$T/$who.cache" --cache-size "${CACHE_SIZE:-256M}" "$@" \
			--listen "127.0.0.1:${HPORT[$who]}" --control "$T/$who.sock" --foreground \
			>>"$T/$who.log" 2>&1 &
		HPID[$who]=$!
		for _ in $(seq 1 2400); do
			[ -S "$T/$who.sock" ] && return 0
			kill -0 "${HPID[$who]}" 2>/dev/null || break
			sleep 0.05
		done
		kill -0 "${HPID[$who]}" 2>/dev/null && fail "host $who did not come up within 120 s"
		wait "${HPID[$who]}"
		HRC[$who]=$?
		HPID[$who]=""
		tail -n 3 "$T/$who.log" | grep -q "in use" || return 1
	done
	fail "host $who: no free port"
}

host_stop() {
	local rc
	kill -TERM "${HPID[$1]}"
	wait "${HPID[$1]}"
	rc=$?
	HPID[$1]=""
	[ $rc -eq 0 ] || fail "host $1: cowbd exited $rc after SIGTERM"
}

host_kill9() {
	kill -9 "${HPID[$1]}"
	wait "${HPID[$1]}" 2>/dev/null
	HPID[$1]=""
}

hctl() {
	local who=$1
	shift
	"$BUILD/cowctl" --control "$T/$who.sock" "$@"
}

huri() { echo "nbd://127.0.0.1:${HPORT[$1]}/$2"; }

lines() { grep -c -- "$2" "$T/$1.log"; }

rmodel() {
	local who=$1
	shift
	[ -f "$T/rmodel.py" ] || cat >"$T/rmodel.py" <<'PY'
# rmodel.py URI STATEDIR CMD ...: see rmodel in lib.sh.  The model, written after each
# flush that succeeded, maps each MiB written to the name of its data.
import json, os, random, sys, time, nbd
M = 1 << 20
uri, sd, cmd = sys.argv[1], sys.argv[2], sys.argv[3]
mp = os.path.join(sd, "model.json")
model = json.load(open(mp)) if os.path.exists(mp) else {}

def data(name):
    return random.Random(name).randbytes(M)

def save():
    json.dump(model, open(mp + ".tmp", "w"))
    os.replace(mp + ".tmp", mp)

def write(h, offs, tag):
    for off in offs:
        h.pwrite(data("%s/%d" % (tag, off)), off * M)
    h.flush()
    for off in offs:
        model[str(off)] = "%s/%d" % (tag, off)
    save()

h = nbd.NBD()
h.connect_uri(uri)
if cmd == "write":
    a, b, tag = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    write(h, range(a, b), tag)
    print("wrote and flushed [%d, %d) MiB (%s)" % (a, b, tag))
elif cmd == "load":
    a, b, stop = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    n, t0 = 0, time.monotonic()
    while not os.path.exists(stop):
        write(h, [a + n % (b - a)], "load%d" % (n // (b - a)))
        n += 1
    print("load: %d MiB written and flushed in %.1f s" % (n, time.monotonic() - t0))
elif cmd == "verify":
    bad = [o for o, name in sorted(model.items(), key=lambda x: int(x[0]))
           if h.pread(M, int(o) * M) != data(name)]
    if bad:
        sys.exit("%d of %d MiB differ from what was flushed, first at MiB %s"
                 % (len(bad), len(model), bad[0]))
    print("verified: %d MiB as flushed" % len(model))
h.shutdown()
PY
	/usr/bin/python3 "$T/rmodel.py" "$(huri "$who" vol0)" "$T" "$@"
}
