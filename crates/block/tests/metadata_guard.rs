//! Issue 9, items 10 and 12: guest writes never land on qcow2 metadata
//! (a refused write marks the image corrupt, as QEMU does); `check`
//! reports reserved bits; a dirty lazy-refcount image opens clean.

// Test sizes are small and the tests run on 64-bit hosts only.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::path::Path;
use std::process::Command;

use block::qcow2::{CreateOptions, Qcow2Disk, RepairMode};
use block::{DiskImage, OpenOptions};

/// Host offset bits of an L1/L2 entry.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COPIED: u64 = 1 << 63;

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// A 16 MiB image with guest cluster 0 written; returns its bytes and
/// the host offsets of the L1 table and of its one L2 table.
fn image_with_data(p: &Path) -> (Vec<u8>, u64, u64) {
    block::qcow2::create(
        p,
        &CreateOptions {
            size: 16 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let d = block::open(p, &OpenOptions::default()).unwrap();
    d.write_at(0, &[5u8; 65536]).unwrap();
    drop(d);
    let img = std::fs::read(p).unwrap();
    let l1 = be64(&img, 40);
    let l2 = be64(&img, l1 as usize) & OFFSET_MASK;
    (img, l1, l2)
}

fn qemu_check_code(p: &Path) -> Option<i32> {
    Command::new("qemu-img")
        .args(["check", p.to_str().unwrap()])
        .output()
        .unwrap()
        .status
        .code()
}

#[test]
fn guest_writes_onto_metadata_are_refused_and_mark_the_image_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("overlap.qcow2");
    let (good, l1, l2) = image_with_data(&p);
    let reftable = be64(&good, 48);
    let refblock = be64(&good, reftable as usize);
    for (what, target) in [
        ("the L1 table", l1),
        ("the refcount table", reftable),
        ("a refcount block", refblock),
        ("an L2 table", l2),
    ] {
        // Map guest cluster 1 onto the metadata cluster, flagged as ours
        // alone so the write goes straight to it.
        let mut img = good.clone();
        let at = l2 as usize + 8;
        img[at..at + 8].copy_from_slice(&(target | COPIED).to_be_bytes());
        std::fs::write(&p, &img).unwrap();
        let d = block::open(&p, &OpenOptions::default()).unwrap();
        let e = d.write_at(65536, &[0xffu8; 512]).expect_err(what);
        assert!(
            e.to_string().contains(what) && e.to_string().contains("corrupt"),
            "{what}: {e}"
        );
        // The image takes no more writes, even to good clusters.
        assert!(d.write_at(0, &[1u8; 512]).is_err(), "{what}");
        drop(d);
        let after = std::fs::read(&p).unwrap();
        let t = target as usize;
        assert_eq!(
            after[t + 128..t + 65536],
            img[t + 128..t + 65536],
            "{what} was written over"
        );
        assert_eq!(after[79] & 2, 2, "{what}: the corrupt bit is set");
        let e = block::open(&p, &OpenOptions::default()).err().unwrap();
        assert!(e.to_string().contains("corrupt") || format!("{e:?}").contains("corrupt"));
        assert_ne!(qemu_check_code(&p), Some(0), "{what}: qemu-img check");
    }
}

#[test]
fn an_allocating_write_never_reuses_a_table_the_refcounts_missed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("freetable.qcow2");
    let (mut img, _, l2) = image_with_data(&p);
    // Refcount block at 0x20000 (16-bit entries): say the L2 table's
    // cluster is free, so the allocator may hand it out.
    let c = (l2 >> 16) as usize;
    img[0x20000 + 2 * c..0x20000 + 2 * c + 2].copy_from_slice(&[0, 0]);
    std::fs::write(&p, &img).unwrap();
    let d = Qcow2Disk::open(&p, &OpenOptions::default()).unwrap();
    // Allocate until the allocator reaches the table's cluster.
    let mut refused = false;
    for g in 1..64u64 {
        if d.write_at(g * 65536, &[9u8; 65536]).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "a write landed on the L2 table");
    drop(d);
    let after = std::fs::read(&p).unwrap();
    assert_eq!(after[79] & 2, 2, "the corrupt bit is set");
    assert_eq!(
        after[l2 as usize..l2 as usize + 8],
        img[l2 as usize..l2 as usize + 8],
        "the L2 table was overwritten"
    );
}

#[test]
fn check_reports_reserved_bits_and_repair_keeps_what_they_point_at() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("reserved.qcow2");
    let (good, l1, l2) = image_with_data(&p);
    let e1 = be64(&good, l1 as usize);
    let e2 = be64(&good, l2 as usize);
    for (name, at, value) in [("L1", l1 as usize, e1 | 2), ("L2", l2 as usize, e2 | 0x100)] {
        let mut img = good.clone();
        img[at..at + 8].copy_from_slice(&value.to_be_bytes());
        std::fs::write(&p, &img).unwrap();
        assert_eq!(qemu_check_code(&p), Some(2), "{name}: qemu-img agrees");
        let d = Qcow2Disk::open(&p, &OpenOptions::default()).unwrap();
        let r = d.check(RepairMode::None).unwrap();
        assert!(r.corruptions > 0, "{name}: {:?}", r.messages);
        assert!(
            r.messages
                .iter()
                .any(|m| m.contains(&format!("{name} entry with reserved bits"))),
            "{name}: {:?}",
            r.messages
        );
        assert_eq!(r.leaks, 0, "{name}: its clusters still count");
        // A repair cannot fix the entry, and must not free what it points at.
        let r = d.check(RepairMode::All).unwrap();
        assert!(r.corruptions > 0, "{name}");
        assert_eq!(r.leaks_fixed, 0, "{name}: freed referenced clusters");
    }
}

#[test]
fn a_dirty_lazy_refcount_image_opens_with_no_copied_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lazy.qcow2");
    common::qemu(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "lazy_refcounts=on",
        p.to_str().unwrap(),
        "64M",
    ]);
    // qemu-io aborting mid-session leaves the image dirty with refcounts
    // never written: a crash with lazy refcounts.
    let _ = Command::new("qemu-io")
        .args(["-c", "write -P 3 0 32M", "-c", "abort", p.to_str().unwrap()])
        .output()
        .unwrap();
    let img = std::fs::read(&p).unwrap();
    assert_eq!(img[79] & 1, 1, "qemu-io left the image dirty");
    let d = block::open(&p, &OpenOptions::default()).unwrap();
    drop(d);
    common::check_clean(&p);
}

/// Issue 9, item 12: a compressed cluster whose data runs past the end
/// of the file shared the clusters allocated there later; rewriting it
/// freed them, losing a guest write that had been flushed.
#[test]
fn a_compressed_cluster_past_the_end_never_frees_later_data() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    std::fs::write(&raw, vec![0x33u8; 1 << 20]).unwrap();
    let p = dir.path().join("comp.qcow2");
    common::qemu(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        p.to_str().unwrap(),
    ]);
    let mut img = std::fs::read(&p).unwrap();
    let l1 = be64(&img, 40);
    let l2 = (be64(&img, l1 as usize) & OFFSET_MASK) as usize;
    let e = be64(&img, l2);
    assert_ne!(e & (1 << 62), 0, "guest cluster 0 is compressed");
    // 64 KiB clusters: the offset takes bits 0..54, the sector count above.
    let past = (img.len() as u64).div_ceil(65536) * 65536;
    let moved = (e & !((1u64 << 54) - 1)) | past;
    img[l2..l2 + 8].copy_from_slice(&moved.to_be_bytes());
    std::fs::write(&p, &img).unwrap();

    let d = block::open(&p, &OpenOptions::default()).unwrap();
    // A write elsewhere lands at the end of the file, under the bad entry.
    d.write_at(15 * 65536, &[0x77u8; 65536]).unwrap();
    d.flush().unwrap();
    let e = d.write_at(0, &[0x11u8; 65536]).unwrap_err();
    assert!(e.to_string().contains("past the end of the file"), "{e}");
    let mut buf = [0u8; 512];
    let e = d.read_at(0, &mut buf).unwrap_err();
    assert!(e.to_string().contains("past the end of the file"), "{e}");
    drop(d);
    let d = block::open(&p, &OpenOptions::default()).unwrap();
    let mut back = vec![0u8; 65536];
    d.read_at(15 * 65536, &mut back).unwrap();
    assert!(
        back.iter().all(|&b| b == 0x77),
        "the flushed write was lost"
    );
    drop(d);
    assert_ne!(qemu_check_code(&p), Some(0));
}
