#!/usr/bin/env python3
"""Guest I/O on an iSCSI LUN: Vireo's user-space initiator (`--disk
iscsi://...`, libiscsi) against the host reading the same target with
libiscsi's own `iscsi-perf`, and against the same guest on the LUN's
backing file, in one run.

The target is Debian's tgtd in a network namespace this script makes
(169.254.77.1 on its loopback), serving one LUN backed by a file of random
data; everything that talks to it runs in that namespace. The guest is
guests/virtio in its `bench` mode (as bench/virtio.py runs it): sequential
1 MiB reads and writes over --seq-mib MiB and queue-depth-1 random 4 KiB
reads and writes (--rand-ops each). `iscsi-perf` (libiscsi-bin) reads only:
1 MiB and random 4 KiB requests, one in flight, for --host-secs seconds
each. Rounds alternate the three so noise on a shared machine hits all
alike; the table shows medians and ratios. tgtd runs on CPU 0, every
initiator (vireo with all its threads, iscsi-perf) on CPU 1.

QEMU 7.2 (scripts/nested/fetch-qemu.sh unpacks it with qemu-block-extra,
whose block-iscsi.so is QEMU's libiscsi driver; nothing is installed with
apt) runs the same guest on the same LUN (`-blockdev driver=iscsi`,
virtio-blk-pci on `-M microvm,pcie=on`), pinned like vireo: the `qemu`
column, and vireo-iscsi/qemu the ratio issue 13 asks for (>= 1).

    bench/iscsi.py [--rounds N] [--seq-mib N] [--rand-ops N] [--host-secs N]
                   [--qd N] [--vireo PATH]

--qd keeps N of the guests' sequential requests in flight (1 to 8; the
random ones and iscsi-perf are unchanged); --vireo runs another vireo
binary (an older build, to compare) instead of this tree's release build.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import virtio as vb  # noqa: E402  (bench/virtio.py: build, guest runs, the host's TSC)
import nfs  # noqa: E402  (bench/nfs.py: QEMU 7.2 with qemu-block-extra, and its guest runner)

NS = "vireo-bench-iscsi"
ADDR = "169.254.77.1"
IQN = "iqn.2026-11.org.vireo.bench:lun"
CONTROL = "31001"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def start_target(image):
    """tgtd in NS serving IMAGE as LUN 1; returns the tgtd process."""
    subprocess.run(["ip", "netns", "del", NS], stderr=subprocess.DEVNULL)
    sh("ip", "netns", "add", NS)
    sh("ip", "-n", NS, "link", "set", "lo", "up")
    sh("ip", "-n", NS, "addr", "add", f"{ADDR}/32", "dev", "lo")
    tgtd = subprocess.Popen(["ip", "netns", "exec", NS, "taskset", "-c", "0", "tgtd", "-f", "-C", CONTROL,
                             "--iscsi", f"portal={ADDR}:3260"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    adm = ["tgtadm", "-C", CONTROL, "--lld", "iscsi"]
    deadline = time.time() + 10
    while subprocess.run(adm + ["--op", "show", "--mode", "target"],
                         capture_output=True).returncode != 0:
        if time.time() > deadline or tgtd.poll() is not None:
            raise RuntimeError("tgtd did not come up")
        time.sleep(0.05)
    sh(*adm, "--op", "new", "--mode", "target", "--tid", "1", "-T", IQN)
    sh(*adm, "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", image)
    sh(*adm, "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
    return tgtd


def stop_target(tgtd):
    tgtd.kill()
    tgtd.wait()
    subprocess.run(["ip", "netns", "del", NS])
    for suffix in ("", ".lock"):
        try:
            os.remove(f"/var/run/tgtd/socket.{CONTROL}{suffix}")
        except OSError:
            pass


def iscsi_perf(url, blocks, random, secs):
    """iscsi-perf's final rate: (MB/s, IOPS), one request in flight."""
    cmd = ["ip", "netns", "exec", NS, "taskset", "-c", "1", "iscsi-perf", "-m", "1", "-b", str(blocks),
           "-t", str(secs)] + (["-r"] if random else []) + [url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60)
    text = out.stdout + out.stderr
    # Its summary: "iops average N (M MB/s)", M in MiB/s.
    found = re.findall(r"iops average (\d+) \((\d+) MB/s\)", text)
    if not found:
        raise RuntimeError(f"iscsi-perf printed no rate: {text}")
    iops, mibs = found[-1]
    return float(mibs) * 1.048576, float(iops)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seq-mib", type=int, default=128)
    ap.add_argument("--rand-ops", type=int, default=2000)
    ap.add_argument("--host-secs", type=int, default=3)
    ap.add_argument("--qd", type=int, default=1,
                    help="guests' sequential requests in flight (1 to 8)")
    ap.add_argument("--vireo", help="the vireo binary to run (default: this tree's release build)")
    opts = ap.parse_args()
    if opts.vireo:
        VIREO[0] = os.path.abspath(opts.vireo)
    if os.geteuid() != 0:
        sys.exit("bench/iscsi.py needs root (network namespaces, tgtd)")
    for tool, pkg in (("tgtd", "tgt"), ("iscsi-perf", "libiscsi-bin")):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            sh("apt-get", "install", "-y", "-q", pkg, stdout=subprocess.DEVNULL)
    fetch = subprocess.run([os.path.join(vb.ROOT, "scripts", "nested", "fetch-qemu.sh"),
                            nfs.QEMU_DIR], capture_output=True, text=True)
    module = f"{nfs.QEMU_ROOT}/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so"
    qemu_missing = (None if fetch.returncode == 0 and os.path.exists(module)
                    else f"QEMU 7.2 with its iscsi driver is not available: {fetch.stderr.strip()}")
    os.makedirs(vb.OUT, exist_ok=True)
    sh("cargo", "build", "--release", "-q", "-p", "vireo", cwd=vb.ROOT)
    sh(os.path.join(vb.ROOT, "guests", "build.sh"), vb.OUT, "virtio")
    sh("gcc", "-O2", "-o", os.path.join(vb.OUT, "blk_host"),
       os.path.join(vb.ROOT, "bench", "blk_host.c"))
    tsc_hz = vb.tsc_hz()
    image = os.path.join(vb.OUT, "iscsi-lun.img")
    vb.make_image(image, max(opts.seq_mib, 64))
    url = f"iscsi://{ADDR}/{IQN}/1"
    blk_cmd = f"blk blk-count=0 bench-seq-mib={opts.seq_mib} bench-rand-ops={opts.rand_ops}"
    if opts.qd > 1:
        blk_cmd += f" bench-qd={opts.qd}"
    results = {}

    def record(metric, who, value):
        results.setdefault(metric, {}).setdefault(who, []).append(value)

    patterns = [("seq-read", opts.seq_mib), ("seq-write", opts.seq_mib),
                ("rand-read", opts.rand_ops), ("rand-write", opts.rand_ops)]
    tgtd = start_target(image)
    try:
        for r in range(opts.rounds):
            print(f"round {r + 1}/{opts.rounds}", file=sys.stderr)
            for who, run, disk in (("vireo-iscsi", run_in_ns, ["--disk", f"path={url}"]),
                                   ("vireo-file", run_pinned,
                                    ["--disk", f"path={image},cache=writeback"])):
                got = run(disk, blk_cmd)
                for pattern, n in patterns:
                    secs = int(got[("blk", pattern)]["cycles"]) / tsc_hz
                    record(pattern, who, n * (1 << 20) / secs / 1e6
                           if pattern.startswith("seq") else n / secs)
            if not qemu_missing:
                got = nfs.run_qemu_argv(lambda log: nfs.qemu_argv_with(
                    ["-blockdev", f"driver=iscsi,node-name=f0,transport=tcp,portal={ADDR}:3260,"
                     f"target={IQN},lun=1,cache.direct=off"], blk_cmd, log), NS)
                for pattern, n in patterns:
                    secs = int(got[("blk", pattern)]["cycles"]) / tsc_hz
                    record(pattern, "qemu-iscsi", n * (1 << 20) / secs / 1e6
                           if pattern.startswith("seq") else n / secs)
            mbs, _ = iscsi_perf(url, 2048, False, opts.host_secs)
            record("seq-read", "host-iscsi", mbs)
            _, iops = iscsi_perf(url, 8, True, opts.host_secs)
            record("rand-read", "host-iscsi", iops)
    finally:
        stop_target(tgtd)

    units = {"seq-read": "MB/s", "seq-write": "MB/s", "rand-read": "IOPS", "rand-write": "IOPS"}
    names = ["host-iscsi", "vireo-iscsi", "qemu-iscsi", "vireo-file"]
    if qemu_missing:
        print(qemu_missing)
    print(f"\nmedians of {opts.rounds} rounds, one LUN of tgtd in a namespace "
          f"(page-cached file), TSC {tsc_hz / 1e9:.3f} GHz, guests' sequential requests "
          f"in flight: {opts.qd}")
    print(f"{'pattern':<11}{'unit':<6}" + "".join(f"{n:>13}" for n in names)
          + f"{'iscsi/host':>12}{'iscsi/file':>12}{'vireo/qemu':>12}")
    for metric, who in results.items():
        med = {n: statistics.median(who[n]) if n in who else None for n in names}
        cells = "".join(f"{v:>13.0f}" if v is not None else f"{'-':>13}" for v in med.values())
        host = (f"{med['vireo-iscsi'] / med['host-iscsi']:>12.2f}"
                if med["host-iscsi"] else f"{'-':>12}")
        vs_qemu = (f"{med['vireo-iscsi'] / med['qemu-iscsi']:>12.2f}"
                   if med["qemu-iscsi"] else f"{'-':>12}")
        print(f"{metric:<11}{units[metric]:<6}{cells}{host}"
              f"{med['vireo-iscsi'] / med['vireo-file']:>12.2f}{vs_qemu}")


VIREO = [os.path.join(vb.ROOT, "target", "release", "vireo")]


def run_pinned(disk, cmdline):
    """vireo on the LUN's backing file, on the CPU the initiators use."""
    cmd = ["taskset", "-c", "1", VIREO[0],
           "run", "--kernel", os.path.join(vb.OUT, "virtio.elf"), "--memory", "256M",
           "--cmdline", cmdline] + disk
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"vireo failed: {out.stderr}")
    return vb.bench_lines(out.stdout)


def run_in_ns(disk, cmdline):
    """vireo in the target's namespace (the only place it can reach it)."""
    cmd = ["ip", "netns", "exec", NS, "taskset", "-c", "1", VIREO[0],
           "run", "--kernel", os.path.join(vb.OUT, "virtio.elf"), "--memory", "256M",
           "--cmdline", cmdline] + disk
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"vireo failed: {out.stderr}")
    return vb.bench_lines(out.stdout)


if __name__ == "__main__":
    main()
