//! iSCSI under `vireo daemon`, against a real tgtd (two LUNs) in a network
//! namespace the test makes, with the daemon running in it: a domain
//! whose `<disk type='network'>` is a LUN runs its guest on it (the
//! guest's writes are read back from the LUN's file, and the guest reads
//! what the host put there).

mod daemon_harness;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_harness::{domain_xml, have_kvm, Daemon};
use iscsi::test_target::{LunSpec, TestTarget};
use serde_json::json;

const SECTOR: usize = 512;
const MIB: u64 = 1 << 20;

/// The sector the `virtio` guest writes at `n` (guests/virtio/src/blk.rs).
fn guest_pattern(n: u64) -> Vec<u8> {
    let mut s = n.to_le_bytes().to_vec();
    s.extend((8..SECTOR as u64).map(|i| (n + i).to_le_bytes()[0]));
    s
}

fn fnv1a32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
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
        "blk blk-first=3 blk-count=32 blk-stride=3 blk-read=0",
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
    let rows = d.ok("GET", "/domains/net/disks", None);
    assert_eq!(
        rows[0]["source"],
        format!("iscsi://169.254.77.1:3260/{}/2", t.iqn()),
        "{rows}"
    );
    assert_eq!(rows[0]["kind"], "network", "{rows}");
    // The guest powers off when done.
    d.wait_state("net", "shut_off", Duration::from_secs(30));

    // What the guest wrote is in the LUN's file, checksummed sector by
    // sector; the other LUN is untouched.
    for k in 0..32u64 {
        let n = 3 + 3 * k;
        let got = sector_of(&t.lun_file(2), usize::try_from(n).unwrap());
        assert_eq!(fnv1a32(&got), fnv1a32(&guest_pattern(n)), "sector {n}");
    }
    assert!(std::fs::read(t.lun_file(1))
        .unwrap()
        .iter()
        .all(|&b| b == 0));

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
