#!/bin/sh
# Record the system calls each thread of one `vireo run` makes, by thread
# name, to derive or check the seccomp allow lists (crates/confine/src/
# filters.rs). Runs the command under strace -f with --seccomp=off (so
# the filters hide nothing) and prints, per thread name (digits folded:
# vcpu0 and vcpu1 are "vcpu#"), the sorted set of calls it made after its
# name was set, which is when Vireo installs a thread's filter.
#
#   scripts/seccomp-audit.sh [-o DIR] -- vireo run --kernel K --disk ...
#
# DIR (default: a fresh temporary directory) keeps strace's raw output
# (trace.TID files) and the summary (calls.txt).
set -eu
out=""
if [ "${1:-}" = "-o" ]; then out=$2; shift 2; fi
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 [-o DIR] -- vireo run ..." >&2; exit 2; }
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
