//! Malformed images: each is refused on open (or on the first access to
//! the bad table) with a clear error, never a panic or a huge allocation.

// Test sizes are small and the tests run on 64-bit hosts only.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::path::Path;

use block::qcow2::{CreateOptions, Qcow2Disk};
use block::{DiskImage, Error, OpenOptions};

fn ro() -> OpenOptions {
    OpenOptions {
        read_only: true,
        ..Default::default()
    }
}

/// A small valid image to corrupt: 4 MiB, 64 KiB clusters, with data.
fn good_image(dir: &Path) -> Vec<u8> {
    let p = dir.join("good.qcow2");
    block::qcow2::create(
        &p,
        &CreateOptions {
            size: 4 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let d = block::open(&p, &OpenOptions::default()).unwrap();
    d.write_at(0, &[1u8; 4096]).unwrap();
    drop(d);
    std::fs::read(&p).unwrap()
}

/// The whole error chain on one line.
fn message(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn open_err(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let fmt = OpenOptions {
        format: Some(block::ImageFormat::Qcow2),
        ..ro()
    };
    match block::open(&p, &fmt) {
        Ok(_) => panic!("{name}: opened a bad image"),
        Err(e) => message(&e),
    }
}

fn patch(img: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut v = img.to_vec();
    v[at..at + bytes.len()].copy_from_slice(bytes);
    v
}

#[test]
fn malformed_headers_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_image(dir.path());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "bad magic"),
        ("short", good[..50].to_vec(), "too short"),
        ("truncated-v3", good[..90].to_vec(), "too short"),
        ("magic", patch(&good, 0, b"QFI\x00"), "bad magic"),
        ("version", patch(&good, 4, &4u32.to_be_bytes()), "version 4"),
        (
            "cluster-bits-huge",
            patch(&good, 20, &30u32.to_be_bytes()),
            "cluster_bits 30",
        ),
        (
            "cluster-bits-tiny",
            patch(&good, 20, &8u32.to_be_bytes()),
            "cluster_bits 8",
        ),
        (
            "size",
            patch(&good, 24, &(1u64 << 62).to_be_bytes()),
            "too large",
        ),
        (
            "l1-size",
            patch(&good, 36, &u32::MAX.to_be_bytes()),
            "L1 table",
        ),
        (
            "l1-offset",
            patch(&good, 40, &(1u64 << 40).to_be_bytes()),
            "past the end",
        ),
        (
            "l1-misaligned",
            patch(&good, 40, &0x30008u64.to_be_bytes()),
            "not cluster aligned",
        ),
        (
            "reftable-offset",
            patch(&good, 48, &(1u64 << 40).to_be_bytes()),
            "past the end",
        ),
        (
            "reftable-size",
            patch(&good, 56, &u32::MAX.to_be_bytes()),
            "refcount table",
        ),
        (
            "snapshots",
            patch(&good, 60, &u32::MAX.to_be_bytes()),
            "snapshots",
        ),
        (
            "incompat",
            patch(&good, 72, &(1u64 << 9).to_be_bytes()),
            "incompatible bit 9",
        ),
        (
            "extended-l2",
            patch(&good, 72, &(1u64 << 4).to_be_bytes()),
            "extended L2",
        ),
        (
            "external-data",
            patch(&good, 72, &(1u64 << 2).to_be_bytes()),
            "external data",
        ),
        (
            "refcount-order",
            patch(&good, 96, &7u32.to_be_bytes()),
            "refcount_order",
        ),
        (
            "header-length",
            patch(&good, 100, &100_000u32.to_be_bytes()),
            "header length",
        ),
        (
            "encrypted",
            patch(&good, 32, &1u32.to_be_bytes()),
            "encrypted",
        ),
        (
            "backing-name",
            patch(
                &patch(&good, 8, &60_000u64.to_be_bytes()),
                16,
                &5000u32.to_be_bytes(),
            ),
            "backing file name",
        ),
    ];
    for (name, bytes, want) in cases {
        let msg = open_err(dir.path(), name, &bytes);
        assert!(
            msg.contains(want),
            "{name}: {msg:?} should mention {want:?}"
        );
        assert!(msg.contains(name), "{name}: {msg:?} should name the file");
    }
}

#[test]
fn bad_table_entries_fail_the_access_not_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_image(dir.path());
    let l1_off = u64::from_be_bytes(good[40..48].try_into().unwrap()) as usize;
    // L1 entry 0 pointing past the end of the file.
    let bad_l1 = patch(&good, l1_off, &((1u64 << 63) | (1 << 40)).to_be_bytes());
    let p = dir.path().join("l2-past-eof.qcow2");
    std::fs::write(&p, &bad_l1).unwrap();
    let d = block::open(&p, &ro()).unwrap();
    let mut buf = [0u8; 512];
    let e = d.read_at(0, &mut buf).unwrap_err();
    assert!(
        message(&e).contains("past the end of the file"),
        "{}",
        message(&e)
    );
    // Reads elsewhere (another L1 entry) still work.
    drop(d);

    // An L2 entry marked compressed with garbage behind it.
    let l2_off = (u64::from_be_bytes(good[l1_off..l1_off + 8].try_into().unwrap())
        & 0x00ff_ffff_ffff_fe00) as usize;
    let bad_l2 = patch(&good, l2_off, &((1u64 << 62) | 0x50000).to_be_bytes());
    let p = dir.path().join("bad-compressed.qcow2");
    std::fs::write(&p, &bad_l2).unwrap();
    let d = block::open(&p, &ro()).unwrap();
    let e = d.read_at(0, &mut buf).unwrap_err();
    assert!(
        message(&e).contains("compressed cluster"),
        "{}",
        message(&e)
    );
}

#[test]
fn corrupt_images_open_read_only_only_and_loops_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_image(dir.path());
    let corrupt = patch(&good, 72, &2u64.to_be_bytes());
    let p = dir.path().join("corrupt.qcow2");
    std::fs::write(&p, &corrupt).unwrap();
    let e = block::open(&p, &OpenOptions::default()).err().unwrap();
    assert!(message(&e).contains("marked corrupt"), "{}", message(&e));
    let d = block::open(&p, &ro()).unwrap();
    let mut buf = [0u8; 4096];
    d.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [1u8; 4096]);
    drop(d);

    // An image whose backing file is itself.
    let p = dir.path().join("loop.qcow2");
    block::qcow2::create(
        &p,
        &CreateOptions {
            size: 1 << 20,
            backing_file: Some("loop-base.qcow2".into()),
            backing_format: Some(block::ImageFormat::Qcow2),
            ..Default::default()
        },
    )
    .unwrap_err();
    let base = dir.path().join("loop-base.qcow2");
    std::fs::write(&base, &good).unwrap();
    block::qcow2::create(
        &p,
        &CreateOptions {
            size: 1 << 20,
            backing_file: Some("loop-base.qcow2".into()),
            ..Default::default()
        },
    )
    .unwrap();
    // Point the base at the top: a cycle.
    std::fs::remove_file(&base).unwrap();
    std::os::unix::fs::symlink(&p, &base).unwrap();
    let e = block::open(&p, &ro()).err().unwrap();
    assert!(
        message(&e).contains("backing chain loops"),
        "{}",
        message(&e)
    );
}

#[test]
fn dirty_images_are_repaired_on_writable_open() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dirty.qcow2");
    common::qemu(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "lazy_refcounts=on",
        p.to_str().unwrap(),
        "4M",
    ]);
    common::qemu_io(&p, &["write -P 0x42 0 1M".into()]);
    // Mark it dirty and drop a refcount, as a crash with lazy refcounts can.
    let mut img = std::fs::read(&p).unwrap();
    img[79] |= 1;
    std::fs::write(&p, &img).unwrap();
    let d = Qcow2Disk::open(&p, &OpenOptions::default()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    d.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x42));
    d.write_at(2 << 20, &[7u8; 100]).unwrap();
    drop(d);
    let img = std::fs::read(&p).unwrap();
    assert_eq!(img[79] & 1, 0, "the dirty bit is cleared");
    common::check_clean(&p);
}
