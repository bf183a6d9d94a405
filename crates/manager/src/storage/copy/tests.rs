//! The copy engine on scratch images: raw and qcow2 either way, an
//! overlay flattened, zeroes left unallocated; and `DirPool`'s copies,
//! which appear whole or not at all.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use virtxml::{Pool, Volume};

use super::*;
use crate::storage::dir::DirPool;

const MIB: u64 = 1 << 20;

/// `n` as an index (test images are small).
fn us(n: u64) -> usize {
    usize::try_from(n).unwrap()
}

/// A 16 MiB image of `format` with data at 1 MiB, 5 MiB + 3 and the last
/// byte, zeroes elsewhere; returns it with what it reads as.
fn image(dir: &Path, name: &str, format: ImageFormat) -> (PathBuf, Vec<u8>) {
    let path = dir.join(name);
    let size = 16 * MIB;
    match format {
        ImageFormat::Raw => std::fs::File::create(&path).unwrap().set_len(size).unwrap(),
        ImageFormat::Qcow2 => block::qcow2::create(
            &path,
            &block::qcow2::CreateOptions {
                size,
                ..Default::default()
            },
        )
        .unwrap(),
    }
    let img = open_destination(&path, format).unwrap();
    let mut want = vec![0u8; us(size)];
    for (at, len, byte) in [
        (MIB, 300_000u64, 0x11u8),
        (5 * MIB + 3, 70_000, 0x22),
        (size - 1, 1, 0x33),
    ] {
        let data = vec![byte; us(len)];
        img.write_at(at, &data).unwrap();
        want[us(at)..us(at + len)].copy_from_slice(&data);
    }
    img.flush().unwrap();
    (path, want)
}

fn read_all(path: &Path, format: ImageFormat) -> Vec<u8> {
    let img = open_source(path, format).unwrap();
    let mut out = vec![0u8; us(img.size())];
    img.read_at(0, &mut out).unwrap();
    out
}

fn blank(path: &Path, format: ImageFormat, size: u64) -> std::sync::Arc<dyn DiskImage> {
    match format {
        ImageFormat::Raw => std::fs::File::create(path).unwrap().set_len(size).unwrap(),
        ImageFormat::Qcow2 => block::qcow2::create(
            path,
            &block::qcow2::CreateOptions {
                size,
                ..Default::default()
            },
        )
        .unwrap(),
    }
    open_destination(path, format).unwrap()
}

#[test]
fn every_format_pair_copies_the_guest_data_sparsely() {
    let scratch = tempfile::tempdir().unwrap();
    for from in [ImageFormat::Raw, ImageFormat::Qcow2] {
        let (src_path, want) = image(scratch.path(), &format!("src.{from}"), from);
        for to in [ImageFormat::Raw, ImageFormat::Qcow2] {
            let dst_path = scratch.path().join(format!("{from}-to-{to}"));
            let dst = blank(&dst_path, to, 16 * MIB);
            let src = open_source(&src_path, from).unwrap();
            let stats = copy(src.as_ref(), dst.as_ref()).unwrap();
            drop(dst);
            assert_eq!(read_all(&dst_path, to), want, "{from} -> {to}");
            // Only the data's 64 KiB blocks were written, and little of
            // the 16 MiB is allocated.
            assert!(stats.written <= 8 * (64 << 10), "{from} -> {to}: {stats:?}");
            let allocated = std::fs::metadata(&dst_path).unwrap().blocks() * 512;
            assert!(
                allocated < 4 * MIB,
                "{from} -> {to}: {allocated} bytes allocated"
            );
        }
    }
}

#[test]
fn an_overlay_is_flattened_and_a_small_destination_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let (base, mut want) = image(scratch.path(), "base.raw", ImageFormat::Raw);
    let top = scratch.path().join("top.qcow2");
    block::qcow2::create(
        &top,
        &block::qcow2::CreateOptions {
            size: 16 * MIB,
            backing_file: Some(base.display().to_string()),
            backing_format: Some(ImageFormat::Raw),
            ..Default::default()
        },
    )
    .unwrap();
    let t = open_destination(&top, ImageFormat::Qcow2).unwrap();
    t.write_at(2 * MIB, &[0x44; 4096]).unwrap();
    t.flush().unwrap();
    drop(t);
    want[us(2 * MIB)..us(2 * MIB + 4096)].fill(0x44);

    let flat = scratch.path().join("flat.qcow2");
    let dst = blank(&flat, ImageFormat::Qcow2, 16 * MIB);
    let src = open_source(&top, ImageFormat::Qcow2).unwrap();
    copy(src.as_ref(), dst.as_ref()).unwrap();
    drop(dst);
    let header = std::fs::read(&flat).unwrap();
    // No backing file offset in the header: the copy stands alone.
    assert_eq!(&header[8..16], &[0u8; 8]);
    assert_eq!(read_all(&flat, ImageFormat::Qcow2), want);

    let small = blank(&scratch.path().join("small"), ImageFormat::Raw, MIB);
    assert!(matches!(
        copy(src.as_ref(), small.as_ref()),
        Err(CopyError::Destination(_))
    ));
}

fn dir_pool(path: &Path) -> DirPool {
    let xml = format!(
        "<pool type='dir'><name>p</name><target><path>{}</path></target></pool>",
        path.display()
    );
    DirPool::new(&Pool::parse(&xml).unwrap().pool).unwrap()
}

fn volume(xml: &str) -> Volume {
    Volume::parse(xml).unwrap().volume
}

#[test]
fn a_pool_copy_appears_whole_under_its_name_and_is_never_over_another() {
    let scratch = tempfile::tempdir().unwrap();
    let pool = dir_pool(scratch.path());
    let (_, want) = image(scratch.path(), "src", ImageFormat::Qcow2);
    let source = pool.volume("src").unwrap();
    let made = pool
        .create_from(
            &volume("<volume><name>copy</name><capacity>1</capacity><target><format type='raw'/></target></volume>"),
            &source, Default::default())
        .unwrap();
    assert_eq!(made.format, virtxml::VolumeFormat::Raw);
    assert_eq!(made.capacity, 16 * MIB, "never smaller than the source");
    assert_eq!(read_all(&made.path, ImageFormat::Raw), want);
    // No temporary file is left, and the name is not taken twice.
    let names: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    let again = pool.create_from(
        &volume("<volume><name>src</name><capacity>1</capacity></volume>"),
        &source,
        Default::default(),
    );
    assert!(matches!(again, Err(StorageError::Conflict(_))), "{again:?}");

    // An overlay must be on the input volume itself.
    let xml = format!(
        "<volume><name>top</name><capacity>1</capacity><target><format type='qcow2'/></target>\
         <backingStore><path>{}</path><format type='qcow2'/></backingStore></volume>",
        source.path.display()
    );
    let top = pool
        .create_from(&volume(&xml), &source, Default::default())
        .unwrap();
    assert_eq!(
        top.backing.as_ref().map(|b| b.path.clone()),
        Some(source.path.display().to_string())
    );
    assert_eq!(read_all(&top.path, ImageFormat::Qcow2), want);
    let other = pool.volume("copy").unwrap();
    let e = pool.create_from(
        &volume(&xml.replace("<name>top", "<name>top2")),
        &other,
        Default::default(),
    );
    assert!(matches!(e, Err(StorageError::Invalid(_))), "{e:?}");
}

#[test]
fn a_leftover_of_a_killed_copy_is_swept_and_never_listed() {
    let scratch = tempfile::tempdir().unwrap();
    let pool = dir_pool(scratch.path());
    std::fs::write(scratch.path().join(".half.vireo-new"), b"partial").unwrap();
    std::fs::write(scratch.path().join(".users-own"), b"kept").unwrap();
    assert!(pool.volumes().unwrap().is_empty());
    pool.sweep();
    assert!(!scratch.path().join(".half.vireo-new").exists());
    assert!(scratch.path().join(".users-own").exists());
}
