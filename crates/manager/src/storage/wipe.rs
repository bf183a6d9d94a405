//! `vol-wipe --algorithm zero`: every byte of a volume's file (or
//! partition) made to read as zero.
//!
//! As libvirt does, the file is zeroed, not the guest's view of it: a
//! qcow2 volume's header goes too, and the volume afterwards is a raw
//! volume of zeroes as long as the file was (its `physical` size). Only
//! the zero algorithm exists here: the pattern algorithms (nnsa, dod,
//! gutmann, ...) are refused by name.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use super::StorageError;

/// The algorithms `vol-wipe` accepts.
pub const ALGORITHMS: &[&str] = &["zero"];

/// Checks `--algorithm`; `None` is the default, zero.
pub fn check_algorithm(name: Option<&str>) -> Result<(), StorageError> {
    match name {
        None | Some("zero") => Ok(()),
        Some(other) => Err(StorageError::Invalid(format!(
            "wipe algorithm '{}' is not supported: the only one is 'zero'",
            other.escape_debug()
        ))),
    }
}

/// Bytes written per step when zeroes have to be written out.
const STEP: usize = 1 << 20;

/// Zeroes all of `path`; returns the bytes zeroed.
pub fn zero(path: &Path) -> Result<u64, StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| host(path, e))?;
    let meta = file.metadata().map_err(|e| host(path, e))?;
    let len = if meta.file_type().is_block_device() {
        super::blockdev::geometry(&file, path)?.0
    } else {
        meta.len()
    };
    // The filesystem zeroes a range without writing it when it can
    // (unwritten extents keep the space allocated, as writing would);
    // else zeroes are written.
    if meta.file_type().is_block_device() || !zero_range(&file, len) {
        write_zeroes(&file, len).map_err(|e| host(path, e))?;
    }
    file.sync_all().map_err(|e| host(path, e))?;
    Ok(len)
}

fn zero_range(file: &File, len: u64) -> bool {
    let Ok(len) = libc::off_t::try_from(len) else {
        return false;
    };
    if len == 0 {
        return true;
    }
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_ZERO_RANGE, 0, len) == 0 }
}

fn write_zeroes(file: &File, len: u64) -> std::io::Result<()> {
    let zeroes = vec![0u8; STEP];
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from((len - at).min(STEP as u64)).unwrap_or(STEP);
        file.write_all_at(&zeroes[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

fn host(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Host(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_reads_as_zeroes_and_keeps_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        std::fs::write(&p, vec![0xa5u8; 3 << 20]).unwrap();
        assert_eq!(zero(&p).unwrap(), 3 << 20);
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len(), 3 << 20);
        assert!(data.iter().all(|&b| b == 0));
    }

    #[test]
    fn only_zero_is_accepted() {
        assert!(check_algorithm(None).is_ok());
        assert!(check_algorithm(Some("zero")).is_ok());
        let e = check_algorithm(Some("nnsa")).unwrap_err().to_string();
        assert!(e.contains("'nnsa'") && e.contains("'zero'"), "{e}");
    }
}
