#!/bin/bash
# tests/ceph/cluster.sh — a throwaway single-host Ceph cluster for tests.
#
#   cluster.sh start DIR [NOSDS]   one mon, one mgr, NOSDS (1 or 3) bluestore OSDs on
#                                  sparse files, all on 127.0.0.1, everything under DIR;
#                                  pool `cowbd` (size NOSDS, min_size 1 or 2); user client.cowbd
#   cluster.sh stop DIR            SIGTERM every daemon by its pid file, wait, SIGKILL the
#                                  ones still alive after 20 s; works on a half-started DIR
#   cluster.sh status DIR          each daemon alive or not, then `ceph -s` if the mon is up
#   cluster.sh osd-kill DIR N      SIGKILL osd.N (a crash), return once it is gone
#   cluster.sh osd-start DIR N     start osd.N again, return once it is up and every PG of
#                                  pool cowbd is active+clean (CEPH_START_TIMEOUT, 60 s)
#
# Clients use DIR/ceph.conf and DIR/client.cowbd.keyring (found through the conf):
#   rados -c DIR/ceph.conf --id cowbd -p cowbd ls
# The monitor listens on a free loopback port (msgr v2 only; CEPH_MON_PORT sets the first
# port tried); no systemd, no /etc/ceph, no /var/lib/ceph. A start that has no writable
# pool within CEPH_START_TIMEOUT seconds (default 60) prints the daemons' log tails, stops what it started and exits 1.
# Daemons run in the foreground of a background job, so each PID is known at once and
# written to DIR/run/NAME.pid before anything else happens; stop kills only a PID whose
# command line names DIR/ceph.conf.
set -u
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"

die() {
	echo "cluster.sh: $*" >&2
	exit 1
}

usage() {
	echo "usage: cluster.sh start DIR [1|3] | stop DIR | status DIR | osd-kill DIR N |" \
		"osd-start DIR N" >&2
	exit 2
}

# Seconds left before the start deadline (at least 1, so `timeout` never gets 0).
left() {
	local n=$((DEADLINE - $(date +%s)))
	[ "$n" -gt 0 ] || n=1
	echo "$n"
}

# ceph CLI as client.admin, bounded by the start deadline.
adm() {
	timeout "$(left)" ceph -c "$DIR/ceph.conf" --connect-timeout "$(left)" "$@"
}

ms_since() {
	echo $((($(date +%s%N) - $1) / 1000000))
}

free_port() {
	/usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

write_conf() {
	local fsid=$1 port=$2 nosds=$3 minsize=1
	# with three replicas, writes need two of them (Ceph's default for size 3): one OSD
	# may die without stopping I/O, two may not
	[ "$nosds" = 1 ] || minsize=2
	cat >"$DIR/ceph.conf" <<EOF
# written by tests/ceph/cluster.sh: a throwaway test cluster, loopback only
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
# a taken mon port fails in 1 s (the start retries with another), not 15
ms bind retry count = 1
ms bind retry delay = 1
# every path under DIR; the mon's keyring stays outside its data directory
keyring = $DIR/\$name.keyring
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
crash dir = $DIR/crash
mon data = $DIR/\$name
mgr data = $DIR/\$name
osd data = $DIR/\$name
log to stderr = false
err to stderr = true
# one host: replicas go to distinct OSDs, not hosts
osd crush chooseleaf type = 0
osd pool default size = $nosds
osd pool default min size = $minsize
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
auth allow insecure global id reclaim = false
mgr initial modules = iostat
# clients fail instead of hanging on a dead cluster
client mount timeout = 15
rados osd op timeout = 15
rados mon op timeout = 15
# small memory: 3 OSDs, a mon and a mgr in well under 2 GB
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 67108864
osd op num shards = 1
osd op num threads per shard = 2
ms async op threads = 1
rocksdb cache size = 16777216
# bluestore makes its block file (sparse); never set bluestore block path
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 10737418240
bluestore fsck on mkfs = false
bluestore fsck on mount = false
osd class load list = *
osd class default list = *
# an OSD started again catches up in seconds: no recovery throttle
osd recovery sleep hdd = 0
osd recovery sleep ssd = 0
osd recovery sleep hybrid = 0
osd recovery max active = 16
# clients get no admin socket: every cowbd and rados process is client.cowbd, and a
# second one would fail to bind the same client.cowbd.asok (an error on its stderr)
[client]
admin socket =
EOF
}

# spawn NAME CMD...: run a daemon in the foreground as a background job; its PID goes to
# DIR/run/NAME.pid at once.
spawn() {
	local name=$1
	shift
	"$@" -f -c "$DIR/ceph.conf" >>"$DIR/log/$name.out" 2>&1 </dev/null 3>&- &
	echo $! >"$DIR/run/$name.pid"
}

# The client.cowbd caps (documented in docs/RADOS.md): data in pool cowbd with class
# methods (x: cls_lock's exclusive locks), map reads, and adding a client instance
# (addr:port/nonce) to the OSD blocklist — not removing, not whole hosts.
COWBD_MON_CAPS='allow r, allow command "osd blocklist" with blocklistop=add addr regex "^[^/]+/[0-9]+$"'
COWBD_OSD_CAPS='allow rwx pool=cowbd'

# mon_start FSID PORT NOSDS: conf, monmap, mon mkfs and mon.a on 127.0.0.1:PORT, ready
# when it answers. Returns 0, 2 when the port was taken, 1 on another failure.
mon_start() {
	PHASE="monmap and conf"
	rm -rf "$DIR/mon.a" "$DIR/monmap" "$DIR/run/mon.a.pid" || return 1
	write_conf "$1" "$2" "$3"
	monmaptool --create --fsid "$1" --addv a "[v2:127.0.0.1:$2]" "$DIR/monmap" || return 1
	PHASE="mon mkfs"
	timeout "$(left)" ceph-mon -c "$DIR/ceph.conf" --mkfs -i a --monmap "$DIR/monmap" \
		--keyring "$DIR/mon.a.keyring" >>"$DIR/log/mon.a.out" 2>&1 || return 1
	PHASE="mon start"
	spawn mon.a ceph-mon -i a
	until timeout 5 ceph -c "$DIR/ceph.conf" --connect-timeout 5 mon stat >/dev/null 2>&1; do
		if ! alive "$DIR/run/mon.a.pid"; then
			grep -qs "Address already in use" "$DIR/log/mon.a.log" "$DIR/log/mon.a.out" &&
				return 2
			echo "mon.a exited" >&2
			return 1
		fi
		[ "$(date +%s)" -lt "$DEADLINE" ] || { echo "mon.a does not answer" >&2; return 1; }
		sleep 0.2
	done
}

start() {
	local nosds=$1 fsid port try i uuid secret id t0
	t0=$(date +%s%N)
	DEADLINE=$(($(date +%s) + ${CEPH_START_TIMEOUT:-60}))
	fsid=$(cat /proc/sys/kernel/random/uuid)

	PHASE="keyrings"
	ceph-authtool --create-keyring "$DIR/mon.a.keyring" --gen-key -n mon. \
		--cap mon 'allow *' || return 1
	ceph-authtool --create-keyring "$DIR/client.admin.keyring" --gen-key -n client.admin \
		--cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' ||
		return 1
	ceph-authtool "$DIR/mon.a.keyring" --import-keyring "$DIR/client.admin.keyring" ||
		return 1

	# The free port is found by binding port 0 and closing it, so another process may take
	# it before the mon binds it: then the mon exits and the next try has another port.
	# CEPH_MON_PORT sets the first try's port.
	for try in 1 2 3; do
		port=${CEPH_MON_PORT:-$(free_port)} || die "no free loopback port"
		CEPH_MON_PORT=""
		mon_start "$fsid" "$port" "$nosds" && break
		[ $? = 2 ] && [ "$try" != 3 ] || return 1
		echo "mon: 127.0.0.1:$port already in use, try $((try + 1))" >&2
		mv "$DIR/log/mon.a.log" "$DIR/log/mon.a.log.try$try" 2>/dev/null
		mv "$DIR/log/mon.a.out" "$DIR/log/mon.a.out.try$try"
	done

	PHASE="mgr key"
	mkdir -p "$DIR/mgr.x" || return 1
	adm auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
		-o "$DIR/mgr.x.keyring" || return 1
	spawn mgr.x ceph-mgr -i x

	for ((i = 0; i < nosds; i++)); do
		PHASE="osd.$i creation"
		uuid=$(cat /proc/sys/kernel/random/uuid)
		secret=$(ceph-authtool --gen-print-key) || return 1
		id=$(echo "{\"cephx_secret\": \"$secret\"}" | adm osd new "$uuid" -i -) || return 1
		[ "$id" = "$i" ] || { echo "osd new gave id '$id', want $i" >&2; return 1; }
		mkdir -p "$DIR/osd.$id" || return 1
		ceph-authtool --create-keyring "$DIR/osd.$id.keyring" -n "osd.$id" \
			--add-key "$secret" || return 1
		timeout "$(left)" ceph-osd -c "$DIR/ceph.conf" -i "$id" --mkfs --osd-uuid "$uuid" \
			>>"$DIR/log/osd.$id.out" 2>&1 || return 1
		spawn "osd.$id" ceph-osd -i "$id"
	done

	PHASE="pool cowbd and client.cowbd"
	adm osd pool create cowbd 8 8 replicated 2>&1 || return 1
	adm osd pool set cowbd size "$nosds" --yes-i-really-mean-it 2>&1 || return 1
	adm osd pool set cowbd min_size $((nosds == 1 ? 1 : 2)) 2>&1 || return 1
	adm osd pool application enable cowbd rados 2>&1 || return 1
	adm auth get-or-create client.cowbd mon "$COWBD_MON_CAPS" osd "$COWBD_OSD_CAPS" \
		-o "$DIR/client.cowbd.keyring" || return 1

	PHASE="waiting for pool cowbd to be writable"
	# Ready when client.cowbd can write: every PG of the pool is active. Each try is
	# bounded by the osd op timeout (15 s) and the deadline.
	until timeout "$(left)" rados -c "$DIR/ceph.conf" --id cowbd -p cowbd \
		put cluster-ready "$DIR/ceph.conf" 2>/dev/null; do
		[ "$(date +%s)" -lt "$DEADLINE" ] || { echo "pool cowbd not writable" >&2; return 1; }
		for f in "$DIR"/run/*.pid; do
			alive "$f" || { echo "$(basename "$f" .pid) exited" >&2; return 1; }
		done
		sleep 0.2
	done
	echo >&3 "cluster: $nosds OSD(s) up, pool cowbd writable in" \
		"$(ms_since "$t0") ms;" \
		"health $(adm health 2>/dev/null | head -n 1)"
}

# alive PIDFILE: the process named there runs and is one of DIR's daemons.
alive() {
	local pid
	pid=$(cat "$1" 2>/dev/null) || return 1
	[ -n "$pid" ] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null |
		grep -qF -- "-c $DIR/ceph.conf"
}

tails() {
	local f
	for f in "$DIR"/log/*.log "$DIR"/log/*.out; do
		[ -s "$f" ] || continue
		echo "--- tail of $f" >&2
		tail -n 15 "$f" >&2
	done
}

# running PID: the process exists and is not a zombie.
running() {
	local st
	st=$({ awk '{ print $3 }' "/proc/$1/stat"; } 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# term_wait PIDFILE...: SIGTERM the live daemons named, wait for them to exit; after
# 20 s, SIGKILL and wait again.
term_wait() {
	local f n pid pids="" more
	for f in "$@"; do
		alive "$f" || continue
		pid=$(cat "$f")
		kill -TERM "$pid" 2>/dev/null
		pids="$pids $pid"
	done
	for ((n = 0; n < 200; n++)); do
		more=""
		for pid in $pids; do
			running "$pid" && more="$more $pid"
		done
		pids=$more
		[ -z "$pids" ] && return 0
		sleep 0.1
	done
	for pid in $pids; do
		echo "cluster.sh: pid $pid ignored SIGTERM for 20 s, SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null
	done
	for pid in $pids; do
		while running "$pid"; do sleep 0.1; done
	done
}

# The OSDs and the mgr first, the mon once they are gone: an OSD stopped after the mon
# waits about 5 s for a mon that is gone (measured: stop takes under 1 s, not 7).
stop() {
	[ -d "$DIR/run" ] || return 0
	term_wait "$DIR"/run/osd.*.pid "$DIR"/run/mgr.*.pid
	term_wait "$DIR"/run/mon.*.pid
	rm -f "$DIR"/run/*.pid
}

status() {
	local f up=1 any=0
	for f in "$DIR"/run/*.pid; do
		[ -f "$f" ] || continue
		any=1
		if alive "$f"; then
			echo "$(basename "$f" .pid) pid $(cat "$f") running"
		else
			echo "$(basename "$f" .pid) not running"
			up=0
		fi
	done
	[ "$any" = 1 ] || { echo "no daemons in $DIR"; return 3; }
	alive "$DIR/run/mon.a.pid" && timeout 20 ceph -c "$DIR/ceph.conf" --connect-timeout 15 -s
	[ "$up" = 1 ]
}

# osd_json EXPR: evaluate EXPR on `ceph osd dump`'s JSON (bound to j), e.g. to find an
# OSD's up flag and the epoch it came up in.
osd_json() {
	timeout 20 ceph -c "$DIR/ceph.conf" --connect-timeout 15 osd dump -f json 2>/dev/null |
		/usr/bin/python3 -c 'import json, sys
j = json.load(sys.stdin)
print(eval(sys.argv[1]))' "$1"
}

# pool_clean: every PG of the cluster is active+clean (as the mgr last heard).
pool_clean() {
	timeout 20 ceph -c "$DIR/ceph.conf" --connect-timeout 15 pg stat -f json 2>/dev/null |
		/usr/bin/python3 -c 'import json, sys
s = json.load(sys.stdin)["pg_summary"]["num_pg_by_state"]
sys.exit(not s or any(x["name"] != "active+clean" for x in s))'
}

# osd_kill N: SIGKILL osd.N, as a crash would; return once the process is gone (the mon
# learns it from the other OSDs within seconds).
osd_kill() {
	local f="$DIR/run/osd.$1.pid" pid
	alive "$f" || die "osd.$1 is not running"
	pid=$(cat "$f")
	kill -KILL "$pid"
	while running "$pid"; do sleep 0.1; done
}

# osd_start N: start osd.N again; ready once the mon has it up in a newer epoch than
# before and the mgr reports every PG active+clean (recovery done).
osd_start() {
	local n=$1 was cond
	[ -d "$DIR/osd.$n" ] || die "no osd.$n in $DIR"
	! alive "$DIR/run/osd.$n.pid" || die "osd.$n is running"
	cond="[o for o in j['osds'] if o['osd'] == $n][0]"
	was=$(osd_json "${cond}['up_from']") || die "no osd map (is the mon up?)"
	DEADLINE=$(($(date +%s) + ${CEPH_START_TIMEOUT:-60}))
	spawn "osd.$n" ceph-osd -i "$n"
	until [ "$(osd_json "${cond}['up'] == 1 and ${cond}['up_from'] != $was")" = True ] &&
		pool_clean; do
		alive "$DIR/run/osd.$n.pid" || die "osd.$n exited; see $DIR/log/osd.$n.log"
		[ "$(date +%s)" -lt "$DEADLINE" ] ||
			die "osd.$n not up with every PG active+clean after ${CEPH_START_TIMEOUT:-60} s"
		sleep 0.5
	done
}

[ $# -ge 2 ] || usage
cmd=$1
DIR=$(realpath -m "$2")
case "$cmd" in
start)
	nosds=${3:-1}
	case "$nosds" in 1 | 3) ;; *) usage ;; esac
	[ ! -e "$DIR/ceph.conf" ] || die "$DIR already holds a cluster (stop it, remove $DIR)"
	mkdir -p "$DIR/run" "$DIR/log" "$DIR/crash" || die "cannot create $DIR"
	PHASE="setup"
	# the tools' chatter goes to DIR/log/setup.out, the one-line summary to stdout
	if ! start "$nosds" 3>&1 >>"$DIR/log/setup.out"; then
		echo "cluster.sh: start of $nosds-OSD cluster in $DIR failed at: $PHASE" >&2
		tails
		stop
		exit 1
	fi
	;;
stop) stop ;;
status) status ;;
osd-kill | osd-start)
	[ $# = 3 ] && [[ $3 =~ ^[0-9]+$ ]] || usage
	"${cmd/-/_}" "$3"
	;;
*) usage ;;
esac
