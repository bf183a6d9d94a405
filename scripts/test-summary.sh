#!/usr/bin/env bash
# Prints one line, "N passed, N failed, N skipped, N ignored", for a
# `cargo test` run: its captured output ($1) and the skip log ($2) that
# testkit::skip appends to. A skipped test returned early, so libtest
# counted it as passed; it is moved from "passed" to "skipped" here.
set -euo pipefail
output=$1
skips=$2
read -r passed failed ignored < <(
    grep -E '^test result:' "$output" |
        sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/' |
        awk '{p += $1; f += $2; i += $3} END {print p + 0, f + 0, i + 0}'
)
skipped=0
[ -f "$skips" ] && skipped=$(wc -l <"$skips")
echo
if [ "$skipped" -gt 0 ]; then
    echo "skipped on this host:"
    sed 's/\t/: /; s/^/  /' "$skips"
fi
echo "$((passed - skipped)) passed, $failed failed, $skipped skipped, $ignored ignored"
