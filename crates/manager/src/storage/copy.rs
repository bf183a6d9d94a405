//! The copies of `vol-create-from` and `vol-clone`: the volumes opened
//! for the `block` crate's copy (raw and qcow2 either way, an overlay
//! flattened, zeroes skipped), and its errors named by volume. The caller
//! makes the destination under a temporary name, syncs it and renames it
//! into place only once [`copy`] has returned.

use std::path::Path;

use block::{DiskImage, ImageFormat, OpenOptions};

pub use block::copy::{CopyError, CopyStats};

use super::StorageError;

/// Copies the first `src.size()` bytes of `src` into `dst`, which must be
/// at least as large and read as zeroes, then flushes `dst` (the block
/// crate's copy, without progress).
pub fn copy(src: &dyn DiskImage, dst: &dyn DiskImage) -> Result<CopyStats, CopyError> {
    block::copy::copy(src, dst, &mut |_| {})
}

/// Opens a volume's image to read its guest data: a qcow2 overlay with
/// its backing chain (which the block crate opens read-only).
pub fn open_source(
    path: &Path,
    format: ImageFormat,
) -> Result<std::sync::Arc<dyn DiskImage>, StorageError> {
    block::open(
        path,
        &OpenOptions {
            read_only: true,
            direct: false,
            format: Some(format),
            ..OpenOptions::default()
        },
    )
    .map_err(|e| StorageError::Conflict(format!("cannot read {}: {e}", path.display())))
}

/// Opens a freshly made image to write into it, with QEMU's
/// `cache=unsafe` as qemu-img convert writes: a qcow2 image orders none
/// of its metadata updates with syncs (each one cost a disk flush, about
/// 2 ms, hundreds of times per GiB), since a copy that a crash
/// interrupts is thrown away anyway; the caller syncs the file once, when
/// the copy is complete.
pub fn open_destination(
    path: &Path,
    format: ImageFormat,
) -> Result<std::sync::Arc<dyn DiskImage>, StorageError> {
    block::open(
        path,
        &OpenOptions {
            read_only: false,
            direct: false,
            format: Some(format),
            unsafe_cache: true,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| StorageError::Host(format!("cannot write {}: {e}", path.display())))
}

/// A copy error as one line naming the image it is about.
pub fn describe(e: CopyError, source: &Path, destination: &Path) -> StorageError {
    match e {
        CopyError::Source(e) => StorageError::Host(format!("reading {}: {e}", source.display())),
        CopyError::Destination(e) => {
            StorageError::Host(format!("writing {}: {e}", destination.display()))
        }
    }
}

#[cfg(test)]
mod tests;
