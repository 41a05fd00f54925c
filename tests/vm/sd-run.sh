#!/bin/bash
# tests/vm/sd-run.sh — the systemd guest's test runner (vmtest.service).
#
# Like guest-init.sh in the busybox guest: loads nbd, runs the scenarios
# named on the kernel command line (vmtest.scenarios=a,b,...) one by one
# from /vmtest/sd-scenarios.sh, each in its own shell under a KILL timeout
# (vmtest.timeout=SECS), prints VMTEST BEGIN/PASS/FAIL/SKIP/TIME lines on
# the console and on ttyS1, then "VMTEST DONE", and reboots (qemu
# -no-reboot exits).  The scenarios build on one another (install, then
# activation, then a filesystem...), so they share /tmp/sd/.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
. /vmtest/sd-scenarios.sh # vmtest, diag
stty -F /dev/ttyS1 raw -echo 2>/dev/null

arg() { # value of vmtest.NAME= on the kernel command line
	tr ' ' '\n' </proc/cmdline | sed -n "s/^vmtest\.$1=//p" | tail -n 1
}
SCENARIOS=$(arg scenarios | tr ',' ' ')
T=$(arg timeout)
: "${T:=240}"

mkdir -p /tmp/sd
vmtest "BOOTED $(uname -r) cpus=$(nproc) mem=$(free -m | awk '/Mem:/{print $2}')M" \
	"$(systemctl --version | head -n 1) $(systemd-analyze time 2>/dev/null | head -n 1)"
if depmod -a && modprobe nbd nbds_max=8 max_part=0; then
	for s in $SCENARIOS; do
		t0=$(date +%s)
		vmtest "BEGIN $s"
		timeout -s KILL "$T" bash -c ". /vmtest/sd-scenarios.sh; run_sd $s"
		rc=$?
		if [ $rc -eq 137 ]; then
			vmtest "FAIL $s: timed out after ${T}s in the guest"
			SCEN=$s diag
		fi
		[ $rc -ne 0 ] && [ $rc -ne 137 ] && ! grep -q . "/tmp/verdict.$s" 2>/dev/null &&
			vmtest "FAIL $s: scenario shell exited $rc without a verdict"
		vmtest "TIME $s $(($(date +%s) - t0))s"
	done
else
	for s in $SCENARIOS; do vmtest "FAIL $s: modprobe nbd failed"; done
fi
vmtest "DONE"
sync
sleep 1 # let the serial ports drain
systemctl reboot --force --force
