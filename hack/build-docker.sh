#!/usr/bin/env bash
# Builds the current Docker daemon from the Go module proxy (no registry, no
# download site): dockerd and docker-proxy (moby), containerd and its runc
# shim, a runc new enough for it, and the current docker client, into a
# cache outside the work tree:
#
#   $VXBRIDGE_DOCKER_CACHE/docker-<moby>-containerd-<v>-runc-<v>-cli-<v>-r<recipe>/bin
#
# (VXBRIDGE_DOCKER_CACHE defaults to /var/cache/vxbridge) and prints that
# directory, alone, on stdout. The end-to-end tests put it first on PATH for
# a host's dockerd (dockerd starts the containerd it finds on PATH, which
# finds runc there). A second run finds the cache and returns at once; runs
# that race wait for each other on a lock, and a build is moved into place
# whole, so a half-built directory is never used.
#
# Why runc too: Debian's runc 1.1.5 fails every `docker run` on this daemon
# with `namespace {"time" ""} does not exist` (the daemon puts a time
# namespace in every spec). runc needs libseccomp-dev and pkg-config (apt,
# installed here when missing and root).
#
# Why the client too: a client older than API 1.48 (Debian's 20.10 speaks
# 1.41) always sends EnableIPv6=false, which the current daemon takes as
# --ipv6=false: -o com.docker.network.enable_ipv6 and daemon.json's
# default-network-opts are then dropped, for every driver.
#
# usage: hack/build-docker.sh            build if needed, print the bin dir
#        hack/build-docker.sh --dir      print the bin dir, build nothing
set -euo pipefail

# The versions, pinned. moby v2.0.0-beta.24 is API 1.56 (minimum 1.40, so
# Debian's 20.10 client, API 1.41, speaks to it).
MOBY_VERSION=v2.0.0-beta.24
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.3
CLI_VERSION=v29.10.0+incompatible
# The client's vendor.mod asks for swarmkit v2.1.3, which the proxy does not
# serve; it uses swarmkit's API types only. This is the one moby pins.
CLI_SWARMKIT=github.com/moby/swarmkit/v2@v2.1.3-0.20260828175525-ad0357aedfca
# Bump when the build commands below change, so an older cache is not used.
RECIPE=1

BINARIES=(dockerd docker-proxy containerd containerd-shim-runc-v2 runc docker)
CACHE_ROOT=${VXBRIDGE_DOCKER_CACHE:-/var/cache/vxbridge}
KEY=docker-$MOBY_VERSION-containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION-cli-${CLI_VERSION%+*}-r$RECIPE
DIR=$CACHE_ROOT/$KEY
BIN=$DIR/bin

log() { echo "build-docker: $*" >&2; }
die() { log "$*"; exit 1; }

# complete: the bin directory holds every binary. It only ever appears whole
# (renamed into place after the build), so no lock is needed to trust it.
complete() {
	local b
	[ -f "$BIN/VERSIONS" ] || return 1
	for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

if [ "${1:-}" = "--dir" ]; then
	echo "$BIN"
	exit 0
fi
if complete; then
	echo "$BIN"
	exit 0
fi

command -v go >/dev/null || die "go not found in PATH"
mkdir -p "$CACHE_ROOT" || die "cannot create $CACHE_ROOT (run as root, or set VXBRIDGE_DOCKER_CACHE)"
exec 9>"$CACHE_ROOT/$KEY.lock"
# A cold build takes ~10 min on 2 cores; a racing run waits for it.
flock -w 3600 9 || die "timed out waiting for $CACHE_ROOT/$KEY.lock"
if complete; then
	echo "$BIN"
	exit 0
fi

# runc's seccomp support links libseccomp through cgo and pkg-config.
ensure_build_deps() {
	local need=()
	command -v pkg-config >/dev/null || need+=(pkg-config)
	pkg-config --exists libseccomp 2>/dev/null || need+=(libseccomp-dev)
	command -v gcc >/dev/null || need+=(gcc)
	[ ${#need[@]} -eq 0 ] && return
	[ "$(id -u)" -eq 0 ] || die "missing ${need[*]} (apt-get install ${need[*]}, as root)"
	log "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=300 update -q >&2
	apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${need[@]}" >&2
}

# fetch MODULE VERSION DEST: the module's source from the proxy, copied to a
# writable DEST (the module cache is read-only, and go builds a main module
# in place).
fetch() {
	local src
	src=$(go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$src" ] && [ -d "$src" ] || die "go mod download $1@$2 gave no directory"
	cp -r "$src" "$3"
	chmod -R u+w "$3"
}

build_moby() {
	local src=$WORK/moby pkg=github.com/moby/moby/v2/dockerversion
	fetch github.com/moby/moby/v2 "$MOBY_VERSION" "$src"
	# The tags and static linking are moby's own release build's.
	local ld="-w -extldflags -static -X $pkg.Version=${MOBY_VERSION#v} -X $pkg.GitCommit=$MOBY_VERSION"
	(cd "$src" && CGO_ENABLED=1 go build -trimpath -tags "netgo osusergo static_build nri_no_wasm" \
		-ldflags "$ld" -o "$OUT/" ./cmd/dockerd ./cmd/docker-proxy)
}

build_containerd() {
	local src=$WORK/containerd pkg=github.com/containerd/containerd/v2/version
	fetch github.com/containerd/containerd/v2 "$CONTAINERD_VERSION" "$src"
	local ld="-X $pkg.Version=$CONTAINERD_VERSION -X $pkg.Revision=$CONTAINERD_VERSION"
	(cd "$src" && go build -trimpath -tags "urfave_cli_no_docs no_btrfs" -ldflags "$ld" \
		-o "$OUT/" ./cmd/containerd)
	(cd "$src" && CGO_ENABLED=0 go build -trimpath -tags "urfave_cli_no_docs no_grpc" -ldflags "$ld" \
		-o "$OUT/" ./cmd/containerd-shim-runc-v2)
}

build_runc() {
	local src=$WORK/runc
	fetch github.com/opencontainers/runc "$RUNC_VERSION" "$src"
	# Without runc's libpathrs tag: that needs a Rust library Debian lacks.
	(cd "$src" && CGO_ENABLED=1 go build -trimpath -buildmode=pie -tags "seccomp urfave_cli_no_docs" \
		-ldflags "-X main.gitCommit=$RUNC_VERSION" -o "$OUT/runc" .)
}

# The client has no go.mod (CalVer): its vendor.mod is one, without vendor/.
build_cli() {
	local src=$WORK/cli version=${CLI_VERSION#v}
	fetch github.com/docker/cli "$CLI_VERSION" "$src"
	(cd "$src" && rm -rf vendor && cp vendor.mod go.mod && cp vendor.sum go.sum &&
		go mod edit -replace "github.com/moby/swarmkit/v2=$CLI_SWARMKIT" &&
		CGO_ENABLED=0 go build -trimpath -mod=mod -ldflags "-X github.com/docker/cli/cli/version.Version=${version%+*}" \
			-o "$OUT/docker" ./cmd/docker)
}

ensure_build_deps
mkdir -p "$DIR"
WORK=$(mktemp -d "$DIR/build.XXXXXX")
# The go tool's output (some hundred "downloading" lines) goes to a log,
# shown when a step fails.
LOG=$DIR/build.log
: >"$LOG"
# set -e may end the script inside a step, whose output still goes to the
# log: fd 3 is the script's own stderr.
exec 3>&2
on_exit() {
	local rc=$?
	[ "$rc" -eq 0 ] || { tail -n 40 "$LOG"; log "failed (exit $rc); the whole log: $LOG"; } >&3 2>&3
	rm -rf "$WORK"
}
trap on_exit EXIT
OUT=$WORK/bin
mkdir "$OUT"
start=$SECONDS
for part in "moby $MOBY_VERSION" "containerd $CONTAINERD_VERSION" "runc $RUNC_VERSION" "cli $CLI_VERSION"; do
	t=$SECONDS
	log "building $part (log: $LOG)"
	"build_${part%% *}" >>"$LOG" 2>&1
	log "built $part in $((SECONDS - t)) s"
done
{
	"$OUT/dockerd" --version
	"$OUT/containerd" --version
	"$OUT/runc" --version | sed -n 1p # (head would end runc by SIGPIPE)
	"$OUT/docker" --version
} >"$OUT/VERSIONS"
rm -rf "$BIN"
mv "$OUT" "$BIN"
log "built in $((SECONDS - start)) s: $BIN"
echo "$BIN"
