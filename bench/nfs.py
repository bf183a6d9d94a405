#!/usr/bin/env python3
"""Guest I/O on a raw image on an NFS export: Vireo's user-space client
(`--disk nfs://...`, libnfs) against QEMU 7.2's nfs block driver (also
libnfs) and against the host reading and writing the same file with
libnfs itself (bench/nfs_host.c), in one run, on one server.

The server is nfs-ganesha (VFS backend, NFSv3) in a network namespace this
script makes (169.254.78.1 on its loopback), with an rpcbind beside it in
a private mount namespace (as the tests' fixture runs it), exporting a
directory holding one --image-mib MiB file of random data. The guest is
guests/virtio in its `bench` mode (as bench/virtio.py runs it): sequential
1 MiB reads and writes over --seq-mib MiB and queue-depth-1 random 4 KiB
reads and writes (--rand-ops each). nfs_host runs the same patterns, one
request at a time. Rounds alternate the three so noise on a shared machine
hits all alike; the table shows medians and ratios. ganesha runs on CPU 0,
every client (vireo with all its threads, QEMU with all of its, nfs_host)
on CPU 1 (taskset).

QEMU is Debian's 7.2 unpacked by scripts/nested/fetch-qemu.sh under
target/nested/qemu with qemu-block-extra (block-nfs.so), run with KVM as
`-M microvm,pcie=on` and `-blockdev driver=nfs`; never installed with apt.
When it cannot run, the table says so and shows the other two.

    bench/nfs.py [--rounds N] [--seq-mib N] [--rand-ops N] [--image-mib N]
                 [--qd N] [--vireo PATH]

--qd keeps N of the guests' sequential requests in flight (1 to 8; the
random ones and nfs_host stay at depth 1); --vireo runs another vireo
binary (an older build, to compare) instead of this tree's release build.

bench/storage.py prints these rows after its own (--no-nfs skips them).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import virtio as vb  # noqa: E402  (bench/virtio.py: guest runs' output, the host's TSC)

NS = "vireo-bench-nfs"
ADDR = "169.254.78.1"
QEMU_DIR = os.path.join(vb.ROOT, "target", "nested", "qemu")
QEMU_ROOT = os.path.join(QEMU_DIR, "root")
UNITS = {"seq-read": "MB/s", "seq-write": "MB/s", "rand-read": "IOPS", "rand-write": "IOPS"}


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


class Server:
    """ganesha exporting EXPORT in NS, rpcbind beside it."""

    def __init__(self, export, state):
        self.export, self.state = export, state
        subprocess.run(["ip", "netns", "del", NS], stderr=subprocess.DEVNULL)
        sh("ip", "netns", "add", NS)
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        sh("ip", "-n", NS, "addr", "add", f"{ADDR}/32", "dev", "lo")
        conf = os.path.join(state, "ganesha.conf")
        with open(conf, "w") as f:
            f.write(f"""NFS_CORE_PARAM {{ Bind_Addr = {ADDR}; Protocols = 3, 4;
  Enable_NLM = false; Enable_RQUOTA = false; NFS_Port = 2049; MNT_Port = 20048; }}
NFSV4 {{ Graceless = true; }}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{ Export_Id = 1; Path = {export}; Pseudo = {export}; Access_Type = RW;
  Squash = No_Root_Squash; Protocols = 3, 4; Transports = TCP; SecType = sys;
  FSAL {{ Name = VFS; }} }}
""")
        script = ("mount -t tmpfs vireo-nfs-run /run && mkdir -p /var/lib/nfs/ganesha && "
                  "mount -t tmpfs vireo-nfs-state /var/lib/nfs/ganesha && exec rpcbind -f")
        self.rpcbind = subprocess.Popen(
            ["ip", "netns", "exec", NS, "unshare", "-m", "--propagation", "private",
             "sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_port(111)
        self.ganesha = subprocess.Popen(
            ["nsenter", f"--mount=/proc/{self.rpcbind.pid}/ns/mnt", f"--net=/run/netns/{NS}",
             "taskset", "-c", "0", "ganesha.nfsd", "-F", "-N", "NIV_WARN",
             "-L", os.path.join(state, "ganesha.log"), "-f", conf,
             "-p", os.path.join(state, "ganesha.pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_port(2049)
        self.wait_port(20048)

    def wait_port(self, port):
        deadline = time.time() + 15
        while f":{port} " not in subprocess.run(["ip", "netns", "exec", NS, "ss", "-ltnH"],
                                                capture_output=True, text=True).stdout:
            if time.time() > deadline:
                raise RuntimeError(f"nothing listens on port {port} in {NS}")
            time.sleep(0.05)

    def stop(self):
        for p in (self.ganesha, self.rpcbind):
            p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", NS])


def in_ns(cmd, ns=NS):
    return ["ip", "netns", "exec", ns, "taskset", "-c", "1"] + cmd


VIREO = [os.path.join(vb.ROOT, "target", "release", "vireo")]


def run_vireo(url, cmdline):
    cmd = in_ns([VIREO[0], "run",
                 "--kernel", os.path.join(vb.OUT, "virtio.elf"), "--memory", "256M",
                 "--cmdline", cmdline, "--disk", f"{url},format=raw"])
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"vireo failed: {out.stderr}")
    return vb.bench_lines(out.stdout)


def qemu_argv(path, cmdline, log):
    return qemu_argv_with([
        "-blockdev", f"driver=nfs,node-name=f0,server.type=inet,server.host={ADDR},path={path}"],
        cmdline, log)


def qemu_argv_with(file_blockdev, cmdline, log):
    """QEMU running the virtio test guest on a disk whose protocol layer
    `file_blockdev` defines as node `f0` (bench/iscsi.py uses it too)."""
    return ["env", f"QEMU_MODULE_DIR={QEMU_ROOT}/usr/lib/x86_64-linux-gnu/qemu",
            f"{QEMU_ROOT}/usr/bin/qemu-system-x86_64",
            "-L", f"{QEMU_ROOT}/usr/share/qemu", "-L", f"{QEMU_ROOT}/usr/share/seabios",
            "-M", "microvm,pcie=on,rtc=off,pic=off,pit=off,isa-serial=off",
            "-enable-kvm", "-m", "256M", "-nodefaults", "-no-user-config", "-display", "none",
            "-kernel", os.path.join(vb.OUT, "virtio.elf"), "-append", cmdline + " mirror",
            "-device", "virtio-serial-pci,disable-legacy=on",
            "-chardev", f"file,id=con,path={log}", "-device", "virtconsole,chardev=con",
            *file_blockdev,
            "-blockdev", "driver=raw,node-name=d0,file=f0",
            "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]


def run_qemu(path, cmdline):
    """The same guest under QEMU; its output arrives on a virtio console
    (`mirror`), and it cannot power QEMU off: QEMU is stopped when the
    guest says it is done."""
    return run_qemu_argv(lambda log: qemu_argv(path, cmdline, log), NS)


def run_qemu_argv(argv, ns):
    """Run `argv(console_log)` in namespace `ns` until the guest is done."""
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "console.txt")
        proc = subprocess.Popen(in_ns(argv(log), ns), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 600
        text = ""
        try:
            while time.time() < deadline:
                if os.path.exists(log):
                    with open(log, errors="replace") as f:
                        text = f.read()
                    if "virtio: done" in text:
                        break
                if proc.poll() is not None:
                    raise RuntimeError(f"qemu exited: {proc.stderr.read().strip()}")
                time.sleep(0.05)
            else:
                raise RuntimeError("qemu run timed out")
        finally:
            proc.kill()
            proc.wait()
        return vb.bench_lines(text)


def run_host(url, mode, n):
    out = subprocess.run(in_ns([os.path.join(vb.OUT, "nfs_host"), url, mode, str(n)]),
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"nfs_host failed: {out.stderr}")
    return int(vb.kv(out.stdout)["ns"]) / 1e9


def prepare():
    """Install what is missing, build vireo, the guest and the helpers;
    whether QEMU with its nfs driver is there (or why not)."""
    if os.geteuid() != 0:
        sys.exit("bench/nfs.py needs root (network namespaces, ganesha)")
    need = [pkg for tool, pkg in (("ganesha.nfsd", "nfs-ganesha"), ("rpcbind", "rpcbind"))
            if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode]
    if not os.path.exists("/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so"):
        need.append("nfs-ganesha-vfs")
    if subprocess.run(["pkg-config", "--exists", "libnfs"]).returncode:
        need.append("libnfs-dev")
    if need:
        sh("apt-get", "install", "-y", "-q", *need, stdout=subprocess.DEVNULL)
    os.makedirs(vb.OUT, exist_ok=True)
    sh("cargo", "build", "--release", "-q", "-p", "vireo", cwd=vb.ROOT)
    sh(os.path.join(vb.ROOT, "guests", "build.sh"), vb.OUT, "virtio")
    sh("gcc", "-O2", "-o", os.path.join(vb.OUT, "blk_host"),
       os.path.join(vb.ROOT, "bench", "blk_host.c"))
    sh("gcc", "-O2", "-o", os.path.join(vb.OUT, "nfs_host"),
       os.path.join(vb.ROOT, "bench", "nfs_host.c"), "-lnfs")
    fetch = subprocess.run([os.path.join(vb.ROOT, "scripts", "nested", "fetch-qemu.sh"), QEMU_DIR],
                           capture_output=True, text=True)
    module = f"{QEMU_ROOT}/usr/lib/x86_64-linux-gnu/qemu/block-nfs.so"
    if fetch.returncode != 0 or not os.path.exists(module):
        return f"QEMU 7.2 with its nfs driver is not available: {fetch.stderr.strip()}"
    return None


def measure(opts):
    """Medians per pattern and client, and why QEMU is absent (or None)."""
    qemu_missing = prepare()
    tsc_hz = vb.tsc_hz()
    export = os.path.join(vb.OUT, "nfs-export")
    state = os.path.join(vb.OUT, "nfs-state")
    os.makedirs(export, exist_ok=True)
    os.makedirs(state, exist_ok=True)
    image = os.path.join(export, "nfs.img")
    vb.make_image(image, max(opts.image_mib, opts.seq_mib))
    url = f"nfs://{ADDR}{image}"
    blk_cmd = f"blk blk-count=0 bench-seq-mib={opts.seq_mib} bench-rand-ops={opts.rand_ops}"
    qd = getattr(opts, "qd", 1)
    if qd > 1:
        blk_cmd += f" bench-qd={qd}"
    if getattr(opts, "vireo", None):
        VIREO[0] = os.path.abspath(opts.vireo)
    patterns = [("seq-read", opts.seq_mib), ("seq-write", opts.seq_mib),
                ("rand-read", opts.rand_ops), ("rand-write", opts.rand_ops)]
    results = {}

    def record(metric, who, value):
        results.setdefault(metric, {}).setdefault(who, []).append(value)

    def rate(pattern, n, secs):
        return n * (1 << 20) / secs / 1e6 if pattern.startswith("seq") else n / secs

    server = Server(export, state)
    try:
        for r in range(opts.rounds):
            print(f"nfs round {r + 1}/{opts.rounds}", file=sys.stderr)
            guests = [("vireo", lambda: run_vireo(url, blk_cmd))]
            if qemu_missing is None:
                guests.append(("qemu", lambda: run_qemu(image, blk_cmd)))
            for who, run in guests:
                try:
                    got = run()
                except RuntimeError as e:
                    if who != "qemu":
                        raise
                    qemu_missing = f"QEMU's nfs driver did not run: {e}"
                    continue
                for pattern, n in patterns:
                    secs = int(got[("blk", pattern)]["cycles"]) / tsc_hz
                    record(pattern, who, rate(pattern, n, secs))
            for pattern, n in patterns:
                record(pattern, "host", rate(pattern, n, run_host(url, pattern, n)))
    finally:
        server.stop()
    med = {m: {w: statistics.median(v) for w, v in who.items()} for m, who in results.items()}
    return med, qemu_missing


def print_table(med, qemu_missing, opts):
    names = ["host", "vireo", "qemu"]
    print(f"\nNFS disk: medians of {opts.rounds} rounds, nfs-ganesha (VFS, NFSv3) in a namespace "
          f"on CPU 0, clients on CPU 1, a {max(opts.image_mib, opts.seq_mib)} MiB raw image "
          f"(page-cached on the server); guest 1 MiB sequential over {opts.seq_mib} MiB, "
          f"{opts.rand_ops} random 4 KiB, queue depth 1"
          + (f" (guests' sequential: {opts.qd})" if getattr(opts, "qd", 1) > 1 else ""))
    if qemu_missing:
        print(f"qemu: {qemu_missing}")
    print(f"{'pattern':<11}{'unit':<6}" + "".join(f"{n:>10}" for n in names)
          + f"{'vireo/host':>12}{'qemu/host':>11}{'vireo/qemu':>12}")
    for metric in UNITS:
        m = med.get(metric, {})
        cells = "".join(f"{m[n]:>10.0f}" if n in m else f"{'-':>10}" for n in names)

        def ratio(a, b):
            return f"{m[a] / m[b]:.2f}" if a in m and b in m and m[b] else "-"
        print(f"{metric:<11}{UNITS[metric]:<6}{cells}{ratio('vireo', 'host'):>12}"
              f"{ratio('qemu', 'host'):>11}{ratio('vireo', 'qemu'):>12}")


def add_args(ap):
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seq-mib", type=int, default=64)
    ap.add_argument("--rand-ops", type=int, default=1000)
    ap.add_argument("--image-mib", type=int, default=256)
    ap.add_argument("--qd", type=int, default=1,
                    help="guests' sequential requests in flight (1 to 8)")
    ap.add_argument("--vireo", help="the vireo binary to run (default: this tree's release build)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_args(ap)
    opts = ap.parse_args()
    med, qemu_missing = measure(opts)
    print_table(med, qemu_missing, opts)


if __name__ == "__main__":
    main()
