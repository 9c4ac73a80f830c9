#!/usr/bin/env bash
# Installs the Debian packages vxbridge's run and test targets need, when one
# is missing and we are root, and for the tests (as root) the current Docker
# daemon (hack/build-docker.sh). Idempotent; prints nothing when all is there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have iptables  || need+=(iptables)
have ip        || need+=(iproute2)
have nsenter   || need+=(util-linux)
have modprobe  || need+=(kmod)
if [ "${1:-}" = "test" ]; then
	have dockerd || need+=(docker.io)
	[ -x /bin/busybox ] || need+=(busybox-static)
	have ping    || need+=(iputils-ping)
	# The etcd-backed tests (cluster/, ipam blocks, multi-host e2e) skip
	# without it, so CI would prove nothing about cross-host state.
	have etcd    || need+=(etcd-server)
fi

install() {
	[ ${#need[@]} -eq 0 ] && return
	if [ "$(id -u)" -ne 0 ]; then
		echo "install-deps: missing ${need[*]}; not root, so not installing (root-only test tiers will skip)" >&2
		return
	fi
	echo "install-deps: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	# apt's own lock serialises concurrent runs; wait for it rather than fail.
	apt-get -o DPkg::Lock::Timeout=300 update -q
	apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${need[@]}"
}
install

# The end-to-end tests run on the current Docker daemon too, built from the
# Go module proxy into a cache (~10 min the first time, then nothing to do).
if [ "${1:-}" = "test" ] && [ "$(id -u)" -eq 0 ]; then
	"$(dirname "$0")/build-docker.sh" >/dev/null
fi
