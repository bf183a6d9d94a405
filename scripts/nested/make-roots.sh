#!/bin/sh
# make-roots.sh OUT LINUX_DIR VIREO [LINUX_TEST_INITRD]
#
# Builds the two initramfs archives of the nested tests from Debian's
# busybox-static and the kernel package fetch-linux.sh unpacked in LINUX_DIR:
#   OUT/l2.cpio.gz  the L2 guest's: busybox, nested-tool, the virtio (virtio_balloon too), evdev,
#                   ACPI button and 802.1Q (8021q and its dependencies) modules, l2-init.sh as /init;
#   OUT/l1.cpio     the L1 guest's (uncompressed: QEMU's emulator unpacks
#                   it faster): busybox, nested-tool, the static VIREO at
#                   /bin/vireo, the L2 kernel (bzImage, and the vmlinux
#                   inside it when fetch-linux.sh extracted one) and
#                   l2.cpio.gz under /l2, kvm, kvm-amd, irqbypass and tun
#                   under /modules (and the virtio ones that reach
#                   L1's Debian root disk), l1-init.sh as /init, and
#                   LINUX_TEST_INITRD (the initramfs of tests/linux.rs) as
#                   /l2/linux-test.cpio.gz when given.
# nested-tool (nested-tool.c) is compiled static with ${CC:-cc}.
# Always rebuilds (a few seconds). Prints one line per archive.
set -eu

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
    echo "usage: $0 OUT LINUX_DIR VIREO [LINUX_TEST_INITRD]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
linux=$2
vireo=$3
linux_test=${4:-}

[ -x /bin/busybox ] || {
    echo "make-roots: /bin/busybox missing (apt-get install busybox-static)" >&2
    exit 1
}
moddir=$(ls -d "$linux"/modules/*/kernel | head -n 1)
[ -d "$moddir" ] || {
    echo "make-roots: no module tree under $linux/modules (run scripts/fetch-linux.sh)" >&2
    exit 1
}
if command -v cpio >/dev/null 2>&1; then cpio=cpio; else cpio="/bin/busybox cpio"; fi

tmp=$(mktemp -d "$out/.make-roots.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

# The static libc is the one the static vireo links with.
${CC:-cc} -static -Os -Wall -o "$tmp/nested-tool" "$here/nested-tool.c" || {
    echo "make-roots: cannot compile nested-tool.c with ${CC:-cc} -static" >&2
    exit 1
}

# skeleton ROOT: busybox with every applet, and /dev/console (the kernel
# opens it for init before devtmpfs is mounted).
skeleton() {
    mkdir -p "$1/bin" "$1/sbin" "$1/dev" "$1/proc" "$1/sys" "$1/tmp" "$1/modules"
    cp /bin/busybox "$1/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$1/bin/$applet"
    done
    mknod -m 600 "$1/dev/console" c 5 1
    cp "$tmp/nested-tool" "$1/bin/nested-tool"
}

# modules ROOT NAME...: copies each NAME.ko of the kernel package to
# ROOT/modules/NAME.ko.
modules() {
    root=$1
    shift
    for m in "$@"; do
        ko=$(find "$moddir" -name "$m.ko" | head -n 1)
        [ -n "$ko" ] || {
            echo "make-roots: no $m.ko in $moddir" >&2
            exit 1
        }
        cp "$ko" "$root/modules/$m.ko"
    done
}

# pack ROOT ARCHIVE [gzip]
pack() {
    if [ "${3:-}" = gzip ]; then
        (cd "$1" && find . | LC_ALL=C sort | $cpio -o -H newc -R 0:0 2>/dev/null) | gzip -6 >"$2"
    else
        (cd "$1" && find . | LC_ALL=C sort | $cpio -o -H newc -R 0:0 2>/dev/null) >"$2"
    fi
}

l2="$tmp/l2"
skeleton "$l2"
modules "$l2" virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
    virtio_blk failover net_failover virtio_net virtio_console virtio-rng virtio_balloon \
    evdev button llc stp garp mrp 8021q
cp "$here/l2-init.sh" "$l2/init"
chmod 755 "$l2/init"
pack "$l2" "$tmp/l2.cpio.gz" gzip

l1="$tmp/l1"
skeleton "$l1"
# The virtio modules mount L1's Debian root when run.sh attaches it.
modules "$l1" irqbypass kvm kvm-amd tun virtio_ring virtio virtio_pci_modern_dev \
    virtio_pci_legacy_dev virtio_pci virtio_blk
mkdir -p "$l1/l2"
cp "$vireo" "$l1/bin/vireo"
cp "$linux/vmlinuz" "$l1/l2/vmlinuz"
[ ! -f "$linux/vmlinux" ] || cp "$linux/vmlinux" "$l1/l2/vmlinux"
cp "$tmp/l2.cpio.gz" "$l1/l2/initramfs.cpio.gz"
[ -z "$linux_test" ] || cp "$linux_test" "$l1/l2/linux-test.cpio.gz"
cp "$here/l1-init.sh" "$l1/init"
chmod 755 "$l1/init"
pack "$l1" "$tmp/l1.cpio"

mv -f "$tmp/l2.cpio.gz" "$out/l2.cpio.gz"
mv -f "$tmp/l1.cpio" "$out/l1.cpio"
echo "make-roots: $out/l2.cpio.gz ($(wc -c <"$out/l2.cpio.gz") bytes)"
echo "make-roots: $out/l1.cpio ($(wc -c <"$out/l1.cpio") bytes)"
