//! qcow2 images on an export, opened over nfs:// by the block layer:
//! the same workload as on a local raw file, judged by qemu-img on the
//! export's directory; backing chains on the export; the refusals.

// Test sizes are small and the tests run on 64-bit hosts only.
#![allow(clippy::cast_possible_truncation)]

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use super::{chain, server};
use crate::{BackingPolicy, DiskImage, ImageFormat, OpenOptions};

const MIB: u64 = 1024 * 1024;
const CLUSTER: u64 = 65536;

/// A small deterministic generator (xorshift64*), so a failure repeats.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.below(256) as u8;
        }
    }
}

/// Run qemu-img in `dir`; its output, or `None` (after a SKIP line) when
/// qemu-img is not installed.
fn qemu_img(dir: &Path, args: &[&str]) -> Option<std::process::Output> {
    match Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIP: qemu-img is not installed");
            None
        }
        Err(e) => panic!("qemu-img: {e}"),
    }
}

/// Run qemu-img in `dir` and require success.
fn qemu_ok(dir: &Path, args: &[&str]) -> Option<String> {
    let out = qemu_img(dir, args)?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "qemu-img {args:?}: {text}");
    Some(text)
}

fn qcow2_opts() -> OpenOptions {
    OpenOptions {
        format: Some(ImageFormat::Qcow2),
        ..OpenOptions::default()
    }
}

fn open_qcow2(url: &str) -> Arc<dyn DiskImage> {
    crate::open(Path::new(url), &qcow2_opts()).unwrap_or_else(|e| panic!("{}", chain(&e)))
}

fn open_err(url: &str, opts: &OpenOptions) -> String {
    match crate::open(Path::new(url), opts) {
        Ok(_) => panic!("{url} opened"),
        Err(e) => chain(&e),
    }
}

/// The same random writes, write-zeroes and whole-cluster discards on
/// `disk` and on the local raw file `raw`, with reads compared as they go.
fn workload(disk: &dyn DiskImage, raw: &std::fs::File, seed: u64, ops: usize) {
    let size = disk.size();
    let mut rng = Rng(seed);
    for i in 0..ops {
        let off = rng.below(size);
        let len = rng.below((size - off).min(3 * CLUSTER)) + 1;
        match rng.below(10) {
            0 => {
                disk.write_zeroes(off, len, i % 2 == 0).unwrap();
                raw.write_all_at(&vec![0u8; len as usize], off).unwrap();
            }
            1 => {
                // A discard frees whole clusters only (no backing file:
                // they read as zeroes); the rest of the range is kept.
                let first = off.div_ceil(CLUSTER) * CLUSTER;
                let end = (off + len) / CLUSTER * CLUSTER;
                disk.discard(off, len).unwrap();
                if end > first {
                    let zeroes = vec![0u8; (end - first) as usize];
                    raw.write_all_at(&zeroes, first).unwrap();
                }
            }
            2 => {
                let mut got = vec![0u8; len as usize];
                let mut want = vec![0u8; len as usize];
                disk.read_at(off, &mut got).unwrap();
                raw.read_exact_at(&mut want, off).unwrap();
                assert!(got == want, "read {off:#x}+{len:#x} differs");
            }
            _ => {
                let mut buf = vec![0u8; len as usize];
                rng.fill(&mut buf);
                disk.write_at(off, &buf).unwrap();
                raw.write_all_at(&buf, off).unwrap();
            }
        }
    }
    disk.flush().unwrap();
}

/// All of `disk` equals all of the file at `raw`.
fn assert_same(disk: &dyn DiskImage, raw: &Path) {
    let want = std::fs::read(raw).unwrap();
    let mut got = vec![0u8; want.len()];
    disk.read_at(0, &mut got).unwrap();
    let diff = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        diff.is_none(),
        "the disk differs from {} at {diff:?}",
        raw.display()
    );
}

/// qemu-img finds the image clean (no errors, no leaks) and equal to the
/// raw file.
fn assert_clean_and_same(dir: &Path, img: &str, raw: &Path) {
    let Some(report) = qemu_ok(dir, &["check", "-f", "qcow2", img]) else {
        return;
    };
    assert!(report.contains("No errors were found"), "{report}");
    let raw = raw.to_str().unwrap();
    let same = qemu_ok(dir, &["compare", "-f", "qcow2", "-F", "raw", img, raw]).unwrap();
    assert!(same.contains("Images are identical"), "{same}");
}

#[test]
fn a_qcow2_image_on_an_export_takes_what_a_local_raw_file_takes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = server("q2", dir.path()) else {
        return;
    };
    let export = s.export().to_owned();
    if qemu_img(
        &export,
        &["create", "-q", "-f", "qcow2", "img.qcow2", "32M"],
    )
    .is_none()
    {
        return;
    }
    let raw_path = dir.path().join("mirror.raw");
    let raw = std::fs::File::create_new(&raw_path).unwrap();
    raw.set_len(32 * MIB).unwrap();
    let before = std::fs::metadata(export.join("img.qcow2")).unwrap().len();
    {
        let _in = s.enter().unwrap();
        let disk = open_qcow2(&s.url("img.qcow2"));
        assert_eq!(disk.format(), ImageFormat::Qcow2);
        assert_eq!(disk.size(), 32 * MIB);
        // No host file under it: every request goes to the worker threads.
        assert!(disk.direct_file().is_none());
        workload(&*disk, &raw, 7, 400);
        assert_same(&*disk, &raw_path);
        // Requests from several workers at once, through the file's
        // service thread.
        let new: Vec<u8> = (0..4 * MIB).map(|i| (i % 239) as u8).collect();
        crate::test_depth::write_at_depth_four(disk.clone(), &new, 256 * 1024);
        raw.write_all_at(&new, 0).unwrap();
        let read = crate::test_depth::read_at_depth_four(disk.clone(), 64, 64 * 1024);
        assert!(
            read == new,
            "reads at depth four differ from what was written"
        );
        disk.flush().unwrap();
        assert!(disk.host_allocated_bytes().unwrap() > 0);
    }
    // Allocation grew the file through writes past its end.
    let after = std::fs::metadata(export.join("img.qcow2")).unwrap().len();
    assert!(after > before + 4 * MIB, "{before} -> {after}");
    assert_clean_and_same(&export, "img.qcow2", &raw_path);

    // Grown over nfs:// (a larger L1 table), written past the old end.
    {
        let _in = s.enter().unwrap();
        let disk = open_qcow2(&s.url("img.qcow2"));
        disk.resize(48 * MIB).unwrap();
        let tail = vec![0x5au8; 100_000];
        disk.write_at(40 * MIB + 123, &tail).unwrap();
        raw.set_len(48 * MIB).unwrap();
        raw.write_all_at(&tail, 40 * MIB + 123).unwrap();
        disk.flush().unwrap();
    }
    assert_clean_and_same(&export, "img.qcow2", &raw_path);

    // Read-only: reads, and writes are refused.
    let _in = s.enter().unwrap();
    let ro = OpenOptions {
        read_only: true,
        ..qcow2_opts()
    };
    let disk = crate::open(Path::new(&s.url("img.qcow2")), &ro).unwrap();
    assert_same(&*disk, &raw_path);
    assert!(matches!(
        disk.write_at(0, &[1u8; 512]),
        Err(crate::Error::ReadOnly)
    ));
}

#[test]
fn backing_files_beside_the_image_on_the_export_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = server("q2bk", dir.path()) else {
        return;
    };
    let export = s.export().to_owned();
    // base.raw <- mid.qcow2 <- top.qcow2, named relative to each other.
    let base: Vec<u8> = (0..8 * MIB).map(|i| (i % 251) as u8).collect();
    std::fs::write(export.join("base.raw"), &base).unwrap();
    let made = qemu_img(
        &export,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            "mid.qcow2",
        ],
    );
    if made.is_none() {
        return;
    }
    qemu_ok(
        &export,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "./mid.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    // mid's own data, written locally.
    let mid_data = vec![0x77u8; 3 * CLUSTER as usize];
    crate::open(&export.join("mid.qcow2"), &qcow2_opts())
        .unwrap()
        .write_at(2 * MIB + 1000, &mid_data)
        .unwrap();
    let mirror_path = dir.path().join("mirror.raw");
    let mut mirror = base.clone();
    mirror[2 * MIB as usize + 1000..][..mid_data.len()].copy_from_slice(&mid_data);
    std::fs::write(&mirror_path, &mirror).unwrap();
    let raw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&mirror_path)
        .unwrap();
    {
        let _in = s.enter().unwrap();
        let disk = open_qcow2(&s.url("top.qcow2"));
        assert_same(&*disk, &mirror_path);
        // Partial-cluster writes copy the rest of the cluster up from the
        // chain (over nfs://); zeroes must hide the backing data.
        workload(&*disk, &raw, 11, 200);
        assert_same(&*disk, &mirror_path);
    }
    assert_clean_and_same(&export, "top.qcow2", &mirror_path);
    // The backing files were opened read-only and are unchanged.
    assert!(std::fs::read(export.join("base.raw")).unwrap() == base);
}

#[test]
fn wrong_formats_and_unreachable_backing_files_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = server("q2no", dir.path()) else {
        return;
    };
    let export = s.export().to_owned();
    let create = |args: &[&str]| {
        let mut all = vec!["create", "-q", "-f", "qcow2", "-u"];
        all.extend_from_slice(args);
        qemu_img(&export, &all)
    };
    if create(&["plain.qcow2", "8M"]).is_none() {
        return;
    }
    std::fs::write(export.join("disk.raw"), vec![0u8; MIB as usize]).unwrap();
    std::fs::create_dir(export.join("sub")).unwrap();
    std::fs::write(export.join("sub/base.raw"), vec![0u8; MIB as usize]).unwrap();
    let host_base = dir.path().join("host-base.raw");
    std::fs::write(&host_base, vec![0u8; MIB as usize]).unwrap();
    let host_base = host_base.to_str().unwrap().to_owned();
    for (name, backing, format) in [
        ("abs.qcow2", host_base.as_str(), "raw"),
        ("sub.qcow2", "sub/base.raw", "raw"),
        ("up.qcow2", "../base.raw", "raw"),
        ("url.qcow2", "nfs://192.0.2.1/export/base.raw", "raw"),
        ("missing.qcow2", "gone.qcow2", "qcow2"),
        ("loop-a.qcow2", "loop-b.qcow2", "qcow2"),
        ("loop-b.qcow2", "loop-a.qcow2", "qcow2"),
    ] {
        create(&["-b", backing, "-F", format, name, "8M"]).unwrap();
    }
    // A backing file whose format the image does not record: qemu-img no
    // longer makes one, so its backing format extension is renamed to
    // one nobody knows.
    create(&["-b", "disk.raw", "-F", "raw", "noformat.qcow2", "1M"]).unwrap();
    let mut head = std::fs::read(export.join("noformat.qcow2")).unwrap();
    let at = head
        .windows(4)
        .position(|w| w == [0xe2, 0x79, 0x2a, 0xca])
        .unwrap();
    head[at..at + 4].copy_from_slice(b"none");
    std::fs::write(export.join("noformat.qcow2"), &head).unwrap();
    let _in = s.enter().unwrap();
    let one_line = |text: &str| assert!(!text.contains('\n'), "{text}");

    // No format given: a qcow2 image is not probed into one.
    let e = open_err(&s.url("plain.qcow2"), &OpenOptions::default());
    assert!(e.contains("format=qcow2"), "{e}");
    one_line(&e);
    // A raw file is no qcow2 image.
    let e = open_err(&s.url("disk.raw"), &qcow2_opts());
    assert!(e.starts_with(&s.url("disk.raw")), "{e}");
    assert!(e.contains("not a qcow2 image"), "{e}");
    one_line(&e);

    for (name, says) in [
        ("abs.qcow2", "absolute host path"),
        ("sub.qcow2", "another directory"),
        ("up.qcow2", "another directory"),
        ("url.qcow2", "is a URL"),
        ("noformat.qcow2", "does not record its format"),
    ] {
        let e = open_err(&s.url(name), &qcow2_opts());
        assert!(e.starts_with(&s.url(name)), "{e}");
        assert!(e.contains(says), "{name}: {e}");
        one_line(&e);
    }
    let e = open_err(&s.url("missing.qcow2"), &qcow2_opts());
    assert!(e.contains(&s.url("gone.qcow2")), "{e}");
    one_line(&e);
    let e = open_err(&s.url("loop-a.qcow2"), &qcow2_opts());
    assert!(e.contains("backing chain loops"), "{e}");
    one_line(&e);

    // What the backing policy says holds over nfs:// too.
    std::fs::write(export.join("ok.raw"), vec![0u8; MIB as usize]).unwrap();
    create(&["-b", "ok.raw", "-F", "raw", "ok.qcow2", "1M"]).unwrap();
    open_qcow2(&s.url("ok.qcow2"));
    for policy in [
        BackingPolicy {
            deny_all: true,
            ..BackingPolicy::default()
        },
        BackingPolicy {
            allowed_dirs: vec![export.clone()],
            ..BackingPolicy::default()
        },
    ] {
        let opts = OpenOptions {
            backing: policy,
            ..qcow2_opts()
        };
        let e = open_err(&s.url("ok.qcow2"), &opts);
        assert!(e.contains(&s.url("ok.raw")), "{e}");
        one_line(&e);
    }
}

#[test]
fn writes_that_fail_while_the_server_is_away_leave_the_image_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut s) = server("q2away", dir.path()) else {
        return;
    };
    let export = s.export().to_owned();
    let made = qemu_img(
        &export,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4096",
            "img.qcow2",
            "16M",
        ],
    );
    if made.is_none() {
        return;
    }
    let raw_path = dir.path().join("mirror.raw");
    let raw = std::fs::File::create_new(&raw_path).unwrap();
    raw.set_len(16 * MIB).unwrap();
    {
        let _in = s.enter().unwrap();
        let disk = open_qcow2(&s.url("img.qcow2"));
        let mut rng = Rng(3);
        let mut write = |disk: &dyn DiskImage, off: u64, expect_ok: bool| {
            let mut buf = vec![0u8; 6000];
            rng.fill(&mut buf);
            match disk.write_at(off, &buf) {
                Ok(()) => {
                    raw.write_all_at(&buf, off).unwrap();
                    true
                }
                Err(e) => {
                    assert!(!expect_ok, "{}", chain(&e));
                    false
                }
            }
        };
        for k in 0..50 {
            write(&*disk, k * 40_000, true);
        }
        // Allocating writes fail while the server is away (each with a
        // remote error; some of their metadata may have reached the file).
        s.kill();
        for k in 0..10 {
            assert!(!write(&*disk, 3 * MIB + k * 50_000, false));
        }
        s.restart().unwrap();
        // Back: the same ranges and new ones are written, as a guest's
        // retries would.
        for k in 0..10 {
            write(&*disk, 3 * MIB + k * 50_000, true);
        }
        for k in 0..50 {
            write(&*disk, 8 * MIB + k * 30_000, true);
        }
        disk.flush().unwrap();
        assert_same(&*disk, &raw_path);
    }
    // Leaked clusters are allowed (a refcount raised for a write that then
    // failed), errors are not.
    let out = qemu_img(&export, &["check", "-f", "qcow2", "img.qcow2"]).unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(3),
        "{report}"
    );
    assert!(!report.contains("ERROR"), "{report}");
    let raw = raw_path.to_str().unwrap();
    let same = qemu_ok(
        &export,
        &["compare", "-f", "qcow2", "-F", "raw", "img.qcow2", raw],
    )
    .unwrap();
    assert!(same.contains("Images are identical"), "{same}");
}
