//! Storage pools under `vireo daemon`, through the virsh verbs: a `dir`
//! pool built, started, filled with raw and qcow2 volumes (checked by
//! qemu-img, the oracle), found again after a daemon restart, and taken
//! apart; a volume a running domain uses cannot be deleted.

mod daemon_harness;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use daemon_harness::{domain_xml, have_kvm, Daemon};
use serde_json::Value;

/// The virsh verbs of `vireo` against daemon `d`: (exit code, stdout,
/// stderr).
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

/// Runs a verb that must succeed; its stdout.
fn ok(d: &Daemon, args: &[&str]) -> String {
    let (code, out, err) = virsh(d, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// Runs a verb that must fail with one `error:` line containing `says`.
fn refused(d: &Daemon, args: &[&str], says: &str) {
    let (code, _, err) = virsh(d, args);
    assert_eq!(code, 1, "{args:?} should fail: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(says),
        "{args:?}: {err}"
    );
}

/// `qemu-img check` of `path`, when qemu-img is installed (scripts/test.sh
/// installs it); the reason otherwise.
fn qemu_img_check(path: &Path) -> Result<(), String> {
    let out = Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(path)
        .output()
        .map_err(|e| format!("qemu-img: {e}"))?;
    assert!(
        out.status.success(),
        "qemu-img check {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn a_dir_pool_from_define_to_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let images = dir.path().join("images");
    let target = images.to_str().unwrap();

    assert_eq!(
        ok(&d, &["pool-define-as", "p", "dir", "--target", target]),
        "Pool p defined\n\n"
    );
    refused(&d, &["pool-start", "p"], "pool-build makes it");
    assert_eq!(ok(&d, &["pool-build", "p"]), "Pool p built\n\n");
    assert!(images.is_dir());
    assert_eq!(ok(&d, &["pool-start", "p"]), "Pool p started\n\n");
    refused(&d, &["pool-start", "p"], "already active");
    refused(&d, &["pool-build", "p"], "is active");
    let info = ok(&d, &["pool-info", "p"]);
    assert!(info.contains("State:          running"), "{info}");
    assert!(info.contains("Capacity:"), "{info}");
    let list = ok(&d, &["pool-list", "--all", "--details"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(" p ") && l.contains("running")),
        "{list}"
    );
    // A second pool on the same directory is refused.
    refused(
        &d,
        &["pool-define-as", "q", "dir", "--target", target],
        "uses target path",
    );
    refused(
        &d,
        &["pool-define-as", "r", "rbd"],
        "pool type 'rbd' is not supported",
    );
    // Two kernel-initiator pools on one target would share its session.
    let iscsi = |name: &'static str| {
        [
            "pool-define-as",
            name,
            "iscsi",
            "--source-host",
            "192.0.2.1",
            "--source-dev",
            "iqn.2026-11.org.example:t",
            "--target",
            "/dev/disk/by-path",
        ]
    };
    assert_eq!(virsh(&d, &iscsi("i1")).0, 0);
    refused(
        &d,
        &iscsi("i2"),
        "uses iSCSI target iqn.2026-11.org.example:t",
    );
    assert_eq!(virsh(&d, &["pool-undefine", "i1"]).0, 0);

    // Volumes.
    assert_eq!(
        ok(&d, &["vol-create-as", "p", "a.raw", "1M"]),
        "Vol a.raw created\n\n"
    );
    ok(
        &d,
        &["vol-create-as", "p", "b.qcow2", "64M", "--format", "qcow2"],
    );
    ok(
        &d,
        &[
            "vol-create-as",
            "p",
            "c.qcow2",
            "0",
            "--format",
            "qcow2",
            "--backing-vol",
            "a.raw",
            "--backing-vol-format",
            "raw",
        ],
    );
    refused(&d, &["vol-create-as", "p", "a.raw", "1M"], "already in use");
    refused(&d, &["vol-create-as", "p", "x/y", "1M"], "contains '/'");
    refused(&d, &["vol-create-as", "p", "huge", "8E"], "free");
    refused(
        &d,
        &[
            "vol-create-as",
            "p",
            "o.qcow2",
            "0",
            "--format",
            "qcow2",
            "--backing-vol",
            "a.raw",
        ],
        "never probed",
    );
    for v in ["b.qcow2", "c.qcow2"] {
        if let Err(why) = qemu_img_check(&images.join(v)) {
            testkit::skip(&why);
        }
    }
    let list = ok(&d, &["vol-list", "p", "--details"]);
    for v in ["a.raw", "b.qcow2", "c.qcow2"] {
        assert!(list.contains(&format!(" {v} ")), "{list}");
    }
    let info = ok(&d, &["vol-info", "b.qcow2", "--pool", "p"]);
    assert!(info.contains("Capacity:       64.00 MiB"), "{info}");
    let path = images.join("c.qcow2");
    assert_eq!(
        ok(&d, &["vol-path", "c.qcow2", "--pool", "p"]).trim(),
        path.to_str().unwrap()
    );
    // By path, without --pool.
    let info = ok(&d, &["vol-info", path.to_str().unwrap()]);
    assert!(info.contains("Capacity:       1.00 MiB"), "{info}");
    let xml = ok(&d, &["vol-dumpxml", "c.qcow2", "--pool", "p"]);
    assert!(
        xml.contains(&format!("<key>{}</key>", path.display())),
        "{xml}"
    );
    assert!(xml.contains("<backingStore>"), "{xml}");
    let json: Value = serde_json::from_str(&ok(&d, &["vol-list", "p", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3, "{json}");

    // Resize: larger, and smaller only when asked.
    ok(&d, &["vol-resize", "b.qcow2", "128M", "--pool", "p"]);
    assert!(ok(&d, &["vol-info", "b.qcow2", "--pool", "p"]).contains("128.00 MiB"));
    refused(
        &d,
        &["vol-resize", "a.raw", "512K", "--pool", "p"],
        "--shrink",
    );
    ok(&d, &["vol-resize", "a.raw", "2M", "--pool", "p"]);

    // A volume a running domain uses stays.
    if have_kvm() {
        let xml = domain_xml("user", "idle", "").replace(
            "<devices>",
            &format!(
                "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
                 <source file='{}'/><target dev='vda' bus='virtio'/></disk>",
                images.join("b.qcow2").display()
            ),
        );
        d.define(&xml);
        d.ok("POST", "/domains/user/start", None);
        refused(
            &d,
            &["vol-delete", "b.qcow2", "--pool", "p"],
            "in use by running domain(s) user",
        );
        d.ok("POST", "/domains/user/destroy", None);
        d.wait_state("user", "shut_off", Duration::from_secs(10));
    }

    // The pool is found again by the next daemon.
    let mut d = d;
    d.kill9();
    d.spawn();
    assert!(ok(&d, &["pool-info", "p"]).contains("running"));
    assert_eq!(
        ok(&d, &["pool-autostart", "p"]),
        "Pool p marked as autostarted\n\n"
    );

    // Taken apart.
    for v in ["c.qcow2", "b.qcow2", "a.raw"] {
        assert_eq!(
            ok(&d, &["vol-delete", v, "--pool", "p"]),
            format!("Vol {v} deleted\n\n")
        );
    }
    assert!(!images.join("a.raw").exists());
    ok(&d, &["vol-create-as", "p", "left", "4096"]);
    assert_eq!(ok(&d, &["pool-destroy", "p"]), "Pool p destroyed\n\n");
    refused(&d, &["vol-list", "p"], "is not active");
    refused(&d, &["pool-delete", "p"], "not empty");
    std::fs::remove_file(images.join("left")).unwrap();
    assert_eq!(ok(&d, &["pool-delete", "p"]), "Pool p deleted\n\n");
    assert!(!images.exists());
    assert_eq!(
        ok(&d, &["pool-undefine", "p"]),
        "Pool p has been undefined\n\n"
    );
    refused(
        &d,
        &["pool-info", "p"],
        "no storage pool with matching name 'p'",
    );
}
