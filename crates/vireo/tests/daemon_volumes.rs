//! The volume operations that move data, under `vireo daemon` through the
//! virsh verbs: vol-create-from (raw to qcow2 and back, an overlay by
//! backingStore), vol-clone (an overlay flattened), vol-wipe, and
//! vol-upload / vol-download (a 72 MiB file with holes, by sha256; ranges;
//! the read-only socket). Guest-visible data is checked with qemu-img
//! convert, an independent reader. A daemon killed with -9 mid-copy
//! leaves no half volume and starts again.

mod daemon_harness;

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_harness::{domain_xml, have_kvm, Daemon};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// The virsh verbs of `vireo` against `socket`: (exit code, stdout,
/// stderr).
fn virsh_at(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .env_remove("VIREO_DEFAULT_URI")
        .arg("-c")
        .arg(format!("vireo+unix:///system?socket={}", socket.display()))
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
    let (code, out, err) = virsh_at(&d.socket, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// A verb that must fail with one `error:` line containing `says`.
fn refused_at(socket: &Path, args: &[&str], says: &str) {
    let (code, _, err) = virsh_at(socket, args);
    assert_eq!(code, 1, "{args:?} should fail: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(says),
        "{args:?}: {err}"
    );
}

fn refused(d: &Daemon, args: &[&str], says: &str) {
    refused_at(&d.socket, args, says)
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The guest-visible data of `image` as qemu-img (the oracle) reads it,
/// converted to a raw file in `scratch`; its sha256.
fn guest_sha(image: &Path, format: &str, scratch: &Path) -> String {
    let out = scratch.join("oracle.raw");
    let _ = std::fs::remove_file(&out);
    let st = Command::new("qemu-img")
        .args(["convert", "-f", format, "-O", "raw"])
        .arg(image)
        .arg(&out)
        .status()
        .expect("qemu-img is installed (scripts/test.sh installs it)");
    assert!(st.success(), "qemu-img convert {}", image.display());
    let sum = sha256(&out);
    std::fs::remove_file(&out).unwrap();
    sum
}

fn qemu_img_info(image: &Path) -> Value {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes `len` bytes of a pattern seeded by `seed` at `offset` of `path`.
fn scribble(path: &Path, offset: u64, len: u64, seed: u8) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let block: Vec<u8> = (0..MIB)
        .map(|i| ((i % 251) as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect();
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB);
        f.write_all(&block[..n as usize]).unwrap();
        left -= n;
    }
    f.sync_all().unwrap();
}

/// A started `dir` pool `p` in `dir/images`.
fn pool(d: &Daemon, dir: &Path) -> PathBuf {
    let images = dir.join("images");
    ok(
        d,
        &[
            "pool-define-as",
            "p",
            "dir",
            "--target",
            images.to_str().unwrap(),
        ],
    );
    ok(d, &["pool-build", "p"]);
    ok(d, &["pool-start", "p"]);
    images
}

fn write_xml(dir: &Path, name: &str, xml: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, xml).unwrap();
    p.display().to_string()
}

#[test]
fn copies_convert_overlays_are_made_and_clones_stand_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let images = pool(&d, dir.path());
    ok(&d, &["vol-create-as", "p", "src.raw", "64M"]);
    let src = images.join("src.raw");
    scribble(&src, 0, 3 * MIB, 1);
    scribble(&src, 20 * MIB + 512, MIB, 2);
    scribble(&src, 63 * MIB, MIB, 3);
    let want = sha256(&src);

    // raw -> qcow2: the same guest data, sparse, a clean image.
    let q = write_xml(
        dir.path(),
        "q.xml",
        "<volume><name>copy.qcow2</name><capacity unit='M'>1</capacity>\
         <target><format type='qcow2'/></target></volume>",
    );
    assert_eq!(
        ok(
            &d,
            &["vol-create-from", "p", &q, "src.raw", "--inputpool", "p"]
        ),
        "Vol copy.qcow2 created from input vol src.raw\n\n"
    );
    let copy = images.join("copy.qcow2");
    assert_eq!(guest_sha(&copy, "qcow2", dir.path()), want);
    let info = qemu_img_info(&copy);
    assert_eq!(info["format"], "qcow2");
    assert_eq!(
        info["virtual-size"],
        64 * MIB,
        "never smaller than the input"
    );
    assert!(std::fs::metadata(&copy).unwrap().blocks() * 512 < 16 * MIB);
    assert!(Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(&copy)
        .status()
        .unwrap()
        .success());

    // qcow2 -> raw, the input named by its path.
    let r = write_xml(
        dir.path(),
        "r.xml",
        "<volume><name>back.raw</name><capacity>1</capacity>\
         <target><format type='raw'/></target></volume>",
    );
    let json = ok(
        &d,
        &["vol-create-from", "p", &r, copy.to_str().unwrap(), "--json"],
    );
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["format"].as_str()),
        (Some("back.raw"), Some("raw"))
    );
    let back = images.join("back.raw");
    assert_eq!(sha256(&back), want);
    assert!(
        std::fs::metadata(&back).unwrap().blocks() * 512 < 16 * MIB,
        "sparse"
    );

    // A backingStore on the input makes an overlay, no copy.
    let o = write_xml(
        dir.path(),
        "o.xml",
        &format!(
            "<volume><name>top.qcow2</name><capacity>1</capacity>\
             <target><format type='qcow2'/></target>\
             <backingStore><path>{}</path><format type='raw'/></backingStore></volume>",
            src.display()
        ),
    );
    ok(
        &d,
        &["vol-create-from", "p", &o, "src.raw", "--inputpool", "p"],
    );
    let top = images.join("top.qcow2");
    assert_eq!(
        qemu_img_info(&top)["backing-filename"],
        src.display().to_string()
    );
    assert!(std::fs::metadata(&top).unwrap().len() < MIB);
    // Data written into the overlay, then a clone: flattened.
    Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x5a 8M 64k"])
        .arg(&top)
        .stdout(Stdio::null())
        .status()
        .ok()
        .filter(|s| s.success())
        .map(|_| ())
        .unwrap_or_else(|| scribble_overlay(&top));
    let top_sha = guest_sha(&top, "qcow2", dir.path());
    assert_ne!(top_sha, want);
    assert_eq!(
        ok(&d, &["vol-clone", "top.qcow2", "flat.qcow2", "--pool", "p"]),
        "Vol flat.qcow2 cloned from top.qcow2\n\n"
    );
    let flat = images.join("flat.qcow2");
    let info = qemu_img_info(&flat);
    assert!(info.get("backing-filename").is_none(), "{info}");
    assert_eq!(guest_sha(&flat, "qcow2", dir.path()), top_sha);

    // Refusals, each one line.
    refused(
        &d,
        &["vol-clone", "src.raw", "copy.qcow2", "--pool", "p"],
        "already in use",
    );
    let xml = std::fs::read_to_string(&o).unwrap();
    let other = write_xml(
        dir.path(),
        "o2.xml",
        &xml.replace("top.qcow2", "top2.qcow2"),
    );
    refused(
        &d,
        &[
            "vol-create-from",
            "p",
            &other,
            "back.raw",
            "--inputpool",
            "p",
        ],
        "is not the input volume",
    );
    refused(&d, &["vol-clone", "nope", "x", "--pool", "p"], "nope");
    // Nothing half-made is left in the pool directory.
    let hidden: Vec<_> = std::fs::read_dir(&images)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

/// Data into an overlay without qemu-io: through `vireo`'s own image
/// layer is not reachable from here, so a raw write of the pattern is
/// made on a converted copy and converted back (both by qemu-img).
fn scribble_overlay(top: &Path) {
    let base = qemu_img_info(top)["backing-filename"]
        .as_str()
        .unwrap()
        .to_string();
    let raw = top.with_extension("tmp.raw");
    assert!(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(top)
        .arg(&raw)
        .status()
        .unwrap()
        .success());
    scribble(&raw, 8 * MIB, 64 << 10, 0x5a);
    assert!(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2", "-B", &base, "-F", "raw"])
        .arg(&raw)
        .arg(top)
        .status()
        .unwrap()
        .success());
    std::fs::remove_file(&raw).unwrap();
}

#[test]
fn wipe_overwrites_the_file_by_libvirts_algorithms() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let images = pool(&d, dir.path());
    ok(&d, &["vol-create-as", "p", "w.raw", "8M"]);
    scribble(&images.join("w.raw"), MIB, 2 * MIB, 9);
    assert_eq!(
        ok(&d, &["vol-wipe", "w.raw", "--pool", "p"]),
        "Vol w.raw wiped\n\n"
    );
    let data = std::fs::read(images.join("w.raw")).unwrap();
    assert_eq!(data.len() as u64, 8 * MIB);
    assert!(data.iter().all(|&b| b == 0));

    // A qcow2 volume: the whole file is zeroed, as libvirt does; it is a
    // raw volume of zeroes as long as the file was.
    ok(
        &d,
        &["vol-create-as", "p", "w.qcow2", "8M", "--format", "qcow2"],
    );
    let len = std::fs::metadata(images.join("w.qcow2")).unwrap().len();
    let v: Value = serde_json::from_str(&ok(
        &d,
        &[
            "vol-wipe",
            "w.qcow2",
            "--pool",
            "p",
            "--algorithm",
            "zero",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(v["format"], "raw");
    assert_eq!(v["capacity"], len);
    let data = std::fs::read(images.join("w.qcow2")).unwrap();
    assert!(data.iter().all(|&b| b == 0));

    // libvirt's pattern algorithms: DoD ends with a pass of ones (then
    // verifies it); Gutmann's 35 passes end with four random ones.
    ok(
        &d,
        &["vol-wipe", "w.raw", "--pool", "p", "--algorithm", "dod"],
    );
    let data = std::fs::read(images.join("w.raw")).unwrap();
    assert_eq!(data.len() as u64, 8 * MIB);
    assert!(data.iter().all(|&b| b == 0xff));
    ok(
        &d,
        &["vol-wipe", "w.raw", "--pool", "p", "--algorithm", "gutmann"],
    );
    let data = std::fs::read(images.join("w.raw")).unwrap();
    assert_eq!(data.len() as u64, 8 * MIB);
    assert!(data.chunks(4096).all(|c| c.iter().any(|&b| b != 0xff)));
    ok(
        &d,
        &["vol-wipe", "w.raw", "--pool", "p", "--algorithm", "trim"],
    );
    assert!(std::fs::read(images.join("w.raw"))
        .unwrap()
        .iter()
        .all(|&b| b == 0));

    refused(
        &d,
        &["vol-wipe", "w.raw", "--pool", "p", "--algorithm", "shred"],
        "unknown wipe algorithm 'shred': one of zero, nnsa, dod, bsi, gutmann",
    );
    refused(&d, &["vol-wipe", "none", "--pool", "p"], "none");
}

/// A 72 MiB file of data and holes.
fn holey_file(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(72 * MIB).unwrap();
    drop(f);
    for (at, len, seed) in [
        (0, MIB + 7, 4u8),
        (10 * MIB, 5 * MIB, 5),
        (40 * MIB + 4096, 3 * MIB, 6),
        (71 * MIB, MIB, 7),
    ] {
        scribble(path, at, len, seed);
    }
}

#[test]
fn upload_and_download_round_trip_by_sha256_with_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let images = pool(&d, dir.path());
    let local = dir.path().join("local.img");
    holey_file(&local);
    let want = sha256(&local);
    ok(&d, &["vol-create-as", "p", "big", "72M"]);
    // stderr is no terminal here: no progress bar, nothing but the blank
    // line on stdout.
    let (code, out, err) = virsh_at(
        &d.socket,
        &["vol-upload", "big", local.to_str().unwrap(), "--pool", "p"],
    );
    assert_eq!((code, out.as_str(), err.as_str()), (0, "\n", ""));
    assert_eq!(sha256(&images.join("big")), want);
    // On a terminal (script(1) gives it one) the bar shows the total.
    let line = format!(
        "{} -c 'vireo+unix:///system?socket={}' vol-upload big {} --pool p",
        env!("CARGO_BIN_EXE_vireo"),
        d.socket.display(),
        local.display()
    );
    match Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("VIREO_DEFAULT_URI")
        .output()
    {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "{text}");
            assert!(text.contains("/72.00 MiB"), "no progress bar: {text:?}");
        }
        Err(e) => eprintln!("script(1) is not available ({e}): the bar is not checked"),
    }
    let out = dir.path().join("out.img");
    let json = ok(
        &d,
        &[
            "vol-download",
            "big",
            out.to_str().unwrap(),
            "--pool",
            "p",
            "--json",
        ],
    );
    assert_eq!(json.trim(), format!("{{\"bytes\":{}}}", 72 * MIB));
    assert_eq!(sha256(&out), want);
    let m = std::fs::metadata(&out).unwrap();
    assert_eq!(m.len(), 72 * MIB);
    assert!(m.blocks() * 512 < 20 * MIB, "the download keeps the holes");
    // Neither direction held the 72 MiB at once: the daemon's peak
    // resident memory stays well under it.
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!("daemon peak RSS after the transfers: {peak_kib} KiB");
    assert!(peak_kib < 48 * 1024, "daemon peak RSS {peak_kib} KiB");

    // --offset and --length on both sides.
    let small = dir.path().join("small");
    std::fs::write(&small, vec![0xabu8; 10_000]).unwrap();
    let path = images.join("big");
    ok(
        &d,
        &[
            "vol-upload",
            path.to_str().unwrap(),
            small.to_str().unwrap(),
            "--offset",
            "1048576",
            "--length",
            "4096",
        ],
    );
    let part = dir.path().join("part");
    ok(
        &d,
        &[
            "vol-download",
            "big",
            part.to_str().unwrap(),
            "--pool",
            "p",
            "--offset",
            "1048000",
            "--length",
            "5000",
        ],
    );
    let got = std::fs::read(&part).unwrap();
    assert_eq!(got.len(), 5000);
    let vol = std::fs::read(&path).unwrap();
    assert_eq!(got, &vol[1_048_000..1_053_000]);
    assert!(vol[1_048_576..1_048_576 + 4096].iter().all(|&b| b == 0xab));
    assert_ne!(vol[1_048_576 + 4096], 0xab, "--length bounds the upload");

    // Clear refusals.
    refused(
        &d,
        &[
            "vol-download",
            "big",
            part.to_str().unwrap(),
            "--pool",
            "p",
            "--offset",
            &(73 * MIB).to_string(),
        ],
        "past the end",
    );
    refused(
        &d,
        &[
            "vol-download",
            "big",
            part.to_str().unwrap(),
            "--pool",
            "p",
            "--offset",
            "0",
            "--length",
            &(73 * MIB).to_string(),
        ],
        "reaches past the end",
    );
    refused(
        &d,
        &[
            "vol-upload",
            "big",
            small.to_str().unwrap(),
            "--pool",
            "p",
            "--offset",
            "x1",
        ],
        "Numeric value 'x1' for <offset> option is malformed",
    );
    refused(
        &d,
        &["vol-upload", "big", "/nonexistent/file", "--pool", "p"],
        "cannot read /nonexistent/file: No such file or directory",
    );
    refused(
        &d,
        &["vol-upload", "big", "/tmp", "--pool", "p"],
        "cannot read /tmp: it is a directory",
    );
    refused(
        &d,
        &["vol-upload", "nope", small.to_str().unwrap(), "--pool", "p"],
        "nope",
    );
    // The read-only socket moves no bytes either way; the volume is intact.
    refused_at(
        &d.ro_socket,
        &["vol-upload", "big", small.to_str().unwrap(), "--pool", "p"],
        "read only",
    );
    refused_at(
        &d.ro_socket,
        &["vol-download", "big", part.to_str().unwrap(), "--pool", "p"],
        "read only",
    );
    assert_eq!(std::fs::read(&path).unwrap(), vol);

    if have_kvm() {
        let xml = domain_xml("user", "idle", "").replace(
            "<devices>",
            &format!(
                "<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>\
                 <source file='{}'/><target dev='vda' bus='virtio'/></disk>",
                path.display()
            ),
        );
        d.define(&xml);
        d.ok("POST", "/domains/user/start", None);
        refused(
            &d,
            &["vol-upload", "big", small.to_str().unwrap(), "--pool", "p"],
            "in use by running domain(s) user",
        );
        refused(
            &d,
            &["vol-wipe", "big", "--pool", "p"],
            "in use by running domain(s) user",
        );
        d.ok("POST", "/domains/user/destroy", None);
        d.wait_state("user", "shut_off", Duration::from_secs(10));
    }
}

#[test]
fn a_daemon_killed_mid_copy_leaves_no_half_volume_and_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    let images = pool(&d, dir.path());
    ok(&d, &["vol-create-as", "p", "src.raw", "1G"]);
    let src = images.join("src.raw");
    for i in 0..6u8 {
        scribble(&src, u64::from(i) * 160 * MIB, 64 * MIB, i);
    }
    let q = write_xml(
        dir.path(),
        "q.xml",
        "<volume><name>dst.qcow2</name><capacity unit='G'>1</capacity>\
         <target><format type='qcow2'/></target></volume>",
    );
    let mut cli = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .env_remove("VIREO_DEFAULT_URI")
        .arg("-c")
        .arg(format!(
            "vireo+unix:///system?socket={}",
            d.socket.display()
        ))
        .args(["vol-create-from", "p", &q, "src.raw", "--inputpool", "p"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let temp = images.join(".dst.qcow2.vireo-new");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&temp).map(|m| m.len()).unwrap_or(0) < 8 * MIB {
        assert!(Instant::now() < deadline, "the copy never began");
        assert!(
            cli.try_wait().unwrap().is_none(),
            "the copy ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    d.kill9();
    let st = cli.wait().unwrap();
    assert!(!st.success(), "the CLI reports the lost daemon");
    assert!(
        !images.join("dst.qcow2").exists(),
        "no half volume under its name"
    );

    d.spawn();
    let list = ok(&d, &["vol-list", "p"]);
    assert!(list.contains("src.raw") && !list.contains("dst"), "{list}");
    assert!(!temp.exists(), "the leftover was swept");
    // And the copy can be made again, whole.
    ok(
        &d,
        &["vol-create-from", "p", &q, "src.raw", "--inputpool", "p"],
    );
    assert_eq!(
        guest_sha(&images.join("dst.qcow2"), "qcow2", dir.path()),
        sha256(&src)
    );
}

/// A loop device over a sparse file, with partition scanning; detached
/// when dropped, even on failure.
struct Loop(String);

impl Loop {
    fn attach(file: &Path, size: u64) -> Option<Loop> {
        std::fs::File::create(file).unwrap().set_len(size).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .arg(file)
            .output()
            .ok()?;
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && dev.starts_with("/dev/loop")).then_some(Loop(dev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn a_disk_pool_partition_is_copied_out_wiped_and_moved_but_never_copied_into() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lo) = Loop::attach(&dir.path().join("disk.img"), 48 * MIB) else {
        testkit::skip("no loop device could be attached");
        return;
    };
    let d = Daemon::start(dir.path());
    let images = pool(&d, dir.path());
    ok(&d, &["pool-define-as", "d", "disk", "--source-dev", &lo.0]);
    ok(&d, &["pool-build", "d"]);
    ok(&d, &["pool-start", "d"]);
    let part = format!("{}p1", lo.0.trim_start_matches("/dev/"));
    ok(&d, &["vol-create-as", "d", &part, "16M"]);
    let size = std::fs::File::open(format!("/dev/{part}"))
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .unwrap();

    // Upload into the partition, download it whole, copy it out as qcow2.
    let data = dir.path().join("data");
    std::fs::File::create(&data).unwrap();
    scribble_new(&data, 3 * MIB);
    ok(
        &d,
        &[
            "vol-upload",
            &part,
            data.to_str().unwrap(),
            "--pool",
            "d",
            "--offset",
            "4096",
        ],
    );
    let whole = dir.path().join("whole");
    ok(
        &d,
        &[
            "vol-download",
            &part,
            whole.to_str().unwrap(),
            "--pool",
            "d",
        ],
    );
    let got = std::fs::read(&whole).unwrap();
    assert_eq!(got.len() as u64, size);
    assert_eq!(
        &got[4096..4096 + (3 << 20)],
        &std::fs::read(&data).unwrap()[..]
    );
    let q = write_xml(
        dir.path(),
        "q.xml",
        "<volume><name>part.qcow2</name><capacity>1</capacity>\
         <target><format type='qcow2'/></target></volume>",
    );
    ok(&d, &["vol-create-from", "p", &q, &part, "--inputpool", "d"]);
    assert_eq!(
        guest_sha(&images.join("part.qcow2"), "qcow2", dir.path()),
        sha256(&whole)
    );

    // What a partition cannot do, in one line each.
    refused(
        &d,
        &["vol-clone", &part, "x", "--pool", "d"],
        "cannot copy into disk pool volume 'x'",
    );
    let past = (size - 100).to_string();
    refused(
        &d,
        &[
            "vol-upload",
            &part,
            data.to_str().unwrap(),
            "--pool",
            "d",
            "--offset",
            &past,
        ],
        "reaches past the end of partition",
    );

    // A wipe zeroes the whole partition.
    assert_eq!(
        ok(&d, &["vol-wipe", &part, "--pool", "d"]),
        format!("Vol {part} wiped\n\n")
    );
    let zero = std::fs::read(format!("/dev/{part}")).unwrap();
    assert!(zero.iter().all(|&b| b == 0));
    ok(&d, &["vol-delete", &part, "--pool", "d"]);
}

/// Fills the empty file `path` with `len` bytes of pattern.
fn scribble_new(path: &Path, len: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
    scribble(path, 0, len, 0x42);
}

/// A filesystem mounted on a directory for one test, unmounted when
/// dropped.
struct Mounted(PathBuf);

impl Mounted {
    fn new(args: &[&str], at: &Path) -> Option<Mounted> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(args)
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mounted(at.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `--reflink` on vol-clone and vol-create-from: on XFS (reflink=1) the
/// clone shares the source's blocks (the kernel's extent map says
/// "shared") and writing one leaves the other as it was; where the pool's
/// filesystem has no reflinks (tmpfs), or a volume is not raw, it is
/// refused rather than copied.
#[test]
fn reflink_clones_share_blocks_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let have_xfs = Command::new("sh")
        .args(["-c", "command -v mkfs.xfs && command -v filefrag"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_xfs {
        testkit::skip(
            "mkfs.xfs or filefrag is missing (scripts/test.sh installs xfsprogs, e2fsprogs)",
        );
        return;
    }
    let Some(lo) = Loop::attach(&dir.path().join("xfs.img"), 320 * MIB) else {
        testkit::skip("no loop device could be attached");
        return;
    };
    let made = Command::new("mkfs.xfs")
        .args(["-q", "-f", "-m", "reflink=1", &lo.0])
        .status()
        .unwrap();
    assert!(made.success());
    let Some(xfs) = Mounted::new(&[&lo.0], &dir.path().join("xfs")) else {
        testkit::skip("cannot mount XFS here");
        return;
    };
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let d = Daemon::start(&state);
    let images = pool(&d, &xfs.0);
    ok(&d, &["vol-create-as", "p", "a.raw", "8M"]);
    scribble(&images.join("a.raw"), 0, 8 * MIB, 3);
    let before = sha256(&images.join("a.raw"));
    assert_eq!(
        ok(
            &d,
            &["vol-clone", "a.raw", "b.raw", "--pool", "p", "--reflink"]
        ),
        "Vol b.raw cloned from a.raw\n\n"
    );
    assert_eq!(sha256(&images.join("b.raw")), before);
    let extents = Command::new("filefrag")
        .arg("-v")
        .arg(images.join("b.raw"))
        .output()
        .unwrap();
    let extents = String::from_utf8_lossy(&extents.stdout);
    assert!(extents.contains("shared"), "{extents}");
    scribble(&images.join("b.raw"), MIB, MIB, 9);
    assert_eq!(sha256(&images.join("a.raw")), before);
    assert_ne!(sha256(&images.join("b.raw")), before);

    // vol-create-from with a larger capacity: shared, then grown.
    let xml = write_xml(
        dir.path(),
        "c.xml",
        "<volume><name>c.raw</name><capacity unit='M'>16</capacity></volume>",
    );
    ok(
        &d,
        &[
            "vol-create-from",
            "p",
            &xml,
            "a.raw",
            "--inputpool",
            "p",
            "--reflink",
        ],
    );
    assert_eq!(
        std::fs::metadata(images.join("c.raw")).unwrap().len(),
        16 * MIB
    );

    ok(
        &d,
        &["vol-create-as", "p", "q.qcow2", "8M", "--format", "qcow2"],
    );
    refused(
        &d,
        &["vol-clone", "q.qcow2", "r.qcow2", "--pool", "p", "--reflink"],
        "--reflink: only a raw volume is cloned into a raw one (the input is qcow2, the new volume qcow2)",
    );

    // tmpfs has no reflinks: refused, and nothing is left behind.
    let Some(tmp) = Mounted::new(&["-t", "tmpfs", "tmpfs"], &dir.path().join("tmp")) else {
        testkit::skip("cannot mount a tmpfs here");
        return;
    };
    let images = tmp.0.join("images");
    for args in [
        vec![
            "pool-define-as",
            "t",
            "dir",
            "--target",
            images.to_str().unwrap(),
        ],
        vec!["pool-build", "t"],
        vec!["pool-start", "t"],
        vec!["vol-create-as", "t", "a.raw", "4M"],
    ] {
        ok(&d, &args);
    }
    refused(
        &d,
        &["vol-clone", "a.raw", "b.raw", "--pool", "t", "--reflink"],
        "cannot share blocks",
    );
    let left: Vec<_> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["a.raw"], "{left:?}");
}

/// `vol-upload --sparse`: a file of data and holes uploaded into a
/// volume that was written whole reads back the same, and the volume is
/// left about as allocated as the file (its blocks of zeroes punched
/// out); without `--sparse` every byte is written.
#[test]
fn a_sparse_upload_keeps_the_files_holes() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let images = pool(&d, dir.path());
    let local = dir.path().join("local.img");
    holey_file(&local);
    let data = local.metadata().unwrap().blocks() * 512;
    for (name, sparse) in [("s.raw", true), ("f.raw", false)] {
        ok(&d, &["vol-create-as", "p", name, "72M"]);
        scribble(&images.join(name), 0, 72 * MIB, 1);
        let mut args = vec!["vol-upload", name, local.to_str().unwrap(), "--pool", "p"];
        if sparse {
            args.push("--sparse");
        }
        ok(&d, &args);
        assert_eq!(sha256(&images.join(name)), sha256(&local), "{name}");
        let allocated = images.join(name).metadata().unwrap().blocks() * 512;
        if sparse {
            // The filesystem's own extents round a little either way.
            assert!(
                allocated <= data + 4 * MIB,
                "{allocated} bytes allocated for {data} of data"
            );
        } else {
            assert!(allocated >= 72 * MIB, "{allocated}");
        }
    }
}

/// `vol-create-as --prealloc-metadata`: a qcow2 volume with every cluster
/// mapped (qemu-img check counts them all allocated, as for its own
/// preallocation=metadata), clean; refused for a raw volume, which is then
/// not made.
#[test]
fn prealloc_metadata_maps_a_qcow2_volume_and_is_refused_for_raw() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let images = pool(&d, dir.path());
    assert_eq!(
        ok(
            &d,
            &[
                "vol-create-as",
                "p",
                "m.qcow2",
                "24M",
                "--format",
                "qcow2",
                "--prealloc-metadata"
            ]
        ),
        "Vol m.qcow2 created\n\n"
    );
    let out = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(images.join("m.qcow2"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("384/384 = 100.00% allocated"), "{report}");
    refused(
        &d,
        &["vol-create-as", "p", "r.raw", "8M", "--prealloc-metadata"],
        "metadata preallocation is for qcow2 volumes; volume 'r.raw' is raw",
    );
    assert!(!images.join("r.raw").exists());

    // A clone of a qcow2 volume with data: preallocated first, then the
    // data copied into its clusters; the guest sees the same bytes.
    let raw = dir.path().join("data.raw");
    std::fs::File::create(&raw).unwrap();
    scribble(&raw, 3 * MIB, 2 * MIB, 5);
    let made = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(images.join("src.qcow2"))
        .status()
        .unwrap();
    assert!(made.success());
    ok(&d, &["pool-refresh", "p"]);
    ok(
        &d,
        &[
            "vol-clone",
            "src.qcow2",
            "c.qcow2",
            "--pool",
            "p",
            "--prealloc-metadata",
        ],
    );
    let check = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(images.join("c.qcow2"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert!(report.contains("= 100.00% allocated"), "{report}");
    let same = Command::new("qemu-img")
        .args(["compare", "-q", "-f", "qcow2", "-F", "qcow2"])
        .arg(images.join("src.qcow2"))
        .arg(images.join("c.qcow2"))
        .status()
        .unwrap();
    assert!(same.success());
    ok(&d, &["vol-create-as", "p", "plain.raw", "1M"]);
    refused(
        &d,
        &[
            "vol-clone",
            "plain.raw",
            "d.raw",
            "--pool",
            "p",
            "--prealloc-metadata",
        ],
        "metadata preallocation is for qcow2 volumes; volume 'd.raw' is raw",
    );
}
