//! Fuzz the qcow2 header, extension, snapshot and table parsers: open the
//! input as an image and read a few clusters through it. Any panic, or an
//! allocation libFuzzer thinks too large, is a bug.

#![no_main]

use std::path::Path;

use block::{ImageFormat, OpenOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // An in-memory file, reopened by path so the real open path runs.
    // SAFETY: memfd_create takes a NUL-terminated name and flags.
    let fd = unsafe { libc::memfd_create(c"fuzz".as_ptr(), 0) };
    assert!(fd >= 0);
    // SAFETY: fd is a fresh memfd; data is a live slice.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize);
    let path = format!("/proc/self/fd/{fd}");
    let options = OpenOptions {
        read_only: true,
        direct: false,
        format: Some(ImageFormat::Qcow2),
        ..OpenOptions::default()
    };
    if let Ok(disk) = block::open(Path::new(&path), &options) {
        let mut buf = vec![0u8; 65536];
        let size = disk.size();
        for offset in [0, size / 2, size.saturating_sub(65536)] {
            let len = (size - offset).min(65536) as usize;
            let _ = disk.read_at(offset, &mut buf[..len]);
        }
        let _ = disk.allocation(0, size.min(1 << 20));
    }
    // SAFETY: closing the memfd we opened.
    unsafe { libc::close(fd) };
});
