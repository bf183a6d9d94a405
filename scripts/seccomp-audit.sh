#!/bin/sh
# Derive or check the VMM's seccomp allow lists (crates/confine/src/
# filters.rs) from what one `vireo run` really calls.
#
#   scripts/seccomp-audit.sh [-o DIR] -- vireo run --kernel K --disk ...
#   scripts/seccomp-audit.sh --check -- vireo run --kernel K --disk ...
#
# Without --check: runs the command under strace -f with --seccomp=off (so
# the filters hide nothing) and prints, per thread name (digits folded:
# vcpu0 and vcpu1 are "vcpu#"), the sorted set of calls it made after its
# name was set, which is when Vireo installs a thread's filter. DIR
# (default: a fresh temporary directory) keeps strace's raw output
# (trace.TID files) and the summary (calls.txt).
#
# With --check: runs the command with --seccomp=log and prints the kernel
# log's entries (audit type=1326) for that process: each a call some
# thread made that its filter lacks. Exits 1 if there is any.
set -eu
out=""
check=""
if [ "${1:-}" = "--check" ]; then check=1; shift; fi
if [ "${1:-}" = "-o" ]; then out=$2; shift 2; fi
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 [--check | -o DIR] -- vireo run ..." >&2; exit 2; }
if [ -n "$check" ]; then
    "$@" --seccomp=log &
    pid=$!
    status=0
    wait $pid || status=$?
    found=$(dmesg | grep "type=1326" | grep " pid=$pid " |
        sed -n 's/.* comm=\("[^"]*"\).* syscall=\([0-9]*\).*/\1 \2/p' | sort | uniq -c)
    echo "(vireo exited with $status)" >&2
    if [ -n "$found" ]; then
        echo "calls the filters lack (count, thread, system call number):"
        echo "$found"
        exit 1
    fi
    echo "no call outside the filters"
    exit 0
fi
command -v strace >/dev/null || { echo "$0: strace is not installed" >&2; exit 2; }
out=${out:-$(mktemp -d)}
mkdir -p "$out"
rm -f "$out"/trace.*
status=0
strace -f -ff -qq -o "$out/trace" "$@" --seccomp=off || status=$?
# A thread's name comes from its own prctl(PR_SET_NAME, "..."); the main
# thread (the first file, the process's pid) is "main". Calls made before
# the name is set happen under the spawning thread's filter.
pid=$(ls "$out" | sed -n 's/^trace\.\([0-9]*\)$/\1/p' | sort -n | head -1)
for f in "$out"/trace.*; do
    tid=${f##*.}
    awk -v main="$([ "$tid" = "$pid" ] && echo 1 || echo 0)" '
        BEGIN { name = main ? "main" : ""; named = main }
        /prctl\(PR_SET_NAME, "/ {
            match($0, /"[^"]*"/); name = substr($0, RSTART + 1, RLENGTH - 2)
            gsub(/[0-9]+/, "#", name); named = 1; next
        }
        named && match($0, /^[a-z_0-9]+\(/) { print name, substr($0, 1, RLENGTH - 1) }
    ' "$f"
done | sort -u >"$out/calls.txt"
awk '{ calls[$1] = calls[$1] " " $2 } END { for (t in calls) print t ":" calls[t] }' \
    "$out/calls.txt" | sort
echo "(raw traces and calls.txt in $out; vireo exited with $status)" >&2
