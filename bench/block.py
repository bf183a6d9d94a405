#!/usr/bin/env python3
"""Block-layer benchmark: qcow2 against raw through vireo's block layer,
and vireo's qcow2 against `qemu-img bench` on the same image and pattern.

Host side only (no guest): 4 KiB requests kept DEPTH deep through
AsyncDisk, on fully allocated images in the host page cache (cache=writeback
for qemu-img too), so the figures measure each implementation's own
overhead. qemu-img bench only does sequential I/O, so the qemu comparison
is sequential; it is run with both of its AIO engines (threads, io_uring).

Prints the median of RUNS runs for each case, and the median of the
per-round ratios (cases alternate within a round, so load from other
processes on a shared machine falls on both sides of a ratio alike).

usage: bench/block.py [--runs N] [--count N] [--depth N] [--size-mib N] [--dir DIR]
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target", "release", "examples", "block_bench")


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def vireo(image, op, pattern, count, depth):
    out = run([BENCH, image, op, pattern, "--count", str(count), "--depth", str(depth)])
    return float(re.search(r"ops_per_sec=([\d.]+)", out).group(1))


def qemu_bench(image, op, count, depth, aio):
    cmd = ["qemu-img", "bench", "-f", "qcow2", "-c", str(count), "-d", str(depth),
           "-s", "4096", "-t", "writeback", "-i", aio]
    if op == "write":
        cmd += ["-w", "--pattern=1"]
    out = run(cmd + [image])
    secs = float(re.search(r"Run completed in ([\d.]+) seconds", out).group(1))
    return count / secs


def paired(fs, runs):
    """Run the functions in turn, RUNS rounds (so a busy moment on a shared
    machine hits all of them alike); medians of each, and the median of
    each one's per-round ratio to the first."""
    vals = [[] for _ in fs]
    for _ in range(runs):
        for i, f in enumerate(fs):
            vals[i].append(f())
    meds = [statistics.median(v) for v in vals]
    ratios = [statistics.median(v / b for v, b in zip(vs, vals[0])) for vs in vals]
    return meds, ratios


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--count", type=int, default=100000)
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--dir", default="/var/tmp/vireo-block-bench")
    a = ap.parse_args()

    if shutil.which("qemu-img") is None:
        sys.exit("qemu-img is missing (apt-get install qemu-utils)")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "block", "--example", "block_bench"],
                   check=True, cwd=ROOT)
    os.makedirs(a.dir, exist_ok=True)
    raw = os.path.join(a.dir, "bench.raw")
    qcow = os.path.join(a.dir, "bench.qcow2")
    t = time.time()
    run([BENCH, "--prepare", raw, "raw", str(a.size_mib)])
    run([BENCH, "--prepare", qcow, "qcow2", str(a.size_mib)])
    print(f"images: {a.size_mib} MiB raw and qcow2 (64 KiB clusters, all allocated), "
          f"in {a.dir}; prepared in {time.time() - t:.1f} s")
    print(f"{a.count} requests of 4 KiB, {a.depth} in flight, median of {a.runs} runs\n")

    print(f"{'case':<22}{'raw ops/s':>12}{'qcow2 ops/s':>14}{'qcow2/raw':>11}")
    worst = None
    for op in ("read", "write"):
        for pattern in ("seq", "rand"):
            (r, q), (_, ratio) = paired(
                [lambda: vireo(raw, op, pattern, a.count, a.depth),
                 lambda: vireo(qcow, op, pattern, a.count, a.depth)], a.runs)
            worst = ratio if worst is None else min(worst, ratio)
            print(f"{op + ' ' + pattern:<22}{r:>12.0f}{q:>14.0f}{ratio:>11.2f}")
    print(f"\nqcow2 >= 0.9 x raw: {'yes' if worst >= 0.9 else 'NO'} (lowest ratio {worst:.2f})\n")

    print(f"{'qcow2, sequential':<22}{'vireo ops/s':>12}{'qemu threads':>14}{'qemu io_uring':>15}{'vireo/best':>12}")
    lowest = None
    for op in ("read", "write"):
        (v, qt, qu), (_, rt, ru) = paired(
            [lambda: vireo(qcow, op, "seq", a.count, a.depth),
             lambda: qemu_bench(qcow, op, a.count, a.depth, "threads"),
             lambda: qemu_bench(qcow, op, a.count, a.depth, "io_uring")], a.runs)
        ratio = 1 / max(rt, ru)
        lowest = ratio if lowest is None else min(lowest, ratio)
        print(f"{op:<22}{v:>12.0f}{qt:>14.0f}{qu:>15.0f}{ratio:>12.2f}")
    print(f"\nvireo >= qemu-img bench (its best engine): {'yes' if lowest >= 1.0 else 'NO'} "
          f"(lowest ratio {lowest:.2f})")


if __name__ == "__main__":
    main()
