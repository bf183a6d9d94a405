//! `disk type='volume'` under `vireo daemon`: a domain whose disk is a
//! storage pool's volume runs on the volume's image (the guest's writes
//! are read back from the image with `qemu-img convert`, the oracle), keeps
//! naming the pool and volume in its XML, is found again by a restarted
//! daemon, takes a volume by hot-plug, and is refused with one clear line
//! when the pool is down, the volume missing or its format not the one
//! the disk states.

mod daemon_harness;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use daemon_harness::{domain_xml, have_kvm, Daemon};
use serde_json::{json, Value};

const SECTOR: usize = 512;

/// The sector the `virtio` guest writes at `n` (guests/virtio/src/blk.rs).
fn guest_pattern(n: u64) -> Vec<u8> {
    let mut s = n.to_le_bytes().to_vec();
    s.extend((8..SECTOR as u64).map(|i| (n + i).to_le_bytes()[0]));
    s
}

/// The virsh verbs of `vireo` against daemon `d`: exit code, stdout, stderr.
fn virsh(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .env_remove("VIREO_DEFAULT_URI")
        .arg("-c")
        .arg(format!(
            "vireo+unix:///system?socket={}",
            d.socket.display()
        ))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(d: &Daemon, args: &[&str]) -> String {
    let (code, out, err) = virsh(d, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// A domain running the `virtio` guest with `disks`, its console in `out`.
fn volume_domain(name: &str, cmdline: &str, disks: &str, out: &Path) -> String {
    domain_xml(name, "virtio", "")
        .replace(
            "<memory unit='MiB'>32</memory>",
            "<memory unit='MiB'>64</memory>",
        )
        .replace(
            "</os>",
            &format!("<cmdline>mirror {cmdline}</cmdline></os>"),
        )
        .replace(
            "<devices>",
            &format!(
                "<devices>{disks}<console type='file'><source path='{}'/><target type='virtio'/></console>",
                out.display()
            ),
        )
}

fn volume_disk(pool: &str, volume: &str, format: &str, target: &str) -> String {
    format!(
        "<disk type='volume' device='disk'><driver name='qemu' type='{format}'/>\
         <source pool='{pool}' volume='{volume}'/><target dev='{target}' bus='virtio'/></disk>"
    )
}

/// Waits (60 s at most) for `out` to hold `text`.
fn wait_text(out: &Path, text: &str) -> String {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let got = std::fs::read_to_string(out).unwrap_or_default();
        if got.contains(text) {
            return got;
        }
        assert!(Instant::now() < end, "no '{text}' from the guest:\n{got}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `domblklist` rows of `dom` as (target, source).
fn blk_rows(d: &Daemon, dom: &str) -> Vec<(String, String)> {
    d.ok("GET", &format!("/domains/{dom}/disks"), None)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["target"].as_str().unwrap().to_string(),
                r["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A start that must fail; its error line.
fn start_error(d: &Daemon, dom: &str) -> String {
    let a = d.http("POST", &format!("/domains/{dom}/start"), Some(&json!({})));
    assert!(a.status >= 400, "{dom} started: {}", a.body);
    a.error()
}

#[test]
fn a_domain_runs_on_a_pool_volume_and_keeps_naming_it() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    let images = dir.path().join("images");
    ok(
        &d,
        &[
            "pool-define-as",
            "p",
            "dir",
            "--target",
            images.to_str().unwrap(),
        ],
    );
    ok(&d, &["pool-build", "p"]);
    ok(&d, &["pool-start", "p"]);
    ok(
        &d,
        &["vol-create-as", "p", "v.qcow2", "4M", "--format", "qcow2"],
    );
    ok(&d, &["vol-create-as", "p", "hot.raw", "1M"]);
    let volume = images.join("v.qcow2");

    let out = dir.path().join("vd.out");
    d.define(&volume_domain(
        "vd",
        "blk blk-first=3 blk-count=4 wait-hotplug=120000 hotplug-events=9",
        &volume_disk("p", "v.qcow2", "qcow2", "vda"),
        &out,
    ));
    // Before it runs, the disk is named by its pool and volume.
    assert_eq!(
        blk_rows(&d, "vd"),
        vec![("vda".to_string(), "p/v.qcow2".to_string())]
    );
    d.ok("POST", "/domains/vd/start", Some(&json!({})));
    wait_text(&out, "virtio-blk: ok capacity=8192 wrote=4");
    assert_eq!(
        blk_rows(&d, "vd"),
        vec![("vda".to_string(), volume.display().to_string())]
    );
    let live = d.ok("GET", "/domains/vd/xml", None)["xml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        live.contains("<disk type='volume' device='disk'>")
            && live.contains("<source pool='p' volume='v.qcow2'/>"),
        "{live}"
    );
    let (code, _, err) = virsh(&d, &["vol-delete", "v.qcow2", "--pool", "p"]);
    assert_eq!(code, 1, "a volume in use was deleted: {err}");
    assert!(err.contains("in use by running domain(s) vd"), "{err}");

    // A restarted daemon finds the volume's path again.
    d.kill9();
    d.spawn();
    assert_eq!(d.state("vd").0, "running");
    assert_eq!(
        blk_rows(&d, "vd"),
        vec![("vda".to_string(), volume.display().to_string())],
        "{}",
        d.log_text()
    );

    // A volume plugged into the running guest, then one that cannot be.
    d.ok(
        "POST",
        "/domains/vd/disks",
        Some(&json!({ "xml": volume_disk("p", "hot.raw", "raw", "vdb"), "live": true })),
    );
    assert_eq!(
        blk_rows(&d, "vd")[1],
        (
            "vdb".to_string(),
            images.join("hot.raw").display().to_string()
        )
    );
    let a = d.http(
        "POST",
        "/domains/vd/disks",
        Some(&json!({ "xml": volume_disk("p", "nope.raw", "raw", "vdc"), "live": true })),
    );
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(a.error().contains("nope.raw"), "{}", a.body);

    d.ok("POST", "/domains/vd/destroy", None);
    d.wait_state("vd", "shut_off", Duration::from_secs(10));

    // The guest's sectors are in the volume, as qemu-img reads it.
    let raw = dir.path().join("v.raw");
    let conv = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&volume)
        .arg(&raw)
        .output()
        .expect("qemu-img (scripts/test.sh installs it)");
    assert!(
        conv.status.success(),
        "{}",
        String::from_utf8_lossy(&conv.stderr)
    );
    let bytes = std::fs::read(&raw).unwrap();
    for n in 3..7usize {
        let at = n * SECTOR;
        assert_eq!(
            &bytes[at..at + SECTOR],
            guest_pattern(n as u64).as_slice(),
            "sector {n}"
        );
    }
}

#[test]
fn volume_disks_that_cannot_be_found_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let images = dir.path().join("images");
    ok(
        &d,
        &[
            "pool-define-as",
            "p",
            "dir",
            "--target",
            images.to_str().unwrap(),
        ],
    );
    ok(&d, &["pool-build", "p"]);
    ok(&d, &["pool-start", "p"]);
    ok(
        &d,
        &["vol-create-as", "p", "v.qcow2", "1M", "--format", "qcow2"],
    );
    ok(&d, &["pool-destroy", "p"]);
    let out = dir.path().join("x.out");
    let define = |name: &str, disk: &str| {
        let v: Value = d.define(&volume_domain(name, "", disk, &out));
        v
    };

    // Defined while the pool is down (as libvirt allows), refused at start.
    define("down", &volume_disk("p", "v.qcow2", "qcow2", "vda"));
    let e = start_error(&d, "down");
    assert!(
        e.contains("storage pool 'p' containing volume 'v.qcow2' is not active"),
        "{e}"
    );

    ok(&d, &["pool-start", "p"]);
    define("raw", &volume_disk("p", "v.qcow2", "raw", "vda"));
    let e = start_error(&d, "raw");
    assert!(
        e.contains("volume 'v.qcow2' of pool 'p' is qcow2, but the disk says <driver type='raw'/>"),
        "{e}"
    );
    define("nopool", &volume_disk("q", "v.qcow2", "qcow2", "vda"));
    let e = start_error(&d, "nopool");
    assert!(e.contains("no storage pool with matching name 'q'"), "{e}");
    define("novol", &volume_disk("p", "w.qcow2", "qcow2", "vda"));
    let e = start_error(&d, "novol");
    assert!(e.contains("w.qcow2"), "{e}");
    for dom in ["down", "raw", "nopool", "novol"] {
        assert_eq!(d.state(dom), ("shut_off".into(), "defined".into()));
    }

    // A name that is not one is refused when defined.
    let a = d.http(
        "POST",
        "/domains",
        Some(&json!({ "xml": volume_domain("bad", "", &volume_disk("p", "../v.qcow2", "qcow2", "vda"), &out) })),
    );
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(a.error().contains("is not a volume name"), "{}", a.body);
}
