# tests/vm/sd-scenarios.sh — the systemd guest's scenarios (bash, in the
# guest; run by tests/vm/sd-run.sh).
#
# cowbd as an operator runs it: installed from the .deb (or, when the host
# could not build one, from make install's tree), its units as shipped,
# systemd as PID 1, the kernel NBD client.  The scenarios run in this order
# and build on one another (state in /tmp/sd/): install, socket activation,
# a filesystem, reload, stop, kill, watchdog, upgrade and removal.  Each dies with a reason on
# the first wrong result; after a failed install the rest are skipped.
# What each proves: docs/TESTING.md.
. /vmtest/guest-lib.sh # vmtest, say, die, run, attach, detach, dev_size, make_tree, sums...
CTL=/run/cowbd/control.sock
POOL=/var/lib/cowbd/pool.img
ST=/tmp/sd
DROPIN=/etc/systemd/system/cowbd.service.d

# guest-lib.sh's is for busybox's sha256sum (-s); this one is GNU's.
check_sums() { # DIR LIST: every file in LIST present with its checksum
	local out
	out=$(cd "$1" && sha256sum -c --quiet "$2" 2>&1) && return 0
	echo "$out" | head -n 10
	return 1
}

unit() { systemctl show --value -p "$2" "$1"; } # UNIT PROPERTY
main_pid() { unit cowbd.service MainPID; }
is_active() { [ "$(systemctl is-active "$1")" = active ]; }
journal() { journalctl -q --no-pager -o cat -u cowbd.service; } # messages, systemd's too
journal_since() { journal | tail -n +$(($1 + 1)); }             # after the first N lines
journal_has() { journal_since "$1" | grep -q -- "$2"; }         # N PATTERN
status_has() { unit cowbd.service StatusText | grep -q -- "$1"; }
restarted() { is_active cowbd.service && [ "$(main_pid)" != "$1" ] && [ "$(main_pid)" != 0 ]; }

wait_for() { # SECS WHAT CMD...: CMD succeeds within SECS seconds, or die
	local secs=$1 n=$(($1 * 5)) what=$2
	shift 2
	until "$@"; do
		n=$((n - 1))
		[ $n -gt 0 ] || die "$what: not within $secs s"
		sleep 0.2
	done
}

stopped_clean() { # WHAT: cowbd.service exited 0 and says so in the journal
	[ "$(unit cowbd.service ExecMainStatus)" = 0 ] && [ "$(unit cowbd.service Result)" = success ] ||
		die "$1: cowbd.service exited with status $(unit cowbd.service ExecMainStatus), result $(unit cowbd.service Result) (want 0, success)"
	journal | tail -n 5 | grep -q 'info: stopped$' ||
		die "$1: no 'stopped' line from cowbd at the end of its journal"
}

pool_clean() { # WHEN: cowbd-check on the stopped service's pool
	out=$(cowbd-check "$POOL" 2>&1) || { echo "$out" | tail -n 15; die "cowbd-check fails on $POOL $1"; }
}

# guest-lib.sh's die calls diag: the units' state first, then guest-lib's
# own (its "server log" is the cowbd units' journal here, then dmesg and
# the attached devices).
eval "lib_diag() $(declare -f diag | tail -n +2)"
SRVLOG=$ST/journal.tail
diag() {
	echo "--- $SCEN diagnostics: units"
	systemctl status --no-pager -l -n 0 cowbd.service cowbd.socket cowbd-control.socket 2>&1 |
		head -n 30
	journalctl -q --no-pager -n 20 -o short-monotonic \
		-u cowbd.service -u cowbd.socket -u cowbd-control.socket >$SRVLOG 2>&1
	lib_diag
}

run_sd() { # NAME
	SCEN=$1
	fn=scen_$(echo "$1" | tr '-' '_')
	type "$fn" >/dev/null 2>&1 || die "no such scenario"
	dmesg | wc -l >/tmp/dmesg.start
	if [ "$1" != systemd-install ] && [ ! -e $ST/installed ]; then
		vmtest "SKIP $SCEN: cowbd is not installed (systemd-install failed)"
		echo SKIP >"/tmp/verdict.$SCEN"
		return 0
	fi
	"$fn" || die "scenario ended with status $?"
	vmtest "PASS $SCEN"
	echo PASS >"/tmp/verdict.$SCEN"
}

# 1. The package installs offline: the cowbd user (in group disk) and its
#    directories exist (sysusers, tmpfiles), the units are loaded, and
#    nothing is enabled or running (the package leaves that to the operator).
scen_systemd_install() {
	deb=$(ls /vmtest/pkg/cowbd_*.deb 2>/dev/null | head -n 1)
	if [ -n "$deb" ]; then
		out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$deb" 2>&1) ||
			{ echo "$out" | tail -n 15; die "apt-get install ${deb##*/} failed"; }
		dpkg-query -W -f '${Status}' cowbd | grep -q 'install ok installed' ||
			die "dpkg does not have cowbd installed: $(dpkg-query -W -f '${Status}' cowbd)"
		say "installed ${deb##*/} with apt-get"
		if [ -f /etc/cowbd/cowbd.conf ]; then
			dpkg-query -W -f '${Conffiles}' cowbd | grep -q ' /etc/cowbd/cowbd.conf ' ||
				die "/etc/cowbd/cowbd.conf is not a conffile of the package"
		fi
	else
		[ -d /vmtest/stage ] || die "neither a package nor a make install tree in /vmtest"
		run cp -a /vmtest/stage/. /
		run systemd-sysusers
		run systemd-tmpfiles --create
		run systemctl daemon-reload
		say "no .deb (see vm/systemd-package): installed make install DESTDIR's tree"
	fi
	id cowbd >/dev/null 2>&1 || die "no user cowbd (systemd-sysusers)"
	id -nG cowbd | grep -qw disk || die "user cowbd is not in group disk: $(id -nG cowbd)"
	own=$(stat -c '%U:%G %a' /var/lib/cowbd 2>&1)
	[ "$own" = "cowbd:cowbd 750" ] || die "/var/lib/cowbd: $own (want cowbd:cowbd 750: systemd-tmpfiles)"
	[ -d /run/cowbd ] || die "no /run/cowbd (systemd-tmpfiles)"
	for u in cowbd.service cowbd.socket cowbd-control.socket; do
		[ "$(unit $u LoadState)" = loaded ] || die "$u: $(unit $u LoadState)"
		e=$(systemctl is-enabled $u 2>&1)
		[ "$e" = disabled ] || die "$u is $e after the install (want disabled)"
		is_active $u && die "$u is running after the install"
	done
	touch $ST/installed
}

# 2. Socket activation, both ways: cowctl on cowbd-control.socket starts
#    cowbd (and creates vol0, which the new pool lacks); stopped again with
#    its sockets left listening, `nbd-client 127.0.0.1 10809 -N vol0` starts
#    it through cowbd.socket and is served.
scen_systemd_activation() {
	run systemctl start cowbd.socket cowbd-control.socket
	is_active cowbd.service && die "cowbd.service started with its sockets, before any client"
	[ -S $CTL ] || die "no control socket $CTL"
	run cowctl volume create vol0 256M
	is_active cowbd.service ||
		die "cowbd.service is $(systemctl is-active cowbd.service) after cowctl used its socket"
	say "cowctl on cowbd-control.socket started cowbd (pid $(main_pid)) and created vol0"
	run systemctl stop cowbd.service
	is_active cowbd.socket || die "cowbd.socket stopped with cowbd.service"
	is_active cowbd.service && die "cowbd.service still active after systemctl stop"
	attach /dev/nbd0 vol0
	is_active cowbd.service || die "nbd-client on cowbd.socket did not start cowbd.service"
	[ "$(dev_size /dev/nbd0)" = 524288 ] ||
		die "/dev/nbd0 has $(dev_size /dev/nbd0) sectors (want 524288: 256 MiB)"
	wait_for 15 "status 'to 1 client'" status_has "to 1 client"
	say "nbd-client on cowbd.socket started cowbd (pid $(main_pid)): $(unit cowbd.service StatusText)"
}

# 3. A filesystem on the socket-activated volume: mkfs.ext4, mount, write, sync.
scen_systemd_ext4() {
	mkfs_mount /dev/nbd0 /mnt/v
	make_tree /mnt/v 30 ext4 || die "writing the file tree failed"
	sync
	sums /mnt/v >$ST/v.sums
	say "$(wc -l <$ST/v.sums) files, $(du -sk /mnt/v | cut -f1) KiB on vol0, synced"
}

# 4. systemctl reload: SIGHUP to the same process, which stays active and
#    reads /etc/cowbd/cowbd.conf again: a log level and an access rule for
#    vol0 (only 192.0.2.0/24) take effect at once: a new client from
#    127.0.0.1 is refused vol0 while the mounted one goes on writing;
#    with the file restored and reloaded, it attaches again.
conf_reload() { # WHAT: systemctl reload; same pid, active, a SIGHUP line
	local pid n
	pid=$(main_pid) n=$(journal | wc -l)
	run systemctl reload cowbd.service
	is_active cowbd.service || die "cowbd.service is $(systemctl is-active cowbd.service) after reload"
	[ "$(main_pid)" = "$pid" ] || die "reload replaced cowbd (pid $pid, now $(main_pid))"
	wait_for 10 "$1: cowbd's SIGHUP lines in the journal" journal_has "$n" "SIGHUP: access rules"
	journal_since "$n" | grep SIGHUP >$ST/reload.log
}

scen_systemd_reload() {
	conf=/etc/cowbd/cowbd.conf
	[ -f $conf ] || die "no $conf"
	cp $conf $ST/cowbd.conf.orig
	sed -i 's/^log-level = .*/log-level = debug/' $conf
	printf '\n[export vol0]\nallow = 192.0.2.0/24\n' >>$conf
	run cowbd --check-config $conf
	conf_reload "the changed file"
	grep -q 'SIGHUP: log-level debug' $ST/reload.log || die "no 'SIGHUP: log-level debug' line"
	grep -q 'SIGHUP: access rules for 1 export' $ST/reload.log ||
		die "no 'SIGHUP: access rules for 1 export' line"
	if nbd-client 127.0.0.1 10809 /dev/nbd1 -N vol0 >/dev/null 2>&1; then
		die "a client from 127.0.0.1 attached vol0 after the reload allowed only 192.0.2.0/24"
	fi
	make_tree /mnt/v 5 reload || die "the connected client could not write after the reload"
	sync
	sums /mnt/v >$ST/v.sums
	say "after reload: $(tr '\n' ';' <$ST/reload.log)"
	cp $ST/cowbd.conf.orig $conf
	conf_reload "the restored file"
	attach /dev/nbd1 vol0
	udevadm settle # udev reads the new device; no disconnect under it
	detach /dev/nbd1
	say "restored $conf: 127.0.0.1 attaches vol0 again"
}

# 4b. systemctl restart keeps the kernel client's connection (the fd store:
#    docs/OPERATIONS.md "Upgrading without downtime"): five restarts with
#    ext4 mounted on /dev/nbd0 and a writer fsync'ing files; each is a new
#    pid that carried the connection on; then one `cowctl upgrade`, which
#    systemd follows (MainPID) and can stop cleanly later (the new process
#    is its child: --handover-detach).  No I/O error in dmesg, the writer
#    never failed, fsck -fn clean, every file intact.
scen_systemd_restart() {
	local w pid n round new
	rm -f $ST/w.stop $ST/w.failed
	(
		i=0
		: >$ST/w.durable
		while [ ! -e $ST/w.stop ]; do
			dd if=/dev/urandom of=$ST/wsrc bs=64k count=2 status=none
			sum=$(sha256sum <$ST/wsrc | cut -d' ' -f1)
			dd if=$ST/wsrc of=/mnt/v/rs.$i bs=64k conv=fsync status=none 2>/dev/null ||
				{ echo "file $i" >$ST/w.failed; exit 1; }
			echo "$sum  ./rs.$i" >>$ST/w.durable
			i=$((i + 1))
		done
	) &
	w=$!
	for round in 1 2 3 4 5; do
		sleep 1
		pid=$(main_pid) n=$(journal | wc -l)
		run systemctl restart cowbd.service
		restarted "$pid" || die "restart $round: cowbd.service $(systemctl is-active cowbd.service), pid $(main_pid)"
		wait_for 20 "restart $round: the connection carried on" \
			journal_has "$n" "restart: carried on with 1 connection"
		say "restart $round: pid $pid -> $(main_pid)"
	done
	sleep 1
	pid=$(main_pid)
	out=$(cowctl upgrade 2>&1) || die "cowctl upgrade under systemd: $out"
	wait_for 10 "MainPID follows the upgrade" restarted "$pid"
	new=$(main_pid)
	[ "$(awk '{print $4}' /proc/$new/stat)" = 1 ] ||
		die "the upgraded cowbd $new is not systemd's child (ppid $(awk '{print $4}' /proc/$new/stat))"
	say "cowctl upgrade: pid $pid -> $new; $(echo "$out" | tail -n 1)"
	sleep 1
	touch $ST/w.stop
	wait $w
	[ ! -e $ST/w.failed ] || die "the writer failed at $(cat $ST/w.failed)"
	dmesg | tail -n +$(($(cat /tmp/dmesg.start) + 1)) |
		grep -iE 'I/O error|nbd.*(timed out|dead|error)|EXT4-fs (error|warning)' >$ST/r.dmesg &&
		die "kernel complained: $(head -n 3 $ST/r.dmesg)"
	cat $ST/w.durable >>$ST/v.sums
	drop_caches
	check_sums /mnt/v $ST/v.sums || die "files differ after the restarts"
	run umount /mnt/v
	run fsck.ext4 -fn /dev/nbd0
	mnt /dev/nbd0 /mnt/v
	is_active cowbd.service && [ "$(main_pid)" = "$new" ] ||
		die "cowbd.service $(systemctl is-active cowbd.service), pid $(main_pid) (want $new)"
	say "5 restarts and an upgrade under $(wc -l <$ST/w.durable) fsync'ed files: no I/O error, fsck clean"
}

# 5. systemctl stop: cowbd exits 0 after its checkpoint ("stopped" in the
#    journal), cowbd-check finds the pool clean, and the next connection
#    (socket activation again) sees every file.
scen_systemd_stop() {
	run umount /mnt/v
	detach /dev/nbd0
	run systemctl stop cowbd.service
	is_active cowbd.service && die "cowbd.service still active after systemctl stop"
	stopped_clean "systemctl stop"
	pool_clean "after systemctl stop"
	attach /dev/nbd0 vol0
	run fsck.ext4 -fn /dev/nbd0
	mnt /dev/nbd0 /mnt/v
	check_sums /mnt/v $ST/v.sums || die "files differ after stop and reactivation"
	say "stopped with status 0, pool clean, $(wc -l <$ST/v.sums) files back through cowbd.socket"
}

# 6. systemctl kill -s KILL: Restart=on-failure brings cowbd back (a new
#    pid, NRestarts + 1), and what was synced before the kill is there.
scen_systemd_kill() {
	make_tree /mnt/v 20 kill || die "writing before the kill failed"
	sync
	sums /mnt/v >$ST/v.sums
	pid=$(main_pid) r0=$(unit cowbd.service NRestarts)
	run systemctl kill -s KILL cowbd.service
	wait_for 30 "cowbd back after SIGKILL (Restart=on-failure)" restarted "$pid"
	r1=$(unit cowbd.service NRestarts)
	[ "$r1" = $((r0 + 1)) ] || die "NRestarts went from $r0 to $r1 (want one restart)"
	journal | grep -q 'status=9/KILL' || die "the journal does not show the SIGKILL"
	# The device lost its server: disconnect first (see guest-scenarios.sh's
	# kill9-recovery), then come back on a fresh device.
	nbd-client -d /dev/nbd0 >/dev/null 2>&1
	umount -l /mnt/v
	detach /dev/nbd0
	attach /dev/nbd1 vol0
	mnt /dev/nbd1 /mnt/v
	check_sums /mnt/v $ST/v.sums || die "files synced before the SIGKILL are lost or damaged"
	run umount /mnt/v
	run fsck.ext4 -fn /dev/nbd1
	detach /dev/nbd1
	say "killed pid $pid; back as pid $(main_pid); $(wc -l <$ST/v.sums) synced files intact"
}

# 7. The watchdog: with a drop-in holding cowbd's log thread
#    (Environment=COWBD_TEST_STALL_LOG, a test-only fault) and WatchdogSec=6s,
#    WATCHDOG=1 stops, systemd kills cowbd ("Watchdog timeout") and restarts
#    it; the new process (the fault's drop-in gone) stays up through two
#    watchdog periods; the data is intact and a last stop is clean.
scen_systemd_watchdog() {
	mkdir -p $DROPIN
	printf '[Service]\nWatchdogSec=6s\n' >$DROPIN/50-vmtest-watchdog.conf
	printf '[Service]\nEnvironment=COWBD_TEST_STALL_LOG=3:60\n' >$DROPIN/60-vmtest-stall.conf
	run systemctl daemon-reload
	n=$(journal | wc -l)
	run systemctl restart cowbd.service
	pid=$(main_pid) r0=$(unit cowbd.service NRestarts)
	tr '\0' '\n' <"/proc/$pid/environ" | grep -q '^COWBD_TEST_STALL_LOG=3:60$' ||
		die "cowbd (pid $pid) has no COWBD_TEST_STALL_LOG from the drop-in"
	# The next start is a healthy one.
	rm $DROPIN/60-vmtest-stall.conf
	run systemctl daemon-reload
	wait_for 40 "cowbd restarted by the watchdog" restarted "$pid"
	journal_has "$n" "Watchdog timeout" || die "no 'Watchdog timeout' for cowbd.service in the journal"
	journal_has "$n" "TEST FAULT" || die "no TEST FAULT line: the fault was not armed"
	r1=$(unit cowbd.service NRestarts)
	[ "$r1" = $((r0 + 1)) ] || die "NRestarts went from $r0 to $r1 (want one restart)"
	pid2=$(main_pid)
	tr '\0' '\n' <"/proc/$pid2/environ" | grep -q COWBD_TEST_STALL_LOG &&
		die "the restarted cowbd still has the fault"
	say "watchdog killed pid $pid; pid $pid2 runs without the fault"
	sleep 13
	[ "$(main_pid)" = "$pid2" ] && is_active cowbd.service ||
		die "a healthy cowbd was restarted too (pid $pid2, now $(main_pid))"
	attach /dev/nbd2 vol0
	run fsck.ext4 -fn /dev/nbd2
	mnt -o ro /dev/nbd2 /mnt/v
	check_sums /mnt/v $ST/v.sums || die "files differ after the watchdog's restart"
	run umount /mnt/v
	detach /dev/nbd2
	rm $DROPIN/50-vmtest-watchdog.conf
	run systemctl daemon-reload
	run systemctl stop cowbd.service
	stopped_clean "the last stop"
	pool_clean "after the watchdog's restart and a stop"
}

# 8. The package's life after install: installed again over itself (an
#    upgrade, as dpkg sees it) while cowbd serves, it leaves the daemon
#    alone (same pid); `apt-get remove` stops the service (cleanly: its
#    "stopped" line) and its sockets and keeps the pool, the user and the
#    configuration; `purge` deletes the configuration, not the pool.
scen_systemd_remove() {
	deb=$(ls /vmtest/pkg/cowbd_*.deb 2>/dev/null | head -n 1)
	if [ -z "$deb" ]; then
		vmtest "SKIP $SCEN: no package (see vm/systemd-package)"
		echo SKIP >"/tmp/verdict.$SCEN"
		exit 0
	fi
	run systemctl start cowbd.service
	pid=$(main_pid)
	out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall "$deb" 2>&1) ||
		{ echo "$out" | tail -n 15; die "apt-get install --reinstall ${deb##*/} failed"; }
	is_active cowbd.service && [ "$(main_pid)" = "$pid" ] ||
		die "the upgrade touched the running cowbd (pid $pid, now $(main_pid), $(systemctl is-active cowbd.service))"
	n=$(journal | wc -l)
	out=$(DEBIAN_FRONTEND=noninteractive apt-get remove -y -q cowbd 2>&1) ||
		{ echo "$out" | tail -n 15; die "apt-get remove cowbd failed"; }
	for u in cowbd.service cowbd.socket cowbd-control.socket; do
		is_active $u && die "$u still active after apt-get remove"
	done
	[ ! -e /usr/sbin/cowbd ] || die "/usr/sbin/cowbd is still there after apt-get remove"
	[ -s $POOL ] || die "apt-get remove deleted the pool"
	id cowbd >/dev/null 2>&1 || die "apt-get remove deleted the user cowbd"
	[ -f /etc/cowbd/cowbd.conf ] || die "apt-get remove deleted /etc/cowbd/cowbd.conf"
	journal_has "$n" 'info: stopped$' || die "no 'stopped' line from cowbd: apt-get remove did not stop it cleanly"
	out=$(DEBIAN_FRONTEND=noninteractive apt-get purge -y -q cowbd 2>&1) ||
		{ echo "$out" | tail -n 15; die "apt-get purge cowbd failed"; }
	[ ! -e /etc/cowbd/cowbd.conf ] || die "/etc/cowbd/cowbd.conf is still there after purge"
	[ -s $POOL ] || die "apt-get purge deleted the pool"
	say "reinstalled under a running cowbd (pid $pid kept); removed: stopped, pool and user kept; purged: configuration gone"
}
