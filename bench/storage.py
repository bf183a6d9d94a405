#!/usr/bin/env python3
"""Storage volume operations against their plain-tool equivalents.

Measures, in one run, on one host CPU set (taskset) shared by the daemon,
the CLI and the tools, the median of --runs (5) runs of:

  * vireo vol-create-from raw -> raw, raw -> qcow2, and vol-clone of a
    qcow2 volume, each against `qemu-img convert` of the same image and
    format followed by `sync` (the daemon syncs the copy before it is
    visible, so the baseline syncs too);
  * vireo vol-upload and vol-download of the same file, against
    `dd bs=1M conv=notrunc,fsync` into an existing file (the daemon syncs
    an upload, into the existing volume) and `cat` (a download is not
    synced, as virsh's is not; it seeks over zero blocks where cat writes
    them, so it leaves the holes that cat fills).

Each pair runs in turns, vireo then baseline, --runs times: on a shared
host both meet the same page cache and neighbours.

Then the NFS rows (bench/nfs.py; --no-nfs skips them): guest 1 MiB
sequential and 4 KiB random I/O on a raw image on an nfs-ganesha export,
Vireo's `--disk nfs://` against QEMU 7.2's libnfs driver and the host's
own libnfs, medians side by side with ratios (--rounds, --seq-mib,
--rand-ops, --image-mib are bench/nfs.py's).

The image is --size (1 GiB) with --data (512 MiB) of data in 64 MiB runs
between holes. Prints each pair's medians, the ratio vireo / baseline, and
for transfers the throughput over the file's length.

    bench/storage.py [--vireo target/release/vireo] [--cpus 1]
                     [--dir DIR] [--runs 5] [--size 1024] [--data 512]
                     [--no-nfs] [--no-volumes] [--rounds 5] [--seq-mib 64]
                     [--rand-ops 1000] [--image-mib 256]

Needs qemu-img and taskset; run as root (the daemon's default group rules
are not involved: its sockets are in the scratch directory).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nfs  # noqa: E402  (bench/nfs.py: the NFS disk rows)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20


def pinned(cpus, argv):
    return ["taskset", "-c", cpus] + argv


def timed(argv, **kw):
    t = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.monotonic() - t


def make_source(path, size_mib, data_mib):
    """A raw image of size_mib with data_mib of data in 64 MiB runs spread
    evenly between holes."""
    block = bytearray(os.urandom(MIB))
    runs = max(1, data_mib // 64)
    stride = size_mib // runs
    with open(path, "wb") as f:
        f.truncate(size_mib * MIB)
        for r in range(runs):
            f.seek(r * stride * MIB)
            for i in range(64):
                block[0:8] = (r * 64 + i).to_bytes(8, "little")
                f.write(block)
        f.flush()
        os.fsync(f.fileno())


class Bench:
    def __init__(self, args, scratch):
        self.args = args
        self.scratch = scratch
        self.pool = os.path.join(scratch, "pool")
        self.socket = os.path.join(scratch, "v.sock")
        self.daemon = subprocess.Popen(
            pinned(
                args.cpus,
                [
                    args.vireo,
                    "daemon",
                    "--state-dir",
                    os.path.join(scratch, "state"),
                    "--socket",
                    self.socket,
                    "--log",
                    os.path.join(scratch, "daemon.log"),
                ],
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline or self.daemon.poll() is not None:
                sys.exit("the daemon did not start; see " + scratch + "/daemon.log")
            time.sleep(0.05)
        self.virsh("pool-define-as", "b", "dir", "--target", self.pool)
        self.virsh("pool-build", "b")
        self.virsh("pool-start", "b")

    def stop(self):
        self.daemon.terminate()
        self.daemon.wait(timeout=20)

    def virsh_argv(self, *verb):
        uri = f"vireo+unix:///system?socket={self.socket}"
        return pinned(self.args.cpus, [self.args.vireo, "-c", uri, *verb])

    def virsh(self, *verb):
        env = dict(os.environ, VIREO_TIMEOUT="3600")
        subprocess.run(self.virsh_argv(*verb), check=True, stdout=subprocess.DEVNULL, env=env)

    def time_virsh(self, *verb):
        env = dict(os.environ, VIREO_TIMEOUT="3600")
        return timed(self.virsh_argv(*verb), env=env)

    def xml(self, name, fmt):
        path = os.path.join(self.scratch, f"{name}.xml")
        with open(path, "w") as f:
            f.write(
                f"<volume><name>{name}</name><capacity>1</capacity>"
                f"<target><format type='{fmt}'/></target></volume>\n"
            )
        return path

    def pair(self, ours, ours_cleanup, theirs, theirs_cleanup):
        """Medians of ours and theirs, run in turns (so both meet the
        same page cache and the same neighbours on a shared host)."""
        a, b = [], []
        for _ in range(self.args.runs):
            for run, cleanup, times in ((ours, ours_cleanup, a), (theirs, theirs_cleanup, b)):
                subprocess.run(["sync"], check=True)
                times.append(run())
                cleanup()
        return statistics.median(a), statistics.median(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", default="1", help="taskset CPU list for everything")
    ap.add_argument("--dir", default=os.path.join(ROOT, "target"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=1024, help="image size, MiB")
    ap.add_argument("--data", type=int, default=512, help="data in it, MiB")
    ap.add_argument("--no-nfs", action="store_true", help="skip the NFS disk rows")
    ap.add_argument("--no-volumes", action="store_true", help="only the NFS disk rows")
    # --vireo is bench/nfs.py's option, shared by both parts.
    nfs.add_args(ap)
    args = ap.parse_args()
    args.vireo = args.vireo or os.path.join(ROOT, "target/release/vireo")
    if not args.no_volumes:
        volumes(args)
    if not args.no_nfs:
        med, qemu_missing = nfs.measure(args)
        nfs.print_table(med, qemu_missing, args)


def volumes(args):
    for tool in ("qemu-img", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed")
    if not os.path.exists(args.vireo):
        sys.exit(f"{args.vireo} is missing: cargo build --release -p vireo")
    os.makedirs(args.dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="bench-storage-", dir=args.dir)
    b = Bench(args, scratch)
    try:
        run(b, args, scratch)
    finally:
        b.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def run(b, args, scratch):
    src = os.path.join(b.pool, "src.raw")
    make_source(src, args.size, args.data)
    b.virsh("pool-refresh", "b")
    b.virsh("vol-create-from", "b", b.xml("src.qcow2", "qcow2"), "src.raw", "--inputpool", "b")
    src_q = os.path.join(b.pool, "src.qcow2")
    out = os.path.join(scratch, "out.img")

    def rm_vol(name):
        return lambda: b.virsh("vol-delete", name, "--pool", "b")

    def rm_out():
        if os.path.exists(out):
            os.remove(out)

    def qemu(fmt_in, fmt_out, image):
        return lambda: timed(
            pinned(args.cpus, ["qemu-img", "convert", "-f", fmt_in, "-O", fmt_out, image, out])
        ) + timed(["sync"])

    rows = []
    for name, fmt, image, verb, base, qfmt in (
        ("vol-create-from raw->raw", "raw", "src.raw", "create-from", "qemu-img convert raw->raw + sync", ("raw", "raw", src)),
        ("vol-create-from raw->qcow2", "qcow2", "src.raw", "create-from", "qemu-img convert raw->qcow2 + sync", ("raw", "qcow2", src)),
        ("vol-clone qcow2", "qcow2", "src.qcow2", "clone", "qemu-img convert qcow2->qcow2 + sync", ("qcow2", "qcow2", src_q)),
    ):
        new = f"copy.{fmt}"
        if verb == "clone":
            argv = ("vol-clone", image, new, "--pool", "b")
        else:
            argv = ("vol-create-from", "b", b.xml(new, fmt), image, "--inputpool", "b")
        ours, theirs = b.pair(
            lambda: b.time_virsh(*argv), rm_vol(new), qemu(*qfmt), rm_out
        )
        rows.append((name, ours, base, theirs, None))

    # Transfers: the raw source file (data and holes) both ways.
    b.virsh("vol-create-as", "b", "up.raw", f"{args.size}M")
    length = args.size * MIB
    up_dst = os.path.join(b.pool, "up.raw")
    # Both write over a file that already exists (the volume, and the
    # dd target made once here), so neither pays for allocation twice.
    dd_dst = os.path.join(scratch, "dd.img")
    with open(dd_dst, "wb") as f:
        f.truncate(length)
    ours, theirs = b.pair(
        lambda: b.time_virsh("vol-upload", "up.raw", src, "--pool", "b"),
        lambda: None,
        lambda: timed(pinned(args.cpus, ["dd", f"if={src}", f"of={dd_dst}", "bs=1M", "conv=notrunc,fsync", "status=none"])),
        lambda: None,
    )
    rows.append(("vol-upload", ours, "dd bs=1M conv=notrunc,fsync", theirs, length))
    ours, theirs = b.pair(
        lambda: b.time_virsh("vol-download", "up.raw", out, "--pool", "b"),
        rm_out,
        lambda: timed(pinned(args.cpus, ["sh", "-c", f"cat '{up_dst}' > '{out}'"])),
        rm_out,
    )
    rows.append(("vol-download", ours, "cat", theirs, length))

    print(f"storage bench: {args.size} MiB image, {args.data} MiB of data, "
          f"medians of {args.runs}, taskset -c {args.cpus}, {args.dir}")
    print(f"{'vireo':<28}{'s':>8}   {'baseline':<38}{'s':>8}  {'ratio':>6}  throughput")
    for name, t, base, tb, nbytes in rows:
        tp = ""
        if nbytes:
            tp = f"{nbytes / t / MIB:8.0f} MiB/s vs {nbytes / tb / MIB:8.0f} MiB/s"
        print(f"{name:<28}{t:8.3f}   {base:<38}{tb:8.3f}  {t / tb:6.2f}  {tp}")


if __name__ == "__main__":
    main()
