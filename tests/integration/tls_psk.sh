#!/bin/bash
# tls_psk.sh — cowbd --tls require --tls-psk FILE (psktool format): nbdinfo
# and libnbd as alice and bob, a 32 MiB round trip, qemu-img with
# tls-creds-psk; a wrong key and an unknown user fail cleanly while a live
# PSK connection goes on.  Then one server with X.509 and PSK in allow mode:
# plaintext, X.509 and PSK clients side by side.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tls_lib.bash"
requires nbdinfo qemu-img python3
python3 -c 'import nbd' 2>/dev/null || { echo "requires python3-libnbd"; exit 77; }

tls_make_psk
bad_psk() { # expected-message file-content
	printf '%s' "$2" >"$T/bad.psk"
	if "$BUILD/cowbd" --pool "$T/bad.img" --create 64M --listen 127.0.0.1:0 \
		--control "$T/bad.sock" --tls require --tls-psk "$T/bad.psk" >"$T/bad.log" 2>&1; then
		fail "cowbd started with PSK file '$2'"
	fi
	grep -q -- "$1" "$T/bad.log" || fail "no '$1' in: $(cat "$T/bad.log")"
}
bad_psk "line 1: key is not hex" $'alice:zz\n'
bad_psk "no username:hexkey line" ""
bad_psk "line 2: expected username:hexkey" $'alice:00\nbob\n'

cowbd_start --tls require --tls-psk "$PSK/keys.psk"
cowctl volume create vol0 128M >/dev/null || fail "volume create"
pu() { echo "nbds://$1@127.0.0.1:$PORT/vol0?tls-psk-file=$2"; }

[ "$(nbdinfo --size "$(pu alice "$PSK/keys.psk")")" = 134217728 ] || fail "nbdinfo as alice"
[ "$(nbdinfo --size "$(pu bob "$PSK/keys.psk")")" = 134217728 ] || fail "nbdinfo as bob"
if nbdinfo --size "$(pu alice "$PSK/wrong/keys.psk")" >/dev/null 2>&1; then fail "wrong key served"; fi
if nbdinfo --size "$(pu carol "$PSK/keys.psk")" >/dev/null 2>&1; then fail "unknown user served"; fi
if nbdinfo --size "$(uri vol0)" >/dev/null 2>&1; then fail "plaintext served in require mode"; fi

BASE=$(cowbd_fds)
python3 - "$(pu alice "$PSK/keys.psk")" "$(pu alice "$PSK/wrong/keys.psk")" \
	"$(pu carol "$PSK/keys.psk")" <<'PY' || fail "libnbd over PSK"
import os, sys, nbd
good, wrong, unknown = sys.argv[1:4]
def connect(u):
    h = nbd.NBD()
    h.set_uri_allow_local_file(True)
    h.connect_uri(u)
    return h
h = connect(good)
big = os.urandom(32 << 20)
h.pwrite(big, 4096)
for i in range(5):
    for u in (wrong, unknown):
        try:
            connect(u).shutdown()
            sys.exit("bad PSK client connected: " + u)
        except nbd.Error:
            pass
assert h.pread(32 << 20, 4096) == big, "32 MiB read back differs"
h.flush()
h.shutdown()
print("libnbd PSK ok")
PY
fds_settle "after the PSK clients"

# qemu-img: tls-creds-psk reads DIR/keys.psk
QOBJ="tls-creds-psk,id=tls0,dir=$PSK,username=alice,endpoint=client"
QNBD="driver=nbd,host=127.0.0.1,port=$PORT,export=vol0,tls-creds=tls0"
head -c $((20 << 20)) /dev/urandom >"$T/q.img"
qemu-img convert -n --object "$QOBJ" -f raw "$T/q.img" --target-image-opts "$QNBD" ||
	fail "qemu-img convert to PSK"
qemu-img convert --object "$QOBJ" --image-opts "$QNBD" -O raw "$T/qback.img" ||
	fail "qemu-img convert from PSK"
cmp -n $((20 << 20)) "$T/q.img" "$T/qback.img" || fail "qemu-img PSK round trip differs"
if qemu-img info --object "tls-creds-psk,id=tls0,dir=$PSK/wrong,username=alice,endpoint=client" \
	--image-opts "$QNBD" >/dev/null 2>&1; then
	fail "qemu-img with a wrong key connected"
fi
cowbd_stop

# ---- X.509 and PSK together, TLS optional --------------------------------
tls_make_pki
cowbd_restart --tls allow --tls-certs "$PKI/server" --tls-psk "$PSK/keys.psk"
grep -q "TLS allowed" "$LOG" || fail "no 'TLS allowed' in the log"
[ "$(nbdinfo --size "$(uri vol0)")" = 134217728 ] || fail "allow: plaintext"
[ "$(nbdinfo --size "$(pu bob "$PSK/keys.psk")")" = 134217728 ] || fail "allow: PSK"
[ "$(nbdinfo --size "$(s_uri vol0 "tls-certificates=$PKI/client")")" = 134217728 ] ||
	fail "allow: X.509"
if nbdinfo --size "$(s_uri vol0 "tls-certificates=$PKI/rogue")" >/dev/null 2>&1; then
	fail "allow: rogue certificate served"
fi
cmp -n $((20 << 20)) "$T/q.img" <(nbdcopy "$(uri vol0)" - | head -c $((20 << 20))) ||
	fail "allow: plaintext read differs"
cowbd_stop
echo "tls psk ok"
