//! `vol-upload` and `vol-download`: which bytes of a volume's file a
//! transfer covers, checked before any data moves, and the file opened
//! for it. The bytes are the file's (a qcow2 volume's image file, header
//! and all), as libvirt's streams carry them; the daemon moves them in
//! bounded pieces (daemon/vol_ops.rs), never the whole at once.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use super::{StorageError, VolumeInfo};

/// A checked transfer: the open file and its range.
#[derive(Debug)]
pub struct Transfer {
    /// The volume's file (or partition device).
    pub file: File,
    /// First byte.
    pub offset: u64,
    /// Bytes to move at most; a download moves exactly this many.
    pub length: u64,
    /// An upload's `--sparse`: blocks of zeroes become holes.
    pub sparse: bool,
}

/// The unit of `--sparse`: a block of zeroes this large (and aligned in
/// the volume) becomes a hole; smaller runs are written.
const SPARSE_BLOCK: usize = 4096;

fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

fn past_end(name: &str, offset: u64, size: u64) -> StorageError {
    StorageError::Invalid(format!(
        "offset {offset} is past the end of volume '{name}' ({size} bytes)"
    ))
}

/// `vol-download`: `length` bytes from `offset` (0: to the end), all
/// within the volume.
pub fn download(vol: &VolumeInfo, offset: u64, length: u64) -> Result<Transfer, StorageError> {
    local_only(vol, "vol-download")?;
    let size = vol.physical;
    if offset > size {
        return Err(past_end(&vol.name, offset, size));
    }
    let length = match length {
        0 => size - offset,
        n if n > size - offset => {
            return Err(StorageError::Invalid(format!(
                "offset {offset} + length {n} reaches past the end of volume '{}' ({size} bytes)",
                vol.name
            )))
        }
        n => n,
    };
    let file = File::open(&vol.path).map_err(|e| host(&vol.path, e))?;
    Ok(Transfer {
        file,
        offset,
        length,
        sparse: false,
    })
}

/// `vol-upload`: at most `length` bytes (0: no bound) written from
/// `offset`. A file volume may grow, as libvirt's does; a partition
/// cannot, so a range past its end is refused. With `sparse` (virsh's
/// `--sparse`), aligned 4 KiB blocks of zeroes in a file volume are
/// punched out instead of written, so the volume keeps the holes of the
/// file uploaded (a partition is written whole).
pub fn upload(
    vol: &VolumeInfo,
    offset: u64,
    length: u64,
    sparse: bool,
) -> Result<Transfer, StorageError> {
    local_only(vol, "vol-upload")?;
    let size = vol.physical;
    if offset > size {
        return Err(past_end(&vol.name, offset, size));
    }
    let device = is_block_device(&vol.path);
    let length = match (device, length) {
        (true, 0) => size - offset,
        (true, n) if n > size - offset => {
            return Err(StorageError::Invalid(format!(
            "offset {offset} + length {n} reaches past the end of partition '{}' ({size} bytes)",
            vol.name
        )))
        }
        (false, 0) => u64::MAX - offset,
        (_, n) => n,
    };
    let file = OpenOptions::new()
        .write(true)
        .open(&vol.path)
        .map_err(|e| host(&vol.path, e))?;
    Ok(Transfer {
        file,
        offset,
        length,
        sparse: sparse && !device,
    })
}

/// Volumes reached over the network (an iSCSI LUN's `iscsi://` path)
/// have no file on this host to stream.
fn local_only(vol: &VolumeInfo, verb: &str) -> Result<(), StorageError> {
    if vol.path.to_str().is_some_and(|p| p.contains("://")) {
        return Err(StorageError::Invalid(format!(
            "{verb} of volume '{}' is not supported: it is reached over the network ({})",
            vol.name,
            vol.path.display()
        )));
    }
    Ok(())
}

impl Transfer {
    /// Reads the next piece of a download into `buf` (at most its
    /// length); `Ok(0)` at the range's end.
    pub fn read_next(&mut self, buf: &mut [u8]) -> Result<usize, StorageError> {
        let want = usize::try_from(self.length)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self
            .file
            .read_at(&mut buf[..want], self.offset)
            .map_err(|e| StorageError::Host(format!("reading the volume: {e}")))?;
        if n == 0 {
            return Err(StorageError::Host(
                "the volume ended before the range did (it shrank meanwhile)".into(),
            ));
        }
        self.offset += n as u64;
        self.length -= n as u64;
        Ok(n)
    }

    /// Writes the next piece of an upload; refused past the range.
    pub fn write_next(&mut self, data: &[u8]) -> Result<(), StorageError> {
        if data.len() as u64 > self.length {
            return Err(StorageError::Invalid(
                "the upload carries more bytes than its length (or the partition) allows".into(),
            ));
        }
        let write = |e: std::io::Error| StorageError::Host(format!("writing the volume: {e}"));
        if self.sparse {
            self.write_sparse(data).map_err(write)?;
        } else {
            self.file.write_all_at(data, self.offset).map_err(write)?;
        }
        self.offset += data.len() as u64;
        self.length -= data.len() as u64;
        Ok(())
    }

    /// `data` at the transfer's offset, its aligned blocks of zeroes
    /// punched out of the file rather than written.
    fn write_sparse(&self, data: &[u8]) -> std::io::Result<()> {
        let mut at = 0usize;
        while at < data.len() {
            let pos = self.offset + at as u64;
            // Up to the next block boundary of the volume (the remainder
            // is below SPARSE_BLOCK, so it fits a usize).
            let into = usize::try_from(pos % SPARSE_BLOCK as u64).unwrap_or(0);
            let step = (SPARSE_BLOCK - into).min(data.len() - at);
            let block = &data[at..at + step];
            if step == SPARSE_BLOCK && block.iter().all(|&b| b == 0) {
                // Contiguous zero blocks go as one hole.
                let mut end = at + step;
                while end + SPARSE_BLOCK <= data.len()
                    && data[end..end + SPARSE_BLOCK].iter().all(|&b| b == 0)
                {
                    end += SPARSE_BLOCK;
                }
                if !self.punch(pos, (end - at) as u64) {
                    self.file.write_all_at(&data[at..end], pos)?;
                }
                at = end;
            } else {
                self.file.write_all_at(block, pos)?;
                at += step;
            }
        }
        Ok(())
    }

    /// Makes `[pos, pos + len)` a hole; false where the filesystem cannot
    /// (the caller writes the zeroes instead).
    fn punch(&self, pos: u64, len: u64) -> bool {
        let (Ok(p), Ok(l)) = (libc::off_t::try_from(pos), libc::off_t::try_from(len)) else {
            return false;
        };
        // SAFETY: fallocate on a descriptor we own; no memory is passed.
        unsafe {
            libc::fallocate(
                std::os::fd::AsRawFd::as_raw_fd(&self.file),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                p,
                l,
            ) == 0
        }
    }

    /// Makes an upload durable. A sparse upload that ended in a hole past
    /// the file's end still leaves the file as long as what was sent.
    pub fn finish(self) -> Result<(), StorageError> {
        let host = |e: std::io::Error| StorageError::Host(format!("syncing the volume: {e}"));
        if self.sparse {
            let len = self.file.metadata().map_err(host)?.len();
            if len < self.offset {
                self.file.set_len(self.offset).map_err(host)?;
            }
        }
        self.file.sync_all().map_err(host)
    }
}

fn host(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Host(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtxml::VolumeFormat;

    fn vol(path: &Path, size: u64) -> VolumeInfo {
        VolumeInfo {
            name: "v".into(),
            path: path.to_path_buf(),
            format: VolumeFormat::Raw,
            capacity: size,
            allocation: 0,
            physical: size,
            backing: None,
        }
    }

    #[test]
    fn ranges_are_checked_before_data_moves() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        std::fs::write(&p, vec![7u8; 1000]).unwrap();
        let v = vol(&p, 1000);
        assert_eq!(download(&v, 0, 0).unwrap().length, 1000);
        assert_eq!(download(&v, 900, 0).unwrap().length, 100);
        assert_eq!(download(&v, 1000, 0).unwrap().length, 0);
        let e = download(&v, 1001, 0).unwrap_err().to_string();
        assert!(e.contains("past the end"), "{e}");
        let e = download(&v, 900, 101).unwrap_err().to_string();
        assert!(e.contains("reaches past the end"), "{e}");
        assert!(upload(&v, 1001, 0, false).is_err());

        // A file volume grows on upload; a bounded one refuses more.
        let mut t = upload(&v, 1000, 0, false).unwrap();
        t.write_next(&[1u8; 24]).unwrap();
        t.finish().unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1024);
        let mut t = upload(&v, 0, 4, false).unwrap();
        t.write_next(&[2u8; 4]).unwrap();
        assert!(t.write_next(&[2u8; 1]).is_err());

        let mut t = download(&vol(&p, 1024), 2, 6).unwrap();
        let mut buf = [0u8; 64];
        let n = t.read_next(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[2, 2, 7, 7, 7, 7]);
        assert_eq!(t.read_next(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_sparse_upload_punches_aligned_zero_blocks_and_writes_the_rest() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        // An allocated volume full of 0xee: what the upload replaces.
        std::fs::write(&p, vec![0xeeu8; 4 << 20]).unwrap();
        let v = vol(&p, 4 << 20);
        let mut data = vec![0u8; (3 << 20) + 100];
        data[..10].fill(7); // the first block is written
        data[(2 << 20) + 5] = 9; // one block in the middle too
        let mut t = upload(&v, 0, 0, true).unwrap();
        // Pieces that cut blocks in two, as frames do.
        for piece in data.chunks(3000) {
            t.write_next(piece).unwrap();
        }
        t.finish().unwrap();
        let back = std::fs::read(&p).unwrap();
        assert_eq!(&back[..data.len()], &data[..]);
        assert!(back[data.len()..].iter().all(|&b| b == 0xee));
        // About 3 MiB became holes: what stays allocated is the two
        // written blocks, the unaligned tail and the untouched last MiB.
        let allocated = std::fs::metadata(&p).unwrap().blocks() * 512;
        match allocated {
            a if a < (1 << 20) + (64 << 10) => {}
            // A filesystem without hole punching wrote the zeroes.
            a => assert!(a >= 4 << 20, "{a}"),
        }

        // A sparse upload that ends in zeroes past the end still makes
        // the file that long.
        let q = dir.path().join("q");
        std::fs::write(&q, b"").unwrap();
        let mut t = upload(&vol(&q, 0), 0, 0, true).unwrap();
        t.write_next(&[0u8; 8192]).unwrap();
        t.finish().unwrap();
        assert_eq!(std::fs::metadata(&q).unwrap().len(), 8192);
    }
}
