#!/bin/bash
# nbd_limits.sh — the daemon's connection limits, one by one:
#   --max-connections N       the N+1st client is accepted and closed at once;
#                             a slot frees when a client leaves
#   --handshake-timeout SECS  a client that never finishes option haggling
#                             is dropped; one that does is not
#   --idle-timeout SECS       a client with nothing in flight and no traffic is
#                             closed; a busy one is not; off by default
#   --max-inflight-requests / --max-inflight-bytes
#                             a client pipelining READs without reading replies
#                             holds bounded memory, and gets every reply once
#                             it reads
# After each: other clients are served and the fd count is back to baseline.
. "$(dirname "$0")/lib.sh"
requires nbdinfo
[ -x "$BUILD/cowctl" ] || { echo "requires $BUILD/cowctl (not built yet)"; exit 77; }
export RAWDIR="$(cd "$(dirname "$0")" && pwd)"

restart() {
	cowbd_stop
	cowbd_restart "$@"
	serves "restart $*"
	BASE=$(cowbd_fds)
}
py() { COWBD_PID=$COWBD_PID /usr/bin/python3 - "$PORT" "$@"; }

cowbd_start --max-connections 3 --handshake-timeout 1
VOL0_SIZE=$((64 << 20))
cowctl volume create vol0 64M >/dev/null || fail "volume create"
serves warmup
BASE=$(cowbd_fds)

# ---- max connections (and the handshake timeout does not hit clients in
# transmission)
py <<'PY' || fail "max-connections"
import os, socket, sys, time
sys.path.insert(0, os.environ["RAWDIR"])
import nbd_raw as r
r.PORT = int(sys.argv[1])
held = [r.go()[0] for _ in range(3)]
s = socket.create_connection(("127.0.0.1", r.PORT))
r.expect_eof(s, "4th connection over --max-connections 3")
time.sleep(1.5)   # past the handshake timeout: clients in transmission stay
for h in held:
    err, data = r.roundtrip(h, r.CMD_READ, 0, 512, datalen=512)
    r.check(err == 0, "held connection still served")
held.pop().close()
# The slot frees when the server sees the close: poll for it (a fixed nap
# fails on a loaded machine).
deadline = time.time() + 10
while True:
    try:
        s, _ = r.go()     # a slot is free again
        break
    except (EOFError, OSError, r.Fail):
        if time.time() > deadline:
            raise
        time.sleep(0.05)
r.check(r.roundtrip(s, r.CMD_READ, 0, 512, datalen=512)[0] == 0, "READ on the freed slot")
for h in held + [s]:
    h.close()
print("ok max-connections")
PY
fds_settle "max-connections"
serves "max-connections"

# ---- handshake timeout: silent after the greeting, half an option, or
# stuck in option haggling
py <<'PY' || fail "handshake-timeout"
import os, socket, struct, sys, time
sys.path.insert(0, os.environ["RAWDIR"])
import nbd_raw as r
r.PORT = int(sys.argv[1])
t0 = time.time()
a = socket.create_connection(("127.0.0.1", r.PORT))          # never sends a byte
b = r.hello()
b.sendall(struct.pack(">QII", r.OPT_MAGIC, r.OPT_GO, 100))    # half an option
c = r.hello()
r.send_opt(c, 0x4242)                                         # haggles, never picks
r.read_rep(c)
for s, what in ((a, "silent client"), (b, "half an option"), (c, "endless haggling")):
    r.expect_eof(s, what, timeout=5)
dt = time.time() - t0
r.check(0.8 < dt < 4.5, "dropped after %.1f s, want about 1 s" % dt)
print("ok handshake-timeout (%.1f s)" % dt)
PY
fds_settle "handshake-timeout"
serves "handshake-timeout"

# ---- idle timeout
restart --idle-timeout 1
py <<'PY' || fail "idle-timeout"
import os, socket, sys, time
sys.path.insert(0, os.environ["RAWDIR"])
import nbd_raw as r
r.PORT = int(sys.argv[1])
idle, _ = r.go()
busy, _ = r.go()
t0 = time.time()
while time.time() - t0 < 2.5:            # a request every 0.1 s: never idle
    r.check(r.roundtrip(busy, r.CMD_READ, 0, 512, datalen=512)[0] == 0, "busy client served")
    time.sleep(0.1)                      # (10x inside the timeout: a loaded machine may stall)
r.expect_eof(idle, "idle client", timeout=3)
r.check(r.roundtrip(busy, r.CMD_READ, 0, 512, datalen=512)[0] == 0, "busy client still served")
busy.close()
print("ok idle-timeout")
PY
fds_settle "idle-timeout"
serves "idle-timeout"

# ---- default: no idle timeout
restart
py <<'PY' || fail "no idle timeout by default"
import os, sys, time
sys.path.insert(0, os.environ["RAWDIR"])
import nbd_raw as r
r.PORT = int(sys.argv[1])
s, _ = r.go()
time.sleep(2.5)
r.check(r.roundtrip(s, r.CMD_READ, 0, 512, datalen=512)[0] == 0, "quiet client still served")
print("ok no idle timeout by default")
PY
fds_settle "default idle"

# ---- in-flight caps: 2000 pipelined 64 KiB READs (125 MiB of replies)
# against a cap of 8 requests / 1 MiB; nothing is read for 2 s, then all
# replies must arrive, in any order, each exactly once.
restart --max-inflight-requests 8 --max-inflight-bytes 1M
py <<'PY' || fail "in-flight caps"
import os, socket, struct, sys, time
sys.path.insert(0, os.environ["RAWDIR"])
import nbd_raw as r
r.PORT = int(sys.argv[1])
pid = os.environ["COWBD_PID"]
before = r.rss_kib(pid)
s, _ = r.go()
N = 2000
hdrs = b"".join(struct.pack(">IHHQQI", r.REQ_MAGIC, 0, r.CMD_READ, i, 0, 65536) for i in range(N))
sent = r.send_while_taken(s, hdrs, 2)
time.sleep(0.5)
grown = r.rss_kib(pid) - before
r.check(grown < 32 * 1024, "RSS grew by %d KiB with 8 requests / 1 MiB allowed" % grown)
s.setblocking(True)
s.settimeout(20)
if sent < len(hdrs):
    import threading
    t = threading.Thread(target=lambda: s.sendall(hdrs[sent:]))
    t.start()
seen = set()
for _ in range(N):
    err, handle, data = r.read_reply(s, 65536)
    r.check(err == 0 and len(data) == 65536, "reply ok")
    r.check(handle not in seen, "handle answered once")
    seen.add(handle)
r.check(seen == set(range(N)), "every request answered")
s.close()
print("ok in-flight caps (RSS +%d KiB, %d of %d bytes sent before the client read)" %
      (grown, sent, len(hdrs)))
PY
fds_settle "in-flight caps"
serves "in-flight caps"

# ---- bad values are refused at startup
for bad in "--max-connections 0" "--max-connections x" "--handshake-timeout -1" \
	"--idle-timeout abc" "--max-inflight-requests 0" "--max-inflight-bytes 0"; do
	# shellcheck disable=SC2086
	if "$BUILD/cowbd" --pool "$T/none.img" $bad --control "$T/none.sock" >"$T/bad.log" 2>&1; then
		fail "cowbd started with $bad"
	fi
	grep -q "bad --" "$T/bad.log" || fail "no message for $bad: $(cat "$T/bad.log")"
done

cowbd_stop
echo "limits ok"
