#!/usr/bin/env python3
"""Balloon inflate and deflate speed, in MiB/s, natively.

The guest is guests/virtio in its balloon pass (`balloon-mib=N`, at CPL 3):
it writes every page of N MiB, puts them all in the balloon 256 page
numbers per request (as Linux does), then takes them all out again, and
reports each phase in TSC cycles; bench/blk_host.c measures the TSC rate
to turn them into time. Inflating is the host's work (each request's pages
sorted, merged and released with madvise); deflating is bookkeeping only,
so it measures the request round trip. Each backing runs in turn, round
after round, so noise hits all alike; the table shows medians.

    bench/balloon.py [--rounds 5] [--mib 1024] [--cpus 0]
                     [--vireo target/release/vireo]

There is no QEMU column: QEMU's balloon needs a guest driver that speaks
its legacy layout or a full Linux guest, which this host cannot run at
speed (docs/testing.md); the nested test checks Linux's driver instead.
"""

import argparse
import os
import statistics
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "bench")
DEFAULT_VIREO = os.path.join(ROOT, "target", "release", "vireo")

BACKINGS = [
    ("anonymous", []),
    ("memfd", ["--memory-backend", "backend=memfd"]),
]


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def kv(line):
    return dict(w.split("=", 1) for w in line.split() if "=" in w)


def build(vireo):
    os.makedirs(OUT, exist_ok=True)
    if vireo == DEFAULT_VIREO:
        sh("cargo", "build", "--release", "-q", "-p", "vireo", cwd=ROOT)
    sh(os.path.join(ROOT, "guests", "build.sh"), OUT, "virtio")
    sh("gcc", "-O2", "-o", os.path.join(OUT, "blk_host"), os.path.join(ROOT, "bench", "blk_host.c"))


def run(vireo, cpus, mib, backing):
    cmd = ["taskset", "-c", cpus, vireo, "run", "--kernel", os.path.join(OUT, "virtio.elf"),
           "--memory", f"{mib + 128}M", "--balloon", "--cmdline", f"balloon-mib={mib}"] + backing
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0 or "virtio-balloon: ok" not in out.stdout:
        raise RuntimeError(f"vireo failed ({out.returncode}): {out.stdout}{out.stderr}")
    found = {}
    for line in out.stdout.splitlines():
        if line.startswith("bench: balloon "):
            found[line.split()[2]] = int(kv(line)["cycles"])
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--cpus", default="0")
    p.add_argument("--vireo", default=DEFAULT_VIREO,
                   help="the vireo to measure (built with cargo only when left as it is)")
    opts = p.parse_args()
    build(opts.vireo)
    tsc_hz = int(kv(sh(os.path.join(OUT, "blk_host"), "tsc-hz", capture_output=True,
                       text=True).stdout)["tsc-hz"])
    speeds = {}
    for _ in range(opts.rounds):
        for name, backing in BACKINGS:
            got = run(opts.vireo, opts.cpus, opts.mib, backing)
            for phase in ("inflate", "deflate"):
                secs = got[phase] / tsc_hz
                speeds.setdefault((name, phase), []).append(opts.mib / secs)
    print(f"balloon, {opts.mib} MiB, 256 pages per request, medians of {opts.rounds} rounds,"
          f" TSC {tsc_hz / 1e9:.3f} GHz")
    print(f"{'backing':<10} {'inflate MiB/s':>14} {'deflate MiB/s':>14}")
    for name, _ in BACKINGS:
        inflate = statistics.median(speeds[(name, "inflate")])
        deflate = statistics.median(speeds[(name, "deflate")])
        print(f"{name:<10} {inflate:>14.0f} {deflate:>14.0f}")


if __name__ == "__main__":
    main()
