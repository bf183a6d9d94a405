//! Cluster reference counts: the refcount table, refcount blocks (cached,
//! written through), cluster allocation and growth of the table.
//!
//! Ordering for crash consistency: a cluster's refcount is raised before
//! anything points at it and lowered only after nothing does, so a crash
//! in between leaves a leak (refcount above its references), never a
//! cluster in use with too low a count.

use std::collections::HashMap;

use crate::image_file::ImageFile;
use crate::{Error, Result};

/// Header offset of refcount_table_offset (followed by refcount_table_clusters).
const HEADER_REFTABLE_FIELDS: u64 = 48;

/// Refcount blocks kept in memory, in bytes.
const BLOCK_CACHE_BYTES: u64 = 8 << 20;

/// The image's refcount structures.
#[derive(Debug)]
pub struct Refcounts {
    /// Refcount table: host offsets of refcount blocks (0: none yet).
    table: Vec<u64>,
    /// Whether `table` has been read from the file.
    loaded: bool,
    table_offset: u64,
    table_clusters: u32,
    /// log2 of the refcount width in bits.
    order: u32,
    cluster_bits: u32,
    blocks: HashMap<u64, Vec<u8>>,
    /// No cluster below this index is free.
    free_hint: u64,
    /// First cluster index past every cluster known to be in use.
    end_cluster: u64,
    /// Bumped whenever a refcount block or the table itself moves or
    /// appears (metadata overlap checks rebuild their map then).
    generation: u64,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidImage(msg.into())
}

impl Refcounts {
    /// The refcount structures of an image (the table already
    /// bounds-checked by the header). With `lazy`, the table is read on
    /// first use: read-only opens (every backing file) never need it.
    pub fn open<F: ImageFile>(
        file: &F,
        table_offset: u64,
        table_clusters: u32,
        order: u32,
        cluster_bits: u32,
        lazy: bool,
    ) -> Result<Self> {
        let file_len = file.len()?;
        let mut refs = Self {
            table: Vec::new(),
            loaded: false,
            table_offset,
            table_clusters,
            order,
            cluster_bits,
            blocks: HashMap::new(),
            free_hint: 0,
            // Every block lies below file_len (checked on load).
            end_cluster: file_len.div_ceil(1u64 << cluster_bits),
            generation: 0,
        };
        if !lazy {
            refs.load_table(file)?;
        }
        Ok(refs)
    }

    /// Read the refcount table if not yet read.
    pub fn load_table<F: ImageFile>(&mut self, file: &F) -> Result<()> {
        if self.loaded {
            return Ok(());
        }
        let cs = self.cluster_size();
        let bytes = u64::from(self.table_clusters) * cs;
        let mut raw = vec![0u8; usize::try_from(bytes).map_err(|_| invalid("refcount table"))?];
        file.read_exact_strict(&mut raw, self.table_offset)?;
        let table = super::l2::decode_table(&raw);
        let file_len = file.len()?;
        for (i, &off) in table.iter().enumerate() {
            if off == 0 {
                continue;
            }
            if off & (cs - 1) != 0 || off >= file_len {
                return Err(invalid(format!(
                    "refcount block {i} at {off:#x} is misaligned or past the end of the file"
                )));
            }
        }
        self.table = table;
        self.loaded = true;
        Ok(())
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Refcount entries per refcount block.
    pub fn entries_per_block(&self) -> u64 {
        (self.cluster_size() * 8) >> self.order
    }

    /// Largest refcount value.
    pub fn max_refcount(&self) -> u64 {
        let bits = 1u32 << self.order;
        if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
    }

    /// Host offset of the refcount table and its length in clusters.
    pub fn table_location(&self) -> (u64, u32) {
        (self.table_offset, self.table_clusters)
    }

    /// Refcount block offsets (0 where none); empty until
    /// [`Refcounts::load_table`].
    pub fn table(&self) -> &[u64] {
        &self.table
    }

    /// Changes whenever a refcount block or the table is placed anew.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether refcount block `bi` exists (its clusters count 0 if not).
    pub fn has_block(&self, bi: u64) -> bool {
        self.block_offset(bi) != 0
    }

    /// One past the last cluster whose refcount is not 0.
    pub fn last_counted<F: ImageFile>(&mut self, file: &F) -> Result<u64> {
        self.load_table(file)?;
        let epb = self.entries_per_block();
        let order = self.order;
        for bi in (0..self.table.len() as u64).rev() {
            let Some(block) = self.block(file, bi)? else {
                continue;
            };
            let last = (0..epb)
                .rev()
                .find(|&i| Self::entry_get(order, block, usize::try_from(i).unwrap_or(0)) != 0);
            if let Some(i) = last {
                return Ok(bi * epb + i + 1);
            }
        }
        Ok(0)
    }

    fn block_index(&self, cluster: u64) -> u64 {
        cluster / self.entries_per_block()
    }

    fn block_offset(&self, bi: u64) -> u64 {
        usize::try_from(bi)
            .ok()
            .and_then(|i| self.table.get(i).copied())
            .unwrap_or(0)
    }

    /// The block with index `bi`, loading it; None when it does not exist.
    fn block<F: ImageFile>(&mut self, file: &F, bi: u64) -> Result<Option<&mut Vec<u8>>> {
        self.load_table(file)?;
        let off = self.block_offset(bi);
        if off == 0 {
            return Ok(None);
        }
        if !self.blocks.contains_key(&bi) {
            let cap = (BLOCK_CACHE_BYTES >> self.cluster_bits).max(4);
            if self.blocks.len() as u64 >= cap {
                if let Some(&victim) = self.blocks.keys().next() {
                    self.blocks.remove(&victim);
                }
            }
            let mut buf = vec![0u8; usize::try_from(self.cluster_size()).unwrap_or(0)];
            file.read_exact_at(&mut buf, off)?;
            self.blocks.insert(bi, buf);
        }
        Ok(self.blocks.get_mut(&bi))
    }

    fn entry_get(order: u32, block: &[u8], i: usize) -> u64 {
        let bits = 1usize << order;
        if bits < 8 {
            let byte = block[i * bits / 8];
            let shift = (i * bits) % 8;
            u64::from(byte >> shift) & ((1u64 << bits) - 1)
        } else {
            let n = bits / 8;
            block[i * n..i * n + n]
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        }
    }

    /// Set entry `i`; returns the byte range of the block that changed.
    fn entry_set(order: u32, block: &mut [u8], i: usize, value: u64) -> (usize, usize) {
        let bits = 1usize << order;
        if bits < 8 {
            let at = i * bits / 8;
            let shift = (i * bits) % 8;
            let mask = u8::try_from(((1u16 << bits) - 1) << shift).unwrap_or(0xff);
            let v = u8::try_from((value << shift) & 0xff).unwrap_or(0);
            block[at] = (block[at] & !mask) | (v & mask);
            (at, at + 1)
        } else {
            let n = bits / 8;
            let be = value.to_be_bytes();
            block[i * n..i * n + n].copy_from_slice(&be[8 - n..]);
            (i * n, i * n + n)
        }
    }

    /// The refcount of cluster index `cluster` (0 where no block exists).
    pub fn get<F: ImageFile>(&mut self, file: &F, cluster: u64) -> Result<u64> {
        let bi = self.block_index(cluster);
        let i = usize::try_from(cluster % self.entries_per_block()).unwrap_or(0);
        let order = self.order;
        Ok(match self.block(file, bi)? {
            Some(b) => Self::entry_get(order, b, i),
            None => 0,
        })
    }

    /// Set the refcounts of `n` clusters from `first` to `value`; their
    /// refcount blocks must exist. One write per block touched.
    fn set_range<F: ImageFile>(&mut self, file: &F, first: u64, n: u64, value: u64) -> Result<()> {
        let epb = self.entries_per_block();
        let order = self.order;
        let mut c = first;
        let end = first + n;
        while c < end {
            let bi = c / epb;
            let stop = end.min((bi + 1) * epb);
            let off = self.block_offset(bi);
            let block = self
                .block(file, bi)?
                .ok_or_else(|| invalid(format!("no refcount block for cluster {c}")))?;
            let (mut lo, mut hi) = (usize::MAX, 0usize);
            for x in c..stop {
                let i = usize::try_from(x % epb).unwrap_or(0);
                let (a, b) = Self::entry_set(order, block, i, value);
                lo = lo.min(a);
                hi = hi.max(b);
            }
            file.write_all_at(&block[lo..hi], off + lo as u64)?;
            c = stop;
        }
        Ok(())
    }

    /// Add `delta` (+1 or -1) to one cluster's refcount; returns the new value.
    pub fn adjust<F: ImageFile>(&mut self, file: &F, cluster: u64, delta: i64) -> Result<u64> {
        self.load_table(file)?;
        let old = self.get(file, cluster)?;
        let new = old
            .checked_add_signed(delta)
            .filter(|&v| v <= self.max_refcount())
            .ok_or_else(|| {
                invalid(format!(
                    "refcount of cluster {cluster} would go from {old} out of range"
                ))
            })?;
        if self.block_offset(self.block_index(cluster)) == 0 {
            self.create_block(file, self.block_index(cluster))?;
        }
        self.set_range(file, cluster, 1, new)?;
        if new == 0 {
            self.free_hint = self.free_hint.min(cluster);
        } else {
            self.end_cluster = self.end_cluster.max(cluster + 1);
        }
        Ok(new)
    }

    /// Allocate the first run of at least `min` and at most `max` free
    /// contiguous clusters, set their refcounts to 1 and return the first
    /// one's host offset and the run's length. The refcount writes are not
    /// yet durable: callers sync before pointing anything at the clusters.
    pub fn alloc_range<F: ImageFile>(
        &mut self,
        file: &F,
        min: u64,
        max: u64,
    ) -> Result<(u64, u64)> {
        self.load_table(file)?;
        if min == 0 || max < min {
            return Err(invalid("allocating zero clusters"));
        }
        loop {
            while self.get(file, self.free_hint)? != 0 {
                self.free_hint += 1;
            }
            let mut start = self.free_hint;
            let mut i = start;
            while i - start < max {
                if self.get(file, i)? != 0 {
                    if i - start >= min {
                        break;
                    }
                    start = i + 1;
                }
                i += 1;
            }
            let n = i - start;
            let epb = self.entries_per_block();
            let mut moved = false;
            for bi in start / epb..=(start + n - 1) / epb {
                if self.block_offset(bi) == 0 {
                    self.create_block(file, bi)?;
                    moved = true;
                }
            }
            // A new refcount block (or a grown table) may sit inside the
            // run: look again.
            if moved {
                continue;
            }
            self.set_range(file, start, n, 1)?;
            if start == self.free_hint {
                self.free_hint = start + n;
            }
            self.end_cluster = self.end_cluster.max(start + n);
            return Ok((start << self.cluster_bits, n));
        }
    }

    /// Set one cluster's refcount (for repairs), creating its block if needed.
    pub fn set<F: ImageFile>(&mut self, file: &F, cluster: u64, value: u64) -> Result<()> {
        self.load_table(file)?;
        if value > self.max_refcount() {
            return Err(invalid(format!("refcount {value} is too large")));
        }
        let bi = self.block_index(cluster);
        if self.block_offset(bi) == 0 {
            if value == 0 {
                return Ok(());
            }
            self.create_block(file, bi)?;
        }
        self.set_range(file, cluster, 1, value)?;
        if value == 0 {
            self.free_hint = self.free_hint.min(cluster);
        }
        Ok(())
    }

    /// Create the refcount block with index `bi` in the first cluster of
    /// the range it describes (free, since no block counts it yet), so it
    /// counts itself. Returns its cluster index.
    fn create_block<F: ImageFile>(&mut self, file: &F, bi: u64) -> Result<u64> {
        if bi >= self.table.len() as u64 {
            self.grow_table(file, bi + 1)?;
            let off = self.block_offset(bi);
            if off != 0 {
                return Ok(off >> self.cluster_bits);
            }
        }
        let epb = self.entries_per_block();
        let cluster = bi * epb;
        let off = cluster << self.cluster_bits;
        let mut block = vec![0u8; usize::try_from(self.cluster_size()).unwrap_or(0)];
        Self::entry_set(self.order, &mut block, 0, 1);
        file.write_all_at(&block, off)?;
        // The block must be on disk before the table points at it.
        file.sync_data()?;
        let i = usize::try_from(bi).map_err(|_| invalid("refcount table index"))?;
        file.write_all_at(&off.to_be_bytes(), self.table_offset + 8 * bi)?;
        self.table[i] = off;
        self.generation += 1;
        self.blocks.insert(bi, block);
        self.end_cluster = self.end_cluster.max(cluster + 1);
        Ok(cluster)
    }

    /// Move the refcount table to a larger one of at least `min_entries`
    /// entries, placed past the end of everything in use together with
    /// the new refcount blocks that count it.
    fn grow_table<F: ImageFile>(&mut self, file: &F, min_entries: u64) -> Result<()> {
        let cs = self.cluster_size();
        let epb = self.entries_per_block();
        let old_len = self.table.len() as u64;
        let mut entries = min_entries.max(old_len * 2).max(cs / 8);
        let (p, t, ranges) = loop {
            let t = (entries * 8).div_ceil(cs);
            let p = self.end_cluster.max(1);
            let mut k = 0u64;
            let ranges = loop {
                let r: Vec<u64> = (p / epb..=(p + t + k - 1) / epb)
                    .filter(|&bi| self.block_offset(bi) == 0)
                    .collect();
                if r.len() as u64 <= k {
                    break r;
                }
                k = r.len() as u64;
            };
            let need = ranges.iter().copied().max().map_or(0, |m| m + 1);
            if need <= entries {
                break (p, t, ranges);
            }
            entries = need;
        };
        if t * cs > super::header::MAX_REFTABLE_BYTES {
            return Err(Error::Unsupported("a refcount table over 8 MiB"));
        }
        let n_blocks = ranges.len() as u64;
        let region_end = p + t + n_blocks;
        let mut new_table = self.table.clone();
        new_table.resize(usize::try_from(t * cs / 8).unwrap_or(0), 0);
        let mut new_blocks: Vec<(u64, Vec<u8>)> = Vec::new();
        for (j, &bi) in ranges.iter().enumerate() {
            let at = p + t + j as u64;
            new_table[usize::try_from(bi).unwrap_or(0)] = at << self.cluster_bits;
            new_blocks.push((bi, vec![0u8; usize::try_from(cs).unwrap_or(0)]));
        }
        // Count the region's clusters: in the new blocks, or in existing
        // blocks (written through now; a crash before the switch leaks them).
        for c in p..region_end {
            let bi = c / epb;
            let i = usize::try_from(c % epb).unwrap_or(0);
            if let Some((_, b)) = new_blocks.iter_mut().find(|(x, _)| *x == bi) {
                Self::entry_set(self.order, b, i, 1);
            } else {
                self.set_range(file, c, 1, 1)?;
            }
        }
        for (bi, b) in &new_blocks {
            let off = new_table[usize::try_from(*bi).unwrap_or(0)];
            file.write_all_at(b, off)?;
        }
        let raw: Vec<u8> = new_table.iter().flat_map(|e| e.to_be_bytes()).collect();
        let new_offset = p << self.cluster_bits;
        file.write_all_at(&raw, new_offset)?;
        file.sync_data()?;
        let clusters = u32::try_from(t).map_err(|_| invalid("refcount table size"))?;
        let mut fields = [0u8; 12];
        fields[..8].copy_from_slice(&new_offset.to_be_bytes());
        fields[8..].copy_from_slice(&clusters.to_be_bytes());
        file.write_all_at(&fields, HEADER_REFTABLE_FIELDS)?;
        file.sync_data()?;
        let (old_offset, old_clusters) = (self.table_offset, self.table_clusters);
        self.table = new_table;
        self.table_offset = new_offset;
        self.generation += 1;
        self.table_clusters = clusters;
        for (bi, b) in new_blocks {
            self.blocks.insert(bi, b);
        }
        self.end_cluster = self.end_cluster.max(region_end);
        for c in 0..u64::from(old_clusters) {
            self.adjust(file, (old_offset >> self.cluster_bits) + c, -1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Refcounts;

    #[test]
    fn packed_entries_round_trip() {
        for order in 0..=6u32 {
            let mut block = vec![0u8; 512];
            let max = if order == 6 {
                u64::MAX
            } else {
                (1u64 << (1 << order)) - 1
            };
            let n = (512 * 8) >> order;
            for i in 0..n {
                Refcounts::entry_set(order, &mut block, i, (i as u64 * 7) & max);
            }
            for i in 0..n {
                assert_eq!(Refcounts::entry_get(order, &block, i), (i as u64 * 7) & max);
            }
        }
    }
}
