#!/usr/bin/env python3
"""Prealloc benchmark: start-to-exit of a 2 GiB VM, lazy against preallocated.

Each run starts a VM whose guest (guests/exit) powers off at its first
instruction, so the time is the VMM's start-up and teardown, and with
prealloc the faulting-in of all guest RAM. Vireo runs with
`--memory-backend prealloc=on,prealloc-threads=N` and QEMU with
`-object memory-backend-ram,prealloc=on,prealloc-threads=N`, N = 1 and 2,
beside each one's default (lazy anonymous memory). Every process is pinned
with `taskset -c CPUS`; runs alternate between configurations so noise hits
all alike; prints medians.

    bench/prealloc.py [--runs 5] [--memory 2G] [--cpus 0,1]
                      [--vireo target/release/vireo]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def timed(cmd):
    """Run cmd; return (wall seconds, exit status, stderr)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    return time.perf_counter() - start, proc.returncode, proc.stderr.decode(errors="replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--memory", default="2G")
    ap.add_argument("--cpus", default="0,1", help="taskset CPU list")
    ap.add_argument("--vireo", help="a vireo binary (default: build target/release/vireo)")
    args = ap.parse_args()

    out = os.path.join(ROOT, "target", "bench-guests")
    sh(os.path.join(ROOT, "guests", "build.sh"), out, stdout=subprocess.DEVNULL)
    vireo_bin = args.vireo
    if not vireo_bin:
        sh("cargo", "build", "--release", "-q", "-p", "vireo", cwd=ROOT)
        vireo_bin = os.path.join(ROOT, "target", "release", "vireo")
    guest = os.path.join(out, "exit.elf")
    pin = ["taskset", "-c", args.cpus]
    vireo = pin + [vireo_bin, "run", "--kernel", guest, "--memory", args.memory,
                   "--serial", "off"]
    # isa-debug-exit makes QEMU exit with (value << 1) | 1.
    qemu = pin + ["qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-m", args.memory,
                  "-nodefaults", "-no-user-config", "-display", "none", "-serial", "none",
                  "-device", "isa-debug-exit,iobase=0xf4,iosize=0x4", "-kernel", guest]

    def qemu_prealloc(n):
        return qemu + ["-object", f"memory-backend-ram,id=ram,size={args.memory},"
                       f"prealloc=on,prealloc-threads={n}", "-machine", "memory-backend=ram"]

    configs = {
        ("lazy", "vireo"): (vireo, {0}),
        ("prealloc 1 thread", "vireo"): (vireo + ["--memory-backend", "prealloc=on"], {0}),
        ("prealloc 2 threads", "vireo"):
            (vireo + ["--memory-backend", "prealloc=on,prealloc-threads=2"], {0}),
    }
    if shutil.which("qemu-system-x86_64"):
        configs[("lazy", "qemu")] = (qemu, {1})
        configs[("prealloc 1 thread", "qemu")] = (qemu_prealloc(1), {1})
        configs[("prealloc 2 threads", "qemu")] = (qemu_prealloc(2), {1})
    walls = {key: [] for key in configs}
    for i in range(args.runs + 1):
        for key, (cmd, ok_codes) in configs.items():
            wall, code, err = timed(cmd)
            if code not in ok_codes:
                sys.exit(f"{key[1]} {key[0]} exited {code}: {err.strip()}")
            if i > 0:  # the first round warms the page cache
                walls[key].append(wall)

    print(f"start-to-exit of a {args.memory} VM (guest powers off at once), "
          f"taskset -c {args.cpus}; medians of {args.runs} runs, ms")
    print(f"{'':22}{'vireo':>10}{'qemu':>10}")
    for mode in ("lazy", "prealloc 1 thread", "prealloc 2 threads"):
        row = [statistics.median(walls[(mode, vmm)]) * 1000 if (mode, vmm) in walls else None
               for vmm in ("vireo", "qemu")]
        print(f"{mode:22}" + "".join(f"{v:>10.1f}" if v is not None else f"{'-':>10}"
                                     for v in row))


if __name__ == "__main__":
    main()
