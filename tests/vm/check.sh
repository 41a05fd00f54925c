#!/bin/bash
# tests/vm/check.sh — VM test tier: the Linux kernel NBD client against cowbd.
#
# Boots a small qemu guest (Debian's cloud kernel, which has nbd.ko; a
# busybox initramfs with nbd-client, e2fsprogs, util-linux, cowbd and
# cowctl), runs the scenarios of tests/vm/guest-scenarios.sh in one boot,
# and prints "PASS: vm/NAME" / "FAIL: vm/NAME" per scenario for
# tests/run.sh (a scenario with a host side, tests/vm/host-NAME.sh, passes
# when that passes too after the boot: incremental-backup, whose pool and
# records are virtio disks the host reads).  Then a second guest, a Debian
# root with systemd as PID 1, installs the .deb and runs
# tests/vm/sd-scenarios.sh (systemd-*; set up by tests/vm/systemd-host.sh).
# See docs/TESTING.md.
#
# Environment:
#   BUILD          build directory (default: <repo>/build); the kernel .deb
#                  and its extraction are cached in $BUILD/vm-cache
#   VM_GUESTS      busybox, systemd or both (default "busybox systemd": this
#                  script runs once per guest, all within VM_TOTAL seconds,
#                  default 580; the busybox guest leaves VM_SD_RESERVE, 300)
#   VM_SCENARIOS   space-separated subset to run (default: all of each guest;
#                  names systemd-* are the systemd guest's)
#   VM_SERVER      cowbd (default) | nbdkit (harness self-test, no cowbd)
#   VM_TIMEOUT     seconds for one guest's boot (default 540; tests/run.sh allows 600); a guest still
#                  running then is killed and its console tail printed
#   VM_SCEN_TIMEOUT  seconds for one scenario inside the guest (default 240)
#   VM_MEM         guest memory in MiB (default 1024)
#   VM_ACCEL       qemu accelerator (default tcg; kvm hangs on these hosts)
#   VM_CPU         qemu CPU model (default max: cowbd needs SSE4.2)
#   CI=true        a missing prerequisite is a FAIL instead of a SKIP
# Exit: 0 all passed, 1 something failed, 77 skipped (prerequisite missing).
set -u
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
: "${BUILD:=$TOP/build}"
CACHE="$BUILD/vm-cache"
ALL_SCENARIOS="ext4-roundtrip snapshot-clone kill9-recovery blocksize-discard multiconn
	incremental-backup upgrade"
SD_SCENARIOS="systemd-install systemd-activation systemd-ext4 systemd-reload systemd-restart systemd-stop
	systemd-kill systemd-watchdog systemd-remove"
VM_SERVER=${VM_SERVER:-cowbd}
VM_GUESTS=${VM_GUESTS:-busybox systemd}
[ "$VM_SERVER" = nbdkit ] && VM_GUESTS=busybox # the systemd guest installs cowbd
[ "$VM_GUESTS" = systemd ] && ALL_SCENARIOS=$SD_SCENARIOS
SCENARIOS=$(echo ${VM_SCENARIOS:-$ALL_SCENARIOS})
VM_TIMEOUT=${VM_TIMEOUT:-540}
VM_SCEN_TIMEOUT=${VM_SCEN_TIMEOUT:-240}
VM_MEM=${VM_MEM:-1024}
VM_ACCEL=${VM_ACCEL:-tcg}
# qemu's default TCG model (qemu64) lacks SSE4.2, which cowbd's CRC32C
# (built with -msse4.2) needs; "max" gives every feature TCG emulates.
VM_CPU=${VM_CPU:-max}
CONSOLE="$CACHE/console.log"   # ttyS0: kernel and scenario output
RESULTS="$CACHE/results.log"   # ttyS1: only the guest's VMTEST lines
T0=$(date +%s)

# A prerequisite is missing: one line, then SKIP (exit 77), or FAIL under CI.
unavailable() {
	if [ "${CI:-}" = true ]; then
		echo "FAIL: vm/prerequisites ($*)"
		exit 1
	fi
	echo "SKIP: vm ($*)"
	echo "vm tests skipped: $*"
	exit 77
}

need_cmd() {
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 ||
			unavailable "$c not found; install the packages in the Makefile's TESTPKGS (make deps)"
	done
}

# ---- several guests: this script once per guest --------------------------
# Each prints its own verdicts; the exit status is 1 if one failed, 77 if
# all skipped, else 0.  The guests share one deadline (VM_DEADLINE) inside
# tests/run.sh's 600 s; a guest leaves VM_RESERVE seconds of it to those after it.
if [ "$VM_GUESTS" != busybox ] && [ "$VM_GUESTS" != systemd ]; then
	export VM_DEADLINE=$((T0 + ${VM_TOTAL:-580}))
	overall=77 rest=" $VM_GUESTS "
	for g in $VM_GUESTS; do
		rest=${rest/ $g / }
		case "$g" in
		busybox) sel=$(for s in ${VM_SCENARIOS:-$ALL_SCENARIOS}; do echo "$s"; done | grep -v '^systemd-') ;;
		systemd) sel=$(for s in ${VM_SCENARIOS:-$SD_SCENARIOS}; do echo "$s"; done | grep '^systemd-') ;;
		*) echo "FAIL: vm/config (VM_GUESTS: no guest '$g'; want busybox, systemd)"; exit 1 ;;
		esac
		[ -n "$sel" ] || continue
		reserve=0
		case "$rest" in *systemd*) reserve=${VM_SD_RESERVE:-300} ;; esac
		VM_GUESTS=$g VM_SCENARIOS=$(echo $sel) VM_RESERVE=$reserve bash "$0"
		case $? in
		0) [ $overall = 77 ] && overall=0 ;;
		77) ;;
		*) overall=1 ;;
		esac
	done
	echo "vm: all guests finished in $(( $(date +%s) - T0 ))s"
	exit $overall
fi

need_cmd qemu-system-x86_64 busybox cpio gzip ldd dpkg-deb apt-get timeout \
	nbd-client mkfs.ext4 fsck.ext4 blkdiscard fsfreeze truncate
ldd "$(command -v busybox)" >/dev/null 2>&1 &&
	unavailable "busybox is dynamically linked; install busybox-static"
case "$VM_SERVER" in
cowbd)
	for b in cowbd cowctl; do
		[ -x "$BUILD/$b" ] || unavailable "$BUILD/$b not built (run make)"
	done
	SERVER_BINS="$BUILD/cowbd=/usr/sbin/cowbd $BUILD/cowctl=/usr/sbin/cowctl"
	# The offline checker, when built, runs on each pool after a crash and
	# after each scenario.
	[ -x "$BUILD/cowbd-check" ] &&
		SERVER_BINS="$SERVER_BINS $BUILD/cowbd-check=/usr/sbin/cowbd-check" ;;
nbdkit)
	need_cmd nbdkit cp
	plugindir=$(nbdkit --dump-config | sed -n 's/^plugindir=//p')
	SERVER_BINS="$(command -v nbdkit) $plugindir/nbdkit-file-plugin.so $(command -v cp)" ;;
*) echo "FAIL: vm/config (VM_SERVER=$VM_SERVER: want cowbd or nbdkit)"; exit 1 ;;
esac
mkdir -p "$CACHE" || unavailable "cannot create $CACHE"

# ---- kernel: Debian's cloud kernel, fetched once and cached ---------------
# The extracted kernel stays in $CACHE/kernel; the network is only needed
# the first time (or after `make clean`).
kernel_pkg() { # the versioned package linux-image-cloud-amd64 depends on
	apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n 1
}

download_kernel() { # PKG: the .deb into $CACHE; prints its path
	local deb
	deb=$(ls "$CACHE/$1"_*.deb 2>/dev/null | head -n 1)
	if [ -z "$deb" ]; then
		echo "vm: downloading $1" >&2
		(cd "$CACHE" && apt-get download -q "$1" >"$CACHE/download.log" 2>&1) || return 1
		deb=$(ls "$CACHE/$1"_*.deb 2>/dev/null | head -n 1)
	fi
	[ -n "$deb" ] && echo "$deb"
}

fetch_kernel() {
	local pkg deb updated=
	pkg=$(kernel_pkg)
	if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
		echo "vm: no package lists; running apt-get update"
		apt-get update -qq >/dev/null 2>&1; updated=1
		pkg=$(kernel_pkg)
	fi
	[ -n "$pkg" ] || unavailable "apt-cache knows no linux-image-cloud-amd64 (apt-get update?)"
	if ! deb=$(download_kernel "$pkg") && [ -z "$updated" ] && [ "$(id -u)" = 0 ]; then
		# Stale lists name a version the mirror no longer has.
		echo "vm: download failed; running apt-get update and retrying"
		apt-get update -qq >/dev/null 2>&1
		pkg=$(kernel_pkg)
		[ -n "$pkg" ] && deb=$(download_kernel "$pkg")
	fi
	[ -n "$deb" ] ||
		unavailable "apt-get download $pkg failed: $(grep -E '^(E|W|Err):' "$CACHE/download.log" 2>/dev/null | head -n 1)"
	tmp="$CACHE/kernel.tmp"
	rm -rf "$tmp"; mkdir -p "$tmp/x"
	dpkg-deb -x "$deb" "$tmp/x" || unavailable "cannot unpack $deb"
	cp "$tmp"/x/boot/vmlinuz-* "$tmp/vmlinuz" 2>/dev/null ||
		unavailable "$deb has no /boot/vmlinuz"
	local kmod
	kmod=$(ls -d "$tmp"/x/lib/modules/* 2>/dev/null | head -n 1)
	local ko
	ko=$(find "$kmod" -path '*/drivers/block/nbd.ko*' 2>/dev/null | head -n 1)
	[ -n "$ko" ] || unavailable "$pkg has no nbd.ko"
	mkdir -p "$tmp/modules/kernel/drivers/block"
	case "$ko" in
	*.ko) cp "$ko" "$tmp/modules/kernel/drivers/block/nbd.ko" ;;
	*.ko.xz) xz -dc "$ko" >"$tmp/modules/kernel/drivers/block/nbd.ko" ;;
	*.ko.zst) zstd -qdc "$ko" >"$tmp/modules/kernel/drivers/block/nbd.ko" ;;
	*.ko.gz) gzip -dc "$ko" >"$tmp/modules/kernel/drivers/block/nbd.ko" ;;
	esac || unavailable "cannot decompress $ko"
	echo "$pkg" >"$tmp/package"
	rm -rf "$tmp/x" "$CACHE/kernel"
	mv "$tmp" "$CACHE/kernel"
}
[ -s "$CACHE/kernel/vmlinuz" ] && [ -s "$CACHE/kernel/package" ] || fetch_kernel
echo "vm: kernel $(cat "$CACHE/kernel/package"), server $VM_SERVER"

# The modules a guest with virtio disks loads (the cloud kernel has virtio
# as modules), and nbd.ko, into KMODS=$CACHE/modules-PKG, extracted once:
# *.ko, "order" (the virtio ones in load order, each after what it depends
# on) and "kver".
kernel_modules() {
	local kpkg kdeb kmod m ko order
	kpkg=$(cat "$CACHE/kernel/package")
	KMODS="$CACHE/modules-$kpkg"
	[ -s "$KMODS/order" ] && return 0
	kdeb=$(download_kernel "$kpkg") || unavailable "the kernel package $kpkg is gone from $CACHE"
	rm -rf "$CACHE"/modules-* "$CACHE"/sd-modules-* "$KMODS.tmp"
	mkdir -p "$KMODS.tmp/x"
	dpkg-deb --fsys-tarfile "$kdeb" | tar -C "$KMODS.tmp/x" -x --wildcards \
		'./lib/modules/*/kernel/drivers/virtio/*' './lib/modules/*/kernel/drivers/block/*' ||
		unavailable "cannot unpack the modules of $kdeb"
	kmod=$(ls -d "$KMODS.tmp"/x/lib/modules/*)
	order="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk nbd"
	for m in $order; do
		ko=$(find "$kmod" -name "$m.ko*" | head -n 1)
		[ -n "$ko" ] || unavailable "$kpkg has no $m.ko"
		case "$ko" in
		*.ko) cp "$ko" "$KMODS.tmp/$m.ko" ;;
		*.ko.xz) xz -dc "$ko" >"$KMODS.tmp/$m.ko" ;;
		*.ko.zst) zstd -qdc "$ko" >"$KMODS.tmp/$m.ko" ;;
		*.ko.gz) gzip -dc "$ko" >"$KMODS.tmp/$m.ko" ;;
		esac || unavailable "cannot decompress $ko"
	done
	echo "${order% nbd}" >"$KMODS.tmp/order"
	basename "$kmod" >"$KMODS.tmp/kver"
	rm -rf "$KMODS.tmp/x"
	mv "$KMODS.tmp" "$KMODS"
}

# ---- initramfs ----------------------------------------------------------
INITRD="$CACHE/initrd.gz" QEMU_EXTRA=()
if [ "$VM_GUESTS" = systemd ]; then
	# The .deb, the Debian root image and a stage-one initramfs; sets
	# INITRD, QEMU_EXTRA (the root disk), VM_CPU, CONSOLE, RESULTS.
	. "$HERE/systemd-host.sh"
else
	BINS=""
	for c in nbd-client mkfs.ext4 fsck.ext4 blkdiscard fsfreeze; do
		BINS="$BINS $(command -v "$c")"
	done
	# incremental-backup writes its pool and its records on two virtio
	# disks (serials pool, records), files that host-incremental-backup.sh
	# reads after the boot.
	INITRD_FILES=
	case " $SCENARIOS " in
	*" incremental-backup "*)
		kernel_modules
		INITRD_FILES="$KMODS=/lib/modules/virtio"
		rm -rf "$CACHE/incremental-backup"
		mkdir -p "$CACHE/incremental-backup"
		for d in pool:512M records:4M; do
			f="$CACHE/incremental-backup/${d%:*}.img"
			truncate -s "${d#*:}" "$f" || unavailable "cannot create $f"
			QEMU_EXTRA+=(-drive "file=$f,if=none,id=${d%:*},format=raw,cache=unsafe"
				-device "virtio-blk-pci,drive=${d%:*},serial=${d%:*}")
		done ;;
	esac
	INITRD_FILES=$INITRD_FILES bash "$HERE/build-initrd.sh" "$CACHE/initrd.gz" \
		"$CACHE/kernel/modules" $BINS $SERVER_BINS || unavailable "building the initramfs failed"
fi

# ---- boot ---------------------------------------------------------------
append="console=ttyS0 quiet panic=-1 vmtest.server=$VM_SERVER vmtest.timeout=$VM_SCEN_TIMEOUT"
append="$append vmtest.scenarios=$(echo $SCENARIOS | tr ' ' ',')"
# Within the shared deadline, when there is one, less what later guests need.
bound=$VM_TIMEOUT
if [ -n "${VM_DEADLINE:-}" ]; then
	left=$(( VM_DEADLINE - ${VM_RESERVE:-0} - $(date +%s) ))
	[ "$left" -lt "$bound" ] && bound=$left
	[ "$bound" -ge 30 ] || bound=30
fi
rm -f "$RESULTS"
echo "vm: booting ($VM_ACCEL, ${VM_MEM}M, time bound ${bound}s); console: $CONSOLE"
timeout -k 5 "$bound" qemu-system-x86_64 -accel "$VM_ACCEL" -cpu "$VM_CPU" -m "$VM_MEM" -smp 2 \
	-nographic -no-reboot -nic none -monitor none \
	-serial stdio -serial "file:$RESULTS" \
	-kernel "$CACHE/kernel/vmlinuz" -initrd "$INITRD" "${QEMU_EXTRA[@]}" \
	-append "$append" </dev/null 2>&1 |
	sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g' >"$CONSOLE"
qrc=${PIPESTATUS[0]}
secs=$(( $(date +%s) - T0 ))

# ---- verdicts -----------------------------------------------------------
# A scenario with a host side, tests/vm/host-NAME.sh (given $CACHE/NAME),
# passes when the guest's part and then that script pass; its output is
# printed indented, exit 77 there is a SKIP (a FAIL under CI=true).
host_part() { # NAME GUEST-TIME
	local t rc log="$CACHE/host-$1.log"
	t=$(date +%s)
	bash "$HERE/host-$1.sh" "$CACHE/$1" >"$log" 2>&1
	rc=$?
	t=$(($(date +%s) - t))
	sed 's/^/  /' "$log"
	case $rc in
	0) echo "PASS: vm/$1 (guest $2, host ${t}s)" ;;
	77)
		[ "${CI:-}" = true ] && { echo "FAIL: vm/$1 (host side: $(tail -n 1 "$log"))"; return 1; }
		echo "SKIP: vm/$1 (host side: $(tail -n 1 "$log"))" ;;
	*) echo "FAIL: vm/$1 (host side, exit $rc: $(grep -m 1 '^error: ' "$log"))"; return 1 ;;
	esac
}

grep -E '^(VMTEST |vm\[)' "$CONSOLE" | grep -vE '^VMTEST (PASS|FAIL|SKIP) ' | sed 's/^/  /'
failed=0
for s in $SCENARIOS; do
	v=$(tr -d '\r' <"$RESULTS" | grep -E "^VMTEST (PASS|FAIL|SKIP) $s(:|\$)" | head -n 1)
	case "$v" in
	"VMTEST PASS $s")
		t=$(tr -d '\r' <"$RESULTS" | sed -n "s/^VMTEST TIME $s //p")
		if [ -f "$HERE/host-$s.sh" ]; then
			host_part "$s" "$t" || failed=1
		else
			echo "PASS: vm/$s ($t)"
		fi ;;
	"VMTEST SKIP $s"*) echo "SKIP: vm/$s (${v#*: })" ;;
	"VMTEST FAIL $s"*)
		echo "FAIL: vm/$s (${v#*: })"; failed=1
		# The scenario's part of the console, diagnostics included.
		sed -n "/^VMTEST BEGIN $s\$/,/^VMTEST TIME $s /p" "$CONSOLE" | tail -n 60 | sed 's/^/    /' ;;
	*)
		echo "FAIL: vm/$s (no verdict: guest hung, panicked or timed out; qemu exit $qrc)"
		failed=2 ;;
	esac
done
touch "$RESULTS"
if [ $failed = 2 ] || ! grep -q '^VMTEST DONE' "$RESULTS"; then
	[ "$qrc" = 124 ] && echo "vm: guest killed after ${bound}s"
	echo "vm: console tail ($CONSOLE):"
	tail -n 40 "$CONSOLE" | sed 's/^/    /'
	failed=1
fi
echo "vm: finished in ${secs}s"
exit $failed
