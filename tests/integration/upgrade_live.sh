#!/bin/bash
# upgrade_live.sh — `cowctl upgrade` ten times under load, no client
# noticing: fio randwrite with verify (two jobs, two connections, verify
# backlog) and a FUA writer over two more connections with an oracle, while
# the daemon hands itself to a new process ten times.  Zero errors, zero
# reconnects (the accepted count stays at the four clients), every
# acknowledged write read back after the run and again after kill -9 and a
# restart.  Reports the handover pause (median, worst, as the daemon timed
# it) and the longest request latency either client saw.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/upgrade_lib.bash"
requires fio /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] && [ -x "$BUILD/cowbd-check" ] ||
	fail "build/cowbd, cowctl or cowbd-check missing"
seed_init
UPGRADES=${UPGRADES:-10}

cat >"$T/fua.py" <<'PY'
# fua.py PORT STATEDIR SECONDS SEED | fua.py PORT STATEDIR verify
# Two connections each write 4 KiB blocks with FUA in their own region of
# [64M, 96M) until SECONDS have passed; every acknowledged write is kept in
# STATEDIR/fua.json (offset -> seed of its bytes); prints the count and the
# longest request latency.  verify: every one of them reads back.
import json, os, random, sys, time, nbd
port, sd = sys.argv[1], sys.argv[2]
M, BS = 1 << 20, 4096
path = os.path.join(sd, "fua.json")

def conn():
    h = nbd.NBD()
    h.set_export_name("vol0")
    h.connect_tcp("127.0.0.1", port)
    return h

def data(seed):
    return random.Random(seed).randbytes(BS)

if sys.argv[3] == "verify":
    h = conn()
    known = json.load(open(path))
    for off, seed in known.items():
        if h.pread(BS, int(off)) != data(seed):
            sys.exit("acknowledged FUA write at %s lost" % off)
    print("verified %d acknowledged FUA writes" % len(known))
    sys.exit(0)
secs, rnd = float(sys.argv[3]), random.Random(int(sys.argv[4]))
hs = [conn(), conn()]
known, worst, n, end, slow = {}, 0.0, 0, time.monotonic() + secs, []
while time.monotonic() < end:
    for i, h in enumerate(hs):
        off = 64 * M + i * 16 * M + rnd.randrange(16 * M // BS) * BS
        seed = rnd.getrandbits(32)
        t = time.monotonic()
        h.pwrite(data(seed), off, nbd.CMD_FLAG_FUA)
        d = time.monotonic() - t
        if d > 0.002:  # for the handover windows: wall-clock start, seconds
            slow.append((time.time() - d, d))
        worst = max(worst, d)
        known[str(off)] = seed
        n += 1
json.dump(known, open(path, "w"))
json.dump(slow, open(os.path.join(sd, "slow.json"), "w"))
for h in hs:
    h.shutdown()
print("fua: %d writes, longest %.1f ms" % (n, worst * 1000))
PY

up_start --loop-threads 3 # the four clients spread over three loops
ok volume create vol0 128M
RUN=$((UPGRADES + 6))

fio --name=rw --ioengine=nbd --uri="$(uri vol0)" --rw=randwrite --bs=4k --size=32M \
	--numjobs=2 --offset_increment=32M --iodepth=16 --time_based --runtime="$RUN" \
	--verify=crc32c --verify_backlog=512 --do_verify=1 --output-format=json \
	--output="$T/fio.json" >"$T/fio.out" 2>&1 &
FIO=$!
/usr/bin/python3 "$T/fua.py" "$PORT" "$T" "$RUN" "$SEED" >"$T/fua.out" 2>&1 &
FUA=$!
sleep 2
# fio probes each job's export before its run: count from here.
BASE_ACCEPTED=$(accepted)
for i in $(seq 1 "$UPGRADES"); do
	old=$COWBD_PID
	t0=$(date +%s.%N)
	up_upgrade
	echo "$t0 $(date +%s.%N)" >>"$T/windows"
	[ "$COWBD_PID" != "$old" ] || fail "upgrade $i: the same pid serves"
	printf "upgrade %d: pid %s -> %s, paused %.1f ms\n" "$i" "$old" "$COWBD_PID" "$(tail -n 1 "$T/pauses")"
	sleep 0.8
done
wait $FIO || fail "fio failed: $(tail -n 20 "$T/fio.out")"
wait $FUA || fail "FUA writer failed: $(cat "$T/fua.out")"
cat "$T/fua.out"
/usr/bin/python3 - "$T/fio.json" <<'PY' || fail "fio reported errors"
import json, sys
j = json.load(open(sys.argv[1]))
errs = sum(job["error"] for job in j["jobs"])
ios = sum(job["write"]["total_ios"] for job in j["jobs"])
worst = max(job["write"]["clat_ns"]["max"] for job in j["jobs"]) / 1e6
print("fio: %d writes verified as they went, %d errors, longest %.1f ms" % (ios, errs, worst))
sys.exit(1 if errs or ios == 0 else 0)
PY
grep -q "err=" "$T/fio.out" && fail "fio: $(grep err= "$T/fio.out")"
[ "$(accepted)" -eq "$BASE_ACCEPTED" ] ||
	fail "connections accepted: $(accepted), want $BASE_ACCEPTED (a client reconnected?)"
echo "ok: $(accepted) connections accepted over $UPGRADES upgrades: nobody reconnected"
grep -q "could not be carried on)$" "$LOG" && ! grep -q "(0 could not be carried on)" "$LOG" &&
	fail "a connection could not be carried on"
echo "handover pause (the daemon's clock): $(pause_summary)"
/usr/bin/python3 - "$T/slow.json" "$T/windows" <<'PY'
# The longest FUA write that overlapped each `cowctl upgrade`.
import json, statistics, sys
slow = json.load(open(sys.argv[1]))
per = []
for line in open(sys.argv[2]):
    a, b = map(float, line.split())
    per.append(max([d for t, d in slow if t < b and t + d > a] or [0.0]) * 1000)
print("longest client request per handover: median %.1f ms, worst %.1f ms" %
      (statistics.median(per), max(per)))
PY
/usr/bin/python3 "$T/fua.py" "$PORT" "$T" verify || fail "after the upgrades"
not_failed "after the upgrades"

# Acknowledged FUA writes are durable: kill -9 the last generation.
kill -9 "$COWBD_PID"
wait "$REAPER_PID" 2>/dev/null
COWBD_PID=""
cowbd_restart
/usr/bin/python3 "$T/fua.py" "$PORT" "$T" verify || fail "after kill -9 and a restart"
cowbd_stop
check_pool "after $UPGRADES upgrades, kill -9 and a restart"
echo "PASS: $UPGRADES upgrades under load, no error, no reconnect"
