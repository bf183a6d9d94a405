//! The mutable metadata of an open qcow2 image: the active L1 table, the
//! L2 cache, refcounts, snapshots, and the pool of clusters reserved for
//! new data. Everything here runs under the image's metadata lock.
//!
//! Metadata is written through: a table entry reaches the file (page
//! cache) as soon as it changes, in an order that keeps a crash at any
//! instant harmless. A cluster is counted (and the count synced) before an
//! entry points at it; a new table's contents are synced before the entry
//! above points at it; an entry stops pointing at a cluster (synced)
//! before the cluster's count drops.

use std::collections::{HashMap, VecDeque};

use crate::image_file::ImageFile;
use crate::{Error, Result};

use super::header::Header;
use super::l2::{self, L2Cache, Mapping, COPIED, OFFSET_MASK};
use super::refcount::Refcounts;
use super::snapshot::Snapshot;

/// Clusters reserved per pool refill: one refcount write and one sync
/// buy this many data or table clusters.
const POOL_CLUSTERS: u64 = 32;

/// Header offset of l1_size (followed by l1_table_offset).
const HEADER_L1_FIELDS: u64 = 36;
/// Header offset of the virtual size.
const HEADER_SIZE_FIELD: u64 = 24;

/// A reference dropped by a write or discard, released after a sync.
#[derive(Debug, Clone, Copy)]
pub enum Release {
    /// A data cluster or L2 table at this host offset.
    Cluster(u64),
    /// Compressed data: every host cluster it touches.
    Compressed {
        /// Host offset of the data.
        host: u64,
        /// Its length.
        len: u64,
    },
}

/// Metadata of an open image.
#[derive(Debug)]
pub struct Meta {
    /// The header as last written.
    pub header: Header,
    /// Active L1 table entries (empty until loaded, see `l1_loaded`).
    pub l1: Vec<u64>,
    /// Whether `l1` has been read (read-only images read it on first use).
    pub l1_loaded: bool,
    /// Host offset of the active L1 table.
    pub l1_offset: u64,
    /// Cached L2 tables.
    pub l2: L2Cache,
    /// Refcounts and allocation.
    pub refs: Refcounts,
    /// Internal snapshots.
    pub snapshots: Vec<Snapshot>,
    /// Host offsets of clusters counted (durably) but not yet used.
    pub pool: VecDeque<u64>,
    /// Tables must lie below this offset (the file's end, as it grows).
    pub file_end: u64,
    /// Compressed data must end below this offset: the file's length at
    /// open, rounded up to a sector (QEMU's last compressed sector may
    /// be partial).
    pub compressed_end: u64,
    /// Where metadata lives, for refusing guest writes onto it; `None`
    /// when it must be rebuilt.
    pub overlap: Option<MetadataMap>,
    /// A write was refused for landing on metadata (the image is to be
    /// marked corrupt).
    pub overlap_refused: bool,
}

/// The host clusters that hold metadata (QEMU's overlap-check "cached"
/// set: everything but the L2 tables of inactive snapshots).
#[derive(Debug, Default)]
pub struct MetadataMap {
    /// One-cluster structures: header, active L2 tables, refcount blocks.
    single: HashMap<u64, &'static str>,
    /// Multi-cluster tables as cluster ranges `[start, end)`, sorted by
    /// start and disjoint (overlapping tables merged), so a lookup is a
    /// binary search however many snapshots the image has.
    spans: Vec<(u64, u64, &'static str)>,
    /// The refcount generation this map was built at.
    refs_generation: u64,
}

impl MetadataMap {
    /// What metadata, if any, host cluster `c` holds.
    fn lookup(&self, c: u64) -> Option<&'static str> {
        self.single.get(&c).copied().or_else(|| {
            // The last span starting at or before `c` is the only one that
            // can hold it.
            let after = self.spans.partition_point(|&(a, _, _)| a <= c);
            let &(_, end, what) = self.spans.get(after.checked_sub(1)?)?;
            (c < end).then_some(what)
        })
    }

    /// Sort the spans and merge those that overlap (snapshots may share an
    /// L1 table); a merged span keeps its first name. Spans that only touch
    /// stay apart, so each keeps its own name.
    fn merge_spans(&mut self) {
        self.spans.sort_unstable_by_key(|&(a, _, _)| a);
        let mut merged: Vec<(u64, u64, &'static str)> = Vec::with_capacity(self.spans.len());
        for &(a, b, what) in &self.spans {
            match merged.last_mut() {
                Some(last) if a < last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b, what)),
            }
        }
        self.spans = merged;
    }
}

impl Meta {
    /// The metadata map is stale (a table moved or appeared).
    pub fn invalidate_overlap(&mut self) {
        self.overlap = None;
    }

    fn build_overlap(&self) -> MetadataMap {
        let cb = self.cluster_bits();
        let cs = self.cluster_size();
        let mut map = MetadataMap {
            refs_generation: self.refs.generation(),
            ..MetadataMap::default()
        };
        let span = |map: &mut MetadataMap, off: u64, len: u64, what: &'static str| {
            if len > 0 {
                let end = off.saturating_add(len).div_ceil(cs);
                map.spans.push((off >> cb, end, what));
            }
        };
        map.single.insert(0, "the header");
        span(
            &mut map,
            self.l1_offset,
            self.l1.len() as u64 * 8,
            "the L1 table",
        );
        let (rt, rt_clusters) = self.refs.table_location();
        span(
            &mut map,
            rt,
            u64::from(rt_clusters) * cs,
            "the refcount table",
        );
        if self.header.nb_snapshots > 0 {
            let len = super::snapshot::encode(&self.snapshots).map_or(cs, |t| t.len() as u64);
            span(
                &mut map,
                self.header.snapshots_offset,
                len,
                "the snapshot table",
            );
        }
        for s in &self.snapshots {
            span(
                &mut map,
                s.l1_table_offset,
                u64::from(s.l1_size) * 8,
                "a snapshot's L1 table",
            );
        }
        for &b in self.refs.table().iter().filter(|&&b| b != 0) {
            map.single.insert(b >> cb, "a refcount block");
        }
        for &e in &self.l1 {
            let off = e & OFFSET_MASK;
            if off != 0 {
                map.single.insert(off >> cb, "an L2 table");
            }
        }
        map.merge_spans();
        map
    }

    /// Refuse a write of guest data (or of a new table) to `[host, host +
    /// len)` that would land on existing metadata (QEMU's pre-write
    /// overlap check). Sets `overlap_refused`; the caller marks the image
    /// corrupt.
    pub fn check_data_write(&mut self, host: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let stale = self
            .overlap
            .as_ref()
            .is_none_or(|m| m.refs_generation != self.refs.generation());
        if stale {
            self.overlap = Some(self.build_overlap());
        }
        let Some(map) = self.overlap.take() else {
            return Ok(());
        };
        let r = self.find_overlap(&map, host, len);
        self.overlap = Some(map);
        r
    }

    fn find_overlap(&mut self, map: &MetadataMap, host: u64, len: u64) -> Result<()> {
        let cb = self.cluster_bits();
        let last = host.saturating_add(len - 1) >> cb;
        for c in host >> cb..=last {
            if let Some(what) = map.lookup(c) {
                self.overlap_refused = true;
                return Err(Error::InvalidImage(format!(
                    "a write to host cluster {:#x} would overwrite {what}; \
                     the image is marked corrupt (repair it with vireo img check -r all)",
                    c << cb
                )));
            }
        }
        Ok(())
    }

    fn cluster_bits(&self) -> u32 {
        self.header.cluster_bits
    }

    fn cluster_size(&self) -> u64 {
        1 << self.header.cluster_bits
    }

    /// L1 index and L2 index of guest cluster `g`.
    pub fn indices(&self, g: u64) -> (usize, usize) {
        let l2_bits = self.cluster_bits() - 3;
        let l1 = usize::try_from(g >> l2_bits).unwrap_or(usize::MAX);
        let l2 = usize::try_from(g & ((1u64 << l2_bits) - 1)).unwrap_or(0);
        (l1, l2)
    }

    /// Read the active L1 table if not yet read.
    pub fn load_l1<F: ImageFile>(&mut self, file: &F) -> Result<()> {
        if !self.l1_loaded {
            self.l1 = super::load_l1(file, self.l1_offset, self.header.l1_size)?;
            self.l1_loaded = true;
        }
        Ok(())
    }

    /// The raw L2 entry of guest cluster `g` (0 when its L2 table is absent).
    pub fn l2_entry<F: ImageFile>(&mut self, file: &F, g: u64) -> Result<u64> {
        self.load_l1(file)?;
        let (i1, i2) = self.indices(g);
        let Some(&e1) = self.l1.get(i1) else {
            return Ok(0);
        };
        if e1 & l2::L1_RESERVED != 0 {
            return Err(Error::InvalidImage(format!(
                "L1 entry {i1} ({e1:#x}) has reserved bits set"
            )));
        }
        let off = e1 & OFFSET_MASK;
        if off == 0 {
            return Ok(0);
        }
        let end = self.file_end;
        Ok(self.l2.get(file, off, end)?[i2])
    }

    /// Where guest cluster `g` lives.
    pub fn mapping<F: ImageFile>(&mut self, file: &F, g: u64) -> Result<Mapping> {
        let e = self.l2_entry(file, g)?;
        self.decode(e)
    }

    /// Decode an L2 entry, refusing mappings that cannot be right.
    pub fn decode(&self, e: u64) -> Result<Mapping> {
        let m = l2::decode(e, self.cluster_bits(), self.header.version);
        let cs = self.cluster_size();
        match m {
            Mapping::Data { host, .. } | Mapping::Zero { host }
                if host != 0 && host & (cs - 1) != 0 =>
            {
                return Err(Error::InvalidImage(format!(
                    "data cluster at {host:#x} is not cluster aligned"
                )));
            }
            // Compressed data is never written here, so it lies inside the
            // file as opened. Past that end it would share clusters
            // allocated later, and freeing it would free them.
            Mapping::Compressed { host, len }
                if host
                    .checked_add(len)
                    .is_none_or(|e| e > self.compressed_end) =>
            {
                return Err(Error::InvalidImage(format!(
                    "compressed cluster at {host:#x} ({len} bytes) runs past the end of the file"
                )));
            }
            _ => {}
        }
        Ok(m)
    }

    /// Write an L1 entry through to the file.
    pub fn set_l1<F: ImageFile>(&mut self, file: &F, i: usize, value: u64) -> Result<()> {
        file.write_all_at(&value.to_be_bytes(), self.l1_offset + 8 * i as u64)?;
        if self.l1[i] & OFFSET_MASK != value & OFFSET_MASK {
            self.invalidate_overlap();
        }
        self.l1[i] = value;
        Ok(())
    }

    /// Write an L2 entry through to the file.
    pub fn set_l2<F: ImageFile>(
        &mut self,
        file: &F,
        table: u64,
        i: usize,
        value: u64,
    ) -> Result<()> {
        file.write_all_at(&value.to_be_bytes(), table + 8 * i as u64)?;
        let end = self.file_end;
        self.l2.get(file, table, end)?[i] = value;
        Ok(())
    }

    /// A counted, unused cluster from the pool, refilling it (one refcount
    /// update and one sync) when empty.
    pub fn alloc_cluster<F: ImageFile>(&mut self, file: &F) -> Result<u64> {
        if self.pool.is_empty() {
            let (first, n) = self.refs.alloc_range(file, 1, POOL_CLUSTERS)?;
            file.sync_data()?;
            let cs = self.cluster_size();
            self.pool.extend((0..n).map(|i| first + i * cs));
            self.file_end = self.file_end.max(first + n * cs);
        }
        let c = self
            .pool
            .pop_front()
            .ok_or_else(|| Error::InvalidImage("cluster pool".into()))?;
        // Refcounts that miss a table hand its cluster out as free.
        self.check_data_write(c, self.cluster_size())?;
        Ok(c)
    }

    /// `n` contiguous counted clusters (for L1 and snapshot tables). The
    /// counts are synced before this returns.
    pub fn alloc_contiguous<F: ImageFile>(&mut self, file: &F, n: u64) -> Result<u64> {
        let (first, _) = self.refs.alloc_range(file, n, n)?;
        file.sync_data()?;
        self.file_end = self.file_end.max(first + n * self.cluster_size());
        self.check_data_write(first, n * self.cluster_size())?;
        Ok(first)
    }

    /// Give unused pool clusters back (on close).
    pub fn drain_pool<F: ImageFile>(&mut self, file: &F) -> Result<()> {
        while let Some(off) = self.pool.pop_front() {
            self.refs.adjust(file, off >> self.cluster_bits(), -1)?;
        }
        Ok(())
    }

    /// Drop references after the entries that held them are synced away.
    pub fn release<F: ImageFile>(&mut self, file: &F, what: &[Release]) -> Result<()> {
        let cb = self.cluster_bits();
        for r in what {
            let clusters = match *r {
                Release::Cluster(host) => (host >> cb)..=(host >> cb),
                Release::Compressed { host, len } => l2::compressed_clusters(host, len, cb),
            };
            for c in clusters {
                if self.refs.adjust(file, c, -1)? == 0 {
                    self.l2.remove(c << cb);
                    // Give the space back to the host; the cluster reads as
                    // zeroes if it is reused for a partial write.
                    file.punch_hole(c << cb, self.cluster_size())?;
                }
            }
        }
        Ok(())
    }

    /// The L2 table for guest cluster `g`, ready to be written: allocated
    /// when absent, copied when shared with a snapshot. Returns its host
    /// offset and the entry index.
    pub fn writable_l2<F: ImageFile>(
        &mut self,
        file: &F,
        g: u64,
        releases: &mut Vec<Release>,
    ) -> Result<(u64, usize)> {
        let (i1, i2) = self.indices(g);
        let e1 = *self.l1.get(i1).ok_or_else(|| {
            Error::InvalidImage(format!("guest cluster {g} is past the L1 table"))
        })?;
        let off = e1 & OFFSET_MASK;
        let cs = self.cluster_size();
        if off == 0 {
            let new = self.alloc_cluster(file)?;
            file.write_zeroes(new, cs)?;
            // The table must read as zeroes on disk before L1 points at it.
            file.sync_data()?;
            self.set_l1(file, i1, new | COPIED)?;
            self.l2
                .insert(new, vec![0; usize::try_from(cs / 8).unwrap_or(0)]);
            return Ok((new, i2));
        }
        if e1 & COPIED != 0 {
            return Ok((off, i2));
        }
        if self.refs.get(file, off >> self.cluster_bits())? == 1 {
            self.set_l1(file, i1, off | COPIED)?;
            return Ok((off, i2));
        }
        let end = self.file_end;
        let table = self.l2.get(file, off, end)?.clone();
        let new = self.alloc_cluster(file)?;
        file.write_all_at(&l2::encode_table(&table), new)?;
        file.sync_data()?;
        self.set_l1(file, i1, new | COPIED)?;
        self.l2.insert(new, table);
        releases.push(Release::Cluster(off));
        Ok((new, i2))
    }

    /// Grow the active L1 table to cover `size` bytes and record the size.
    pub fn resize<F: ImageFile>(&mut self, file: &F, size: u64) -> Result<()> {
        let cs = self.cluster_size();
        let l2_span = cs * (cs / 8);
        let need = size.div_ceil(l2_span);
        if need > self.l1.len() as u64 {
            if need * 8 > super::header::MAX_L1_BYTES {
                return Err(Error::Unsupported("an L1 table over 32 MiB"));
            }
            let n = (need * 8).div_ceil(cs);
            let new_off = self.alloc_contiguous(file, n)?;
            let mut table = self.l1.clone();
            table.resize(usize::try_from(n * cs / 8).unwrap_or(0), 0);
            file.write_all_at(&l2::encode_table(&table), new_off)?;
            file.sync_data()?;
            let l1_size = u32::try_from(need).map_err(|_| Error::Unsupported("this size"))?;
            let mut fields = [0u8; 12];
            fields[..4].copy_from_slice(&l1_size.to_be_bytes());
            fields[4..].copy_from_slice(&new_off.to_be_bytes());
            file.write_all_at(&fields, HEADER_L1_FIELDS)?;
            file.sync_data()?;
            let old = (self.l1_offset, self.l1.len() as u64);
            table.truncate(usize::try_from(need).unwrap_or(0));
            self.l1 = table;
            self.l1_offset = new_off;
            self.invalidate_overlap();
            self.header.l1_size = l1_size;
            self.header.l1_table_offset = new_off;
            if old.0 != 0 && old.1 > 0 {
                let old_clusters = (old.1 * 8).div_ceil(cs);
                let rel: Vec<Release> = (0..old_clusters)
                    .map(|i| Release::Cluster(old.0 + i * cs))
                    .collect();
                self.release(file, &rel)?;
            }
        }
        file.write_all_at(&size.to_be_bytes(), HEADER_SIZE_FIELD)?;
        file.sync_data()?;
        self.header.size = size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MetadataMap;

    #[test]
    fn spans_are_found_by_binary_search_after_merging() {
        // Out of order, two overlapping (shared snapshot L1 tables), one
        // touching the next.
        let mut map = MetadataMap {
            spans: vec![
                (40, 42, "a snapshot's L1 table"),
                (10, 12, "the refcount table"),
                (3, 5, "the L1 table"),
                (41, 45, "a snapshot's L1 table"),
                (5, 6, "the snapshot table"),
            ],
            ..MetadataMap::default()
        };
        map.merge_spans();
        assert_eq!(map.spans.len(), 4);
        for (c, want) in [
            (2, None),
            (3, Some("the L1 table")),
            (4, Some("the L1 table")),
            (5, Some("the snapshot table")),
            (6, None),
            (11, Some("the refcount table")),
            (12, None),
            (44, Some("a snapshot's L1 table")),
            (45, None),
        ] {
            assert_eq!(map.lookup(c), want, "cluster {c}");
        }
    }
}
