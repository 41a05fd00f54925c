#!/bin/bash
# tls_policy.sh — the TLS rules of the NBD spec, checked byte by byte with a
# raw-socket client (python ssl for the TLS part, X.509 with a client
# certificate):
#   --tls off      STARTTLS → NBD_REP_ERR_POLICY, haggling goes on
#   --tls require  every option but STARTTLS/ABORT → NBD_REP_ERR_TLS_REQD;
#                  NBD_OPT_EXPORT_NAME before TLS → disconnect; STARTTLS with
#                  data → ERR_INVALID; plaintext sent behind STARTTLS (before
#                  the ACK was read) → disconnect; inside TLS: LIST, a second
#                  STARTTLS → ERR_INVALID, unknown option → ERR_UNSUP (never
#                  TLS_REQD), GO, WRITE/READ/FLUSH, DISC
#   --tls allow    plaintext options and TLS both work
# and the log has, at info, each connection's start and end (export, TLS,
# requests, why it closed) and each refusal with its reason.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tls_lib.bash"
requires python3
tls_make_pki

RAW="$T/tls_raw.py"
cat >"$RAW" <<'PY'
import os, socket, ssl, struct, sys
sys.path.insert(0, os.environ["RAWDIR"])
from nbd_raw import recvn
port, pki, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
OPT_MAGIC, REP_MAGIC = 0x49484156454F5054, 0x3E889045565A9
EXPORT_NAME, ABORT, LIST, STARTTLS, INFO, GO, SR = 1, 2, 3, 5, 6, 7, 8
ACK, SERVER, REP_INFO = 1, 2, 3
E = lambda n: 0x80000000 | n
UNSUP, POLICY, INVALID, TLS_REQD = E(1), E(2), E(3), E(5)

def hello():
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    recvn(s, 18)
    s.sendall(struct.pack(">I", 1))
    return s

def opt(s, o, data=b""):
    s.sendall(struct.pack(">QII", OPT_MAGIC, o, len(data)) + data)

def rep(s, o):
    magic, ro, typ, n = struct.unpack(">QIII", recvn(s, 20))
    assert magic == REP_MAGIC and ro == o, "reply header %#x %d" % (magic, ro)
    return typ, recvn(s, n)

def expect(s, o, want, data=b""):
    opt(s, o, data)
    typ, _ = rep(s, o)
    assert typ == want, "option %d: got %#x, want %#x" % (o, typ, want)

def expect_eof(s, what):
    try:
        while True:
            if not s.recv(65536):
                return
    except (ConnectionResetError, ssl.SSLError):
        return
    except socket.timeout:
        sys.exit(what + ": server did not disconnect")

def go_data(name):
    return struct.pack(">I", len(name)) + name + struct.pack(">H", 0)

def tls(s):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki + "/client/ca-cert.pem")
    ctx.load_cert_chain(pki + "/client/client-cert.pem", pki + "/client/client-key.pem")
    return ctx.wrap_socket(s, server_hostname="localhost")

def list_names(s):
    opt(s, LIST)
    names = []
    while True:
        typ, d = rep(s, LIST)
        if typ == ACK:
            return names
        assert typ == SERVER, "LIST: %#x" % typ
        n = struct.unpack(">I", d[:4])[0]
        names.append(d[4:4 + n])

def transmission(s):
    """GO vol0, then WRITE, READ, FLUSH, DISC in the raw."""
    opt(s, GO, go_data(b"vol0"))
    while True:
        typ, d = rep(s, GO)
        if typ == ACK:
            break
        assert typ == REP_INFO, "GO: %#x" % typ
    data = os.urandom(100000)
    def reply(want):
        magic, err, h = struct.unpack(">IIQ", recvn(s, 16))
        assert magic == 0x67446698 and err == 0 and h == want, "reply %#x err %d" % (magic, err)
    # (NBD does not order a READ after a WRITE still in flight: wait.)
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 7, 8192, len(data)) + data)
    reply(7)
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 8, 8192, len(data)))
    reply(8)
    assert recvn(s, len(data)) == data, "read back through TLS differs"
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 3, 9, 0, 0))
    reply(9)
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 10, 0, 0))
    expect_eof(s, "DISC")

if mode == "off":
    s = hello()
    expect(s, STARTTLS, POLICY)
    assert b"vol0" in list_names(s)
    expect(s, ABORT, ACK)
elif mode == "require":
    s = hello()
    expect(s, LIST, TLS_REQD)
    expect(s, INFO, TLS_REQD, go_data(b"vol0"))
    expect(s, GO, TLS_REQD, go_data(b"vol0"))
    expect(s, SR, TLS_REQD)
    expect(s, 0x4242, TLS_REQD, b"xyz")
    expect(s, STARTTLS, INVALID, b"x")      # STARTTLS takes no data
    expect(s, ABORT, ACK)
    expect_eof(s, "ABORT")
    s = hello()
    opt(s, EXPORT_NAME, b"vol0")            # cannot be refused: hang up
    expect_eof(s, "EXPORT_NAME before TLS")
    s = hello()                             # plaintext behind STARTTLS
    s.sendall(struct.pack(">QII", OPT_MAGIC, STARTTLS, 0) +
              struct.pack(">QII", OPT_MAGIC, LIST, 0))
    try:                                    # ACK, or not even that
        typ, _ = rep(s, STARTTLS)
        assert typ == ACK
    except EOFError:
        pass
    expect_eof(s, "plaintext injected after STARTTLS")
    s = hello()
    expect(s, STARTTLS, ACK)
    t = tls(s)
    assert b"vol0" in list_names(t)
    expect(t, STARTTLS, INVALID)            # already in TLS
    expect(t, 0x4242, UNSUP)                # never TLS_REQD once in TLS
    transmission(t)
    # EXPORT_NAME inside TLS is fine
    s = hello()
    expect(s, STARTTLS, ACK)
    t = tls(s)
    opt(t, EXPORT_NAME, b"vol0")
    size, flags = struct.unpack(">QH", recvn(t, 10))
    assert size == 64 << 20, size
    recvn(t, 124)
    t.close()
elif mode == "allow":
    s = hello()
    assert b"vol0" in list_names(s)
    transmission(s)
    s = hello()
    assert b"vol0" in list_names(s)
    expect(s, STARTTLS, ACK)
    t = tls(s)
    assert b"vol0" in list_names(t)
    expect(t, STARTTLS, INVALID)
    transmission(t)
print("policy %s ok" % mode)
PY

for mode in off require allow; do
	if [ $mode = off ]; then cowbd_start; else cowbd_start --tls $mode --tls-certs "$PKI/server"; fi
	cowctl volume create vol0 64M >/dev/null || fail "volume create"
	RAWDIR=$(cd "$(dirname "$0")" && pwd) python3 "$RAW" "$PORT" "$PKI" $mode ||
		fail "policy $mode"
	cowbd_stop
	# Every refusal is logged at info with its reason, and every
	# connection's start and end with its export and TLS state.
	case $mode in
	off) want="NBD_OPT_STARTTLS refused: TLS is off" ;;
	require) want="option 3 refused: TLS is required" ;;
	allow) want="serving vol0 (read-write, TLS) with" ;;
	esac
	grep -q "^cowbd: info: 127\.0\.0\.1:[0-9]*: $want" "$LOG" || fail "policy $mode: no log line '$want'"
	closed="vol0, [1-9][0-9]* requests; client sent NBD_CMD_DISC"
	[ $mode = off ] && closed="0 requests; client ended the handshake" # options only
	grep -qE "^cowbd: info: 127\.0\.0\.1:[0-9]+: closed \($closed\)$" "$LOG" ||
		fail "policy $mode: no close line '($closed)'"
	grep -qE "^cowbd: info: 127\.0\.0\.1:[0-9]+: connected$" "$LOG" ||
		fail "policy $mode: no connection line"
	: >"$LOG"
	rm -f "$POOL"
done
echo "tls policy ok"
