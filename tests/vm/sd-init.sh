#!/bin/sh
# tests/vm/sd-init.sh — /init of the systemd guest's initramfs (busybox sh).
#
# Stage one of the systemd guest: the Debian root is an ext4 image on a
# virtio disk (/dev/vda, opened by qemu with snapshot=on, so nothing here
# reaches the cached image), and the cloud kernel has virtio as modules.
# Loads them (the order is /modules/order), mounts /dev/vda, copies
# /payload over it (the package, the scenario scripts, vmtest.service and
# nbd.ko: see tests/vm/systemd-host.sh) and hands over to systemd as PID 1.
# On failure it prints one "VMTEST STAGE1:" line and reboots (qemu exits;
# the host reports every scenario without a verdict).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin 2>/dev/null
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
	echo "VMTEST STAGE1: $*"
	sleep 1
	reboot -f
}

for m in $(cat /modules/order); do
	insmod "/modules/$m.ko" || fail "insmod $m.ko failed"
done
i=0
while [ ! -b /dev/vda ]; do
	i=$((i + 1)); [ $i -gt 100 ] && fail "no /dev/vda 10 s after loading virtio_blk"
	sleep 0.1
done
mount -t ext4 -o rw,noatime /dev/vda /newroot || fail "cannot mount /dev/vda"
[ -x /newroot/lib/systemd/systemd ] || fail "/dev/vda has no /lib/systemd/systemd"
cp -a /payload/. /newroot/ || fail "copying the payload failed"
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /lib/systemd/systemd
