//! NFS disks under `vireo daemon`, against a real nfs-ganesha in a
//! network namespace the test makes, with the daemon running in it: a
//! domain whose `<disk type='network'>` is a file on the export runs its
//! guest on it (its writes are read back from the exported file, and it
//! reads what the host put there), a qcow2 image on the export too
//! (`<driver type='qcow2'/>`); what cannot work is refused in one line.

mod daemon_harness;
mod guest_sectors;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_harness::{domain_xml, have_kvm, Daemon};
use guest_sectors::{fnv1a32, pattern, SECTOR};
use nfs::test_server::{StartError, TestServer};
use serde_json::json;

const MIB: u64 = 1 << 20;

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

/// A domain running the `virtio` guest with `disks`, its console in `out`.
fn guest_domain(name: &str, cmdline: &str, disks: &str, out: &Path) -> String {
    domain_xml(name, "virtio", "")
        .replace("<memory unit='MiB'>32</memory>", "<memory unit='MiB'>64</memory>")
        .replace("</os>", &format!("<cmdline>mirror {cmdline}</cmdline></os>"))
        .replace(
            "<devices>",
            &format!(
                "<devices>{disks}<console type='file'><source path='{}'/><target type='virtio'/></console>",
                out.display()
            ),
        )
}

/// ganesha exporting `dir/export`, or `None` (skipped) without root,
/// KVM or nfs-ganesha.
fn server(dir: &Path) -> Option<TestServer> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: making a network namespace needs root");
        testkit::skip("nfs_daemon: making a network namespace needs root");
        return None;
    }
    if !have_kvm() {
        testkit::skip("nfs_daemon: no /dev/kvm");
        return None;
    }
    let (export, state) = (dir.join("export"), dir.join("state"));
    std::fs::create_dir_all(&export).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    match TestServer::start("dmn", &export, &state) {
        Ok(s) => Some(s),
        Err(StartError::NotInstalled(why)) => {
            eprintln!("SKIP: {why}");
            testkit::skip(&format!("nfs_daemon: {why}"));
            None
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_domain_runs_on_an_nfs_network_disk() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = server(dir.path()) else {
        return;
    };
    let file = s.export().join("disk.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let host: Vec<u8> = (0..SECTOR)
        .map(|i| u8::try_from(i * 13 % 241).unwrap())
        .collect();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .write_all(&host)
        .unwrap();
    let d = Daemon::start_in(dir.path(), &[], Some(s.netns()));
    let name = format!("{}/disk.img", s.export().display());
    let disk = format!(
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>\
         <source protocol='nfs' name='{name}'><host name='169.254.78.1'/>\
         <identity user='+0' group='+0'/></source>\
         <target dev='vda' bus='virtio'/></disk>"
    );
    let out = dir.path().join("net.out");
    d.define(&guest_domain(
        "net",
        "blk blk-first=3 blk-count=32 blk-stride=3 blk-read=0 wait-hotplug=60000 hotplug-events=1",
        &disk,
        &out,
    ));
    let xml = d.ok("GET", "/domains/net/xml", None)["xml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        xml.contains(&format!("<source protocol='nfs' name='{name}'>")),
        "{xml}"
    );
    assert!(xml.contains("<identity user='+0' group='+0'/>"), "{xml}");

    d.ok("POST", "/domains/net/start", Some(&json!({})));
    let got = wait_text(&out, "virtio-blk: ok capacity=16384 wrote=32");
    let head: String = host[..16].iter().map(|b| format!("{b:02x}")).collect();
    let expect = format!(
        "virtio-blk: sector 0 head={head} fnv1a32={:08x}",
        fnv1a32(&host)
    );
    assert!(got.contains(&expect), "want {expect}\n{got}");
    // A second file plugged into the running guest (opened on the VMM's
    // API thread, under its seccomp filter), which exercises it too.
    let second = s.export().join("second.img");
    std::fs::File::create(&second)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let hot = disk
        .replace("/disk.img'", "/second.img'")
        .replace("dev='vda'", "dev='vdb'");
    d.ok(
        "POST",
        "/domains/net/disks",
        Some(&json!({ "xml": hot, "live": true })),
    );
    wait_text(&out, "virtio-blk: ok capacity=8192 wrote=32");
    let rows = d.ok("GET", "/domains/net/disks", None);
    assert_eq!(
        rows[0]["source"],
        format!("nfs://169.254.78.1{name}?uid=0&gid=0"),
        "{rows}"
    );
    d.wait_state("net", "shut_off", Duration::from_secs(30));
    for f in [&file, &second] {
        let bytes = std::fs::read(f).unwrap();
        for k in 0..32u64 {
            let n = 3 + 3 * k;
            let at = usize::try_from(n).unwrap() * SECTOR;
            let what = format!("{} sector {n}", f.display());
            assert_eq!(&bytes[at..at + SECTOR], &pattern(n)[..], "{what}");
        }
    }

    // A missing file, and a raw file given as qcow2, fail the start in
    // one line.
    let missing = disk.replace("/disk.img'", "/none.img'");
    d.define(&guest_domain(
        "nofile",
        "blk",
        &missing,
        &dir.path().join("nofile.out"),
    ));
    let a = d.http("POST", "/domains/nofile/start", Some(&json!({})));
    assert!(a.status >= 400, "{}", a.body);
    assert!(a.error().contains("NOENT"), "{}", a.body);
    assert_eq!(a.error().lines().count(), 1, "{}", a.body);
    let raw_as_qcow2 = disk.replace("type='raw'", "type='qcow2'");
    let xml = guest_domain("rq", "blk", &raw_as_qcow2, &dir.path().join("rq.out"));
    d.define(&xml);
    let a = d.http("POST", "/domains/rq/start", Some(&json!({})));
    assert!(a.status >= 400, "{}", a.body);
    assert!(a.error().contains("not a qcow2 image"), "{}", a.body);
    assert_eq!(a.error().lines().count(), 1, "{}", a.body);

    // A qcow2 image on the export, made by qemu-img (the oracle, which
    // then finds it clean after the guest's writes).
    // One is the domain's disk, one is plugged in while it runs (opened
    // on the VMM's API thread, under its seccomp filter).
    for (name, size) in [("q.qcow2", "8M"), ("hot.qcow2", "4M")] {
        let made = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", name, size])
            .current_dir(s.export())
            .status();
        let Ok(made) = made else {
            testkit::skip("nfs_daemon: qemu-img (qemu-utils) is not installed");
            return;
        };
        assert!(made.success());
    }
    let qcow2 = raw_as_qcow2.replace("/disk.img'", "/q.qcow2'");
    let out = dir.path().join("q.out");
    d.define(&guest_domain(
        "q",
        "blk blk-first=3 blk-count=32 blk-stride=150 wait-hotplug=60000 hotplug-events=1",
        &qcow2,
        &out,
    ));
    d.ok("POST", "/domains/q/start", Some(&json!({})));
    wait_text(&out, "virtio-blk: ok capacity=16384 wrote=32");
    let hot = qcow2
        .replace("/q.qcow2'", "/hot.qcow2'")
        .replace("dev='vda'", "dev='vdb'");
    d.ok(
        "POST",
        "/domains/q/disks",
        Some(&json!({ "xml": hot, "live": true })),
    );
    wait_text(&out, "virtio-blk: ok capacity=8192 wrote=32");
    d.wait_state("q", "shut_off", Duration::from_secs(30));
    for image in ["q.qcow2", "hot.qcow2"] {
        let check = std::process::Command::new("qemu-img")
            .args(["check", "-f", "qcow2", image])
            .current_dir(s.export())
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&check.stdout);
        assert!(check.status.success(), "{image}: {report}");
        assert!(report.contains("No errors were found"), "{image}: {report}");
        let raw = dir.path().join(image).with_extension("raw");
        let converted = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw", image])
            .arg(&raw)
            .current_dir(s.export())
            .status()
            .unwrap();
        assert!(converted.success());
        let bytes = std::fs::read(&raw).unwrap();
        for k in 0..32u64 {
            let n = 3 + 150 * k;
            let at = usize::try_from(n).unwrap() * SECTOR;
            let what = format!("{image} sector {n}");
            assert_eq!(&bytes[at..at + SECTOR], &pattern(n)[..], "{what}");
        }
    }
}
