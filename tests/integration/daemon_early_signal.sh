#!/bin/bash
# daemon_early_signal.sh — a signal that arrives while cowbd is still
# starting (its control socket is there, the loop's signal watchers may not
# be yet) is taken by the loop once it runs, never by its default action:
# SIGTERM then stops the daemon cleanly (exit 0, control socket removed,
# pool clean), SIGHUP/SIGUSR1/SIGUSR2 leave it serving.  Each signal is
# sent the moment the control socket appears, ROUNDS times, on a pool
# being created and on one being opened.  The window between the control
# socket and the watchers is short; strace widens it by delaying every
# rt_sigaction (libev installs each watcher's handler with one) by 50 ms,
# so a signal in it is certain, not luck.
. "$(dirname "$0")/lib.sh"
requires strace
ROUNDS=${ROUNDS:-4}
SOCK="$T/early.sock"

start() { # POOL ARGS...: start cowbd, return once its control socket exists
	local pool=$1; shift
	# LeakSanitizer cannot run under ptrace (a sanitizer build would exit 1
	# at its leak check); AddressSanitizer's other checks stay on.
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
		strace -f -qq -o /dev/null -e trace=rt_sigaction -e inject=rt_sigaction:delay_enter=50000 \
		"$BUILD/cowbd" --pool "$pool" "$@" --listen 127.0.0.1:0 --control "$SOCK" >>"$T/early.log" 2>&1 &
	TRACER=$!
	local until=$((SECONDS + 60)) # 10 ms polls: well inside the 50 ms delay
	while [ $SECONDS -lt $until ]; do
		if [ -S "$SOCK" ]; then
			EARLY_PID=$(pgrep -P "$TRACER" -x cowbd) && return 0
			fail "no cowbd under strace $TRACER"
		fi
		kill -0 "$TRACER" 2>/dev/null || fail "cowbd exited before its control socket appeared"
		sleep 0.01
	done
	fail "no control socket after 60 s"
}

stop_clean() { # WHAT: SIGTERM now, exit 0, no control socket left
	kill -TERM "$EARLY_PID"
	wait "$TRACER"; local rc=$? # strace exits as cowbd did
	[ "$rc" = 0 ] || { tail -5 "$T/early.log"; fail "$1: exit $rc, wanted 0 (a clean stop)"; }
	[ ! -e "$SOCK" ] || fail "$1: control socket left"
}

for i in $(seq 1 "$ROUNDS"); do
	rm -f "$T/p$i.img"
	start "$T/p$i.img" --create 64M
	stop_clean "SIGTERM while creating (round $i)"
	start "$T/p$i.img"
	stop_clean "SIGTERM while opening (round $i)"
	for sig in HUP USR1 USR2; do
		start "$T/p$i.img"
		kill -"$sig" "$EARLY_PID"
		sleep 0.2
		kill -0 "$EARLY_PID" 2>/dev/null || fail "SIG$sig while starting (round $i) ended cowbd"
		stop_clean "SIGTERM after SIG$sig (round $i)"
	done
	"$BUILD/cowbd-check" "$T/p$i.img" >"$T/check.out" 2>&1 ||
		{ cat "$T/check.out"; fail "round $i: the pool does not check clean"; }
	rm -f "$T/p$i.img"
done
echo "daemon_early_signal: $ROUNDS rounds of signals at start-up, every stop clean"
