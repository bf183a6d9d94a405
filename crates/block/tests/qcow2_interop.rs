//! qcow2 against qemu-img, the reference implementation: images qemu-img
//! makes read back through vireo byte for byte as qemu-img reads them, and
//! images vireo writes pass `qemu-img check` and `qemu-img compare`.
//!
//! Needs qemu-img and qemu-io (Debian's qemu-utils; scripts/test.sh
//! installs it).

// Test sizes are small and the tests run on 64-bit hosts only.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::path::Path;
use std::sync::Arc;

use block::qcow2::{CreateOptions, Qcow2Disk};
use block::{DiskImage, OpenOptions};
use common::{check_clean, qemu, qemu_io, qemu_raw, read_all, Rng};

fn open_rw(path: &Path) -> Arc<dyn DiskImage> {
    block::open(path, &OpenOptions::default()).unwrap()
}

fn open_ro(path: &Path) -> Arc<dyn DiskImage> {
    block::open(
        path,
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Scatter qemu-io writes of patterns, zeroes and discards over an image.
fn qemu_scribble(img: &Path, cluster: u64) {
    let c = cluster;
    qemu_io(
        img,
        &[
            format!("write -P 0xab 0 {}", 3 * c),
            format!("write -P 0x11 {} 4096", 5 * c + 1024),
            format!("write -P 0x22 {} {}", 9 * c - 512, 2 * c),
            format!("write -P 0x33 {} {}", 40 * c, 7 * c),
            format!("write -z {} {}", 41 * c, c),
            format!("discard {} {}", 44 * c, c),
            format!("write -P 0x44 {} 512", 3 << 20),
        ],
    );
}

fn assert_same_as_qemu(img: &Path, disk: &dyn DiskImage) {
    let expect = qemu_raw(img, None);
    let got = read_all(disk);
    assert_eq!(got.len(), expect.len(), "size of {}", img.display());
    let diff = got.iter().zip(&expect).position(|(a, b)| a != b);
    assert!(diff.is_none(), "{} differs at byte {diff:?}", img.display());
}

#[test]
fn qemu_made_images_read_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    for (name, opts, cluster) in [
        ("v3.qcow2", "compat=1.1", 65536u64),
        ("v2.qcow2", "compat=0.10", 65536),
        ("small.qcow2", "cluster_size=4096", 4096),
        ("rc1.qcow2", "cluster_size=4096,refcount_bits=1", 4096),
        ("rc64.qcow2", "cluster_size=512,refcount_bits=64", 512),
    ] {
        let img = dir.path().join(name);
        qemu(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            opts,
            img.to_str().unwrap(),
            "8M",
        ]);
        qemu_scribble(&img, cluster);
        let disk = open_ro(&img);
        assert_eq!(disk.size(), 8 << 20);
        assert_same_as_qemu(&img, disk.as_ref());
    }
}

#[test]
fn backing_chains_of_any_format_read_through() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    let mid = dir.path().join("mid.qcow2");
    let top = dir.path().join("top.qcow2");
    let mut rng = Rng::new(7);
    let mut data = vec![0u8; 6 << 20];
    rng.fill(&mut data);
    std::fs::write(&base, &data).unwrap();
    qemu(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        mid.to_str().unwrap(),
        "8M",
    ]);
    qemu_io(
        &mid,
        &["write -P 0x5a 1M 100k".into(), "write -z 2M 64k".into()],
    );
    qemu(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        mid.to_str().unwrap(),
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    qemu_io(
        &top,
        &[
            "write -P 0x6b 1050k 8k".into(),
            "write -P 0x7c 7M 4k".into(),
        ],
    );
    let disk = open_ro(&top);
    assert_eq!(disk.size(), 8 << 20);
    assert_same_as_qemu(&top, disk.as_ref());
}

#[test]
fn compressed_images_read_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let img = dir.path().join("c.qcow2");
    // Compressible and incompressible clusters, and a hole.
    let mut data = vec![0u8; 4 << 20];
    let mut rng = Rng::new(3);
    rng.fill(&mut data[..1 << 20]);
    for (i, b) in data[(1 << 20)..(3 << 20)].iter_mut().enumerate() {
        *b = (i / 100 % 7) as u8 + b'a';
    }
    std::fs::write(&src, &data).unwrap();
    qemu(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        src.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    let disk = open_ro(&img);
    assert_eq!(read_all(disk.as_ref()), data);
    drop(disk);
    // Writing over compressed clusters copies them out, and frees them.
    let disk = open_rw(&img);
    disk.write_at((1 << 20) + 1000, b"over compressed data")
        .unwrap();
    disk.write_at(2 << 20, &vec![9u8; 65536]).unwrap();
    drop(disk);
    data[(1 << 20) + 1000..(1 << 20) + 1020].copy_from_slice(b"over compressed data");
    data[2 << 20..(2 << 20) + 65536].fill(9);
    check_clean(&img);
    assert_eq!(qemu_raw(&img, None), data);
}

#[test]
fn internal_snapshots_list_and_read_as_taken() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("s.qcow2");
    qemu(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "4M"]);
    qemu_io(&img, &["write -P 0x01 0 1M".into()]);
    qemu(&["snapshot", "-c", "first", img.to_str().unwrap()]);
    qemu_io(&img, &["write -P 0x02 512k 1M".into()]);
    qemu(&["snapshot", "-c", "second", img.to_str().unwrap()]);
    qemu_io(&img, &["write -P 0x03 3M 4k".into()]);
    let disk = Qcow2Disk::open(
        &img,
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let names: Vec<String> = disk.snapshots().iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, ["first", "second"]);
    drop(disk);
    for snap in ["first", "second"] {
        let s = Qcow2Disk::open_snapshot(&img, snap, false).unwrap();
        assert_eq!(read_all(&s), qemu_raw(&img, Some(snap)), "snapshot {snap}");
    }
    // Writes to the active image copy shared clusters; snapshots keep theirs.
    let before_first = qemu_raw(&img, Some("first"));
    let disk = open_rw(&img);
    let mut rng = Rng::new(11);
    let mut expect = read_all(disk.as_ref());
    for _ in 0..50 {
        let off = rng.below(4 << 20);
        let len = rng.below((4 << 20) - off).min(200_000) + 1;
        let mut buf = vec![0u8; len as usize];
        rng.fill(&mut buf);
        disk.write_at(off, &buf).unwrap();
        expect[off as usize..(off + len) as usize].copy_from_slice(&buf);
    }
    drop(disk);
    check_clean(&img);
    assert_eq!(qemu_raw(&img, None), expect);
    assert_eq!(qemu_raw(&img, Some("first")), before_first);
}

#[test]
fn vireo_snapshots_are_valid_for_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vs.qcow2");
    block::qcow2::create(
        &img,
        &CreateOptions {
            size: 4 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let disk = Qcow2Disk::open(&img, &OpenOptions::default()).unwrap();
    disk.write_at(0, &vec![0x61u8; 300_000]).unwrap();
    disk.create_snapshot("one").unwrap();
    disk.write_at(100_000, &vec![0x62u8; 300_000]).unwrap();
    disk.create_snapshot("two").unwrap();
    disk.write_at(0, &vec![0x63u8; 1000]).unwrap();
    drop(disk);
    check_clean(&img);
    let mut one = vec![0u8; 4 << 20];
    one[..300_000].fill(0x61);
    assert_eq!(qemu_raw(&img, Some("one")), one);
    let disk = Qcow2Disk::open(&img, &OpenOptions::default()).unwrap();
    disk.delete_snapshot("one").unwrap();
    drop(disk);
    check_clean(&img);
    let mut two = one.clone();
    two[100_000..400_000].fill(0x62);
    assert_eq!(qemu_raw(&img, Some("two")), two);
    two[..1000].fill(0x63);
    assert_eq!(qemu_raw(&img, None), two);
}

/// Apply the same random writes, zeroes and discards to a vireo qcow2
/// image and a raw file; qemu-img must find the image clean and equal.
fn random_workload(img: &Path, raw: &Path, size: u64, seed: u64, ops: usize, max_len: u64) {
    let disk = open_rw(img);
    let rawf = std::fs::OpenOptions::new().write(true).open(raw).unwrap();
    use std::os::unix::fs::FileExt;
    let mut rng = Rng::new(seed);
    for i in 0..ops {
        let off = rng.below(size);
        let len = rng.below((size - off).min(max_len)) + 1;
        match rng.below(10) {
            0 => {
                disk.write_zeroes(off, len, i % 2 == 0).unwrap();
                rawf.write_all_at(&vec![0u8; len as usize], off).unwrap();
            }
            1 => {
                // Discard content is unspecified; follow it with zeroes on
                // both sides so the comparison stays exact.
                disk.discard(off, len).unwrap();
                disk.write_zeroes(off, len, false).unwrap();
                rawf.write_all_at(&vec![0u8; len as usize], off).unwrap();
            }
            _ => {
                let mut buf = vec![0u8; len as usize];
                rng.fill(&mut buf);
                disk.write_at(off, &buf).unwrap();
                rawf.write_all_at(&buf, off).unwrap();
            }
        }
    }
    disk.flush().unwrap();
}

/// `qemu-img check` finds `img` clean and `qemu-img compare` finds it
/// equal to the raw file `raw`.
fn assert_clean_and_same(img: &Path, raw: &Path) {
    check_clean(img);
    qemu(&[
        "compare",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        img.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
}

#[test]
fn random_writes_pass_check_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (cluster, version)) in [(65536u64, 3u32), (65536, 2), (4096, 3)]
        .into_iter()
        .enumerate()
    {
        let img = dir.path().join(format!("w{i}.qcow2"));
        let raw = dir.path().join(format!("w{i}.raw"));
        let size = 32 << 20;
        block::qcow2::create(
            &img,
            &CreateOptions {
                size,
                cluster_size: cluster,
                version,
                ..Default::default()
            },
        )
        .unwrap();
        std::fs::File::create(&raw).unwrap().set_len(size).unwrap();
        random_workload(&img, &raw, size, 100 + i as u64, 300, 3 * cluster);
        assert_clean_and_same(&img, &raw);
    }
}

#[test]
fn writes_to_qemu_images_with_other_refcount_widths() {
    let dir = tempfile::tempdir().unwrap();
    for (i, opts) in [
        "refcount_bits=1,cluster_size=4096",
        "refcount_bits=64,cluster_size=512",
        "refcount_bits=8",
    ]
    .into_iter()
    .enumerate()
    {
        let img = dir.path().join(format!("rc{i}.qcow2"));
        let raw = dir.path().join(format!("rc{i}.raw"));
        let size = 8 << 20;
        qemu(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            opts,
            img.to_str().unwrap(),
            "8M",
        ]);
        std::fs::File::create(&raw).unwrap().set_len(size).unwrap();
        random_workload(&img, &raw, size, 40 + i as u64, 150, 20_000);
        assert_clean_and_same(&img, &raw);
    }
}

#[test]
fn refcount_table_grows_past_its_first_cluster() {
    // 512-byte clusters: one refcount block counts 256 clusters (128 KiB)
    // and a one-cluster table 64 blocks (8 MiB), so 24 MiB of data needs
    // many new blocks and a larger table.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("g.qcow2");
    let raw = dir.path().join("g.raw");
    let size = 24 << 20;
    block::qcow2::create(
        &img,
        &CreateOptions {
            size,
            cluster_size: 512,
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::File::create(&raw).unwrap().set_len(size).unwrap();
    {
        let disk = open_rw(&img);
        let mut rng = Rng::new(5);
        let mut buf = vec![0u8; 1 << 20];
        use std::os::unix::fs::FileExt;
        let rawf = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        for mb in 0..24u64 {
            rng.fill(&mut buf);
            disk.write_at(mb << 20, &buf).unwrap();
            rawf.write_all_at(&buf, mb << 20).unwrap();
        }
    }
    let before = std::fs::read(&img).unwrap();
    let rt_clusters = u32::from_be_bytes(before[56..60].try_into().unwrap());
    assert!(rt_clusters > 1, "refcount table should have grown");
    assert_clean_and_same(&img, &raw);
    random_workload(&img, &raw, size, 9, 200, 100_000);
    assert_clean_and_same(&img, &raw);
}

#[test]
fn writes_over_a_backing_file_and_resize() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("b.qcow2");
    let img = dir.path().join("o.qcow2");
    qemu(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "8M"]);
    qemu_io(&base, &["write -P 0x77 0 8M".into()]);
    for version in [3u32, 2] {
        block::qcow2::create(
            &img,
            &CreateOptions {
                size: 8 << 20,
                version,
                backing_file: Some("b.qcow2".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let disk = open_rw(&img);
        disk.write_at(70_000, &[1u8; 100]).unwrap();
        disk.write_zeroes(1 << 20, 1 << 20, true).unwrap();
        disk.discard(4 << 20, 65536).unwrap();
        disk.resize(16 << 20).unwrap();
        disk.write_at(15 << 20, &[2u8; 10]).unwrap();
        drop(disk);
        check_clean(&img);
        let got = qemu_raw(&img, None);
        let disk = open_ro(&img);
        assert_eq!(read_all(disk.as_ref()), got);
        assert_eq!(got.len(), 16 << 20);
        assert!(got[..70_000].iter().all(|&b| b == 0x77));
        assert!(got[70_000..70_100].iter().all(|&b| b == 1));
        assert!(got[1 << 20..2 << 20].iter().all(|&b| b == 0));
        assert!(got[8 << 20..15 << 20].iter().all(|&b| b == 0));
        assert_eq!(&got[15 << 20..(15 << 20) + 10], &[2u8; 10]);
    }
}

/// `preallocation=metadata`: every cluster is mapped at creation (qemu-img
/// check counts them all allocated), the image is clean and
/// reads as zeroes, and a random workload after it neither grows the file
/// nor leaves it unclean or different from the same writes to a raw file.
#[test]
fn metadata_preallocation_maps_every_cluster_and_stays_clean() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (cluster, version)) in [(65536u64, 3u32), (65536, 2), (4096, 3)]
        .into_iter()
        .enumerate()
    {
        let img = dir.path().join(format!("p{i}.qcow2"));
        let raw = dir.path().join(format!("p{i}.raw"));
        // Not a whole number of clusters: the last one is mapped too.
        let size = (24 << 20) + 512;
        block::qcow2::create(
            &img,
            &CreateOptions {
                size,
                cluster_size: cluster,
                version,
                preallocate_metadata: true,
                ..Default::default()
            },
        )
        .unwrap();
        check_clean(&img);
        // qemu-img counts the clusters mapped (its own preallocation=metadata
        // says "384/384 = 100.00% allocated" for 24 MiB).
        let report = qemu(&["check", "-f", "qcow2", img.to_str().unwrap()]);
        let clusters = size.div_ceil(cluster);
        assert!(
            report.contains(&format!("{clusters}/{clusters} = 100.00% allocated")),
            "{report}"
        );
        assert!(read_all(open_ro(&img).as_ref()).iter().all(|&b| b == 0));
        let len = std::fs::metadata(&img).unwrap().len();
        assert!(len >= size, "{len} bytes hold {size} of clusters");

        std::fs::File::create(&raw).unwrap().set_len(size).unwrap();
        random_workload(&img, &raw, size, 200 + i as u64, 200, 3 * cluster);
        assert_clean_and_same(&img, &raw);
        // Writes found their clusters already there (zeroing and
        // discarding may give some back, but none is added).
        assert!(std::fs::metadata(&img).unwrap().len() <= len);
    }
}
