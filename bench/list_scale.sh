#!/bin/bash
# bench/list_scale.sh — snapshot create latency and paged listing cost as the
# number of snapshots grows (issue 13 step 5, docs/CONTROL.md "Paged lists").
#
#   bash bench/list_scale.sh [BUILD] [LEVELS] [REPS]
#
# A fresh 1 GiB pool in a temporary directory, one 1 GiB volume "v" with
# 64 MiB written (so the snapshots share a real tree).  For each level in
# LEVELS (default "10 1000 4000": snapshots in the pool) it fills up to the
# level with pipelined snapshot.create requests, then times REPS (default
# 50) more, each deleted again after (so each finds exactly the level), on
# a fresh connection as cowctl does, from connect() to the reply
# (bench/ctl_time.py's method), and prints min / median / p90 / max in ms.
# At the last level: a paged walk at the socket without and with figures,
# then `cowctl snapshot list v` (text, --json, one page of 10000) timed
# with cowctl's peak RSS and cowbd's RSS, then one unpaged snapshot.list
# request (the old form).  The pool lives in TMPDIR (default /tmp): its
# filesystem decides what a sync costs.
# Everything it starts is stopped on exit.
set -u
export PATH="/usr/bin:$PATH" # nbdsh needs the Debian python (libnbd)
BUILD=${1:-$(cd "$(dirname "$0")/.." && pwd)/build}
LEVELS=${2:-"10 1000 4000"}
REPS=${3:-50}
PY=/usr/bin/python3
W=$(mktemp -d "${TMPDIR:-/tmp}/cowbd-list.XXXXXX")
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$W"' EXIT
CTL="$W/ctl.sock"
PORT=$((20000 + RANDOM % 10000))

"$BUILD/cowbd" --pool "$W/pool" --create 1G --listen "127.0.0.1:$PORT" --control "$CTL" \
	--foreground >"$W/cowbd.log" 2>&1 &
PID=$!
for _ in $(seq 1 200); do [ -S "$CTL" ] && break; sleep 0.05; done
[ -S "$CTL" ] || { echo "cowbd did not start: $(tail -3 "$W/cowbd.log")" >&2; exit 1; }
"$BUILD/cowctl" --control "$CTL" volume create v 1G >/dev/null || exit 1
nbdsh -u "nbd://127.0.0.1:$PORT/v" -c "
for i in range(64): h.pwrite(bytes([i % 251 + 1]) * (1 << 20), i << 20)
h.flush()" || exit 1

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }

"$PY" - "$(dirname "$0")" "$CTL" "$REPS" $LEVELS <<'PY' || exit 1
import json, socket, statistics, sys, time

sys.path.insert(0, sys.argv[1])
from ctl_time import request  # noqa: E402 (a fresh connection per request, as cowctl)

ctl, reps, levels = sys.argv[2], int(sys.argv[3]), [int(x) for x in sys.argv[4:]]


def one(req):
    ms, status = request(ctl, req)
    assert status == "ok", status
    return ms


s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(ctl)
f = s.makefile("rb")
have = 0
for level in levels:
    fill = ["v@f%d" % i for i in range(have + 1, max(have, level) + 1)]
    for i in range(0, len(fill), 200):
        part = fill[i:i + 200]
        s.sendall("".join(json.dumps({"op": "snapshot.create", "name": x}) + "\n"
                          for x in part).encode())
        for _ in part:
            assert json.loads(f.readline())["ok"]
    have += len(fill)
    ms = []
    for i in range(reps):  # each at exactly `level` snapshots: deleted again
        ms.append(one({"op": "snapshot.create", "name": "v@t%d" % i}))
        s.sendall((json.dumps({"op": "snapshot.delete", "name": "v@t%d" % i}) + "\n").encode())
        assert json.loads(f.readline())["ok"]
    ms.sort()
    print("snapshot.create with %5d snapshots in the pool: min %.2f median %.2f p90 %.2f "
          "max %.2f ms" % (have, ms[0], statistics.median(ms), ms[int(len(ms) * 0.9)], ms[-1]))
for figures in (False, True):
    t0, after, n = time.perf_counter_ns(), 0, 0
    while after is not None:
        s.sendall((json.dumps({"op": "snapshot.list", "volume": "v", "after": after,
                               "limit": 1000, "figures": figures}) + "\n").encode())
        r = json.loads(f.readline())
        n, after = n + len(r["snapshots"]), r["next"]
    print("paged snapshot.list at the socket, pages of 1000, figures %s: %d entries in %.1f ms"
          % (str(figures).lower(), n, (time.perf_counter_ns() - t0) / 1e6))
PY

before=$(rss_kib)
t0=$(date +%s%N)
/usr/bin/time -f "%M" -o "$W/time" "$BUILD/cowctl" --control "$CTL" snapshot list v >"$W/list" ||
	exit 1
t1=$(date +%s%N)
echo "cowctl snapshot list v: $(($(wc -l <"$W/list") - 1)) rows in $(((t1 - t0) / 1000000)) ms;" \
	"cowctl peak RSS $(cat "$W/time") KiB; cowbd RSS $before -> $(rss_kib) KiB"
t0=$(date +%s%N)
/usr/bin/time -f "%M" -o "$W/time" "$BUILD/cowctl" --control "$CTL" --json snapshot list v \
	>"$W/list" || exit 1
t1=$(date +%s%N)
echo "cowctl --json snapshot list v: $(wc -c <"$W/list") bytes in $(((t1 - t0) / 1000000)) ms;" \
	"cowctl peak RSS $(cat "$W/time") KiB; cowbd RSS $(rss_kib) KiB"
t0=$(date +%s%N)
/usr/bin/time -f "%M" -o "$W/time" "$BUILD/cowctl" --control "$CTL" snapshot list v \
	--page-size 10000 >"$W/list" || exit 1
t1=$(date +%s%N)
echo "cowctl snapshot list v --page-size 10000 (one page): $(((t1 - t0) / 1000000)) ms;" \
	"cowctl peak RSS $(cat "$W/time") KiB; cowbd RSS $(rss_kib) KiB"
before=$(rss_kib)
t0=$(date +%s%N)
"$PY" -c '
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b"{\"op\":\"snapshot.list\",\"volume\":\"v\"}\n")
buf = b""
while not buf.endswith(b"\n"):
    buf += s.recv(1 << 20)
print(len(json.loads(buf)["snapshots"]), len(buf))' "$CTL" >"$W/old" || exit 1
t1=$(date +%s%N)
echo "unpaged snapshot.list (the old form): $(cut -d' ' -f1 "$W/old") entries," \
	"$(cut -d' ' -f2 "$W/old") bytes in one reply, $(((t1 - t0) / 1000000)) ms;" \
	"cowbd RSS $before -> $(rss_kib) KiB"
