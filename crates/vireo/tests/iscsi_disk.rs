//! `vireo run --disk iscsi://...`: the `virtio` test guest reads and
//! writes a LUN of a real tgtd in a network namespace the test makes
//! (vireo runs inside it), and the data is checked in the LUN's file.

mod common;
mod guest_sectors;

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::guest;
use guest_sectors::{fnv1a32, pattern, read_sector, SECTOR};
use iscsi::test_target::{LunSpec, TestTarget};

const MIB: u64 = 1 << 20;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIP: making a network namespace needs root");
    }
    root
}

#[test]
fn a_guest_reads_and_writes_an_iscsi_lun() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [LunSpec {
        size: 8 * MIB,
        thin: true,
    }];
    let t = TestTarget::start("run", dir.path(), &luns, None).unwrap();
    // Sector 0 holds something for the guest to read.
    let host: Vec<u8> = (0..SECTOR)
        .map(|i| u8::try_from(i * 7 % 251).unwrap())
        .collect();
    File::options()
        .write(true)
        .open(t.lun_file(1))
        .unwrap()
        .write_all(&host)
        .unwrap();
    let kernel = guest("virtio");
    let disk = format!("{},serial=lun1", t.url(1));
    let r = common::vireo_in_netns(
        t.netns(),
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "blk blk-first=3 blk-count=64 blk-stride=5 blk-read=0",
            "--disk",
            &disk,
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.describe());
    let head: String = host[..16].iter().map(|b| format!("{b:02x}")).collect();
    let expect = format!(
        "virtio-blk: sector 0 head={head} fnv1a32={:08x}",
        fnv1a32(&host)
    );
    assert!(
        r.stdout.contains(&expect),
        "want {expect}\n{}",
        r.describe()
    );
    assert!(
        r.stdout
            .contains("virtio-blk: capacity=16384 ro=no serial=lun1"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout.contains("virtio-blk: ok capacity=16384 wrote=64"),
        "{}",
        r.describe()
    );
    for k in 0..64 {
        let n = 3 + 5 * k;
        assert_eq!(read_sector(&t.lun_file(1), n), pattern(n), "sector {n}");
    }
    assert_eq!(read_sector(&t.lun_file(1), 4), vec![0; SECTOR]);
}

/// `vireo run` by hand against a target that admits only a CHAP account:
/// the secret comes from a file (`--secret id=,file=`), never the command
/// line; without it, or with the wrong one, the VMM refuses in one line.
#[test]
fn a_guest_runs_on_a_lun_behind_chap_with_a_secret_file() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [LunSpec {
        size: 4 * MIB,
        thin: false,
    }];
    let (user, password) = ("hand-user", "hand-Chap-pw-1");
    let t = TestTarget::start("runchap", dir.path(), &luns, Some((user, password))).unwrap();
    let kernel = guest("virtio");
    let secret = dir.path().join("chap.secret");
    std::fs::write(&secret, password).unwrap();
    let secret_opt = format!("id=lun,file={}", secret.display());
    let disk = format!("iscsi://{user}@169.254.77.1/{}/1,secret=lun", t.iqn());
    let r = common::vireo_in_netns(
        t.netns(),
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "blk blk-first=7 blk-count=8 blk-read=0",
            "--secret",
            &secret_opt,
            "--disk",
            &disk,
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(
        r.stdout.contains("virtio-blk: ok capacity=8192 wrote=8"),
        "{}",
        r.describe()
    );
    for n in 7..15 {
        assert_eq!(read_sector(&t.lun_file(1), n), pattern(n), "sector {n}");
    }
    // The wrong secret, and none: one line each, naming the LUN by its
    // URL without any secret.
    let wrong = dir.path().join("wrong.secret");
    std::fs::write(&wrong, "not-it").unwrap();
    let wrong_opt = format!("id=lun,file={}", wrong.display());
    let plain = format!("iscsi://{user}@169.254.77.1/{}/1", t.iqn());
    for (args, says) in [
        (
            vec!["--secret", wrong_opt.as_str(), "--disk", disk.as_str()],
            "login refused",
        ),
        (vec!["--disk", plain.as_str()], "no secret is given"),
        (
            vec!["--disk", disk.as_str()],
            "secret=lun names no --secret",
        ),
    ] {
        let mut all = vec!["run", "--kernel", kernel.to_str().unwrap()];
        all.extend(&args);
        let r = common::vireo_in_netns(t.netns(), &all);
        assert_ne!(r.code, Some(0), "{args:?}: {}", r.describe());
        assert!(
            r.stderr.contains(says),
            "{args:?}: want '{says}'\n{}",
            r.describe()
        );
        assert_eq!(
            r.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            r.describe()
        );
        assert!(!r.stderr.contains("not-it"), "{}", r.describe());
    }
}

#[test]
fn unreachable_or_malformed_iscsi_disks_fail_in_one_line() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestTarget::start(
        "runbad",
        dir.path(),
        &[LunSpec {
            size: MIB,
            thin: false,
        }],
        None,
    )
    .unwrap();
    let kernel = guest("virtio");
    let wrong_target = format!("iscsi://169.254.77.1/{}-nope/1", t.iqn());
    let no_lun = t.url(7);
    for (disk, says) in [
        (wrong_target.as_str(), "login"),
        (no_lun.as_str(), "LUN"),
        (
            "iscsi://169.254.77.1/iqn.x:y/notalun",
            "expected iscsi://HOST[:PORT]/IQN/LUN",
        ),
    ] {
        let r = common::vireo_in_netns(
            t.netns(),
            &["run", "--kernel", kernel.to_str().unwrap(), "--disk", disk],
        );
        assert_ne!(r.code, Some(0), "{}", r.describe());
        let last = r.stderr.trim().lines().last().unwrap_or("").to_string();
        assert!(
            r.stderr.contains(says) || r.stderr.to_lowercase().contains(&says.to_lowercase()),
            "{disk}: want '{says}'\n{}",
            r.describe()
        );
        assert!(last.contains("iscsi"), "{disk}: {}", r.describe());
    }

    // No target listening any more: refused at once, in one line.
    t.kill();
    let start = std::time::Instant::now();
    let url = t.url(1);
    let r = common::vireo_in_netns(
        t.netns(),
        &["run", "--kernel", kernel.to_str().unwrap(), "--disk", &url],
    );
    assert_ne!(r.code, Some(0), "{}", r.describe());
    assert!(r.stderr.contains("connect"), "{}", r.describe());
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.describe());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

/// One request to a VMM's API socket: (status, body).
fn api(socket: &Path, method: &str, path: &str) -> (u16, serde_json::Value) {
    use std::io::Write as _;
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, value)
}

/// The `virtio` guest writing sectors 3 to 10 of `disk`, in the target's
/// namespace, held before its first instruction (so the target can go
/// first); its output in `out`, its API on `socket`.
fn paused_guest(t: &TestTarget, socket: &Path, out: &Path, disk: &str) -> std::process::Child {
    let kernel = guest("virtio");
    let child = Command::new("ip")
        .args(["netns", "exec", t.netns(), env!("CARGO_BIN_EXE_vireo")])
        .args(["run", "--paused", "--api-socket"])
        .arg(socket)
        .args(["--kernel", kernel.to_str().unwrap()])
        .args(["--cmdline", "blk blk-first=3 blk-count=8"])
        .args(["--disk", disk])
        .stdin(std::process::Stdio::null())
        .stdout(File::create(out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(std::time::Instant::now() < deadline, "no API socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Its exit code, waited for 60 s at most (then killed: `None`).
fn exit_code(child: &mut std::process::Child) -> Option<i32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_paused(socket: &Path) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, info) = api(socket, "GET", "/vm");
        if info["state"] == "paused" {
            return info;
        }
        assert!(std::time::Instant::now() < deadline, "never paused: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_target_that_goes_away_stops_the_vm_and_its_return_finishes_the_io() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [LunSpec {
        size: 8 * MIB,
        thin: true,
    }];
    let mut t = TestTarget::start("away", dir.path(), &luns, None).unwrap();
    let socket = dir.path().join("api.sock");
    let out = dir.path().join("out.txt");
    let disk = format!(
        "{},format=raw,werror=stop,rerror=stop,serial=lun1",
        t.url(1)
    );
    let mut child = paused_guest(&t, &socket, &out, &disk);
    wait_paused(&socket);

    // The target dies: the guest's first request fails, and the VM
    // stops instead of giving the guest an error.
    t.kill();
    assert_eq!(api(&socket, "PUT", "/vm/resume").0, 204);
    let info = wait_paused(&socket);
    assert!(
        info["io_error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("disk disk0: "),
        "{info}"
    );
    let (_, counters) = api(&socket, "GET", "/vm/counters");
    assert!(
        counters["devices"]["disk0"]["held_requests"].as_u64() >= Some(1),
        "{counters}"
    );
    assert_eq!(counters["devices"]["disk0"]["errors"], 0, "{counters}");

    // It comes back: resume, the held request logs in again and goes
    // through, and the guest finishes as if nothing had happened.
    t.restart().unwrap();
    assert_eq!(api(&socket, "PUT", "/vm/resume").0, 204);
    let status = exit_code(&mut child);
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(status, Some(0), "{text}");
    assert!(
        text.contains("virtio-blk: ok capacity=16384 wrote=8"),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");
    for n in 3..11 {
        assert_eq!(read_sector(&t.lun_file(1), n), pattern(n), "sector {n}");
    }
}

#[test]
fn with_the_default_policy_a_lost_target_is_an_error_for_the_guest_not_a_hang() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [LunSpec {
        size: 8 * MIB,
        thin: true,
    }];
    let mut t = TestTarget::start("lost", dir.path(), &luns, None).unwrap();
    let socket = dir.path().join("api.sock");
    let out = dir.path().join("out.txt");
    let disk = format!("{},format=raw,serial=lun1", t.url(1));
    let mut child = paused_guest(&t, &socket, &out, &disk);
    wait_paused(&socket);
    t.kill();
    assert_eq!(api(&socket, "PUT", "/vm/resume").0, 204);
    // The guest gets its error at once (a refused connection, each
    // attempt bounded), says so, and powers off: nothing waits forever.
    let status = exit_code(&mut child);
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(status, Some(0), "{text}");
    assert!(text.contains("virtio-blk: FAIL"), "{text}");
}
