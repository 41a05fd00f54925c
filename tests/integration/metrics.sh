#!/usr/bin/env bash
# metrics.sh — `cowbd --metrics`: the Prometheus endpoint counts exactly
# the I/O done (ops and bytes per command per volume, snapshots too, each
# latency histogram's count equal to its ops, cumulative buckets), gives
# per-volume series only to records with I/O since start or attached now
# (an idle snapshot has none, an attached idle volume has them until it is
# detached), its pool gauges agree with `cowctl --json stats` and count
# the idle records too, the connection counters follow clients (open now,
# accepted, refused over --max-connections, and per event loop with two
# loops: one client on each), every other path is 404 and
# other methods 405, the page passes `promtool check metrics`, a bad
# --metrics address is refused with one line, and with 20,000 snapshots
# (pipelined through the control socket) the page stays under 200 KB and
# is served well under a second.
. "$(dirname "$0")/lib.sh"
requires curl /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "requires python3-libnbd"; exit 77; }

MPORT=$(random_port)
POOL_SIZE=1G cowbd_start --metrics "127.0.0.1:$MPORT" --max-connections 2 --loop-threads 2
grep -q "metrics at http://127.0.0.1:$MPORT/metrics" "$LOG" || fail "no 'metrics at' line in the log"
ok volume create vol0 64M
ok snapshot create vol0@s1
ok snapshot create vol0@s2 # never read: no series
ok volume create vol1 16M  # only attached, never any I/O

scrape() { # FILE: the page, which must be served as text format 0.0.4
	curl -sf -D "$T/headers" -o "$1" "http://127.0.0.1:$MPORT/metrics" || fail "scrape failed"
	grep -qi '^content-type: text/plain; version=0.0.4' "$T/headers" ||
		fail "content type: $(grep -i content-type "$T/headers")"
}

cat >"$T/metrics.py" <<'PY'
# metrics.py io PORT EXPECT | check BEFORE AFTER EXPECT | hold PORT STATEDIR
#   | gauges PAGE STATS1 STATS2 POOL1 POOL2 | field PAGE NAME | series PAGE VOLUME
#   | snaps CTL VOL N
import json, os, re, sys, time

def parse(path):
    """The samples of a text-format page: {(name, ((label, value), ...)): float}."""
    out = {}
    for line in open(path):
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if not m:
            sys.exit("unparsable line: %r" % line)
        labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out

def get(page, name, **labels):
    return page.get((name, tuple(sorted(labels.items()))), 0.0)

def io(port, expect_path):
    """Known I/O on vol0 and vol0@s1; EXPECT gets {volume: {op: [ops, bytes]}}."""
    import nbd
    M = 1 << 20
    exp = {}
    def count(vol, op, n):
        e = exp.setdefault(vol, {}).setdefault(op, [0, 0])
        e[0] += 1
        e[1] += n
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.set_export_name("vol0")
    h.connect_tcp("127.0.0.1", port)
    for off, n in [(0, 4096), (65536, 8192), (10000, 1000)]:
        h.pwrite(b"w" * n, off)
        count("vol0", "write", n)
    h.pwrite(b"f" * 4096, 262144, nbd.CMD_FLAG_FUA)
    count("vol0", "write", 4096)
    count("pool", "fua", 0)
    # a page-cache hit, unaligned, a 1 MiB hole (tried on the loop
    # thread) and 2 MiB (the reader threads)
    for off, n in [(0, 4096), (65536, 8192), (10000, 100), (M, M), (0, 2 * M)]:
        h.pread(n, off)
        count("vol0", "read", n)
    for _ in range(3):
        h.flush()
        count("vol0", "flush", 0)
        count("pool", "flush", 0)
    h.trim(8192, 65536)
    count("vol0", "trim", 8192)
    h.trim(4096, 98304, nbd.CMD_FLAG_FUA)
    count("vol0", "trim", 4096)
    count("pool", "fua", 0)
    for off, n in [(131072, 12288), (0, 4096)]:
        h.zero(n, off)
        count("vol0", "zero", n)
    if h.can_cache():
        h.cache(4096, 0)  # answered by proto: never reaches the store, no series
    for off, n in [(0, 65536), (M, M)]:
        h.block_status(n, off, lambda *a: 0)
        count("vol0", "block_status", n)
    h.shutdown()
    s = nbd.NBD()
    s.set_export_name("vol0@s1")
    s.connect_tcp("127.0.0.1", port)
    for off, n in [(0, 4096), (8 * M, 65536)]:
        s.pread(n, off)
        count("vol0@s1", "read", n)
    s.shutdown()
    json.dump(exp, open(expect_path, "w"))

TIMED = ("read", "write", "flush")
OPS = ("read", "write", "trim", "zero", "flush", "block_status")

def check(before, after, expect_path):
    a, b = parse(before), parse(after)
    exp = json.load(open(expect_path))
    for vol in ("vol0", "vol0@s1"):
        for op in OPS:
            want = exp.get(vol, {}).get(op, [0, 0])
            for i, name in enumerate(("cowbd_volume_ops_total", "cowbd_volume_bytes_total")):
                d = get(b, name, volume=vol, op=op) - get(a, name, volume=vol, op=op)
                if d != want[i]:
                    sys.exit("%s{volume=%s,op=%s} moved by %d, want %d" % (name, vol, op, d, want[i]))
            if ("cowbd_volume_ops_total", (("op", op), ("volume", vol))) not in b:
                sys.exit("no cowbd_volume_ops_total series for %s %s" % (vol, op))
            if get(b, "cowbd_volume_errors_total", volume=vol, op=op):
                sys.exit("errors counted for %s %s" % (vol, op))
            if op not in TIMED:
                continue
            h = "cowbd_volume_request_duration_seconds"
            ops = get(b, "cowbd_volume_ops_total", volume=vol, op=op)
            cnt = get(b, h + "_count", volume=vol, op=op)
            if cnt != ops:
                sys.exit("%s_count{%s,%s} = %d, ops %d" % (h, vol, op, cnt, ops))
            buckets = sorted((float(dict(l)["le"]), v) for (n, l), v in b.items()
                             if n == h + "_bucket" and dict(l)["volume"] == vol and dict(l)["op"] == op)
            if len(buckets) != 15 or buckets[-1] != (float("inf"), cnt):
                sys.exit("%s buckets of %s %s: %s" % (h, vol, op, buckets))
            if any(buckets[i][1] > buckets[i + 1][1] for i in range(len(buckets) - 1)):
                sys.exit("%s buckets not cumulative: %s" % (h, buckets))
            if cnt and not get(b, h + "_sum", volume=vol, op=op) > 0:
                sys.exit("%s_sum of %s %s is not positive" % (h, vol, op))
    # the pool's FLUSH and FUA counters: exactly the requests sent
    for op, name in (("flush", "cowbd_flush_requests_total"), ("fua", "cowbd_fua_requests_total")):
        want = exp["pool"][op][0]
        if get(b, name) - get(a, name) != want:
            sys.exit("%s moved by %d, want %d" % (name, get(b, name) - get(a, name), want))
    if any(n.startswith("cowbd_volume_") and dict(l).get("op") == "cache" for n, l in b):
        sys.exit("a series for op=cache, which never reaches the store")
    for vol in ("vol0@s2", "vol1"):
        if series(b, vol):
            sys.exit("%d series for %s, which had no I/O and is not attached" % (series(b, vol), vol))
    print("counters moved by exactly the I/O done: %s" % json.dumps(exp, sort_keys=True))

def gauges(page, s1, s2, p1, p2):
    """The page's pool gauges agree with cowctl --json stats and pool status
    taken before and after it (exit 3: the pool changed in between, try
    again)."""
    p = parse(page)
    s, t = json.load(open(s1))["stats"], json.load(open(s2))["stats"]
    q, r = json.load(open(p1))["pool"], json.load(open(p2))["pool"]
    if s != t or q != r:
        sys.exit(3)
    bs = s["block_size"]
    pairs = [("cowbd_pool_size_bytes", q["size"]),
             ("cowbd_pool_provisioned_bytes", q["provisioned"]),
             ("cowbd_pool_allocated_bytes", q["allocated"]),
             ("cowbd_pool_live_bytes", q["live"]),
             ("cowbd_pool_reclaimable_bytes", q["reclaimable"]),
             ("cowbd_pool_segments", q["segments"]),
             ("cowbd_pool_free_segments", q["segments_free"]),
             ("cowbd_pool_volumes", q["volumes"]),
             ("cowbd_pool_snapshots", q["snapshots"]),
             ("cowbd_compactor_passes_total", q["compactor"]["passes"]),
             ("cowbd_compactor_moved_blocks_total", q["compactor"]["blocks_moved"]),
             ("cowbd_pool_failed", int(q["failed"])),
             ("cowbd_pool_read_only", int(q["read_only"])),
             ("cowbd_pool_written_bytes_total", s["bytes_written"]),
             ("cowbd_client_written_bytes_total", s["client_write_bytes"]),
             ("cowbd_flush_requests_total", s["flushes"]),
             ("cowbd_fua_requests_total", s["fua_requests"]),
             ("cowbd_checkpoint_duration_seconds_count", s["checkpoints"]),
             ("cowbd_checkpoint_precopy_nodes_total", s["ckpt_precopy_nodes"]),
             ("cowbd_checkpoint_precopy_pages_total", s["ckpt_precopy_pages"]),
             ("cowbd_bad_blocks_total", s["bad_blocks"]),
             ("cowbd_bad_reads_total", s["bad_reads"]),
             ("cowbd_read_views_total", s["read_views"]),
             ("cowbd_inline_rounds_total", s["inline_rounds"]),
             ("cowbd_inline_slow_total", s["inline_slow"]),
             ("cowbd_log_blocks_rewritten_total", s["summary_rewrites"])]
    for name, want in pairs:
        if get(p, name) != want:
            sys.exit("%s = %d, cowctl says %d" % (name, get(p, name), want))
    # the log, its summaries written again and a superblock at least
    if s["bytes_written"] < (s["batch_blocks"] + s["summary_rewrites"]) * bs + bs:
        sys.exit("bytes_written %d < the log's %d blocks and a superblock" % (
            s["bytes_written"], s["batch_blocks"]))
    for name, ns in (("cowbd_compactor_seconds_total", s["compact_ns"]),
                     ("cowbd_checkpoint_log_thread_seconds_total", s["ckpt_log_ns"]),
                     ("cowbd_checkpoint_sync_seconds_total", s["ckpt_sync_ns"])):
        if get(p, name) != ns / 1e9:
            sys.exit("%s = %r, cowctl says %d ns" % (name, get(p, name), ns))
    if not s["inline_slow"] <= s["inline_rounds"] <= s["batches"]:
        sys.exit("inline rounds %d (slow %d) beside %d batches" % (
            s["inline_rounds"], s["inline_slow"], s["batches"]))
    if not s["ckpt_log_ns"] > 0:
        sys.exit("no checkpoint time counted, after %d checkpoints" % s["checkpoints"])
    if not 0 < s["ckpt_log_max_ns"] <= s["ckpt_log_ns"]:
        sys.exit("longest checkpoint stretch %d ns, of %d in all" % (
            s["ckpt_log_max_ns"], s["ckpt_log_ns"]))
    print("pool gauges agree with cowctl pool status and stats")

def hold(port, sd):
    """Two clients held open (on vol0 and on vol1, which has no I/O), a
    third refused (--max-connections 2)."""
    import nbd
    hs = []
    for vol in ("vol0", "vol1"):
        h = nbd.NBD()
        h.set_export_name(vol)
        h.connect_tcp("127.0.0.1", port)
        hs.append(h)
    try:
        h = nbd.NBD()
        h.set_export_name("vol0")
        h.connect_tcp("127.0.0.1", port)
        sys.exit("a third client was served over --max-connections 2")
    except nbd.Error:
        pass
    open(os.path.join(sd, "held"), "w").close()
    give_up = time.time() + 60  # the test failed and went (its dir with it)
    while not os.path.exists(os.path.join(sd, "release")) and os.path.isdir(sd):
        if time.time() > give_up:
            sys.exit("never released")
        time.sleep(0.05)
    for h in hs:
        h.shutdown()

def field(page, name):
    print(int(get(parse(page), name)))

def loops(page):
    """cowbd_loop_clients as LOOP:N pairs in loop order."""
    page = parse(page)
    per = sorted((int(dict(l)["loop"]), int(v)) for (n, l), v in page.items()
                 if n == "cowbd_loop_clients")
    print(" ".join("%d:%d" % p for p in per))

def series(page, vol):
    """The number of samples labelled volume=vol."""
    if isinstance(page, str):
        page = parse(page)
    return sum(1 for n, l in page if dict(l).get("volume") == vol)

def snaps(ctl, vol, n):
    """n snapshots of vol, pipelined on one control connection."""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(ctl)
    f = s.makefile("rb")
    names = ["%s@n%05d" % (vol, i) for i in range(int(n))]
    for i in range(0, len(names), 200):
        part = names[i:i + 200]
        s.sendall("".join(json.dumps({"op": "snapshot.create", "name": x}) + "\n"
                          for x in part).encode())
        for x in part:
            r = json.loads(f.readline())
            if not r.get("ok"):
                sys.exit("snapshot.create %s: %s" % (x, r))

cmd = sys.argv[1]
if cmd == "io": io(sys.argv[2], sys.argv[3])
elif cmd == "check": check(*sys.argv[2:5])
elif cmd == "gauges": gauges(*sys.argv[2:7])
elif cmd == "hold": hold(sys.argv[2], sys.argv[3])
elif cmd == "field": field(sys.argv[2], sys.argv[3])
elif cmd == "series": print(series(sys.argv[2], sys.argv[3]))
elif cmd == "loops": loops(sys.argv[2])
elif cmd == "snaps": snaps(*sys.argv[2:5])
PY
py() { /usr/bin/python3 "$T/metrics.py" "$@"; }

# --- known I/O moves the per-volume counters by exactly that ---------------
scrape "$T/m0"
py io "$PORT" "$T/expect.json" || fail "the I/O driver failed"
scrape "$T/m1"
py check "$T/m0" "$T/m1" "$T/expect.json" || fail "per-volume counters"
[ "$(py field "$T/m1" cowbd_client_written_bytes_total)" = $((4096 + 8192 + 1000 + 4096)) ] ||
	fail "cowbd_client_written_bytes_total is not the bytes written"
echo "ok: per-volume counters and histograms"

# --- pool gauges agree with cowctl --json pool status and stats ---------------
agreed=""
for _ in $(seq 1 20); do
	ok --json stats; cp "$T/out" "$T/s1"
	ok --json pool status; cp "$T/out" "$T/p1"
	scrape "$T/m2"
	ok --json stats; cp "$T/out" "$T/s2"
	ok --json pool status; cp "$T/out" "$T/p2"
	py gauges "$T/m2" "$T/s1" "$T/s2" "$T/p1" "$T/p2"; rc=$?
	[ $rc -eq 3 ] && { sleep 0.2; continue; }
	[ $rc -eq 0 ] || fail "pool gauges"
	agreed=1; break
done
[ -n "$agreed" ] || fail "the pool never held still for a scrape"
[ "$(py field "$T/m2" cowbd_pool_volumes)" = 2 ] && [ "$(py field "$T/m2" cowbd_pool_snapshots)" = 2 ] ||
	fail "pool gauges: want 2 volumes and 2 snapshots, idle ones included"
echo "ok: pool gauges"

# --- connections: open now, accepted, refused -------------------------------
acc0=$(py field "$T/m2" cowbd_connections_accepted_total)
py hold "$PORT" "$T" & HOLD=$!
for _ in $(seq 1 200); do [ -e "$T/held" ] && break; sleep 0.05; done
[ -e "$T/held" ] || fail "the clients were not held"
scrape "$T/m3"
[ "$(py field "$T/m3" cowbd_clients)" = 2 ] || fail "cowbd_clients is not 2 with two clients"
[ "$(py loops "$T/m3")" = "0:1 1:1" ] || fail "cowbd_loop_clients: $(py loops "$T/m3"), want one on each of 2 loops"
[ "$(py field "$T/m3" cowbd_connections_accepted_total)" = $((acc0 + 2)) ] ||
	fail "cowbd_connections_accepted_total did not move by 2"
[ "$(py field "$T/m3" cowbd_connections_refused_total)" = 1 ] ||
	fail "cowbd_connections_refused_total is not 1"
[ "$(py series "$T/m3" vol1)" -gt 0 ] && [ "$(py series "$T/m3" vol1)" = "$(py series "$T/m3" vol0)" ] ||
	fail "attached idle vol1 has $(py series "$T/m3" vol1) series, vol0 $(py series "$T/m3" vol0)"
[ "$(py series "$T/m3" vol0@s2)" = 0 ] || fail "idle snapshot vol0@s2 has series"
touch "$T/release"
wait $HOLD || fail "the holding client failed"
for _ in $(seq 1 100); do
	scrape "$T/m4"
	[ "$(py field "$T/m4" cowbd_clients)" = 0 ] && break
	sleep 0.05
done
[ "$(py field "$T/m4" cowbd_clients)" = 0 ] || fail "cowbd_clients is not back to 0"
[ "$(py loops "$T/m4")" = "0:0 1:0" ] || fail "cowbd_loop_clients not back to 0: $(py loops "$T/m4")"
[ "$(py series "$T/m4" vol1)" = 0 ] || fail "vol1 kept its series once detached (it had no I/O)"
[ "$(py series "$T/m4" vol0@s1)" -gt 0 ] || fail "vol0@s1 lost its series (it had reads)"
echo "ok: connection counters; series for records with I/O or attached only"

# --- other paths and methods -------------------------------------------------
for path in / /metricsx /metrics/ /favicon.ico; do
	code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT$path")
	[ "$code" = 404 ] || fail "GET $path: HTTP $code, want 404"
done
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$MPORT/metrics")
[ "$code" = 405 ] || fail "POST /metrics: HTTP $code, want 405"
echo "ok: 404 on other paths, 405 on other methods"

# --- the page is valid exposition format ---------------------------------------
if command -v promtool >/dev/null; then
	promtool check metrics <"$T/m4" >"$T/promtool" 2>&1 ||
		fail "promtool check metrics: $(head -n 20 "$T/promtool")"
	echo "ok: promtool check metrics"
elif [ "${CI:-}" = true ]; then
	fail "promtool is missing (make deps installs the prometheus package)"
else
	echo "note: promtool not installed (Debian package prometheus): page not linted"
fi

# --- a bad --metrics address: one line, non-zero exit -------------------------
for bad in 127.0.0.1:0 127.0.0.1:86536 127.0.0.1 nonsense '[::1]9100' '127.0.0.1:80x'; do
	"$BUILD/cowbd" --pool "$T/none.img" --create 64M --listen 127.0.0.1:0 \
		--control "$T/bad.sock" --metrics "$bad" >"$T/bad.out" 2>&1 && fail "--metrics $bad accepted"
	[ "$(wc -l <"$T/bad.out")" = 1 ] || fail "--metrics $bad: not one line: $(cat "$T/bad.out")"
	line=$(cat "$T/bad.out")
	[[ $line == *"bad --metrics: $bad "* ]] || fail "--metrics $bad: $line"
	[ ! -e "$T/none.img" ] || fail "--metrics $bad: the pool was created anyway"
done
# A port in use is found when binding: one error line, the daemon exits.
"$BUILD/cowbd" --pool "$T/p2.img" --create 64M --listen 127.0.0.1:0 --control "$T/bad.sock" \
	--metrics "127.0.0.1:$MPORT" >"$T/bad.out" 2>&1 && fail "--metrics on a port in use accepted"
[ "$(grep -c 'error' "$T/bad.out")" = 1 ] && grep -q "Address already in use" "$T/bad.out" ||
	fail "--metrics on a port in use: $(cat "$T/bad.out")"
[ ! -e "$T/bad.sock" ] || fail "control socket left by a daemon that did not start"
echo "ok: bad --metrics addresses refused"

# --- 20,000 idle snapshots: the page stays small and fast ----------------------
NSNAP=20000
start=$(date +%s)
py snaps "$CTL" vol1 $NSNAP || fail "creating $NSNAP snapshots"
echo "made $NSNAP snapshots in $(($(date +%s) - start)) s"
curl -sf -o "$T/m5" -w '%{size_download} %{time_total}\n' "http://127.0.0.1:$MPORT/metrics" >"$T/m5.w" ||
	fail "scrape with $NSNAP snapshots failed"
read -r bytes secs <"$T/m5.w"
echo "page with $((NSNAP + 2)) snapshots: $bytes bytes in $secs s"
[ "$bytes" -lt 204800 ] || fail "the page is $bytes bytes with $NSNAP idle snapshots"
awk -v s="$secs" 'BEGIN { exit !(s < 1) }' || fail "the scrape took $secs s with $NSNAP idle snapshots"
[ "$(py field "$T/m5" cowbd_pool_snapshots)" = $((NSNAP + 2)) ] || fail "cowbd_pool_snapshots"
[ "$(py field "$T/m5" cowbd_pool_volumes)" = 2 ] || fail "cowbd_pool_volumes"
[ "$(py field "$T/m5" cowbd_pool_provisioned_bytes)" = $(((64 + 16) << 20)) ] ||
	fail "cowbd_pool_provisioned_bytes"
echo "ok: $NSNAP idle snapshots"

kill -0 "$COWBD_PID" || fail "cowbd died"
cowbd_stop
check_pool "after the metrics test"
