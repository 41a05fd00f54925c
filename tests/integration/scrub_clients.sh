#!/bin/bash
# scrub_clients.sh — a scrub never blocks clients.  vol0 (64 MiB) is filled;
# a pass at 1 MiB/s (a minute's work) runs while a client reads, verifies
# and writes (no request may take 2 s), a volume is deleted and a snapshot
# taken (the control plane answers too), and a second `cowctl scrub --wait`
# joins the pass; `--stop` ends it at once (state "stopped", the waiter
# exits 0); a fast pass afterwards is clean.  A pass still running when
# cowbd gets SIGTERM does not delay the stop.  Usage errors exit 2.
. "$(dirname "$0")/lib.sh"
requires /usr/bin/python3
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "requires python3-libnbd"; exit 77; }

scrub_field() { # FIELD: of `cowctl --json scrub --status`
	cowctl --json scrub --status | /usr/bin/python3 -c 'import json, sys
print(json.load(sys.stdin)["scrub"][sys.argv[1]])' "$1"
}

cat >"$T/c.py" <<'PY'
# c.py URI fill | load: fill writes every MiB; load reads, verifies and
# writes blocks at random, failing on any request slower than 2 s.
import random, sys, time, nbd
M, BS = 1 << 20, 4096
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size = h.get_size()

def data(off, gen, n):
    return random.Random(off * 7 + gen).randbytes(n)

if sys.argv[2] == "fill":
    for off in range(0, size, M):
        h.pwrite(data(off, 0, M), off)
    h.flush()
    sys.exit(0)
rnd, gen, worst = random.Random(1), {}, 0.0
for i in range(600):
    off = rnd.randrange(size // BS) * BS
    t = time.monotonic()
    if i % 2:
        h.pwrite(data(off, 1, BS), off)
        gen[off] = 1
    else:
        mib = off - off % M
        want = data(off, 1, BS) if gen.get(off) else data(mib, 0, M)[off - mib:off - mib + BS]
        if h.pread(BS, off) != want:
            sys.exit("block at %d reads other bytes during the scrub" % off)
    worst = max(worst, time.monotonic() - t)
h.flush()
if worst > 2:
    sys.exit("a request took %.2f s during the scrub" % worst)
print("600 requests, slowest %.3f s" % worst)
PY

POOL_SIZE=256M cowbd_start
ok volume create vol0 64M
ok volume create vol1 4M
/usr/bin/python3 "$T/c.py" "$(uri vol0)" fill || fail "fill vol0"
/usr/bin/python3 "$T/c.py" "$(uri vol1)" fill || fail "fill vol1"

ok scrub --rate 1
grep -q "scrub pass 1 started" "$T/out" || fail "scrub start: $(cat "$T/out")"
cowctl scrub >"$T/out" 2>"$T/err"
[ $? -eq 1 ] && grep -q "already running" "$T/err" || fail "a second pass was not refused"
cowctl scrub --wait >"$T/waiter.out" 2>&1 &
WAITER=$!
/usr/bin/python3 "$T/c.py" "$(uri vol0)" load >"$T/load.out" || fail "client during the scrub"
echo "ok: client during the scrub: $(cat "$T/load.out")"
ok volume delete vol1
ok snapshot create vol0@s
[ "$(scrub_field state)" = running ] || fail "the pass ended during the load (too fast to test)"
ok scrub --status
echo "ok: control ops answered during the scrub: $(head -n 1 "$T/out")"

t0=$(date +%s)
ok scrub --stop
grep -q "scrub pass 1 stopped" "$T/out" || fail "scrub --stop: $(cat "$T/out")"
[ $(($(date +%s) - t0)) -le 5 ] || fail "scrub --stop took more than 5 s"
wait $WAITER || fail "the joined scrub --wait exits $?: $(cat "$T/waiter.out")"
grep -q "scrub pass 1 stopped" "$T/waiter.out" || fail "waiter: $(cat "$T/waiter.out")"
[ "$(scrub_field state)" = stopped ] || fail "state after --stop: $(scrub_field state)"
checked=$(scrub_field blocks_checked)
[ "$checked" -lt 16384 ] || fail "a stopped pass read all $checked blocks"
echo "ok: --stop ends the pass ($checked blocks read); the joined waiter saw it"

ok scrub --wait --rate 1024
grep -q "scrub pass 2 done in .*2 of 2 volumes, 16384 blocks checked .* 0 damaged" "$T/out" ||
	fail "a fast pass after the stop: $(cat "$T/out")"
echo "ok: $(cat "$T/out")"

for bad in "scrub --rate 0" "scrub --rate 1.5" "scrub --status --stop" "scrub --stop --rate 2" \
	"scrub now" "volume list --wait" "stats --rate 1"; do
	# shellcheck disable=SC2086
	cowctl $bad >/dev/null 2>"$T/err"
	rc=$?
	[ $rc -eq 2 ] || fail "cowctl $bad exits $rc, not 2"
done
echo "ok: usage errors exit 2"

ok scrub --rate 1
t0=$(date +%s)
cowbd_stop
[ $(($(date +%s) - t0)) -le 10 ] || fail "SIGTERM with a pass running took more than 10 s"
echo "ok: cowbd stops promptly with a pass running"
check_pool "after scrubs and a client"
