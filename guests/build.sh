#!/bin/sh
# Build Vireo's test guests: guests/build.sh OUTDIR [NAME...]
#
# Every directory here except common/ is one guest, built into
# OUTDIR/<name>.elf, a static PVH ELF. An assembly guest is linked from its
# own .S files plus all of common/*.S (--gc-sections drops the common code it
# does not use) with common/guest.ld. A directory with a Cargo.toml is a Rust
# guest (its own cargo workspace, built with the installed stable toolchain
# for x86_64-unknown-linux-gnu; its build.rs assembles and links common/ the
# same way) into its own target/ directory.
# With NAMEs, only those guests are built (crates/vireo/build.rs builds demo).
# CC selects the compiler driver (default gcc).
set -eu

if [ $# -lt 1 ]; then
    echo "usage: $0 OUTDIR [NAME...]" >&2
    exit 2
fi
out=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-gcc}

if [ $# -eq 0 ]; then
    for dir in "$here"/*/; do
        name=$(basename "$dir")
        [ "$name" = common ] || set -- "$@" "$name"
    done
fi

# build_rust NAME DIR DEST: cargo-build the Rust guest in DIR and copy its
# ELF to DEST. The explicit --target keeps RUSTFLAGS away from build scripts;
# the caller's cargo settings (a build script or test calling us) are dropped
# so they cannot redirect or reconfigure this build. --locked: the guest's
# Cargo.lock is committed, so after the first fetch no network is needed.
build_rust() {
    target=x86_64-unknown-linux-gnu
    (
        cd "$2" &&
            unset CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_TARGET_DIR \
                CARGO_BUILD_TARGET CARGO_BUILD_TARGET_DIR CARGO_MAKEFLAGS &&
            RUSTFLAGS="-C relocation-model=static" \
                cargo build --quiet --release --locked --target "$target" \
                --target-dir "$2/target"
    ) && cp "$2/target/$target/release/$1" "$3"
}

mkdir -p "$out"
for name in "$@"; do
    dir=$here/$name
    if [ "$name" = common ] || [ ! -d "$dir" ]; then
        echo "build.sh: no guest named '$name' in $here" >&2
        exit 1
    fi
    # Link to a temporary name so a failed build never leaves a stale ELF.
    if [ -f "$dir/Cargo.toml" ]; then
        build_rust "$name" "$dir" "$out/$name.elf.tmp" ||
            { echo "build.sh: building guest '$name' failed" >&2; rm -f "$out/$name.elf.tmp"; exit 1; }
        mv -f "$out/$name.elf.tmp" "$out/$name.elf"
        continue
    fi
    "$cc" -nostdlib -static -no-pie -ffreestanding \
        -Wa,--fatal-warnings -Wa,--noexecstack \
        -Wl,--build-id=none -Wl,--gc-sections -Wl,-z,noexecstack \
        -Wl,-T,"$here/common/guest.ld" \
        -I "$here/common" \
        -o "$out/$name.elf.tmp" "$dir"/*.S "$here"/common/*.S ||
        { echo "build.sh: building guest '$name' failed" >&2; rm -f "$out/$name.elf.tmp"; exit 1; }
    mv -f "$out/$name.elf.tmp" "$out/$name.elf"
done
