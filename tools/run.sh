#!/bin/sh
# `make run`: start cowbd on var/pool.img (16 GiB sparse, created if
# missing) with volume vol0 (8 GiB, created if missing), serving NBD on
# 127.0.0.1:10809 and the control socket var/control.sock, logging to
# stderr.  Ctrl-C stops it cleanly (flush + checkpoint).
# Environment: COWBD_POOL, COWBD_POOL_SIZE, COWBD_LISTEN, COWBD_VOLUME_SIZE.
set -u
BUILD=${1:-build}
POOL=${COWBD_POOL:-var/pool.img}
LISTEN=${COWBD_LISTEN:-127.0.0.1:10809}
CTL=var/control.sock
mkdir -p "$(dirname "$POOL")" var
"$BUILD/cowbd" --pool "$POOL" --create "${COWBD_POOL_SIZE:-16G}" --listen "$LISTEN" \
	--control "$CTL" --foreground &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit $?' INT TERM
i=0
while [ ! -S "$CTL" ]; do
	kill -0 $pid 2>/dev/null || { wait $pid; echo "make run: cowbd failed to start" >&2; exit 1; }
	i=$((i + 1)); [ $i -gt 200 ] && { echo "make run: cowbd did not come up" >&2; kill $pid; exit 1; }
	sleep 0.05
done
if ! "$BUILD/cowctl" --control "$CTL" volume info vol0 >/dev/null 2>&1; then
	"$BUILD/cowctl" --control "$CTL" volume create vol0 "${COWBD_VOLUME_SIZE:-8G}" || { kill $pid; exit 1; }
fi
host=${LISTEN%:*}; port=${LISTEN##*:}
cat <<MSG

cowbd is serving pool $POOL on $LISTEN (pid $pid); Ctrl-C stops it.
  nbdinfo nbd://$host:$port/vol0
  qemu-img convert -n -O raw disk.raw nbd://$host:$port/vol0
  nbd-client $host $port -N vol0 /dev/nbd0          # kernel client
  $BUILD/cowctl --control $CTL volume list
  $BUILD/cowctl --control $CTL snapshot create vol0@base
  $BUILD/cowctl --control $CTL clone vol0@base vm1

MSG
wait $pid
