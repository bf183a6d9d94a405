//! Raw images: byte N of the disk is byte N of the host file or device.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::file::{iov_len, iov_slice, iov_zero, HostFile, Iov};
use crate::probe::{self, HeaderGuard, PROBE_LEN};
use crate::{DiskImage, Error, ImageFormat, IoBuf, IoBufMut, Result};

/// A raw image on a regular file or a block device.
#[derive(Debug)]
pub struct RawDisk {
    file: HostFile,
    size: AtomicU64,
    /// Present when the format was probed: writes may not put an image
    /// header into sector 0 (see [`crate::probe`]).
    guard: Option<HeaderGuard>,
}

impl RawDisk {
    /// Open and lock a raw image (see [`crate::open`] for the options).
    pub fn open(path: &std::path::Path, read_only: bool, direct: bool) -> Result<Self> {
        Self::from_host_file(HostFile::open(path, read_only, direct)?)
    }

    pub(crate) fn from_host_file(file: HostFile) -> Result<Self> {
        let size = file.len()?;
        Ok(Self {
            file,
            size: AtomicU64::new(size),
            guard: None,
        })
    }

    /// Refuse writes that would leave a recognised image header in sector
    /// 0, as an image whose format was probed must (see [`crate::probe`]).
    pub fn guard_header(mut self) -> Self {
        self.guard = Some(HeaderGuard::default());
        self
    }

    /// Run `write` (which touches `[offset, offset + len)`) under the
    /// header guard when there is one and the range reaches into sector 0,
    /// after checking what sector 0 would hold: `change` applies the write
    /// to a copy of it.
    fn guarded<T>(
        &self,
        offset: u64,
        len: u64,
        change: impl FnOnce(&mut [u8]),
        write: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let Some(guard) = &self.guard else {
            return write();
        };
        if offset >= PROBE_LEN as u64 || len == 0 {
            return write();
        }
        let _held = guard.lock();
        let mut current = [0u8; PROBE_LEN];
        self.file.read_exact_at(&mut current, 0)?;
        HeaderGuard::check(current, change)?;
        write()
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(Error::OutOfRange { offset, len, size }),
        }
    }

    fn check_write(&self, offset: u64, len: u64) -> Result<()> {
        if self.file.read_only() {
            return Err(Error::ReadOnly);
        }
        self.check(offset, len)
    }
}

impl DiskImage for RawDisk {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn read_only(&self) -> bool {
        self.file.read_only()
    }

    fn read_vectored(&self, offset: u64, bufs: &[IoBufMut]) -> Result<()> {
        let iovs = Iov::from_bufs_mut(bufs);
        let len = iov_len(&iovs);
        self.check(offset, len)?;
        let got = self.file.read_iov(offset, &iovs)?;
        if got < len {
            // The file is shorter than the size we know (truncated behind
            // our back): what is within size() reads as zeroes.
            iov_zero(&iov_slice(&iovs, got, len - got));
        }
        Ok(())
    }

    fn write_vectored(&self, offset: u64, bufs: &[IoBuf]) -> Result<()> {
        let iovs = Iov::from_bufs(bufs);
        let len = iov_len(&iovs);
        self.check_write(offset, len)?;
        self.guarded(
            offset,
            len,
            |s| probe::overlay_write(s, offset, &iovs),
            || self.file.write_iov(offset, &iovs),
        )
    }

    fn flush(&self) -> Result<()> {
        if self.file.read_only() {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.check_write(offset, len)?;
        // Discard is advisory: a filesystem without hole punching keeps
        // the data, which the interface allows. Either way the range reads
        // as zeroes or as before, so zeroes are what the guard checks.
        self.guarded(
            offset,
            len,
            |s| probe::overlay_zeroes(s, offset, len),
            || self.file.punch_hole(offset, len),
        )?;
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<()> {
        self.check_write(offset, len)?;
        self.guarded(
            offset,
            len,
            |s| probe::overlay_zeroes(s, offset, len),
            || {
                if unmap && self.file.punch_hole(offset, len)? {
                    return Ok(());
                }
                self.file.zero_range(offset, len)
            },
        )
    }

    fn resize(&self, new_size: u64) -> Result<()> {
        if self.file.read_only() {
            return Err(Error::ReadOnly);
        }
        self.file.set_len(new_size)?;
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }

    fn format(&self) -> ImageFormat {
        ImageFormat::Raw
    }

    fn allocation(&self, offset: u64, len: u64) -> Result<Option<(bool, u64)>> {
        self.check(offset, len)?;
        Ok(seek_data_hole(self.file.raw_fd(), offset, len))
    }

    fn host_allocated_bytes(&self) -> Result<u64> {
        self.file.allocated_bytes()
    }

    fn checked_write_prefix(&self) -> u64 {
        if self.guard.is_some() {
            PROBE_LEN as u64
        } else {
            0
        }
    }

    fn begin_direct_read(&self, offset: u64, len: u64) -> Option<u64> {
        self.check(offset, len).ok().map(|()| offset)
    }

    fn direct_file(&self) -> Option<crate::DirectFile> {
        Some(crate::DirectFile {
            fd: self.file.raw_fd(),
            direct: self.file.direct(),
            align: self.file.align(),
        })
    }
}

/// Whether `offset` is in data or a hole, and how far that lasts, from
/// `SEEK_DATA`/`SEEK_HOLE`; `None` when the filesystem cannot tell.
fn seek_data_hole(fd: i32, offset: u64, len: u64) -> Option<(bool, u64)> {
    let off = libc::off_t::try_from(offset).ok()?;
    // SAFETY: lseek takes plain integers; the fd is open. It moves the file
    // position, which nothing here uses (all I/O is positioned).
    let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
    if data < 0 {
        let err = std::io::Error::last_os_error();
        // ENXIO: no data after offset, the rest is a hole.
        return (err.raw_os_error() == Some(libc::ENXIO)).then_some((false, len));
    }
    let data = u64::try_from(data).ok()?;
    if data > offset {
        return Some((false, (data - offset).min(len)));
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, off, libc::SEEK_HOLE) };
    let hole = u64::try_from(hole).ok()?;
    Some((true, hole.saturating_sub(offset).clamp(1, len)))
}
