//! Telling formats apart by their first sector, and keeping a guest from
//! changing what that tells.
//!
//! Probing trusts the file's contents, and a raw disk's contents belong to
//! the guest: a guest that writes a qcow2 header naming a host file as its
//! backing file into sector 0 of its raw disk would read that host file at
//! the next start. So, as QEMU does, a raw image whose format was probed
//! refuses any write that would leave a recognised image header in sector
//! 0 ([`HeaderGuard`]); and probing refuses files it would misread as raw:
//! other formats' headers, and a qcow2 header whose magic alone is damaged.

use std::sync::{Mutex, MutexGuard};

use crate::file::{iov_len, iov_slice, Iov};
use crate::{Error, ImageFormat, Result};

/// The bytes probing looks at and the guard protects: sector 0.
pub(crate) const PROBE_LEN: usize = 512;

/// The format whose header `sector` (the first [`PROBE_LEN`] bytes of a
/// file, or fewer) starts with, by the name QEMU gives it; `None` when it
/// is none QEMU would recognise, which is to say raw.
pub(crate) fn recognised_header(sector: &[u8]) -> Option<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (b"QFI\xfb", "qcow2"),
        (b"QED\0", "QED"),
        (b"KDMV", "VMDK"),
        (b"COWD", "VMDK"),
        (b"vhdxfile", "VHDX"),
        (b"conectix", "VPC"),
        (b"LUKS\xba\xbe", "LUKS"),
        (b"WithoutFreeSpace", "Parallels"),
        (b"WithouFreSpacExt", "Parallels"),
        (b"Bochs Virtual HD Image", "Bochs"),
        (b"#!/bin/sh\n#V2.0 Format\n", "cloop"),
        (b"OOOM", "UML COW"),
    ];
    if let Some((_, name)) = MAGICS.iter().find(|(m, _)| sector.starts_with(m)) {
        return Some(name);
    }
    // VDI keeps its signature (0xbeda107f, little-endian) at byte 64.
    if sector.get(64..68) == Some(&[0x7f, 0x10, 0xda, 0xbe][..]) {
        return Some("VDI");
    }
    // A VMDK descriptor is text; QEMU finds it by this line.
    const VMDK_TEXT: &[u8] = b"# Disk DescriptorFile";
    if sector.windows(VMDK_TEXT.len()).any(|w| w == VMDK_TEXT) {
        return Some("VMDK");
    }
    None
}

/// Whether `sector` is a qcow2 header but for its magic: a known version,
/// a valid cluster size, and cluster-aligned L1 and refcount tables. By
/// chance that is about one in 2^60 for data that is not a qcow2 header.
fn damaged_qcow2(sector: &[u8]) -> bool {
    let be32 = |at: usize| {
        sector
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    let be64 = |at: usize| {
        sector
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    let (Some(version), Some(bits), Some(l1), Some(refcount_table)) =
        (be32(4), be32(20), be64(40), be64(48))
    else {
        return false;
    };
    if !(2..=3).contains(&version) || !(9..=21).contains(&bits) {
        return false;
    }
    let cluster = 1u64 << bits;
    refcount_table != 0 && l1.is_multiple_of(cluster) && refcount_table.is_multiple_of(cluster)
}

/// The format a file starting with `sector` is opened as when none is
/// given. `what` names the file in errors.
pub(crate) fn format_of(sector: &[u8], what: &std::path::Path) -> Result<ImageFormat> {
    match recognised_header(sector) {
        Some("qcow2") => return Ok(ImageFormat::Qcow2),
        Some(other) => {
            return Err(Error::Probe(format!(
                "{} is a {other} image, which Vireo cannot open (give format=raw to use its bytes as a raw disk)",
                what.display()
            )))
        }
        None => {}
    }
    if damaged_qcow2(sector) {
        return Err(Error::Probe(format!(
            "{} looks like a qcow2 image whose magic is damaged; it is not opened as raw unless format=raw is given (qemu-img check can tell more)",
            what.display()
        )));
    }
    Ok(ImageFormat::Raw)
}

/// What a raw image whose format was probed holds writes to sector 0 to:
/// none may leave a recognised header there (see the module comment).
#[derive(Debug, Default)]
pub(crate) struct HeaderGuard {
    /// Held from reading sector 0 until the checked write is done, so two
    /// writes that are harmless alone cannot each pass and together form
    /// a header.
    sector0: Mutex<()>,
}

impl HeaderGuard {
    /// Serialise writes to sector 0.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data, so a poisoned one is as good as any.
        self.sector0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Check what sector 0 would hold after a write: `current` is what it
    /// holds now (zero-padded past the end of the file), `change` puts the
    /// write's bytes over it.
    pub fn check(mut current: [u8; PROBE_LEN], change: impl FnOnce(&mut [u8])) -> Result<()> {
        change(&mut current);
        match recognised_header(&current) {
            Some(name) => Err(Error::HeaderWrite(name)),
            None if damaged_qcow2(&current) => Err(Error::HeaderWrite("qcow2 (magic aside)")),
            None => Ok(()),
        }
    }
}

/// Put the bytes of the write `iovs` at `offset` that fall in sector 0 over
/// `sector`.
pub(crate) fn overlay_write(sector: &mut [u8], offset: u64, iovs: &[Iov]) {
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= sector.len() {
        return;
    }
    let n = (sector.len() - start).min(usize::try_from(iov_len(iovs)).unwrap_or(usize::MAX));
    let mut at = start;
    for v in iov_slice(iovs, 0, n as u64) {
        // SAFETY: `v` is readable request memory of v.len bytes (Iov's
        // contract); the slices cover n bytes, which fit in sector[start..].
        let src = unsafe { std::slice::from_raw_parts(v.ptr.cast_const(), v.len) };
        sector[at..at + v.len].copy_from_slice(src);
        at += v.len;
    }
}

/// Zero the part of `[offset, offset + len)` that falls in `sector`.
pub(crate) fn overlay_zeroes(sector: &mut [u8], offset: u64, len: u64) {
    let end = offset.saturating_add(len).min(sector.len() as u64);
    // Both are at most sector.len() when offset < end.
    if let (true, Ok(a), Ok(b)) = (offset < end, usize::try_from(offset), usize::try_from(end)) {
        sector[a..b].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qcow2_header() -> [u8; PROBE_LEN] {
        let mut s = [0u8; PROBE_LEN];
        s[..4].copy_from_slice(b"QFI\xfb");
        s[4..8].copy_from_slice(&3u32.to_be_bytes());
        s[20..24].copy_from_slice(&16u32.to_be_bytes());
        s[40..48].copy_from_slice(&0x30000u64.to_be_bytes());
        s[48..56].copy_from_slice(&0x10000u64.to_be_bytes());
        s
    }

    #[test]
    fn headers_are_recognised() {
        let p = std::path::Path::new("x.img");
        assert_eq!(format_of(&qcow2_header(), p).unwrap(), ImageFormat::Qcow2);
        assert_eq!(format_of(&[0u8; PROBE_LEN], p).unwrap(), ImageFormat::Raw);
        assert_eq!(format_of(&[], p).unwrap(), ImageFormat::Raw);
        assert_eq!(format_of(b"QFI", p).unwrap(), ImageFormat::Raw);
        let e = format_of(b"KDMV\x01\0\0\0", p).unwrap_err().to_string();
        assert!(e.contains("x.img is a VMDK image"), "{e}");
        let mut vdi = [0u8; PROBE_LEN];
        vdi[64..68].copy_from_slice(&0xbeda_107fu32.to_le_bytes());
        assert_eq!(recognised_header(&vdi), Some("VDI"));
        let mut text = [b' '; PROBE_LEN];
        text[100..121].copy_from_slice(b"# Disk DescriptorFile");
        assert_eq!(recognised_header(&text), Some("VMDK"));
    }

    #[test]
    fn a_qcow2_with_a_damaged_magic_is_not_raw() {
        let mut h = qcow2_header();
        h[..4].copy_from_slice(b"\0\0\0\0");
        let e = format_of(&h, std::path::Path::new("d.qcow2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.qcow2 looks like a qcow2 image whose magic is damaged"));
        // An MBR is not mistaken for one.
        let mut mbr = [0u8; PROBE_LEN];
        mbr[0] = 0xeb;
        mbr[1] = 0x63;
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        assert_eq!(
            format_of(&mbr, std::path::Path::new("m")).unwrap(),
            ImageFormat::Raw
        );
    }

    #[test]
    fn guard_judges_the_sector_as_it_would_be() {
        // A write of the magic alone onto a sector that already holds the
        // rest of a header is caught: the check sees the merged sector.
        let mut rest = qcow2_header();
        rest[..4].fill(0);
        let magic = b"QFI\xfb";
        let iov = [Iov::from_slice(magic)];
        let e = HeaderGuard::check(rest, |s| overlay_write(s, 0, &iov)).unwrap_err();
        assert!(matches!(e, Error::HeaderWrite("qcow2")), "{e}");
        // Harmless data passes; so does zeroing the whole sector.
        let data = [0x11u8; 16];
        let iov = [Iov::from_slice(&data)];
        HeaderGuard::check(qcow2_header(), |s| overlay_write(s, 0, &iov)).unwrap();
        HeaderGuard::check(qcow2_header(), |s| overlay_zeroes(s, 0, 512)).unwrap();
        // A write that starts past the magic still counts.
        let mut partial = [0u8; PROBE_LEN];
        partial[..4].copy_from_slice(b"QED\x01");
        let z = [0u8; 1];
        let iov = [Iov::from_slice(&z)];
        let e = HeaderGuard::check(partial, |s| overlay_write(s, 3, &iov)).unwrap_err();
        assert!(matches!(e, Error::HeaderWrite("QED")), "{e}");
    }
}
