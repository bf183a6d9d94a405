#!/usr/bin/env python3
"""Per-VM API latency: how fast a running VM answers on its API socket.

Measures, against a real `vireo run --api-socket` VM running the `idle`
test guest (or any VM whose socket you name with --socket):

  * GET /vm round trips on one keep-alive connection (10,000 by default);
  * GET /vm round trips, each on a fresh connection (connect, request,
    answer, close);
  * pause -> resume: PUT /vm/pause then PUT /vm/resume, each round trip
    timed, and the pair (1,000 pairs by default).

Prints median and p99 per measurement against the targets (median < 100 us,
p99 < 1 ms), twice: from a small C client (bench/api_client.c, built with
gcc; what the VM costs) and from this Python client (what a script sees; its
own floor, against a forked process that answers at once, is printed too).

    bench/api.py [--socket PATH] [--vireo target/release/vireo]
                 [--requests 10000] [--fresh 10000] [--pauses 1000]

Without --socket the script builds the idle guest if missing
(guests/build.sh target/guests idle), starts
`vireo run --kernel target/guests/idle.elf --api-socket ... --serial off`,
measures, and powers the VM off through the API.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_MEDIAN_US = 100
TARGET_P99_US = 1000


class Client:
    """A minimal HTTP/1.1 client for one unix-socket connection."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""

    def close(self):
        self.sock.close()

    def request(self, method, path, body=b""):
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
        if body:
            head += f"Content-Length: {len(body)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + body)
        return self.read_response()

    def read_response(self):
        while b"\r\n\r\n" not in self.buf:
            self.fill()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        while len(rest) < length:
            rest += self.recv()
        self.buf = rest[length:]
        return status, rest[:length]

    def fill(self):
        self.buf += self.recv()

    def recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data


def percentile(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def report(name, samples_ns):
    us = [s / 1000 for s in samples_ns]
    med, p99 = statistics.median(us), percentile(us, 99)
    verdict = "ok" if med < TARGET_MEDIAN_US and p99 < TARGET_P99_US else "MISSES TARGET"
    print(f"{name:<38} n={len(us):<6} median {med:8.1f} us   p99 {p99:8.1f} us"
          f"   max {max(us):8.1f} us   {verdict}")
    return med, p99


def expect(status, body, want, what):
    if status != want:
        sys.exit(f"bench/api.py: {what}: HTTP {status} {body[:200]!r}")


def keep_alive_get(path, n):
    c = Client(path)
    for _ in range(min(n, 200)):  # warm-up
        c.request("GET", "/vm")
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        status, body = c.request("GET", "/vm")
        samples.append(time.perf_counter_ns() - t)
        expect(status, body, 200, "GET /vm")
    c.close()
    return samples


def fresh_get(path, n):
    samples = []
    for i in range(n + min(n, 100)):
        t = time.perf_counter_ns()
        c = Client(path)
        c.sock.sendall(b"GET /vm HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        status, body = c.read_response()
        c.close()
        if i >= min(n, 100):
            samples.append(time.perf_counter_ns() - t)
        expect(status, body, 200, "GET /vm (fresh connection)")
    return samples


def pause_resume(path, n):
    c = Client(path)
    pauses, resumes, pairs = [], [], []
    for i in range(n + min(n, 20)):
        t0 = time.perf_counter_ns()
        status, body = c.request("PUT", "/vm/pause")
        t1 = time.perf_counter_ns()
        expect(status, body, 204, "PUT /vm/pause")
        status, body = c.request("PUT", "/vm/resume")
        t2 = time.perf_counter_ns()
        expect(status, body, 204, "PUT /vm/resume")
        if i >= min(n, 20):
            pauses.append(t1 - t0)
            resumes.append(t2 - t1)
            pairs.append(t2 - t0)
    c.close()
    return pauses, resumes, pairs


def client_floor(n):
    """The same exchange against a forked process that answers every request
    with a canned response at once: what this client costs by itself."""
    a, b = socket.socketpair()
    canned = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    pid = os.fork()
    if pid == 0:
        a.close()
        buf = b""
        while True:
            data = b.recv(65536)
            if not data:
                os._exit(0)
            buf += data
            while b"\r\n\r\n" in buf:
                _, _, buf = buf.partition(b"\r\n\r\n")
                b.sendall(canned)
    b.close()
    c = Client.__new__(Client)
    c.sock, c.buf = a, b""
    samples = []
    for i in range(n + 200):
        t0 = time.perf_counter_ns()
        c.request("GET", "/vm")
        if i >= 200:
            samples.append(time.perf_counter_ns() - t0)
    a.close()
    os.waitpid(pid, 0)
    return samples


def build_c_client(workdir):
    """bench/api_client.c, or None when no C compiler is at hand."""
    exe = os.path.join(workdir, "api_client")
    try:
        subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", exe, os.path.join(ROOT, "bench", "api_client.c")],
                       check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"(no C client: {e})", file=sys.stderr)
        return None
    return exe


def c_samples(exe, path, mode, n):
    out = subprocess.run([exe, path, mode, str(n)], check=True, capture_output=True, text=True)
    rows = [list(map(int, line.split())) for line in out.stdout.splitlines()]
    return [list(col) for col in zip(*rows)]


def start_vm(vireo, workdir):
    kernel = os.path.join(ROOT, "target/guests/idle.elf")
    if not os.path.exists(kernel):
        subprocess.run([os.path.join(ROOT, "guests/build.sh"), os.path.join(ROOT, "target/guests"),
                        "idle"], check=True)
    if not os.path.exists(vireo):
        subprocess.run(["cargo", "build", "--release", "-p", "vireo"], cwd=ROOT, check=True)
    path = os.path.join(workdir, "api.sock")
    proc = subprocess.Popen([vireo, "run", "--kernel", kernel, "--api-socket", path,
                             "--serial", "off"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench/api.py: vireo exited early: {proc.stderr.read().decode()}")
        try:
            c = Client(path)
            status, body = c.request("GET", "/vm")
            c.close()
            if status == 200 and b'"running"' in body:
                return proc, path
        except (FileNotFoundError, ConnectionError, ConnectionRefusedError):
            pass
        time.sleep(0.01)
    proc.kill()
    sys.exit("bench/api.py: the VM did not start answering within 10 s")


def stop_vm(proc, path):
    try:
        c = Client(path)
        c.request("PUT", "/vm/power-off")
        c.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", help="API socket of a running VM (default: start one)")
    ap.add_argument("--vireo", default=os.path.join(ROOT, "target/release/vireo"))
    ap.add_argument("--requests", type=int, default=10000,
                    help="GET /vm on one keep-alive connection")
    ap.add_argument("--fresh", type=int, default=10000, help="GET /vm on fresh connections")
    ap.add_argument("--pauses", type=int, default=1000, help="pause -> resume pairs")
    args = ap.parse_args()

    proc = None
    with tempfile.TemporaryDirectory(prefix="vireo-api-bench-") as workdir:
        if args.socket:
            path = args.socket
        else:
            proc, path = start_vm(args.vireo, workdir)
        try:
            c = Client(path)
            _, info = c.request("GET", "/vm")
            c.close()
            print(f"VM: {info.decode()[:160]}")
            exe = build_c_client(workdir)
            if exe:
                print("C client (bench/api_client.c): what the VM costs")
                (ka,) = c_samples(exe, path, "keepalive", args.requests)
                report("  GET /vm, keep-alive", ka)
                (fr,) = c_samples(exe, path, "fresh", args.fresh)
                report("  GET /vm, fresh connection each", fr)
                pauses, resumes = c_samples(exe, path, "pause", args.pauses)
                report("  PUT /vm/pause", pauses)
                report("  PUT /vm/resume", resumes)
                report("  pause -> resume (both round trips)",
                       [p + r for p, r in zip(pauses, resumes)])
            floor = statistics.median(client_floor(5000)) / 1000
            print(f"Python client: what a script sees (its own floor, against a "
                  f"canned-answer process: median {floor:.1f} us)")
            report("  GET /vm, keep-alive", keep_alive_get(path, args.requests))
            report("  GET /vm, fresh connection each", fresh_get(path, args.fresh))
            pauses, resumes, pairs = pause_resume(path, args.pauses)
            report("  PUT /vm/pause", pauses)
            report("  PUT /vm/resume", resumes)
            report("  pause -> resume (both round trips)", pairs)
        finally:
            if proc:
                stop_vm(proc, path)


if __name__ == "__main__":
    main()
