#!/bin/bash
# upgrade_tls.sh — `cowctl upgrade` with TLS allowed (PSK): a plaintext
# connection is carried on, a TLS session is closed cleanly (GnuTLS cannot
# hand its record state to another process): its next request fails with
# the connection closed, not a hang, while the plaintext client goes on;
# `cowctl upgrade` counts one carried, one closed; the TLS client connects
# again to the new process; the log says why it was closed.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/upgrade_lib.bash"
. "$(dirname "$0")/tls_lib.bash"
requires /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] || fail "build/cowbd or cowctl missing"
tls_make_psk

up_start --tls allow --tls-psk "$PSK/keys.psk"
ok volume create vol0 16M
cat >"$T/two.py" <<'PY'
import os, sys, time, nbd
port, psk, T = sys.argv[1], sys.argv[2], sys.argv[3]
plain = nbd.NBD()
plain.connect_uri("nbd://127.0.0.1:%s/vol0" % port)
tls = nbd.NBD()
tls.set_uri_allow_local_file(True)
tls.connect_uri("nbds://alice@127.0.0.1:%s/vol0?tls-psk-file=%s" % (port, psk))
plain.pwrite(b"p" * 4096, 0)
tls.pwrite(b"t" * 4096, 4096)
open(os.path.join(T, "ready"), "w").close()
while not os.path.exists(os.path.join(T, "upgraded")):
    time.sleep(0.05)
plain.pwrite(b"q" * 4096, 8192)
assert plain.pread(4096, 4096) == b"t" * 4096, "the TLS client's write is there"
print("ok plaintext: carried on")
try:
    tls.pread(4096, 0)
    sys.exit("the TLS connection still answered after the upgrade")
except nbd.Error as e:
    print("ok TLS: closed (%s)" % e.string.split(":")[-1].strip())
again = nbd.NBD()
again.set_uri_allow_local_file(True)
again.connect_uri("nbds://alice@127.0.0.1:%s/vol0?tls-psk-file=%s" % (port, psk))
assert again.pread(4096, 8192) == b"q" * 4096
print("ok TLS: connected again to the new process")
PY
/usr/bin/python3 "$T/two.py" "$PORT" "$PSK/keys.psk" "$T" >"$T/two.out" 2>&1 &
PY_PID=$!
for _ in $(seq 1 200); do [ -e "$T/ready" ] && break; sleep 0.05; done
[ -e "$T/ready" ] || fail "clients not ready: $(cat "$T/two.out")"
up_upgrade
touch "$T/upgraded"
wait $PY_PID || fail "after the upgrade: $(cat "$T/two.out")"
cat "$T/two.out"
/usr/bin/python3 -c 'import json,sys; u = json.load(open(sys.argv[1]))["upgrade"]
print("upgrade: %d carried on, %d closed" % (u["carried"], u["closed"]))
sys.exit(0 if (u["carried"], u["closed"]) == (1, 1) else 1)' "$T/up.json" || fail "upgrade counts"
grep -q "a TLS session cannot be handed over: closing it" "$LOG" || fail "no log line for the TLS close"
up_stop
echo "PASS: a TLS session is closed cleanly at an upgrade, plaintext ones carried on"
