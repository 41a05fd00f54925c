#!/bin/bash
# cowctl against a live daemon: volume create/list/info/delete round trip,
# --json output parsed by python, and every kind of bad input giving a
# non-zero exit and exactly one line on stderr (docs/CONTROL.md).
. "$(dirname "$0")/lib.sh"
requires /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] || fail "build/cowbd or build/cowctl missing"

# expect_err EXIT PATTERN ARGS...: cowctl exits EXIT, prints nothing on
# stdout and one line matching PATTERN (grep -E) on stderr.
expect_err() {
	local want=$1 pat=$2 rc
	shift 2
	cowctl "$@" >"$T/out" 2>"$T/err"
	rc=$?
	[ "$rc" -eq "$want" ] || fail "cowctl $*: exit $rc, want $want (stderr: $(cat "$T/err"))"
	[ ! -s "$T/out" ] || fail "cowctl $*: unexpected stdout: $(cat "$T/out")"
	[ "$(wc -l <"$T/err")" -eq 1 ] || fail "cowctl $*: want one stderr line, got: $(cat "$T/err")"
	grep -Eq "^cowctl: .*$pat" "$T/err" || fail "cowctl $*: stderr '$(cat "$T/err")' does not match '$pat'"
	echo "ok (exit $rc): cowctl $* -> $(cat "$T/err")"
}

py() { /usr/bin/python3 -c "$1" <"$T/out" || fail "check failed: $1 on $(cat "$T/out")"; }

# --- daemon not running -----------------------------------------------
expect_err 3 "cannot connect to $CTL: No such file or directory" volume list
COWBD_CONTROL="$T/none.sock" "$BUILD/cowctl" stats 2>"$T/err"
[ $? -eq 3 ] && grep -q "cannot connect to $T/none.sock" "$T/err" || fail "\$COWBD_CONTROL not used"

# --- a daemon that does not answer --------------------------------------
# One that accepts and reads but never replies, and one whose accept
# backlog is full (connect itself waits): --timeout bounds both, exit 3.
/usr/bin/python3 - "$T/mute.sock" "$T/full.sock" "$T/mute.ready" <<'PY' &
import os, socket, sys, time
mute = socket.socket(socket.AF_UNIX)
mute.bind(sys.argv[1])
mute.listen(8)
full = socket.socket(socket.AF_UNIX)
full.bind(sys.argv[2])
full.listen(0)
filler = socket.socket(socket.AF_UNIX)  # takes the one backlog place
filler.connect(sys.argv[2])
open(sys.argv[3], "w").close()
held = []
mute.settimeout(60)
try:
    while True:
        c, _ = mute.accept()
        held.append(c)
except socket.timeout:
    pass
PY
MUTE=$!
for _ in $(seq 1 100); do [ -e "$T/mute.ready" ] && break; sleep 0.05; done
for s in mute full; do
	t0=$(date +%s%N)
	expect_err 3 "no reply from $T/$s.sock within 1 s" --control "$T/$s.sock" --timeout 1 volume list
	ms=$((($(date +%s%N) - t0) / 1000000))
	[ "$ms" -ge 900 ] && [ "$ms" -lt 10000 ] || fail "cowctl --timeout 1 on $s.sock took $ms ms"
done
kill "$MUTE"
wait "$MUTE" 2>/dev/null
expect_err 2 'invalid timeout "x"' --timeout x volume list
expect_err 2 'invalid timeout "-1"' --timeout -1 volume list
expect_err 2 'invalid timeout "86401"' --timeout 86401 volume list
# A negative number as an option's argument is named as given.
expect_err 2 'invalid rate "-1" ' scrub --rate -1
expect_err 2 'invalid page size "-3" ' volume list --page-size -3

cowbd_start
ok --timeout 0 volume list
ok -t 5 volume list

# --- round trip ---------------------------------------------------------
ok volume create alpha 64M
grep -q 'created volume "alpha" (64M)' "$T/out" || fail "create output: $(cat "$T/out")"
ok volume create beta 1G
ok volume create odd 1536
ok volume list
head -1 "$T/out" | grep -Eq '^NAME +SIZE +USED +UNIQUE +ORIGIN +CREATED +ATTACHED$' || fail "list header: $(cat "$T/out")"
grep -Eq '^alpha +64M ' "$T/out" || fail "alpha missing: $(cat "$T/out")"
grep -Eq '^beta +1\.0G ' "$T/out" || fail "beta missing: $(cat "$T/out")"
grep -Eq '^odd +1\.5K ' "$T/out" || fail "odd missing: $(cat "$T/out")"

ok --json volume list
py '
import json, sys
r = json.load(sys.stdin)
assert r["ok"] is True
v = {x["name"]: x for x in r["volumes"]}
assert v["alpha"]["size"] == 64 << 20, v
assert v["beta"]["size"] == 1 << 30
assert v["odd"]["size"] == 1536
for x in v.values():
    assert x["snapshot"] is False and x["origin"] is None and x["attached"] == 0
    assert x["used"] == 0 and x["unique"] == 0 and x["created"] > 1600000000
    assert x["snapshot_count"] == 0 and "snapshots" not in x
'
ok volume info alpha
grep -Eq '^size: +64M \(67108864 bytes\)$' "$T/out" || fail "info: $(cat "$T/out")"
ok volume info beta --json
py '
import json, sys
r = json.load(sys.stdin)
assert r["ok"] and r["volume"]["name"] == "beta" and r["volume"]["size"] == 1 << 30, r
'
# the environment variable names the socket too
COWBD_CONTROL="$CTL" "$BUILD/cowctl" volume info alpha >/dev/null || fail "\$COWBD_CONTROL"

# --- bad input ------------------------------------------------------------
expect_err 1 'volume "alpha" exists' volume create alpha 1G
expect_err 1 'no volume "nosuch"' volume info nosuch
expect_err 1 'no volume "nosuch"' volume delete nosuch
expect_err 1 'no volume "nosuch"' snapshot create nosuch@s
expect_err 1 'no volume "nosuch"' snapshot list nosuch
expect_err 1 'no snapshot "alpha@nosnap"' volume info alpha@nosnap
expect_err 1 'no snapshot "alpha@nosnap"' clone alpha@nosnap gamma
expect_err 1 'no snapshot "alpha@nosnap"' snapshot delete alpha@nosnap
expect_err 1 'no snapshot "alpha@nosnap"' rollback alpha@nosnap
expect_err 2 'invalid volume name ".hidden"' volume create .hidden 1G
expect_err 2 'invalid volume name "a/b"' volume create a/b 1G
expect_err 2 'invalid volume name "sp ace"' volume create "sp ace" 1G
expect_err 2 'invalid volume name ""' volume create "" 1G
expect_err 2 'invalid volume name "x{65}"' volume create "$(printf 'x%.0s' $(seq 65))" 1G
expect_err 2 'unknown option' volume create -dash 1G
expect_err 2 'is a snapshot name' volume create a@b 1G
expect_err 2 'not a snapshot name' snapshot create alpha
expect_err 2 'invalid snapshot name "alpha@"' snapshot create alpha@
expect_err 2 'invalid snapshot name "@s"' snapshot create @s
expect_err 2 'invalid snapshot name "a@b@c"' snapshot create a@b@c
expect_err 2 'invalid snapshot name "alpha@.s"' snapshot create alpha@.s
expect_err 2 'size must be greater than zero' volume create z 0
expect_err 2 'size must be greater than zero' volume create z 0G
expect_err 2 'invalid size "1.5G"' volume create z 1.5G
expect_err 2 'invalid size "12Q"' volume create z 12Q
expect_err 2 'invalid size "G"' volume create z G
expect_err 2 'invalid size ""' volume create z ""
expect_err 2 'invalid size " 1G"' volume create z " 1G"
expect_err 2 'invalid size "0x100"' volume create z 0x100
expect_err 2 'not a multiple of 512' volume create z 1000
expect_err 2 'too large' volume create z 99999999999T
expect_err 2 'too large' volume create z 99999999999999999999999
expect_err 2 'unknown command "frobnicate"' frobnicate
expect_err 2 'unknown command "volume frob"' volume frob
expect_err 2 'volume needs' volume
expect_err 2 'snapshot needs' snapshot
expect_err 2 'volume create needs NAME SIZE' volume create onlyname
expect_err 2 'volume delete needs NAME' volume delete
expect_err 2 'clone needs VOL@SNAP NEWVOL' clone alpha@s
expect_err 2 'rollback needs VOL@SNAP' rollback
expect_err 2 'too many arguments' volume list extra
expect_err 2 'too many arguments' volume delete alpha beta
expect_err 2 'unknown option --bogus' --bogus volume list
"$BUILD/cowctl" --control >/dev/null 2>"$T/err"
[ $? -eq 2 ] && grep -q 'needs an argument' "$T/err" || fail "--control without PATH"
"$BUILD/cowctl" >/dev/null 2>&1
[ $? -eq 2 ] || fail "no command should exit 2"
"$BUILD/cowctl" --help | grep -q 'volume create NAME SIZE' || fail "--help"
"$BUILD/cowctl" help | grep -q 'snapshot list' || fail "help"

# a refused request with --json still gives parseable JSON on stdout
cowctl --json volume create alpha 1G >"$T/out" 2>"$T/err"
[ $? -eq 1 ] || fail "--json duplicate create should exit 1"
py '
import json, sys
r = json.load(sys.stdin)
assert r == {"ok": False, "error": "volume \"alpha\" exists", "errno": "EEXIST"}, r
'

# nothing above changed the volume set
ok --json volume list
py '
import json, sys
assert sorted(x["name"] for x in json.load(sys.stdin)["volumes"]) == ["alpha", "beta", "odd"]
'

# --- delete, stats, checkpoint ------------------------------------------
ok volume delete beta
grep -q 'deleted volume "beta"' "$T/out" || fail "delete output"
expect_err 1 'no volume "beta"' volume info beta
ok volume list
grep -q '^beta ' "$T/out" && fail "beta still listed"
ok volume create beta 2G   # the name is free again
ok stats
grep -Eq '^pool size: +1\.0G$' "$T/out" || fail "stats: $(cat "$T/out")"
ok --json stats
py '
import json, sys
s = json.load(sys.stdin)["stats"]
assert s["pool_bytes"] == 1 << 30 and s["failed"] is False and s["block_size"] == 4096, s
'
ok checkpoint
grep -q 'checkpoint written' "$T/out" || fail "checkpoint output"

# --- raw protocol errors ----------------------------------------------------
VERSION=$("$BUILD/cowctl" --version | sed 's/^cowctl //')
/usr/bin/python3 - "$CTL" "$VERSION" <<'PY' || fail "raw protocol checks"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rwb")
def ask(line):
    f.write(line + b"\n"); f.flush()
    return json.loads(f.readline())
assert ask(b"not json")["errno"] == "EINVAL"
assert ask(b"[]")["errno"] == "EINVAL"
assert ask(b'{"op":"nope","id":7}') == {"ok": False, "error": 'unknown op "nope"', "errno": "EOPNOTSUPP", "id": 7}
assert ask(b'{"op":"volume.create","name":"q"}')["errno"] == "EINVAL"
assert ask(b'{"op":"volume.create","name":"q","size":4097}')["errno"] == "EINVAL"
assert ask(b'{"op":"volume.create","name":"../q","size":4096}')["errno"] == "EINVAL"
r = ask(b'{"op":"ping"}')
assert r["ok"] is True and r["protocol"] == 1 and r["version"] == sys.argv[2], r
# over-long line: one EMSGSIZE reply, then the connection closes
t = socket.socket(socket.AF_UNIX)
t.connect(sys.argv[1])
try:
    t.sendall(b'{"op":"ping","x":"' + b"y" * 70000 + b'"}\n')
except OSError:
    pass
r = json.loads(t.makefile("rb").readline())
assert r["errno"] == "EMSGSIZE", r
# the first connection still works
assert ask(b'{"op":"ping","id":"after"}')["id"] == "after"
PY

cowbd_stop
[ ! -e "$CTL" ] || fail "control socket left behind after a clean stop"
echo "cowctl_basic: all checks passed"
