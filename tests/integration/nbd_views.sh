#!/bin/bash
# nbd_views.sh — large READs sent from a read-only mapping of the pool
# (conn.c conn_view/conn_views_end, reader.c store_read_view): READs of
# 64 KiB..1 MiB of whole blocks in the page cache, not over TLS, whose
# reply points into the mapping until the end of the event, when what the
# socket did not take is copied into the request's buffer.  nbd_views.py
# drives it (its docstring has the details):
#   data      random data (1 MiB writes, odd-sized and unaligned ones, zero
#             blocks, single blocks rewritten) reads back right through
#             structured and simple replies and with 32 READs in flight;
#             read_views grows by more than half of those READs, by no more
#             than their number; zero blocks come as hole chunks
#   refused   unaligned, hole, trimmed, too small, too large READs, and one
#             in more physical runs than a reply's 8 pieces: right bytes,
#             read_views unchanged
#   partial   a raw client (simple, then structured replies) queues 48 1 MiB
#             READs unread; once all are served (--metrics: the volume's
#             completed READs) the range is overwritten, compacted,
#             checkpointed, and another volume written until the freed
#             segments are reused (the pool file is searched for the old
#             blocks); every reply must still be the old data, whole; the new
#             data reads back
#   vanish    clients that queue 32 1 MiB READs and close, reset, or go mid-
#             reply: the next client is served, the connections go away, a
#             checkpoint (waiting for the read-side sections) completes
# Then: the daemon is alive, its log has no error or warning line (nor a
# sanitizer report), it stops cleanly within 30 s and cowbd-check passes
# on the pool.  SEED replays a run's data.
# Usage: nbd_views.sh [BUILD-DIR] (else $BUILD, else build)
if [ -n "${1:-}" ]; then
	case $1 in
	/*) BUILD=$1 ;;
	*) if [ -d "$1" ]; then BUILD=$(cd "$1" && pwd); else BUILD="$(cd "$(dirname "$0")/../.." && pwd)/$1"; fi ;;
	esac
	export BUILD
fi
. "$(dirname "$0")/lib.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "requires python3-libnbd"; exit 77; }
[ -x "$BUILD/cowctl" ] || { echo "requires $BUILD/cowctl (not built yet)"; exit 77; }
seed_init

MPORT=$(random_port)
# Views on: auto would pick copies where they measure cheaper.
cowbd_start --metrics "127.0.0.1:$MPORT" --read-views on
ok volume create vol0 64M
ok volume create vol1 64M
ok volume create vol2 64M

# Bounded: a reply shorter than it says, or a read-side section never
# closed (a checkpoint waits for it), hangs rather than fails.
COWCTL="$BUILD/cowctl" CTL="$CTL" MPORT="$MPORT" POOL="$POOL" timeout -k 5 240 \
	/usr/bin/python3 "$(dirname "$0")/nbd_views.py" "$PORT" \
	data refused partial-simple partial-structured vanish
rc=$?
[ $rc -eq 0 ] || fail "views (exit $rc$([ $rc -ne 124 ] || echo ": timed out"))"

kill -0 "$COWBD_PID" 2>/dev/null || fail "cowbd died"
# (a sanitizer build: its reports too; UBSan's do not stop the daemon)
bad_log() {
	grep -E '^cowbd: (error|warning):|AddressSanitizer|LeakSanitizer|runtime error' "$LOG" \
		>"$T/bad" && fail "$1: $(head -n 5 "$T/bad")"
}
bad_log "error or warning in the log"
echo "ok: no error or warning in the log ($(grep -c ': closed (' "$LOG") connections closed)"
not_failed "after the views"
# cowbd_stop, bounded (its last checkpoint waits for the read-side sections)
kill -TERM "$COWBD_PID"
for _ in $(seq 1 600); do kill -0 "$COWBD_PID" 2>/dev/null || break; sleep 0.05; done
kill -0 "$COWBD_PID" 2>/dev/null && fail "cowbd did not stop within 30 s of SIGTERM"
wait "$COWBD_PID"
rc=$?
COWBD_PID=""
[ $rc -eq 0 ] || fail "cowbd exited $rc after SIGTERM"
bad_log "after the stop, in the log"
check_pool "after the views"

# --read-views off: the same bytes, no view; on and auto: views.  vol0's
# bytes (from the scenarios: holes, and MiBs in more runs than a reply
# takes, so a view may be refused anywhere) are compared across the modes;
# the views are counted on vol3, written here in 1 MiB WRITEs: every MiB of
# it one run of blocks in the page cache.  Auto tries a view on a loop's
# first large READ (refused there after a restart: the blocks' CRC table is
# not in memory yet, the copy loads it), then on at least one of any 65 in
# a row whichever way measures cheaper (every 64th tries the dearer way),
# so 3 x 64 READs of vol3 give it views whatever the clocks say.
read_vols() { # prints vol0's and vol3's sha256 and read_views after reading vol0 twice, vol3 three times, in 1 MiB READs
	/usr/bin/python3 - "$PORT" <<'PY'
import hashlib, json, subprocess, os, sys, nbd
out = []
for vol, passes in (("vol0", 2), ("vol3", 3)):
    h = nbd.NBD()
    h.connect_uri("nbd://127.0.0.1:%s/%s" % (sys.argv[1], vol))
    size = h.get_size()
    for _ in range(passes):
        d = hashlib.sha256()
        for off in range(0, size, 1 << 20):
            d.update(h.pread(min(1 << 20, size - off), off))
    h.shutdown()
    out.append(d.hexdigest())
s = json.loads(subprocess.check_output([os.environ["COWCTL"], "--control", os.environ["CTL"],
                                        "--json", "stats"]))["stats"]
print(out[0] + out[1], s["read_views"])
PY
}
declare -A sum
for mode in off auto on; do
	cowbd_restart --read-views "$mode"
	if [ "$mode" = off ]; then
		ok volume create vol3 64M
		/usr/bin/python3 - "$PORT" "$SEED" <<'PY' || fail "vol3: write failed"
import random, sys, nbd
rnd = random.Random(int(sys.argv[2]))
h = nbd.NBD()
h.connect_uri("nbd://127.0.0.1:%s/vol3" % sys.argv[1])
for off in range(0, h.get_size(), 1 << 20):
    h.pwrite(rnd.randbytes(1 << 20), off)
h.flush()
h.shutdown()
PY
	fi
	r=$(COWCTL="$BUILD/cowctl" CTL="$CTL" read_vols) || fail "--read-views $mode: read failed"
	sum[$mode]=${r% *} n=${r#* }
	echo "ok: --read-views $mode: read_views $n after 2 x 64 READs of 1 MiB of vol0, 3 x 64 of vol3"
	case $mode in
	off) [ "$n" -eq 0 ] || fail "--read-views off: $n views" ;;
	on) [ "$n" -ge 128 ] || fail "--read-views on: $n views of vol3's last 128 READs" ;;
	auto) [ "$n" -ge 1 ] || fail "--read-views auto: no view, not even its probes of vol3" ;;
	esac
	cowbd_stop
done
[ "${sum[off]}" = "${sum[on]}" ] && [ "${sum[auto]}" = "${sum[on]}" ] ||
	fail "vol0 and vol3 read differently: off ${sum[off]}, auto ${sum[auto]}, on ${sum[on]}"
# (a pool that does not exist: a daemon that took the mode would stop there)
timeout 10 "$BUILD/cowbd" --pool "$T/none" --read-views sometimes >"$T/bad-mode" 2>&1 &&
	fail "--read-views sometimes accepted"
grep -q "want auto, on or off" "$T/bad-mode" || fail "--read-views sometimes: $(cat "$T/bad-mode")"
bad_log "with --read-views off, auto and on"
echo "views ok"
