//! iSCSI under `vireo daemon`, against a real tgtd (two LUNs) in a network
//! namespace the test makes, with the daemon running in it: a domain
//! whose `<disk type='network'>` is a LUN runs its guest on it (the
//! guest's writes are read back from the LUN's file, and the guest reads
//! what the host put there).

mod daemon_harness;
mod guest_sectors;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use daemon_harness::{domain_xml, have_kvm, Daemon};
use guest_sectors::{fnv1a32, pattern, SECTOR};
use iscsi::test_target::{LunSpec, TestTarget};
use serde_json::json;

const MIB: u64 = 1 << 20;

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

/// A virsh verb that must fail with exit code 1 and one line naming `says`.
fn refused(d: &Daemon, args: &[&str], says: &str) {
    let (code, _, err) = virsh(d, args);
    assert_eq!(code, 1, "{args:?} succeeded");
    assert!(err.contains(says), "{args:?}: want '{says}' in {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
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

fn root_and_kvm() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        testkit::skip("making a network namespace needs root");
        return false;
    }
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return false;
    }
    true
}

fn sector_of(file: &Path, n: usize) -> Vec<u8> {
    let bytes = std::fs::read(file).unwrap();
    bytes[n * SECTOR..(n + 1) * SECTOR].to_vec()
}

#[test]
fn a_domain_runs_on_an_iscsi_network_disk() {
    if !root_and_kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [
        LunSpec {
            size: 8 * MIB,
            thin: true,
        },
        LunSpec {
            size: 4 * MIB,
            thin: false,
        },
    ];
    let t = TestTarget::start("dnet", dir.path(), &luns, None).unwrap();
    // Sector 0 of LUN 2 holds something for the guest to read.
    let host: Vec<u8> = (0..SECTOR)
        .map(|i| u8::try_from(i * 13 % 241).unwrap())
        .collect();
    std::fs::OpenOptions::new()
        .write(true)
        .open(t.lun_file(2))
        .unwrap()
        .write_all(&host)
        .unwrap();
    let d = Daemon::start_in(dir.path(), &[], Some(t.netns()));

    let disk = format!(
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>\
         <source protocol='iscsi' name='{}/2'><host name='169.254.77.1' port='3260'/></source>\
         <target dev='vda' bus='virtio'/></disk>",
        t.iqn()
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
    assert!(xml.contains("<disk type='network' device='disk'>"), "{xml}");
    assert!(
        xml.contains(&format!("<source protocol='iscsi' name='{}/2'>", t.iqn())),
        "{xml}"
    );

    d.ok("POST", "/domains/net/start", Some(&json!({})));
    let got = wait_text(&out, "virtio-blk: ok capacity=8192 wrote=32");
    let head: String = host[..16].iter().map(|b| format!("{b:02x}")).collect();
    let expect = format!(
        "virtio-blk: sector 0 head={head} fnv1a32={:08x}",
        fnv1a32(&host)
    );
    assert!(got.contains(&expect), "want {expect}\n{got}");
    // LUN 1 plugged into the running guest, which exercises it too.
    let hot = disk
        .replace("/2'>", "/1'>")
        .replace("dev='vda'", "dev='vdb'");
    d.ok(
        "POST",
        "/domains/net/disks",
        Some(&json!({ "xml": hot, "live": true })),
    );
    // (The guest powers off once it has handled the event, so the
    // LUN's file, below, is what shows the plugged disk worked.)
    wait_text(&out, "virtio-blk: ok capacity=16384 wrote=32");
    let rows = d.ok("GET", "/domains/net/disks", None);
    assert_eq!(
        rows[0]["source"],
        format!("iscsi://169.254.77.1:3260/{}/2", t.iqn()),
        "{rows}"
    );
    assert_eq!(rows[0]["kind"], "network", "{rows}");
    // The guest powers off when done.
    d.wait_state("net", "shut_off", Duration::from_secs(30));

    // What the guest wrote is in the LUNs' files, checksummed sector by
    // sector, and nothing else.
    for lun in [1, 2] {
        let bytes = std::fs::read(t.lun_file(lun)).unwrap();
        for k in 0..32u64 {
            let n = 3 + 3 * k;
            let at = usize::try_from(n).unwrap() * SECTOR;
            assert_eq!(
                fnv1a32(&bytes[at..at + SECTOR]),
                fnv1a32(&pattern(n)),
                "LUN {lun} sector {n}"
            );
        }
        assert!(bytes[4 * SECTOR..5 * SECTOR].iter().all(|&b| b == 0));
    }

    // A domain on a LUN the target does not have fails to start, in one line.
    let bad = disk.replace("/2'>", "/9'>");
    d.define(&guest_domain(
        "nolun",
        "blk",
        &bad,
        &dir.path().join("nolun.out"),
    ));
    let a = d.http("POST", "/domains/nolun/start", Some(&json!({})));
    assert!(a.status >= 400, "{}", a.body);
    assert!(a.error().contains("no LUN 9"), "{}", a.body);
}

#[test]
fn an_iscsi_direct_pool_lists_the_targets_luns_and_backs_a_volume_disk() {
    if !root_and_kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [
        LunSpec {
            size: 8 * MIB,
            thin: true,
        },
        LunSpec {
            size: 4 * MIB,
            thin: false,
        },
    ];
    let t = TestTarget::start("dpool", dir.path(), &luns, None).unwrap();
    let d = Daemon::start_in(dir.path(), &[], Some(t.netns()));

    // virsh's pool-define-as, printed and defined.
    let printed = ok(
        &d,
        &[
            "pool-define-as",
            "san",
            "iscsi-direct",
            "--source-host",
            "169.254.77.1",
            "--source-dev",
            t.iqn(),
            "--source-initiator",
            "iqn.2026-01.org.vireo.test:host",
            "--print-xml",
        ],
    );
    assert!(
        printed.contains("<iqn name='iqn.2026-01.org.vireo.test:host'/>"),
        "{printed}"
    );
    let xml = dir.path().join("san.xml");
    std::fs::write(&xml, &printed).unwrap();
    ok(&d, &["pool-define", xml.to_str().unwrap()]);
    assert!(ok(&d, &["pool-start", "san"]).contains("Pool san started"));

    // The two disk LUNs (LUN 0 is tgtd's controller, no volume).
    let list = ok(&d, &["vol-list", "san"]);
    let url = |n: u32| format!("iscsi://169.254.77.1:3260/{}/{n}", t.iqn());
    assert!(
        list.contains("unit:0:0:1") && list.contains(&url(1)),
        "{list}"
    );
    assert!(
        list.contains("unit:0:0:2") && list.contains(&url(2)),
        "{list}"
    );
    assert!(!list.contains("unit:0:0:0"), "{list}");
    let info = ok(&d, &["vol-info", "unit:0:0:2", "--pool", "san"]);
    assert!(info.contains("Capacity:       4.00 MiB"), "{info}");
    let pool = ok(&d, &["pool-info", "san"]);
    assert!(pool.contains("Capacity:       12.00 MiB"), "{pool}");
    assert!(pool.contains("State:          running"), "{pool}");

    // The target makes, removes and sizes its LUNs.
    refused(
        &d,
        &["vol-create-as", "san", "new", "1M"],
        "does not support volume creation",
    );
    refused(
        &d,
        &["vol-delete", "unit:0:0:1", "--pool", "san"],
        "does not support vol deletion",
    );
    refused(
        &d,
        &["vol-resize", "unit:0:0:1", "16M", "--pool", "san"],
        "changing of volume capacity",
    );
    refused(
        &d,
        &["vol-info", "unit:0:0:7", "--pool", "san"],
        "unit:0:0:7",
    );

    // A domain whose disk is volume unit:0:0:1 of the pool runs on the LUN.
    let disk = "<disk type='volume' device='disk'><driver name='qemu' type='raw'/>\
                <source pool='san' volume='unit:0:0:1'/><target dev='vda' bus='virtio'/></disk>";
    let out = dir.path().join("vol.out");
    d.define(&guest_domain(
        "vol",
        "blk blk-first=10 blk-count=8",
        disk,
        &out,
    ));
    d.ok("POST", "/domains/vol/start", Some(&json!({})));
    wait_text(&out, "virtio-blk: ok capacity=16384 wrote=8");
    d.wait_state("vol", "shut_off", Duration::from_secs(30));
    for n in 10..18u64 {
        let got = sector_of(&t.lun_file(1), usize::try_from(n).unwrap());
        assert_eq!(fnv1a32(&got), fnv1a32(&pattern(n)), "sector {n}");
    }

    // A target that stops answering: the pool cannot start again.
    ok(&d, &["pool-destroy", "san"]);
    drop(t);
    let (code, _, err) = virsh(&d, &["pool-start", "san"]);
    assert_eq!(code, 1, "pool-start of a gone target succeeded");
    assert!(err.contains("iSCSI target"), "{err}");
}
