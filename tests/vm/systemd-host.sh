# tests/vm/systemd-host.sh — the systemd guest, host side (bash, sourced
# by tests/vm/check.sh with VM_GUESTS=systemd, after the kernel is fetched).
#
# Prepares what the guest boots, each piece cached under $CACHE and made
# again only when its inputs change:
#   1. the package: `make deb` ($BUILD/deb/cowbd_*.deb, DEB_BUILD_OPTIONS=
#      nocheck: the unit tier runs the tests), reported as vm/systemd-package;
#      if it cannot be built, `make install DESTDIR` into the payload instead
#      (said on a FAIL line, or a SKIP line when the packaging tools are
#      missing and CI is not set), and the guest installs that tree
#   2. the root: a Debian $VM_SUITE minbase with systemd (build-rootfs.sh),
#      plus the packages the .deb depends on (the guest has no network), as
#      $CACHE/sd-root-KEY.img, KEY a hash of the package list and the script
#   3. the kernel modules: virtio (stage one mounts the root disk) and
#      nbd.ko (installed in the root's /lib/modules), from the kernel .deb
#   4. the stage-one initramfs (build-initrd.sh with INITRD_INIT=sd-init.sh):
#      busybox, the modules and the payload (the package, sd-*.sh,
#      guest-lib.sh, vmtest.service), copied over the root at boot
# Then sets INITRD, QEMU_EXTRA (the root image as a virtio disk, opened
# snapshot=on: the cached image is never written), VM_CPU, CONSOLE and
# RESULTS for check.sh's boot and verdicts.
#
# Environment: VM_SD_CPU (qemu CPU model, default Westmere: see below),
# VM_SUITE (bookworm), VM_MIRROR (default: the host's apt
# source for that suite, else http://deb.debian.org/debian/); apt's
# Acquire::http::Proxy, when set, is debootstrap's http_proxy.

SD_SUITE=${VM_SUITE:-bookworm}
CONSOLE="$CACHE/console-systemd.log"
RESULTS="$CACHE/results-systemd.log"
SD_BASE_PKGS="systemd-sysv udev kmod util-linux e2fsprogs procps nbd-client"

[ "$(id -u)" = 0 ] || unavailable "the systemd guest's root is made with debootstrap, which needs root"
need_cmd debootstrap mkfs.ext4 dpkg-deb dpkg make sha256sum

# ---- 1. the package -------------------------------------------------------
PAYLOAD="$CACHE/sd-payload"
rm -rf "$PAYLOAD"
mkdir -p "$PAYLOAD/vmtest/pkg" "$PAYLOAD/etc/systemd/system/multi-user.target.wants"
t=$(date +%s)
# A make above this one (make check) must not lend it its jobserver.
sd_make() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$TOP" --no-print-directory BUILD="$BUILD" "$@"; }
if DEB_BUILD_OPTIONS=nocheck sd_make deb >"$CACHE/sd-deb.log" 2>&1; then
	SD_DEB=$(ls "$BUILD"/deb/cowbd_*.deb | head -n 1)
	cp "$SD_DEB" "$PAYLOAD/vmtest/pkg/"
	grep -E '^[WE]: ' "$CACHE/sd-deb.log" | sed 's/^/  vm: lintian: /'
	echo "PASS: vm/systemd-package (${SD_DEB##*/}, lintian: no errors; $(($(date +%s) - t))s)"
	# Its dependencies, first alternatives, without versions.
	SD_RUN_PKGS=$(dpkg-deb -f "$SD_DEB" Depends | tr ',' '\n' |
		sed -e 's/|.*//' -e 's/(.*)//' -e 's/:.*//' -e 's/ //g')
else
	why=$(grep -vE '^(W|I|N): ' "$CACHE/sd-deb.log" | tail -n 1)
	if ! command -v dpkg-buildpackage >/dev/null || ! command -v dh >/dev/null ||
		! command -v lintian >/dev/null; then
		why="packaging tools missing: install the Makefile's DEBPKGS (make deps)"
		[ "${CI:-}" = true ] && echo "FAIL: vm/systemd-package ($why)" ||
			echo "SKIP: vm/systemd-package ($why)"
	else
		echo "FAIL: vm/systemd-package (make deb: $why; log $CACHE/sd-deb.log)"
	fi
	echo "vm: no .deb: the guest installs make install DESTDIR= instead"
	sd_make install DESTDIR="$PAYLOAD/vmtest/stage" PREFIX=/usr SYSCONFDIR=/etc \
		SYSTEMDUNITDIR=/lib/systemd/system >"$CACHE/sd-install.log" 2>&1 ||
		unavailable "make install failed too (log $CACHE/sd-install.log)"
	# The packages that hold the libraries the programs link.
	SD_RUN_PKGS=$(for b in "$PAYLOAD"/vmtest/stage/usr/*bin/*; do ldd "$b"; done |
		grep -o '=> /[^ ]*' | cut -c4- | sort -u | xargs -r dpkg -S 2>/dev/null |
		cut -d: -f1 | sort -u)
fi

# ---- 2. the Debian root image ---------------------------------------------
SD_PKGS=$(echo $SD_BASE_PKGS $SD_RUN_PKGS | tr ' ' '\n' | sort -u | tr '\n' ' ')
key=$( (echo "$SD_SUITE $SD_PKGS"; cat "$HERE/build-rootfs.sh") | sha256sum | cut -c1-12)
SD_IMG="$CACHE/sd-root-$key.img"
if [ -s "$SD_IMG" ]; then
	echo "vm: Debian root $SD_IMG (cached)"
else
	mirror=${VM_MIRROR:-$(apt-get indextargets --format '$(RELEASE) $(COMPONENT) $(REPO_URI)' \
		2>/dev/null | awk -v s="$SD_SUITE" '$1 == s && $2 == "main" { print $3; exit }')}
	mirror=${mirror:-http://deb.debian.org/debian/}
	eval "$(apt-config shell http_proxy Acquire::http::Proxy 2>/dev/null)"
	[ -n "${http_proxy:-}" ] && export http_proxy
	echo "vm: building the Debian root: debootstrap $SD_SUITE from $mirror with $SD_PKGS"
	t=$(date +%s)
	rm -f "$CACHE"/sd-root-*.img
	bash "$HERE/build-rootfs.sh" "$SD_IMG" "$SD_SUITE" "$mirror" $SD_PKGS 2>"$CACHE/sd-root.log" ||
		unavailable "building the Debian root failed: $(tail -n 1 "$CACHE/sd-root.log")"
	echo "vm: Debian root built in $(($(date +%s) - t))s ($(du -m "$SD_IMG" | cut -f1) MiB used)"
fi

# ---- 3. kernel modules ------------------------------------------------------
kernel_modules # check.sh: sets KMODS
SD_MODS=$KMODS

# ---- 4. payload and the stage-one initramfs ---------------------------------
kver=$(cat "$SD_MODS/kver")
mkdir -p "$PAYLOAD/usr/lib/modules/$kver/kernel/drivers/block" # /lib is a link to usr/lib
cp "$SD_MODS/nbd.ko" "$PAYLOAD/usr/lib/modules/$kver/kernel/drivers/block/"
cp "$HERE/sd-run.sh" "$HERE/sd-scenarios.sh" "$HERE/guest-lib.sh" "$PAYLOAD/vmtest/"
cp "$HERE/sd-vmtest.service" "$PAYLOAD/etc/systemd/system/vmtest.service"
ln -s ../vmtest.service "$PAYLOAD/etc/systemd/system/multi-user.target.wants/vmtest.service"
mkdir -p "$CACHE/sd-stage1"
rm -f "$CACHE"/sd-stage1/*.ko
cp "$SD_MODS"/*.ko "$SD_MODS/order" "$CACHE/sd-stage1/"
rm "$CACHE/sd-stage1/nbd.ko"
INITRD="$CACHE/sd-initrd.gz"
INITRD_INIT="$HERE/sd-init.sh" INITRD_FILES="$CACHE/sd-stage1=/modules $PAYLOAD=/payload" \
	bash "$HERE/build-initrd.sh" "$INITRD" "$CACHE/kernel/modules" ||
	unavailable "building the systemd guest's initramfs failed"
QEMU_EXTRA=(-drive "file=$SD_IMG,if=virtio,format=raw,snapshot=on,cache=unsafe")
# SSE4.2 and PCLMULQDQ (what cowbd uses) but no AVX: glibc's AVX2 string
# functions, which every program of this guest runs, are slow under TCG
# (sha256sum of 64 MiB: 10.3 s with -cpu max, 3.7 s here).
VM_CPU=${VM_SD_CPU:-Westmere}
# qemu keeps the disk's snapshot overlay in $TMPDIR (deleted on exit).
export TMPDIR="$CACHE"
