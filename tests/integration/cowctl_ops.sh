#!/bin/bash
# cowctl's operations beyond create/delete (docs/CONTROL.md): volume resize
# (grow while a client is attached: a new connection sees the new size, the
# open one keeps its own; data intact through a clean restart and a kill -9
# replay; shrink refused without --shrink and while attached, allowed
# detached), volume rename (snapshots follow, through restarts), the bad
# inputs of issue 10 (one line, non-zero exit, nothing changed), pool
# status, stats [VOL], compact --wait (no progress line when piped),
# clients, --json parsed by python, and --version.
. "$(dirname "$0")/lib.sh"
requires nbdinfo /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "requires python3-libnbd"; exit 77; }
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] || fail "build/cowbd or build/cowctl missing"

MiB=$((1 << 20))

expect_err() { # EXIT PATTERN ARGS...: exit status, no stdout, one stderr line matching
	local want=$1 pat=$2 rc
	shift 2
	cowctl "$@" >"$T/out" 2>"$T/err"
	rc=$?
	[ "$rc" -eq "$want" ] || fail "cowctl $*: exit $rc, want $want (stderr: $(cat "$T/err"))"
	[ ! -s "$T/out" ] || fail "cowctl $*: unexpected stdout: $(cat "$T/out")"
	[ "$(wc -l <"$T/err")" -eq 1 ] || fail "cowctl $*: want one stderr line, got: $(cat "$T/err")"
	grep -Eq "^cowctl: .*$pat" "$T/err" || fail "cowctl $*: '$(cat "$T/err")' does not match '$pat'"
	echo "ok (exit $rc): cowctl $* -> $(cat "$T/err")"
}

py() { /usr/bin/python3 -c "$1" <"$T/out" || fail "check failed: $1 on $(cat "$T/out")"; }

size_of() { nbdinfo --size "$(uri "$1")"; }

# client.py NAME CMD...: a libnbd client on export NAME; commands:
#   size N                the export is N bytes
#   put OFF LEN SEED / get OFF LEN SEED (SEED 0: zeroes)
#   cowctl [=EXIT] ARGS   run while the connection is open; exit EXIT (0) wanted
cat >"$T/client.py" <<'PY'
import nbd, subprocess, sys
port, ctl, cowctl, name = sys.argv[1:5]
def pattern(off, n, seed):
    if seed == 0:
        return bytes(n)
    b = bytearray(n)
    for i in range(0, n, 4096):
        b[i:i + 16] = b"%08x%08x" % (seed, (off + i) // 4096)
    return bytes(b)
h = nbd.NBD()
h.set_export_name(name)
h.connect_tcp("127.0.0.1", port)
for line in sys.argv[5:]:
    w = line.split()
    if w[0] == "size":
        assert h.get_size() == int(w[1]), (line, h.get_size())
    elif w[0] == "put":
        off, n, seed = map(int, w[1:])
        h.pwrite(pattern(off, n, seed), off)
        h.flush()
    elif w[0] == "get":
        off, n, seed = map(int, w[1:])
        assert h.pread(n, off) == pattern(off, n, seed), line
    elif w[0] == "cowctl":  # cowctl [=EXIT] ARGS...: EXIT (default 0) wanted
        want, args = (int(w[1][1:]), w[2:]) if w[1].startswith("=") else (0, w[1:])
        r = subprocess.run([cowctl, "--control", ctl] + args, capture_output=True, text=True)
        print(r.stdout + r.stderr, end="")
        if r.returncode != want:
            sys.exit("cowctl %s: exit %d: %s" % (args, r.returncode, r.stderr))
h.shutdown()
PY
client() { # NAME CMD...
	local name=$1
	shift
	/usr/bin/python3 "$T/client.py" "$PORT" "$CTL" "$BUILD/cowctl" "$name" "$@" >"$T/nbd.out" 2>&1 ||
		fail "nbd client on $name: $(cat "$T/nbd.out")"
}

cowbd_start

# --- --version --------------------------------------------------------------
"$BUILD/cowctl" --version | grep -Eq '^cowctl [^ ]+$' || fail "cowctl --version: $("$BUILD/cowctl" --version)"
VERSION=$("$BUILD/cowctl" --version | sed 's/^cowctl //')
[ "$("$BUILD/cowbd-check" --version)" = "cowbd-check $VERSION" ] || fail "cowbd-check --version"
"$BUILD/cowctl" --json --version >"$T/out" || fail "--json --version"
py "import json, sys; assert json.load(sys.stdin) == {'version': '$VERSION'}"
echo "ok: --version $VERSION"

# --- resize: grow while attached --------------------------------------------
ok volume create vm 64M
client vm "put 0 $MiB 1" "cowctl volume resize vm 128M" "size $((64 * MiB))" "get 0 $MiB 1"
grep -q 'resized volume "vm" from 64M to 128M' "$T/nbd.out" || fail "resize output: $(cat "$T/nbd.out")"
[ "$(size_of vm)" = $((128 * MiB)) ] || fail "a new connection should see 128 MiB"
client vm "size $((128 * MiB))" "put $((100 * MiB)) $MiB 2" "get 0 $MiB 1"
echo "ok: grown while attached; the open connection kept 64 MiB, a new one sees 128 MiB"

# --- shrink refused: without --shrink, attached, unaligned -------------------
expect_err 1 'volume.resize vm: 64 MiB is smaller than its size 128 MiB' volume resize vm 64M
client vm "cowctl =1 volume resize --shrink vm 96M"
grep -q 'volume "vm" is attached (1 open handle)' "$T/nbd.out" || fail "attached shrink: $(cat "$T/nbd.out")"
expect_err 1 'a shrink must be to a multiple of 4096 bytes' volume resize --shrink vm 100000256
expect_err 1 'outside 2.0 MiB..992.2 MiB' volume resize vm 2G
[ "$(size_of vm)" = $((128 * MiB)) ] || fail "a refused resize changed the size"
client vm "get 0 $MiB 1" "get $((100 * MiB)) $MiB 2"

# --- through a clean restart and a kill -9 replay ---------------------------
cowbd_stop
cowbd_restart
[ "$(size_of vm)" = $((128 * MiB)) ] || fail "size after restart: $(size_of vm)"
client vm "get 0 $MiB 1" "get $((100 * MiB)) $MiB 2"
ok volume resize vm 512M
cowbd_kill9
cowbd_restart
[ "$(size_of vm)" = $((512 * MiB)) ] || fail "size after kill -9: $(size_of vm)"
client vm "get 0 $MiB 1" "get $((100 * MiB)) $MiB 2" "get $((500 * MiB)) $MiB 0"
echo "ok: resizes survive a restart and a kill -9 replay"

# --- shrink, detached ---------------------------------------------------------
ok --json volume resize --shrink vm 96M
py "import json, sys; r = json.load(sys.stdin); assert r['previous_size'] == $((512 * MiB)) and r['volume']['size'] == $((96 * MiB)), r"
ok volume resize vm 128M
client vm "size $((128 * MiB))" "get 0 $MiB 1" "get $((100 * MiB)) $MiB 0"
echo "ok: shrink dropped the data past the new end; grown back, it reads zeroes"

# --- rename -------------------------------------------------------------------
ok snapshot create vm@s1
ok volume create other 8M
expect_err 1 'volume "other" exists' volume rename vm other
client vm@s1 "cowctl =1 volume rename vm vm2"
grep -q 'snapshot "vm@s1" is attached' "$T/nbd.out" || fail "rename with an attached snapshot: $(cat "$T/nbd.out")"
ok volume rename vm vm2
grep -q 'renamed volume "vm" to "vm2"' "$T/out" || fail "rename output: $(cat "$T/out")"
ok --json snapshot list vm2
py "import json, sys; assert [s['name'] for s in json.load(sys.stdin)['snapshots']] == ['vm2@s1']"
expect_err 1 'no volume "vm"' volume info vm
client vm2@s1 "get 0 $MiB 1"
cowbd_kill9
cowbd_restart
client vm2 "get 0 $MiB 1"
cowbd_stop
cowbd_restart
client vm2@s1 "get 0 $MiB 1"
nbdinfo --size "$(uri vm)" >/dev/null 2>&1 && fail "export vm still served after the rename"
echo "ok: rename, snapshots follow, through kill -9 and a clean restart"

# --- bad input: one line, non-zero exit, nothing changed ----------------------
ok --json volume list
cp "$T/out" "$T/before"
expect_err 2 'invalid size "-1"' volume create x -1
expect_err 2 'invalid size "-5"' volume resize vm2 -5
expect_err 2 '--shrink is an option of volume resize' --shrink volume list
expect_err 2 'invalid volume name "a@b"' volume rename vm2 a@b
expect_err 2 'volume rename needs NAME NEWNAME' volume rename vm2
expect_err 1 'no volume "nope"' volume resize nope 1G
ok --json volume list
py "import json, sys; a = json.load(sys.stdin); b = json.load(open('$T/before')); assert a == b, (a, b)"

# --- pool status, stats -------------------------------------------------------
ok --json pool status
py '
import json, sys
p = json.load(sys.stdin)["pool"]
for k in ("size", "provisioned", "allocated", "live", "reclaimable", "free", "segments",
          "segments_free", "volumes", "snapshots", "format_version"):
    assert isinstance(p[k], int), k
assert p["provisioned"] == (128 + 8) << 20 and p["volumes"] == 2 and p["snapshots"] == 1, p
assert abs(p["overcommit"] - p["provisioned"] / p["size"]) < 1e-9, p
assert p["free"] == p["segments_free"] * p["segment_size"] and p["live"] > 0, p
assert p["format_version"] == 5 and p["failed"] is False and p["read_only"] is False, p
assert set(p["compactor"]) == {"passes", "blocks_moved", "segments_freed", "damaged_left"}, p
'
ok pool status
grep -Eq '^state: +ok$' "$T/out" && grep -Eq '^provisioned: +136M \(overcommit 0\.13x\)$' "$T/out" ||
	fail "pool status: $(cat "$T/out")"
ok --json stats vm2
py '
import json, sys
v = json.load(sys.stdin)["volumes"]
assert [x["name"] for x in v] == ["vm2", "vm2@s1"], v
assert v[0]["used"] == v[0]["mapped_blocks"] * 4096 == 1 << 20 and v[0]["size"] == 128 << 20, v
'
ok --json stats
py 'import json, sys; r = json.load(sys.stdin); assert r["stats"]["pool_bytes"] > 0 and len(r["volumes"]) == 3, r'
ok stats other
grep -Eq '^other +8.0M +0 +0 +0 +0$' "$T/out" || fail "stats other: $(cat "$T/out")"
echo "ok: pool status and stats"

# --- compact --wait ------------------------------------------------------------
# Half of every segment of a 32 MiB write dies: compaction has work.
ok volume create churn 64M
/usr/bin/python3 - "$PORT" <<'PY' || fail "churn writes"
import nbd, sys
h = nbd.NBD(); h.set_export_name("churn"); h.connect_tcp("127.0.0.1", sys.argv[1])
for off in range(0, 32 << 20, 1 << 20):
    h.pwrite(b"a" * (1 << 20), off)
for off in range(0, 32 << 20, 128 << 10):
    h.pwrite(b"b" * (64 << 10), off)
h.flush(); h.shutdown()
PY
ok checkpoint
ok --json pool status
before=$(/usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["pool"]["segments_free"])' <"$T/out")
cowctl --json compact --wait >"$T/out" 2>"$T/err" || fail "compact --wait: $(cat "$T/err")"
[ ! -s "$T/err" ] || fail "compact --wait, piped: no progress line wanted, got $(cat "$T/err")"
py '
import json, sys
c = json.load(sys.stdin)["compact"]
assert c["passes"] >= 2 and c["blocks_moved"] > 0 and c["segments_freed"] > 0, c
'
ok --json pool status
py "import json, sys; p = json.load(sys.stdin)['pool']; assert p['segments_free'] > $before and p['compactor']['passes'] > 0, p"
ok compact
grep -Eq '^compacted: 1 pass, 0 blocks moved' "$T/out" || fail "compact: $(cat "$T/out")"
/usr/bin/python3 - "$PORT" <<'PY' || fail "churn data after compaction"
import nbd, sys
h = nbd.NBD(); h.set_export_name("churn"); h.connect_tcp("127.0.0.1", sys.argv[1])
want = (b"b" * (64 << 10) + b"a" * (64 << 10)) * 8
for off in range(0, 32 << 20, 1 << 20):
    assert h.pread(1 << 20, off) == want, off
h.shutdown()
PY
echo "ok: compact --wait moved blocks and freed segments"

# --- clients --------------------------------------------------------------------
ok --json clients
py "import json, sys; assert json.load(sys.stdin)['clients'] == [], 'no client is connected'"
client vm2 "put 0 65536 1" "get 0 65536 1" "cowctl =0 --json clients"
/usr/bin/python3 -c '
import json, sys, time
t = open(sys.argv[1]).read()
c = json.loads(t[t.index("{"):])["clients"]
assert len(c) == 1, c
x = c[0]
assert x["export"] == "vm2" and x["tls"] is False and x["peer"].startswith("127.0.0.1:"), x
assert x["bytes_written"] == 65536 and x["bytes_read"] == 65536, x
assert x["loop"] == 0, x  # the only connection: on the loop with the fewest, the first
assert abs(x["since"] - time.time()) < 600, x
' "$T/nbd.out" || fail "clients: $(cat "$T/nbd.out")"
echo "ok: clients lists the open connection with its export, peer and bytes"

# --- bash completion (dist/bash-completion/cowctl) -------------------------------
. "$TOP/dist/bash-completion/cowctl"
complete_words() { # WORDS...: what completing the last one offers, sorted
	COMP_WORDS=("$@")
	COMP_CWORD=$(($# - 1))
	COMPREPLY=()
	_cowctl
	printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' '
}
[ "$(complete_words cowctl vol)" = "volume " ] || fail "completion: commands: $(complete_words cowctl vol)"
[ "$(complete_words cowctl volume re)" = "rename resize " ] || fail "completion: volume re"
[ "$(complete_words cowctl volume resize "")" = "churn other vm2 " ] ||
	fail "completion: volume names from the daemon: $(complete_words cowctl volume resize "")"
[ "$(complete_words cowctl --control "$CTL" snapshot delete "")" = "vm2@s1 " ] ||
	fail "completion: snapshot names: $(complete_words cowctl --control "$CTL" snapshot delete "")"
[ "$(complete_words cowctl snapshot create v)" = "vm2@ " ] || fail "completion: snapshot create"
[ "$(complete_words cowctl volume resize --sh)" = "--shrink " ] || fail "completion: --shrink"
[ "$(complete_words cowctl compact --w)" = "--wait " ] || fail "completion: compact --wait"
echo "ok: bash completion (commands, options, names from the daemon)"

cowbd_stop
check_pool "after resizes, renames and compaction"
echo "cowctl_ops: all checks passed"
