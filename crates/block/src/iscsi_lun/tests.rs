//! The iSCSI disk against a real tgtd in a network namespace.

use std::time::{Duration, Instant};

use iscsi::test_target::{LunSpec, TestTarget};

use super::IscsiDisk;
use crate::{DiskImage, Error};

const MIB: u64 = 1024 * 1024;
/// 3 MiB as an index into the LUN's file.
const M3: usize = 3 << 20;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: making a network namespace needs root");
    }
    root
}

/// An error and its causes, on one line, as the CLI prints them.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

#[test]
fn reads_writes_flushes_discards_like_a_raw_disk() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [
        LunSpec {
            size: 8 * MIB,
            thin: true,
        },
        LunSpec {
            size: 2 * MIB,
            thin: false,
        },
    ];
    let t = TestTarget::start("blk", dir.path(), &luns, None).unwrap();
    let _ns = t.enter().unwrap();
    let disk = IscsiDisk::open(&t.url(1), false, None).unwrap();
    assert_eq!(disk.size(), 8 * MIB);

    // Aligned and unaligned writes land in the LUN's file.
    let data: Vec<u8> = (0..10_000u32)
        .map(|i| u8::try_from(i % 253).unwrap())
        .collect();
    disk.write_at(4096, &data).unwrap();
    disk.write_at(3 * MIB + 100, &data[..777]).unwrap();
    disk.flush().unwrap();
    let file = std::fs::read(t.lun_file(1)).unwrap();
    assert_eq!(&file[4096..4096 + data.len()], &data[..]);
    assert_eq!(&file[M3 + 100..M3 + 877], &data[..777]);
    assert!(file[M3..M3 + 100].iter().all(|&b| b == 0));

    let mut back = vec![0u8; 777];
    disk.read_at(3 * MIB + 100, &mut back).unwrap();
    assert_eq!(back, &data[..777]);
    let mut back = vec![0u8; data.len()];
    disk.read_at(4096, &mut back).unwrap();
    assert_eq!(back, data);

    // Zeroes and discard (a thin LUN).
    disk.write_zeroes(4096 + 10, 1000, false).unwrap();
    disk.read_at(4096, &mut back).unwrap();
    assert_eq!(&back[..10], &data[..10]);
    assert!(back[10..1010].iter().all(|&b| b == 0));
    assert_eq!(&back[1010..], &data[1010..]);
    disk.discard(0, MIB).unwrap();
    disk.read_at(4096, &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0));

    // Refusals.
    let e = disk.read_at(8 * MIB - 100, &mut [0u8; 512]).unwrap_err();
    assert!(matches!(e, Error::OutOfRange { .. }), "{e}");
    assert!(matches!(disk.resize(16 * MIB), Err(Error::Unsupported(_))));
    let thick = IscsiDisk::open(&t.url(2), false, None).unwrap();
    assert!(matches!(thick.discard(0, 4096), Err(Error::Unsupported(_))));
    let ro = IscsiDisk::open(&t.url(2), true, None).unwrap();
    assert!(matches!(ro.write_at(0, &[0u8; 512]), Err(Error::ReadOnly)));

    // LUN 0 (tgtd's controller), a missing LUN, a missing target.
    let e = chain(&IscsiDisk::open(&t.url(0), false, None).unwrap_err());
    assert!(e.contains("/0: LUN 0 is not a disk"), "{e}");
    let e = chain(&IscsiDisk::open(&t.url(9), false, None).unwrap_err());
    assert!(e.contains("the target has no LUN 9"), "{e}");
    let other = format!("iscsi://169.254.77.1/{}x/1", t.iqn());
    let e = chain(&IscsiDisk::open(&other, false, None).unwrap_err());
    assert!(e.contains("login refused"), "{e}");
}

#[test]
fn a_dead_target_gives_errors_in_bounded_time() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestTarget::start(
        "blkdead",
        dir.path(),
        &[LunSpec {
            size: 4 * MIB,
            thin: false,
        }],
        None,
    )
    .unwrap();
    let _ns = t.enter().unwrap();
    let timeout = Duration::from_secs(2);
    let disk = IscsiDisk::open_with_timeout(&t.url(1), false, None, timeout).unwrap();
    disk.write_at(0, &[1u8; 4096]).unwrap();

    // Frozen: the request times out, the one login again times out too.
    t.freeze();
    let start = Instant::now();
    let e = disk.read_at(0, &mut [0u8; 4096]).unwrap_err();
    assert!(matches!(e, Error::Remote(_)), "{e}");
    assert!(
        start.elapsed() < 2 * timeout + Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // Killed: refused at once.
    t.kill();
    let start = Instant::now();
    assert!(disk.flush().is_err());
    assert!(disk.write_at(0, &[2u8; 512]).is_err());
    assert!(start.elapsed() < 2 * timeout, "{:?}", start.elapsed());
}

#[test]
fn a_restarted_target_is_logged_in_to_again_once() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [LunSpec {
        size: 4 * MIB,
        thin: false,
    }];
    let mut t = TestTarget::start("blkre", dir.path(), &luns, None).unwrap();
    let _ns = t.enter().unwrap();
    let disk =
        IscsiDisk::open_with_timeout(&t.url(1), false, None, Duration::from_secs(3)).unwrap();
    let data = vec![0xa5u8; 8192];
    disk.write_at(MIB, &data).unwrap();

    // The connection is lost under the disk; the next request logs in
    // again and succeeds, with the data there.
    t.restart().unwrap();
    let mut back = vec![0u8; 8192];
    disk.read_at(MIB, &mut back).unwrap();
    assert_eq!(back, data);
    disk.write_at(0, &data).unwrap();
    disk.flush().unwrap();
    assert_eq!(&std::fs::read(t.lun_file(1)).unwrap()[..8192], &data[..]);
}

#[test]
fn requests_from_several_workers_are_in_flight_at_once() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [LunSpec {
        size: 4 * MIB,
        thin: false,
    }];
    let t = TestTarget::start("blkqd", dir.path(), &luns, None).unwrap();
    let data: Vec<u8> = (0..4 * MIB).map(|i| (i % 251) as u8).collect();
    std::fs::write(t.lun_file(1), &data).unwrap();
    let _ns = t.enter().unwrap();
    let disk = std::sync::Arc::new(IscsiDisk::open(&t.url(1), false, None).unwrap());
    let read = crate::test_depth::read_at_depth_four(disk.clone(), 64, 64 * 1024);
    assert!(read == data, "the reads at depth 4 differ from the LUN");
    let peak = disk.peak_in_flight();
    assert!(peak > 1, "at most {peak} command in flight at once");
    assert!(peak <= 4, "{peak} commands in flight from four workers");
    let new: Vec<u8> = (0..4 * MIB).map(|i| (i % 241) as u8).collect();
    crate::test_depth::write_at_depth_four(disk.clone(), &new, 256 * 1024);
    disk.flush().unwrap();
    assert!(std::fs::read(t.lun_file(1)).unwrap() == new);
}
