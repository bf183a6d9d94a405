#!/usr/bin/env python3
"""Virtual-network benchmark: TCP through a network's bridge and NAT with
Vireo's daemon, against the kernel's own path and QEMU, and the time from
`net-start` to a network that answers DHCP, against libvirt's.

Side by side in one run, alternating round after round so that noise on
this (shared, 2-core) machine hits every contender alike; figures are
medians over --rounds.

Throughput (MB/s, 10^6 bytes of payload each way per second):

- guest->guest: two guests on one network's bridge; the client connects to
  the server, sends --bytes of a pattern, closes its side and reads
  everything back (the server echoes), until both sides are closed;
- guest->upstream: one guest through the network's NAT to an echo server in
  an "upstream" namespace joined to the host namespace by a veth, the same
  exchange.

  vireo   the project's guest (guests/virtio, its smoltcp stack with
          `net.ip=`, `net.serve=`, `net.tcp=`) in domains of `vireo daemon`,
          on a NAT network (bridge, nftables, dnsmasq) the daemon runs;
  qemu    the same guest under QEMU (`-M microvm,pcie=on`, output through a
          virtio console), its virtio-net on a TAP the script adds to the
          same bridge (no vhost-net: this kernel has none);
  kernel  the kernel's own figure: two network namespaces joined by veths to
          the same bridge (client -> server), and the client namespace
          through the same NAT to the same upstream echo server; the client
          and the echo server are small Python programs (this file's
          `_client` and `_echo` modes: 1 MiB sends, a thread each way).

  Each exchange is timed by its client from the connect to the close seen
  both ways: the guest prints `us=` (its TSC, at the rate it believes;
  rescaled by the host's own measurement of the TSC rate, bench/blk_host.c),
  the kernel client times itself with CLOCK_MONOTONIC. Guests have static
  addresses (`net.ip=`), so no DHCP wait precedes an exchange. The kernel's
  figure is a lower bound of what the kernel can do (Python moves the
  bytes), so vireo/kernel errs in Vireo's favour. The server side (guest, or echo process)
  runs on --server-cpu, the client side on --client-cpu (taskset: a VMM with
  all its threads; vireo's daemon is re-pinned before each domain start, so
  the VMM it forks inherits the CPU).

DHCP readiness (ms): from the `net-start` command until an OFFER answers a
DHCP DISCOVER sent on a port of the new bridge, for Vireo's daemon and for
libvirt 9's libvirtd (its network driver, dnsmasq and iptables), each in a
namespace of its own, with the same network XML: libvirt's stock default
network (NAT, a DHCP range) on a documentation range, plus one `dhcp/host`,
and with `stp='off'`: with STP on, the kernel holds every new bridge port
for twice its forwarding delay (at least 2 s each) before it forwards, which
times the port, not the network. The probe (this file's `_dhcp` mode,
started before `net-start` in the same namespace) waits for the bridge to
appear, enslaves one end of a veth pair to it through rtnetlink and sends a
DISCOVER every 10 ms on the other end through a raw packet socket until an
OFFER comes. Each round starts the network twice: once probing with the
MAC of the `dhcp/host` (the readiness figure), once with a fresh random MAC,
whose address comes from the range: dnsmasq then pings the address before
offering it and waits about 3 s for an answer, under both managers. Also
shown: when the bridge appeared and when `net-start` returned. The first
round warms caches and is not counted.

    bench/network.py [--rounds N] [--bytes N] [--server-cpu C] [--client-cpu C]
                     [--timeout-s S] [--guest ELF]
                     [--no-qemu] [--no-libvirt] [--no-throughput] [--no-dhcp]

Everything lives in namespaces the script creates (vbn<pid>-*): nothing is
added to the root namespace. libvirtd runs inside its namespace with a
private mount of /run/libvirt, /var/lib/libvirt, /var/cache/libvirt,
/var/log/libvirt and a copy of /etc/libvirt (so it neither meets another
libvirtd nor leaves definitions behind), its socket in the work directory.
Addresses: 192.0.2.0/24 (the throughput network), 198.51.100.0/24
(upstream), 203.0.113.0/24 (the DHCP-timing network). Every process the
script started is stopped and every namespace removed at the end, also after
an error or Ctrl-C. Needs root, iproute2, nftables, dnsmasq, iptables (for
libvirt), libvirt-daemon, libvirt-clients; QEMU is Debian's
qemu-system-x86_64 if on PATH, else the 7.2 that scripts/nested/fetch-qemu.sh
unpacks. Python 3 standard library only.
"""

import argparse
import os
import pwd
import random
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "bench")
QEMU_DIR = os.path.join(ROOT, "target", "nested", "qemu")
SELF = os.path.abspath(__file__)
TAG = f"vbn{os.getpid()}"

BRIDGE = "vbn0"           # the throughput network's bridge
DHCP_BRIDGE = "vbd0"      # the DHCP-timing network's bridge
ECHO_PORT = 7000          # upstream echo server
SERVE_PORT = 7001         # the server guest / kernel server

# Addresses on the throughput network (192.0.2.0/24, router .1).
ADDR = {
    ("vireo", "server"): "192.0.2.10", ("vireo", "client"): "192.0.2.11",
    ("qemu", "server"): "192.0.2.12", ("qemu", "client"): "192.0.2.13",
    ("kernel", "server"): "192.0.2.20", ("kernel", "client"): "192.0.2.21",
}
MAC = {
    ("vireo", "server"): "52:54:00:00:0b:10", ("vireo", "client"): "52:54:00:00:0b:11",
    ("qemu", "server"): "52:54:00:00:0b:12", ("qemu", "client"): "52:54:00:00:0b:13",
}
UPSTREAM = "198.51.100.2"
# The DHCP probe's MAC when it asks as a configured host (a `dhcp/host`).
PROBE_MAC = "52:54:00:00:0d:01"


def throughput_net_xml(name):
    return (f"<network><name>{name}</name><forward mode='nat'/>"
            f"<bridge name='{BRIDGE}' stp='off' delay='0'/>"
            "<ip address='192.0.2.1' netmask='255.255.255.0'>"
            "<dhcp><range start='192.0.2.100' end='192.0.2.150'/></dhcp></ip></network>")


def dhcp_net_xml(name):
    """libvirt's stock default network, on a documentation range."""
    return (f"<network><name>{name}</name><forward mode='nat'/>"
            f"<bridge name='{DHCP_BRIDGE}' stp='off' delay='0'/>"
            "<ip address='203.0.113.1' netmask='255.255.255.0'>"
            "<dhcp><range start='203.0.113.100' end='203.0.113.254'/>"
            f"<host mac='{PROBE_MAC}' ip='203.0.113.9'/></dhcp></ip></network>")


# ---------------------------------------------------------------- helpers

def sh(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def out(*cmd):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True,
                          text=True).stdout


def kv(line):
    return dict(w.split("=", 1) for w in line.split() if "=" in w)


def wait_for(cond, what, timeout=60.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise RuntimeError(f"timed out ({timeout:.0f} s) waiting for {what}")


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def line_with(text, prefix):
    for line in text.splitlines():
        if line.startswith(prefix):
            return line
    return None


class Netns:
    """A network namespace of this run; its processes die with it."""

    def __init__(self, lab, suffix):
        self.name = f"{TAG}-{suffix}"
        sh("ip", "netns", "add", self.name)
        lab.namespaces.append(self)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args):
        return sh("ip", "-n", self.name, *args, capture_output=True)

    def cmd(self, cmd, cpu=None):
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        return ["ip", "netns", "exec", self.name] + pin + [str(c) for c in cmd]

    def remove(self):
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)


class Lab:
    """Everything the run made, undone in reverse on exit."""

    def __init__(self):
        self.namespaces = []
        self.procs = []
        self.undo = []
        self.work = tempfile.mkdtemp(prefix="bench-network.", dir=os.path.join(ROOT, "target"))
        os.chmod(self.work, 0o755)

    def spawn(self, cmd, log, **kw):
        f = open(os.path.join(self.work, log), "ab")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=kw.pop("stdout", f),
                             stderr=f, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def close(self):
        for fn in reversed(self.undo):
            try:
                fn()
            except Exception as e:  # keep cleaning
                print(f"cleanup: {e}", file=sys.stderr)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for ns in reversed(self.namespaces):
            ns.remove()


def veth_into(host, port, ns, inner, addr, gw=None, master=BRIDGE):
    """A veth from namespace `host` (enslaved to `master`) into `ns`."""
    host.ip("link", "add", port, "type", "veth", "peer", "name", inner, "netns", ns.name)
    if master:
        host.ip("link", "set", port, "master", master)
    host.ip("link", "set", port, "up")
    if addr:
        ns.ip("addr", "add", addr, "dev", inner)
    ns.ip("link", "set", inner, "up")
    if gw:
        ns.ip("route", "add", "default", "via", gw)


# ------------------------------------------------------------ contenders

class VireoDaemon:
    def __init__(self, lab, ns, binary, cpu):
        self.lab, self.ns, self.binary = lab, ns, binary
        tag = ns.name.rsplit("-", 1)[1]
        self.socket = os.path.join(lab.work, f"vireo-{tag}.sock")
        state = os.path.join(lab.work, f"vireo-{tag}-state")
        os.makedirs(state)
        log = os.path.join(lab.work, f"vireo-{tag}-daemon.log")
        self.proc = lab.spawn(ns.cmd([binary, "daemon", "--state-dir", state, "--socket",
                                      self.socket, "--log", log], cpu=cpu), f"vireo-{tag}.out")
        wait_for(lambda: os.path.exists(self.socket) or self.proc.poll() is not None,
                 "vireo's daemon socket")
        if self.proc.poll() is not None:
            raise RuntimeError("vireo daemon exited at start; see " + lab.work)
        # `ip netns exec` and taskset exec, so the child is the daemon itself.
        self.pid = self.proc.pid

    def c(self, *verb, check=True):
        p = subprocess.run([self.binary, "-c", f"vireo+unix:///system?socket={self.socket}"]
                           + [str(v) for v in verb], capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise RuntimeError(f"vireo {' '.join(map(str, verb))}: {p.stderr.strip()}")
        return p

    def pin(self, cpu):
        """Pins the daemon (all its threads); VMMs forked next inherit it."""
        sh("taskset", "-a", "-p", "-c", cpu, self.pid, stdout=subprocess.DEVNULL)

    def define_file(self, verb, name, xml):
        path = os.path.join(self.lab.work, f"{name}.xml")
        with open(path, "w") as f:
            f.write(xml)
        self.c(verb, path)

    def state(self, name):
        return self.c("domstate", name).stdout.strip()


def guest_domain_xml(name, guest, net, mac, cmdline, console):
    # A fixed UUID per name, so that each round's define updates the domain.
    uuid = "6e657477-6f72-6b00-0000-" + name.encode().hex()[-12:].rjust(12, "0")
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>{guest}</kernel>
    <cmdline>mirror {cmdline}</cmdline></os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <interface type='network'><source network='{net}'/><mac address='{mac}'/><model type='virtio'/></interface>
    <console type='file'><source path='{console}'/><target type='virtio'/></console>
  </devices>
</domain>
"""


def qemu_binary(lab):
    found = shutil.which("qemu-system-x86_64")
    if found:
        return [found]
    sh(os.path.join(ROOT, "scripts", "nested", "fetch-qemu.sh"), QEMU_DIR,
       stdout=subprocess.DEVNULL)
    root = os.path.join(QEMU_DIR, "root")
    os.environ["QEMU_MODULE_DIR"] = f"{root}/usr/lib/x86_64-linux-gnu/qemu"
    return [f"{root}/usr/bin/qemu-system-x86_64", "-L", f"{root}/usr/share/qemu",
            "-L", f"{root}/usr/share/seabios"]


class Guests:
    """Runs the guest pair (or the lone client) under one VMM."""

    def __init__(self, lab, host, guest, opts, daemon=None, qemu=None):
        self.lab, self.host, self.guest, self.opts = lab, host, guest, opts
        self.daemon, self.qemu = daemon, qemu
        self.seq = 0

    def cmdline(self, who, role, action):
        return (f"net.ip={ADDR[(who, role)]}/24,gw=192.0.2.1 "
                f"net.timeout-ms={self.opts.timeout_s * 1000} {action}")

    def start(self, who, role, action, cpu):
        """Starts one guest; returns (console path, handle)."""
        self.seq += 1
        console = os.path.join(self.lab.work, f"{who}-{role}-{self.seq}.out")
        cmdline = self.cmdline(who, role, action)
        if who == "vireo":
            name = f"bench-net-{role}"
            self.daemon.define_file("define", name, guest_domain_xml(
                name, self.guest, "bench", MAC[(who, role)], cmdline, console))
            self.daemon.pin(cpu)
            self.daemon.c("start", name)
            return console, name
        tap = f"vbq{role[0]}"
        cmd = self.qemu + [
            "-M", "microvm,pcie=on,rtc=off,pic=off,pit=off,isa-serial=off",
            "-enable-kvm", "-m", "64M", "-nodefaults", "-no-user-config", "-display", "none",
            "-kernel", self.guest, "-append", cmdline + " mirror",
            "-device", "virtio-serial-pci,disable-legacy=on",
            "-chardev", f"file,id=con,path={console}", "-device", "virtconsole,chardev=con",
            "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,disable-legacy=on,romfile=,mac={MAC[(who, role)]}"]
        proc = self.lab.spawn(self.host.cmd(cmd, cpu=cpu), f"qemu-{role}.log")
        return console, proc

    def stop(self, who, handle):
        if who == "vireo":
            wait_for(lambda: self.daemon.state(handle) == "shut off", f"{handle} to power off",
                     timeout=30, step=0.05)
        else:
            handle.kill()
            handle.wait()
            self.lab.procs.remove(handle)

    def wait_line(self, console, prefix, handle):
        def seen():
            line = line_with(read(console), prefix)
            if line is None and not isinstance(handle, str) and handle.poll() is not None:
                raise RuntimeError(f"qemu exited: see {self.lab.work}")
            return line
        line = wait_for(seen, f"'{prefix}' in {console}", timeout=self.opts.timeout_s + 30)
        if " FAIL " in line:
            raise RuntimeError(f"guest: {line}")
        return line

    def guest_to_guest(self, who):
        opts = self.opts
        s_con, s = self.start(who, "server", f"net.serve={SERVE_PORT}", opts.server_cpu)
        try:
            self.wait_line(s_con, "virtio: serve listening", s)
            c_con, c = self.start(who, "client",
                                  f"net.tcp={ADDR[(who, 'server')]}:{SERVE_PORT},bytes={opts.bytes}",
                                  opts.client_cpu)
            try:
                line = self.wait_line(c_con, "virtio: tcp ", c)
                self.wait_line(c_con, "virtio: done", c)
            finally:
                self.stop(who, c)
            self.wait_line(s_con, "virtio: serve port=", s)
            self.wait_line(s_con, "virtio: done", s)
        finally:
            self.stop(who, s)
        return exchange_seconds(line, c_con, opts)

    def guest_to_upstream(self, who):
        opts = self.opts
        c_con, c = self.start(who, "client", f"net.tcp={UPSTREAM}:{ECHO_PORT},bytes={opts.bytes}",
                              opts.client_cpu)
        try:
            line = self.wait_line(c_con, "virtio: tcp ", c)
            self.wait_line(c_con, "virtio: done", c)
        finally:
            self.stop(who, c)
        return exchange_seconds(line, c_con, opts)


def exchange_seconds(line, console, opts):
    f = kv(line)
    if int(f["sent"]) != opts.bytes or int(f["received"]) != opts.bytes:
        raise RuntimeError(f"short exchange: {line}")
    if f["sent-hash"] != f["received-hash"]:
        raise RuntimeError(f"echo differs: {line}")
    guest_hz = int(kv(line_with(read(console), "virtio: tsc-hz="))["tsc-hz"])
    return int(f["us"]) / 1e6 * guest_hz / opts.tsc_hz


def kernel_exchange(client_ns, host, port, opts):
    p = subprocess.run(client_ns.cmd([sys.executable, SELF, "_client", host, port, opts.bytes],
                                     cpu=opts.client_cpu),
                       capture_output=True, text=True, timeout=opts.timeout_s + 30)
    if p.returncode != 0:
        raise RuntimeError(f"kernel client: {p.stderr.strip()}")
    f = kv(p.stdout)
    if int(f["received"]) != opts.bytes:
        raise RuntimeError(f"kernel client: short exchange: {p.stdout}")
    return int(f["ns"]) / 1e9


# ------------------------------------------------------------ DHCP timing

class Libvirtd:
    """libvirt 9's libvirtd inside namespace `ns`, with private state."""

    def __init__(self, lab, ns, cpu):
        self.lab, self.ns = lab, ns
        base = os.path.join(lab.work, "libvirt")
        etc = os.path.join(base, "etc")
        shutil.copytree("/etc/libvirt", etc, symlinks=True)
        # No stock network of the host's starts in ours.
        shutil.rmtree(os.path.join(etc, "qemu", "networks"), ignore_errors=True)
        sockdir = os.path.join(base, "run")
        os.makedirs(sockdir)
        self.socket = os.path.join(sockdir, "libvirt-sock")
        conf = os.path.join(etc, "libvirtd.conf")
        with open(conf, "w") as f:
            f.write(f'unix_sock_dir = "{sockdir}"\nlog_outputs = "3:stderr"\n')
        mounts = ["/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt"]
        for m in mounts:
            os.makedirs(m, exist_ok=True)
        try:
            pwd.getpwnam("libvirt-dnsmasq")
        except KeyError:  # the user Debian's network driver package makes
            sh("useradd", "--system", "--user-group", "-d", "/var/lib/libvirt/dnsmasq",
               "-s", "/usr/sbin/nologin", "libvirt-dnsmasq")
        script = " && ".join([f"mount -t tmpfs tmpfs {m}" for m in mounts]
                             + [f"mount --bind {etc} /etc/libvirt",
                                f"exec taskset -c {cpu} libvirtd --config {conf} "
                                f"--pid-file {base}/libvirtd.pid"])
        self.proc = lab.spawn(ns.cmd(["unshare", "-m", "--propagation", "private",
                                      "sh", "-c", script]), "libvirtd.log")
        wait_for(lambda: self.c("net-list", "--all", check=False).returncode == 0
                 or self.proc.poll() is not None, "libvirtd to answer", timeout=60, step=0.1)
        if self.proc.poll() is not None:
            raise RuntimeError("libvirtd exited at start; see " + lab.work)

    def c(self, *verb, check=True):
        p = subprocess.run(["virsh", "-q", "-c", f"qemu:///system?socket={self.socket}"]
                           + [str(v) for v in verb], capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise RuntimeError(f"virsh {' '.join(map(str, verb))}: {p.stderr.strip()}")
        return p

    def define_file(self, verb, name, xml):
        path = os.path.join(self.lab.work, f"libvirt-{name}.xml")
        with open(path, "w") as f:
            f.write(xml)
        self.c(verb, path)


def dhcp_ready(lab, ns, tool, opts, n, mac):
    """Seconds from `net-start` to the bridge, to its return, to an OFFER
    for `mac` (a random one when None)."""
    a, b = f"vbp{n}a", f"vbp{n}b"
    ns.ip("link", "add", a, "type", "veth", "peer", "name", b)
    ns.ip("link", "set", a, "up")
    ns.ip("link", "set", b, "up")
    probe = subprocess.Popen(ns.cmd([sys.executable, SELF, "_dhcp", DHCP_BRIDGE, a, b,
                                     opts.timeout_s, mac or "random"], cpu=opts.client_cpu),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if probe.stdout.readline().strip() != "ready":
            raise RuntimeError(f"dhcp probe: {probe.stderr.read()}")
        t0 = time.monotonic()
        tool.c("net-start", "bench-dhcp")
        t1 = time.monotonic()
        got, err = probe.communicate(timeout=opts.timeout_s + 10)
        if probe.returncode != 0:
            raise RuntimeError(f"dhcp probe: {err.strip()}")
        seen = kv(got)
        bridge, offer = float(seen["bridge"]), float(seen["offer"])
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
        tool.c("net-destroy", "bench-dhcp", check=False)
        ns.ip("link", "del", a)
    return bridge - t0, t1 - t0, offer - t0


# ------------------------------------------------------------ helper modes

def pattern_block():
    unit = bytes(i % 251 for i in range(251))
    return unit * 4096  # 1,028,096 bytes: the pattern continues across sends


def mode_client(host, port, nbytes):
    nbytes = int(nbytes)
    block = memoryview(pattern_block())
    s = socket.socket()
    t0 = time.monotonic_ns()
    s.connect((host, int(port)))

    def send():
        left = nbytes
        while left:
            n = min(left, len(block))
            s.sendall(block[:n])
            left -= n
        s.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    buf = bytearray(1 << 20)
    got = 0
    while True:
        n = s.recv_into(buf)
        if n == 0:
            break
        got += n
    t1 = time.monotonic_ns()
    sender.join()
    s.close()
    print(f"received={got} ns={t1 - t0}")


def mode_echo(addr, port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, int(port)))
    srv.listen(16)

    def serve(c):
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while True:
            n = c.recv_into(buf)
            if n == 0:
                break
            c.sendall(view[:n])
        c.shutdown(socket.SHUT_WR)
        c.close()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def discover(mac, xid):
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
                        b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4, mac + b"\0" * 10,
                        b"\0" * 64, b"\0" * 128)
    bootp += b"\x63\x82\x53\x63" + bytes([53, 1, 1, 55, 3, 1, 3, 6, 255])
    bootp += b"\0" * max(0, 300 - len(bootp))
    udp = struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bootp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     b"\0" * 4, b"\xff" * 4)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return b"\xff" * 6 + mac + b"\x08\x00" + ip + udp


def is_offer(frame, xid):
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00":
        return False
    ihl = (frame[14] & 0xf) * 4
    if frame[14 + 9] != 17:
        return False
    udp = 14 + ihl
    if struct.unpack("!H", frame[udp + 2:udp + 4])[0] != 68:
        return False
    bootp = frame[udp + 8:]
    if bootp[0] != 2 or struct.unpack("!I", bootp[4:8])[0] != xid:
        return False
    opts = bootp[240:]
    i = 0
    while i + 1 < len(opts) and opts[i] != 255:
        if opts[i] == 0:
            i += 1
            continue
        if opts[i] == 53 and i + 2 < len(opts):
            return opts[i + 2] == 2
        i += 2 + opts[i + 1]
    return False


def set_master(port, bridge):
    """RTM_NEWLINK with IFLA_MASTER through rtnetlink; waits for the ack."""
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    nl.bind((0, 0))
    attr = struct.pack("HHI", 8, 10, socket.if_nametoindex(bridge))  # IFLA_MASTER
    body = struct.pack("BxHiII", 0, 0, socket.if_nametoindex(port), 0, 0) + attr
    msg = struct.pack("IHHII", 16 + len(body), 16, 0x5, 1, 0) + body  # REQUEST|ACK
    nl.send(msg)
    reply = nl.recv(4096)
    nl.close()
    if struct.unpack("H", reply[4:6])[0] == 2:  # NLMSG_ERROR
        err = struct.unpack("i", reply[16:20])[0]
        if err:
            raise OSError(-err, f"set {port} master {bridge}")


def mode_dhcp(bridge, port, probe, timeout_s, mac):
    if mac == "random":
        mac = bytes([0x02, 0x42] + [random.randrange(256) for _ in range(4)])
    else:
        mac = bytes.fromhex(mac.replace(":", ""))
    xid = random.getrandbits(32)
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    raw.bind((probe, 0))
    print("ready", flush=True)
    deadline = time.monotonic() + float(timeout_s)
    while True:
        try:
            socket.if_nametoindex(bridge)
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"no bridge {bridge} within {timeout_s} s")
            time.sleep(0.001)
    bridged = time.monotonic()
    while True:
        try:
            set_master(port, bridge)
            break
        except OSError as e:
            if time.monotonic() > deadline:
                sys.exit(f"cannot enslave {port}: {e}")
            time.sleep(0.001)
    frame = discover(mac, xid)
    next_send = 0.0
    while True:
        now = time.monotonic()
        if now > deadline:
            sys.exit(f"no DHCP offer within {timeout_s} s")
        if now >= next_send:
            raw.send(frame)
            next_send = now + 0.01
        ready, _, _ = select.select([raw], [], [], max(0.0, next_send - time.monotonic()))
        if ready and is_offer(raw.recv(2048), xid):
            print(f"bridge={bridged} offer={time.monotonic()}")
            return


# ------------------------------------------------------------ main

def build(opts):
    os.makedirs(OUT, exist_ok=True)
    sh("cargo", "build", "--release", "-q", "-p", "vireo", cwd=ROOT)
    guest = os.path.join(OUT, "virtio.elf")
    if opts.guest:
        guest = os.path.abspath(opts.guest)
    else:
        sh(os.path.join(ROOT, "guests", "build.sh"), OUT, "virtio")
    sh("gcc", "-O2", "-o", os.path.join(OUT, "blk_host"), os.path.join(ROOT, "bench", "blk_host.c"))
    opts.tsc_hz = int(kv(out(os.path.join(OUT, "blk_host"), "tsc-hz"))["tsc-hz"])
    return os.path.join(ROOT, "target", "release", "vireo"), guest


def measure(opts, lab, results):
    binary, guest = build(opts)

    def record(metric, who, value):
        results.setdefault(metric, {}).setdefault(who, []).append(value)

    if not opts.no_throughput:
        host = Netns(lab, "host")
        up = Netns(lab, "up")
        veth_into(host, "upl0", up, "upl1", f"{UPSTREAM}/24", master=None)
        host.ip("addr", "add", "198.51.100.1/24", "dev", "upl0")
        lab.spawn(up.cmd([sys.executable, SELF, "_echo", UPSTREAM, ECHO_PORT],
                         cpu=opts.server_cpu), "echo-upstream.log")
        daemon = VireoDaemon(lab, host, binary, opts.server_cpu)
        lab.undo.append(lambda: daemon.c("net-destroy", "bench", "--force", check=False))
        daemon.define_file("net-define", "bench", throughput_net_xml("bench"))
        daemon.c("net-start", "bench")
        # The kernel's pair, on the same bridge and NAT.
        ks, kc = Netns(lab, "ks"), Netns(lab, "kc")
        veth_into(host, "vbks0", ks, "vbks1", ADDR[("kernel", "server")] + "/24", "192.0.2.1")
        veth_into(host, "vbkc0", kc, "vbkc1", ADDR[("kernel", "client")] + "/24", "192.0.2.1")
        lab.spawn(ks.cmd([sys.executable, SELF, "_echo", ADDR[("kernel", "server")], SERVE_PORT],
                         cpu=opts.server_cpu), "echo-kernel.log")
        wait_for(lambda: subprocess.run(kc.cmd([sys.executable, SELF, "_client", UPSTREAM,
                                                ECHO_PORT, 1]), capture_output=True).returncode == 0,
                 "the upstream echo server", timeout=20, step=0.2)
        contenders = [("vireo", Guests(lab, host, guest, opts, daemon=daemon))]
        if not opts.no_qemu:
            for role in ("server", "client"):
                tap = f"vbq{role[0]}"
                host.ip("tuntap", "add", "dev", tap, "mode", "tap")
                host.ip("link", "set", tap, "master", BRIDGE)
                host.ip("link", "set", tap, "up")
            contenders.append(("qemu", Guests(lab, host, guest, opts, qemu=qemu_binary(lab))))
        for r in range(opts.rounds):
            print(f"throughput round {r + 1}/{opts.rounds}", file=sys.stderr)
            for who, g in contenders:
                record("guest->guest", who, opts.bytes / g.guest_to_guest(who) / 1e6)
            record("guest->guest", "kernel", opts.bytes / kernel_exchange(
                kc, ADDR[("kernel", "server")], SERVE_PORT, opts) / 1e6)
            for who, g in contenders:
                record("guest->upstream", who, opts.bytes / g.guest_to_upstream(who) / 1e6)
            record("guest->upstream", "kernel", opts.bytes / kernel_exchange(
                kc, UPSTREAM, ECHO_PORT, opts) / 1e6)
        daemon.c("net-destroy", "bench", "--force", check=False)

    if not opts.no_dhcp:
        tools = []
        vns = Netns(lab, "dv")
        vd = VireoDaemon(lab, vns, binary, opts.server_cpu)
        vd.define_file("net-define", "bench-dhcp", dhcp_net_xml("bench-dhcp"))
        tools.append(("vireo", vns, vd))
        if not opts.no_libvirt:
            lns = Netns(lab, "dl")
            lv = Libvirtd(lab, lns, opts.server_cpu)
            lab.undo.append(lambda: lv.c("net-destroy", "bench-dhcp", check=False))
            lv.define_file("net-define", "bench-dhcp", dhcp_net_xml("bench-dhcp"))
            tools.append(("libvirt", lns, lv))
        n = 0
        for r in range(opts.rounds + 1):  # the first round warms caches
            print(f"dhcp round {r + 1}/{opts.rounds + 1}", file=sys.stderr)
            for who, ns, tool in tools:
                n += 1
                bridged, returned, offered = dhcp_ready(lab, ns, tool, opts, n, PROBE_MAC)
                n += 1
                _, _, pinged = dhcp_ready(lab, ns, tool, opts, n, None)
                if r > 0:
                    record("net-start to bridge", who, bridged * 1000)
                    record("net-start returns", who, returned * 1000)
                    record("net-start to OFFER, host", who, offered * 1000)
                    record("net-start to OFFER, range", who, pinged * 1000)


def report(opts, results):
    print(f"\nnetwork benchmark: medians of {opts.rounds} rounds; {opts.bytes} bytes each way "
          f"per exchange (echoed); server CPU {opts.server_cpu}, client CPU {opts.client_cpu}; "
          f"TSC {opts.tsc_hz / 1e9:.3f} GHz")
    tput = [m for m in ("guest->guest", "guest->upstream") if m in results]
    if tput:
        names = [n for n in ("kernel", "vireo", "qemu") if n in results[tput[0]]]
        head = f"{'MB/s':<18}" + "".join(f"{n:>9}" for n in names) + f"{'vireo/kernel':>14}"
        if "qemu" in names:
            head += f"{'vireo/qemu':>12}{'qemu/kernel':>13}"
        print(head + "   (targets: vireo/kernel >= 0.5, vireo/qemu >= 1)")
        for m in tput:
            med = {n: statistics.median(results[m][n]) for n in names}
            line = f"{m:<18}" + "".join(f"{med[n]:>9.1f}" for n in names)
            line += f"{med['vireo'] / med['kernel']:>14.3f}"
            if "qemu" in names:
                line += f"{med['vireo'] / med['qemu']:>12.2f}{med['qemu'] / med['kernel']:>13.3f}"
            print(line)
    dhcp = [m for m in ("net-start to bridge", "net-start returns", "net-start to OFFER, host",
                        "net-start to OFFER, range") if m in results]
    if dhcp:
        names = [n for n in ("vireo", "libvirt") if n in results[dhcp[0]]]
        print(f"\n{'ms':<27}" + "".join(f"{n:>9}" for n in names)
              + (f"{'vireo/libvirt':>15}" if len(names) == 2 else ""))
        for m in dhcp:
            med = {n: statistics.median(results[m][n]) for n in names}
            line = f"{m:<27}" + "".join(f"{med[n]:>9.1f}" for n in names)
            if len(names) == 2:
                line += f"{med['vireo'] / med['libvirt']:>15.3f}"
            print(line)


def main():
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        modes = {"_client": mode_client, "_echo": mode_echo, "_dhcp": mode_dhcp}
        return modes[sys.argv[1]](*sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bytes", type=int, default=4 << 20)
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    ap.add_argument("--timeout-s", type=int, default=120)
    ap.add_argument("--guest", help="a prebuilt virtio guest ELF instead of guests/virtio")
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--no-libvirt", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-dhcp", action="store_true")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/network.py needs root (namespaces, bridges, TAPs, libvirtd)")
    if opts.bytes > 1 << 30:
        sys.exit("--bytes: at most 2^30 (the guest's limit)")
    for tool in ("ip", "taskset", "nft", "dnsmasq", "unshare"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found")
    if not opts.no_dhcp and not opts.no_libvirt:
        for tool in ("libvirtd", "virsh", "iptables"):
            if not shutil.which(tool):
                sys.exit(f"{tool} not found (apt-get install libvirt-daemon libvirt-clients "
                         "iptables), or pass --no-libvirt")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    lab = Lab()
    results = {}
    try:
        measure(opts, lab, results)
    finally:
        lab.close()
    report(opts, results)


if __name__ == "__main__":
    main()
