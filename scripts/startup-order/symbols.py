#!/usr/bin/env python3
"""symbols.py BINARY OFFSETS: the functions of BINARY (as `nm` names them,
mangled) that contain one of the instruction offsets in the file OFFSETS
(steptrace's output), in address order, one per line on stdout."""

import bisect
import subprocess
import sys


def main():
    binary, offsets = sys.argv[1], sys.argv[2]
    nm = subprocess.run(["nm", "-n", "--defined-only", binary],
                        check=True, capture_output=True, text=True).stdout
    starts, names = [], []
    for line in nm.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            starts.append(int(parts[0], 16))
            names.append(parts[2])
    hit = set()
    with open(offsets) as f:
        for line in f:
            # A PIE is linked at 0: an offset from its load address is
            # its address in the file's symbol table.
            i = bisect.bisect_right(starts, int(line, 16)) - 1
            if i >= 0:
                hit.add(i)
    for i in sorted(hit):
        print(names[i])


if __name__ == "__main__":
    main()
