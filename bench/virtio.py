#!/usr/bin/env python3
"""virtio-blk and virtio-net throughput: the guest's loop against the bare
host, with QEMU beside Vireo, in one run.

The guest is guests/virtio (the virtio-drivers crate, its loops at CPL 3) in
its `bench-*` modes; the host side is bench/blk_host.c and bench/net_host.c,
which run the same patterns on the same backing file and TAP. Runs alternate
(Vireo, QEMU, host) round after round so noise hits all three alike; the
table shows medians and ratios.

    bench/virtio.py [--rounds N] [--seq-mib N] [--rand-ops N] [--frames N]
                    [--cache none|writeback] [--no-qemu]

Disk: sequential 1 MiB reads and writes over --seq-mib MiB, and queue-depth-1
random 4 KiB reads and writes (--rand-ops each), on a raw image opened
with O_DIRECT (cache=none) by default, so the host figure is the disk's
and not the page cache's. Net: --frames UDP frames of 1514 bytes from the
guest to a peer in a network namespace, through a TAP, against a host
process writing the same frames to the same TAP.

QEMU is Debian's qemu-system-x86 (`-M microvm,pcie=on`, whose PCIe host
bridge sits where Vireo's does), with the same guest, reporting through a
virtio-console port. Needs root (TAP, namespaces).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "bench")
NS = "vireo-bench"
TAP = "vbtap0"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def build():
    os.makedirs(OUT, exist_ok=True)
    if not shutil.which("qemu-system-x86_64"):
        print("installing qemu-system-x86 (with qemu-utils, as Debian pairs them)...",
              file=sys.stderr)
        sh("apt-get", "install", "-y", "-q", "qemu-system-x86", "qemu-utils",
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


def run_vireo(args, cmdline, netns=False):
    cmd = [os.path.join(ROOT, "target", "release", "vireo"), "run",
           "--kernel", os.path.join(OUT, "virtio.elf"), "--memory", "256M",
           "--cmdline", cmdline] + args
    if netns:
        cmd = ["ip", "netns", "exec", NS] + cmd
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"vireo failed: {out.stderr}")
    return bench_lines(out.stdout)


def run_qemu(args, cmdline, netns=False):
    """The same guest under QEMU; its output arrives on a virtio console
    (`mirror`), and it cannot power QEMU off, so we stop QEMU when the guest
    says it is done."""
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "console.txt")
        cmd = ["qemu-system-x86_64", "-M", "microvm,pcie=on,rtc=off,pic=off,pit=off,isa-serial=off",
               "-enable-kvm", "-m", "256M", "-nodefaults", "-no-user-config", "-display", "none",
               "-kernel", os.path.join(OUT, "virtio.elf"), "-append", cmdline + " mirror",
               "-device", "virtio-serial-pci,disable-legacy=on",
               "-chardev", f"file,id=con,path={log}", "-device", "virtconsole,chardev=con"] + args
        if netns:
            cmd = ["ip", "netns", "exec", NS] + cmd
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        text = ""
        try:
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


def host(*args):
    out = subprocess.run([os.path.join(OUT, args[0])] + [str(a) for a in args[1:]],
                         check=True, capture_output=True, text=True)
    return kv(out.stdout)


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
    sh("ip", "-n", NS, "addr", "add", "10.0.2.2/24", "dev", TAP)
    sh("ip", "-n", NS, "link", "set", TAP, "up")
    out = sh("ip", "-n", NS, "-o", "link", "show", TAP, capture_output=True, text=True).stdout
    return out.split("link/ether ")[1].split()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seq-mib", type=int, default=256)
    ap.add_argument("--rand-ops", type=int, default=2000)
    ap.add_argument("--frames", type=int, default=100000)
    ap.add_argument("--cache", choices=["none", "writeback"], default="none")
    ap.add_argument("--no-qemu", action="store_true")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/virtio.py needs root (TAP devices, network namespaces)")
    build()
    tsc_hz = int(host("blk_host", "tsc-hz")["tsc-hz"])
    image = os.path.join(OUT, "bench.img")
    make_image(image, max(opts.seq_mib, 64))
    direct = ["direct"] if opts.cache == "none" else []
    tap_mac = setup_netns()

    blk_cmd = f"blk blk-count=0 bench-seq-mib={opts.seq_mib} bench-rand-ops={opts.rand_ops}"
    net_cmd = f"net pings=1 bench-net-frames={opts.frames}"
    vireo_disk = ["--disk", f"path={image},cache={opts.cache}"]
    qemu_disk = ["-drive", f"file={image},if=none,id=d0,format=raw,cache={opts.cache},aio=threads",
                 "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]
    qemu_net = ["-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
                "-device", "virtio-net-pci,netdev=n0,disable-legacy=on"]
    vmms = [("vireo", run_vireo, vireo_disk, ["--net", f"tap={TAP}"])]
    if not opts.no_qemu:
        vmms.append(("qemu", run_qemu, qemu_disk, qemu_net))

    # results[metric][who] = [values per round]; disk in MB/s or IOPS, net in MB/s.
    results = {}

    def record(metric, who, value):
        results.setdefault(metric, {}).setdefault(who, []).append(value)

    patterns = [("seq-read", opts.seq_mib), ("seq-write", opts.seq_mib),
                ("rand-read", opts.rand_ops), ("rand-write", opts.rand_ops)]
    for r in range(opts.rounds):
        print(f"round {r + 1}/{opts.rounds}", file=sys.stderr)
        for who, run, disk, net in vmms:
            got = run(disk, blk_cmd)
            for pattern, n in patterns:
                secs = int(got[("blk", pattern)]["cycles"]) / tsc_hz
                record(pattern, who, n * (1 << 20) / secs / 1e6 if pattern.startswith("seq") else n / secs)
            got = run(net, net_cmd, netns=True)[("net", "tx")]
            record("net-tx", who, int(got["bytes"]) / (int(got["cycles"]) / tsc_hz) / 1e6)
        for pattern, n in patterns:
            secs = int(host("blk_host", image, pattern, n, *direct)["ns"]) / 1e9
            record(pattern, "host", n * (1 << 20) / secs / 1e6 if pattern.startswith("seq") else n / secs)
        got = kv(sh("ip", "netns", "exec", NS, os.path.join(OUT, "net_host"), TAP,
                    str(opts.frames), "1514", tap_mac, capture_output=True, text=True).stdout)
        record("net-tx", "host", int(got["bytes"]) / (int(got["ns"]) / 1e9) / 1e6)
    subprocess.run(["ip", "netns", "del", NS])

    units = {"seq-read": "MB/s", "seq-write": "MB/s", "rand-read": "IOPS",
             "rand-write": "IOPS", "net-tx": "MB/s"}
    targets = {"seq-read": 0.8, "seq-write": 0.8, "rand-read": 0.5, "rand-write": 0.5,
               "net-tx": 0.5}
    names = [w for w in ("host", "vireo", "qemu") if any(w in v for v in results.values())]
    print(f"\nmedians of {opts.rounds} rounds, disk cache={opts.cache}, TSC {tsc_hz / 1e9:.3f} GHz")
    header = f"{'pattern':<11}{'unit':<6}" + "".join(f"{n:>10}" for n in names)
    header += f"{'vireo/host':>12}{'target':>8}"
    if "qemu" in names:
        header += f"{'qemu/host':>11}{'vireo/qemu':>12}"
    print(header)
    for metric, who in results.items():
        med = {n: statistics.median(who[n]) for n in names}
        line = f"{metric:<11}{units[metric]:<6}" + "".join(f"{med[n]:>10.0f}" for n in names)
        line += f"{med['vireo'] / med['host']:>12.2f}{targets[metric]:>8.1f}"
        if "qemu" in names:
            line += f"{med['qemu'] / med['host']:>11.2f}{med['vireo'] / med['qemu']:>12.2f}"
        print(line)


if __name__ == "__main__":
    main()
