#!/bin/sh
# fetch-qemu.sh DIR
#
# Puts Debian's QEMU 7.2 system emulator at DIR/root/usr/bin/qemu-system-x86_64
# with its firmware under DIR/root/usr/share/{qemu,seabios}, WITHOUT installing
# the qemu-system-x86 package: Debian's 7.2 conflicts with the backported
# qemu-utils 10 other tests compare against (SPEC, "Installing QEMU"), and a
# downgrade would change what those tests check. So the .debs of
# qemu-system-x86, qemu-system-common (its TCG accelerator is a loadable
# module there), qemu-system-data and seabios are downloaded with apt-get
# and unpacked with dpkg-deb; only the shared libraries qemu-system-x86
# depends on are installed (libraries conflict with nothing). Run QEMU as
#     QEMU_MODULE_DIR=DIR/root/usr/lib/x86_64-linux-gnu/qemu \
#     DIR/root/usr/bin/qemu-system-x86_64 -L DIR/root/usr/share/qemu \
#         -L DIR/root/usr/share/seabios -accel tcg ...
# qemu-block-extra (the same 7.2) is unpacked beside it, so QEMU_MODULE_DIR
# also finds block-nfs.so and block-iscsi.so (QEMU's libnfs and libiscsi
# drivers, used by bench/nfs.py); its other modules' libraries (rbd,
# gluster, curl, ssh) are not installed, and QEMU loads a module only when
# a drive asks for it.
# DIR/qemu.package records the version. When DIR already holds that QEMU and
# it runs, nothing is done (an older DIR without block-nfs.so gets only
# qemu-block-extra unpacked into it). Prints one line saying what it did; exits 77
# (with the reason on stderr) when it cannot work here (not root, no apt).
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
qemu="$dir/root/usr/bin/qemu-system-x86_64"

# True when QEMU starts with its TCG module: a machine with no kernel that
# stops at once (-S, then quit through the monitor on stdin).
runs() {
    [ -x "$qemu" ] && echo quit | QEMU_MODULE_DIR="$dir/root/usr/lib/x86_64-linux-gnu/qemu" \
        timeout 30 "$qemu" -L "$dir/root/usr/share/qemu" -L "$dir/root/usr/share/seabios" \
        -accel tcg -S -display none -monitor stdio -nic none >/dev/null 2>&1
}

modules="$dir/root/usr/lib/x86_64-linux-gnu/qemu"
if [ -f "$dir/qemu.package" ] && runs && [ -f "$modules/block-nfs.so" ]; then
    echo "fetch-qemu: $qemu already present ($(cat "$dir/qemu.package"))"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "fetch-qemu: no apt-get here: cannot fetch Debian's QEMU" >&2
    exit 77
fi
if [ "$(id -u)" != 0 ]; then
    echo "fetch-qemu: not root: cannot install QEMU's libraries" >&2
    exit 77
fi

tmp=$(mktemp -d "$dir/.fetch-qemu.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
# apt-get download runs as _apt when it can; the directory is root's.
chmod 755 "$tmp"

# qemu-block-extra at the version of the QEMU in DIR, unpacked into it.
block_extra() {
    version=$(sed -n 's/^qemu-system-x86 //p' "$dir/qemu.package")
    if ! (cd "$tmp" && apt-get download -qq "qemu-block-extra=$version" >/dev/null 2>&1); then
        apt-get update -qq >/dev/null
        (cd "$tmp" && apt-get download -qq "qemu-block-extra=$version" >/dev/null)
    fi
    mkdir -p "$tmp/extra"
    dpkg-deb -x "$tmp"/qemu-block-extra_*.deb "$tmp/extra"
    cp -a "$tmp/extra/usr/lib/x86_64-linux-gnu/qemu/." "$modules/"
    missing=$(ldd "$modules/block-nfs.so" | sed -n 's/^\s*\([^ ]*\) => not found/\1/p' | tr '\n' ' ')
    [ -z "$missing" ] || echo "fetch-qemu: block-nfs.so lacks $missing (apt-get install libnfs13)" >&2
}

if [ -f "$dir/qemu.package" ] && runs; then
    block_extra
    echo "fetch-qemu: added qemu-block-extra $version to $dir/root"
    exit 0
fi

pkgs="qemu-system-x86 qemu-system-common qemu-system-data seabios"
if ! (cd "$tmp" && apt-get download -qq $pkgs >/dev/null 2>&1); then
    apt-get update -qq >/dev/null
    (cd "$tmp" && apt-get download -qq $pkgs >/dev/null)
fi
for deb in "$tmp"/*.deb; do
    dpkg-deb -x "$deb" "$tmp/root"
done

# The libraries qemu-system-x86 links against: every lib* it depends on
# that is not installed yet.
libs=
for dep in $(apt-cache depends qemu-system-x86 | sed -n 's/^ *Depends: *\(lib[^ <>]*\).*/\1/p' | sort -u); do
    dpkg -s "$dep" >/dev/null 2>&1 || libs="$libs $dep"
done
if [ -n "$libs" ]; then
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y -qq --no-install-recommends $libs >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $libs >/dev/null; }
fi
missing=$(ldd "$tmp/root/usr/bin/qemu-system-x86_64" "$tmp"/root/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-*.so |
    sed -n 's/^\s*\([^ ]*\) => not found/\1/p' | sort -u | tr '\n' ' ')
if [ -n "$missing" ]; then
    echo "fetch-qemu: still missing libraries: $missing" >&2
    exit 1
fi

version=$(dpkg-deb -f "$(ls "$tmp"/qemu-system-x86_*.deb)" Version)
[ ! -d "$dir/root" ] || mv "$dir/root" "$tmp/old-root"
mv "$tmp/root" "$dir/root"
echo "qemu-system-x86 $version" >"$dir/qemu.package"
if ! runs; then
    echo "fetch-qemu: $qemu does not start a TCG machine" >&2
    exit 1
fi
block_extra
echo "fetch-qemu: unpacked qemu-system-x86 $version and qemu-block-extra at $dir/root${libs:+, installed$libs}"
