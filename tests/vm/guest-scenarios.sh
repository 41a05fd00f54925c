# tests/vm/guest-scenarios.sh — the VM scenarios (busybox sh, in the guest).
#
# Each scen_NAME starts the server on a fresh pool, drives the Linux kernel
# NBD client (/dev/nbdX via nbd-client) against it and dies with a reason
# on the first wrong result.  Names and what they prove: docs/TESTING.md.

# 1. A filesystem written through the kernel client comes back intact after
#    detach and reattach: fsck clean, every checksum matches.
scen_ext4_roundtrip() {
	srv_start_fresh
	vol_create vol0 256M
	# An unknown export is refused at the handshake (and the server lives).
	if nbd-client 127.0.0.1 "$PORT" /dev/nbd0 -N nosuch >/dev/null 2>&1; then
		die "nbd-client attached the unknown export 'nosuch'"
	fi
	[ "$(dev_size /dev/nbd0)" = 0 ] || die "/dev/nbd0 has a size after a refused attach"
	attach /dev/nbd0 vol0
	mkfs_mount /dev/nbd0 /mnt/a
	make_tree /mnt/a 40 t || die "writing the file tree failed"
	sums /mnt/a >/tmp/a.sums
	sync
	reattach_ro /dev/nbd0 vol0 /mnt/a
	check_sums /mnt/a /tmp/a.sums || die "checksums differ after reattach"
	sums /mnt/a | cmp -s - /tmp/a.sums || die "file list differs after reattach"
	say "$(wc -l </tmp/a.sums) files, $(du -sk /mnt/a | cut -f1) KiB verified"
	run umount /mnt/a
	detach /dev/nbd0
}

# 2. A snapshot taken while the fs is mounted (frozen) and a clone of it see
#    exactly the files of snapshot time; the origin keeps its later writes;
#    the snapshot export is read-only.
scen_snapshot_clone() {
	srv_start_fresh
	vol_create vol1 256M
	attach /dev/nbd0 vol1
	mkfs_mount /dev/nbd0 /mnt/o -b 4096 # the others use mke2fs's 1 KiB "small" default
	make_tree /mnt/o 24 before || die "writing the file tree failed"
	sums /mnt/o >/tmp/before.sums
	sync
	run fsfreeze -f /mnt/o
	snap_create vol1@s1 || { fsfreeze -u /mnt/o; die "snapshot failed"; }
	run fsfreeze -u /mnt/o
	# Keep writing: new files, and overwrite + delete files of snapshot time.
	make_tree /mnt/o 12 after || die "writing after the snapshot failed"
	first=$(sed -n '1s/.*  //p' /tmp/before.sums)
	second=$(sed -n '2s/.*  //p' /tmp/before.sums)
	dd if=/dev/urandom of="/mnt/o/$first" bs=4096 count=16 conv=notrunc status=none
	rm "/mnt/o/$second"
	sync
	sums /mnt/o >/tmp/origin.sums
	vol_clone vol1@s1 vol1c
	attach /dev/nbd1 vol1c
	mnt /dev/nbd1 /mnt/c
	sums /mnt/c | cmp -s - /tmp/before.sums ||
		die "clone does not hold exactly the files of snapshot time"
	# The clone is writable and independent of the origin.
	make_tree /mnt/c 5 clonew || die "writing to the clone failed"
	sync
	run umount /mnt/c
	detach /dev/nbd1
	# The snapshot itself: read-only export, fsck-clean, same files.
	attach /dev/nbd2 vol1@s1
	if [ "$VM_SERVER" = cowbd ]; then
		[ "$(cat /sys/block/nbd2/ro)" = 1 ] || die "vol1@s1 is not exported read-only"
	fi
	if [ "$VM_SERVER" = cowbd ] &&
		dd if=/dev/zero of=/dev/nbd2 bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
		die "a write to the snapshot export vol1@s1 succeeded"
	fi
	run fsck.ext4 -fn /dev/nbd2
	mnt -o ro,noload /dev/nbd2 /mnt/s
	sums /mnt/s | cmp -s - /tmp/before.sums || die "snapshot does not hold the files of snapshot time"
	run umount /mnt/s
	detach /dev/nbd2
	# The origin has its new files, intact after a reattach.
	reattach_ro /dev/nbd0 vol1 /mnt/o
	sums /mnt/o | cmp -s - /tmp/origin.sums || die "origin lost writes made after the snapshot"
	grep -q '/after-' /tmp/origin.sums || die "origin has no post-snapshot files"
	say "clone and snapshot: $(wc -l </tmp/before.sums) files as at snapshot time; origin: $(wc -l </tmp/origin.sums) files"
	run umount /mnt/o
	detach /dev/nbd0
}

# 3. kill -9 of the server under a write load from the kernel client, twice
#    over (recovery of a recovered pool): after each restart the fs
#    mounts (journal replay) and every file synced or fsync'ed before any
#    kill is there with its checksum; at the end fsck is clean.
load_and_kill() { # ROUND [DIR]: fsync'ing writers on DIR (/mnt/k), then kill -9 cowbd
	# Each writer creates 256 KiB files with dd conv=fsync; a file goes on
	# the durable list only after its fsync succeeded, so no listed file
	# may be lost.
	for w in 1 2; do
		( i=0; : >/tmp/durable$w
		while :; do
			dd if=/dev/urandom of=/tmp/src$w bs=64k count=4 status=none
			sum=$(sha256sum </tmp/src$w | cut -d' ' -f1)
			dd if=/tmp/src$w of=${2:-/mnt/k}/load$1.$w.$i bs=64k conv=fsync status=none 2>/dev/null || exit 0
			echo "$sum  ./load$1.$w.$i" >>/tmp/durable$w
			i=$((i + 1))
		done ) &
		eval "w$w=$!"
	done
	sleep 4
	srv_kill9
	sleep 1 # writers stop on their first failed fsync; do not wait forever
	kill -9 "$w1" "$w2" 2>/dev/null
	wait "$w1" "$w2" 2>/dev/null
	cat /tmp/durable1 /tmp/durable2 >>/tmp/durable.sums
	say "round $1: $(cat /tmp/durable1 /tmp/durable2 | wc -l) files fsync'ed before the kill"
}

scen_kill9_recovery() {
	srv_start_fresh
	vol_create vol2 256M
	attach /dev/nbd0 vol2
	mkfs_mount /dev/nbd0 /mnt/k
	make_tree /mnt/k 30 synced || die "writing the file tree failed"
	sums /mnt/k >/tmp/durable.sums
	sync
	n=0
	for round in 1 2; do
		load_and_kill $round
		# The device is dead now; drop the attachment and the mount and
		# come back on a fresh device.  Disconnect first: requests that
		# were in flight when the server died are never timed out by the
		# kernel (no -t given), only failed by the disconnect, and ext4's
		# unmount would wait for them forever.
		nbd-client -d /dev/nbd$n >/dev/null 2>&1
		umount -l /mnt/k
		detach /dev/nbd$n
		n=$((n + 1))
		pool_check "after kill -9 (round $round)"
		srv_restart
		attach /dev/nbd$n vol2
		mnt /dev/nbd$n /mnt/k
		check_sums /mnt/k /tmp/durable.sums ||
			die "round $round: files synced or fsync'ed before a kill are lost or damaged"
	done
	say "$(wc -l </tmp/durable.sums) synced files intact after 2 kills, $(ls /mnt/k | grep -c '^load') load files present"
	run umount /mnt/k
	run fsck.ext4 -fn /dev/nbd$n
	detach /dev/nbd$n
}

# 4. 512- and 4096-byte block sizes; TRIM (blkdiscard) and zeroing
#    (blkdiscard -z) of a range read back as zeroes, the rest unchanged.
scen_blocksize_discard() {
	srv_start_fresh
	vol_create vol3 64M
	for bs in 512 4096; do
		attach /dev/nbd0 vol3 -b $bs
		lbs=$(cat /sys/block/nbd0/queue/logical_block_size)
		[ "$lbs" = $bs ] || die "-b $bs gave logical block size $lbs"
		# 8 MiB of random data, then single sectors at odd offsets.
		run dd if=/dev/urandom of=/tmp/img bs=1M count=8 status=none
		run dd if=/tmp/img of=/dev/nbd0 bs=1M oflag=direct status=none
		for off in 1 7 1025; do # in units of bs
			run dd if=/dev/urandom of=/tmp/sec bs=$bs count=1 status=none
			run dd if=/tmp/sec of=/dev/nbd0 bs=$bs seek=$off count=1 oflag=direct status=none
			run dd if=/tmp/sec of=/tmp/img bs=$bs seek=$off count=1 conv=notrunc status=none
		done
		drop_caches
		run dd if=/dev/nbd0 of=/tmp/back bs=1M count=8 iflag=direct status=none
		same /tmp/img /tmp/back || die "-b $bs: read back differs from what was written"
		# TRIM 1 MiB..3 MiB, zero 5 MiB..6 MiB (+ one sector at 7 MiB with bs 512).
		run blkdiscard -o $((1 << 20)) -l $((2 << 20)) /dev/nbd0
		run blkdiscard -z -o $((5 << 20)) -l $((1 << 20)) /dev/nbd0
		run dd if=/dev/zero of=/tmp/img bs=1M seek=1 count=2 conv=notrunc status=none
		run dd if=/dev/zero of=/tmp/img bs=1M seek=5 count=1 conv=notrunc status=none
		if [ $bs = 512 ]; then
			run blkdiscard -z -o $((7 << 20)) -l 512 /dev/nbd0
			run dd if=/dev/zero of=/tmp/img bs=512 seek=$((7 << 11)) count=1 conv=notrunc status=none
		fi
		drop_caches
		run dd if=/dev/nbd0 of=/tmp/back bs=1M count=8 iflag=direct status=none
		same /tmp/img /tmp/back >/tmp/cmp.out ||
			die "-b $bs: after discard/zero: $(head -c 200 /tmp/cmp.out)"
		detach /dev/nbd0
		say "-b $bs: sector writes, TRIM and zeroing read back right"
	done
}

# 5. Multi-connection attach (-C 2): parallel writers through both
#    connections, a verify pass after reattach, then kill -9 under fsync'ing
#    writers and a verify of every fsync'ed file after restart.
scen_multiconn() {
	srv_start_fresh
	vol_create vol4 256M
	attach /dev/nbd0 vol4 -C 2
	conns=$(netstat -tn 2>/dev/null | grep -c "127.0.0.1:$PORT .*ESTABLISHED")
	[ "$conns" -ge 2 ] || die "expected 2 connections to the server, found $conns"
	# Raw: two direct-I/O writers on disjoint 8 MiB regions at once.
	run dd if=/dev/urandom of=/tmp/r1 bs=1M count=8 status=none
	run dd if=/dev/urandom of=/tmp/r2 bs=1M count=8 status=none
	dd if=/tmp/r1 of=/dev/nbd0 bs=64k oflag=direct status=none & p1=$!
	dd if=/tmp/r2 of=/dev/nbd0 bs=64k seek=128 oflag=direct status=none & p2=$!
	wait $p1 || die "raw writer 1 failed"
	wait $p2 || die "raw writer 2 failed"
	drop_caches
	run dd if=/dev/nbd0 of=/tmp/b1 bs=1M count=8 iflag=direct status=none
	run dd if=/dev/nbd0 of=/tmp/b2 bs=1M skip=8 count=8 iflag=direct status=none
	same /tmp/b1 /tmp/r1 || die "raw region 1 differs"
	same /tmp/b2 /tmp/r2 || die "raw region 2 differs"
	# Filesystem: four writers in parallel.
	mkfs_mount /dev/nbd0 /mnt/m
	for w in 1 2 3 4; do
		make_tree /mnt/m/w$w 10 w$w &
		eval "p$w=$!"
	done
	for w in 1 2 3 4; do eval "wait \$p$w" || die "writer $w failed"; done
	sums /mnt/m >/tmp/m.sums
	sync
	run umount /mnt/m
	detach /dev/nbd0
	drop_caches
	attach /dev/nbd0 vol4 -C 2
	run fsck.ext4 -fn /dev/nbd0
	mnt /dev/nbd0 /mnt/m
	sums /mnt/m | cmp -s - /tmp/m.sums || die "files differ after reattach"
	say "$(wc -l </tmp/m.sums) files from 4 parallel writers verified over 2 connections"
	# kill -9 under fsync'ing writers: the kernel sends each FLUSH on one
	# connection, so a FLUSH reply must cover writes completed on both.
	cp /tmp/m.sums /tmp/durable.sums
	load_and_kill 1 /mnt/m
	nbd-client -d /dev/nbd0 >/dev/null 2>&1 # see kill9-recovery
	umount -l /mnt/m
	detach /dev/nbd0
	pool_check "after kill -9"
	srv_restart
	attach /dev/nbd1 vol4 -C 2
	mnt /dev/nbd1 /mnt/m
	check_sums /mnt/m /tmp/durable.sums ||
		die "files fsync'ed over 2 connections before the kill are lost or damaged"
	run umount /mnt/m
	run fsck.ext4 -fn /dev/nbd1
	detach /dev/nbd1
}

# 6. Incremental backup of a volume the kernel client wrote, the guest's
#    half: ext4 on vol0, snapshots b0, b1, b2 (each taken frozen) between
#    rounds of overwrites, appends, truncates, deletes, renames, new files
#    and fstrim.  The pool is the host's virtio disk "pool"; each point's
#    file checksums and the md5 of its snapshot as the kernel client reads
#    it go as a tar onto the disk "records".  After the boot the host makes
#    the backups from that pool (tests/vm/host-incremental-backup.sh).
backup_point() { # SNAP: sync, record the files, snapshot vol0@SNAP frozen, its md5
	sync
	sums /mnt/b >"/tmp/rec/$1.sums"
	run fsfreeze -f /mnt/b
	snap_create "vol0@$1" || { fsfreeze -u /mnt/b; die "snapshot vol0@$1 failed"; }
	run fsfreeze -u /mnt/b
	attach /dev/nbd1 "vol0@$1"
	md5sum </dev/nbd1 | cut -d' ' -f1 >"/tmp/rec/$1.md5"
	detach /dev/nbd1
	say "vol0@$1: $(wc -l <"/tmp/rec/$1.sums") files, $(du -sk /mnt/b | cut -f1) KiB"
}

scen_incremental_backup() {
	[ "$VM_SERVER" = cowbd ] || skip "needs cowbd's snapshots"
	POOL=$(vdisk pool) && records=$(vdisk records) ||
		die "no virtio disks with serials pool and records (check.sh gives them)"
	POOL_SIZE=$(($(cat "/sys/block/${POOL#/dev/}/size") * 512))
	srv_start_fresh
	vol_create vol0 128M
	attach /dev/nbd0 vol0
	mkfs_mount /dev/nbd0 /mnt/b
	mkdir -p /tmp/rec /mnt/b/big
	make_tree /mnt/b 30 t || die "writing the file tree failed"
	run dd if=/dev/urandom of=/mnt/b/big/one bs=1M count=6 status=none
	run dd if=/dev/urandom of=/mnt/b/big/two bs=1M count=6 status=none
	backup_point b0
	# b1: an overwrite inside a big file, an append, a delete, new files, fstrim
	run dd if=/dev/urandom of=/mnt/b/big/one bs=64k seek=16 count=8 conv=notrunc status=none
	dd if=/dev/urandom bs=1k count=300 status=none >>/mnt/b/t-d1/f1 || die "append failed"
	run rm /mnt/b/big/two
	make_tree /mnt/b 10 n1 || die "writing new files failed"
	sync
	run fstrim /mnt/b
	backup_point b1
	# b2: scattered 4 KiB overwrites, a truncate, deletes, a rename, a new big file, fstrim
	for f in t-d2/f2 t-d0/f4 t-d1/f5; do
		run dd if=/dev/urandom of="/mnt/b/$f" bs=4k seek=${f#*/f} count=1 conv=notrunc status=none
	done
	run truncate -s 10000 /mnt/b/t-d2/f6
	run rm /mnt/b/t-d0/f8 /mnt/b/t-d1/f9
	run mv /mnt/b/t-d3 /mnt/b/renamed-d3
	run dd if=/dev/urandom of=/mnt/b/big/three bs=1M count=3 status=none
	sync
	run fstrim /mnt/b
	backup_point b2
	say "cowctl diff b0 b1: $(cowctl_ diff vol0@b0 vol0@b1 | tail -n 1)"
	say "cowctl diff b1 b2: $(cowctl_ diff vol0@b1 vol0@b2 | tail -n 1)"
	run umount /mnt/b
	detach /dev/nbd0
	(cd /tmp/rec && tar -cf "$records" .) || die "writing the records to $records failed"
	sync
}

# 7. Upgrades under the kernel client: ext4 mounted on /dev/nbd0, two
#    writers fsync'ing files, `cowctl upgrade` five times (each hands the
#    socket to a new cowbd process): no I/O error in dmesg, every writer
#    still going, fsck -fn clean, every file intact, and the kernel's
#    connection the same one (the server never accepted another).
scen_upgrade() {
	srv_start_fresh
	vol_create vol6 256M
	attach /dev/nbd0 vol6
	mkfs_mount /dev/nbd0 /mnt/u
	make_tree /mnt/u 20 before || die "writing the file tree failed"
	sums /mnt/u >/tmp/u.sums
	sync
	rm -f /tmp/u.stop /tmp/u.failed
	for w in 1 2; do
		( i=0; : >/tmp/u.durable$w
		while [ ! -e /tmp/u.stop ]; do
			dd if=/dev/urandom of=/tmp/usrc$w bs=64k count=2 status=none
			sum=$(sha256sum </tmp/usrc$w | cut -d' ' -f1)
			dd if=/tmp/usrc$w of=/mnt/u/up.$w.$i bs=64k conv=fsync status=none 2>/dev/null ||
				{ echo "writer $w: file $i failed" >/tmp/u.failed; exit 1; }
			echo "$sum  ./up.$w.$i" >>/tmp/u.durable$w
			i=$((i + 1))
		done ) &
		eval "uw$w=$!"
	done
	accepted=$(grep -c ': connected$' "$SRVLOG")
	for round in 1 2 3 4 5; do
		sleep 1
		cowctl_ --json upgrade 2>/tmp/u.err | tr -d ' \n' >/tmp/u.json
		[ -s /tmp/u.json ] || die "upgrade $round: $(cat /tmp/u.err)"
		old=$(srv_pid)
		new=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' /tmp/u.json)
		[ -n "$new" ] && [ "$new" != "$old" ] || die "upgrade $round: no new pid in $(cat /tmp/u.json)"
		echo "$new" >/run/server.pid
		say "upgrade $round: pid $old -> $new, paused $(sed -n 's/.*"pause_ms":\([0-9.]*\).*/\1/p' /tmp/u.json) ms"
	done
	sleep 1
	touch /tmp/u.stop
	wait "$uw1"; wait "$uw2"
	[ ! -e /tmp/u.failed ] || die "$(cat /tmp/u.failed) during the upgrades"
	n=$(cat /tmp/u.durable1 /tmp/u.durable2 | wc -l)
	[ "$(grep -c ': connected$' "$SRVLOG")" = "$accepted" ] ||
		die "the kernel client reconnected during the upgrades"
	dmesg | tail -n +$(( $(cat /tmp/dmesg.start) + 1 )) |
		grep -iE 'I/O error|nbd.*(timed out|dead|error)|EXT4-fs (error|warning)' >/tmp/u.dmesg &&
		die "kernel complained: $(head -n 3 /tmp/u.dmesg)"
	cat /tmp/u.durable1 /tmp/u.durable2 >>/tmp/u.sums
	drop_caches
	check_sums /mnt/u /tmp/u.sums || die "files differ after the upgrades"
	run umount /mnt/u
	run fsck.ext4 -fn /dev/nbd0
	detach /dev/nbd0
	say "5 upgrades under $n fsync'ed files: no I/O error, fsck clean, all intact"
	# The last generation is no child of this shell: stop it here, then
	# start one that is, for run_scenario's own stop and check.
	p=$(srv_pid)
	kill -TERM "$p"
	i=0
	while [ -e "/proc/$p" ] && [ "$(cut -d' ' -f3 "/proc/$p/stat")" != Z ]; do
		i=$((i + 1)); [ $i -gt 200 ] && die "cowbd $p still running 20 s after SIGTERM"
		sleep 0.1
	done
	tail -n 1 "$SRVLOG" | grep -q "stopped" || die "the upgraded cowbd did not stop cleanly"
	rm -f /run/server.pid
	srv_restart
}
