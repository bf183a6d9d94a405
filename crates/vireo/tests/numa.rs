//! Guest NUMA, CPU topology, host memory binding and thread pinning end to
//! end: the real `vireo` binary on /dev/kvm, the `numa` and `smp` test
//! guests reading the ACPI tables and CPUID the VMM built, and the host's
//! own view of the process (/proc/PID/numa_maps, /proc/PID/task/*/status).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{guest, run_vireo, vireo};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn run_guest(name: &str, extra: &[&str]) -> common::RunResult {
    let path = guest(name);
    let mut args = vec!["run", "--kernel", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_vireo(&args, T)
}

/// The `numa: ` lines the guest printed, without the prefix.
fn numa_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("numa: "))
        .map(str::to_string)
        .collect()
}

/// What the guest should print for cells given as (memory MiB, vCPUs)
/// with APIC ID = vCPU index, laid out from 0 around the 3 GiB hole, and
/// the distance matrix.
fn expected(cells: &[(u64, &[u32])], distances: &[&[u8]]) -> Vec<String> {
    let mut out = vec!["srat".to_string()];
    let mut cpus: Vec<(u32, usize)> = cells
        .iter()
        .enumerate()
        .flat_map(|(node, (_, cpus))| cpus.iter().map(move |&c| (c, node)))
        .collect();
    cpus.sort();
    for (cpu, node) in cpus {
        out.push(format!("cpu apic {cpu} node {node} flags 1"));
    }
    let hole = 3u64 << 30;
    let mut at = 0u64;
    for (node, (mib, _)) in cells.iter().enumerate() {
        let mut left = mib << 20;
        while left > 0 {
            let len = if at < hole { left.min(hole - at) } else { left };
            out.push(format!("mem 0x{at:016x} 0x{len:016x} node {node} flags 1"));
            left -= len;
            at += len;
            if at == hole {
                at = 4 << 30;
            }
        }
    }
    out.push(format!("slit localities={}", distances.len()));
    for (i, row) in distances.iter().enumerate() {
        let cols: Vec<String> = row.iter().map(u8::to_string).collect();
        out.push(format!("slit row {i}: {}", cols.join(" ")));
    }
    out.push("ok".into());
    out
}

#[test]
fn the_guest_reads_two_cells_from_srat_and_slit() {
    let r = run_guest(
        "numa",
        &[
            "--cpus",
            "4",
            "--memory",
            "512M",
            "--numa",
            "cell=0,memory=256M,cpus=0,cpus=2",
            "--numa",
            "cell=1,memory=256M,cpus=1,cpus=3",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert_eq!(
        numa_lines(&r.stdout),
        expected(&[(256, &[0, 2]), (256, &[1, 3])], &[&[10, 20], &[20, 10]]),
        "{}",
        r.describe()
    );
}

#[test]
fn four_cells_with_asymmetric_distances_given_both_ways() {
    let r = run_guest(
        "numa",
        &[
            "--cpus",
            "4",
            "--memory",
            "4G",
            "--numa",
            "cell=0,memory=1G,cpus=0",
            "--numa",
            "cell=1,memory=1G,cpus=1",
            // Cell 2 straddles the MMIO hole: two memory ranges.
            "--numa",
            "cell=2,memory=1536M,cpus=2",
            "--numa",
            "cell=3,memory=512M,cpus=3",
            "--numa-distance",
            "src=0,dst=1,value=15",
            "--numa-distance",
            "src=1,dst=0,value=25",
            "--numa-distance",
            "src=2,dst=3,value=40",
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.describe());
    let want = expected(
        &[(1024, &[0]), (1024, &[1]), (1536, &[2]), (512, &[3])],
        &[
            &[10, 15, 20, 20],
            &[25, 10, 20, 20],
            &[20, 20, 10, 40],
            &[20, 20, 40, 10],
        ],
    );
    assert_eq!(numa_lines(&r.stdout), want, "{}", r.describe());
    assert!(
        r.stdout
            .contains("mem 0x0000000100000000 0x0000000020000000 node 2"),
        "{}",
        r.describe()
    );
}

#[test]
fn without_numa_there_is_no_srat() {
    let r = run_guest("numa", &["--cpus", "2"]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert_eq!(numa_lines(&r.stdout), ["no srat", "no slit", "ok"]);
}

#[test]
fn a_topology_with_gaps_gives_the_same_apic_ids_everywhere() {
    // 2 sockets of 3 cores: the core field is 2 bits wide, so socket 1's
    // cores are APIC IDs 4, 5 and 6. The MADT, the vCPUs' own LAPIC and
    // CPUID leaf 1 agree (smp reads all three), and so does the SRAT.
    let topo = [
        "--cpus",
        "6",
        "--cpu-topology",
        "sockets=2,cores=3,threads=1",
    ];
    let r = run_guest("smp", &topo);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    for (i, apic) in [0, 1, 2, 4, 5, 6].into_iter().enumerate() {
        let line = format!("smp: cpu {i} apic {apic} cpuid-apic {apic}\n");
        assert!(r.stdout.contains(&line), "{line}{}", r.describe());
    }
    assert!(r.stdout.contains("smp: ok 6 cpus"), "{}", r.describe());

    let mut args = topo.to_vec();
    args.extend([
        "--memory",
        "256M",
        "--numa",
        "cell=0,memory=128M,cpus=0-2",
        "--numa",
        "cell=1,memory=128M,cpus=3-5",
    ]);
    let r = run_guest("numa", &args);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    let lines = numa_lines(&r.stdout);
    let cpus: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("cpu "))
        .map(String::as_str)
        .collect();
    assert_eq!(
        cpus,
        [
            "cpu apic 0 node 0 flags 1",
            "cpu apic 1 node 0 flags 1",
            "cpu apic 2 node 0 flags 1",
            "cpu apic 4 node 1 flags 1",
            "cpu apic 5 node 1 flags 1",
            "cpu apic 6 node 1 flags 1",
        ]
    );

    // Threads and dies: 1 socket x 2 dies x 1 core x 2 threads.
    let r = run_guest(
        "smp",
        &[
            "--cpus",
            "4",
            "--cpu-topology",
            "sockets=1,dies=2,cores=1,threads=2",
        ],
    );
    assert!(r.stdout.contains("smp: ok 4 cpus"), "{}", r.describe());
    assert!(
        r.stdout.contains("smp: cpu 3 apic 3 cpuid-apic 3"),
        "{}",
        r.describe()
    );
}

#[test]
fn bad_placement_is_refused_with_one_line_before_anything_runs() {
    let k = guest("numa");
    let k = k.to_str().unwrap();
    for (args, why) in [
        (
            &[
                "--cpus",
                "4",
                "--cpu-topology",
                "sockets=2,cores=3,threads=1",
            ][..],
            "makes 6 vCPUs, but --cpus is 4",
        ),
        (
            &["--cpus", "1", "--cpu-topology", "sockets=1,cores=1"],
            "threads= is required",
        ),
        (
            &["--memory", "256M", "--numa", "cell=0,memory=128M,cpus=0"],
            "128 MiB of memory in all, but --memory is 256 MiB",
        ),
        (
            &[
                "--cpus",
                "2",
                "--memory",
                "128M",
                "--numa",
                "cell=0,memory=128M,cpus=0",
            ],
            "vCPU 1 is in no cell",
        ),
        (
            &["--memory", "128M", "--numa", "cell=1,memory=128M,cpus=0"],
            "cell 0 is missing",
        ),
        (
            &[
                "--memory",
                "128M",
                "--numa",
                "cell=0,memory=128M,cpus=0,host-nodes=7",
            ],
            "host node 7 does not exist",
        ),
        (
            &[
                "--memory",
                "128M",
                "--numa",
                "cell=0,memory=128M,cpus=0",
                "--numa-distance",
                "src=0,dst=0,value=20",
            ],
            "the distance from a cell to itself is 10",
        ),
        (
            &["--numa-distance", "src=0,dst=1,value=20"],
            "needs --numa cells",
        ),
        (
            // The 1 GiB pool of a test host is empty (or nearly).
            &[
                "--memory",
                "2G",
                "--memory-backend",
                "hugepages=1G",
                "--numa",
                "cell=0,memory=2G,cpus=0,host-nodes=0",
            ],
            "bound to host node 0 needs 2 huge pages of 1024 MiB there",
        ),
        (&["--vcpu-pin", "1:0"], "vCPU 1 does not exist"),
        (&["--vcpu-pin", "0:1000"], "host CPU 1000 is not one"),
        (&["--emulator-pin", "999"], "host CPU 999 is not one"),
        (&["--iothread", "id=0"], "id=0 is not a number from 1 up"),
        (&["--iothread", "id=1,cpus=999"], "host CPU 999 is not one"),
        (
            &["--iothread", "id=1", "--iothread", "id=1,cpus=0"],
            "--iothread id=1 is given twice",
        ),
        (
            &[
                "--iothread",
                "id=1",
                "--disk",
                "path=/dev/null,format=raw,iothread=2",
            ],
            "iothread=2 names no --iothread",
        ),
    ] {
        let mut cmd = vireo();
        cmd.args(["run", "--kernel", k]).args(args);
        let out = common::run_with_timeout(&mut cmd, T);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} ran the guest");
    }
}

/// A `vireo run --api-socket` process, killed on drop.
struct Vm {
    child: Child,
    socket: PathBuf,
    stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Vm {
    fn start(name: &str, args: &[&str]) -> Self {
        Self::start_until(name, args, "numa: ok")
    }

    /// Start, and return once the guest printed `ready` and the API says
    /// the VM runs.
    fn start_until(name: &str, args: &[&str], ready: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("numa");
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let mut child = vireo()
            .args(["run", "--api-socket", socket.to_str().unwrap()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().map(BufReader::new);
        let mut vm = Self {
            child,
            socket,
            stdout,
        };
        vm.wait_for_line(ready);
        // The guest runs before the API calls the VM running.
        let deadline = Instant::now() + Duration::from_secs(20);
        while vm.ok("GET", "/vm", "")["state"] != "running" {
            assert!(Instant::now() < deadline, "the VM never ran");
            std::thread::sleep(Duration::from_millis(10));
        }
        vm
    }

    fn wait_for_line(&mut self, want: &str) {
        let out = self.stdout.as_mut().unwrap();
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("output ended before {want:?}:\n{seen}\nstderr: {err}");
            }
            seen.push_str(&line);
            if line.contains(want) {
                return;
            }
        }
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match UnixStream::connect(&self.socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("connect: {e}"),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap();
        let text = response.split("\r\n\r\n").nth(1).unwrap_or("");
        let value = serde_json::from_str(text).unwrap_or(Value::Null);
        (status, value)
    }

    fn ok(&self, method: &str, path: &str, body: &str) -> Value {
        let (status, value) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {value}"
        );
        value
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The policy /proc/PID/numa_maps shows for the mapping of exactly `len`
/// bytes (guest RAM regions are the only mappings of these sizes).
fn policy_of_mapping(pid: u32, len: u64) -> String {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let start = maps
        .lines()
        .find_map(|l| {
            let range = l.split_whitespace().next()?;
            let (a, b) = range.split_once('-')?;
            let (a, b) = (
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            );
            (b - a == len).then(|| format!("{a:x}"))
        })
        .unwrap_or_else(|| panic!("no mapping of {len:#x} bytes in:\n{maps}"));
    let numa_maps = std::fs::read_to_string(format!("/proc/{pid}/numa_maps")).unwrap();
    let line = numa_maps
        .lines()
        .find(|l| l.split_whitespace().next() == Some(start.as_str()))
        .unwrap_or_else(|| panic!("{start} not in numa_maps:\n{numa_maps}"));
    line.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn each_cell_is_bound_to_its_host_node_with_its_policy() {
    // Odd sizes so each region is the only mapping of its length.
    let vm = Vm::start(
        "bind",
        &[
            "--kernel",
            guest("numa").to_str().unwrap(),
            "--cmdline",
            "spin",
            "--cpus",
            "4",
            "--memory",
            "230M",
            "--numa",
            "cell=0,memory=62M,cpus=0,host-nodes=0,policy=strict",
            "--numa",
            "cell=1,memory=58M,cpus=1,host-nodes=0,policy=preferred",
            "--numa",
            "cell=2,memory=54M,cpus=2,host-nodes=0,policy=interleave",
            "--numa",
            "cell=3,memory=56M,cpus=3,host-nodes=0,policy=restrictive",
        ],
    );
    // Cell 0 starts at guest address 0, whose first 2 MiB stay out of the
    // transparent-huge-page advice and so are a mapping of their own.
    assert_eq!(policy_of_mapping(vm.pid(), 60 << 20), "bind:0");
    assert_eq!(policy_of_mapping(vm.pid(), 58 << 20), "prefer:0");
    assert_eq!(policy_of_mapping(vm.pid(), 54 << 20), "interleave:0");
    // `restrictive` is libvirt's cgroup-only mode; `vireo run` binds.
    assert_eq!(policy_of_mapping(vm.pid(), 56 << 20), "bind:0");
    let numa = vm.ok("GET", "/vm/numa", "");
    assert_eq!(
        numa["distances"],
        serde_json::json!([
            [10, 20, 20, 20],
            [20, 10, 20, 20],
            [20, 20, 10, 20],
            [20, 20, 20, 10]
        ])
    );
    let policies: Vec<&str> = numa["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["policy"].as_str().unwrap())
        .collect();
    assert_eq!(
        policies,
        ["strict", "preferred", "interleave", "restrictive"]
    );
    assert_eq!(numa["cells"][2]["memory_bytes"], 54 << 20);
    assert_eq!(numa["cells"][2]["cpus"], serde_json::json!([2]));
    assert_eq!(numa["cells"][2]["host_nodes"], serde_json::json!([0]));
}

/// `Cpus_allowed_list` of a thread of `pid`.
fn cpus_allowed(pid: u32, tid: i64) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// The thread ids of process `pid`.
fn threads(pid: u32) -> Vec<i64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect()
}

/// A thread's name (comm).
fn thread_name(pid: u32, tid: i64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn vcpus_and_emulator_threads_run_where_pinned_and_the_api_moves_them() {
    if host_cpus() < 2 {
        eprintln!("SKIP: pinning tests need two host CPUs");
        return;
    }
    let vm = Vm::start(
        "pin",
        &[
            "--kernel",
            guest("numa").to_str().unwrap(),
            "--cmdline",
            "spin",
            "--cpus",
            "2",
            "--vcpu-pin",
            "0:1",
            "--vcpu-pin",
            "1:0-1",
            "--emulator-pin",
            "0",
        ],
    );
    let pid = vm.pid();
    let vcpus = vm.ok("GET", "/vm/vcpus", "");
    let vcpus = vcpus.as_array().unwrap().clone();
    assert_eq!(vcpus.len(), 2);
    let tid0 = vcpus[0]["tid"].as_i64().unwrap();
    let tid1 = vcpus[1]["tid"].as_i64().unwrap();
    assert_eq!(vcpus[0]["apic_id"], 0);
    assert_eq!(vcpus[1]["apic_id"], 1);
    assert_eq!(vcpus[0]["affinity"], serde_json::json!([1]));
    assert_eq!(vcpus[1]["affinity"], serde_json::json!([0, 1]));
    assert_eq!(cpus_allowed(pid, tid0), "1");
    assert_eq!(cpus_allowed(pid, tid1), "0-1");
    // Every other thread (main, API, console, and KVM's own worker, which
    // the kernel starts in the first KVM_RUN) is the emulator's.
    let tasks = threads(pid);
    for &t in tasks.iter().filter(|&&t| t != tid0 && t != tid1) {
        assert_eq!(
            cpus_allowed(pid, t),
            "0",
            "thread {t} {}",
            thread_name(pid, t)
        );
    }

    // vCPU 0 spins: it runs on CPU 1, and moves to CPU 0 when pinned there.
    let cpu_of = |vm: &Vm, i: usize| vm.ok("GET", "/vm/vcpus", "")[i]["cpu"].as_u64().unwrap();
    let wait_cpu = |vm: &Vm, i: usize, want: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while cpu_of(vm, i) != want {
            assert!(
                Instant::now() < deadline,
                "vCPU {i} never ran on CPU {want}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_cpu(&vm, 0, 1);
    let t0 = vm.ok("GET", "/vm/vcpus", "")[0]["cpu_time_ns"]
        .as_u64()
        .unwrap();
    vm.ok("PUT", "/vm/vcpu-pin", r#"{"vcpu":0,"cpus":[0]}"#);
    assert_eq!(cpus_allowed(pid, tid0), "0");
    wait_cpu(&vm, 0, 0);
    // CPU time counts in scheduler ticks, and a loaded host may not have
    // run the vCPU for one yet: wait for it, boundedly.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t1 = vm.ok("GET", "/vm/vcpus", "")[0]["cpu_time_ns"]
            .as_u64()
            .unwrap();
        if t1 > t0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a spinning vCPU uses CPU time ({t0} then {t1})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The emulator moves; the vCPUs stay; a thread started later inherits
    // the emulator pin.
    vm.ok("PUT", "/vm/emulator-pin", r#"{"cpus":[1]}"#);
    // Every thread but the vCPUs moves, KVM's worker too.
    for &t in tasks.iter().filter(|&&t| t != tid0 && t != tid1) {
        assert_eq!(
            cpus_allowed(pid, t),
            "1",
            "thread {t} {}",
            thread_name(pid, t)
        );
    }
    assert_eq!(cpus_allowed(pid, tid0), "0");
    assert_eq!(cpus_allowed(pid, tid1), "0-1");
    // Connections held open get server threads of their own: idle ones
    // (pinned above) first, then new ones the pinned accept thread starts.
    let before = threads(pid);
    let _held: Vec<UnixStream> = (0..8)
        .map(|_| UnixStream::connect(&vm.socket).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let new = loop {
        let new: Vec<i64> = threads(pid)
            .into_iter()
            .filter(|t| !before.contains(t))
            .collect();
        if !new.is_empty() {
            break new;
        }
        assert!(
            Instant::now() < deadline,
            "no thread for the new connection"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    for t in new {
        assert_eq!(cpus_allowed(pid, t), "1", "new thread {t}");
    }

    // Refusals: one line each, nothing changed.
    let (status, body) = vm.call("PUT", "/vm/vcpu-pin", r#"{"vcpu":2,"cpus":[0]}"#);
    assert_eq!(status, 404, "{body}");
    let (status, body) = vm.call("PUT", "/vm/vcpu-pin", r#"{"vcpu":0,"cpus":[]}"#);
    assert_eq!(status, 400, "{body}");
    let (status, body) = vm.call("PUT", "/vm/emulator-pin", r#"{"cpus":[1000]}"#);
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("1000"), "{body}");
    assert_eq!(cpus_allowed(pid, tid0), "0");
    let numa = vm.ok("GET", "/vm/numa", "");
    assert_eq!(numa, serde_json::json!({"cells": [], "distances": []}));
}

/// libvirt's `iothreadpin`: a disk on an I/O thread pinned to CPU 1 runs
/// its worker (`virtio-blk`) and its I/O threads (`disk-io-N`) there while
/// the emulator's threads are on CPU 0, and they stay when the emulator
/// pin moves.
#[test]
fn a_disk_on_a_pinned_iothread_runs_its_threads_there() {
    if host_cpus() < 2 {
        eprintln!("SKIP: pinning tests need two host CPUs");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("numa");
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("iothread.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let disk = format!("path={},format=raw,iothread=1", image.display());
    let vm = Vm::start_until(
        "iothread",
        &[
            "--kernel",
            guest("virtio").to_str().unwrap(),
            "--cmdline",
            "blk wait-power-button=60000",
            "--disk",
            &disk,
            "--iothread",
            "id=1,cpus=1",
            "--iothread",
            "id=2",
            "--emulator-pin",
            "0",
        ],
        "virtio-blk: ok",
    );
    let pid = vm.pid();
    let vcpu = vm.ok("GET", "/vm/vcpus", "")[0]["tid"].as_i64().unwrap();
    let on_iothread = |name: &str| name == "virtio-blk" || name.starts_with("disk-io-");
    let check = |emulator: &str| {
        let tasks: Vec<(i64, String)> = threads(pid)
            .into_iter()
            .map(|t| (t, thread_name(pid, t)))
            .collect();
        let placed: Vec<i64> = tasks
            .iter()
            .filter(|(_, n)| on_iothread(n))
            .map(|(t, _)| *t)
            .collect();
        assert!(
            placed.len() >= 2,
            "the disk's worker and I/O threads run: {tasks:?}"
        );
        for (t, name) in &tasks {
            // io_uring's kernel workers (iou-wrk-TID) are the submitting
            // thread's and share its affinity.
            let owner = name
                .strip_prefix("iou-wrk-")
                .and_then(|p| p.parse().ok())
                .unwrap_or(*t);
            let want = if owner == vcpu {
                continue;
            } else if placed.contains(&owner) {
                "1"
            } else {
                emulator
            };
            assert_eq!(cpus_allowed(pid, *t), want, "thread {t} {name}");
        }
    };
    check("0");
    vm.ok("PUT", "/vm/emulator-pin", r#"{"cpus":[0,1]}"#);
    check("0-1");
}

/// Node 0's pool of 2 MiB pages.
const NODE0_POOL_2M: &str = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB";

/// Adds pages to node 0's 2 MiB pool; gives them back on drop.
struct NodeHugePages {
    before: u64,
}

impl NodeHugePages {
    fn reserve(pages: u64) -> Option<Self> {
        let count = || -> Option<u64> {
            std::fs::read_to_string(format!("{NODE0_POOL_2M}/nr_hugepages"))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let before = count()?;
        let guard = Self { before };
        std::fs::write(
            format!("{NODE0_POOL_2M}/nr_hugepages"),
            (before + pages).to_string(),
        )
        .ok()?;
        (count()? == before + pages).then_some(guard)
    }
}

impl Drop for NodeHugePages {
    fn drop(&mut self) {
        let _ = std::fs::write(
            format!("{NODE0_POOL_2M}/nr_hugepages"),
            self.before.to_string(),
        );
    }
}

#[test]
fn a_bound_cell_takes_its_huge_pages_from_its_node() {
    let Some(_pool) = NodeHugePages::reserve(32) else {
        eprintln!("SKIP: cannot add 32 huge pages to node 0's pool (not root, or no memory)");
        return;
    };
    let vm = Vm::start(
        "huge",
        &[
            "--kernel",
            guest("numa").to_str().unwrap(),
            "--cmdline",
            "spin",
            "--memory",
            "64M",
            "--memory-backend",
            "hugepages=2M,prealloc=on",
            "--numa",
            "cell=0,memory=64M,cpus=0,host-nodes=0,policy=strict",
        ],
    );
    let pid = vm.pid();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/numa_maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.contains(" huge ") && l.contains("bind:0"))
        .unwrap_or_else(|| panic!("no huge page mapping bound to node 0:\n{maps}"));
    assert!(line.contains(" N0=32 "), "{line}");
}

#[test]
fn vireo_vm_shows_and_moves_vcpus_and_shows_cells() {
    let vm = Vm::start(
        "cli",
        &[
            "--kernel",
            guest("numa").to_str().unwrap(),
            "--cmdline",
            "spin",
            "--cpus",
            "2",
            "--memory",
            "256M",
            "--numa",
            "cell=0,memory=128M,cpus=0,host-nodes=0",
            "--numa",
            "cell=1,memory=128M,cpus=1",
            "--numa-distance",
            "src=0,dst=1,value=30",
        ],
    );
    let sock = vm.socket.to_str().unwrap().to_string();
    let cli = |args: &[&str]| {
        let mut cmd = vireo();
        cmd.args(["vm", "--socket", &sock]).args(args);
        let out = common::run_with_timeout(&mut cmd, T);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&["vcpu-pin", "1", "0"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "vCPU 1 pinned to host CPUs 0\n");
    let (code, out, _) = cli(&["vcpus", "--json"]);
    assert_eq!(code, Some(0));
    let vcpus: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(vcpus[1]["affinity"], serde_json::json!([0]));
    let tid = vcpus[1]["tid"].as_i64().unwrap();
    assert_eq!(cpus_allowed(vm.pid(), tid), "0");
    let (_, out, _) = cli(&["vcpus"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["VCPU", "APIC", "TID", "CPU", "AFFINITY", "CPU-TIME"]
    );
    assert_eq!(out.lines().count(), 3, "{out}");
    let (code, out, _) = cli(&["numa"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        "cell 0: 128 MiB, vCPUs 0, host nodes 0 (strict)\n\
         cell 1: 128 MiB, vCPUs 1\n\
         distances:\n    0:  10  30\n    1:  30  10\n"
    );
    let (code, _, err) = cli(&["vcpu-pin", "2", "0"]);
    assert_eq!(code, Some(1));
    assert_eq!(err, "vireo: vCPU 2 does not exist (the VM has 2)\n");
    let (code, _, err) = cli(&["emulator-pin", "0-x"]);
    assert_eq!(code, Some(2), "{err}");
}
