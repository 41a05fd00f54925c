# tests/integration/tls_lib.bash — sourced by the tls_*.sh tests after lib.sh
# (not a test itself: run.sh picks up *.sh only).
#
#   tls_make_pki      certtool: a CA, a server certificate for localhost and
#                     127.0.0.1, a client certificate, and a second ("rogue")
#                     CA with its own client certificate, laid out as
#                       $PKI/server  ca-cert.pem server-cert.pem server-key.pem
#                       $PKI/client  ca-cert.pem client-cert.pem client-key.pem
#                       $PKI/rogue   rogue ca-cert.pem + a client cert it signed
#                       $PKI/nocert  ca-cert.pem only (a client without a cert)
#   tls_make_psk      psktool: $PSK/keys.psk (users alice, bob), and
#                     $PSK/wrong/keys.psk (alice with another key)
#   s_uri NAME [Q]    nbds://127.0.0.1:$PORT/NAME?Q
# Keys and certificates live in $T only: generated per run, never committed.
requires certtool psktool

PKI="$T/pki"
PSK="$T/psk"

_tls_ca() { # dir cn
	certtool --generate-privkey --outfile "$1/ca-key.pem" >/dev/null 2>&1 || return 1
	cat >"$1/ca.info" <<-EOF
		cn = $2
		ca
		cert_signing_key
		expiration_days = 2
	EOF
	certtool --generate-self-signed --load-privkey "$1/ca-key.pem" \
		--template "$1/ca.info" --outfile "$1/ca-cert.pem" >/dev/null 2>&1
}

_tls_cert() { # cadir outdir name cn role
	certtool --generate-privkey --outfile "$2/$3-key.pem" >/dev/null 2>&1 || return 1
	{
		echo "organization = cowbd tests"
		echo "cn = $4"
		if [ "$5" = server ]; then
			echo "dns_name = localhost"
			echo "ip_address = 127.0.0.1"
			echo "tls_www_server"
		else
			echo "tls_www_client"
		fi
		echo "encryption_key"
		echo "signing_key"
		echo "expiration_days = 2"
	} >"$2/$3.info"
	certtool --generate-certificate --load-ca-certificate "$1/ca-cert.pem" \
		--load-ca-privkey "$1/ca-key.pem" --load-privkey "$2/$3-key.pem" \
		--template "$2/$3.info" --outfile "$2/$3-cert.pem" >/dev/null 2>&1
}

tls_make_pki() {
	mkdir -p "$PKI"/{ca,server,client,rogue,rogueca,nocert}
	_tls_ca "$PKI/ca" "cowbd test CA" || fail "certtool: CA"
	_tls_ca "$PKI/rogueca" "rogue CA" || fail "certtool: rogue CA"
	_tls_cert "$PKI/ca" "$PKI/server" server localhost server || fail "certtool: server"
	_tls_cert "$PKI/ca" "$PKI/client" client client client || fail "certtool: client"
	_tls_cert "$PKI/rogueca" "$PKI/rogue" client rogue client || fail "certtool: rogue"
	cp "$PKI/ca/ca-cert.pem" "$PKI/server/"
	cp "$PKI/ca/ca-cert.pem" "$PKI/client/"
	cp "$PKI/ca/ca-cert.pem" "$PKI/nocert/"
	# The rogue client trusts the real CA (so it accepts the server) but
	# presents a certificate the server's CA never signed.
	cp "$PKI/ca/ca-cert.pem" "$PKI/rogue/"
	rm -f "$PKI"/*/*.info
}

tls_make_psk() {
	mkdir -p "$PSK/wrong"
	psktool -u alice -p "$PSK/keys.psk" >/dev/null 2>&1 || fail "psktool alice"
	psktool -u bob -p "$PSK/keys.psk" >/dev/null 2>&1 || fail "psktool bob"
	psktool -u alice -p "$PSK/wrong/keys.psk" >/dev/null 2>&1 || fail "psktool wrong"
	grep -q '^alice:' "$PSK/keys.psk" || fail "psktool wrote no alice line"
}

s_uri() { echo "nbds://127.0.0.1:$PORT/$1${2:+?$2}"; }
