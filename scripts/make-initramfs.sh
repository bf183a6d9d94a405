#!/bin/sh
# make-initramfs.sh DIR
#
# Builds DIR/initramfs.cpio.gz (cpio newc, gzip) from Debian's busybox-static
# (installed with apt-get if /bin/busybox is missing). Its /init mounts proc,
# sysfs and devtmpfs, prints
#     vireo-linux: init reached
#     vireo-linux: cpus N
#     vireo-linux: MemTotal: M kB
# and powers the machine off with `poweroff -f`. Uses the `cpio` program if
# installed, busybox's own cpio otherwise. Does nothing when the archive is
# newer than this script and /bin/busybox. Prints one line saying what it did.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
out="$dir/initramfs.cpio.gz"
self=$(command -v "$0" 2>/dev/null || echo "$0")

if [ ! -x /bin/busybox ]; then
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
    fi
fi
if ! /bin/busybox --list | grep -qx nproc; then
    echo "make-initramfs: /bin/busybox lacks nproc (is it busybox-static?)" >&2
    exit 1
fi

if [ -s "$out" ] && [ "$out" -nt "$self" ] && [ "$out" -nt /bin/busybox ]; then
    echo "make-initramfs: $out is up to date"
    exit 0
fi

if command -v cpio >/dev/null 2>&1; then
    cpio="cpio"
else
    cpio="/bin/busybox cpio"
fi

tmp=$(mktemp -d "$dir/.make-initramfs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
root="$tmp/root"
mkdir -p "$root/bin" "$root/sbin" "$root/dev" "$root/proc" "$root/sys" "$root/root"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
# The kernel opens /dev/console for init before devtmpfs is mounted.
if [ "$(id -u)" = 0 ]; then
    mknod -m 600 "$root/dev/console" c 5 1
fi

cat >"$root/init" <<'INIT'
#!/bin/busybox sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "vireo-linux: init reached"
echo "vireo-linux: cpus $(nproc)"
echo "vireo-linux: $(grep MemTotal /proc/meminfo | tr -s ' ')"
poweroff -f
# Only reached if the power-off request failed.
echo "vireo-linux: poweroff -f failed"
sleep 1000000
INIT
chmod 755 "$root/init"

(cd "$root" && find . | LC_ALL=C sort | $cpio -o -H newc -R 0:0 2>/dev/null) |
    gzip -9 >"$tmp/initramfs.cpio.gz"
mv -f "$tmp/initramfs.cpio.gz" "$out"
echo "make-initramfs: built $out ($(wc -c <"$out") bytes, busybox $(/bin/busybox | head -n 1 | cut -d' ' -f2), $cpio)"
