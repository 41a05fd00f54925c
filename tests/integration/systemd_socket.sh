#!/bin/bash
# systemd_socket.sh — socket activation without systemd as PID 1, through
# systemd-socket-activate (it binds, waits for the first connection, then
# execs cowbd with LISTEN_FDS/LISTEN_FDNAMES, as systemd does):
#  - a TCP and a unix socket named "nbd": the first client's connection
#    starts cowbd and is served; both sockets serve data; cowbd binds no
#    socket of its own (a --listen given anyway is ignored with a warning);
#  - an unnamed socket (no --fdname) serves NBD;
#  - a unix socket named "control" is the control socket: cowctl on it
#    starts cowbd and is served; cowbd leaves its file alone at exit;
#  - refused before the pool is touched, with one line naming the fd: a
#    file, a connected (not listening) socket, a datagram socket, a TCP
#    socket named control, an unknown name.
. "$(dirname "$0")/lib.sh"
requires systemd-socket-activate nbdsh nbdinfo /usr/bin/python3

# activate NAME-ARGS... -- COWBD-ARGS...: systemd-socket-activate with the
# listen arguments before --, running cowbd on $POOL with the rest.
activate() {
	local sa=() before
	before=$(grep -c "Listening on" "$LOG" 2>/dev/null)
	while [ "$1" != -- ]; do sa+=("$1"); shift; done
	shift
	systemd-socket-activate "${sa[@]}" "$BUILD/cowbd" --pool "$POOL" --create 1G \
		--control "$CTL" "$@" >>"$LOG" 2>&1 &
	COWBD_PID=$!
	for _ in $(seq 1 100); do
		[ "$(grep -c "Listening on" "$LOG")" -gt "${before:-0}" ] && return 0
		sleep 0.05
	done
	fail "systemd-socket-activate did not start"
}
up() { # wait for cowbd to own the pid and its control socket
	for _ in $(seq 1 1200); do
		kill -0 "$COWBD_PID" 2>/dev/null || fail "cowbd died"
		[ -S "$CTL" ] && return 0
		sleep 0.05
	done
	fail "cowbd did not come up"
}

# ---- named TCP + unix sockets -----------------------------------------
PORT=$(random_port)
OTHER=$(random_port)
activate -l "127.0.0.1:$PORT" -l "$T/nbd.sock" --fdname=nbd:nbd -- --listen "127.0.0.1:$OTHER"
[ -S "$T/nbd.sock" ] || fail "no unix socket from systemd-socket-activate"
[ ! -e "$POOL" ] || fail "cowbd started before any connection"
# The first connection starts cowbd and is itself served.
out=$(nbdinfo --list "nbd://127.0.0.1:$PORT/") || fail "the first client was not served: $out"
up
[ "$(readlink "/proc/$COWBD_PID/exe")" = "$(readlink -f "$BUILD/cowbd")" ] ||
	fail "pid $COWBD_PID is not cowbd"
grep -q "listening on 127.0.0.1:$PORT (passed by the service manager)" "$LOG" ||
	fail "the TCP socket was not taken as passed"
grep -q "listening on unix:$T/nbd.sock (passed by the service manager)" "$LOG" ||
	fail "the unix socket was not taken as passed"
grep -q -- "--listen/--unix ignored: the service manager passed 2 NBD socket(s)" "$LOG" ||
	fail "no warning that --listen is ignored"
if nbdinfo --list "nbd://127.0.0.1:$OTHER/" >/dev/null 2>&1; then
	fail "cowbd bound --listen although sockets were passed"
fi
ok volume create vol0 64M
nbdsh -u "nbd://127.0.0.1:$PORT/vol0" -c "h.pwrite(b'T' * 65536, 0); h.flush()" ||
	fail "write through the passed TCP socket"
nbdsh -u "nbd+unix:///vol0?socket=$T/nbd.sock" -c "assert h.pread(65536, 0) == b'T' * 65536" ||
	fail "read back through the passed unix socket"
cowbd_stop
check_pool "after the socket-activated run"
echo "ok: named TCP and unix sockets passed, the first connection served, no own listener"

# ---- an unnamed socket, as -l alone passes it --------------------------
rm -f "$CTL" "$T/nbd.sock"
activate -l "127.0.0.1:$PORT" --
[ "$(nbdinfo --size "nbd://127.0.0.1:$PORT/vol0")" = 67108864 ] || fail "unnamed socket: no vol0"
up
grep -q "listening on 127.0.0.1:$PORT (passed by the service manager)" "$LOG" ||
	fail "the unnamed socket was not taken as an NBD listener"
cowbd_stop
echo "ok: an unnamed passed socket serves NBD"

# ---- the control socket passed too, named "control" ---------------------
rm -f "$CTL"
PCTL="$T/passed-control.sock"
activate -l "127.0.0.1:$PORT" -l "$PCTL" --fdname=nbd:control --
# cowctl's connection starts cowbd, like an NBD client's.
timeout 60 "$BUILD/cowctl" --control "$PCTL" volume list >"$T/out" 2>&1 || fail "cowctl through the passed socket: $(cat "$T/out")"
grep -q vol0 "$T/out" || fail "cowctl volume list lacks vol0: $(cat "$T/out")"
grep -q "control socket unix:$PCTL (passed by the service manager)" "$LOG" ||
	fail "the control socket was not taken as passed"
timeout 60 "$BUILD/cowctl" --control "$PCTL" snapshot create vol0@passed >/dev/null || fail "snapshot through the passed socket"
[ "$(nbdinfo --size "nbd://127.0.0.1:$PORT/vol0@passed")" = 67108864 ] || fail "snapshot not served"
[ ! -e "$CTL" ] || fail "cowbd made its own control socket at --control as well"
cowbd_stop
[ -S "$PCTL" ] || fail "cowbd removed the passed control socket's file (its maker's)"
echo "ok: a passed control socket serves cowctl (and starts cowbd); its file is left alone"

# ---- refused: not a listening stream socket, or an unknown name --------
: >"$LOG"
# refused WHAT PATTERN: cowbd (already started, pid COWBD_PID) exits 1 with
# a line matching PATTERN and has not touched the pool.
refused() {
	for _ in $(seq 1 600); do kill -0 "$COWBD_PID" 2>/dev/null || break; sleep 0.05; done
	kill -0 "$COWBD_PID" 2>/dev/null && fail "$1: not refused (cowbd still runs after 30 s)"
	wait "$COWBD_PID"; rc=$?
	COWBD_PID=""
	[ "$rc" = 1 ] || fail "$1: exit $rc, wanted 1: $(cat "$LOG")"
	grep -qE -- "$2" "$LOG" || fail "$1: no line matching '$2': $(cat "$LOG")"
	[ ! -e "$T/fresh.img" ] || fail "$1: the pool was created"
	echo "ok: $1 refused: $(grep -E -- "$2" "$LOG")"
	: >"$LOG"
}
# cowbd with fd 3 from the caller's redirection, LISTEN_PID its own pid
passfd() {
	LISTEN_FDS=1 bash -c 'export LISTEN_PID=$$; exec "$@"' _ "$BUILD/cowbd" \
		--pool "$T/fresh.img" --create 1G --listen 127.0.0.1:0 --control "$CTL" "$@"
}

passfd 3<"$T/cowbd.log" >>"$LOG" 2>&1 &
COWBD_PID=$!
refused "a file" 'error: passed fd 3 \("unknown"\) is not a socket: want a listening TCP or unix stream socket'

# A connected stream socket: python holds a socketpair and passes one end.
/usr/bin/python3 - "$BUILD/cowbd" "$T/fresh.img" "$CTL" >>"$LOG" 2>&1 <<'PY' &
import os, socket, subprocess, sys
a, b = socket.socketpair()
os.dup2(a.fileno(), 3, inheritable=True)
env = dict(os.environ, LISTEN_FDS="1")
sys.exit(subprocess.call(["bash", "-c", 'export LISTEN_PID=$$; exec "$@"', "_", sys.argv[1],
                          "--pool", sys.argv[2], "--create", "1G", "--listen", "127.0.0.1:0",
                          "--control", sys.argv[3]], env=env, pass_fds=(3,)))
PY
COWBD_PID=$!
refused "a connected socket" 'passed fd 3 \("unknown"\) is not listening'

activate -d -l "127.0.0.1:$PORT" -- --pool "$T/fresh.img"
/usr/bin/python3 -c 'import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", int(sys.argv[1])))' "$PORT"
refused "a datagram socket" 'passed fd 3 \("unknown"\) is not a stream socket'

activate -l "127.0.0.1:$PORT" --fdname=control -- --pool "$T/fresh.img"
nbdinfo --list "nbd://127.0.0.1:$PORT/" >/dev/null 2>&1
refused "a TCP control socket" 'passed fd 3 \("control"\) is not a unix socket: want a listening unix stream socket'

activate -l "127.0.0.1:$PORT" --fdname=bogus -- --pool "$T/fresh.img"
nbdinfo --list "nbd://127.0.0.1:$PORT/" >/dev/null 2>&1
refused "an unknown name" 'passed socket fd 3 has an unknown name "bogus" \(want nbd or control\)'
