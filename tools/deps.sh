#!/bin/sh
# Install the Debian packages cowbd builds and tests with, only those missing.
# Usage: deps.sh BUILD-PKGS... -- TEST-PKGS...   (no-op when all are present;
# as non-root, prints the apt-get command instead of running it).
set -u
missing=""
for p in "$@"; do
	[ "$p" = "--" ] && continue
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)
	case "$st" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "cowbd: missing packages:$missing" >&2
	echo "run as root: apt-get install -y$missing" >&2
	exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || { echo "deps: apt-get update failed" >&2; exit 1; }
apt-get install -y -qq $missing >/dev/null ||
	{ echo "deps: apt-get install$missing failed" >&2; exit 1; }
