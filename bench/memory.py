#!/usr/bin/env python3
"""Memory benchmark: huge pages against 4 KiB pages, Vireo against QEMU.

Three figures, each side by side with QEMU 7.2 (`-M microvm -enable-kvm`,
fetched by scripts/nested/fetch-qemu.sh as bench/startup.py does) in one run:

1. TLB-bound walk. guests/tlbwalk touches every 4 KiB page of a 1 GiB
   buffer at CPL 3 and then, given "walk", makes 10 M dependent loads at
   random addresses in it. Each configuration runs with and without "walk",
   alternating, and the walk's time is the difference of the medians (so
   start-up, prealloc and the first touches cancel out). The guest's RAM
   (1536 MiB) is a preallocated private mapping of a file, for both VMMs
   alike: on tmpfs (/dev/shm: 4 KiB pages) or on hugetlbfs (2 MiB pages):
       vireo --memory-backend backend=file,path=DIR/ram,prealloc=on
       qemu  -object memory-backend-file,mem-path=DIR,prealloc=on
   Reported: each VMM's walk time with 4 KiB and 2 MiB backing, the
   speedup huge pages give under each, and Vireo's time over QEMU's.
   On this host the guest runs on kvm-pvm, whose shadow page tables can map
   a 2 MiB guest page with one 2 MiB entry only when the host backs it with
   one; the machine itself is a VM, so what the hardware TLB holds also
   depends on the backing of the hypervisor below, which we do not see.
2. Start to exit of an 8 GiB guest (guests/exit) preallocated on 2 MiB
   huge pages with the same number of threads:
       vireo --memory-backend hugepages=2M,prealloc=on,prealloc-threads=N
       qemu  -object memory-backend-file,mem-path=HUGETLBFS,prealloc=on,prealloc-threads=N
3. Balloon inflate and deflate speed in MiB/s: bench/balloon.py's table
   (Vireo only; that script says why QEMU has no column).

Huge pages are reserved through /proc/sys/vm/nr_hugepages for the run and
the pool is put back as it was; a hugetlbfs is mounted under target/bench
for the file backings and unmounted after. Needs root. Every process is
pinned with taskset; configurations alternate so noise hits all alike;
medians.

    bench/memory.py [--runs 5] [--cpu 1] [--prealloc-size 8G]
                    [--prealloc-threads 2] [--prealloc-cpus 0,1]
                    [--skip-balloon] [--qemu PATH]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "bench")
QEMU_DIR = os.path.join(ROOT, "target", "nested", "qemu")
POOL = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
HUGE = 2 << 20
WALK_MEMORY_MIB = 1536


def sh(*cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def mib(size):
    """'8G' or '512M' in MiB."""
    units = {"M": 1, "G": 1024}
    return int(size[:-1]) * units[size[-1].upper()]


def qemu_command(path):
    if path:
        return [path], dict(os.environ)
    sh(os.path.join(ROOT, "scripts", "nested", "fetch-qemu.sh"), QEMU_DIR,
       stdout=subprocess.DEVNULL)
    root = os.path.join(QEMU_DIR, "root")
    cmd = [os.path.join(root, "usr", "bin", "qemu-system-x86_64"),
           "-L", os.path.join(root, "usr", "share", "qemu"),
           "-L", os.path.join(root, "usr", "share", "seabios")]
    env = dict(os.environ,
               QEMU_MODULE_DIR=os.path.join(root, "usr", "lib", "x86_64-linux-gnu", "qemu"))
    return cmd, env


def timed(cmd, env=None, ok=(0,)):
    """Wall seconds of cmd, which must exit with a status in ok."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - start
    if proc.returncode not in ok:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        sys.exit(f"{' '.join(cmd)}: exit status {proc.returncode}: "
                 f"{err[-1] if err else ''}")
    return wall


class HugePool:
    """Reserves 2 MiB pages for the run and mounts a hugetlbfs; undoes both."""

    def __init__(self, pages):
        with open(POOL) as f:
            self.before = int(f.read())
        got = self.reserve(self.before + pages)
        if got < self.before + pages:
            # The page cache fragments free memory: drop it, compact, retry.
            for knob, value in (("drop_caches", "3"), ("compact_memory", "1")):
                with open(f"/proc/sys/vm/{knob}", "w") as f:
                    f.write(value)
            got = self.reserve(self.before + pages)
        if got < self.before + pages:
            self.close()
            sys.exit(f"the host gave {got - self.before} of the {pages} huge pages asked for")
        os.makedirs(OUT, exist_ok=True)
        self.mount = tempfile.mkdtemp(prefix="hugetlbfs-", dir=OUT)
        sh("mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", self.mount)

    @staticmethod
    def reserve(total):
        with open(POOL, "w") as f:
            f.write(str(total))
        with open(POOL) as f:
            return int(f.read())

    def close(self):
        if getattr(self, "mount", None):
            subprocess.run(["umount", self.mount], check=False)
            os.rmdir(self.mount)
            self.mount = None
        with open(POOL, "w") as f:
            f.write(str(self.before))


def remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def walk(args, vireo, qemu, qemu_env, pool):
    guest = os.path.join(OUT, "guests", "tlbwalk.elf")
    pin = ["taskset", "-c", args.cpu]
    dirs = {"4 KiB": "/dev/shm", "2 MiB": pool.mount}
    size = f"{WALK_MEMORY_MIB}M"

    def vireo_cmd(backing, cmdline):
        ram = os.path.join(dirs[backing], "vireo-bench-ram")
        return pin + [vireo, "run", "--kernel", guest, "--memory", size, "--serial", "off",
                      "--cmdline", cmdline, "--memory-backend",
                      f"backend=file,path={ram},prealloc=on"], ram

    def qemu_cmd(backing, cmdline):
        return pin + qemu + ["-M", "microvm", "-enable-kvm", "-m", size, "-nodefaults",
                             "-no-user-config", "-display", "none", "-serial", "none",
                             "-object", f"memory-backend-file,id=ram,size={size},"
                             f"mem-path={dirs[backing]},prealloc=on",
                             "-machine", "memory-backend=ram",
                             "-kernel", guest, "-append", cmdline], None

    vmms = {"vireo": (vireo_cmd, None), "qemu": (qemu_cmd, qemu_env)}
    times = {(vmm, b, c): [] for vmm in vmms for b in dirs for c in ("touch", "walk")}
    for i in range(args.runs + 1):
        for (vmm, backing, cmdline), samples in times.items():
            make, env = vmms[vmm]
            cmd, ram = make(backing, cmdline)
            wall = timed(cmd, env)
            if ram:
                remove(ram)  # Vireo keeps a file it was given; its huge pages with it
            if i:  # the first round warms caches and the huge page pool
                samples.append(wall)

    def walk_time(vmm, backing):
        return (statistics.median(times[(vmm, backing, "walk")])
                - statistics.median(times[(vmm, backing, "touch")]))

    print(f"TLB-bound walk: 10 M dependent random loads over 1 GiB, guest RAM "
          f"{WALK_MEMORY_MIB} MiB preallocated, pinned to CPU {args.cpu}; "
          f"walk time = median(with walk) - median(touch only), {args.runs} runs")
    print(f"{'backing':<10}{'vireo s':>10}{'qemu s':>10}{'vireo/qemu':>12}")
    result = {}
    for backing in dirs:
        v, q = walk_time("vireo", backing), walk_time("qemu", backing)
        result[backing] = (v, q)
        print(f"{backing:<10}{v:>10.3f}{q:>10.3f}{v / q:>12.2f}")
    (v4, q4), (v2, q2) = result["4 KiB"], result["2 MiB"]
    print(f"{'speedup':<10}{v4 / v2:>9.2f}x{q4 / q2:>9.2f}x   (4 KiB time / 2 MiB time)")
    print(f"{'touch s':<10}"
          + "".join(f"{statistics.median(times[(vmm, '4 KiB', 'touch')]):>10.3f}"
                    for vmm in vmms)
          + "   (start, prealloc, first touch, exit: 4 KiB)")
    print(f"{'touch s':<10}"
          + "".join(f"{statistics.median(times[(vmm, '2 MiB', 'touch')]):>10.3f}"
                    for vmm in vmms)
          + "   (the same: 2 MiB)")


def prealloc_start(args, vireo, qemu, qemu_env, pool):
    guest = os.path.join(OUT, "guests", "exit.elf")
    pin = ["taskset", "-c", args.prealloc_cpus]
    size, n = args.prealloc_size, args.prealloc_threads
    cmds = {
        "vireo": (pin + [vireo, "run", "--kernel", guest, "--memory", size, "--serial", "off",
                         "--memory-backend",
                         f"hugepages=2M,prealloc=on,prealloc-threads={n}"], None, (0,)),
        # isa-debug-exit makes QEMU exit with (value << 1) | 1.
        "qemu": (pin + qemu + ["-M", "microvm", "-enable-kvm", "-m", size, "-nodefaults",
                               "-no-user-config", "-display", "none", "-serial", "none",
                               "-object", f"memory-backend-file,id=ram,size={size},"
                               f"mem-path={pool.mount},prealloc=on,prealloc-threads={n}",
                               "-machine", "memory-backend=ram",
                               "-device", "isa-debug-exit,iobase=0xf4,iosize=0x4",
                               "-kernel", guest], qemu_env, (1,)),
    }
    times = {vmm: [] for vmm in cmds}
    for i in range(args.runs + 1):
        for vmm, (cmd, env, ok) in cmds.items():
            wall = timed(cmd, env, ok)
            if i:
                times[vmm].append(wall)
    v, q = (statistics.median(times[vmm]) for vmm in ("vireo", "qemu"))
    print(f"\nstart to exit, {size} preallocated on 2 MiB pages with {n} threads, "
          f"pinned to CPUs {args.prealloc_cpus}; medians of {args.runs} runs")
    print(f"{'':<10}{'vireo s':>10}{'qemu s':>10}{'vireo/qemu':>12}")
    print(f"{'start':<10}{v:>10.3f}{q:>10.3f}{v / q:>12.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cpu", default="1", help="CPU the walk runs on")
    ap.add_argument("--prealloc-size", default="8G")
    ap.add_argument("--prealloc-threads", type=int, default=2)
    ap.add_argument("--prealloc-cpus", default="0,1")
    ap.add_argument("--skip-balloon", action="store_true")
    ap.add_argument("--qemu", help="qemu-system-x86_64 to run (default: fetch-qemu.sh's)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/memory.py reserves huge pages and mounts a hugetlbfs: run it as root")

    qemu, qemu_env = qemu_command(args.qemu)
    sh(os.path.join(ROOT, "guests", "build.sh"), os.path.join(OUT, "guests"), "tlbwalk", "exit",
       stdout=subprocess.DEVNULL)
    sh("cargo", "build", "--release", "-q", "-p", "vireo", cwd=ROOT)
    vireo = os.path.join(ROOT, "target", "release", "vireo")

    # One guest runs at a time and each gives its pages back when it exits
    # (the walk's file is removed after each Vireo run; QEMU unlinks its own).
    pages = max(WALK_MEMORY_MIB, mib(args.prealloc_size)) * (1 << 20) // HUGE + 8
    pool = HugePool(pages)
    try:
        walk(args, vireo, qemu, qemu_env, pool)
        prealloc_start(args, vireo, qemu, qemu_env, pool)
    finally:
        pool.close()
    if not args.skip_balloon:
        print()
        sh(sys.executable, os.path.join(ROOT, "bench", "balloon.py"), "--rounds", "3",
           "--vireo", vireo)


if __name__ == "__main__":
    main()
