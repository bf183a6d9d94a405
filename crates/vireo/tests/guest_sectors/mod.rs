//! What the `virtio` test guest writes to a disk and how tests check it
//! from the host (guests/README.md): each sector's pattern, the FNV-1a
//! hash the guest prints of a sector it read, and a sector of a file.

#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes in a sector.
pub const SECTOR: usize = 512;

/// The pattern the guest writes to sector `n`: `n` little-endian, then
/// the low byte of `n + i` for each later offset `i`.
pub fn pattern(n: u64) -> Vec<u8> {
    let mut s = n.to_le_bytes().to_vec();
    s.extend((8..SECTOR as u64).map(|i| (n + i).to_le_bytes()[0]));
    s
}

/// FNV-1a (32 bits), as the guest prints it (`fnv1a32=`).
pub fn fnv1a32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Sector `n` of the file at `path`.
pub fn read_sector(path: &Path, n: u64) -> Vec<u8> {
    let mut buf = vec![0u8; SECTOR];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, n * SECTOR as u64)
        .unwrap();
    buf
}
