#!/bin/bash
# upgrade_states.sh — what one connection carries through `cowctl upgrade`,
# by raw socket (nbd_raw.py's helpers), each connection left in its own
# state while the daemon hands over, then driven on:
#   half   — in transmission with 10 bytes of a WRITE header sent: the new
#            process gets them with the socket (carried bytes) and the
#            WRITE completes when the rest comes;
#   opts   — between options (flags sent, no export yet): GO then I/O;
#   meta   — structured replies, base:allocation and qemu:allocation-depth
#            selected: BLOCK_STATUS answers with the same context ids;
#   ro     — a snapshot export: still read-only (WRITE -> EPERM);
#   denied — vol2, whose access rule the configuration file now refuses to
#            127.0.0.1: the new process closes this one connection (not the
#            daemon), and `cowctl upgrade` counts it as closed.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/upgrade_lib.bash"
requires /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] || fail "build/cowbd or cowctl missing"

cat >"$T/states.py" <<'PY'
import os, struct, sys, time
sys.path.insert(0, sys.argv[3])
import nbd_raw as r
from nbd_raw import check, recvn, send_opt, read_rep, send_req, read_any_reply, read_reply
r.PORT = int(sys.argv[1])
T = sys.argv[2]
BS = 4096
CTX_ALLOC, CTX_DEPTH = 1, 3

def wait_for(name):
    for _ in range(600):
        if os.path.exists(os.path.join(T, name)):
            return
        time.sleep(0.05)
    raise r.Fail("no %s from the shell" % name)

# half: transmission, then a WRITE header cut after 10 bytes
half, _ = r.go("vol0")
req = struct.pack(">IHHQQI", r.REQ_MAGIC, 0, r.CMD_WRITE, 0x11, 0, BS)
half.sendall(req[:10])
# opts: greeting read, flags sent, nothing else
opts = r.hello()
# meta: structured replies, two contexts on vol0
meta = r.hello()
send_opt(meta, r.OPT_STRUCTURED_REPLY)
check(read_rep(meta)[1] == r.REP_ACK, "STRUCTURED_REPLY")
ctx = r.meta_contexts(meta, r.OPT_SET_META, b"vol0",
                      [b"base:allocation", b"qemu:allocation-depth"])
check(sorted(i for i, _ in ctx) == [CTX_ALLOC, CTX_DEPTH], "contexts %r" % ctx)
tflags, size = r.go_flags(meta)
# ro: a snapshot
ro, _ = r.go("vol0@s1")
# denied: vol2, refused by the new configuration
denied, _ = r.go("vol2")
open(os.path.join(T, "ready"), "w").close()
wait_for("upgraded")

half.sendall(req[10:] + b"h" * BS)
err, handle, _ = read_reply(half)
check(err == 0 and handle == 0x11, "the cut WRITE completed: err %d" % err)
check(r.roundtrip(half, r.CMD_READ, 0, BS, datalen=BS)[1] == b"h" * BS, "read back")
print("ok half: the carried header bytes made a WRITE")

n = b"vol0"
send_opt(opts, r.OPT_GO, struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
while True:
    o, rtype, data = read_rep(opts)
    if rtype == r.REP_ACK:
        break
    check(rtype == r.REP_INFO, "GO after the handover: %#x" % rtype)
check(r.roundtrip(opts, r.CMD_READ, 0, BS, datalen=BS)[1] == b"h" * BS, "opts reads")
print("ok opts: GO after the handover")

send_req(meta, r.CMD_BLOCK_STATUS, 0, 2 * BS, handle=0x33)
ids = []
while True:
    c = read_any_reply(meta)
    check(c[0] == "chunk" and c[3] == 0x33 and c[2] == 5, "BLOCK_STATUS chunk %r" % (c[:4],))
    ids.append(struct.unpack(">I", c[4][:4])[0])
    if c[1] & 1:
        break
check(sorted(ids) == [CTX_ALLOC, CTX_DEPTH], "contexts answered: %r" % ids)
print("ok meta: BLOCK_STATUS with contexts %r" % sorted(ids))

check(r.roundtrip(ro, r.CMD_WRITE, 0, BS, payload=b"x" * BS)[0] == r.EPERM, "ro: EPERM")
print("ok ro: still read-only")

r.expect_eof(denied, "denied")
print("ok denied: closed by the new process")
PY

cat >"$T/cowbd.conf" <<'CONF'
[cowbd]
CONF
up_start --config "$T/cowbd.conf"
ok volume create vol0 16M
ok volume create vol2 16M
ok snapshot create vol0@s1
/usr/bin/python3 "$T/states.py" "$PORT" "$T" "$(dirname "$0")" >"$T/states.out" 2>&1 &
PY_PID=$!
for _ in $(seq 1 200); do [ -e "$T/ready" ] && break; sleep 0.05; done
[ -e "$T/ready" ] || fail "the client did not get ready: $(cat "$T/states.out")"
printf '[export vol2]\nallow = 10.0.0.0/8\n' >>"$T/cowbd.conf"
up_upgrade
touch "$T/upgraded"
wait $PY_PID || fail "after the handover: $(cat "$T/states.out")"
cat "$T/states.out"
/usr/bin/python3 - "$T/up.json" <<'PY' || fail "upgrade counts"
import json, sys
u = json.load(open(sys.argv[1]))["upgrade"]
print("upgrade: %d carried on, %d closed" % (u["carried"], u["closed"]))
sys.exit(0 if (u["carried"], u["closed"]) == (4, 1) else 1)
PY
grep -q "cannot carry on with vol2" "$LOG" || fail "no line for the connection closed"
up_stop
echo "PASS: each connection state carried through an upgrade; a mismatch closes only its own"
