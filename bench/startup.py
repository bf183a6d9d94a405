#!/usr/bin/env python3
"""Start-up benchmark: vireo against QEMU, side by side, in one run.

Each VMM starts a VM whose guest (guests/exit) powers off at its first
instruction, and we time the whole process from exec to exit and read its
peak RSS from wait4(). Runs alternate between the two VMMs so that noise on
this machine hits both alike. Prints the medians and the ratios, and beside them kvm-floor
(bench/kvm_floor.c): a program that only creates and drops a VM with the
in-kernel irqchip and PIT, which is what KVM itself costs every VMM here.

    bench/startup.py [--runs N]

QEMU is Debian's qemu-system-x86 (installed if missing), run as
`qemu-system-x86_64 -M microvm -enable-kvm`: the guest writes Vireo's ACPI
sleep register (ignored by QEMU) and then port 0xf4, QEMU's isa-debug-exit.
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


def ensure_tools():
    if not os.path.exists("/usr/bin/time"):
        sh("apt-get", "install", "-y", "-q", "time", stdout=subprocess.DEVNULL)
    if shutil.which("qemu-system-x86_64"):
        return
    print("installing qemu-system-x86 (with qemu-utils, as Debian pairs them)...", file=sys.stderr)
    sh("apt-get", "install", "-y", "-q", "qemu-system-x86", "qemu-utils",
       stdout=subprocess.DEVNULL)


def timed(cmd):
    """Run cmd; return (wall seconds, peak RSS KiB, exit status, stderr).

    The command is started through GNU time: Linux counts the memory a
    process had before exec in its peak RSS, so a child forked straight
    from this Python process would be charged Python's ~15 MiB. time(1) is
    small (under 2 MiB) and reports the child's peak RSS itself.
    """
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "rss=%M"] + cmd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    err = proc.stderr.decode(errors="replace")
    rss = int(err.strip().splitlines()[-1].removeprefix("rss="))
    return wall, rss, proc.returncode, err


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()

    ensure_tools()
    out = os.path.join(ROOT, "target", "bench-guests")
    sh(os.path.join(ROOT, "guests", "build.sh"), out, stdout=subprocess.DEVNULL)
    sh("cargo", "build", "--release", "-q", "-p", "vireo", cwd=ROOT)
    guest = os.path.join(out, "exit.elf")
    floor = os.path.join(out, "kvm_floor")
    sh("gcc", "-O2", "-o", floor, os.path.join(ROOT, "bench", "kvm_floor.c"))
    vireo = [os.path.join(ROOT, "target", "release", "vireo"), "run", "--kernel", guest,
             "--memory", "128M", "--serial", "off"]
    # isa-debug-exit makes QEMU exit with (value << 1) | 1.
    qemu = ["qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-m", "128M",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "none",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x4", "-kernel", guest]

    peers = {"vireo": (vireo, {0}), "qemu": (qemu, {1}), "kvm-floor": ([floor], {0})}
    results = {name: ([], []) for name in peers}
    for i in range(args.runs + 1):
        for name, (cmd, ok_codes) in peers.items():
            wall, rss, code, err = timed(cmd)
            if code not in ok_codes:
                sys.exit(f"{name} exited {code}: {err.strip()}")
            if i > 0:  # the first round warms the page cache
                results[name][0].append(wall)
                results[name][1].append(rss)

    print(f"start-to-exit of a VM whose guest powers off at once; medians of {args.runs} runs")
    print(f"{'':10}{'wall ms':>10}{'peak RSS MiB':>15}")
    med = {}
    for name, (walls, rsss) in results.items():
        med[name] = (statistics.median(walls) * 1000, statistics.median(rsss) / 1024)
        print(f"{name:10}{med[name][0]:>10.2f}{med[name][1]:>15.2f}")
    wall_ratio = med["vireo"][0] / med["qemu"][0]
    rss_ratio = med["vireo"][1] / med["qemu"][1]
    print(f"ratio vireo/qemu: wall {wall_ratio:.3f} (target <= 0.2), "
          f"peak RSS {rss_ratio:.3f} (target <= 0.2)")
    own_v = med["vireo"][0] - med["kvm-floor"][0]
    own_q = med["qemu"][0] - med["kvm-floor"][0]
    print(f"above the KVM floor (irqchip + PIT set-up and teardown, no guest): "
          f"vireo {own_v:.2f} ms, qemu {own_q:.2f} ms, ratio {own_v / own_q:.3f}")


if __name__ == "__main__":
    main()
