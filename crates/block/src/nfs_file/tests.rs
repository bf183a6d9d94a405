//! The NFS disk against a real nfs-ganesha in a network namespace.

use std::path::Path;

use nfs::test_server::{StartError, TestServer};

use super::NfsDisk;
use crate::{DiskImage, Error, ImageFormat, OpenOptions};

mod qcow2;

const MIB: u64 = 1024 * 1024;
const MIB_BYTES: usize = 1024 * 1024;

fn server(tag: &str, dir: &Path) -> Option<TestServer> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: making a network namespace needs root");
        return None;
    }
    let (export, state) = (dir.join("export"), dir.join("state"));
    std::fs::create_dir_all(&export).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    match TestServer::start(tag, &export, &state) {
        Ok(s) => Some(s),
        Err(StartError::NotInstalled(why)) => {
            eprintln!("SKIP: {why}");
            None
        }
        Err(e) => panic!("{e}"),
    }
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
fn reads_writes_flushes_and_resizes_like_a_raw_disk() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = server("blk", dir.path()) else {
        return;
    };
    let host = s.export().join("disk.img");
    let data: Vec<u8> = (0..2 * MIB).map(|i| (i % 253) as u8).collect();
    std::fs::write(&host, &data).unwrap();
    let _in = s.enter().unwrap();
    let disk = NfsDisk::open(&s.url("disk.img"), false, true).unwrap();
    assert_eq!(disk.size(), 2 * MIB);
    let mut buf = vec![0u8; 1000];
    disk.read_at(12345, &mut buf).unwrap();
    assert_eq!(&buf[..], &data[12345..13345]);
    disk.write_at(777, &[9u8; 5000]).unwrap();
    disk.flush().unwrap();
    disk.write_zeroes(MIB, 4096, false).unwrap();
    assert!(matches!(
        disk.read_at(2 * MIB - 10, &mut buf),
        Err(Error::OutOfRange { .. })
    ));
    disk.resize(3 * MIB).unwrap();
    assert_eq!(disk.size(), 3 * MIB);
    disk.read_at(3 * MIB - 1000, &mut buf).unwrap();
    assert_eq!(buf, vec![0; 1000]);
    assert!(matches!(disk.discard(0, 4096), Err(Error::Unsupported(_))));
    let now = std::fs::read(&host).unwrap();
    assert_eq!(now.len() as u64, 3 * MIB);
    assert_eq!(&now[777..5777], &[9u8; 5000][..]);
    assert_eq!(&now[MIB_BYTES..MIB_BYTES + 4096], &[0u8; 4096][..]);
    assert_eq!(&now[..777], &data[..777]);
}

#[test]
fn a_restarted_server_is_reached_again_and_a_dead_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut s) = server("blkre", dir.path()) else {
        return;
    };
    std::fs::write(s.export().join("d.img"), vec![0u8; MIB_BYTES]).unwrap();
    let _in = s.enter().unwrap();
    let disk = NfsDisk::open(&s.url("d.img"), false, true).unwrap();
    disk.write_at(0, &[1u8; 512]).unwrap();
    // The server restarts between two requests: the next one connects
    // again and goes through.
    s.restart().unwrap();
    disk.write_at(512, &[2u8; 512]).unwrap();
    // Dead: the request fails (in time), as a remote error.
    s.kill();
    let start = std::time::Instant::now();
    let e = disk.write_at(1024, &[3u8; 512]).unwrap_err();
    assert!(matches!(e, Error::Remote(_)), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    // Back: I/O resumes.
    s.restart().unwrap();
    disk.write_at(1024, &[3u8; 512]).unwrap();
    disk.flush().unwrap();
    let now = std::fs::read(s.export().join("d.img")).unwrap();
    assert_eq!(&now[..512], &[1u8; 512][..]);
    assert_eq!(&now[512..1024], &[2u8; 512][..]);
    assert_eq!(&now[1024..1536], &[3u8; 512][..]);
}

#[test]
fn probed_qcow2_over_nfs_and_missing_files_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = server("blkbad", dir.path()) else {
        return;
    };
    let mut q = b"QFI\xfb".to_vec();
    q.resize(4096, 0);
    std::fs::write(s.export().join("q.img"), &q).unwrap();
    let _in = s.enter().unwrap();
    let e = NfsDisk::open(&s.url("q.img"), false, true).unwrap_err();
    assert!(chain(&e).contains("give format=qcow2"), "{}", chain(&e));
    // Given as raw, it is raw.
    NfsDisk::open(&s.url("q.img"), false, false).unwrap();
    // Given as qcow2, its header is judged (this one is no image).
    let opts = OpenOptions {
        format: Some(ImageFormat::Qcow2),
        ..OpenOptions::default()
    };
    let url = s.url("q.img");
    let e = crate::open(Path::new(&url), &opts).err().unwrap();
    assert!(chain(&e).starts_with(&url), "{}", chain(&e));
    assert!(!chain(&e).contains('\n'), "{}", chain(&e));
    let e = NfsDisk::open(&s.url("none.img"), false, true).unwrap_err();
    let text = chain(&e);
    assert!(text.starts_with("nfs://169.254.78.1/"), "{text}");
    assert!(text.contains("open"), "{text}");
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn requests_from_several_workers_are_in_flight_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = server("blkqd", dir.path()) else {
        return;
    };
    let data: Vec<u8> = (0..4 * MIB).map(|i| (i % 251) as u8).collect();
    std::fs::write(s.export().join("qd.img"), &data).unwrap();
    let _in = s.enter().unwrap();
    let disk = std::sync::Arc::new(NfsDisk::open(&s.url("qd.img"), false, true).unwrap());
    let read = crate::test_depth::read_at_depth_four(disk.clone(), 64, 64 * 1024);
    assert!(read == data, "the reads at depth 4 differ from the file");
    let peak = disk.peak_in_flight();
    assert!(peak > 1, "at most {peak} request in flight at once");
    assert!(peak <= 4, "{peak} requests in flight from four workers");
    // Writes of 1 MiB at depth 4: more than the bytes of writes kept in
    // flight, so some wait for others; all land.
    let new: Vec<u8> = (0..4 * MIB).map(|i| (i % 241) as u8).collect();
    crate::test_depth::write_at_depth_four(disk.clone(), &new, MIB_BYTES);
    disk.flush().unwrap();
    assert!(std::fs::read(s.export().join("qd.img")).unwrap() == new);
}

#[test]
fn a_frozen_server_costs_the_request_its_deadline_and_one_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = server("blkfz", dir.path()) else {
        return;
    };
    std::fs::write(s.export().join("d.img"), vec![0u8; MIB_BYTES]).unwrap();
    let _in = s.enter().unwrap();
    let timeout = std::time::Duration::from_secs(2);
    let disk = NfsDisk::open_with_timeout(&s.url("d.img"), false, true, timeout).unwrap();
    disk.write_at(0, &[1u8; 512]).unwrap();
    s.freeze();
    // In flight: its deadline, then one reconnect's.
    let start = std::time::Instant::now();
    let e = disk.write_at(1024, &[3u8; 512]).unwrap_err();
    assert!(matches!(e, Error::Remote(_)), "{e}");
    let waited = start.elapsed();
    assert!(waited < 2 * timeout + timeout / 2, "{waited:?}");
    // With no connection: one connect's.
    let start = std::time::Instant::now();
    assert!(disk.read_at(0, &mut [0u8; 512]).is_err());
    let waited = start.elapsed();
    assert!(waited < timeout + timeout / 2, "{waited:?}");
}
