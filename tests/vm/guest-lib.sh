# tests/vm/guest-lib.sh — helpers for the guest scenarios (busybox sh).
#
# The NBD server runs inside the guest on 127.0.0.1:$PORT with its pool on
# the guest's tmpfs /pool.  VM_SERVER picks it:
#   cowbd   the real thing: cowbd + cowctl (default)
#   nbdkit  `nbdkit file dir=` over plain files; proves the harness without
#           cowbd (a "snapshot" is a copy taken while the fs is frozen).
# Server:  srv_start_fresh, srv_restart, srv_kill9, srv_term, srv_alive,
#          pool_check (cowbd-check on the stopped server's pool)
# Volumes: vol_create NAME SIZE, snap_create VOL@SNAP, vol_clone VOL@SNAP NEW
# Devices: attach DEV EXPORT [nbd-client options], detach DEV, dev_size DEV,
#          reattach_ro DEV EXPORT DIR (umount, detach, attach, fsck, mount ro),
#          vdisk SERIAL (a virtio disk from the host)
# Files:   make_tree DIR N TAG, sums DIR >LIST, check_sums DIR LIST, same F1 F2
# Verdict: die MSG (FAIL line + diagnostics, exit 1), skip MSG; run_scenario NAME
PORT=10809
CTL=/run/cowbd.ctl
POOL=/pool/pool.img
SRVLOG=/tmp/server.log
POOL_SIZE=${POOL_SIZE:-2G}
SCEN=${SCEN:-?}

# This busybox prefers its applets to $PATH, so host tools that share an
# applet's name (blkdiscard, fsfreeze, cp...) are reached through functions.
# (The systemd guest, sd-scenarios.sh, has no busybox and needs none.)
if [ -x /bin/busybox ]; then
	for _f in /usr/sbin/* /usr/bin/*; do
		_n=${_f##*/}
		busybox --list | grep -qx "$_n" && eval "$_n() { $_f \"\$@\"; }"
	done
	unset _f _n
fi

# Verdicts go to the console and to a second serial port (ttyS1) that
# carries nothing else, so kernel messages can never split them.
vmtest() {
	echo "VMTEST $*"
	echo "VMTEST $*" >/dev/ttyS1 2>/dev/null
}

say() { echo "vm[$SCEN] $(cut -d' ' -f1 /proc/uptime): $*"; }

diag() {
	echo "--- $SCEN diagnostics: server log tail"
	tail -n 20 "$SRVLOG" 2>/dev/null
	echo "--- dmesg since the scenario began (tail)"
	dmesg | tail -n +$(( $(cat /tmp/dmesg.start 2>/dev/null || echo 0) + 1 )) | tail -n 25
	echo "--- mounts / nbd devices"
	grep -E 'nbd|/mnt' /proc/mounts
	for d in /sys/block/nbd*; do
		s=$(cat "$d/size"); [ "$s" != 0 ] && echo "${d##*/} size=$s"
	done
	echo "---"
}

die() {
	vmtest "FAIL $SCEN: $*"
	echo FAIL >"/tmp/verdict.$SCEN"
	diag
	exit 1
}

skip() { # MSG: the scenario cannot run here (SKIP line, exit 0)
	vmtest "SKIP $SCEN: $*"
	echo SKIP >"/tmp/verdict.$SCEN"
	exit 0
}

run() { # run a command, die with its output on failure
	out=$("$@" 2>&1) || { echo "$out" | tail -n 15; die "'$*' failed"; }
	[ -n "${VERBOSE:-}" ] && [ -n "$out" ] && echo "$out"
	return 0
}

# ---- server -------------------------------------------------------------
srv_pid() { cat /run/server.pid 2>/dev/null; }
srv_alive() { p=$(srv_pid); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

_srv_launch() { # extra cowbd args...
	rm -f "$CTL" /run/nbdkit.pid
	case "$VM_SERVER" in
	cowbd)
		cowbd --pool "$POOL" "$@" --listen "127.0.0.1:$PORT" \
			--control "$CTL" --foreground >>"$SRVLOG" 2>&1 &
		echo $! >/run/server.pid
		ready="[ -S $CTL ]" ;;
	nbdkit)
		mkdir -p /pool/vols
		nbdkit -f -i 127.0.0.1 -p "$PORT" -P /run/nbdkit.pid \
			file dir=/pool/vols >>"$SRVLOG" 2>&1 &
		echo $! >/run/server.pid
		ready="[ -s /run/nbdkit.pid ]" ;;
	*) die "unknown VM_SERVER=$VM_SERVER" ;;
	esac
	i=0
	while ! eval "$ready"; do
		srv_alive || die "$VM_SERVER exited during startup"
		i=$((i + 1)); [ $i -gt 300 ] && die "$VM_SERVER not ready within 30 s"
		sleep 0.1
	done
}

srv_stop() {
	p=$(srv_pid)
	[ -n "$p" ] || return 0
	kill -9 "$p" 2>/dev/null
	while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
	rm -f /run/server.pid
}

srv_start_fresh() {
	srv_stop
	rm -rf /pool/* "$SRVLOG"
	say "starting $VM_SERVER on a fresh pool"
	case "$VM_SERVER" in
	cowbd) _srv_launch --create "$POOL_SIZE" ;;
	*) _srv_launch ;;
	esac
}

srv_term() { # SIGTERM; the server must exit 0 within 20 s
	p=$(srv_pid)
	kill -TERM "$p" 2>/dev/null || die "$VM_SERVER (pid $p) is not running"
	i=0
	while kill -0 "$p" 2>/dev/null; do
		i=$((i + 1)); [ $i -gt 200 ] && die "$VM_SERVER still running 20 s after SIGTERM"
		sleep 0.1
	done
	wait "$p"; rc=$?
	rm -f /run/server.pid
	[ $rc -eq 0 ] || die "$VM_SERVER exited $rc after SIGTERM"
}

pool_check() { # WHEN: cowbd-check on the (stopped) server's pool must pass
	[ "$VM_SERVER" = cowbd ] && command -v cowbd-check >/dev/null || return 0
	out=$(cowbd-check "$POOL" 2>&1) && return 0
	rc=$?
	echo "$out" | tail -n 15
	die "cowbd-check fails on the pool $1 (exit $rc)"
}

srv_restart() { say "restarting $VM_SERVER on the same pool"; _srv_launch; }

srv_kill9() {
	p=$(srv_pid)
	say "kill -9 $VM_SERVER (pid $p)"
	kill -9 "$p"
	while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
	rm -f /run/server.pid
}

# ---- volumes -------------------------------------------------------------
cowctl_() { cowctl --control "$CTL" "$@"; }

vol_create() { # NAME SIZE (K/M/G suffix)
	case "$VM_SERVER" in
	cowbd) run cowctl_ volume create "$1" "$2" ;;
	nbdkit) run truncate -s "$2" "/pool/vols/$1" ;;
	esac
}

snap_create() { # VOL@SNAP
	case "$VM_SERVER" in
	cowbd) run cowctl_ snapshot create "$1" ;;
	nbdkit) run cp --sparse=always "/pool/vols/${1%@*}" "/pool/vols/$1" ;;
	esac
}

vol_clone() { # VOL@SNAP NEW
	case "$VM_SERVER" in
	cowbd) run cowctl_ clone "$1" "$2" ;;
	nbdkit) run cp --sparse=always "/pool/vols/$1" "/pool/vols/$2" ;;
	esac
}

# ---- devices -------------------------------------------------------------
dev_size() { cat "/sys/block/${1#/dev/}/size"; } # in 512-byte sectors

attach() { # DEV EXPORT [nbd-client options...]
	dev=$1 exp=$2; shift 2
	run nbd-client 127.0.0.1 "$PORT" "$dev" -N "$exp" "$@"
	i=0
	while [ "$(dev_size "$dev")" = 0 ]; do
		i=$((i + 1)); [ $i -gt 100 ] && die "$dev has size 0 after attach"
		sleep 0.1
	done
}

detach() { # DEV
	nbd-client -d "$1" >/dev/null 2>&1
	i=0
	while [ "$(dev_size "$1")" != 0 ]; do
		i=$((i + 1)); [ $i -gt 100 ] && die "$1 still attached 10 s after nbd-client -d"
		sleep 0.1
	done
}

vdisk() { # SERIAL: the virtio disk the host gave that serial (/dev/vdX)
	i=0
	while :; do
		for d in /sys/block/vd*; do
			[ "$(cat "$d/serial" 2>/dev/null)" = "$1" ] && echo "/dev/${d##*/}" && return 0
		done
		i=$((i + 1)); [ $i -gt 50 ] && return 1
		sleep 0.1
	done
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

reattach_ro() { # DEV EXPORT DIR: unmount DIR and detach DEV, then attach
	# EXPORT again with the caches dropped, so what comes back is what the
	# server stored: fsck must be clean, and DIR is mounted read-only
	run umount "$3"
	detach "$1"
	drop_caches
	attach "$1" "$2"
	run fsck.ext4 -fn "$1"
	mnt -o ro "$1" "$3"
}

cleanup_all() { # disconnect first: an unmount may wait on a dead device
	for d in /sys/block/nbd*; do
		[ "$(cat "$d/size")" != 0 ] && nbd-client -d "/dev/${d##*/}"
	done
	for m in $(grep -o ' /mnt/[^ ]*' /proc/mounts); do umount -l "$m"; done
	for d in /sys/block/nbd*; do
		[ "$(cat "$d/size")" != 0 ] && nbd-client -d "/dev/${d##*/}"
	done
	srv_stop
}

# ---- file trees ------------------------------------------------------------
make_tree() { # DIR N TAG: N files of 1..256 KiB random data in 4 subdirs
	mkdir -p "$1"
	i=0
	while [ $i -lt "$2" ]; do
		d="$1/$3-d$((i % 4))"; mkdir -p "$d"
		kb=$(( ($(od -An -N2 -tu2 /dev/urandom) % 256) + 1 ))
		dd if=/dev/urandom of="$d/f$i" bs=1024 count=$kb status=none ||
			return 1
		i=$((i + 1))
	done
}

sums() { # DIR: "sha256  ./path" for every file, sorted (lost+found skipped)
	(cd "$1" && find . -type f ! -path './lost+found/*' | sort | xargs -r sha256sum)
}

same() { # FILE1 FILE2: equal contents?  On a difference, prints the first
	# differing byte.  (busybox cmp reads a byte at a time, ~4 MB/s under
	# TCG; md5sum is several times faster.)
	[ "$(md5sum <"$1")" = "$(md5sum <"$2")" ] && return 0
	cmp "$1" "$2" 2>&1 | head -n 1
	return 1
}

check_sums() { # DIR LIST: every file in LIST present with its checksum
	(cd "$1" && sha256sum -c -s "$2") || {
		(cd "$1" && sha256sum -c "$2" 2>&1 | grep -v ': OK$' | head -n 10)
		return 1
	}
}

mnt() { # [mount options...] DEV DIR: mount -t ext4, creating DIR
	eval "_dir=\${$#}"
	mkdir -p "$_dir"
	run mount -t ext4 "$@"
}

mkfs_mount() { # DEV DIR [mkfs options]
	_dev=$1 _dir=$2; shift 2
	run mkfs.ext4 -q -F "$@" "$_dev"
	mnt "$_dev" "$_dir"
}

run_scenario() { # NAME
	SCEN=$1
	fn=scen_$(echo "$1" | tr '-' '_')
	type "$fn" >/dev/null 2>&1 || die "no such scenario"
	dmesg | wc -l >/tmp/dmesg.start
	trap cleanup_all EXIT
	"$fn" || die "scenario ended with status $?"
	# The server must have survived everything and stop cleanly.
	srv_alive || die "$VM_SERVER died during the scenario"
	srv_term
	pool_check "after a clean shutdown"
	vmtest "PASS $SCEN"
	echo PASS >"/tmp/verdict.$SCEN"
}
