#!/bin/sh
# Build Vireo's test guests: guests/build.sh OUTDIR [NAME...]
#
# Every directory here except common/ is one guest; it is linked from its own
# .S files plus all of common/*.S (--gc-sections drops the common code it does
# not use) with common/guest.ld, into OUTDIR/<name>.elf, a static PVH ELF.
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

mkdir -p "$out"
for name in "$@"; do
    dir=$here/$name
    if [ "$name" = common ] || [ ! -d "$dir" ]; then
        echo "build.sh: no guest named '$name' in $here" >&2
        exit 1
    fi
    # Link to a temporary name so a failed build never leaves a stale ELF.
    "$cc" -nostdlib -static -no-pie -ffreestanding \
        -Wa,--fatal-warnings -Wa,--noexecstack \
        -Wl,--build-id=none -Wl,--gc-sections -Wl,-z,noexecstack \
        -Wl,-T,"$here/common/guest.ld" \
        -I "$here/common" \
        -o "$out/$name.elf.tmp" "$dir"/*.S "$here"/common/*.S ||
        { echo "build.sh: building guest '$name' failed" >&2; rm -f "$out/$name.elf.tmp"; exit 1; }
    mv -f "$out/$name.elf.tmp" "$out/$name.elf"
done
