#!/bin/bash
# cowctl_diff.sh — `cowctl diff FROM [TO]` (issue 11): the byte ranges that
# changed between two points of a volume's history, read from the trees.
# vol0 gets known writes, a trim and snapshots s1 and s2 between them; each
# diff must equal exactly what the test wrote (merged, sorted, trimmed ranges
# marked zero), against a snapshot, against the live volume, across a clone
# and its origin, in --json too; unrelated volumes, missing names and bad
# arguments are refused with one line and nothing changes.  The extents are
# also checked against a byte comparison of the two points over NBD.
. "$(dirname "$0")/lib.sh"
requires nbdsh /usr/bin/python3
K=1024 M=$((1024 * 1024))
cowbd_start
ok volume create vol0 64M
ok volume create other 64M

io() { # URI OP OFF LEN [BYTE]: write (a byte pattern), trim or zero through NBD
	/usr/bin/python3 - "$@" <<'PY' || fail "nbd $*"
import sys, nbd
uri, op, off, ln = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
h = nbd.NBD(); h.connect_uri(uri)
if op == "write":
    h.pwrite(bytes([int(sys.argv[5])]) * ln, off)
elif op == "trim":
    h.trim(ln, off)
else:
    h.zero(ln, off)
h.flush(); h.shutdown()
PY
}
diff_is() { # WANT FROM [TO]: WANT is "OFF:LEN:data|zero ..." in bytes
	local want=$1
	shift
	cowctl --json diff "$@" >"$T/diff.json" 2>"$T/err" || fail "diff $*: $(cat "$T/err")"
	/usr/bin/python3 - "$T/diff.json" "$want" <<'PY' || fail "diff $*: $(cat "$T/diff.json")"
import json, sys
got = [(e["offset"], e["length"], "zero" if e["zero"] else "data")
       for e in json.load(open(sys.argv[1]))]
want = [(int(o), int(l), t) for o, l, t in (w.split(":") for w in sys.argv[2].split())]
assert got == want, (got, want)
PY
}

io "$(uri vol0)" write 0 $((4 * M)) 1
io "$(uri vol0)" write $((32 * M)) $M 2
ok snapshot create vol0@s1
io "$(uri vol0)" write $((64 * K)) $((64 * K)) 3 # inside the first 4 MiB
io "$(uri vol0)" write $((8 * M)) $((128 * K)) 4 # fresh space
io "$(uri vol0)" trim $((32 * M)) $((512 * K)) # half of what s1 holds there
ok snapshot create vol0@s2
io "$(uri vol0)" write $((8 * M + 128 * K)) $((128 * K)) 5 # touches the 8 MiB extent

diff_is "$((64 * K)):$((64 * K)):data $((8 * M)):$((128 * K)):data $((32 * M)):$((512 * K)):zero" \
	vol0@s1 vol0@s2
echo "ok: s1 → s2: the overwrite, the fresh write, the trim as zero"
diff_is "$((64 * K)):$((64 * K)):data $((8 * M)):$((256 * K)):data $((32 * M)):$((512 * K)):zero" \
	vol0@s1
diff_is "$((64 * K)):$((64 * K)):data $((8 * M)):$((256 * K)):data $((32 * M)):$((512 * K)):zero" \
	vol0@s1 vol0
diff_is "$((8 * M + 128 * K)):$((128 * K)):data" vol0@s2
diff_is "" vol0@s2 vol0@s2
echo "ok: against the live volume (TO left out or named), merged extents, an empty diff"
# Backwards (the later point first): the same ranges; what s1 has and s2
# lacks is data in s1, what s2 wrote anew over s1's holes reads zero in s1.
diff_is "$((64 * K)):$((64 * K)):data $((8 * M)):$((128 * K)):zero $((32 * M)):$((512 * K)):data" \
	vol0@s2 vol0@s1
echo "ok: backwards, holes of the earlier point are zero"

ok clone vol0@s1 c1
io "$(uri c1)" write $((16 * M)) $((4 * K)) 6
diff_is "$((16 * M)):$((4 * K)):data" vol0@s1 c1
diff_is "$((16 * M)):$((4 * K)):data" vol0@s1 c1 # again: nothing moved
echo "ok: a clone against its origin snapshot"

# Byte comparison: every 4 KiB block of s1 and the live volume differs
# exactly inside the reported data extents (zero extents read as zeroes).
cowctl --json diff vol0@s1 >"$T/diff.json" || fail "diff vol0@s1"
/usr/bin/python3 - "$(uri vol0@s1)" "$(uri vol0)" "$T/diff.json" <<'PY' || fail "byte comparison"
import json, subprocess, sys, nbd
a = nbd.NBD(); a.connect_uri(sys.argv[1]); b = nbd.NBD(); b.connect_uri(sys.argv[2])
size = a.get_size()
ext = [(e["offset"], e["length"], e["zero"]) for e in json.load(open(sys.argv[3]))]
step = 4 << 20
for off in range(0, size, step):
    x, y = a.pread(step, off), b.pread(step, off)
    for blk in range(0, step, 4096):
        o = off + blk
        inside = [e for e in ext if e[0] <= o < e[0] + e[1]]
        if x[blk:blk + 4096] != y[blk:blk + 4096]:
            assert inside, "changed block %d not reported" % o
        if inside and inside[0][2]:
            assert y[blk:blk + 4096] == bytes(4096), "zero extent %d reads data" % o
PY
echo "ok: reported extents match a byte comparison (no changed block missed)"

human=$(cowctl diff vol0@s1 vol0@s2) || fail "human diff"
grep -q "^3 extents, 704K changed (512K of it zeroed)$" <<<"$human" ||
	fail "human summary: $human"
grep -Eq "^$((32 * M)) +$((512 * K)) +zero$" <<<"$human" || fail "human line: $human"
echo "ok: the human listing"

refused() { # WHAT EXIT PATTERN CMD...
	local what=$1 want=$2 pat=$3
	shift 3
	cowctl "$@" >"$T/out" 2>&1
	local rc=$?
	[ $rc -eq "$want" ] && grep -q "$pat" "$T/out" || fail "$what: exit $rc: $(cat "$T/out")"
}
refused "unrelated volumes" 1 "share no history" diff vol0@s1 other
refused "a missing snapshot" 1 'no volume or snapshot "vol0@nope"' diff vol0@nope vol0
refused "a bad name" 2 "invalid" diff "../x"
refused "no arguments" 2 "diff needs" diff
refused "three arguments" 2 "" diff vol0 vol0 vol0
ok snapshot list vol0
grep -q "vol0@s2" "$T/out" || fail "a refused diff changed something"
echo "ok: refusals"
cowbd_stop
check_pool "after the diffs"
