//! The per-VM control API end to end: a real `vireo run --api-socket`
//! process, real guests on /dev/kvm, and HTTP over the real unix socket.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{guest, vireo, TapNamespace};
use serde_json::Value;

/// A `vireo run --api-socket` process, killed on drop.
struct Vm {
    child: Child,
    socket: PathBuf,
    stdout: Option<std::process::ChildStdout>,
}

impl Vm {
    fn start(name: &str, args: &[&str]) -> Self {
        Self::start_in(None, name, args)
    }

    /// Start the VM inside network namespace `ns`, if given.
    fn start_in(ns: Option<&str>, name: &str, args: &[&str]) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("api");
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_vireo")]);
                c
            }
            None => vireo(),
        };
        let mut child = cmd
            .args(["run", "--api-socket", socket.to_str().unwrap()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "the API socket never appeared");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("vireo exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let stdout = child.stdout.take();
        Self {
            child,
            socket,
            stdout,
        }
    }

    /// One request; returns (status, parsed body or Null).
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let status: u16 = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad response: {response:?}"));
        let text = response.split("\r\n\r\n").nth(1).unwrap_or("");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        (status, value)
    }

    fn ok(&self, method: &str, path: &str, body: Option<&str>) -> Value {
        let (status, value) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {value}"
        );
        value
    }

    /// Wait until the VM reports `running` (the socket exists before the
    /// VM has booted).
    fn wait_running(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.ok("GET", "/vm", None)["state"] != "running" {
            assert!(Instant::now() < deadline, "the VM never ran");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Read guest output until a line contains `want`.
    fn wait_for_line(&mut self, want: &str) -> String {
        let out = self.stdout.take().expect("stdout already consumed");
        let mut reader = BufReader::new(out);
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("output ended before {want:?}:\n{seen}");
            }
            seen.push_str(&line);
            if line.contains(want) {
                self.stdout = Some(reader.into_inner());
                return seen;
            }
        }
    }

    fn wait_exit(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut rest = String::new();
                if let Some(mut out) = self.stdout.take() {
                    let _ = out.read_to_string(&mut rest);
                }
                return (status.code(), rest);
            }
            assert!(Instant::now() < deadline, "vireo did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn image(name: &str, mib: u64) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("api");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.img"));
    let _ = std::fs::remove_file(&path);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    path
}

fn counter(vm: &Vm, device: &str, name: &str) -> u64 {
    vm.ok("GET", "/vm/counters", None)["devices"][device][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {device}.{name}"))
}

#[test]
fn an_unconfigured_vm_is_configured_and_booted_over_the_api() {
    let mut vm = Vm::start("unconfigured", &[]);
    let mode = std::fs::metadata(&vm.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode");
    let info = vm.ok("GET", "/vm", None);
    assert_eq!(info["state"], "not_configured");
    let (status, err) = vm.call("PUT", "/vm/boot", None);
    assert_eq!(status, 409, "{err}");
    assert!(err["error"].as_str().unwrap().contains("no configuration"));
    // A configuration that cannot work is refused, naming the problem.
    let (status, err) = vm.call("PUT", "/vm/config", Some(r#"{"kernel":"/nonexistent/k"}"#));
    assert_eq!(status, 422);
    assert!(
        err["error"].as_str().unwrap().contains("/nonexistent/k"),
        "{err}"
    );
    let (status, err) = vm.call("PUT", "/vm/config", Some(r#"{"kernel": 5"#));
    assert_eq!(status, 400, "{err}");
    let disk = image("unconfigured", 8);
    let config = serde_json::json!({
        "kernel": guest("virtio"),
        "cmdline": "blk rng blk-count=4",
        "cpus": 2,
        "memory_mib": 256,
        "disks": [{"path": disk, "serial": "api-disk"}],
        "rng": true,
    });
    vm.ok("PUT", "/vm/config", Some(&config.to_string()));
    assert_eq!(vm.ok("GET", "/vm", None)["state"], "configured");
    vm.ok("PUT", "/vm/boot", None);
    let (status, _) = vm.call("PUT", "/vm/boot", None);
    assert_eq!(status, 409, "booting twice");
    let (status, _) = vm.call("PUT", "/vm/config", Some(&config.to_string()));
    assert_eq!(status, 409, "configuring a running VM");
    let out = vm.wait_for_line("virtio: done");
    assert!(out.contains("serial=api-disk"), "{out}");
    assert!(
        out.contains("virtio-blk: ok capacity=16384 wrote=4"),
        "{out}"
    );
    assert!(out.contains("virtio-rng: ok"), "{out}");
    let (code, _) = vm.wait_exit();
    assert_eq!(code, Some(0));
}

#[test]
fn pause_holds_a_busy_guest_and_resume_lets_it_go_on() {
    let disk = image("busy", 64);
    let disk_arg = format!("path={}", disk.display());
    let kernel = guest("virtio");
    let vm = Vm::start(
        "busy",
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--disk",
            &disk_arg,
            "--cmdline",
            "blk blk-count=0 bench-rand-ops=100000000",
        ],
    );
    vm.wait_running();
    // Wait until the guest is hammering the disk.
    let deadline = Instant::now() + Duration::from_secs(20);
    while counter(&vm, "disk0", "read_requests") < 100 {
        assert!(Instant::now() < deadline, "the guest never got busy");
        std::thread::sleep(Duration::from_millis(20));
    }
    vm.ok("PUT", "/vm/pause", None);
    assert_eq!(vm.ok("GET", "/vm", None)["state"], "paused");
    let (status, err) = vm.call("PUT", "/vm/pause", None);
    assert_eq!(status, 409, "{err}");
    let held = counter(&vm, "disk0", "read_requests");
    let exits = vm.ok("GET", "/vm/counters", None)["vcpus"]["0"]["mmio_write"].clone();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        counter(&vm, "disk0", "read_requests"),
        held,
        "I/O went on while paused"
    );
    assert_eq!(
        vm.ok("GET", "/vm/counters", None)["vcpus"]["0"]["mmio_write"],
        exits,
        "the vCPU ran while paused"
    );
    vm.ok("PUT", "/vm/resume", None);
    let (status, _) = vm.call("PUT", "/vm/resume", None);
    assert_eq!(status, 409, "resuming a running VM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&vm, "disk0", "read_requests") <= held {
        assert!(Instant::now() < deadline, "no I/O after resume");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The API answers while the guest saturates the device.
    let start = Instant::now();
    for _ in 0..50 {
        vm.ok("GET", "/vm", None);
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    vm.ok("PUT", "/vm/power-off", None);
    let (code, _) = vm.wait_exit();
    assert_eq!(code, Some(0));
}

#[test]
fn devices_are_added_resized_and_removed_while_the_vm_runs() {
    let idle = guest("idle");
    let vm = Vm::start("devices", &["--kernel", idle.to_str().unwrap()]);
    vm.wait_running();
    let extra = image("extra", 8);
    let body = serde_json::json!({"path": extra, "id": "extra"}).to_string();
    let added = vm.ok("PUT", "/vm/add-disk", Some(&body));
    assert_eq!(added["id"], "extra");
    assert_eq!(added["pci"], "00:01.0");
    let (status, err) = vm.call("PUT", "/vm/add-disk", Some(&body));
    assert_eq!(status, 409, "a second device with the same id: {err}");
    let devices = vm.ok("GET", "/vm", None)["devices"].clone();
    assert_eq!(devices[0]["kind"], "virtio-blk");
    assert_eq!(devices[0]["details"]["size_bytes"], "8388608");
    vm.ok(
        "PUT",
        "/vm/resize-disk",
        Some(r#"{"id":"extra","size_bytes":16777216}"#),
    );
    assert_eq!(std::fs::metadata(&extra).unwrap().len(), 16 << 20);
    let (status, _) = vm.call(
        "PUT",
        "/vm/resize-disk",
        Some(r#"{"id":"extra","size_bytes":1000}"#),
    );
    assert_eq!(status, 400);
    let (status, _) = vm.call(
        "PUT",
        "/vm/resize-disk",
        Some(r#"{"id":"nope","size_bytes":4096}"#),
    );
    assert_eq!(status, 404);
    let (status, _) = vm.call("PUT", "/vm/remove-device", Some(r#"{"id":"nope"}"#));
    assert_eq!(status, 404);
    let (status, err) = vm.call(
        "PUT",
        "/vm/add-disk",
        Some(r#"{"path":"/nonexistent.img"}"#),
    );
    assert_eq!(status, 422, "{err}");
}

#[test]
fn reset_boots_the_guest_again_and_power_off_ends_it() {
    let idle = guest("idle");
    let mut vm = Vm::start("reset", &["--kernel", idle.to_str().unwrap()]);
    vm.wait_for_line("idle: waiting");
    vm.wait_running();
    // A disk plugged in while it runs is still there after the reset.
    let disk = image("reset", 4);
    let body = serde_json::json!({"path": disk, "id": "kept"}).to_string();
    vm.ok("PUT", "/vm/add-disk", Some(&body));
    vm.ok("PUT", "/vm/reset", None);
    vm.wait_for_line("idle: waiting");
    vm.wait_running();
    let devices = vm.ok("GET", "/vm", None)["devices"].clone();
    assert_eq!(devices[0]["id"], "kept", "{devices}");
    vm.ok("PUT", "/vm/power-off", None);
    let (code, _) = vm.wait_exit();
    assert_eq!(code, Some(0));
}

#[test]
fn malformed_requests_never_disturb_the_vm() {
    let idle = guest("idle");
    let vm = Vm::start("malformed", &["--kernel", idle.to_str().unwrap()]);
    vm.wait_running();
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /vm HTTP/9.9\r\n\r\n",
        b"PUT /vm/config HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n{",
        b"PUT /vm/add-disk HTTP/1.1\r\nContent-Length: 3\r\n\r\n{{{",
        b"\x00\x01\x02\xff\r\n\r\n",
    ] {
        let mut s = UnixStream::connect(&vm.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(junk);
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("HTTP/1.1 4"), "{junk:?} got {text:?}");
    }
    // A client that stalls mid-request holds nobody else up.
    let mut stalled = UnixStream::connect(&vm.socket).unwrap();
    stalled
        .write_all(b"PUT /vm/pause HTTP/1.1\r\nContent-Le")
        .unwrap();
    let start = Instant::now();
    assert_eq!(vm.ok("GET", "/vm", None)["state"], "running");
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(stalled);
    // Concurrent requests are each answered.
    let socket = vm.socket.clone();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                s.write_all(b"GET /vm HTTP/1.1\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut reply = String::new();
                s.read_to_string(&mut reply).unwrap();
                reply.starts_with("HTTP/1.1 200")
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap());
    }
    assert_eq!(vm.ok("GET", "/vm", None)["state"], "running");
}

#[test]
fn a_hot_plugged_disk_is_found_used_and_ejected_by_the_guest() {
    let kernel = guest("virtio");
    let mut vm = Vm::start(
        "hotplug",
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            // A third event is awaited (and never sent), so the VM is
            // still up while the test looks at it after the removal.
            "blk blk-count=3 wait-hotplug=30000 hotplug-events=3",
        ],
    );
    vm.wait_running();
    // The guest names blk but has none at boot: this line says its boot
    // scan is over and it waits for hot-plug events.
    vm.wait_for_line("virtio-blk: FAIL not found");
    let disk = image("hotplug", 8);
    let body = serde_json::json!({"path": disk, "id": "hot", "serial": "hot-disk"}).to_string();
    let added = vm.ok("PUT", "/vm/add-disk", Some(&body));
    let out = vm.wait_for_line("virtio-blk: ok");
    assert!(
        out.contains(&format!(
            "virtio: hotplug added {} vendor 1af4 device 1042 blk",
            added["pci"].as_str().unwrap()
        )),
        "{out}"
    );
    assert!(out.contains("serial=hot-disk"), "{out}");
    assert!(
        out.contains("virtio-blk: ok capacity=16384 wrote=3"),
        "{out}"
    );
    vm.ok("PUT", "/vm/remove-device", Some(r#"{"id":"hot"}"#));
    let out = vm.wait_for_line("virtio: hotplug gone");
    assert!(out.contains("virtio: hotplug removed"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !vm.ok("GET", "/vm", None)["devices"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the ejected disk stayed on the bus"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    vm.ok("PUT", "/vm/power-off", None);
    let (code, rest) = vm.wait_exit();
    assert_eq!(code, Some(0), "{rest}");
}

#[test]
fn shutdown_presses_the_power_button_and_the_guest_powers_off() {
    let kernel = guest("virtio");
    let mut vm = Vm::start(
        "shutdown",
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "rng wait-power-button=30000",
            "--rng",
        ],
    );
    vm.wait_running();
    vm.wait_for_line("virtio-rng: ok");
    vm.ok("PUT", "/vm/pause", None);
    let (status, err) = vm.call("PUT", "/vm/shutdown", None);
    assert_eq!(status, 409, "shutdown of a paused VM: {err}");
    vm.ok("PUT", "/vm/resume", None);
    vm.ok("PUT", "/vm/shutdown", None);
    let (code, rest) = vm.wait_exit();
    assert_eq!(code, Some(0));
    assert!(rest.contains("virtio: power button\n"), "{rest}");
    assert!(!rest.contains("timeout"), "{rest}");
}

#[test]
fn a_hot_plugged_network_card_reaches_a_peer() {
    let Some(net) = TapNamespace::new("h", false) else {
        return;
    };
    let kernel = guest("virtio");
    let mut vm = Vm::start_in(
        Some(&net.ns),
        "hotnet",
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "net pings=2 wait-hotplug=30000",
        ],
    );
    vm.wait_running();
    vm.wait_for_line("virtio-net: FAIL not found");
    let body = serde_json::json!({"id": "hotnet", "tap": net.tap}).to_string();
    let added = vm.ok("PUT", "/vm/add-net", Some(&body));
    // Asked now: once the guest is done it powers off and the VM is gone.
    let info = vm.ok("GET", "/vm", None);
    assert_eq!(info["devices"][0]["details"]["tap"], net.tap.as_str());
    let out = vm.wait_for_line("virtio-net: ok arp");
    assert!(
        out.contains(&format!(
            "virtio: hotplug added {} vendor 1af4 device 1041 net",
            added["pci"].as_str().unwrap()
        )),
        "{out}"
    );
    assert!(out.contains("icmp 2/2"), "{out}");
    let (code, rest) = vm.wait_exit();
    assert_eq!(code, Some(0), "{rest}");
}

/// Send `SIGTERM` to the VMM and wait for it to end.
fn terminate(vm: Vm) -> Option<i32> {
    // SAFETY: kill(2) on our own child's pid; it has not been reaped.
    let rc = unsafe { libc::kill(vm.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    vm.wait_exit().0
}

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_never_freezes_the_api_or_sigterm() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("api");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("kernel.fifo");
    mkfifo(&fifo);
    // A FIFO as kernel or initrd is refused at once, naming the field.
    let vm = Vm::start("fifo-config", &[]);
    for field in ["kernel", "initrd"] {
        let mut body = serde_json::json!({"kernel": guest("idle")});
        body[field] = serde_json::json!(fifo);
        let t = Instant::now();
        let (status, err) = vm.call("PUT", "/vm/config", Some(&body.to_string()));
        assert_eq!(status, 422, "{err}");
        let msg = err["error"].as_str().unwrap();
        assert!(msg.starts_with(&format!("{field} ")), "{msg}");
        assert!(msg.contains("FIFO"), "{msg}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(terminate(vm), Some(0));

    // An image whose backing file is a FIFO: opening it may block (the
    // block layer decides); it must hold nobody else.
    let backing = dir.join("backing.fifo");
    mkfifo(&backing);
    let evil = dir.join("evil.qcow2");
    let _ = std::fs::remove_file(&evil);
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b"])
        .args([&backing, &evil])
        .arg("64M")
        .status()
        .expect("qemu-img (qemu-utils) is needed to make the hostile image");
    assert!(made.success());
    let idle = guest("idle");
    let vm = Vm::start("fifo-disk", &["--kernel", idle.to_str().unwrap()]);
    vm.wait_running();
    let socket = vm.socket.clone();
    let body = serde_json::json!({"path": evil, "readonly": true}).to_string();
    let _plug = std::thread::spawn(move || {
        // Whatever it answers (if it ever does) is not the point here.
        let mut s = UnixStream::connect(&socket).unwrap();
        let _ = write!(
            s,
            "PUT /vm/add-disk HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    for _ in 0..5 {
        assert_eq!(vm.ok("GET", "/vm", None)["state"], "running");
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A FIFO named as the disk itself is refused at once.
    let fifo_disk = dir.join("disk.fifo");
    mkfifo(&fifo_disk);
    let body = serde_json::json!({"path": fifo_disk}).to_string();
    let (status, err) = vm.call("PUT", "/vm/add-disk", Some(&body));
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("is a FIFO"),
        "{err}"
    );
    // A disk that opens normally is still plugged meanwhile.
    let fine = image("fifo-neighbour", 4);
    let added = vm.ok(
        "PUT",
        "/vm/add-disk",
        Some(&serde_json::json!({"path": fine}).to_string()),
    );
    assert!(added["id"].is_string(), "{added}");
    // The stuck open holds no part of the VM: a reset boots it again with
    // the plugged disk (whose image lock the old boot must have let go).
    vm.ok("PUT", "/vm/reset", None);
    let info = vm.ok("GET", "/vm", None);
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(info["devices"][0]["id"], added["id"], "{info}");
    let t = Instant::now();
    assert_eq!(terminate(vm), Some(0));
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_request_right_after_reset_acts_on_the_vm() {
    let idle = guest("idle");
    let vm = Vm::start("reset-race", &["--kernel", idle.to_str().unwrap()]);
    vm.wait_running();
    for i in 0..25 {
        // Back to back on one connection: the pause is read the moment
        // the reset is answered.
        let mut s = UnixStream::connect(&vm.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(
            b"PUT /vm/reset HTTP/1.1\r\n\r\nPUT /vm/pause HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut replies = String::new();
        s.read_to_string(&mut replies).unwrap();
        let statuses: Vec<&str> = replies
            .match_indices("HTTP/1.1 ")
            .map(|(at, _)| &replies[at + 9..at + 12])
            .collect();
        assert_eq!(statuses, ["204", "204"], "round {i}: {replies}");
        assert_eq!(vm.ok("GET", "/vm", None)["state"], "paused", "round {i}");
        vm.ok("PUT", "/vm/resume", None);
    }
    // And a power-off right after a reset ends the VM.
    vm.ok("PUT", "/vm/reset", None);
    vm.ok("PUT", "/vm/power-off", None);
    let (code, _) = vm.wait_exit();
    assert_eq!(code, Some(0));
}

#[test]
fn requests_during_a_guests_own_reboots_wait_for_it() {
    // The guest resets itself as soon as it boots; with --reboot the VM
    // spends much of its time between a stop and the next boot.
    let reset = guest("reset");
    let vm = Vm::start(
        "reboot-loop",
        &["--kernel", reset.to_str().unwrap(), "--reboot"],
    );
    vm.wait_running();
    for i in 0..25 {
        let (status, err) = vm.call("PUT", "/vm/pause", None);
        assert_eq!(status, 204, "round {i}: {err}");
        let (status, err) = vm.call("PUT", "/vm/resume", None);
        assert_eq!(status, 204, "round {i}: {err}");
    }
    vm.ok("PUT", "/vm/power-off", None);
    let (code, _) = vm.wait_exit();
    assert_eq!(code, Some(0));
}

#[test]
fn two_boots_at_once_are_one_boot() {
    let idle = guest("idle");
    let config = serde_json::json!({"kernel": idle}).to_string();
    for round in 0..3 {
        let vm = Vm::start(&format!("boot-race-{round}"), &[]);
        vm.ok("PUT", "/vm/config", Some(&config));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
        let vm = std::sync::Arc::new(vm);
        let calls: Vec<_> = [
            ("PUT", "/vm/boot"),
            ("PUT", "/vm/boot"),
            ("PUT", "/vm/config"),
        ]
        .into_iter()
        .map(|(method, path)| {
            let (vm, barrier, config) = (vm.clone(), barrier.clone(), config.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let body = (path == "/vm/config").then_some(config.as_str());
                vm.call(method, path, body).0
            })
        })
        .collect();
        let statuses: Vec<u16> = calls.into_iter().map(|t| t.join().unwrap()).collect();
        let boots = &statuses[..2];
        assert_eq!(
            boots.iter().filter(|&&s| s == 204).count(),
            1,
            "round {round}: {statuses:?}"
        );
        assert!(boots.contains(&409), "round {round}: {statuses:?}");
        // The configuration sent alongside was either taken before the
        // boot (204) or refused (409), never acknowledged and dropped.
        assert!([204, 409].contains(&statuses[2]), "{statuses:?}");
        assert_eq!(vm.ok("GET", "/vm", None)["state"], "running");
    }
}

#[test]
fn machine_flags_are_defaults_for_an_api_configuration() {
    let flags = [
        "--memory",
        "512M",
        "--cpus",
        "2",
        "--cmdline",
        "from-the-flag",
        "--reboot",
    ];
    let mut vm = Vm::start("flag-defaults", &flags);
    // A guest that resets itself: with --reboot honoured it boots again.
    let config = serde_json::json!({"kernel": guest("reset")}).to_string();
    vm.ok("PUT", "/vm/config", Some(&config));
    vm.ok("PUT", "/vm/boot", None);
    vm.wait_for_line("reset: booted");
    vm.wait_for_line("reset: booted");
    let info = vm.ok("GET", "/vm", None);
    assert_eq!(info["cpus"], 2, "{info}");
    assert_eq!(info["memory_bytes"], 512u64 << 20, "{info}");
    assert_eq!(info["cmdline"], "from-the-flag", "{info}");
}

#[test]
fn shrinking_a_disk_must_be_asked_for() {
    let idle = guest("idle");
    let vm = Vm::start("shrink", &["--kernel", idle.to_str().unwrap()]);
    vm.wait_running();
    let disk = image("shrink", 8);
    let body = serde_json::json!({"path": disk, "id": "d"}).to_string();
    vm.ok("PUT", "/vm/add-disk", Some(&body));
    let (status, err) = vm.call(
        "PUT",
        "/vm/resize-disk",
        Some(r#"{"id":"d","size_bytes":4194304}"#),
    );
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("\"shrink\": true"),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(&disk).unwrap().len(),
        8 << 20,
        "data lost"
    );
    vm.ok(
        "PUT",
        "/vm/resize-disk",
        Some(r#"{"id":"d","size_bytes":4194304,"shrink":true}"#),
    );
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 4 << 20);
    // Relative paths mean nothing to the VMM: refused, naming the field.
    let (status, err) = vm.call("PUT", "/vm/add-disk", Some(r#"{"path":"shrink.img"}"#));
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]
        .as_str()
        .unwrap()
        .contains("path shrink.img is a relative path"));
}

#[test]
fn sigterm_ends_the_vmm_in_every_state() {
    let idle = guest("idle");
    let kernel = idle.to_str().unwrap();
    // Paused.
    let vm = Vm::start("term-paused", &["--kernel", kernel]);
    vm.wait_running();
    vm.ok("PUT", "/vm/pause", None);
    assert_eq!(terminate(vm), Some(0));
    // Configured, never booted.
    let vm = Vm::start("term-configured", &[]);
    let config = serde_json::json!({"kernel": idle}).to_string();
    vm.ok("PUT", "/vm/config", Some(&config));
    assert_eq!(terminate(vm), Some(0));
    // Just after a reset (the VM has booted again).
    let vm = Vm::start("term-reset", &["--kernel", kernel]);
    vm.wait_running();
    vm.ok("PUT", "/vm/reset", None);
    assert_eq!(terminate(vm), Some(0));
}

/// `--paused` holds the vCPUs from before their first instruction: the
/// idle guest, whose first act is to print on COM1, prints nothing and
/// exits to the VMM not once until it is resumed.
#[test]
fn a_paused_start_runs_no_guest_instruction_until_resumed() {
    let idle = guest("idle");
    let mut vm = Vm::start(
        "paused-start",
        &["--kernel", idle.to_str().unwrap(), "--paused"],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while vm.ok("GET", "/vm", None)["state"] != "paused" {
        assert!(Instant::now() < deadline, "the VM never came up paused");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let counters = vm.ok("GET", "/vm/counters", None);
    for (reason, count) in counters["vcpus"]["0"].as_object().unwrap() {
        // A paused vCPU may have been kicked (interrupted) but never ran.
        if reason != "interrupted" {
            assert_eq!(count, 0, "vcpu0 {reason} exits while paused: {counters}");
        }
    }
    let (status, body) = vm.call("PUT", "/vm/pause", None);
    assert_eq!(status, 409, "{body}");
    vm.ok("PUT", "/vm/resume", None);
    assert_eq!(vm.ok("GET", "/vm", None)["state"], "running");
    vm.wait_for_line("idle: waiting");
}

#[test]
fn paused_needs_the_api_socket() {
    let idle = guest("idle");
    let r = common::run_vireo(
        &["run", "--kernel", idle.to_str().unwrap(), "--paused"],
        Duration::from_secs(10),
    );
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert_eq!(
        r.stderr,
        "vireo: --paused needs --api-socket (nothing else could resume the VM)\n"
    );
}

#[test]
fn without_a_kernel_the_boot_a_client_asks_for_starts_paused() {
    let idle = guest("idle");
    let vm = Vm::start("paused-config", &["--paused", "--serial", "off"]);
    let config = format!(r#"{{"kernel":"{}"}}"#, idle.display());
    vm.ok("PUT", "/vm/config", Some(&config));
    vm.ok("PUT", "/vm/boot", None);
    assert_eq!(vm.ok("GET", "/vm", None)["state"], "paused");
    vm.ok("PUT", "/vm/resume", None);
    assert_eq!(vm.ok("GET", "/vm", None)["state"], "running");
    assert!(vm.ok("GET", "/vm/counters", None)["vcpus"]["0"].is_object());
}

#[test]
fn a_full_disk_pauses_the_vm_and_resume_finishes_the_write() {
    if !common::is_root() {
        testkit::skip("mounting a small tmpfs needs root");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("api-full");
    let fs = common::SmallFs::mount(dir, 512);
    let img = fs.0.join("thin.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let filler = fs.fill();
    let disk = format!("path={},format=raw,werror=enospc", img.display());
    let kernel = guest("virtio");
    let mut vm = Vm::start(
        "full",
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "blk blk-first=8 blk-count=4",
            "--disk",
            &disk,
        ],
    );
    // The first write meets the full file system: the VM stops, saying why.
    let deadline = Instant::now() + Duration::from_secs(20);
    let info = loop {
        let info = vm.ok("GET", "/vm", None);
        if info["state"] == "paused" {
            break info;
        }
        assert!(Instant::now() < deadline, "the VM never paused: {info}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let why = info["io_error"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("disk disk0: ") && why.contains("No space left on device"),
        "{info}"
    );
    assert!(counter(&vm, "disk0", "held_requests") >= 1);
    assert_eq!(counter(&vm, "disk0", "errors"), 0);
    // Space comes back; resume sends the held write again and the guest
    // never saw an error.
    std::fs::remove_file(&filler).unwrap();
    vm.ok("PUT", "/vm/resume", None);
    let seen = vm.wait_for_line("virtio-blk: ok");
    assert!(!seen.contains("FAIL"), "{seen}");
    let (code, _) = vm.wait_exit();
    assert_eq!(code, Some(0), "{seen}");
    let data = std::fs::read(&img).unwrap();
    assert_eq!(&data[8 * 512..8 * 512 + 8], &8u64.to_le_bytes());
    assert_eq!(&data[11 * 512..11 * 512 + 8], &11u64.to_le_bytes());
}

#[test]
fn a_stop_policy_needs_the_api_and_report_gives_the_guest_the_error() {
    let kernel = guest("virtio");
    let img = image("policy", 1);
    let disk = format!("path={},format=raw,werror=stop", img.display());
    let r = common::run_vireo(
        &["run", "--kernel", kernel.to_str().unwrap(), "--disk", &disk],
        Duration::from_secs(20),
    );
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(r.stderr.contains("need --api-socket"), "{}", r.describe());
    let bad = format!("path={},format=raw,rerror=enospc", img.display());
    let r = common::run_vireo(
        &["run", "--kernel", kernel.to_str().unwrap(), "--disk", &bad],
        Duration::from_secs(20),
    );
    assert!(
        r.stderr
            .contains("rerror=enospc must be report, ignore or stop"),
        "{}",
        r.describe()
    );
}

/// A VMM told to load no network disk driver (`--disk-drivers none`)
/// answers a hot-plug of an `nfs://` disk with a line saying the library
/// was not loaded before it confined itself, and goes on: it never tries
/// to map the library under its seccomp filter (which would end it).
#[test]
fn a_network_disk_driver_not_loaded_at_start_is_refused_not_fatal() {
    let idle = guest("idle");
    let vm = Vm::start(
        "no-drivers",
        &["--kernel", idle.to_str().unwrap(), "--disk-drivers", "none"],
    );
    vm.wait_running();
    // A documentation address: nothing is ever sent to it.
    let body = r#"{"path":"nfs://192.0.2.1/export/disk.raw","format":"raw","id":"n"}"#;
    let (status, err) = vm.call("PUT", "/vm/add-disk", Some(body));
    assert_eq!(status, 422, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("libnfs.so.13")
            && message.contains("not loaded before this process confined itself"),
        "{message}"
    );
    assert_eq!(vm.ok("GET", "/vm", None)["state"], "running");
}

#[test]
fn an_unknown_disk_driver_is_a_usage_error() {
    let idle = guest("idle");
    let r = common::run_vireo(
        &[
            "run",
            "--kernel",
            idle.to_str().unwrap(),
            "--disk-drivers",
            "iscsi,rbd",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(
        r.stderr.contains(
            "'rbd' is not a disk driver of this build (it has: iscsi, nfs; or all, none)"
        ),
        "{}",
        r.stderr
    );
}
