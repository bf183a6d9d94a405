#!/bin/sh
# make-debian-root.sh DIR LINUX_DIR
#
# Builds the L1 guest's Debian root, for the nested scenarios that need real
# tools (dnsmasq, nft, iproute2's `ip netns`, and what later issues need:
# sshd, tgt, lvm2, the NFS server, open-iscsi), as an ext4 image:
#     DIR/l1-debian.ext4   the root, with Debian's kernel modules of
#                          LINUX_DIR/modules under /lib/modules (depmod run)
#     DIR/l1-debian.key    the inputs it was built from (see below)
# From Debian's packages only: debootstrap (installed with apt-get when
# missing) of Debian's bookworm, variant minbase, from the mirror apt uses
# here, plus the packages in PACKAGES. Nothing in the root runs at build
# time but the packages' own maintainer scripts, and those with no network
# (the second stage runs under `unshare --net --mount`) and no service
# started (a policy-rc.d that refuses every start stays in the image).
#
# Cached: when DIR/l1-debian.key matches the inputs (this script, the
# mirror, the suite, the package list and the kernel package of
# LINUX_DIR/vmlinuz.package), nothing is done. The L1 guest gets the image
# as a virtio disk that QEMU opens with snapshot=on (writes go to a
# temporary overlay, the image stays as built) and chroots into it
# (l1-init.sh's deb_mount). Prints one line saying what it did; exits 77
# (with the reason on stderr) when it cannot work here (not root, no apt).
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 DIR LINUX_DIR" >&2
    exit 2
fi
mkdir -p "$1"
dir=$(cd "$1" && pwd)
linux=$(cd "$2" && pwd)
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"

suite=bookworm
# The packages beyond minbase. dnsmasq-base is dnsmasq without its system
# service (vireo's daemon runs its own, one per network).
PACKAGES="busybox iproute2 dnsmasq-base nftables procps kmod iputils-ping
netcat-openbsd openssh-server tgt lvm2 nfs-kernel-server open-iscsi"

mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/*$/\1/p; s/^deb \(\[[^]]*\] \)\{0,1\}\(http[^ ]*\/debian\)\/* .*/\2/p' \
    /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

[ -f "$linux/vmlinuz.package" ] || {
    echo "make-debian-root: no $linux/vmlinuz.package (run scripts/fetch-linux.sh first)" >&2
    exit 1
}
moddir=$(ls -d "$linux"/modules/* | head -n 1)
[ -d "$moddir/kernel" ] || {
    echo "make-debian-root: no module tree under $linux/modules" >&2
    exit 1
}

key=$( (
    sha256sum "$self" | cut -d' ' -f1
    echo "$mirror $suite"
    echo $PACKAGES
    cat "$linux/vmlinuz.package"
) | sha256sum | cut -d' ' -f1)
if [ -f "$dir/l1-debian.key" ] && [ "$(cat "$dir/l1-debian.key")" = "$key" ] && [ -s "$dir/l1-debian.ext4" ]; then
    echo "make-debian-root: $dir/l1-debian.ext4 already built ($(du -m "$dir/l1-debian.ext4" | cut -f1) MiB used)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "make-debian-root: not root: debootstrap needs root" >&2
    exit 77
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || {
        echo "make-debian-root: no debootstrap and no apt-get to install it" >&2
        exit 77
    }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; }
fi
for tool in mke2fs unshare; do
    command -v $tool >/dev/null 2>&1 || {
        echo "make-debian-root: $tool missing (e2fsprogs, util-linux)" >&2
        exit 1
    }
done

t0=$(date +%s)
tmp=$(mktemp -d "$dir/.make-debian-root.XXXXXX")
# The second stage mounts proc and sys inside the root, in its own mount
# namespace: nothing of it stays mounted when the script ends.
trap 'rm -rf "$tmp"' EXIT INT TERM
root="$tmp/root"
log="$dir/make-debian-root.log"
include=$(echo $PACKAGES | tr ' ' ',')
echo "make-debian-root: debootstrap $suite (minbase + $include) from $mirror; log in $log" >&2
if ! debootstrap --foreign --variant=minbase --include="$include" "$suite" "$root" "$mirror" >"$log" 2>&1; then
    echo "make-debian-root: debootstrap's first stage failed; the end of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
fi
# No service starts while packages are configured, nor later in L1 unless
# a scenario starts it by hand.
printf '#!/bin/sh\n# vireo: services are started by hand in the nested tests\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
if ! unshare --net --mount --propagation private chroot "$root" /debootstrap/debootstrap --second-stage >>"$log" 2>&1; then
    echo "make-debian-root: debootstrap's second stage failed; the end of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
fi
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/* "$root/usr/share/doc" \
    "$root/usr/share/man" "$root/usr/share/info"
mkdir -p "$root/lib/modules"
cp -a "$moddir" "$root/lib/modules/"
version=$(basename "$moddir")
chroot "$root" depmod -a "$version"
# debootstrap copied this host's name and resolver: nothing of this host
# goes into the image.
echo vireo-l1 >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tvireo-l1\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
rm -f "$root/etc/resolv.conf"
: >"$root/etc/resolv.conf"
# l1-init.sh binds the L2 kernel, the initramfs and /tmp here.
mkdir -p "$root/l2"

used=$(du -sm "$root" | cut -f1)
# Room for what the scenarios write outside /tmp (which is L1's tmpfs).
size=$((used + used / 4 + 256))
rm -f "$tmp/l1-debian.ext4"
mke2fs -q -t ext4 -L vireo-l1 -d "$root" "$tmp/l1-debian.ext4" "${size}M"
mv -f "$tmp/l1-debian.ext4" "$dir/l1-debian.ext4"
echo "$key" >"$dir/l1-debian.key"
t1=$(date +%s)
echo "make-debian-root: built $dir/l1-debian.ext4 in $((t1 - t0)) s: $used MiB of files in a ${size} MiB image (packages: minbase + $include)"
