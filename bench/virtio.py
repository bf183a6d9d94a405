#!/usr/bin/env python3
"""virtio-blk and virtio-net throughput: the guest's loop against the bare
host, with QEMU beside Vireo, in one run.

The guest is guests/virtio (the virtio-drivers crate, its loops at CPL 3) in
its `bench-*` modes; the host side is bench/blk_host.c and bench/net_host.c,
which run the same patterns on the same backing file and TAP. Runs alternate
(Vireo, QEMU, host) round after round so noise hits all three alike; the
table shows medians and ratios.

    bench/virtio.py [--rounds N] [--seq-mib N] [--seq-qd N] [--rand-ops N]
                    [--frames N] [--cache none|writeback]
                    [--placement split|shared] [--vcpu-cpu C] [--io-cpu C]
                    [--qemu-aio threads|native|io_uring]
                    [--vireo BINARY] [--verbose] [--no-qemu] [--no-net]
                    [--no-vireo-default] [--confinement] [--netns NAME]

Disk, like for like: all three read and write the same raw image, with
O_DIRECT (cache=none) by default so no figure is the page cache's.
Sequential: --seq-mib MiB in 1 MiB requests from offset 0, --seq-qd of them
in flight (the guest keeps that many in its virtqueue; the host program as
many in its io_uring), writes ending in a flush (fdatasync). Random:
--rand-ops 4 KiB requests at queue depth 1. Memory: with O_DIRECT the host
kernel pins the request's pages for each I/O, and a 1 MiB buffer in 4 KiB
pages costs far more than one in a huge page (on this host about twice the
time). QEMU advises MADV_HUGEPAGE on all its guest RAM and Vireo, by
default, on all but the first 2 MiB; so the host program's buffers are
advised alike. The column `vireo-4k` is Vireo with `--memory-backend
thp=off`, so what the advice is worth shows. With --confinement,
`vireo-open` is vireo with --seccomp=off and `vireo-jail` vireo jailed as
the daemon runs it (--jail, its own uid, no capabilities): vireo/open and
jail/open are what confinement costs (issue 15 allows 3 %).

Net: --frames UDP frames of 1514 bytes from the guest to a peer in a network
namespace, through a TAP, against a host process writing the same frames to
the same TAP.

Placement: every run is pinned with taskset the same way. split (default):
the vCPU thread on --vcpu-cpu (default 1), every other VMM thread (device
workers, I/O) on --io-cpu (default 0), the host programs on --vcpu-cpu.
shared: every thread of all three may run on both CPUs. A polling guest
keeps its vCPU busy, so a VMM squeezed onto one CPU measures the scheduler,
not the I/O path. On a shared machine the I/O CPU's other load decides much
(a VMM's worker threads compete with it for time): medians over --rounds,
and treat differences of 10 % as noise.

QEMU is Debian's 7.2 as scripts/nested/fetch-qemu.sh unpacks it under
target/nested/qemu (`-M microvm,pcie=on`, whose PCIe host bridge sits where
Vireo's does), with the same guest, reporting through a virtio-console port;
its disk uses --qemu-aio (default threads, QEMU's own default: a pool of
threads doing preadv/pwritev). It starts paused (-S) so its vCPU thread can
be pinned before the guest runs. Needs root (TAP, namespaces).
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
NS = "vireo-bench"
TAP = "vbtap0"
QEMU_DIR = os.path.join(ROOT, "target", "nested", "qemu")
QEMU_ROOT = os.path.join(QEMU_DIR, "root")
QEMU = [os.path.join(QEMU_ROOT, "usr", "bin", "qemu-system-x86_64"),
        "-L", os.path.join(QEMU_ROOT, "usr", "share", "qemu"),
        "-L", os.path.join(QEMU_ROOT, "usr", "share", "seabios")]


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def build():
    os.makedirs(OUT, exist_ok=True)
    sh(os.path.join(ROOT, "scripts", "nested", "fetch-qemu.sh"), QEMU_DIR,
       stdout=subprocess.DEVNULL)
    sh("cargo", "build", "--release", "-q", "-p", "vireo", cwd=ROOT)
    sh(os.path.join(ROOT, "guests", "build.sh"), OUT, "virtio")
    for prog in ("blk_host", "net_host"):
        sh("gcc", "-O2", "-o", os.path.join(OUT, prog), os.path.join(ROOT, "bench", prog + ".c"))


def kv(line):
    return dict(w.split("=", 1) for w in line.split() if "=" in w)


def bench_lines(text):
    """{(kind, pattern): fields} from the guest's `bench:` lines."""
    found = {}
    for line in text.splitlines():
        if line.startswith("bench: "):
            words = line.split()
            found[(words[1], words[2])] = kv(line)
        if "FAIL" in line or "panic" in line:
            raise RuntimeError(f"guest failed: {line}")
    return found


class Placement:
    """Where threads run. split: the vCPU on one CPU, everything else on
    another (the host programs on the vCPU's). shared: every thread of all
    three on both CPUs, the scheduler choosing."""

    def __init__(self, mode, vcpu_cpu, io_cpu):
        self.mode, self.vcpu, self.io = mode, vcpu_cpu, io_cpu
        self.both = f"{vcpu_cpu},{io_cpu}"

    def describe(self):
        if self.mode == "split":
            return (f"vCPU (and host loop) on CPU {self.vcpu}, other VMM threads on "
                    f"CPU {self.io}")
        return f"every thread of all three on CPUs {self.both}"

    def host(self, cmd):
        return ["taskset", "-c", str(self.vcpu) if self.mode == "split" else self.both] + cmd

    def vmm(self, cmd):
        """QEMU: all on the I/O CPU until its vCPU thread is moved (Vireo
        pins itself: --vcpu-pin, --emulator-pin)."""
        return ["taskset", "-c", str(self.io) if self.mode == "split" else self.both] + cmd

    def vireo_args(self):
        if self.mode == "split":
            return ["--vcpu-pin", f"0:{self.vcpu}", "--emulator-pin", str(self.io)]
        return ["--vcpu-pin", f"0:{self.both}", "--emulator-pin", self.both]

    def qemu_vcpu(self):
        return {self.vcpu} if self.mode == "split" else {self.vcpu, self.io}


VIREO = [os.path.join(ROOT, "target", "release", "vireo")]


def run_vireo(place, args, cmdline, netns=False):
    cmd = VIREO + ["run",
           "--kernel", os.path.join(OUT, "virtio.elf"), "--memory", "256M",
           *place.vireo_args(),
           "--cmdline", cmdline] + args
    if netns:
        cmd = ["ip", "netns", "exec", NS] + cmd
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"vireo failed: {out.stderr}")
    return bench_lines(out.stdout)


def pin_qemu_vcpu(pid, cpus):
    """Move QEMU's vCPU thread ("CPU 0/KVM", named with -name debug-threads=on)
    to `cpus`."""
    deadline = time.time() + 10
    while time.time() < deadline:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    if f.read().startswith("CPU 0/KVM"):
                        os.sched_setaffinity(int(tid), cpus)
                        return
            except FileNotFoundError:
                pass
        time.sleep(0.01)
    raise RuntimeError("QEMU's vCPU thread did not appear")


def run_qemu(place, args, cmdline, netns=False):
    """The same guest under QEMU; its output arrives on a virtio console
    (`mirror`), and it cannot power QEMU off, so we stop QEMU when the guest
    says it is done. QEMU starts paused: its vCPU thread is pinned, then
    `cont` on the monitor lets the guest run."""
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "console.txt")
        cmd = QEMU + ["-M", "microvm,pcie=on,rtc=off,pic=off,pit=off,isa-serial=off",
                      "-enable-kvm", "-m", "256M", "-nodefaults", "-no-user-config",
                      "-display", "none", "-S", "-monitor", "stdio",
                      "-name", "bench,debug-threads=on",
                      "-kernel", os.path.join(OUT, "virtio.elf"), "-append", cmdline + " mirror",
                      "-device", "virtio-serial-pci,disable-legacy=on",
                      "-chardev", f"file,id=con,path={log}",
                      "-device", "virtconsole,chardev=con"] + args
        cmd = place.vmm(cmd)
        if netns:
            cmd = ["ip", "netns", "exec", NS] + cmd
        env = dict(os.environ,
                   QEMU_MODULE_DIR=os.path.join(QEMU_ROOT, "usr", "lib", "x86_64-linux-gnu", "qemu"))
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.time() + 300
        text = ""
        try:
            pin_qemu_vcpu(proc.pid, place.qemu_vcpu())
            proc.stdin.write("cont\n")
            proc.stdin.flush()
            while time.time() < deadline:
                if os.path.exists(log):
                    with open(log, errors="replace") as f:
                        text = f.read()
                    if "virtio: done" in text:
                        break
                if proc.poll() is not None:
                    raise RuntimeError(f"qemu exited: {proc.stderr.read()}")
                time.sleep(0.05)
            else:
                raise RuntimeError("qemu run timed out")
        finally:
            proc.kill()
            proc.wait()
        return bench_lines(text)


def host(place, *args):
    cmd = place.host([os.path.join(OUT, args[0])] + [str(a) for a in args[1:]])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return kv(out.stdout)


def tsc_hz():
    """The host's TSC rate as bench/blk_host.c measures it (pinned to CPU 1,
    where the other benchmarks' guests run)."""
    return int(host(Placement("split", 1, 0), "blk_host", "tsc-hz")["tsc-hz"])


def make_image(path, mib):
    with open("/dev/urandom", "rb") as src, open(path, "wb") as dst:
        for _ in range(mib):
            dst.write(src.read(1 << 20))
        dst.flush()
        os.fsync(dst.fileno())


def setup_netns():
    subprocess.run(["ip", "netns", "del", NS], stderr=subprocess.DEVNULL)
    sh("ip", "netns", "add", NS)
    sh("ip", "-n", NS, "tuntap", "add", "dev", TAP, "mode", "tap")
    sh("ip", "-n", NS, "addr", "add", "169.254.10.2/24", "dev", TAP)
    sh("ip", "-n", NS, "link", "set", TAP, "up")
    out = sh("ip", "-n", NS, "-o", "link", "show", TAP, capture_output=True, text=True).stdout
    return out.split("link/ether ")[1].split()[0]


def main():
    global NS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seq-mib", type=int, default=1024)
    ap.add_argument("--seq-qd", type=int, default=4, choices=range(1, 9))
    ap.add_argument("--rand-ops", type=int, default=2000)
    ap.add_argument("--frames", type=int, default=100000)
    ap.add_argument("--cache", choices=["none", "writeback"], default="none")
    ap.add_argument("--placement", choices=["split", "shared"], default="split")
    ap.add_argument("--vcpu-cpu", type=int, default=1)
    ap.add_argument("--io-cpu", type=int, default=0)
    ap.add_argument("--qemu-aio", choices=["threads", "native", "io_uring"], default="threads")
    ap.add_argument("--vireo", help="the vireo binary to run (default: this tree's release build)")
    ap.add_argument("--verbose", action="store_true", help="also print every round's figures")
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--no-net", action="store_true")
    ap.add_argument("--no-vireo-default", action="store_true",
                    help="skip the vireo-4k runs (Vireo with thp=off)")
    ap.add_argument("--netns", default=NS,
                    help=f"the network namespace the TAP is made in (default {NS}; it is "
                         "deleted first, so two runs at once need two names)")
    ap.add_argument("--confinement", action="store_true",
                    help="also run vireo with --seccomp=off (vireo-open) and jailed "
                         "(vireo-jail), for what confinement costs (issue 15: within 3 %%)")
    opts = ap.parse_args()
    NS = opts.netns
    if os.geteuid() != 0:
        sys.exit("bench/virtio.py needs root (TAP devices, network namespaces)")
    build()
    if opts.vireo:
        VIREO[0] = os.path.abspath(opts.vireo)
    place = Placement(opts.placement, opts.vcpu_cpu, opts.io_cpu)
    tsc_hz = int(host(place, "blk_host", "tsc-hz")["tsc-hz"])
    image = os.path.join(OUT, "bench.img")
    make_image(image, max(opts.seq_mib, 64))
    direct = ["direct"] if opts.cache == "none" else []
    tap_mac = None if opts.no_net else setup_netns()

    blk_cmd = (f"blk blk-count=0 bench-seq-mib={opts.seq_mib} bench-qd={opts.seq_qd} "
               f"bench-rand-ops={opts.rand_ops}")
    net_cmd = f"net pings=1 bench-net-frames={opts.frames}"
    vireo_disk = ["--disk", f"path={image},format=raw,cache={opts.cache}"]
    qemu_disk = ["-drive", f"file={image},if=none,id=d0,format=raw,cache={opts.cache},"
                           f"aio={opts.qemu_aio}",
                 "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]
    qemu_net = ["-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
                "-device", "virtio-net-pci,netdev=n0,disable-legacy=on,romfile="]
    # (name, runner, disk args, net args or None)
    vmms = [("vireo", run_vireo, vireo_disk, ["--net", f"tap={TAP}"])]
    if not opts.no_qemu:
        vmms.append(("qemu", run_qemu, qemu_disk, qemu_net))
    if not opts.no_vireo_default:
        vmms.append(("vireo-4k", run_vireo, ["--memory-backend", "thp=off"] + vireo_disk,
                     None))
    if opts.confinement:
        jail_dir = os.path.join(OUT, "virtio-jail")
        os.makedirs(jail_dir, exist_ok=True)
        jail = ["--jail", jail_dir, "--uid", "1900065001", "--gid", "1900065001"]
        open_ = ["--seccomp=off"]
        vmms.append(("vireo-open", run_vireo, open_ + vireo_disk,
                     open_ + ["--net", f"tap={TAP}"]))
        vmms.append(("vireo-jail", run_vireo, jail + vireo_disk,
                     jail + ["--net", f"tap={TAP}"]))

    # results[metric][who] = [values per round]; disk in MB/s or IOPS, net in MB/s.
    results = {}

    def record(metric, who, value):
        results.setdefault(metric, {}).setdefault(who, []).append(value)

    patterns = [("seq-read", opts.seq_mib), ("seq-write", opts.seq_mib),
                ("rand-read", opts.rand_ops), ("rand-write", opts.rand_ops)]

    def rate(pattern, n, secs):
        return n * (1 << 20) / secs / 1e6 if pattern.startswith("seq") else n / secs

    for r in range(opts.rounds):
        print(f"round {r + 1}/{opts.rounds}", file=sys.stderr)
        for who, run, disk, net in vmms:
            got = run(place, disk, blk_cmd)
            for pattern, n in patterns:
                record(pattern, who, rate(pattern, n, int(got[("blk", pattern)]["cycles"]) / tsc_hz))
            if net is not None and not opts.no_net:
                got = run(place, net, net_cmd, netns=True)[("net", "tx")]
                record("net-tx", who, int(got["bytes"]) / (int(got["cycles"]) / tsc_hz) / 1e6)
        for pattern, n in patterns:
            extra = [f"qd={opts.seq_qd}"] if pattern.startswith("seq") else []
            secs = int(host(place, "blk_host", image, pattern, n, *direct, *extra,
                            "pages=huge")["ns"]) / 1e9
            record(pattern, "host", rate(pattern, n, secs))
        if not opts.no_net:
            got = kv(sh("ip", "netns", "exec", NS, *place.host([os.path.join(OUT, "net_host")]),
                        TAP, str(opts.frames), "1514", tap_mac,
                        capture_output=True, text=True).stdout)
            record("net-tx", "host", int(got["bytes"]) / (int(got["ns"]) / 1e9) / 1e6)
    if not opts.no_net:
        subprocess.run(["ip", "netns", "del", NS])

    units = {"seq-read": "MB/s", "seq-write": "MB/s", "rand-read": "IOPS",
             "rand-write": "IOPS", "net-tx": "MB/s"}
    targets = {"seq-read": 0.8, "seq-write": 0.8, "rand-read": 0.5, "rand-write": 0.5,
               "net-tx": 0.5}
    names = [w for w in ("host", "vireo", "qemu", "vireo-4k", "vireo-open", "vireo-jail")
             if any(w in v for v in results.values())]
    print(f"\nmedians of {opts.rounds} rounds, disk cache={opts.cache} (O_DIRECT for all: "
          f"{'yes' if direct else 'no'}), sequential 1 MiB requests at queue depth "
          f"{opts.seq_qd}, random 4 KiB at depth 1; {place.describe()}; QEMU aio={opts.qemu_aio}; "
          f"TSC {tsc_hz / 1e9:.3f} GHz")
    # Columns wide enough for the longest name ("vireo-open") and a space.
    header = f"{'pattern':<11}{'unit':<6}" + "".join(f"{n:>11}" for n in names)
    header += f"{'vireo/host':>12}{'target':>8}"
    if "qemu" in names:
        header += f"{'qemu/host':>11}{'vireo/qemu':>12}"
    if "vireo-open" in names:
        header += f"{'vireo/open':>12}{'jail/open':>11}"
    print(header)
    for metric, who in results.items():
        med = {n: statistics.median(who[n]) for n in names if n in who}
        line = f"{metric:<11}{units[metric]:<6}" + "".join(
            f"{med[n]:>11.0f}" if n in med else f"{'-':>11}" for n in names)
        line += f"{med['vireo'] / med['host']:>12.2f}{targets[metric]:>8.1f}"
        if "qemu" in names:
            line += f"{med['qemu'] / med['host']:>11.2f}{med['vireo'] / med['qemu']:>12.2f}"
        if "vireo-open" in names:
            line += (f"{med['vireo'] / med['vireo-open']:>12.2f}"
                     f"{med['vireo-jail'] / med['vireo-open']:>11.2f}")
        print(line)
    if opts.verbose:
        print("\nevery round:")
        for metric, who in results.items():
            for n in names:
                if n in who:
                    print(f"{metric:<11}{n:<11}" + " ".join(f"{v:.0f}" for v in who[n]))


if __name__ == "__main__":
    main()
