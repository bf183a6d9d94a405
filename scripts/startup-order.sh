#!/bin/sh
# Regenerates crates/vireo/startup-order.txt: the functions `vireo run`
# executes to start and run a trivial guest, which the release build's
# linker places side by side (crates/vireo/build.rs), so the pages of
# vireo's code a start maps are few: the kernel maps a file's pages
# around each one a process faults on, and scattered through 8 MiB of
# code the start's functions pulled in 2.7 MiB of it.
#
# The list names functions by their mangled symbols, which change with
# the compiler's version and the crates' metadata; names no longer found
# are ignored by the linker. bench/startup.py says how many are found:
# run this again when it reports many missing. Needs root (/dev/kvm),
# gcc, nm and python3; takes a minute or two (every instruction of the
# start is single-stepped).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p vireo --manifest-path "$root/Cargo.toml"
sh "$root/guests/build.sh" "$work" exit >/dev/null
gcc -O2 -Wall -o "$work/steptrace" "$root/scripts/startup-order/steptrace.c"
vireo="$root/target/release/vireo"
"$work/steptrace" "$work/offsets" "$vireo" -- \
    "$vireo" run --kernel "$work/exit.elf" --memory 128M --serial off
python3 "$root/scripts/startup-order/symbols.py" "$vireo" "$work/offsets" \
    >"$root/crates/vireo/startup-order.txt"
echo "$(wc -l <"$root/crates/vireo/startup-order.txt") functions in crates/vireo/startup-order.txt"
