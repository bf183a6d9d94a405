//! A LUN of an iSCSI target as a raw disk (`iscsi://HOST[:PORT]/IQN/LUN`),
//! through the `iscsi` crate's user-space initiator.
//!
//! Requests from the I/O worker threads are pipelined on one session: a
//! service thread owns the libiscsi context (contexts are not shared
//! between threads), queues each request as a task with libiscsi's
//! asynchronous API and answers it when the target's response arrives,
//! so many are in flight at once (the `iscsi` crate's `SessionQueue`). A
//! request that loses the connection (every request in flight then
//! fails) logs in again once and is sent again; if that fails too the
//! request fails (the guest sees an I/O error), and the next request
//! tries to log in anew. Every step is bounded by [`TIMEOUT`], so a dead target costs
//! errors, never a hung queue. An iSCSI LUN takes no host lock: the
//! target decides who may share it.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use iscsi::{Capacity, Login, LunUrl, Session, SessionQueue};

use crate::{DiskImage, Error, IoBuf, IoBufMut, Result};

/// How long one login or one SCSI command may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The initiator name Vireo logs in with when none is given.
pub const DEFAULT_INITIATOR: &str = "iqn.2026-01.org.vireo:initiator";

/// Largest transfer sent as one READ/WRITE(16) when a request has to go
/// through a bounce buffer (zeroes, unaligned edges).
const CHUNK: u64 = 1024 * 1024;

/// Most blocks one UNMAP descriptor names.
const UNMAP_CHUNK_BLOCKS: u64 = 1 << 22;

/// One LUN, opened.
#[derive(Debug)]
pub struct IscsiDisk {
    url: LunUrl,
    capacity: Capacity,
    read_only: bool,
    session: SessionQueue,
    /// Held shared by every request, alone by a write that reads and
    /// merges partial blocks, so that no other write comes between its
    /// read and its write.
    merge: RwLock<()>,
}

fn remote(e: iscsi::Error) -> Error {
    Error::Remote(e.to_string())
}

impl IscsiDisk {
    /// Log in to the target `url` names as `initiator` and check that
    /// its LUN is a disk; its size comes from READ CAPACITY (16).
    pub fn open(url: &str, read_only: bool, initiator: Option<&str>) -> Result<Self> {
        Self::open_with_timeout(url, read_only, initiator, TIMEOUT)
    }

    /// As [`IscsiDisk::open`], logging in as the CHAP user the URL names
    /// (`iscsi://USER@HOST/...`) with `secret`, given apart from the URL
    /// so that it never stands in a command line or a message.
    pub fn open_with_secret(
        url: &str,
        read_only: bool,
        initiator: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Self> {
        Self::open_inner(url, read_only, initiator, TIMEOUT, secret)
    }

    /// As [`IscsiDisk::open`], each login and command bounded by `timeout`.
    pub fn open_with_timeout(
        url: &str,
        read_only: bool,
        initiator: Option<&str>,
        timeout: Duration,
    ) -> Result<Self> {
        Self::open_inner(url, read_only, initiator, timeout, None)
    }

    fn open_inner(
        url: &str,
        read_only: bool,
        initiator: Option<&str>,
        timeout: Duration,
        secret: Option<&str>,
    ) -> Result<Self> {
        let mut url = LunUrl::parse(url).map_err(remote)?;
        let shown = url.to_string();
        match (url.chap.as_mut(), secret) {
            (Some(chap), Some(s)) if chap.secret.is_empty() => chap.secret = s.to_string(),
            (Some(_), Some(_)) => {
                return Err(Error::Refused(format!(
                    "{shown}: the URL holds a CHAP secret and one is given apart: give it once"
                )))
            }
            (None, Some(_)) => {
                return Err(Error::Refused(format!(
                "{shown}: a CHAP secret is given but the URL names no user (iscsi://USER@HOST/...)"
            )))
            }
            (Some(chap), None) if chap.secret.is_empty() => {
                return Err(Error::Refused(format!(
                    "{shown}: the URL names CHAP user '{}' but no secret is given",
                    chap.user
                )))
            }
            _ => {}
        }
        let url = url;
        let login = Login {
            portal: url.portal(),
            target: url.target.clone(),
            initiator: initiator.unwrap_or(DEFAULT_INITIATOR).to_string(),
            chap: url.chap.clone(),
            timeout,
        };
        // Errors name the LUN (its URL without any secret).
        let named = |e: Error| Error::Open {
            path: url.to_string().into(),
            source: Box::new(e),
        };
        let (capacity, session) = Self::probe(&url, &login).map_err(named)?;
        let session = SessionQueue::start(session, |body| {
            confine::spawn(confine::ThreadKind::DiskIo, "iscsi-io".into(), body)
        })
        .map_err(remote)
        .map_err(named)?;
        Ok(Self {
            url,
            capacity,
            read_only,
            session,
            merge: RwLock::new(()),
        })
    }

    /// Log in and check the LUN is a disk; its capacity.
    fn probe(url: &LunUrl, login: &Login) -> Result<(Capacity, Session)> {
        let mut session = Session::connect(login).map_err(remote)?;
        let kind = session.device_type(url.lun).map_err(remote)?;
        if !kind.exists() {
            return Err(Error::Refused(format!("the target has no LUN {}", url.lun)));
        }
        if !kind.is_disk() {
            return Err(Error::Refused(format!(
                "LUN {} is not a disk (SCSI device type {:#x})",
                url.lun,
                kind.kind()
            )));
        }
        let capacity = session.read_capacity(url.lun).map_err(remote)?;
        Ok((capacity, session))
    }

    /// The LUN's block size and provisioning.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Most commands that were in flight on the session at once.
    pub fn peak_in_flight(&self) -> usize {
        self.session.peak_in_flight()
    }

    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        // The lock guards no data: a panic under it leaves nothing broken.
        self.merge.read().unwrap_or_else(|e| e.into_inner())
    }

    fn alone(&self) -> RwLockWriteGuard<'_, ()> {
        self.merge.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `op` on the session; the session's service thread logs in
    /// again and sends it again once when the connection is lost.
    fn with_session<T>(&self, op: impl FnOnce(&SessionQueue) -> iscsi::Result<T>) -> Result<T> {
        op(&self.session).map_err(|e| {
            if e.is_transport() {
                tracing::warn!("{}: {e}", self.url);
            }
            remote(e)
        })
    }

    fn block_size(&self) -> u64 {
        u64::from(self.capacity.block_size)
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(Error::OutOfRange { offset, len, size }),
        }
    }

    fn aligned(&self, offset: u64, len: u64) -> bool {
        let bs = self.block_size();
        offset.is_multiple_of(bs) && len.is_multiple_of(bs)
    }

    /// Read whole blocks covering `[offset, offset + len)` into a host
    /// buffer: the first byte of the result is that of block
    /// `offset / block_size`.
    fn read_blocks(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let bs = self.block_size();
        let first = offset / bs;
        let end = (offset + len).div_ceil(bs);
        let bytes = usize::try_from((end - first) * bs)
            .map_err(|_| Error::Refused("request too large".into()))?;
        let mut buf = vec![0u8; bytes];
        let lun = self.url.lun;
        let bsz = self.capacity.block_size;
        self.with_session(|s| s.read(lun, first, bsz, &mut buf))?;
        Ok(buf)
    }

    /// Write `data` at byte `offset`, reading and merging partial blocks
    /// at its edges alone, so that no other write comes between the read
    /// and the write.
    fn write_bytes(&self, offset: u64, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        let lun = self.url.lun;
        let bsz = self.capacity.block_size;
        if self.aligned(offset, len) {
            let lba = offset / self.block_size();
            let _shared = self.shared();
            return self.with_session(|s| s.write(lun, lba, bsz, data));
        }
        let _alone = self.alone();
        let mut blocks = self.read_blocks(offset, len)?;
        let start = usize::try_from(offset % self.block_size()).unwrap_or(0);
        blocks[start..start + data.len()].copy_from_slice(data);
        let lba = offset / self.block_size();
        self.with_session(|s| s.write(lun, lba, bsz, &blocks))
    }
}

impl DiskImage for IscsiDisk {
    fn size(&self) -> u64 {
        self.capacity.bytes()
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
        if self.aligned(offset, len) {
            let raw: Vec<(*mut u8, usize)> =
                bufs.iter().map(|b| (b.as_mut_ptr(), b.len())).collect();
            let lba = offset / self.block_size();
            let (lun, bs) = (self.url.lun, self.capacity.block_size);
            // SAFETY: an IoBufMut is writable memory valid for its
            // lifetime, which spans this call.
            return self.with_session(|s| unsafe { s.read_raw(lun, lba, bs, &raw) });
        }
        let blocks = self.read_blocks(offset, len)?;
        let mut at = usize::try_from(offset % self.block_size()).unwrap_or(0);
        for b in bufs {
            // SAFETY: `b` is writable for `b.len()` bytes, and the source
            // is our own buffer, which holds `len` bytes from `at`.
            unsafe {
                std::ptr::copy_nonoverlapping(blocks[at..].as_ptr(), b.as_mut_ptr(), b.len())
            };
            at += b.len();
        }
        Ok(())
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
        if self.aligned(offset, len) {
            let raw: Vec<(*const u8, usize)> = bufs.iter().map(|b| (b.as_ptr(), b.len())).collect();
            let lba = offset / self.block_size();
            let (lun, bs) = (self.url.lun, self.capacity.block_size);
            let _shared = self.shared();
            // SAFETY: an IoBuf is readable memory valid for its lifetime,
            // which spans this call.
            return self.with_session(|s| unsafe { s.write_raw(lun, lba, bs, &raw) });
        }
        // Unaligned: gather into a host buffer (copied, never referenced
        // in place: it may be guest memory).
        let total = usize::try_from(len).map_err(|_| Error::Refused("request too large".into()))?;
        let mut data = vec![0u8; total];
        let mut at = 0;
        for b in bufs {
            // SAFETY: `b` is readable for `b.len()` bytes; `data` has room.
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), data[at..].as_mut_ptr(), b.len()) };
            at += b.len();
        }
        self.write_bytes(offset, &data)
    }

    fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let lun = self.url.lun;
        self.with_session(|s| s.synchronize_cache(lun))
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.check(offset, len)?;
        if !self.capacity.thin {
            return Err(Error::Unsupported("discard"));
        }
        // Only whole blocks inside the range are unmapped: discard may
        // leave any part of the range as it was.
        let bs = self.block_size();
        let mut lba = offset.div_ceil(bs);
        let end = (offset + len) / bs;
        let lun = self.url.lun;
        while lba < end {
            let n = (end - lba).min(UNMAP_CHUNK_BLOCKS);
            let blocks = u32::try_from(n).unwrap_or(u32::MAX);
            self.with_session(|s| s.unmap(lun, lba, blocks))?;
            lba += u64::from(blocks);
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, _unmap: bool) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.check(offset, len)?;
        // Written as zeroes: UNMAP does not promise zeroes on every target.
        let zeroes = vec![0u8; usize::try_from(CHUNK).unwrap_or(1 << 20)];
        let mut at = offset;
        let end = offset + len;
        while at < end {
            // Chunks end on block boundaries, so only the range's own
            // edges are read and merged.
            let next = ((at / CHUNK + 1) * CHUNK).min(end);
            let n = usize::try_from(next - at).unwrap_or(0);
            self.write_bytes(at, &zeroes[..n])?;
            at = next;
        }
        Ok(())
    }

    fn resize(&self, _new_size: u64) -> Result<()> {
        Err(Error::Unsupported(
            "resizing an iSCSI LUN (the target sets its size)",
        ))
    }
}

#[cfg(test)]
mod tests;
