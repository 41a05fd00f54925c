#!/bin/sh
# tests/vm/guest-init.sh — /init of the VM test guest (busybox sh, PID 1).
#
# Sets up the guest (devtmpfs, proc, sys, tmpfs, loopback, nbd.ko), runs
# the scenarios named on the kernel command line (vmtest.scenarios=a,b,...;
# vmtest.server=cowbd|nbdkit) one by one from /vmtest/guest-scenarios.sh,
# and prints one verdict line per scenario on the serial console:
#   VMTEST PASS name | VMTEST FAIL name: reason | VMTEST SKIP name: reason
# then "VMTEST DONE", and reboots (qemu -no-reboot exits).  Verdicts also go
# to ttyS1, which carries nothing else.  The host (tests/vm/check.sh) turns
# these into PASS:/FAIL:/SKIP: lines; a missing verdict means the guest hung
# or died.  Nothing here talks to any network but the guest's own lo.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin 2>/dev/null
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up
hostname vmtest
echo 1 >/proc/sys/kernel/panic_on_oops
# Kernel messages about nbd errors are expected in the crash scenario; keep
# the console readable but visible (warnings and up).
echo 4 >/proc/sys/kernel/printk

. /vmtest/guest-lib.sh # for vmtest()
stty -F /dev/ttyS1 raw -echo 2>/dev/null

arg() { # value of vmtest.NAME= on the kernel command line
	tr ' ' '\n' </proc/cmdline | sed -n "s/^vmtest\.$1=//p" | tail -n 1
}
SCENARIOS=$(arg scenarios | tr ',' ' ')
export VM_SERVER=$(arg server)
export VM_SCEN_TIMEOUT=$(arg timeout)
: "${VM_SERVER:=cowbd}" "${VM_SCEN_TIMEOUT:=240}"

# After a scenario timed out: what is still running, and where blocked
# tasks sit in the kernel.
hung_report() {
	echo "--- processes left (user space, and any in D state):"
	ps -o pid,stat,args | awk '$2 ~ /^D/ || ($3 !~ /^\[/ && $3 !~ /^\{ps\}/)'
	n=$(dmesg | wc -l)
	echo 1 >/proc/sys/kernel/sysrq
	echo w >/proc/sysrq-trigger
	sleep 1
	echo "--- blocked tasks (sysrq-w):"
	dmesg | tail -n +$((n + 1)) | head -n 80
	echo "---"
}

echo
vmtest "BOOTED $(uname -r) cpus=$(nproc) mem=$(free -m | awk '/Mem:/{print $2}')M server=$VM_SERVER"
# Virtio disks, when the host gave some (incremental-backup): the cloud
# kernel has virtio as modules, in /lib/modules/virtio with their order.
for m in $(cat /lib/modules/virtio/order 2>/dev/null); do
	insmod "/lib/modules/virtio/$m.ko" || vmtest "insmod $m.ko failed"
done
if insmod /lib/modules/nbd.ko nbds_max=8 max_part=0; then
	for s in $SCENARIOS; do
		t0=$(date +%s)
		vmtest "BEGIN $s"
		# Each scenario runs in its own shell so its traps clean up; the
		# KILL timeout bounds it (a process stuck in D state stays, but the
		# next verdict or the host's timeout reports that).
		timeout -s KILL "$VM_SCEN_TIMEOUT" sh -c ". /vmtest/guest-lib.sh; . /vmtest/guest-scenarios.sh; run_scenario $s"
		rc=$?
		if [ $rc -eq 137 ]; then
			vmtest "FAIL $s: timed out after ${VM_SCEN_TIMEOUT}s in the guest"
			hung_report
		fi
		[ $rc -ne 0 ] && [ $rc -ne 137 ] && ! grep -q . /tmp/verdict.$s 2>/dev/null &&
			vmtest "FAIL $s: scenario shell exited $rc without a verdict"
		vmtest "TIME $s $(( $(date +%s) - t0 ))s"
		sh -c ". /vmtest/guest-lib.sh; cleanup_all" >/dev/null 2>&1
	done
else
	for s in $SCENARIOS; do vmtest "FAIL $s: insmod nbd.ko failed"; done
fi
vmtest "DONE"
sync
# With -no-reboot, qemu exits on a guest reboot; poweroff needs ACPI.
reboot -f
sleep 10
