#!/usr/bin/env bash
# Builds the managed plugin's directory from the repository alone, without
# `docker build` or a registry:
#
#   OUT/config.json          copied from the repository's config.json
#   OUT/rootfs/vxbridge      the static binary
#   OUT/rootfs/usr/sbin/     xtables-nft-multi and xtables-legacy-multi with
#                            the iptables/ip6tables(-save/-restore) names of
#                            both backends (-nft, -legacy, and the plain names,
#                            which point at nft)
#   OUT/rootfs/usr/lib/...   the shared libraries `ldd` lists for them and for
#                            the xtables extensions they dlopen (comment,
#                            conntrack, MASQUERADE, ...)
#
# usage: hack/build-plugin.sh BIN CONFIG OUT
set -euo pipefail

bin=${1:?usage: build-plugin.sh BIN CONFIG OUT}
config=${2:?usage: build-plugin.sh BIN CONFIG OUT}
out=${3:?usage: build-plugin.sh BIN CONFIG OUT}

die() { echo "build-plugin: $*" >&2; exit 1; }

[ -x "$bin" ] || die "$bin is not an executable (run make build first)"
if ldd "$bin" >/dev/null 2>&1; then
	die "$bin is dynamically linked; build it with CGO_ENABLED=0"
fi
find_tool() {
	local p
	p=$(PATH="$PATH:/usr/sbin:/sbin" command -v "$1") || die "$1 not found: install the iptables package"
	readlink -f "$p"
}
nft=$(find_tool xtables-nft-multi)
legacy=$(find_tool xtables-legacy-multi)
# libxtables looks for its extensions in the directory it was built with.
xtlib=""
for d in /usr/lib/x86_64-linux-gnu/xtables /usr/lib/aarch64-linux-gnu/xtables /usr/lib64/xtables /usr/lib/xtables; do
	if [ -d "$d" ]; then xtlib=$d; break; fi
done
[ -n "$xtlib" ] || die "no xtables extension directory found"

rm -rf "$out"
root="$out/rootfs"
mkdir -p "$root/usr/sbin" "$root/etc" "$root/tmp" "$root/run/docker/plugins" "$root/var/lib/vxbridge"
chmod 1777 "$root/tmp"
cp "$config" "$out/config.json"
cp "$bin" "$root/vxbridge"

# copy_file SRC: the file's content at the same path inside the rootfs.
copy_file() {
	local dst="$root$1"
	[ -e "$dst" ] && return 0
	mkdir -p "$(dirname "$dst")"
	cp -L "$1" "$dst"
}
# copy_libs FILE: every library the dynamic loader resolves for FILE.
copy_libs() {
	ldd "$1" 2>/dev/null | awk '/=> \//{print $3; next} $1 ~ /^\//{print $1}' | while read -r lib; do
		copy_file "$lib"
		# Merged-/usr systems resolve /lib/... through a symlink: keep both paths.
		copy_file "$(readlink -f "$lib")"
	done
}

cp -L "$nft" "$root/usr/sbin/xtables-nft-multi"
cp -L "$legacy" "$root/usr/sbin/xtables-legacy-multi"
copy_libs "$nft"
copy_libs "$legacy"
mkdir -p "$root$xtlib"
cp -L "$xtlib"/*.so "$root$xtlib/"
for ext in "$xtlib"/*.so; do copy_libs "$ext"; done
for f in /etc/protocols /etc/services /etc/ethertypes; do
	[ -e "$f" ] && copy_file "$f"
done

(
	cd "$root/usr/sbin"
	for fam in iptables ip6tables; do
		for suffix in "" -save -restore; do
			ln -s xtables-nft-multi "$fam-nft$suffix"
			ln -s xtables-legacy-multi "$fam-legacy$suffix"
			ln -s xtables-nft-multi "$fam$suffix"
		done
	done
)
echo "build-plugin: $out ($(du -sh "$root" | cut -f1) rootfs)"
