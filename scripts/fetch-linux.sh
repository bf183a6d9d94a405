#!/bin/sh
# fetch-linux.sh DIR
#
# Puts the Debian cloud kernel (a bzImage) at DIR/vmlinuz without installing
# it: resolves the kernel package that linux-image-cloud-amd64 depends on,
# downloads that .deb with apt-get (running `apt-get update` only if the
# download fails), unpacks it with dpkg-deb into a temporary directory and
# copies boot/vmlinuz-* to DIR/vmlinuz and the package's module tree
# (lib/modules/VERSION) to DIR/modules/VERSION (the nested tests load kvm and
# the virtio drivers from it). DIR/vmlinuz.package records which package they
# came from. When DIR/vmlinuz already is a bzImage and DIR/modules is there,
# nothing is done (no apt at all); set FETCH_LINUX_REFRESH=1 to re-resolve the
# package and replace both if the package changed. DIR/vmlinux is the
# uncompressed kernel from inside the bzImage (for the PVH boot test),
# extracted when missing or older than DIR/vmlinuz.
# Prints one line saying what it did.
set -eu

# True when $1 carries the x86 boot protocol signature "HdrS" at 0x202.
is_bzimage() {
    [ -s "$1" ] && [ "$(dd if="$1" bs=1 skip=514 count=4 2>/dev/null)" = "HdrS" ]
}

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# True when DIR/modules holds one module tree.
has_modules() {
    [ -d "$dir/modules" ] && [ -n "$(ls "$dir"/modules/*/kernel 2>/dev/null | head -n 1)" ]
}

# u32_at FILE OFFSET: the little-endian 32-bit number at OFFSET.
u32_at() {
    od -An -tu4 -j "$2" -N 4 "$1" | tr -d ' '
}

# extract_vmlinux: DIR/vmlinux, the uncompressed ELF kernel inside
# DIR/vmlinuz, as the kernel's scripts/extract-vmlinux finds it, but from
# the boot header instead of a search: the payload starts payload_offset
# (0x248) bytes into the protected-mode code, which follows the
# (setup_sects (0x1f1) + 1) * 512 bytes of setup, and is payload_length
# (0x24c) bytes long, the last 4 the uncompressed size. Debian compresses
# with LZ4 now; xz, zstd and gzip are handled too. Skipped (with a line
# on stderr) when the decompressor is not installed: the PVH boot test
# then fails saying so.
extract_vmlinux() {
    [ ! -s "$dir/vmlinux" ] || [ "$dir/vmlinux" -ot "$dir/vmlinuz" ] || return 0
    setup=$((($(od -An -tu1 -j $((0x1f1)) -N 1 "$dir/vmlinuz" | tr -d ' ') + 1) * 512))
    start=$((setup + $(u32_at "$dir/vmlinuz" $((0x248)))))
    len=$(($(u32_at "$dir/vmlinuz" $((0x24c))) - 4))
    magic=$(od -An -tx1 -j "$start" -N 4 "$dir/vmlinuz" | tr -d ' ')
    case "$magic" in
    02214c18) unpack="lz4 -dc" ;;
    fd377a58) unpack="xz -dc" ;;
    28b52ffd) unpack="zstd -dc" ;;
    1f8b*) unpack="gzip -dc" ;;
    *)
        echo "fetch-linux: unknown compression (magic $magic) in $dir/vmlinuz: no vmlinux" >&2
        return 0
        ;;
    esac
    command -v "${unpack%% *}" >/dev/null 2>&1 || {
        echo "fetch-linux: ${unpack%% *} not installed: no vmlinux" >&2
        return 0
    }
    tail -c +$((start + 1)) "$dir/vmlinuz" | head -c "$len" | $unpack >"$dir/.vmlinux.tmp"
    if [ "$(od -An -c -N 4 "$dir/.vmlinux.tmp" | tr -d ' ')" != "177ELF" ]; then
        echo "fetch-linux: the payload of $dir/vmlinuz did not unpack to an ELF" >&2
        rm -f "$dir/.vmlinux.tmp"
        return 1
    fi
    mv -f "$dir/.vmlinux.tmp" "$dir/vmlinux"
    echo "fetch-linux: extracted $dir/vmlinux ($(wc -c <"$dir/vmlinux") bytes, ${unpack%% *})"
}

if [ "${FETCH_LINUX_REFRESH:-0}" != 1 ] && is_bzimage "$dir/vmlinuz" && has_modules; then
    echo "fetch-linux: $dir/vmlinuz already present ($(cat "$dir/vmlinuz.package" 2>/dev/null || echo 'unknown package'))"
    extract_vmlinux
    exit 0
fi

meta=linux-image-cloud-amd64
pkg=$(apt-cache depends "$meta" 2>/dev/null |
    sed -n 's/^ *Depends: *\(linux-image-[^ ]*\).*/\1/p' | head -n 1)
if [ -z "$pkg" ]; then
    # apt's lists may be missing entirely: refresh once and retry.
    apt-get update -qq >/dev/null
    pkg=$(apt-cache depends "$meta" 2>/dev/null |
        sed -n 's/^ *Depends: *\(linux-image-[^ ]*\).*/\1/p' | head -n 1)
fi
if [ -z "$pkg" ]; then
    echo "fetch-linux: cannot resolve the kernel package of $meta" >&2
    exit 1
fi
version=$(apt-cache show "$pkg" | sed -n 's/^Version: *//p' | head -n 1)
want="$pkg $version"

if is_bzimage "$dir/vmlinuz" && has_modules && [ -f "$dir/vmlinuz.package" ] &&
    [ "$(cat "$dir/vmlinuz.package")" = "$want" ]; then
    echo "fetch-linux: $dir/vmlinuz already holds $want"
    extract_vmlinux
    exit 0
fi

tmp=$(mktemp -d "$dir/.fetch-linux.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

if ! (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1); then
    apt-get update -qq >/dev/null
    (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null)
fi
deb=$(ls "$tmp"/*.deb | head -n 1)
dpkg-deb -x "$deb" "$tmp/root"
kernel=$(ls "$tmp"/root/boot/vmlinuz-* 2>/dev/null | head -n 1)
if [ -z "$kernel" ] || ! is_bzimage "$kernel"; then
    echo "fetch-linux: no bzImage boot/vmlinuz-* in $deb" >&2
    exit 1
fi

if [ -z "$(ls "$tmp"/root/lib/modules/*/kernel 2>/dev/null | head -n 1)" ]; then
    echo "fetch-linux: no lib/modules/*/kernel in $deb" >&2
    exit 1
fi

# Atomic replace, so concurrent runs never see a half-written kernel or
# module tree (the old tree, if any, is removed after the swap).
cp "$kernel" "$tmp/vmlinuz"
mv -f "$tmp/vmlinuz" "$dir/vmlinuz"
if [ -d "$dir/modules" ]; then
    mv "$dir/modules" "$tmp/old-modules"
fi
mv "$tmp/root/lib/modules" "$dir/modules"
echo "$want" >"$tmp/vmlinuz.package"
mv -f "$tmp/vmlinuz.package" "$dir/vmlinuz.package"
echo "fetch-linux: put $(basename "$kernel") from $want at $dir/vmlinuz, modules at $dir/modules/$(ls "$dir/modules")"
extract_vmlinux
