#!/usr/bin/env python3
"""Management-layer benchmark: Vireo's daemon against libvirt 9 with QEMU.

Side by side in one run, the same idle test guest (guests/idle) under both:

- start: from the command until the tool reports the domain running
  (`vireo start` / `virsh start` return once it runs; each is checked with
  domstate afterwards, outside the timing);
- destroy: the same for `destroy`;
- list --all with N (100) defined domains;
- the daemon's RSS (VmRSS of vireo's daemon / libvirtd) idle, with the N
  domains defined and none running, and with 20 running;
- 20 domains started at once: wall time until every start returned and
  every domain reports running.

Runs alternate between the two tools so that noise on this machine hits
both alike; figures are medians. The daemons (and so the VMMs they start)
are pinned with taskset to --daemon-cpus, the clients to --client-cpus.

    bench/manager.py [--runs N] [--domains N] [--concurrent N]
                     [--daemon-cpus LIST] [--client-cpus LIST] [--only vireo|libvirt]

libvirt: Debian's libvirt-daemon, -driver-qemu and libvirt-clients. The
script starts virtlogd and libvirtd in the foreground of background
processes (as root) and stops them at the end; it creates what libvirt
needs (groups kvm and libvirt-qemu, user libvirt-qemu, /var/log/libvirt)
and, for the run, gives /dev/kvm to group kvm with mode 0660 as Debian's
udev rule does (libvirt runs QEMU as libvirt-qemu), restoring it after.
QEMU is the 7.2 that scripts/nested/fetch-qemu.sh unpacks (the host has no
qemu-system-x86_64 on PATH), run through a wrapper named in <emulator>.
The guest gets a named CPU (qemu64, check='none'): on kvm-pvm QEMU cannot
use host-passthrough, and libvirt would refuse qemu64's svm. libvirt does
not run microvm machines, so its domains are 'pc'; `start` returns before
SeaBIOS runs, so the firmware does not count in the start figure.

Vireo: `vireo daemon --state-dir DIR --socket PATH` and the CLI over
`vireo+unix:///system?socket=PATH`. When this build has no daemon yet,
only libvirt's half runs, and the script says so.

Every domain this script defines is named bench-mgr-* and is undefined at
the end, also after a failure.
"""

import argparse
import concurrent.futures
import grp
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = "bench-mgr-"
QEMU_DIR = os.path.join(ROOT, "target", "nested", "qemu")


def sh(*cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def run(cmd, cpus=None, check=True):
    """Runs cmd (pinned to cpus); returns (wall seconds, stdout)."""
    if cpus is not None:
        cmd = ["taskset", "-c", cpus] + cmd
    start = time.perf_counter()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120)
    wall = time.perf_counter() - start
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: "
                           f"{p.stderr.decode(errors='replace').strip()}")
    return wall, p.stdout.decode(errors="replace")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_for(cond, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class Tool:
    """One management stack: its daemon, its CLI, its domain XML."""

    name = ""

    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.procs = []

    def cli(self, *verb):
        raise NotImplementedError

    def xml(self, name):
        raise NotImplementedError

    def daemon_pid(self):
        raise NotImplementedError

    def start_daemon(self):
        raise NotImplementedError

    def spawn(self, cmd, log):
        """Starts a daemon pinned to the daemon CPUs, in its own session."""
        out = open(os.path.join(self.work, log), "ab")
        p = subprocess.Popen(["taskset", "-c", self.args.daemon_cpus] + cmd,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def stop_daemon(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = []

    def c(self, *verb, check=True):
        return run(self.cli(*verb), cpus=self.args.client_cpus, check=check)

    def define(self, name):
        path = os.path.join(self.work, f"{self.name}-{name}.xml")
        with open(path, "w") as f:
            f.write(self.xml(name))
        self.c("define", path)

    def state(self, name):
        return self.c("domstate", name)[1].strip()

    def names(self):
        out = self.c("list", "--all", "--name")[1]
        return [n.strip() for n in out.splitlines() if n.strip().startswith(PREFIX)]

    def cleanup(self):
        try:
            for n in self.names():
                self.c("destroy", n, check=False)
                self.c("undefine", n, check=False)
        except Exception as e:  # the daemon may be gone already
            print(f"{self.name}: cleanup: {e}", file=sys.stderr)


class Libvirt(Tool):
    name = "libvirt"

    def __init__(self, args, work, wrapper, guest):
        super().__init__(args, work)
        self.wrapper = wrapper
        self.guest = guest
        self.libvirtd = None
        self.kvm_saved = None

    def cli(self, *verb):
        return ["virsh", "-q", "-c", "qemu:///system"] + list(verb)

    def xml(self, name):
        return f"""<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{self.guest}</kernel></os>
  <features><acpi/></features>
  <cpu mode='custom' check='none'><model>qemu64</model></cpu>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>{self.wrapper}</emulator>
    <serial type='pty'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""

    def daemon_pid(self):
        return self.libvirtd.pid

    def start_daemon(self):
        for d in ("/var/log/libvirt", "/var/log/libvirt/qemu"):
            os.makedirs(d, exist_ok=True)
        for g in ("kvm", "libvirt-qemu"):
            try:
                grp.getgrnam(g)
            except KeyError:
                sh("groupadd", "--system", g)
        try:
            pwd.getpwnam("libvirt-qemu")
        except KeyError:
            sh("useradd", "--system", "-g", "libvirt-qemu", "-G", "kvm", "-d",
               "/var/lib/libvirt", "-s", "/usr/sbin/nologin", "libvirt-qemu")
        st = os.stat("/dev/kvm")
        self.kvm_saved = (st.st_gid, st.st_mode & 0o7777)
        os.chown("/dev/kvm", -1, grp.getgrnam("kvm").gr_gid)
        os.chmod("/dev/kvm", 0o660)
        busy = subprocess.run(["pgrep", "-x", "libvirtd"], stdout=subprocess.PIPE)
        if busy.returncode == 0:
            raise RuntimeError("a libvirtd already runs here; stop it first (this script "
                               "measures the one it starts)")
        self.spawn(["virtlogd"], "virtlogd.log")
        self.libvirtd = self.spawn(["libvirtd"], "libvirtd.log")
        wait_for(lambda: subprocess.run(self.cli("list"), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL).returncode == 0,
                 "libvirtd to answer")

    def stop_daemon(self):
        super().stop_daemon()
        if self.kvm_saved is not None:
            os.chown("/dev/kvm", -1, self.kvm_saved[0])
            os.chmod("/dev/kvm", self.kvm_saved[1])
            self.kvm_saved = None


class Vireo(Tool):
    name = "vireo"

    def __init__(self, args, work, binary, guest):
        super().__init__(args, work)
        self.binary = binary
        self.guest = guest
        self.socket = os.path.join(work, "vireo.sock")
        self.daemon = None

    def cli(self, *verb):
        return [self.binary, "-c", f"vireo+unix:///system?socket={self.socket}"] + list(verb)

    def xml(self, name):
        return f"""<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>{self.guest}</kernel></os>
  <features><acpi/></features>
  <on_reboot>destroy</on_reboot>
  <devices>
    <serial type='pty'/>
  </devices>
</domain>
"""

    def daemon_pid(self):
        return self.daemon.pid

    def start_daemon(self):
        state = os.path.join(self.work, "vireo-state")
        os.makedirs(state, exist_ok=True)
        self.daemon = self.spawn([self.binary, "daemon", "--state-dir", state,
                                  "--socket", self.socket], "vireo-daemon.log")
        wait_for(lambda: os.path.exists(self.socket) or self.daemon.poll() is not None,
                 "vireo's daemon socket")
        if self.daemon.poll() is not None:
            raise RuntimeError("vireo daemon exited at start; see "
                               + os.path.join(self.work, "vireo-daemon.log"))


def vireo_binary():
    """The release vireo, built; None (with the reason) when it has no daemon."""
    p = subprocess.run(["cargo", "build", "--release", "-q", "-p", "vireo"], cwd=ROOT)
    if p.returncode != 0:
        return None, "cargo build --release -p vireo failed"
    binary = os.path.join(ROOT, "target", "release", "vireo")
    h = subprocess.run([binary, "daemon", "--help"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    if h.returncode != 0:
        return None, "this build of vireo has no `daemon` verb yet"
    return binary, None


def qemu_wrapper(work):
    sh(os.path.join(ROOT, "scripts", "nested", "fetch-qemu.sh"), QEMU_DIR,
       stdout=subprocess.DEVNULL)
    root = os.path.join(QEMU_DIR, "root")
    # Outside /tmp and readable by libvirt-qemu, which QEMU runs as.
    path = os.path.join(work, "qemu-system-x86_64")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                f"QEMU_MODULE_DIR={root}/usr/lib/x86_64-linux-gnu/qemu exec "
                f"{root}/usr/bin/qemu-system-x86_64 -L {root}/usr/share/qemu "
                f"-L {root}/usr/share/seabios \"$@\"\n")
    os.chmod(path, 0o755)
    return path


def measure_start_destroy(tools, runs, results):
    for t in tools:
        t.define(PREFIX + "sd")
    for i in range(runs + 1):
        for t in tools:
            name = PREFIX + "sd"
            wall_start, _ = t.c("start", name)
            if t.state(name) != "running":
                raise RuntimeError(f"{t.name}: {name} is not running after start")
            wall_destroy, _ = t.c("destroy", name)
            if t.state(name) != "shut off":
                raise RuntimeError(f"{t.name}: {name} is not shut off after destroy")
            if i > 0:  # the first round warms caches
                results[t.name]["start"].append(wall_start)
                results[t.name]["destroy"].append(wall_destroy)


def measure_list(tools, domains, runs, results):
    for t in tools:
        for k in range(domains - 1):  # with PREFIX+"sd": N in all
            t.define(f"{PREFIX}{k:03d}")
        if len(t.names()) != domains:
            raise RuntimeError(f"{t.name}: expected {domains} defined domains")
    for t in tools:
        results[t.name]["rss_idle"].append(rss_kib(t.daemon_pid()))
    for i in range(runs + 1):
        for t in tools:
            wall, out = t.c("list", "--all")
            if i > 0:
                results[t.name]["list"].append(wall)


def measure_concurrent(tools, count, results):
    for t in tools:
        names = [f"{PREFIX}{k:03d}" for k in range(count)]
        begun = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(lambda n: t.c("start", n), names))
        wait_for(lambda: all(t.state(n) == "running" for n in names),
                 f"{t.name}: {count} domains running", timeout=120)
        results[t.name]["concurrent"].append(time.perf_counter() - begun)
        time.sleep(1)  # let the daemon settle before its RSS is read
        results[t.name]["rss_running"].append(rss_kib(t.daemon_pid()))
        for n in names:
            t.c("destroy", n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--domains", type=int, default=100)
    ap.add_argument("--concurrent", type=int, default=20)
    ap.add_argument("--daemon-cpus", default="0")
    ap.add_argument("--client-cpus", default="1")
    ap.add_argument("--only", choices=["vireo", "libvirt"])
    args = ap.parse_args()
    if args.domains - 1 < args.concurrent:
        sys.exit("--domains must exceed --concurrent (the concurrent starts use defined domains)")
    if os.geteuid() != 0:
        sys.exit("bench/manager.py runs libvirtd and vireo's daemon as root: run it as root")
    for tool in ("taskset", "virsh", "libvirtd", "virtlogd"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (apt-get install util-linux libvirt-daemon "
                     "libvirt-daemon-driver-qemu libvirt-clients)")

    guests = os.path.join(ROOT, "target", "bench-guests")
    sh(os.path.join(ROOT, "guests", "build.sh"), guests, stdout=subprocess.DEVNULL)
    guest = os.path.join(guests, "idle.elf")
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-manager.", dir=os.path.join(ROOT, "target"))
    os.chmod(work, 0o755)

    tools = []
    notes = []
    if args.only != "vireo":
        tools.append(Libvirt(args, work, qemu_wrapper(work), guest))
    if args.only != "libvirt":
        binary, why = vireo_binary()
        if binary:
            tools.append(Vireo(args, work, binary, guest))
        else:
            notes.append(f"vireo: not measured: {why}")
    names = [t.name for t in tools]
    results = {t.name: {k: [] for k in ("start", "destroy", "list", "rss_fresh", "rss_idle",
                                         "rss_running", "concurrent")} for t in tools}
    try:
        for t in tools:
            t.start_daemon()
            t.cleanup()
        time.sleep(1)
        for t in tools:
            results[t.name]["rss_fresh"].append(rss_kib(t.daemon_pid()))
        measure_start_destroy(tools, args.runs, results)
        measure_list(tools, args.domains, args.runs, results)
        measure_concurrent(tools, args.concurrent, results)
    finally:
        for t in tools:
            t.cleanup()
            t.stop_daemon()

    print(f"management benchmark: medians of {args.runs} runs; daemons on CPUs "
          f"{args.daemon_cpus}, clients on {args.client_cpus}; guest idle.elf, 64 MiB")
    rows = [("start", "ms", 1000, 0.1), ("destroy", "ms", 1000, 0.1),
            (f"list --all ({args.domains} defined)", "ms", 1000, 0.2),
            ("daemon RSS just started", "MiB", 1 / 1024, 0.25),
            (f"daemon RSS idle, {args.domains} defined", "MiB", 1 / 1024, 0.25),
            (f"daemon RSS, {args.concurrent} running", "MiB", 1 / 1024, 0.25),
            (f"{args.concurrent} started at once", "ms", 1000, None)]
    keys = ["start", "destroy", "list", "rss_fresh", "rss_idle", "rss_running", "concurrent"]
    print(f"{'':32}" + "".join(f"{n:>12}" for n in names) + f"{'vireo/libvirt':>16}")
    for (label, unit, scale, target), key in zip(rows, keys):
        med = {n: statistics.median(results[n][key]) * scale for n in names}
        line = f"{label + ' (' + unit + ')':32}" + "".join(f"{med[n]:>12.2f}" for n in names)
        if "vireo" in med and "libvirt" in med and med["libvirt"] > 0:
            ratio = med["vireo"] / med["libvirt"]
            line += f"{ratio:>16.3f}"
            if target is not None:
                line += f"  (target <= {target})"
        print(line)
    for n in notes:
        print(n)


if __name__ == "__main__":
    main()
