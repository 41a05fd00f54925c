# bench/lib.sh — helpers sourced by bench/bench.sh: free ports, starting and
# stopping the servers under test, CPU accounting, one fio run.
#
# Every server started here is recorded in SRV_PID[id] (or, for daemons that
# fork away, in a pid file) and stopped by bench_stop_all, and every loop
# device attached here is detached by loop_detach_all; bench.sh runs both
# from its EXIT trap: nothing outlives the bench, also on Ctrl-C or failure.
# A cowbd server also has its control socket in SRV_CTL[id].
#
# Conventions: functions return 0 / non-zero; a server that cannot start is
# marked SRV_SKIP[id]="reason" and the bench goes on without it.

declare -A SRV_PID=() SRV_URI=() SRV_SKIP=() SRV_PIDFILE=() SRV_CTL=() SRV_LOOP=()
LOOP_DEVS=()

say() { printf 'bench: %s\n' "$*" >&2; }

# A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).
free_port() {
	"$PY" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

now_ns() { date +%s%N; }

# Server CPU time so far, in clock ticks: utime+stime of the process (all its
# threads, live and exited), cutime+cstime of its reaped children, and
# utime+stime of its live children (nbd-server forks one per connection).
# Pure bash (no ps/awk): it runs twice per job on a machine that may be busy.
stat_ticks() { # pid with-children-fields -> ticks
	local line f
	read -r line 2>/dev/null <"/proc/$1/stat" || { echo 0; return; }
	read -r -a f <<<"${line##*) }" # fields from 3 (state) on: utime is f[11]
	if [ "$2" = 1 ]; then
		echo $((f[11] + f[12] + f[13] + f[14]))
	else
		echo $((f[11] + f[12]))
	fi
}
cpu_ticks() { # pid
	local pid=$1 c sum=0 t kids=""
	for t in /proc/"$pid"/task/*/children; do
		[ -r "$t" ] && read -r -a kids 2>/dev/null <"$t"
		for c in ${kids[@]+"${kids[@]}"}; do
			sum=$((sum + $(stat_ticks "$c" 0)))
		done
		kids=()
	done
	echo $((sum + $(stat_ticks "$pid" 1)))
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

# Bytes the process caused to be written to storage (/proc/PID/io
# write_bytes: counted when it dirties a page-cache page or writes directly).
io_wbytes() { awk '/^write_bytes:/ {print $2}' "/proc/$1/io" 2>/dev/null; }

# disk_dev DIR: the /sys/class/block entry of the block device holding DIR
# (empty when there is none: tmpfs, overlay).
disk_dev() {
	local src
	src=$(df --output=source "$1" 2>/dev/null | tail -n 1)
	src=$(readlink -f "$src" 2>/dev/null)
	[ -n "$src" ] && [ -r "/sys/class/block/${src##*/}/stat" ] && echo "/sys/class/block/${src##*/}"
}

# Bytes written to that device so far (sectors written, field 7, x 512):
# what actually reached the disk, from every process.
disk_wbytes() { # sysdir
	[ -n "$1" ] && awk '{printf "%.0f\n", $7 * 512}' "$1/stat" 2>/dev/null
}

# ---- loop devices ------------------------------------------------------------
# loop_attach FILE MIB: preallocate FILE (fallocate: real blocks, reading as
# zeroes) and put a loop device over it with direct I/O (no second page cache
# under the device's own); sets LOOP_DEV.  Needs root and /dev/loop-control.
# A holder process (tail --pid, which ends when the bench does) keeps the
# device open and the device is detached at once: the kernel then only marks
# it to go away at its last close (autoclear), so it disappears once the
# holder and the server using it are gone, even if the bench is killed with
# SIGKILL.  loop_detach ends the holder.
declare -A LOOP_HOLD=()
loop_attach() { # file mib
	local i pid
	LOOP_DEV=""
	rm -f "$1"
	fallocate -l "$2M" "$1" || return 1
	LOOP_DEV=$(losetup -f --show --direct-io=on "$1" 2>>"$LOGS/losetup.log") || {
		LOOP_DEV=""
		rm -f "$1"
		return 1
	}
	tail --pid=$$ -f /dev/null <"$LOOP_DEV" >/dev/null 2>&1 &
	pid=$!
	LOOP_HOLD[$LOOP_DEV]=$pid
	LOOP_DEVS+=("$LOOP_DEV")
	for i in $(seq 1 100); do
		[ "$(readlink "/proc/$pid/fd/0")" = "$LOOP_DEV" ] && break
		sleep 0.02
	done
	losetup -d "$LOOP_DEV" 2>>"$LOGS/losetup.log" || say "losetup -d $LOOP_DEV failed"
}

# Let go of one device we attached (by its name), or of all of them.
loop_detach() { # dev
	local i
	for i in "${!LOOP_DEVS[@]}"; do
		[ "${LOOP_DEVS[$i]}" = "$1" ] || continue
		stop_pid "${LOOP_HOLD[$1]:-}" 1
		unset "LOOP_HOLD[$1]" "LOOP_DEVS[$i]"
	done
}
loop_detach_all() {
	local d
	for d in ${LOOP_DEVS[@]+"${LOOP_DEVS[@]}"}; do loop_detach "$d"; done
	return 0
}

# Wait until URI answers an NBD handshake (nbdinfo), while PID lives.
wait_nbd() { # uri pid [timeout-s]
	local uri=$1 pid=$2 deadline=$(( $(date +%s) + ${3:-15} ))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		kill -0 "$pid" 2>/dev/null || return 1
		timeout 5 nbdinfo --size "$uri" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	return 1
}

# Stop one process we started: SIGTERM, wait up to $2 s, then SIGKILL.
stop_pid() { # pid [grace-s]
	local pid=$1 i
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
	kill -TERM "$pid" 2>/dev/null
	for i in $(seq 1 $(( ${2:-5} * 20 ))); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "pid $pid ignored SIGTERM; SIGKILL"
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	return 0
}

server_stop() { # id
	local id=$1 pid=${SRV_PID[$1]:-}
	if [ -z "$pid" ] && [ -n "${SRV_PIDFILE[$id]:-}" ] && [ -f "${SRV_PIDFILE[$id]}" ]; then
		pid=$(cat "${SRV_PIDFILE[$id]}")
	fi
	[ -n "$pid" ] && stop_pid "$pid" 10
	SRV_PID[$id]=""
	[ -z "${SRV_LOOP[$id]:-}" ] || loop_detach "${SRV_LOOP[$id]}"
	SRV_LOOP[$id]=""
}

bench_stop_all() {
	local id
	for id in "${!SRV_PID[@]}"; do server_stop "$id"; done
	for id in "${!SRV_PIDFILE[@]}"; do
		[ -f "${SRV_PIDFILE[$id]}" ] && stop_pid "$(cat "${SRV_PIDFILE[$id]}")" 10
	done
	return 0
}

# ---- the servers ---------------------------------------------------------
# start_<id> PORT: start it in the background on 127.0.0.1:PORT serving one
# export "bench" of $SIZE_MIB MiB; set SRV_PID[id].  bench_start checks that it
# answers.  needs_<id>: the binaries it needs.

needs_nbdkit_file() { echo nbdkit; }
start_nbdkit_file() {
	local f="$WORK/nbdkit-file.img"
	[ -f "$f" ] || fallocate -l "${SIZE_MIB}M" "$f" || return 1
	nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$1" \
		file file="$f" >>"$LOGS/nbdkit-file.log" 2>&1 &
	SRV_PID[nbdkit-file]=$!
}

# nbdkit file on a loop device over a preallocated file (the block-device
# column beside cowbd-blk).
needs_nbdkit_file_blk() { echo nbdkit losetup; }
start_nbdkit_file_blk() {
	loop_attach "$WORK/nbdkit-file-blk.img" "$SIZE_MIB" || return 1
	SRV_LOOP[nbdkit-file-blk]=$LOOP_DEV
	nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$1" \
		file file="$LOOP_DEV" >>"$LOGS/nbdkit-file-blk.log" 2>&1 &
	SRV_PID[nbdkit-file-blk]=$!
}

needs_nbdkit_memory() { echo nbdkit; }
start_nbdkit_memory() {
	nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$1" \
		memory size="${SIZE_MIB}M" >>"$LOGS/nbdkit-memory.log" 2>&1 &
	SRV_PID[nbdkit-memory]=$!
}

needs_nbdkit_null() { echo nbdkit; }
start_nbdkit_null() {
	nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$1" \
		null size="${SIZE_MIB}M" >>"$LOGS/nbdkit-null.log" 2>&1 &
	SRV_PID[nbdkit-null]=$!
}

# nbd-server forks itself away (its -d mode serves a single connection and
# exits), so it is tracked through its pid file.
needs_nbd_server() { echo nbd-server; }
start_nbd_server() {
	local f="$WORK/nbd-server.img" cfg="$WORK/nbd-server.conf" pf="$WORK/nbd-server.pid" i
	[ -f "$f" ] || fallocate -l "${SIZE_MIB}M" "$f" || return 1
	cat >"$cfg" <<-EOF
	[generic]
	port = $1
	listenaddr = 127.0.0.1
	allowlist = true
	[bench]
	exportname = $f
	flush = true
	fua = true
	EOF
	rm -f "$pf"
	SRV_PIDFILE[nbd-server]=$pf
	nbd-server -C "$cfg" -p "$pf" >>"$LOGS/nbd-server.log" 2>&1 || return 1
	for i in $(seq 1 100); do [ -s "$pf" ] && break; sleep 0.05; done
	[ -s "$pf" ] || return 1
	SRV_PID[nbd-server]=$(cat "$pf")
}

# qemu-nbd on qcow2, O_DIRECT (--cache=none) with Linux AIO, as a VM host
# would run it; -e 2 allows the 2-connection job; -t keeps it up.
needs_qemu_nbd() { echo qemu-nbd qemu-img; }
start_qemu_nbd() {
	local f="$WORK/qemu.qcow2"
	[ -f "$f" ] || qemu-img create -q -f qcow2 "$f" "${SIZE_MIB}M" || return 1
	qemu-nbd -f qcow2 --cache="$QEMU_CACHE" --aio="$QEMU_AIO" -t -e 4 -x bench \
		-b 127.0.0.1 -p "$1" "$f" >>"$LOGS/qemu-nbd.log" 2>&1 &
	SRV_PID[qemu-nbd]=$!
}

# cowbd on a fresh pool with one volume "bench".  COW_POOL / COW_CTL name the
# pool and control socket; cowbd_launch is also used by the cowbd-only jobs.
needs_cowbd() { echo "$BUILD/cowbd" "$BUILD/cowctl"; }
cowctl() { "$BUILD/cowctl" --control "$COW_CTL" "$@"; }
cowctl_at() { # ctl args...
	local ctl=$1
	shift
	"$BUILD/cowctl" --control "$ctl" "$@"
}

# The named fields of `cowctl --json stats` (bench/cow_stats.py), one line;
# nothing when the daemon does not answer.
cow_stats() { # ctl field...
	local ctl=$1
	shift
	cowctl_at "$ctl" --json stats 2>/dev/null | "$PY" "$BENCH_SRC/cow_stats.py" "$@" 2>/dev/null
}

cowbd_launch() { # port pool ctl [extra args...]; sets COW_PID
	local port=$1 pool=$2 ctl=$3 i
	shift 3
	rm -f "$ctl"
	"$BUILD/cowbd" --pool "$pool" "$@" --listen "127.0.0.1:$port" --control "$ctl" \
		--foreground >>"$LOGS/cowbd.log" 2>&1 &
	COW_PID=$!
	for i in $(seq 1 400); do
		kill -0 "$COW_PID" 2>/dev/null || return 1
		[ -S "$ctl" ] && return 0
		sleep 0.025
	done
	return 1
}

start_cowbd() {
	COW_POOL="$WORK/cowbd.pool" COW_CTL="$WORK/cowbd.sock"
	rm -f "$COW_POOL"
	cowbd_launch "$1" "$COW_POOL" "$COW_CTL" --create "$COW_POOL_SIZE" "${COWBD_EXTRA[@]}" || return 1
	SRV_PID[cowbd]=$COW_PID SRV_CTL[cowbd]=$COW_CTL
	cowctl volume create bench "${SIZE_MIB}M" >>"$LOGS/cowbd.log" 2>&1 || return 1
}

# cowbd with its pool on a loop device over a preallocated file of
# COW_BLK_MIB (a fresh device each start: the pool is created on it blank).
needs_cowbd_blk() { echo "$BUILD/cowbd" "$BUILD/cowctl" losetup; }
start_cowbd_blk() {
	local ctl="$WORK/cowbd-blk.sock"
	loop_attach "$WORK/cowbd-blk.img" "$COW_BLK_MIB" || return 1
	SRV_LOOP[cowbd-blk]=$LOOP_DEV
	cowbd_launch "$1" "$LOOP_DEV" "$ctl" --create "$((COW_BLK_MIB << 20))" "${COWBD_EXTRA[@]}" ||
		return 1
	SRV_PID[cowbd-blk]=$COW_PID SRV_CTL[cowbd-blk]=$ctl
	cowctl_at "$ctl" volume create bench "${SIZE_MIB}M" >>"$LOGS/cowbd.log" 2>&1 || return 1
}

# One more cowbd for a cowbd-only job: server ID on a fresh sparse pool file
# of POOL_SIZE (or on COW_SERVER_POOL, e.g. rados:P/NAME, created there) with
# one volume "bench" of VOL_SIZE, extra daemon arguments after; registered
# like the matrix's servers (SRV_PID/URI/CTL).
cowbd_server() { # id pool-size vol-size [args...]
	local id=$1 psize=$2 vsize=$3 port pool=${COW_SERVER_POOL:-$WORK/$1.pool} ctl="$WORK/$1.sock"
	shift 3
	[ -n "${COW_SERVER_POOL:-}" ] || rm -f "$pool"
	port=$(free_port)
	cowbd_launch "$port" "$pool" "$ctl" --create "$psize" "${COWBD_EXTRA[@]}" "$@" ||
		{ SRV_SKIP[$id]="did not start (see $LOGS/cowbd.log)"; return 1; }
	SRV_PID[$id]=$COW_PID SRV_CTL[$id]=$ctl SRV_URI[$id]="nbd://127.0.0.1:$port/bench"
	if ! cowctl_at "$ctl" volume create bench "$vsize" >>"$LOGS/cowbd.log" 2>&1 ||
		! wait_nbd "${SRV_URI[$id]}" "$COW_PID"; then
		SRV_SKIP[$id]="volume create or first connect failed (see $LOGS/cowbd.log)"
		return 1
	fi
}

# Start server ID (up to 3 ports); on failure mark it skipped.
bench_start() { # id
	local id=$1 fn=${1//-/_} b port try why=""
	for b in $("needs_$fn"); do
		command -v "$b" >/dev/null 2>&1 && continue
		case $b in
		*/*) SRV_SKIP[$id]="$b not built (run make)" ;;
		*) SRV_SKIP[$id]="$b not installed (make deps)" ;;
		esac
		return 1
	done
	for try in 1 2 3; do
		port=$(free_port)
		SRV_URI[$id]="nbd://127.0.0.1:$port/bench"
		if "start_$fn" "$port" && wait_nbd "${SRV_URI[$id]}" "${SRV_PID[$id]}"; then
			return 0
		fi
		why="did not start (see $LOGS/$id.log)"
		server_stop "$id"
	done
	SRV_SKIP[$id]=$why
	return 1
}

# ---- fio -----------------------------------------------------------------

# Run fio against URI; print "ops iops bytes_per_s error p50 p99 p99.9 max
# flushes secs wbytes" (bench/fio_json.py: sums over jobs; ops = reads +
# writes, flushes not counted; completion latency in µs).  JSON kept in $2.
fio_run() { # uri json-file fio-args...
	local uri=$1 out=$2 tmo
	shift 2
	tmo=$((RUNTIME * 4 + 120))
	timeout -k 5 "$tmo" fio --output-format=json --output="$out" --ioengine=nbd \
		--uri="$uri" --thread --group_reporting --percentile_list=50:99:99.9 "$@" \
		>>"$LOGS/fio.log" 2>&1
	"$PY" "$BENCH_SRC/fio_json.py" "$out" 2>>"$LOGS/fio.log" ||
		echo "0 0 0 fio-failed - - - - 0 0 0"
}
