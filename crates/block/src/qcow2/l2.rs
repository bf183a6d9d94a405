//! L1/L2 entry encoding and the L2 table cache.

use std::collections::HashMap;

use crate::image_file::ImageFile;
use crate::{Error, Result};

/// Entry flag: the cluster's refcount is exactly 1 (it may be written in place).
pub const COPIED: u64 = 1 << 63;
/// L2 entry flag: the cluster is compressed.
pub const COMPRESSED: u64 = 1 << 62;
/// L2 entry flag (version 3): the cluster reads as zeroes.
pub const ZERO: u64 = 1;
/// Host offset bits of L1 and standard L2 entries (bits 9..=55).
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits of an L1 entry that must be zero.
pub const L1_RESERVED: u64 = !(OFFSET_MASK | COPIED);
/// Bits of a standard (uncompressed) L2 entry that must be zero (QEMU's
/// `L2E_STD_RESERVED_MASK`).
pub const L2_STD_RESERVED: u64 = 0x3f00_0000_0000_01fe;

/// What an L2 entry says about one guest cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Not allocated here: read the backing file (or zeroes).
    Unallocated,
    /// Reads as zeroes; `host` is a preallocated cluster (0: none).
    Zero {
        /// Preallocated host cluster, or 0.
        host: u64,
    },
    /// Stored uncompressed at `host`.
    Data {
        /// Host offset of the cluster.
        host: u64,
        /// Refcount known to be 1.
        copied: bool,
    },
    /// Stored compressed: `len` bytes of deflate data at `host`.
    Compressed {
        /// Host offset of the compressed data (not cluster aligned).
        host: u64,
        /// Bytes to read (whole 512-byte sectors past the first).
        len: u64,
    },
}

/// Decode an L2 entry of an image with `cluster_bits`, for `version`.
pub fn decode(entry: u64, cluster_bits: u32, version: u32) -> Mapping {
    if entry & COMPRESSED != 0 {
        let x = 62 - (cluster_bits - 8);
        let host = entry & ((1u64 << x) - 1);
        let sectors = ((entry >> x) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
        let len = (sectors * 512).saturating_sub(host & 511);
        return Mapping::Compressed { host, len };
    }
    let host = entry & OFFSET_MASK;
    if version >= 3 && entry & ZERO != 0 {
        return Mapping::Zero { host };
    }
    if host == 0 {
        Mapping::Unallocated
    } else {
        Mapping::Data {
            host,
            copied: entry & COPIED != 0,
        }
    }
}

/// Host clusters a compressed cluster's data touches (for refcounts).
pub fn compressed_clusters(
    host: u64,
    len: u64,
    cluster_bits: u32,
) -> std::ops::RangeInclusive<u64> {
    let first = host >> cluster_bits;
    let last = (host + len.max(1) - 1) >> cluster_bits;
    first..=last
}

struct Cached {
    table: Vec<u64>,
    stamp: u64,
}

/// L2 tables kept in memory, least recently used evicted first. Tables
/// are written through, so eviction never writes.
pub struct L2Cache {
    tables: HashMap<u64, Cached>,
    capacity: usize,
    clock: u64,
    cluster_bits: u32,
}

impl std::fmt::Debug for L2Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2Cache")
            .field("tables", &self.tables.len())
            .finish()
    }
}

/// Bytes of L2 tables kept in memory (covers 64 GiB with 64 KiB clusters).
const CACHE_BYTES: u64 = 8 << 20;
/// The same for a backing file: a chain of 32 must not hold 32 full
/// caches (QEMU's default is 1 MiB per image).
pub const BACKING_CACHE_BYTES: u64 = 1 << 20;

impl L2Cache {
    /// An empty cache for tables of one cluster.
    pub fn new(cluster_bits: u32) -> Self {
        Self::with_bytes(cluster_bits, CACHE_BYTES)
    }

    /// An empty cache holding about `bytes` of tables (at least four).
    pub fn with_bytes(cluster_bits: u32, bytes: u64) -> Self {
        Self {
            tables: HashMap::new(),
            capacity: usize::try_from((bytes >> cluster_bits).max(4)).unwrap_or(4),
            clock: 0,
            cluster_bits,
        }
    }

    /// The table at host offset `off`, loaded if needed. `file_end` bounds
    /// where a table may be.
    pub fn get<F: ImageFile>(
        &mut self,
        file: &F,
        off: u64,
        file_end: u64,
    ) -> Result<&mut Vec<u64>> {
        self.clock += 1;
        let clock = self.clock;
        if !self.tables.contains_key(&off) {
            let cs = 1u64 << self.cluster_bits;
            if off & (cs - 1) != 0 || off.checked_add(cs).is_none_or(|e| e > file_end) {
                return Err(Error::InvalidImage(format!(
                    "L2 table at {off:#x} is misaligned or past the end of the file"
                )));
            }
            let mut raw = vec![0u8; usize::try_from(cs).unwrap_or(0)];
            file.read_exact_at(&mut raw, off)?;
            self.insert(off, decode_table(&raw));
        }
        let entry = self
            .tables
            .get_mut(&off)
            .ok_or_else(|| Error::InvalidImage("L2 cache".into()))?;
        entry.stamp = clock;
        Ok(&mut entry.table)
    }

    /// Put a table (just written) in the cache.
    pub fn insert(&mut self, off: u64, table: Vec<u64>) {
        if self.tables.len() >= self.capacity && !self.tables.contains_key(&off) {
            if let Some((&victim, _)) = self.tables.iter().min_by_key(|(_, c)| c.stamp) {
                self.tables.remove(&victim);
            }
        }
        self.clock += 1;
        self.tables.insert(
            off,
            Cached {
                table,
                stamp: self.clock,
            },
        );
    }

    /// Forget a table (its cluster was freed).
    pub fn remove(&mut self, off: u64) {
        self.tables.remove(&off);
    }
}

/// Encode a table of entries as big-endian bytes.
pub fn encode_table(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_be_bytes()).collect()
}

/// Decode big-endian bytes into table entries.
pub fn decode_table(raw: &[u8]) -> Vec<u64> {
    raw.chunks_exact(8)
        .map(|c| {
            let mut x = [0u8; 8];
            x.copy_from_slice(c);
            u64::from_be_bytes(x)
        })
        .collect()
}
