#!/bin/bash
# Paged listings (docs/CONTROL.md, "Paged lists"): thousands of snapshots
# listed in small pages, every entry exactly once and in id order, through
# the socket and through cowctl's streamed table and --json; the same list
# again while another client creates snapshots and deletes some of those
# not yet reached (every snapshot that exists for the whole walk is seen
# exactly once, none twice); volume pages with their snapshot counts; old
# requests without a cursor answered as before; bad cursors, page sizes and
# figures refused with one clear line.  N (default 2400) snapshots.
. "$(dirname "$0")/lib.sh"
requires /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] || fail "build/cowbd or build/cowctl missing"
N=${N:-2400}

cat >"$T/page.py" <<'PY'
"""The socket side of cowctl_paging.sh: ask CMD ... (see the test)."""
import json, random, socket, sys

CTL = sys.argv[1]


class Conn:
    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(CTL)
        self.f = self.s.makefile("rb")

    def ask(self, **req):
        self.s.sendall((json.dumps(req) + "\n").encode())
        return json.loads(self.f.readline())

    def many(self, reqs):
        """Pipelined: send all, then read the replies in order."""
        self.s.sendall("".join(json.dumps(r) + "\n" for r in reqs).encode())
        return [json.loads(self.f.readline()) for _ in reqs]


def short(x):
    """x for a failure message, cut to 300 characters."""
    s = repr(x)
    return s if len(s) <= 300 else s[:300] + "..."


def ok(r):
    assert r.get("ok") is True, short(r)
    return r


def walk(c, op, key, limit, **extra):
    """Every page of a listing: the entries, checked for a sane cursor."""
    out, after, pages = [], 0, 0
    while True:
        r = ok(c.ask(op=op, after=after, limit=limit, **extra))
        page = r[key]
        pages += 1
        assert len(page) <= limit, (len(page), limit)
        out += page
        if r["next"] is None:
            return out, pages
        assert page and r["next"] == page[-1]["id"] and r["next"] > after, short(r)
        after = r["next"]


def once_in_order(entries, what):
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids), "%s: not in id order" % what
    assert len(set(ids)) == len(ids), "%s: an entry listed twice" % what
    names = [e["name"] for e in entries]
    assert len(set(names)) == len(names), "%s: a name listed twice" % what


def populate(n):
    """Volume v with n snapshots s1..sn, every tenth one a doomed d<i>
    (deleted by churn later), w with two, and a clone of v@s1."""
    c = Conn()
    ok(c.ask(op="volume.create", name="v", size=1 << 26))
    ok(c.ask(op="volume.create", name="w", size=1 << 26))
    names = ["v@%s%d" % ("d" if i % 10 == 5 else "s", i) for i in range(1, n + 1)]
    for i in range(0, len(names), 200):
        for r in c.many([{"op": "snapshot.create", "name": x} for x in names[i:i + 200]]):
            ok(r)
    ok(c.ask(op="snapshot.create", name="w@a"))
    ok(c.ask(op="snapshot.create", name="w@b"))
    ok(c.ask(op="clone", snapshot="v@s1", name="cl"))
    json.dump(names, open(sys.argv[3], "w"))


def lists(n):
    c = Conn()
    names = json.load(open(sys.argv[3]))
    snaps, pages = walk(c, "snapshot.list", "snapshots", 7, volume="v")
    once_in_order(snaps, "snapshots of v")
    assert [e["name"] for e in snaps] == names, "snapshots of v: not every one, in order"
    assert pages == (n + 6) // 7, pages
    assert all("unique" not in e and e["used"] == 0 for e in snaps), short(snaps[0])
    every, _ = walk(c, "snapshot.list", "snapshots", 13)
    once_in_order(every, "all snapshots")
    assert [e["name"] for e in every] == names + ["w@a", "w@b"], "all snapshots"
    fig, _ = walk(c, "snapshot.list", "snapshots", 500, volume="w", figures=True)
    assert [(e["name"], e["used"], e["unique"]) for e in fig] == [("w@a", 0, 0), ("w@b", 0, 0)]
    vols, pages = walk(c, "volume.list", "volumes", 1)
    assert [(e["name"], e["snapshot_count"], e["origin"]) for e in vols] == [
        ("v", n, None), ("w", 2, None), ("cl", 0, "v@s1")], short(vols)
    assert pages == 3 and all("snapshots" not in e for e in vols)
    # the old form, no cursor: everything at once, as before
    old = ok(c.ask(op="snapshot.list", volume="v"))
    assert "next" not in old and [e["name"] for e in old["snapshots"]] == names
    assert all("used" in e for e in old["snapshots"])
    old = ok(c.ask(op="volume.list"))
    assert [len(e["snapshots"]) for e in old["volumes"]] == [n, 2, 0]
    # a cursor past every id: an empty last page
    r = ok(c.ask(op="snapshot.list", after=4294967295))
    assert r["snapshots"] == [] and r["next"] is None, short(r)
    info = ok(c.ask(op="volume.info", name="v"))["volume"]
    assert info["snapshots"] == names, "volume.info lists every snapshot"
    assert ok(c.ask(op="volume.info", name="v@s1"))["volume"]["clones"] == ["cl"]
    pool = ok(c.ask(op="pool.status"))["pool"]
    assert (pool["volumes"], pool["snapshots"]) == (3, n + 2), short(pool)
    print("ok: %d snapshots in pages of 7, 13 and 500, volumes in pages of 1" % n)


def churn():
    """Delete the doomed snapshots in random order and create new ones,
    until the file named by argv[3] appears; counts in argv[4] (and
    argv[4].started once the first delete is done)."""
    import os
    c = Conn()
    names = json.load(open(sys.argv[5]))
    doomed = [x for x in names if "@d" in x]
    random.shuffle(doomed)
    made = 0
    while not os.path.exists(sys.argv[3]) or doomed:
        if doomed:
            ok(c.ask(op="snapshot.delete", name=doomed.pop()))
        if made == 0:
            open(sys.argv[4] + ".started", "w").close()
        made += 1
        ok(c.ask(op="snapshot.create", name="v@new%d" % made))
        if made > 1 and (made - 1) % 3:  # keep one in three
            ok(c.ask(op="snapshot.delete", name="v@new%d" % (made - 1)))
    open(sys.argv[4], "w").write("%d\n" % made)


def churn_walk():
    """Walk v's snapshots in pages of 5 while churn runs; then check."""
    c = Conn()
    names = json.load(open(sys.argv[3]))
    seen, _ = walk(c, "snapshot.list", "snapshots", 5, volume="v")
    once_in_order(seen, "snapshots of v under churn")
    got = [e["name"] for e in seen]
    stable = [x for x in names if "@s" in x]
    assert [x for x in got if x in set(stable)] == stable, "a stable snapshot missed"
    print("ok: %d stable snapshots seen once each among %d listed while churn ran"
          % (len(stable), len(got)))


def adversary():
    """A walk of x's 400 snapshots in pages of 4 in lockstep with a second
    client that, after each page, deletes the page's last entry (the
    cursor's own), one already listed and one not yet, and creates one:
    every snapshot never deleted is seen once, in order, none twice."""
    c, other = Conn(), Conn()
    ok(c.ask(op="volume.create", name="x", size=1 << 20))
    for r in c.many([{"op": "snapshot.create", "name": "x@k%d" % i} for i in range(1, 401)]):
        ok(r)
    rnd = random.Random(int(sys.argv[3]))
    alive = ["x@k%d" % i for i in range(1, 401)]
    deleted, got, after, made = set(), [], 0, 0
    while True:
        r = ok(c.ask(op="snapshot.list", volume="x", after=after, limit=4))
        got += [e["name"] for e in r["snapshots"]]
        if r["next"] is None:
            break
        after = r["next"]
        listed = set(got)
        behind = [x for x in alive if x in listed]
        ahead = [x for x in alive if x not in listed]
        doomed = {r["snapshots"][-1]["name"], rnd.choice(behind)}
        if ahead:
            doomed.add(rnd.choice(ahead))
        for x in doomed:
            ok(other.ask(op="snapshot.delete", name=x))
            alive.remove(x)
            deleted.add(x)
        made += 1
        ok(other.ask(op="snapshot.create", name="x@n%d" % made))
        alive.append("x@n%d" % made)
    assert len(set(got)) == len(got), "an entry listed twice"
    stable = ["x@k%d" % i for i in range(1, 401) if "x@k%d" % i not in deleted]
    assert [x for x in got if x in set(stable)] == stable, "a stable snapshot missed"
    print("ok: %d snapshots never deleted seen once each while %d were deleted around the "
          "cursor and %d created" % (len(stable), len(deleted), made))


def bad():
    c = Conn()
    cases = [
        ({"after": -1}, "\"after\" is the id the previous page ended with"),
        ({"after": "7"}, "\"after\" is the id"),
        ({"after": 1.5}, "\"after\" is the id"),
        ({"after": 4294967296}, "an integer from 0 to 4294967295"),
        ({"limit": 0}, "\"limit\" is entries per page, an integer from 1 to 10000"),
        ({"limit": 10001}, "an integer from 1 to 10000"),
        ({"limit": "5"}, "\"limit\" is entries per page"),
        ({"limit": 5, "figures": "yes"}, "\"figures\" is true or false"),
    ]
    for op in ("volume.list", "snapshot.list"):
        for extra, msg in cases:
            r = c.ask(op=op, **extra)
            assert r["ok"] is False and r["errno"] == "EINVAL", (op, extra, r)
            assert r["error"].startswith(op + ": ") and msg in r["error"], r
    r = c.ask(op="snapshot.list", volume="nope", limit=5)
    assert r["errno"] == "ENOENT" and r["error"] == 'no volume "nope"', r
    r = c.ask(op="snapshot.list", volume="v@s1", limit=5)
    assert r["errno"] == "EINVAL" and "that is a snapshot name" in r["error"], r
    print("ok: bad cursors, page sizes and figures refused")


{"populate": lambda: populate(int(sys.argv[4])), "lists": lambda: lists(int(sys.argv[4])),
 "churn": churn, "churn_walk": churn_walk, "adversary": adversary,
 "bad": bad}[sys.argv[2]]()
PY
page() { /usr/bin/python3 "$T/page.py" "$CTL" "$@"; }

cowbd_start
start=$(date +%s.%N)
page populate "$T/names.json" "$N" || fail "populate"
echo "ok: $N snapshots created in $(echo "$(date +%s.%N) - $start" | bc) s"
page lists "$T/names.json" "$N" || fail "paged lists"
page bad || fail "bad requests"

# --- cowctl streams: pages of 50, one header, every snapshot once ----------
ok snapshot list v --page-size 50
[ "$(grep -c '^NAME ' "$T/out")" -eq 1 ] || fail "snapshot list: header count: $(head -3 "$T/out")"
tail -n +2 "$T/out" | awk '{print $1}' >"$T/got"
/usr/bin/python3 -c '
import json, sys
want = json.load(open(sys.argv[1]))
got = open(sys.argv[2]).read().split()
assert got == want, "cowctl snapshot list: %d names, want %d, first difference at %s" % (
    len(got), len(want), next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None))
' "$T/names.json" "$T/got" || fail "cowctl snapshot list"
# a page is one aligned table (later pages only widen a column)
awk 'NR >= 2 && NR <= 51 { w[length($0)]++ } END { for (k in w) n++; exit n != 1 }' "$T/out" ||
	fail "snapshot list: first page not aligned: $(head -3 "$T/out")"
ok --json snapshot list v --page-size 50
/usr/bin/python3 -c '
import json, sys
r = json.load(open(sys.argv[2]))
want = json.load(open(sys.argv[1]))
assert list(r) == ["ok", "snapshots"] and r["ok"] is True
assert [e["name"] for e in r["snapshots"]] == want
assert all(e["used"] == 0 and e["unique"] == 0 and e["volume"] == "v" for e in r["snapshots"])
' "$T/names.json" "$T/out" || fail "cowctl --json snapshot list: $(head -c 300 "$T/out")"
ok --json volume list --page-size 1
/usr/bin/python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
assert [(v["name"], v["snapshot_count"]) for v in r["volumes"]] == [("v", int(sys.argv[2])), ("w", 2), ("cl", 0)], r
' "$T/out" "$N" || fail "cowctl --json volume list: $(head -c 300 "$T/out")"
ok --json snapshot list cl
[ "$(tr -d ' \n' <"$T/out")" = '{"ok":true,"snapshots":[]}' ] || fail "empty --json list: $(cat "$T/out")"
ok snapshot list cl
[ "$(cat "$T/out")" = "NAME  SIZE  USED  UNIQUE  CREATED  ATTACHED" ] || fail "empty list: $(cat "$T/out")"
echo "ok: cowctl snapshot list and volume list stream in pages, table and --json"

# --- paging while snapshots come and go -----------------------------------
seed_init
page adversary "$SEED" || fail "paging against deletes around the cursor"
page churn "$T/stop" "$T/made" "$T/names.json" &
churn_pid=$!
for _ in $(seq 1 200); do [ -e "$T/made.started" ] && break; sleep 0.05; done
[ -e "$T/made.started" ] || fail "churn did not start"
page churn_walk "$T/names.json" >"$T/walk.out" 2>&1
walk_rc=$?
# and cowctl under the same churn: every stable snapshot once
cowctl snapshot list v --page-size 3 >"$T/out" 2>"$T/err"
list_rc=$?
touch "$T/stop"
wait $churn_pid || fail "churn failed"
[ $walk_rc -eq 0 ] || fail "listing under churn: $(cat "$T/walk.out")"
cat "$T/walk.out"
[ $list_rc -eq 0 ] || fail "cowctl snapshot list under churn: $(cat "$T/err")"
tail -n +2 "$T/out" | awk '{print $1}' >"$T/got"
/usr/bin/python3 -c '
import json, sys
stable = [x for x in json.load(open(sys.argv[1])) if "@s" in x]
got = open(sys.argv[2]).read().split()
assert len(set(got)) == len(got), "cowctl listed a snapshot twice"
assert [x for x in got if x in set(stable)] == stable, "cowctl missed a stable snapshot"
' "$T/names.json" "$T/got" || fail "cowctl snapshot list under churn"
echo "ok: cowctl listed every stable snapshot once while $(cat "$T/made") were created"

# --- cowctl's own checks ------------------------------------------------------
expect_usage() {
	local pat=$1
	shift
	cowctl "$@" >"$T/out" 2>"$T/err"
	[ $? -eq 2 ] && [ ! -s "$T/out" ] && [ "$(wc -l <"$T/err")" -eq 1 ] &&
		grep -q "^cowctl: $pat" "$T/err" || fail "cowctl $*: $(cat "$T/err")"
	echo "ok (exit 2): cowctl $* -> $(cat "$T/err")"
}
expect_usage 'invalid page size "0" (entries, 1 to 10000)' snapshot list --page-size 0
expect_usage 'invalid page size "10001"' volume list --page-size 10001
expect_usage 'invalid page size "x"' volume list --page-size x
expect_usage '--page-size is an option of volume list and snapshot list' volume info v --page-size 5
expect_usage '--page-size is an option of volume list and snapshot list' --page-size 5 stats
cowctl snapshot list nope --page-size 5 >"$T/out" 2>"$T/err"
[ $? -eq 1 ] && [ "$(cat "$T/err")" = 'cowctl: no volume "nope"' ] || fail "list of no volume: $(cat "$T/err")"
echo "cowctl_paging: all checks passed"
