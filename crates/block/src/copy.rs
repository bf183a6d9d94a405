//! The guest-visible data of one image written into another, as
//! `vireo img convert`, `vol-create-from` and `vol-clone` copy: raw and
//! qcow2 either way, an overlay read through its backing chain (so the
//! copy stands alone).
//!
//! What the source says reads as zeroes (a hole, an unallocated cluster
//! with nothing behind it) is skipped, and so are blocks of data that are
//! all zeroes: the destination, which reads as zeroes when made, stays
//! sparse.

use crate::{DiskImage, Error};

/// Bytes read from the source per step.
const CHUNK: usize = 4 << 20;
/// The grain of zero detection within data (a qcow2 cluster).
const ZERO_GRAIN: usize = 64 << 10;

/// Which side of a copy failed, so the message names the right image.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source failed.
    Source(Error),
    /// Writing the destination failed.
    Destination(Error),
}

/// What a copy did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Guest bytes read from the source.
    pub read: u64,
    /// Guest bytes written to the destination.
    pub written: u64,
}

/// Copies the first `src.size()` bytes of `src` into `dst`, which must be
/// at least as large and read as zeroes, then flushes `dst`. `progress`
/// is told how many bytes of the source are done after each step.
pub fn copy(
    src: &dyn DiskImage,
    dst: &dyn DiskImage,
    progress: &mut dyn FnMut(u64),
) -> Result<CopyStats, CopyError> {
    let size = src.size();
    if dst.size() < size {
        return Err(CopyError::Destination(Error::Refused(format!(
            "the destination ({} bytes) is smaller than the source ({size} bytes)",
            dst.size()
        ))));
    }
    let mut stats = CopyStats::default();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < size {
        let left = size - offset;
        let step = left.min(CHUNK as u64);
        // A run the source knows to be zeroes needs no copy; one it knows
        // to be data is copied up to its end, which saves asking again
        // for every chunk of a long run.
        let n = match src.allocation(offset, left) {
            Ok(Some((false, zero))) if zero > 0 => {
                offset += zero.min(left);
                progress(offset);
                continue;
            }
            Ok(Some((true, data))) if data > 0 => data.min(step),
            _ => step,
        };
        let len = usize::try_from(n).unwrap_or(CHUNK);
        let chunk = &mut buf[..len];
        src.read_at(offset, chunk).map_err(CopyError::Source)?;
        stats.read += n;
        stats.written += write_nonzero(dst, offset, chunk)?;
        offset += n;
        progress(offset);
    }
    dst.flush().map_err(CopyError::Destination)?;
    Ok(stats)
}

/// Writes the runs of `data` that are not all zeroes (at the grain of
/// [`ZERO_GRAIN`]); returns the bytes written.
fn write_nonzero(dst: &dyn DiskImage, offset: u64, data: &[u8]) -> Result<u64, CopyError> {
    let mut written = 0u64;
    let mut run: Option<usize> = None;
    let mut at = 0usize;
    loop {
        let end = (at + ZERO_GRAIN).min(data.len());
        let zero = at == data.len() || data[at..end].iter().all(|&b| b == 0);
        match (zero, run) {
            (false, None) => run = Some(at),
            (true, Some(start)) => {
                dst.write_at(offset + start as u64, &data[start..at])
                    .map_err(CopyError::Destination)?;
                written += (at - start) as u64;
                run = None;
            }
            _ => {}
        }
        if at == data.len() {
            return Ok(written);
        }
        at = end;
    }
}
