//! A disk's error policy through the daemon: a domain whose disk fills
//! its file system is `paused (ioerror)` with libvirt's event, and
//! `resume` after space is freed finishes the guest's writes.

mod common;
mod daemon_harness;

use std::path::Path;
use std::time::{Duration, Instant};

use daemon_harness::{domain_xml, have_kvm, Daemon, Events};

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

#[test]
fn a_full_disk_pauses_the_domain_for_an_io_error_and_resume_finishes_it() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        testkit::skip("mounting a small tmpfs needs root");
        return;
    }
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = common::SmallFs::mount(dir.path().join("small"), 512);
    let img = fs.0.join("thin.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let filler = fs.fill();
    let out = dir.path().join("console.txt");
    let disk = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='raw' error_policy='enospace'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk>",
        img.display()
    );
    let xml = domain_xml("full", "virtio", "")
        .replace("<memory unit='MiB'>32</memory>", "<memory unit='MiB'>64</memory>")
        .replace(
            "</os>",
            "<cmdline>mirror blk blk-first=8 blk-count=4</cmdline></os>",
        )
        .replace(
            "<devices>",
            &format!(
                "<devices>{disk}<console type='file'><source path='{}'/><target type='virtio'/></console>",
                out.display()
            ),
        );
    let d = Daemon::start(dir.path());
    let dumped = {
        d.define(&xml);
        d.ok("GET", "/domains/full/xml", None)["xml"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(dumped.contains("error_policy='enospace'"), "{dumped}");
    let mut events = Events::open(&d.socket, Some("full"));
    d.ok("POST", "/domains/full/start", None);
    let (state, reason) = d.wait_state("full", "paused", Duration::from_secs(30));
    assert_eq!((state.as_str(), reason.as_str()), ("paused", "io_error"));
    events.wait_for("suspended", "I/O Error", Duration::from_secs(10));

    std::fs::remove_file(&filler).unwrap();
    d.ok("POST", "/domains/full/resume", None);
    let seen = wait_text(&out, "virtio-blk: ");
    let seen = if seen.contains("virtio-blk: ok") || seen.contains("FAIL") {
        seen
    } else {
        wait_text(&out, "virtio-blk: ok")
    };
    assert!(seen.contains("virtio-blk: ok"), "{seen}");
    d.wait_state("full", "shut_off", Duration::from_secs(30));
    let data = std::fs::read(&img).unwrap();
    assert_eq!(&data[8 * 512..8 * 512 + 8], &8u64.to_le_bytes());
}
