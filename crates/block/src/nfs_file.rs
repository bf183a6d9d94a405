//! A file on an NFS export as a raw disk
//! (`nfs://SERVER[:PORT]/EXPORT/PATH`), through the `nfs` crate's
//! user-space client (libnfs), as QEMU's nfs block driver reaches it.
//!
//! Requests from the I/O worker threads are pipelined on one connection:
//! a service thread owns the libnfs context (contexts are not shared
//! between threads), queues each request with libnfs's asynchronous API
//! and answers it when its reply arrives, so many are in flight at once
//! (the `nfs` crate's `FileQueue`). A request that loses the connection
//! (every request in flight then fails) connects again once and is sent
//! again; if that fails too the request fails (the disk's error policy
//! decides what the guest sees), and the next request tries to connect
//! anew. Every step is bounded by [`TIMEOUT`],
//! so a dead server costs errors, never a hung queue. A qcow2 image on
//! an export is the qcow2 driver on an `NfsFile` (see `remote`). An
//! NFS file takes no host lock (there is no lock manager on this path,
//! as with QEMU's driver).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nfs::{FileQueue, FileUrl, OpenFlags, RemoteFile};

use crate::{DiskImage, Error, IoBuf, IoBufMut, Result};

mod remote;

pub(crate) use remote::open_in_chain;

/// How long one connect (mount and open) or one call may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Largest zero-filled write sent at once by `write_zeroes`.
const ZERO_CHUNK: u64 = 1024 * 1024;

/// The first bytes of a qcow2 image.
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// One NFS file, opened.
#[derive(Debug)]
pub struct NfsDisk {
    url: FileUrl,
    read_only: bool,
    size: AtomicU64,
    file: FileQueue,
}

/// An `nfs` error as the block layer reports it: a server that is out
/// of space is the host's ENOSPC (so `werror=enospc` sees it), anything
/// else is the remote side's.
fn remote(e: nfs::Error) -> Error {
    match e.errno() {
        Some(errno @ (libc::ENOSPC | libc::EDQUOT)) => Error::Io {
            op: "nfs write",
            source: std::io::Error::from_raw_os_error(errno),
        },
        _ => Error::Remote(e.to_string()),
    }
}

impl NfsDisk {
    /// Mount the export `url` names and open its file; its size is the
    /// file's. With `probe`, a file that starts as a qcow2 image is
    /// refused (no format was given, and it is not raw).
    pub fn open(url: &str, read_only: bool, probe: bool) -> Result<Self> {
        Self::open_with_timeout(url, read_only, probe, TIMEOUT)
    }

    /// As [`NfsDisk::open`], each step bounded by `timeout`.
    pub fn open_with_timeout(
        url: &str,
        read_only: bool,
        probe: bool,
        timeout: Duration,
    ) -> Result<Self> {
        let url = FileUrl::parse(url).map_err(remote)?;
        Self::open_unnamed(&url, read_only, probe, timeout).map_err(|e| Error::Open {
            path: url.to_string().into(),
            source: Box::new(e),
        })
    }

    /// As [`NfsDisk::open_with_timeout`], with errors that do not name
    /// the URL (for a chain, whose caller names each image once).
    pub(crate) fn open_unnamed(
        url: &FileUrl,
        read_only: bool,
        probe: bool,
        timeout: Duration,
    ) -> Result<Self> {
        let mut file = connect(url, read_only, timeout)?;
        let size = file.stat().map_err(remote)?.size;
        if probe && size >= 4 {
            let mut head = [0u8; 4];
            file.read_at(0, &mut head).map_err(remote)?;
            if &head == QCOW2_MAGIC {
                return Err(Error::Refused(
                    "it is a qcow2 image, and the format of an nfs:// disk is never probed: \
                     give format=qcow2 (or format=raw to use its bytes as a raw disk)"
                        .into(),
                ));
            }
        }
        let file = FileQueue::start(file, |body| {
            confine::spawn(confine::ThreadKind::DiskIo, "nfs-io".into(), body)
        })
        .map_err(remote)?;
        Ok(Self {
            url: url.clone(),
            read_only,
            size: AtomicU64::new(size),
            file,
        })
    }

    /// Most requests that were in flight on the connection at once.
    pub fn peak_in_flight(&self) -> usize {
        self.file.peak_in_flight()
    }

    /// Run `op` on the file; the file's service thread connects again
    /// and sends it again once when the connection is lost.
    fn with_file<T>(&self, op: impl FnOnce(&FileQueue) -> nfs::Result<T>) -> Result<T> {
        op(&self.file).map_err(|e| {
            if e.is_transport() {
                tracing::warn!("{}: {e}", self.url);
            }
            remote(e)
        })
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(Error::OutOfRange { offset, len, size }),
        }
    }
}

/// Mount and open, read-write unless `read_only`.
fn connect(url: &FileUrl, read_only: bool, timeout: Duration) -> Result<RemoteFile> {
    let flags = if read_only {
        OpenFlags::ReadOnly
    } else {
        OpenFlags::ReadWrite
    };
    RemoteFile::open(url, flags, timeout).map_err(remote)
}

impl DiskImage for NfsDisk {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_vectored(&self, offset: u64, bufs: &[IoBufMut]) -> Result<()> {
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        self.check(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let raw: Vec<(*mut u8, usize)> = bufs.iter().map(|b| (b.as_mut_ptr(), b.len())).collect();
        // SAFETY: an IoBufMut is writable memory valid for its lifetime,
        // which spans this call.
        self.with_file(|f| unsafe { f.read_raw(offset, &raw) })
    }

    fn write_vectored(&self, offset: u64, bufs: &[IoBuf]) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        self.check(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        if let [one] = bufs {
            // SAFETY: an IoBuf is readable for its length during its
            // lifetime, which spans this call; libnfs only reads it, and
            // no Rust code writes it meanwhile.
            let data = unsafe { std::slice::from_raw_parts(one.as_ptr(), one.len()) };
            return self.with_file(|f| f.write_at(offset, data));
        }
        // Several buffers: gathered into one (copied, as libnfs takes one
        // buffer per WRITE).
        let total = usize::try_from(len).map_err(|_| Error::Refused("request too large".into()))?;
        let mut data = vec![0u8; total];
        let mut at = 0;
        for b in bufs {
            // SAFETY: `b` is readable for `b.len()` bytes; `data` has room.
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), data[at..].as_mut_ptr(), b.len()) };
            at += b.len();
        }
        self.with_file(|f| f.write_at(offset, &data))
    }

    fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.with_file(FileQueue::fsync)
    }

    fn discard(&self, _offset: u64, _len: u64) -> Result<()> {
        // NFSv3 has no way to punch a hole.
        Err(Error::Unsupported("discard on an nfs:// disk"))
    }

    fn write_zeroes(&self, offset: u64, len: u64, _unmap: bool) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.check(offset, len)?;
        let zeroes = vec![0u8; usize::try_from(ZERO_CHUNK).unwrap_or(1 << 20)];
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let n = usize::try_from((end - at).min(ZERO_CHUNK)).unwrap_or(0);
            self.with_file(|f| f.write_at(at, &zeroes[..n]))?;
            at += n as u64;
        }
        Ok(())
    }

    fn resize(&self, new_size: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.with_file(|f| f.truncate(new_size))?;
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }

    fn host_allocated_bytes(&self) -> Result<u64> {
        Ok(self.with_file(FileQueue::stat)?.allocated)
    }
}

#[cfg(test)]
mod tests;
