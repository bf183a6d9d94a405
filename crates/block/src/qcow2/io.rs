//! The data paths of a qcow2 image: reads, writes (in place or
//! allocating), discard and write-zeroes, resize.

use std::sync::atomic::Ordering;
use std::sync::RwLockReadGuard;

use crate::file::{iov_copy_from, iov_copy_to, iov_len, iov_slice, iov_zero, Iov};
use crate::image_file::ImageFile;
use crate::{DiskImage, Error, IoBuf, IoBufMut, Result};

use super::l2::{self, Mapping, COPIED};
use super::meta::{Meta, Release};
use super::Qcow2Disk;

/// What [`Qcow2Disk::clear_range`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clear {
    /// The guest no longer needs the range.
    Discard,
    /// The range must read as zeroes.
    Zeroes {
        /// Space may be freed.
        unmap: bool,
    },
}

/// One contiguous part of a request, mapped.
#[derive(Debug, Clone, Copy)]
enum Piece {
    /// Bytes in this file at the host offset.
    Host(u64),
    /// Zeroes.
    Zero,
    /// The backing file at the same guest offset.
    Backing,
    /// Part of a compressed cluster.
    Compressed {
        host: u64,
        len: u64,
        in_cluster: u64,
    },
}

impl<F: ImageFile> Qcow2Disk<F> {
    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(Error::OutOfRange { offset, len, size }),
        }
    }

    fn gate_read(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Split `[offset, offset + len)` into mapped pieces, merging neighbours.
    fn map_range(&self, m: &mut Meta, offset: u64, len: u64) -> Result<Vec<(u64, u64, Piece)>> {
        let cs = self.cluster_size();
        let mut out: Vec<(u64, u64, Piece)> = Vec::new();
        let mut pos = 0u64;
        while pos < len {
            let guest = offset + pos;
            let in_cluster = guest & (cs - 1);
            let n = (cs - in_cluster).min(len - pos);
            let piece = match m.mapping(&self.file, guest >> self.cluster_bits)? {
                Mapping::Unallocated => Piece::Backing,
                Mapping::Zero { .. } => Piece::Zero,
                Mapping::Data { host, .. } => Piece::Host(host + in_cluster),
                Mapping::Compressed { host, len } => Piece::Compressed {
                    host,
                    len,
                    in_cluster,
                },
            };
            match (out.last_mut(), piece) {
                (Some((_, l, Piece::Host(h))), Piece::Host(h2)) if *h + *l == h2 => *l += n,
                (Some((_, l, Piece::Zero)), Piece::Zero) => *l += n,
                (Some((_, l, Piece::Backing)), Piece::Backing) => *l += n,
                _ => out.push((pos, n, piece)),
            }
            pos += n;
        }
        Ok(out)
    }

    /// The host offset of a read that lies in one contiguous run of data
    /// clusters; counts it as a direct read until `end_direct_read`.
    pub(super) fn begin_direct_read_impl(&self, offset: u64, len: u64) -> Option<u64> {
        if len == 0 || self.check_range(offset, len).is_err() {
            return None;
        }
        // Never wait here: the caller also reaps the reads an exclusive
        // operation may be waiting for. Busy: the request takes the pool.
        let _gate = self.gate.try_read().ok()?;
        let pieces = {
            let mut m = self.lock_meta();
            self.map_range(&mut m, offset, len).ok()?
        };
        match pieces.as_slice() {
            [(0, n, Piece::Host(host))] if *n == len => {
                self.direct_reads
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                Some(*host)
            }
            _ => None,
        }
    }

    pub(super) fn read_impl(&self, offset: u64, bufs: &[IoBufMut]) -> Result<()> {
        let iovs = Iov::from_bufs_mut(bufs);
        let len = iov_len(&iovs);
        self.check_range(offset, len)?;
        let _gate = self.gate_read();
        let pieces = {
            let mut m = self.lock_meta();
            self.map_range(&mut m, offset, len)?
        };
        for (rel, n, piece) in pieces {
            let dst = iov_slice(&iovs, rel, n);
            match piece {
                Piece::Host(host) => self.file.read_iov_zero_fill(host, &dst)?,
                Piece::Zero => iov_zero(&dst),
                Piece::Backing => self.read_backing(offset + rel, &dst)?,
                Piece::Compressed {
                    host,
                    len,
                    in_cluster,
                } => {
                    let cluster = self.decompress(host, len)?;
                    let at = usize::try_from(in_cluster).unwrap_or(0);
                    let n_us = usize::try_from(n).unwrap_or(0);
                    iov_copy_from(&dst, 0, &cluster[at..at + n_us]);
                }
            }
        }
        Ok(())
    }

    /// Read the backing file (zeroes past its end, or without one).
    fn read_backing(&self, guest: u64, dst: &[Iov]) -> Result<()> {
        let Some(b) = &self.backing else {
            iov_zero(dst);
            return Ok(());
        };
        let len = iov_len(dst);
        let avail = b.size().saturating_sub(guest).min(len);
        if avail > 0 {
            let part = iov_slice(dst, 0, avail);
            let bufs: Vec<IoBufMut> = part
                .iter()
                // SAFETY: each Iov is writable request memory (Iov's contract).
                .map(|v| unsafe { IoBufMut::from_raw(v.ptr, v.len) })
                .collect();
            b.read_vectored(guest, &bufs)?;
        }
        if avail < len {
            iov_zero(&iov_slice(dst, avail, len - avail));
        }
        Ok(())
    }

    /// Inflate a compressed cluster (raw deflate, as QEMU writes it).
    pub(super) fn decompress(&self, host: u64, len: u64) -> Result<Vec<u8>> {
        use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
        use miniz_oxide::inflate::TINFLStatus;
        let cs = usize::try_from(self.cluster_size()).unwrap_or(0);
        // Compressed data never exceeds a cluster by much; a larger length
        // is a corrupt entry, not a reason to allocate.
        if len > 2 * self.cluster_size() {
            return Err(Error::InvalidImage(format!(
                "compressed cluster at {host:#x} claims {len} bytes"
            )));
        }
        let mut input = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.file.read_exact_at(&mut input, host)?;
        let mut out = vec![0u8; cs];
        let mut state = DecompressorOxide::new();
        let (status, _, written) = decompress(
            &mut state,
            &input,
            &mut out,
            0,
            inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
        );
        let ok = matches!(status, TINFLStatus::Done | TINFLStatus::HasMoreOutput) && written == cs;
        if !ok {
            return Err(Error::InvalidImage(format!(
                "compressed cluster at {host:#x} does not inflate to a cluster ({status:?}, {written} bytes)"
            )));
        }
        Ok(out)
    }

    /// Refuse a data write that would land on metadata, and mark the
    /// image corrupt so nothing writes to it again until it is repaired.
    fn guard_write(&self, m: &mut Meta, host: u64, len: u64) -> Result<()> {
        let r = m.check_data_write(host, len);
        if r.is_err() {
            self.mark_corrupt(m);
        }
        r
    }

    /// Refuse writes to an image found corrupt while open.
    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if self.corrupt.load(Ordering::Acquire) {
            return Err(Error::InvalidImage(
                "the image was marked corrupt; repair it with vireo img check -r all".into(),
            ));
        }
        Ok(())
    }

    pub(super) fn write_impl(&self, offset: u64, bufs: &[IoBuf]) -> Result<()> {
        self.check_writable()?;
        let iovs = Iov::from_bufs(bufs);
        let len = iov_len(&iovs);
        self.check_range(offset, len)?;
        let _gate = self.gate_read();
        let mut m = self.lock_meta();
        // Fast path: every cluster is allocated and ours alone; write in
        // place without holding the metadata lock.
        if let Some(host) = self.in_place_target(&mut m, offset, len)? {
            self.guard_write(&mut m, host, len)?;
            drop(m);
            return self.file.write_iov(host, &iovs);
        }
        let mut in_place = len > 0;
        if in_place {
            let first = offset >> self.cluster_bits;
            let last = (offset + len - 1) >> self.cluster_bits;
            for g in first..=last {
                let e = m.l2_entry(&self.file, g)?;
                let data = matches!(
                    l2::decode(e, self.cluster_bits, self.version),
                    Mapping::Data { .. }
                );
                if e & COPIED == 0 || !data {
                    in_place = false;
                    break;
                }
            }
        }
        if in_place {
            let pieces = self.map_range(&mut m, offset, len)?;
            for &(_, n, p) in &pieces {
                if let Piece::Host(host) = p {
                    self.guard_write(&mut m, host, n)?;
                }
            }
            drop(m);
            for (rel, n, p) in pieces {
                if let Piece::Host(host) = p {
                    self.file.write_iov(host, &iov_slice(&iovs, rel, n))?;
                }
            }
            return Ok(());
        }
        let mut releases = Vec::new();
        let cs = self.cluster_size();
        let mut pos = 0u64;
        while pos < len {
            let guest = offset + pos;
            let in_cluster = guest & (cs - 1);
            let n = (cs - in_cluster).min(len - pos);
            let src = iov_slice(&iovs, pos, n);
            self.write_cluster(
                &mut m,
                guest >> self.cluster_bits,
                in_cluster,
                &src,
                &mut releases,
            )?;
            pos += n;
        }
        self.finish_releases(&mut m, &releases)
    }

    fn finish_releases(&self, m: &mut Meta, releases: &[Release]) -> Result<()> {
        if releases.is_empty() {
            return Ok(());
        }
        // Entries no longer point at these clusters; make that durable
        // before their counts drop.
        self.file.sync_data()?;
        m.release(&self.file, releases)
    }

    /// A new cluster the allocator handed out turned out to hold metadata
    /// (the refcounts missed it): mark the image corrupt, as a refused
    /// data write does.
    fn noting_overlap<T>(&self, m: &mut Meta, r: Result<T>) -> Result<T> {
        if r.is_err() && m.overlap_refused {
            self.mark_corrupt(m);
        }
        r
    }

    /// Write `src` at `in_cluster` within guest cluster `g`, allocating or
    /// copying the cluster as needed.
    fn write_cluster(
        &self,
        m: &mut Meta,
        g: u64,
        in_cluster: u64,
        src: &[Iov],
        releases: &mut Vec<Release>,
    ) -> Result<()> {
        let r = self.write_cluster_inner(m, g, in_cluster, src, releases);
        self.noting_overlap(m, r)
    }

    fn write_cluster_inner(
        &self,
        m: &mut Meta,
        g: u64,
        in_cluster: u64,
        src: &[Iov],
        releases: &mut Vec<Release>,
    ) -> Result<()> {
        let cs = self.cluster_size();
        let n = iov_len(src);
        let (table, idx) = m.writable_l2(&self.file, g, releases)?;
        let entry = m.l2_entry(&self.file, g)?;
        let mapping = m.decode(entry)?;
        let exclusive = |m: &mut Meta, host: u64| -> Result<bool> {
            Ok(entry & COPIED != 0 || m.refs.get(&self.file, host >> self.cluster_bits)? == 1)
        };
        match mapping {
            Mapping::Data { host, .. } if exclusive(m, host)? => {
                self.guard_write(m, host + in_cluster, n)?;
                if entry & COPIED == 0 {
                    m.set_l2(&self.file, table, idx, host | COPIED)?;
                }
                return self.file.write_iov(host + in_cluster, src);
            }
            Mapping::Zero { host } if host != 0 && exclusive(m, host)? => {
                // A preallocated zero cluster: fill it, then drop the flag.
                let mut buf = vec![0u8; usize::try_from(cs).unwrap_or(0)];
                let at = usize::try_from(in_cluster).unwrap_or(0);
                let n_us = usize::try_from(n).unwrap_or(0);
                iov_copy_to(src, 0, &mut buf[at..at + n_us]);
                self.guard_write(m, host, cs)?;
                self.file.write_all_at(&buf, host)?;
                return m.set_l2(&self.file, table, idx, host | COPIED);
            }
            _ => {}
        }
        let new = m.alloc_cluster(&self.file)?;
        if in_cluster == 0 && n == cs {
            self.file.write_iov(new, src)?;
        } else {
            let mut buf = self.old_cluster(g, mapping)?;
            let at = usize::try_from(in_cluster).unwrap_or(0);
            let n_us = usize::try_from(n).unwrap_or(0);
            iov_copy_to(src, 0, &mut buf[at..at + n_us]);
            self.file.write_all_at(&buf, new)?;
        }
        // Data before the entry: a crash in between leaves a counted,
        // unreferenced cluster (a leak) and the old contents.
        m.set_l2(&self.file, table, idx, new | COPIED)?;
        match mapping {
            Mapping::Data { host, .. } => releases.push(Release::Cluster(host)),
            Mapping::Zero { host } if host != 0 => releases.push(Release::Cluster(host)),
            Mapping::Compressed { host, len } => releases.push(Release::Compressed { host, len }),
            _ => {}
        }
        Ok(())
    }

    /// The current contents of guest cluster `g` (for copy-on-write).
    fn old_cluster(&self, g: u64, mapping: Mapping) -> Result<Vec<u8>> {
        let cs = self.cluster_size();
        let mut buf = vec![0u8; usize::try_from(cs).unwrap_or(0)];
        match mapping {
            Mapping::Zero { .. } => {}
            Mapping::Unallocated => {
                let guest = g << self.cluster_bits;
                let n = cs.min(self.size().saturating_sub(guest));
                let n_us = usize::try_from(n).unwrap_or(0);
                self.read_backing(guest, &[Iov::from_mut(&mut buf[..n_us])])?;
            }
            Mapping::Data { host, .. } => self.file.read_exact_at(&mut buf, host)?,
            Mapping::Compressed { host, len } => buf = self.decompress(host, len)?,
        }
        Ok(buf)
    }

    /// The common case, checked with one table lookup: a write inside one
    /// cluster that is allocated and ours alone. Its host offset.
    fn in_place_target(&self, m: &mut Meta, offset: u64, len: u64) -> Result<Option<u64>> {
        let cs = self.cluster_size();
        let in_cluster = offset & (cs - 1);
        if len == 0 || in_cluster + len > cs {
            return Ok(None);
        }
        let e = m.l2_entry(&self.file, offset >> self.cluster_bits)?;
        if e & COPIED == 0 {
            return Ok(None);
        }
        Ok(match m.mapping(&self.file, offset >> self.cluster_bits)? {
            Mapping::Data { host, .. } => Some(host + in_cluster),
            _ => None,
        })
    }

    /// Discard or zero a range: whole clusters change their L2 entries;
    /// partial clusters are written with zeroes (for write-zeroes) or left
    /// alone (for discard).
    pub(super) fn clear_range(&self, offset: u64, len: u64, how: Clear) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        let _gate = self.exclusive()?;
        let mut m = self.lock_meta();
        let cs = self.cluster_size();
        let zeroes = vec![0u8; usize::try_from(cs).unwrap_or(0)];
        let mut releases = Vec::new();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let in_cluster = pos & (cs - 1);
            let n = (cs - in_cluster).min(end - pos);
            let g = pos >> self.cluster_bits;
            let whole = n == cs || (in_cluster == 0 && pos + n == self.size());
            if whole {
                self.clear_cluster(&mut m, g, how, &zeroes, &mut releases)?;
            } else if matches!(how, Clear::Zeroes { .. }) {
                let n_us = usize::try_from(n).unwrap_or(0);
                let src = [Iov::from_slice(&zeroes[..n_us])];
                self.write_cluster(&mut m, g, in_cluster, &src, &mut releases)?;
            }
            pos += n;
        }
        self.finish_releases(&mut m, &releases)
    }

    fn clear_cluster(
        &self,
        m: &mut Meta,
        g: u64,
        how: Clear,
        zeroes: &[u8],
        releases: &mut Vec<Release>,
    ) -> Result<()> {
        let r = self.clear_cluster_inner(m, g, how, zeroes, releases);
        self.noting_overlap(m, r)
    }

    fn clear_cluster_inner(
        &self,
        m: &mut Meta,
        g: u64,
        how: Clear,
        zeroes: &[u8],
        releases: &mut Vec<Release>,
    ) -> Result<()> {
        let has_backing = self.backing.is_some();
        let want = if !has_backing {
            0
        } else if self.version >= 3 {
            l2::ZERO
        } else if matches!(how, Clear::Zeroes { .. }) {
            // Version 2 has no zero flag: hide the backing file with data.
            let src = [Iov::from_slice(zeroes)];
            return self.write_cluster(m, g, 0, &src, releases);
        } else {
            0
        };
        let (i1, _) = m.indices(g);
        let l1_empty = m.l1.get(i1).is_none_or(|e| e & l2::OFFSET_MASK == 0);
        if l1_empty && want == 0 {
            return Ok(());
        }
        if m.l2_entry(&self.file, g)? == want {
            return Ok(());
        }
        let (table, idx) = m.writable_l2(&self.file, g, releases)?;
        let entry = m.l2_entry(&self.file, g)?;
        let mapping = m.decode(entry)?;
        m.set_l2(&self.file, table, idx, want)?;
        match mapping {
            Mapping::Data { host, .. } => releases.push(Release::Cluster(host)),
            Mapping::Zero { host } if host != 0 => releases.push(Release::Cluster(host)),
            Mapping::Compressed { host, len } => releases.push(Release::Compressed { host, len }),
            _ => {}
        }
        Ok(())
    }

    /// qemu-img's `preallocation=metadata` on a new image: every guest
    /// cluster gets a host cluster of its own and the L2 tables that map
    /// it, and the file is made long enough to hold them, without writing
    /// their data (so they read as the file's holes, zeroes). Later writes
    /// then allocate nothing. For a new image only: clusters the image
    /// already maps are left alone, and a host cluster handed out must
    /// not hold old data (a new image's all lie past its end).
    pub(super) fn preallocate_metadata_impl(&self) -> Result<()> {
        self.check_writable()?;
        let _gate = self.exclusive()?;
        let mut m = self.lock_meta();
        let clusters = self.size().div_ceil(self.cluster_size());
        let mut releases = Vec::new();
        for g in 0..clusters {
            if m.l2_entry(&self.file, g)? != 0 {
                continue;
            }
            let (table, idx) = m.writable_l2(&self.file, g, &mut releases)?;
            let host = m.alloc_cluster(&self.file)?;
            m.set_l2(&self.file, table, idx, host | COPIED)?;
        }
        // Unused clusters of the allocation pool go back before the file's
        // length is settled, so it ends at the last cluster in use.
        m.drain_pool(&self.file)?;
        self.finish_releases(&mut m, &releases)?;
        // One past the last counted cluster: where the file must end.
        let want = m
            .refs
            .last_counted(&self.file)?
            .saturating_mul(self.cluster_size());
        if self.file.len()? < want {
            self.file.set_len(want)?;
        }
        self.file.sync_data()
    }

    pub(super) fn resize_impl(&self, new_size: u64) -> Result<()> {
        self.check_writable()?;
        if new_size > super::header::MAX_VIRTUAL_SIZE {
            return Err(Error::OutOfRange {
                offset: new_size,
                len: 0,
                size: super::header::MAX_VIRTUAL_SIZE,
            });
        }
        let cs = self.cluster_size();
        if !new_size.is_multiple_of(512) {
            return Err(Error::Unsupported("a size that is not a multiple of 512"));
        }
        let old = self.size();
        if new_size < old {
            // Free everything past the new end first.
            let from = new_size.div_ceil(cs) * cs;
            if from < old {
                self.clear_range(from, old - from, Clear::Discard)?;
            }
            if self.backing.is_some() && !new_size.is_multiple_of(cs) {
                // The tail of the last cluster must not show the backing
                // file if the disk grows again; zero it.
                let tail_end = (new_size.div_ceil(cs) * cs).min(old);
                self.clear_range(
                    new_size,
                    tail_end - new_size,
                    Clear::Zeroes { unmap: false },
                )?;
            }
        }
        let _gate = self.exclusive()?;
        let mut m = self.lock_meta();
        let r = m.resize(&self.file, new_size);
        self.noting_overlap(&mut m, r)?;
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }

    pub(super) fn allocation_impl(&self, offset: u64, len: u64) -> Result<Option<(bool, u64)>> {
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(Some((false, 0)));
        }
        let first = {
            let mut m = self.lock_meta();
            self.map_range(&mut m, offset, len)?
        };
        let Some(&(_, n, piece)) = first.first() else {
            return Ok(Some((false, len)));
        };
        Ok(Some(match piece {
            Piece::Host(_) | Piece::Compressed { .. } => (true, n),
            Piece::Zero => (false, n),
            Piece::Backing => match &self.backing {
                None => (false, n),
                Some(b) => {
                    let bsize = b.size();
                    if offset >= bsize {
                        (false, n)
                    } else {
                        let within = n.min(bsize - offset);
                        match b.allocation(offset, within)? {
                            Some((data, k)) => (data, k.min(within)),
                            None => (true, within),
                        }
                    }
                }
            },
        }))
    }
}
