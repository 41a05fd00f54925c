#!/bin/bash
# tests/ceph/smoke.sh — cluster.sh gives a usable cluster: with 1 OSD, then with 3, as
# client.cowbd: put/get/stat an object, take an exclusive lock, see a second locker refused,
# break the lock and take it, blocklist the old owner's address; then stop. Prints each
# start time and the daemons' peak RSS. Exit 0 pass, 1 fail, 77 skip (no Ceph packages:
# `make deps-ceph`). Everything it starts is stopped on exit, pass or fail.
set -u
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for c in ceph-mon ceph-mgr ceph-osd ceph rados; do
	command -v "$c" >/dev/null || { echo "skip: $c missing (make deps-ceph)"; exit 77; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/cowbd-ceph.XXXXXX")
CL=""
HOLDER=""

cleanup() {
	[ -z "$CL" ] || bash "$HERE/cluster.sh" stop "$CL"
	[ -z "$HOLDER" ] || { kill "$HOLDER" 2>/dev/null; wait "$HOLDER" 2>/dev/null; }
	if [ -n "${KEEP_TEST_DIR:-}" ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
	echo "error: $*" >&2
	exit 1
}

# r ARGS...: rados as client.cowbd on pool cowbd; output in $T/out
r() {
	timeout 30 rados -c "$CL/ceph.conf" --id cowbd -p cowbd "$@" >"$T/out" 2>&1
}

# json_get EXPR: evaluate EXPR on the JSON in $T/out (bound to j)
json_get() {
	/usr/bin/python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$T/out" "$1"
}

# hold_port: listen on a free loopback port (in $T/held) until the test ends
hold_port() {
	/usr/bin/python3 -c 'import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
open(sys.argv[1] + ".tmp", "w").write("%d\n" % s.getsockname()[1])
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)' "$T/held" &
	HOLDER=$!
	for ((i = 0; i < 100; i++)); do
		[ -s "$T/held" ] && return 0
		sleep 0.1
	done
	fail "no port held after 10 s"
}

# smoke NOSDS [TAKEN-PORT]: with a taken port, the mon's first try must fail and the start
# go on with another port.
smoke() {
	local n=$1 taken=${2:-} line owner addr f pid kb total=0
	CL="$T/c$n"
	line=$(CEPH_MON_PORT=$taken bash "$HERE/cluster.sh" start "$CL" "$n" 2>"$T/err") ||
		fail "$n-OSD cluster did not start: $(cat "$T/err")"
	echo "$line"
	if [ -n "$taken" ]; then
		grep -q "127.0.0.1:$taken already in use, try 2" "$T/err" ||
			fail "no retry after the taken port $taken: $(cat "$T/err")"
		! grep -q "127.0.0.1:$taken\]" "$CL/ceph.conf" || fail "the mon kept port $taken"
		echo "  taken port $taken: the mon moved to another"
	fi

	head -c 1048576 /dev/urandom >"$T/obj"
	r put obj1 "$T/obj" || fail "put: $(cat "$T/out")"
	r get obj1 "$T/back" || fail "get: $(cat "$T/out")"
	cmp -s "$T/obj" "$T/back" || fail "object read back differs"
	r stat obj1 || fail "stat: $(cat "$T/out")"
	grep -q "size 1048576" "$T/out" || fail "stat: $(cat "$T/out")"

	r lock get obj1 owner --lock-type exclusive --lock-cookie a ||
		fail "lock get: $(cat "$T/out")"
	! r lock get obj1 owner --lock-type exclusive --lock-cookie b ||
		fail "a second exclusive locker was not refused"
	grep -q "Device or resource busy" "$T/out" || fail "second locker: $(cat "$T/out")"
	r lock info obj1 owner || fail "lock info: $(cat "$T/out")"
	owner=$(json_get 'j["lockers"][0]["name"]') || fail "lock info: $(cat "$T/out")"
	addr=$(json_get 'j["lockers"][0]["addr"]') || fail "lock info: $(cat "$T/out")"
	r lock break obj1 owner "$owner" --lock-cookie a || fail "lock break: $(cat "$T/out")"
	r lock get obj1 owner --lock-type exclusive --lock-cookie b ||
		fail "lock get after break: $(cat "$T/out")"
	r lock info obj1 owner || fail "lock info: $(cat "$T/out")"
	[ "$(json_get 'j["lockers"][0]["cookie"]')" = b ] || fail "lock holder: $(cat "$T/out")"

	# The old owner is fenced; client.cowbd may add a client instance, not remove one.
	timeout 30 ceph -c "$CL/ceph.conf" --id cowbd osd blocklist add "$addr" >"$T/out" 2>&1 ||
		fail "blocklist add $addr: $(cat "$T/out")"
	timeout 30 ceph -c "$CL/ceph.conf" --id cowbd osd blocklist ls >"$T/out" 2>&1 ||
		fail "blocklist ls: $(cat "$T/out")"
	grep -qF "$addr" "$T/out" || fail "$addr not in the blocklist: $(cat "$T/out")"
	! timeout 30 ceph -c "$CL/ceph.conf" --id cowbd osd blocklist rm "$addr" \
		>"$T/out" 2>&1 || fail "client.cowbd could remove a blocklist entry"

	for f in "$CL"/run/*.pid; do
		pid=$(cat "$f")
		kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status") || fail "no status for $f"
		printf '  %-6s peak RSS %4d MiB\n' "$(basename "$f" .pid)" $((kb / 1024))
		total=$((total + kb))
	done
	printf '  total  peak RSS %4d MiB\n' $((total / 1024))

	bash "$HERE/cluster.sh" stop "$CL" || fail "stop"
	for f in "$CL"/run/*.pid; do [ ! -e "$f" ] || fail "$f left behind"; done
	pgrep -f -- "-c $CL/ceph.conf" >/dev/null && fail "a daemon of $CL survived stop"
	CL=""
	echo "ok: $n OSD(s)"
}

hold_port
smoke 1 "$(cat "$T/held")"
smoke 3
