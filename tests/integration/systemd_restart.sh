#!/bin/bash
# systemd_restart.sh — `systemctl restart cowbd` through the fd store, with
# a stand-in for systemd (a python service manager, mgr.py): it owns the
# NBD listening socket (socket activation, name "nbd"), reads NOTIFY_SOCKET
# datagrams, keeps every fd sent with FDSTORE=1 under its FDNAME (dropping
# those FDSTOREREMOVE=1 names), and on each "restart" sends SIGTERM, waits
# for exit 0 and starts a new cowbd passing the listener and the stored fds
# (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID), with FDSTORE=64 set as systemd
# 254 sets it.  A client writing (FUA) and reading back all along sees no
# error across five restarts and never reconnects; each new process says
# it carried the connection on and took it out of the store; then a
# `cowctl upgrade` under the manager makes the new process the manager's
# child (as systemd needs it) and sends MAINPID=, and a sixth restart goes
# to it; every acknowledged write reads back.
# Then without FDSTORE a restart closes the connection as before.
. "$(dirname "$0")/lib.sh"
requires /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] || fail "build/cowbd or cowctl missing"

cat >"$T/mgr.py" <<'PY'
# mgr.py DIR PORT FDSTORE COWBD ARGS...: runs cowbd as systemd would; the
# shell drives it through files in DIR: "restart" (SIGTERM, wait, start
# again; then "restarted.N"), "stop".  Logs to DIR/mgr.log; exit 0 when
# every cowbd exited 0.
import array, ctypes, os, signal, socket, sys, time
d, port, fdstore, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # a subreaper, like PID 1
main = [0]    # the main pid: ours, or what MAINPID= said
exited = {}   # pid -> exit code, for every child reaped
log = open(os.path.join(d, "mgr.log"), "a", buffering=1)
lst = socket.socket()
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("127.0.0.1", port))
lst.listen(64)
ns_path = os.path.join(d, "notify.sock")
ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
ns.bind(ns_path)
ns.settimeout(0.05)
store = []  # [(name, fd)]

def drain_notify():
    while True:
        try:
            msg, anc, _, _ = ns.recvmsg(4096, socket.CMSG_SPACE(64 * 4))
        except (socket.timeout, BlockingIOError):
            return
        fields = dict(f.split("=", 1) for f in msg.decode().split("\n") if "=" in f)
        fds = []
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(data[:len(data) - len(data) % a.itemsize])
                fds.extend(a)
        if "MAINPID" in fields:
            main[0] = int(fields["MAINPID"])
            log.write("MAINPID=%d\n" % main[0])
            open(os.path.join(d, "pid"), "w").write(fields["MAINPID"])
        if fields.get("FDSTORE") == "1":
            for fd in fds:
                store.append((fields.get("FDNAME", "stored"), fd))
            log.write("stored %d fd(s) as %s\n" % (len(fds), fields.get("FDNAME")))
            continue
        for fd in fds:
            os.close(fd)
        if fields.get("FDSTOREREMOVE") == "1":
            name = fields.get("FDNAME")
            for n, fd in [x for x in store if x[0] == name]:
                os.close(fd)
            store[:] = [x for x in store if x[0] != name]
            log.write("removed %s\n" % name)

def start():
    passed = [("nbd", lst.fileno())] + store
    pid = os.fork()
    if pid == 0:
        tmp = [os.dup(fd) for _, fd in passed]
        for i, fd in enumerate(tmp):
            os.dup2(fd, 3 + i, inheritable=True)
        env = dict(os.environ, NOTIFY_SOCKET=ns_path, LISTEN_FDS=str(len(passed)),
                   LISTEN_FDNAMES=":".join(n for n, _ in passed), LISTEN_PID=str(os.getpid()))
        if fdstore != "0":
            env["FDSTORE"] = fdstore
        os.closerange(3 + len(passed), 1024)
        os.execve(argv[0], argv, env)
    for _, fd in store:  # passed on: the store keeps them, as systemd does
        pass
    log.write("started pid %d with %d fd(s): %s\n" % (pid, len(passed),
              ",".join(n for n, _ in passed)))
    open(os.path.join(d, "pid"), "w").write(str(pid))
    main[0] = pid
    return pid

def reap():
    while True:
        try:
            p, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not p:
            return
        exited[p] = os.waitstatus_to_exitcode(st)

def wait_exit(pid):
    while True:
        drain_notify()
        reap()
        if pid in exited:
            drain_notify()
            return exited[pid]
        time.sleep(0.01)

pid, code, n = start(), 0, 0
while True:
    drain_notify()
    reap()
    if main[0] in exited and main[0] == pid:
        log.write("main pid %d exited %d unasked\n" % (pid, exited[pid]))
        sys.exit(1)
    pid = main[0]
    if os.path.exists(os.path.join(d, "restart")):
        os.unlink(os.path.join(d, "restart"))
        os.kill(pid, signal.SIGTERM)
        rc = wait_exit(pid)
        code = code or rc
        log.write("pid %d exited %d; store: %s\n" % (pid, rc, [x[0] for x in store]))
        pid = start()
        n += 1
        open(os.path.join(d, "restarted.%d" % n), "w").close()
    if os.path.exists(os.path.join(d, "stop")):
        os.kill(pid, signal.SIGTERM)
        code = code or wait_exit(pid)
        old = [p for p, c in exited.items() if c]
        if old:
            log.write("processes that exited non-zero: %s\n" % old)
            code = code or 1
        log.write("stopped; store: %s\n" % [x[0] for x in store])
        open(os.path.join(d, "store"), "w").write("%d\n" % len(store))
        sys.exit(code)
PY

cat >"$T/steady.py" <<'PY'
# steady.py PORT DIR: FUA writes and read-backs until DIR/wstop; exit 0 with
# no error (the acknowledged writes in DIR/steady.json), 2 on an error.
import json, os, random, sys, time, nbd
port, d = sys.argv[1], sys.argv[2]
BS = 4096
h = nbd.NBD()
h.set_export_name("vol0")
h.connect_tcp("127.0.0.1", port)
known, rnd, n, code, worst = {}, random.Random(), 0, 0, 0.0
try:
    while not os.path.exists(os.path.join(d, "wstop")):
        off, b = rnd.randrange(4096) * BS, rnd.randrange(256)
        t = time.monotonic()
        h.pwrite(bytes([b]) * BS, off, nbd.CMD_FLAG_FUA)
        worst = max(worst, time.monotonic() - t)
        known[off] = b
        o = rnd.choice(list(known))
        if h.pread(BS, o) != bytes([known[o]]) * BS:
            sys.exit("read back wrong data at %d" % o)
        n += 1
        time.sleep(0.002)
    for o, b in known.items():
        if h.pread(BS, o) != bytes([b]) * BS:
            sys.exit("acknowledged write at %d lost" % o)
except nbd.Error as e:
    print("request failed after %d rounds: %s" % (n, e))
    code = 2
print("steady: %d rounds, %d blocks verified, longest request %.1f ms" %
      (n, len(known), worst * 1000))
sys.exit(code)
PY

# The manager goes too when the test ends early (lib.sh's cleanup stops
# cowbd only).
MGR=""
trap '[ -z "$MGR" ] || kill "$MGR" 2>/dev/null; cleanup' EXIT

# run_mgr FDSTORE: the manager with a fresh pool and volume vol0.
run_mgr() {
	rm -f "$T/stop" "$T/wstop" "$T/restart" "$T"/restarted.* "$T/pid" "$T/store" "$T/notify.sock" "$CTL"
	PORT=$(random_port)
	/usr/bin/python3 "$T/mgr.py" "$T" "$PORT" "$1" "$BUILD/cowbd" --pool "$POOL" \
		--create 256M --control "$CTL" >>"$LOG" 2>&1 &
	MGR=$!
	for _ in $(seq 1 600); do [ -S "$CTL" ] && break; sleep 0.05; done
	[ -S "$CTL" ] || fail "cowbd did not start under the manager"
	cowctl volume create vol0 16M >/dev/null 2>&1 || true
	COWBD_PID=$(cat "$T/pid")
}

restart() { # N: ask the manager for a restart and wait for it
	touch "$T/restart"
	for _ in $(seq 1 600); do [ -e "$T/restarted.$1" ] && break; sleep 0.05; done
	[ -e "$T/restarted.$1" ] || fail "restart $1 did not happen: $(tail -n 5 "$T/mgr.log")"
	local up=""
	for _ in $(seq 1 600); do
		cowctl --timeout 10 pool status >/dev/null 2>"$T/ctl.err" && { up=1; break; }
		sleep 0.05
	done
	[ -n "$up" ] || fail "cowbd did not answer after restart $1: $(cat "$T/ctl.err")"
	COWBD_PID=$(cat "$T/pid")
}

run_mgr 64
/usr/bin/python3 "$T/steady.py" "$PORT" "$T" >"$T/steady.out" 2>&1 &
W=$!
sleep 1
BASE=$(grep -c ': connected$' "$LOG")
for i in 1 2 3 4 5; do
	restart $i
	echo "restart $i: pid $COWBD_PID"
	sleep 1
done
# cowctl upgrade under the manager: the new process is the manager's child
# (--handover-detach) and MAINPID= names it; a restart after that goes to it.
old=$COWBD_PID
cowctl upgrade >"$T/up.out" 2>&1 || fail "cowctl upgrade under the manager: $(cat "$T/up.out")"
for _ in $(seq 1 100); do [ "$(cat "$T/pid")" != "$old" ] && break; sleep 0.05; done
COWBD_PID=$(cat "$T/pid")
[ "$COWBD_PID" != "$old" ] || fail "no MAINPID= after cowctl upgrade"
grep -q "^MAINPID=$COWBD_PID$" "$T/mgr.log" || fail "MAINPID=$COWBD_PID not sent"
[ "$(awk '{print $4}' "/proc/$COWBD_PID/stat")" = "$MGR" ] ||
	fail "the upgraded cowbd $COWBD_PID is not the manager's child (ppid $(awk '{print $4}' "/proc/$COWBD_PID/stat"))"
echo "ok: cowctl upgrade: pid $old -> $COWBD_PID, the manager's child, MAINPID sent"
sleep 1
restart 6
echo "restart 6 (after the upgrade): pid $COWBD_PID"
sleep 1
touch "$T/wstop"
wait $W || fail "the client saw an error across the restarts: $(cat "$T/steady.out")"
cat "$T/steady.out"
[ "$(grep -c ': connected$' "$LOG")" -eq "$BASE" ] || fail "the client reconnected"
[ "$(grep -c 'restart: carried on with 1 connection(s) from the fd store' "$LOG")" -eq 6 ] ||
	fail "not every restart carried the connection on: $(grep 'restart:' "$LOG" | tail -n 3)"
# Each new process took what it was given out of the store.
[ "$(grep -c '^removed cowbd-conn.0$' "$T/mgr.log")" -eq 6 ] &&
	[ "$(grep -c '^removed cowbd-state$' "$T/mgr.log")" -eq 6 ] ||
	fail "the store was not emptied at each start: $(tail -n 8 "$T/mgr.log")"
touch "$T/stop"
wait $MGR || fail "a cowbd did not exit 0: $(tail -n 5 "$T/mgr.log")"
echo "ok: five restarts through the fd store, the client noticed nothing"
check_pool "after the restarts"

# Without the fd store (FDSTORE unset) SIGTERM closes connections, as ever.
rm -f "$T/steady.json"
run_mgr 0
/usr/bin/python3 "$T/steady.py" "$PORT" "$T" >"$T/steady.out" 2>&1 &
W=$!
sleep 1
restart 1
wait $W
[ $? -eq 2 ] || fail "without FDSTORE the connection survived a restart: $(cat "$T/steady.out")"
touch "$T/wstop" "$T/stop"
wait $MGR || fail "a cowbd did not exit 0 without FDSTORE"
echo "ok: without the fd store a restart closes the connection"
COWBD_PID=""
echo "PASS: systemctl restart keeps NBD connections through the fd store"
