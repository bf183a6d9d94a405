//! The balloon from the outside: `vireo run --balloon` refusing bad
//! options in one line, and a real VM's balloon read and set through
//! `vireo vm` and the API socket (a reboot keeps the target). Whether the
//! guest gives memory back is checked with Linux's own driver in
//! tests/nested.rs (`balloon`, `balloon-fpr`), the device's queue handling
//! in the virtio crate's unit tests.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{guest, run_vireo, vireo};
use serde_json::Value;

/// A `vireo run --api-socket` process, killed on drop.
struct Vm {
    child: Child,
    socket: PathBuf,
}

impl Vm {
    fn start(name: &str, args: &[&str]) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("balloon");
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let mut child = vireo()
            .args(["run", "--serial", "off", "--api-socket"])
            .arg(&socket)
            .args(args)
            .stdout(Stdio::null())
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
        Self { child, socket }
    }

    /// Wait until the VM runs (the socket comes before the boot ends).
    fn wait_running(self) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .call("GET", "/vm", "")
            .1
            .contains("\"state\":\"running\"")
        {
            assert!(Instant::now() < deadline, "the VM never ran");
            std::thread::sleep(Duration::from_millis(10));
        }
        self
    }

    /// `vireo vm --socket S ARGS...`.
    fn vm(&self, args: &[&str]) -> Output {
        vireo()
            .args(["vm", "--socket"])
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// GET /vm/balloon through `vireo vm --json balloon-stats`.
    fn balloon(&self) -> Value {
        let out = self.vm(&["--json", "balloon-stats"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// One raw request; (status, body).
    fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn bad_balloon_options_are_refused_in_one_line() {
    let idle = guest("idle");
    let idle = idle.to_str().unwrap();
    let cases = [
        (
            "target=512M",
            "the balloon target 512 MiB is above the guest's memory (256 MiB)",
        ),
        (
            "target=1M",
            "the balloon target 1 MiB is below the floor of 4 MiB",
        ),
        ("target=0", "--balloon: target=0 is zero"),
        ("target=lots", "invalid balloon target 'lots'"),
        (
            "stats-period=-1",
            "stats-period=-1 must be a number of seconds",
        ),
        (
            "free-page-reporting=maybe",
            "free-page-reporting=maybe must be on or off",
        ),
        ("size=1G", "unknown option 'size'"),
    ];
    for (options, want) in cases {
        let r = run_vireo(
            &[
                "run",
                "--kernel",
                idle,
                "--memory",
                "256M",
                "--balloon",
                options,
            ],
            Duration::from_secs(10),
        );
        assert_eq!(r.code, Some(2), "{options}: {}", r.describe());
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{options}: {}", r.describe());
        assert!(lines[0].contains(want), "{options}: {}", r.describe());
    }
}

#[test]
fn the_target_and_period_are_read_and_set_and_survive_a_reboot() {
    let idle = guest("idle");
    let vm = Vm::start(
        "set",
        &[
            "--kernel",
            idle.to_str().unwrap(),
            "--memory",
            "256M",
            "--balloon",
            "target=192M,stats-period=10,free-page-reporting=on",
        ],
    )
    .wait_running();
    let b = vm.balloon();
    assert_eq!(b["target_kib"], 192 << 10, "{b}");
    // The idle guest has no driver: nothing is ballooned, no statistics.
    assert_eq!(b["actual_kib"], 256 << 10, "{b}");
    assert_eq!(b["stats_period"], 10, "{b}");
    assert_eq!(b["last_update"], Value::Null, "{b}");
    assert_eq!(b["stats"], serde_json::json!({}), "{b}");
    let out = vm.vm(&["balloon", "128M", "--stats-period", "5"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out),
        "balloon target set to 128 MiB\nballoon statistics period set to 5 s\n"
    );
    let b = vm.balloon();
    assert_eq!(
        (b["target_kib"].clone(), b["stats_period"].clone()),
        (131072.into(), 5.into())
    );
    let out = vm.vm(&["balloon-stats"]);
    assert_eq!(text(&out), "actual 262144\ntarget 131072\nstats_period 5\n");
    // Refusals: one line each, exit 1 (the VM refused) or 2 (usage).
    let out = vm.vm(&["balloon", "1G"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out),
        "vireo: the balloon target 1024 MiB is above the guest's memory (256 MiB)\n"
    );
    let out = vm.vm(&["balloon"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let (status, body) = vm.call("PUT", "/vm/balloon", r#"{"target_kib":1024}"#);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("below the floor"), "{body}");
    let (status, body) = vm.call("PUT", "/vm/balloon", "{}");
    assert_eq!(status, 400, "{body}");
    let (status, body) = vm.call("PUT", "/vm/balloon", r#"{"stats_period":2147483648}"#);
    assert_eq!(status, 400, "{body}");
    let (status, _) = vm.call("DELETE", "/vm/balloon", "");
    assert_eq!(status, 405);
    // The device is on the bus with its counters.
    let info = text(&vm.vm(&["info"]));
    assert!(
        info.contains("balloon  virtio-balloon") && info.contains("free_page_reporting=true"),
        "{info}"
    );
    let counters = text(&vm.vm(&["counters"]));
    assert!(counters.contains("balloon  inflated_pages"), "{counters}");
    // A reboot keeps what was set last.
    let out = vm.vm(&["reset"]);
    assert!(out.status.success(), "{}", text(&out));
    let b = vm.balloon();
    assert_eq!(
        (b["target_kib"].clone(), b["stats_period"].clone()),
        (131072.into(), 5.into())
    );
}

#[test]
fn without_a_balloon_the_api_says_so() {
    let idle = guest("idle");
    let vm = Vm::start("none", &["--kernel", idle.to_str().unwrap()]).wait_running();
    let out = vm.vm(&["balloon-stats"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out),
        "vireo: the VM has no balloon device (start it with vireo run --balloon)\n"
    );
    let (status, _) = vm.call("PUT", "/vm/balloon", r#"{"target_kib":65536}"#);
    assert_eq!(status, 404);
}

#[test]
fn a_configuration_smaller_than_the_balloon_target_is_refused() {
    // The flags are the defaults of PUT /vm/config, the balloon with them.
    let vm = Vm::start("config", &["--memory", "1G", "--balloon", "target=512M"]);
    let idle = guest("idle");
    let small = serde_json::json!({"kernel": idle, "memory_mib": 256}).to_string();
    let (status, body) = vm.call("PUT", "/vm/config", &small);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("above the guest's memory"), "{body}");
    let fits = serde_json::json!({"kernel": idle}).to_string();
    let (status, body) = vm.call("PUT", "/vm/config", &fits);
    assert_eq!(status, 204, "{body}");
    let (status, body) = vm.call("PUT", "/vm/boot", "");
    assert_eq!(status, 204, "{body}");
    let vm = vm.wait_running();
    let b = vm.balloon();
    assert_eq!(b["target_kib"], 512 << 10, "{b}");
}

/// The virtio test guest's balloon pass (guests/virtio/src/balloon.rs):
/// it fills `mib` MiB, inflates every page, reads a released page back,
/// deflates and writes them again.
fn guest_pass(backend: &[&str], mib: u64) -> String {
    let virtio = guest("virtio");
    let cmdline = format!("balloon-mib={mib}");
    let mut args = vec![
        "run",
        "--kernel",
        virtio.to_str().unwrap(),
        "--memory",
        "256M",
        "--balloon",
        "target=128M",
        "--cmdline",
        &cmdline,
    ];
    args.extend_from_slice(backend);
    let r = run_vireo(&args, Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "{}", r.describe());
    r.stdout
}

#[test]
fn a_guests_inflated_pages_go_back_to_the_host_and_deflate_returns_them() {
    // Private anonymous memory (MADV_DONTNEED) and a memfd (MADV_REMOVE):
    // either way a released page reads back as zero.
    for backend in [&[][..], &["--memory-backend", "backend=memfd"][..]] {
        let out = guest_pass(backend, 64);
        for want in [
            "virtio-balloon: num_pages=32768",
            "bench: balloon inflate mib=64 cycles=",
            "bench: balloon deflate mib=64 cycles=",
            "virtio-balloon: ok 16384 pages in and out, released ones read zero",
        ] {
            assert!(out.contains(want), "{backend:?}: no '{want}' in:\n{out}");
        }
        assert!(!out.contains("FAIL"), "{backend:?}:\n{out}");
    }
}

const POOL_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

/// `pages` more 2 MiB pages in the host's pool, given back on drop.
struct HugePages {
    before: u64,
}

impl HugePages {
    fn reserve(pages: u64) -> Option<Self> {
        let read = || -> Option<u64> { std::fs::read_to_string(POOL_2M).ok()?.trim().parse().ok() };
        let before = read()?;
        std::fs::write(POOL_2M, (before + pages).to_string()).ok()?;
        let guard = Self { before };
        (read()? == before + pages).then_some(guard)
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = std::fs::write(POOL_2M, self.before.to_string());
    }
}

#[test]
fn with_2m_huge_pages_whole_huge_pages_go_back() {
    // 256 MiB of guest RAM in 2 MiB pages; the pass balloons 64 MiB from
    // 64 MiB up, whole huge pages, each released once all of its 512
    // small pages are in (a released one reads zero: a fresh huge page).
    let Some(_pool) = HugePages::reserve(128) else {
        testkit::skip("the host cannot reserve 128 huge pages of 2 MiB");
        return;
    };
    let out = guest_pass(&["--memory-backend", "hugepages=2M"], 64);
    assert!(
        out.contains("virtio-balloon: ok 16384 pages in and out, released ones read zero"),
        "{out}"
    );
}
