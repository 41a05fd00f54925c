#!/bin/bash
# Refusals that protect data: deleting or rolling back a volume an NBD
# client holds, deleting a volume that has snapshots, deleting a snapshot a
# clone depends on.  Each is refused with exit 1 and one clear line, and
# succeeds once the obstacle is gone.
. "$(dirname "$0")/lib.sh"
requires nbdsh /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] || fail "build/cowbd or build/cowctl missing"

expect_err() { # EXIT PATTERN ARGS...
	local want=$1 pat=$2 rc
	shift 2
	cowctl "$@" >"$T/out" 2>"$T/err"
	rc=$?
	[ "$rc" -eq "$want" ] || fail "cowctl $*: exit $rc, want $want (stderr: $(cat "$T/err"))"
	[ "$(wc -l <"$T/err")" -eq 1 ] || fail "cowctl $*: want one stderr line, got: $(cat "$T/err")"
	grep -Eq "^cowctl: .*$pat" "$T/err" || fail "cowctl $*: stderr '$(cat "$T/err")' does not match '$pat'"
	echo "ok (exit $rc): cowctl $* -> $(cat "$T/err")"
}

attached() { # NAME -> open handles
	cowctl --json volume info "$1" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["volume"]["attached"])'
}
wait_attached() { # NAME N
	for _ in $(seq 1 100); do
		[ "$(attached "$1")" = "$2" ] && return 0
		sleep 0.1
	done
	fail "$1: attached is $(attached "$1"), want $2"
}

HOLDERS=""
hold() { # EXPORT: keep an NBD connection open in the background
	nbdsh -c "h.set_export_name('$1')" -c "h.connect_tcp('127.0.0.1', '$PORT')" \
		-c 'import time; time.sleep(3600)' & # until release: a slow run must not outlive it
	HOLDERS="$HOLDERS $!"
	LAST_HOLDER=$!
}
release() { # PID
	kill "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}
trap 'for p in $HOLDERS; do kill $p 2>/dev/null; done; cleanup' EXIT

cowbd_start

ok volume create vm 64M
hold vm
wait_attached vm 1
ok volume list
grep -Eq '^vm +64M .* 1$' "$T/out" || fail "list does not show vm attached: $(cat "$T/out")"
expect_err 1 'volume "vm" is attached \(1 open handle\)' volume delete vm
ok snapshot create vm@s1            # snapshots of an attached volume are fine
expect_err 1 'volume "vm" is attached' rollback vm@s1
release "$LAST_HOLDER"
wait_attached vm 0

# snapshot exports count as attached too
hold vm@s1
wait_attached vm@s1 1
expect_err 1 'snapshot "vm@s1" is attached \(1 open handle\)' snapshot delete vm@s1
release "$LAST_HOLDER"
wait_attached vm@s1 0

expect_err 1 'volume "vm" has 1 snapshot; delete it first' volume delete vm
ok snapshot create vm@s2
expect_err 1 'volume "vm" has 2 snapshots; delete them first' volume delete vm

ok clone vm@s1 c1
ok clone vm@s1 c2
expect_err 1 'snapshot "vm@s1" is the origin of clones c1, c2|snapshot "vm@s1" is the origin of clones c2, c1' snapshot delete vm@s1
ok --json volume info vm@s1
/usr/bin/python3 -c '
import json, sys
v = json.load(open(sys.argv[1]))["volume"]
assert v["snapshot"] and v["volume"] == "vm" and sorted(v["clones"]) == ["c1", "c2"], v
' "$T/out" || fail "info vm@s1: $(cat "$T/out")"

# the clone is a volume like any other: attached refusal applies to it
hold c1
wait_attached c1 1
expect_err 1 'volume "c1" is attached' volume delete c1
release "$LAST_HOLDER"
wait_attached c1 0

# unwind in dependency order: every step succeeds now
ok rollback vm@s1
ok volume delete c1
expect_err 1 'snapshot "vm@s1" is the origin of clone c2; delete it first' snapshot delete vm@s1
ok volume delete c2
ok snapshot delete vm@s1
ok snapshot delete vm@s2
ok volume delete vm
ok --json volume list
/usr/bin/python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["volumes"] == []' "$T/out" ||
	fail "volumes left: $(cat "$T/out")"
echo "cowctl_busy: all checks passed"
