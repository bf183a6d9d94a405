//! The bytes an image format lives in: a host file, or a file reached
//! over the network (an NFS file, with the `nfs` feature).
//!
//! The qcow2 driver is generic over [`ImageFile`], not written against
//! a trait object: a local image compiles to the very calls it made on
//! [`HostFile`] before there was a second kind of file, so the hot path
//! pays nothing for the other kinds. What a kind of file cannot do the
//! way a host file does (punch a hole, be opened by a host path) is its
//! own implementation's to handle or refuse, never the format's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::file::{iov_len, iov_slice, iov_zero, HostFile, Iov};
use crate::open_chain::{Chain, FileKey};
use crate::{DirectFile, DiskImage, Error, OpenOptions, Result};

/// Largest zero-filled buffer [`ImageFile::write_zeroes`] writes at once.
const ZERO_CHUNK: u64 = 1 << 20;

/// A file an image lives in, shared by the threads that serve the
/// image's requests. Offsets are the file's own (host offsets of a
/// qcow2 image), not the guest's.
pub trait ImageFile: Send + Sync + Sized + 'static {
    /// Read the byte stream `iovs` from `offset`; returns the bytes read,
    /// fewer than asked only when the file ends first.
    fn read_iov(&self, offset: u64, iovs: &[Iov]) -> Result<u64>;

    /// Write all of `iovs` at `offset`; a write past the end grows the
    /// file.
    fn write_iov(&self, offset: u64, iovs: &[Iov]) -> Result<()>;

    /// Make every completed write durable.
    fn sync_data(&self) -> Result<()>;

    /// The file's current length.
    fn len(&self) -> Result<u64>;

    /// Set the file's length.
    fn set_len(&self, len: u64) -> Result<()>;

    /// Give `[offset, offset + len)` back to whatever stores the file;
    /// it reads as zeroes afterwards when this returns true. False: the
    /// file cannot free space, and the range keeps what it held (callers
    /// that need zeroes write them).
    fn punch_hole(&self, offset: u64, len: u64) -> Result<bool>;

    /// Bytes the file occupies where it is stored.
    fn allocated_bytes(&self) -> Result<u64>;

    /// The host file io_uring can reach directly; `None` for a file that
    /// is no host file.
    fn direct_file(&self) -> Option<DirectFile>;

    /// What names this file in a backing chain (loop detection).
    fn key(&self) -> Result<FileKey>;

    /// Where the backing file an image at `image` names as `name` is: a
    /// host path, or whatever this kind of file opens. An error when
    /// this kind of file cannot reach a file so named.
    fn backing_location(image: &Path, name: &str) -> Result<PathBuf>;

    /// Open the backing file at `location` (from
    /// [`ImageFile::backing_location`]) as one more image of `chain`.
    fn open_backing(
        location: &Path,
        options: &OpenOptions,
        chain: &mut Chain,
    ) -> Result<Arc<dyn DiskImage>>;

    /// The image on this file has opened: what opening read is read.
    /// A file that opened in a cheaper mode for that (a remote file
    /// before its service thread may start) switches to its serving
    /// mode here.
    fn opened(&self) -> Result<()> {
        Ok(())
    }

    /// Read exactly `iovs`; past the file's end reads as zeroes.
    fn read_iov_zero_fill(&self, offset: u64, iovs: &[Iov]) -> Result<()> {
        let n = self.read_iov(offset, iovs)?;
        let total = iov_len(iovs);
        if n < total {
            iov_zero(&iov_slice(iovs, n, total - n));
        }
        Ok(())
    }

    /// Read into a host buffer; past the file's end reads as zeroes.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_iov_zero_fill(offset, &[Iov::from_mut(buf)])
    }

    /// Read into a host buffer; fails if the file ends first.
    fn read_exact_strict(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let want = buf.len() as u64;
        let n = self.read_iov(offset, &[Iov::from_mut(buf)])?;
        if n < want {
            return Err(Error::InvalidImage(format!(
                "the file ends before offset {:#x}",
                offset + want
            )));
        }
        Ok(())
    }

    /// Write a host buffer.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.write_iov(offset, &[Iov::from_slice(buf)])
    }

    /// Write zero bytes over a range, a megabyte at a time: what makes a
    /// range read as zeroes on every kind of file.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        let zeroes = vec![0u8; usize::try_from(ZERO_CHUNK.min(len)).unwrap_or(0)];
        let mut done = 0;
        while done < len {
            let n = usize::try_from((len - done).min(ZERO_CHUNK)).unwrap_or(0);
            self.write_all_at(&zeroes[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

// Each method forwards to HostFile's own: inlined, the local image makes
// exactly the calls it made before the trait existed.
impl ImageFile for HostFile {
    #[inline]
    fn read_iov(&self, offset: u64, iovs: &[Iov]) -> Result<u64> {
        HostFile::read_iov(self, offset, iovs)
    }

    #[inline]
    fn write_iov(&self, offset: u64, iovs: &[Iov]) -> Result<()> {
        HostFile::write_iov(self, offset, iovs)
    }

    #[inline]
    fn sync_data(&self) -> Result<()> {
        HostFile::sync_data(self)
    }

    fn len(&self) -> Result<u64> {
        HostFile::len(self)
    }

    fn set_len(&self, len: u64) -> Result<()> {
        HostFile::set_len(self, len)
    }

    fn punch_hole(&self, offset: u64, len: u64) -> Result<bool> {
        HostFile::punch_hole(self, offset, len)
    }

    fn allocated_bytes(&self) -> Result<u64> {
        HostFile::allocated_bytes(self)
    }

    fn direct_file(&self) -> Option<DirectFile> {
        Some(DirectFile {
            fd: self.raw_fd(),
            direct: self.direct(),
            align: self.align(),
        })
    }

    fn key(&self) -> Result<FileKey> {
        let (dev, ino) = self.identity()?;
        Ok(FileKey::Host { dev, ino })
    }

    /// Relative names are relative to the image's directory.
    fn backing_location(image: &Path, name: &str) -> Result<PathBuf> {
        let named = Path::new(name);
        Ok(if named.is_absolute() {
            named.to_owned()
        } else {
            image.parent().unwrap_or_else(|| Path::new(".")).join(named)
        })
    }

    fn open_backing(
        location: &Path,
        options: &OpenOptions,
        chain: &mut Chain,
    ) -> Result<Arc<dyn DiskImage>> {
        crate::open_inner(location, options, chain)
    }

    #[inline]
    fn read_iov_zero_fill(&self, offset: u64, iovs: &[Iov]) -> Result<()> {
        HostFile::read_iov_zero_fill(self, offset, iovs)
    }

    #[inline]
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        HostFile::read_exact_at(self, buf, offset)
    }

    fn read_exact_strict(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        HostFile::read_exact_strict(self, buf, offset)
    }

    #[inline]
    fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        HostFile::write_all_at(self, buf, offset)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        // O_DIRECT needs an aligned buffer: HostFile's own uses one.
        HostFile::write_zeroes_slow(self, offset, len)
    }
}
