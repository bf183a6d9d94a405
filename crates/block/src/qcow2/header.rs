//! The qcow2 header, its extensions and the backing file name: parsing
//! with every bound checked (the image is untrusted input), and encoding.

use crate::{Error, Result};

use super::MAGIC;

/// Smallest and largest cluster_bits (512 bytes to 2 MiB), as QEMU allows.
pub const MIN_CLUSTER_BITS: u32 = 9;
/// See [`MIN_CLUSTER_BITS`].
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Largest L1 table we load (QEMU's limit): 32 MiB of entries.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table we load (QEMU's limit): 8 MiB.
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Longest backing file name (QEMU's limit).
pub const MAX_BACKING_NAME: u32 = 1023;
/// Largest virtual size (QEMU's limit: 2^61 bytes, so offsets fit 62 bits).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 61;

/// Incompatible feature bits.
pub mod incompat {
    /// Refcounts may be stale (lazy refcounts); must be repaired before use.
    pub const DIRTY: u64 = 1 << 0;
    /// Metadata is known to be corrupt: only read-only use is allowed.
    pub const CORRUPT: u64 = 1 << 1;
    /// Guest data lives in an external file.
    pub const EXTERNAL_DATA: u64 = 1 << 2;
    /// The compression type field is present.
    pub const COMPRESSION_TYPE: u64 = 1 << 3;
    /// L2 entries carry subcluster bitmaps.
    pub const EXTENDED_L2: u64 = 1 << 4;
    /// The bits this implementation understands.
    pub const KNOWN: u64 = DIRTY | CORRUPT | COMPRESSION_TYPE;
}

/// Compatible feature bit: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1;

/// Header extension types.
pub mod ext {
    /// End of the extension area.
    pub const END: u32 = 0;
    /// Backing file format name.
    pub const BACKING_FORMAT: u32 = 0xe279_2aca;
    /// Feature name table.
    pub const FEATURE_TABLE: u32 = 0x6803_f857;
    /// Persistent dirty bitmaps.
    pub const BITMAPS: u32 = 0x2385_2875;
    /// Full disk encryption header pointer.
    pub const ENCRYPTION: u32 = 0x0537_be77;
    /// External data file name.
    pub const DATA_FILE: u32 = 0x4441_5441;
}

/// Length of a version 2 header; version 3 headers are at least 104 bytes.
pub const V2_HEADER_LEN: u32 = 72;
/// Length of the version 3 header this implementation writes.
pub const V3_HEADER_LEN: u32 = 104;

/// A header extension we keep but do not interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Extension type.
    pub kind: u32,
    /// Raw contents.
    pub data: Vec<u8>,
}

/// A decoded qcow2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Where the backing file name is (0: none).
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// 0 (none); AES and LUKS encryption are not supported.
    pub crypt_method: u32,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Host offset of the active L1 table.
    pub l1_table_offset: u64,
    /// Host offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters the refcount table occupies.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Host offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits (version 3).
    pub incompatible_features: u64,
    /// Compatible feature bits (version 3).
    pub compatible_features: u64,
    /// Auto-clear feature bits (version 3).
    pub autoclear_features: u64,
    /// log2 of the refcount width in bits (4 in version 2).
    pub refcount_order: u32,
    /// Length of the header proper (72 for version 2).
    pub header_length: u32,
    /// Compression type (0: zlib deflate).
    pub compression_type: u8,
    /// The backing file name, if any.
    pub backing_file: Option<String>,
    /// The backing file's format, from its header extension.
    pub backing_format: Option<String>,
    /// Extensions kept verbatim (feature table, bitmaps, unknown ones).
    pub other_extensions: Vec<Extension>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidImage(msg.into())
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Refcount width in bits.
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    /// Decode the header from the image's first cluster (or as much of the
    /// file as there is, when shorter), checking it against `file_len`.
    ///
    /// The first cluster holds the header, its extensions and the backing
    /// file name; `first` must hold at least 72 bytes to decode anything.
    pub fn parse(first: &[u8], file_len: u64) -> Result<Header> {
        if first.len() < 4 || be32(first, 0) != MAGIC {
            return Err(invalid("not a qcow2 image (bad magic)"));
        }
        if first.len() < V2_HEADER_LEN as usize {
            return Err(invalid("the file is too short for a qcow2 header"));
        }
        let version = be32(first, 4);
        if version != 2 && version != 3 {
            return Err(Error::UnsupportedFeature(format!(
                "qcow2 version {version}"
            )));
        }
        let mut h = Header {
            version,
            backing_file_offset: be64(first, 8),
            backing_file_size: be32(first, 16),
            cluster_bits: be32(first, 20),
            size: be64(first, 24),
            crypt_method: be32(first, 32),
            l1_size: be32(first, 36),
            l1_table_offset: be64(first, 40),
            refcount_table_offset: be64(first, 48),
            refcount_table_clusters: be32(first, 56),
            nb_snapshots: be32(first, 60),
            snapshots_offset: be64(first, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            compression_type: 0,
            backing_file: None,
            backing_format: None,
            other_extensions: Vec::new(),
        };
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&h.cluster_bits) {
            return Err(invalid(format!(
                "cluster_bits {} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}",
                h.cluster_bits
            )));
        }
        let cs = h.cluster_size();
        if version == 3 {
            if first.len() < V3_HEADER_LEN as usize {
                return Err(invalid("the file is too short for a version 3 header"));
            }
            h.incompatible_features = be64(first, 72);
            h.compatible_features = be64(first, 80);
            h.autoclear_features = be64(first, 88);
            h.refcount_order = be32(first, 96);
            h.header_length = be32(first, 100);
            if h.header_length < V3_HEADER_LEN
                || u64::from(h.header_length) > cs
                || h.header_length as usize > first.len()
            {
                return Err(invalid(format!(
                    "header length {} is invalid",
                    h.header_length
                )));
            }
            if h.incompatible_features & incompat::COMPRESSION_TYPE != 0 {
                if h.header_length < 105 {
                    return Err(invalid("compression type bit set but no field for it"));
                }
                h.compression_type = first[104];
            }
        }
        if h.refcount_order > 6 {
            return Err(invalid(format!(
                "refcount_order {} is above 6",
                h.refcount_order
            )));
        }
        let unknown = h.incompatible_features & !incompat::KNOWN;
        if unknown != 0 {
            return Err(Error::UnsupportedFeature(unknown_features(
                unknown, first, &h,
            )));
        }
        if h.compression_type != 0 {
            return Err(Error::UnsupportedFeature(format!(
                "compression type {} (only zlib is supported)",
                h.compression_type
            )));
        }
        if h.crypt_method != 0 {
            return Err(Error::UnsupportedFeature("encrypted images".into()));
        }
        if h.size > MAX_VIRTUAL_SIZE {
            return Err(invalid(format!("virtual size {} is too large", h.size)));
        }
        // Tables: aligned, in the file, of bounded size, and big enough.
        check_table(
            "L1 table",
            h.l1_table_offset,
            u64::from(h.l1_size) * 8,
            MAX_L1_BYTES,
            cs,
            file_len,
        )?;
        let l2_span = cs * (cs / 8);
        if u64::from(h.l1_size) < h.size.div_ceil(l2_span) {
            return Err(invalid(format!(
                "L1 table of {} entries is too small for {} bytes",
                h.l1_size, h.size
            )));
        }
        if h.refcount_table_clusters == 0 {
            return Err(invalid("the refcount table is empty"));
        }
        check_table(
            "refcount table",
            h.refcount_table_offset,
            u64::from(h.refcount_table_clusters) * cs,
            MAX_REFTABLE_BYTES,
            cs,
            file_len,
        )?;
        // No table may sit on the header or on another table: a write to
        // one would destroy the other.
        let l1_len = u64::from(h.l1_size) * 8;
        let rt_len = u64::from(h.refcount_table_clusters) * cs;
        if l1_len > 0 && h.l1_table_offset < cs {
            return Err(invalid("the L1 table overlaps the header"));
        }
        if h.refcount_table_offset < cs {
            return Err(invalid("the refcount table overlaps the header"));
        }
        if h.nb_snapshots > 0 && h.snapshots_offset < cs {
            return Err(invalid("the snapshot table overlaps the header"));
        }
        if l1_len > 0
            && h.l1_table_offset < h.refcount_table_offset + rt_len
            && h.refcount_table_offset < h.l1_table_offset + l1_len
        {
            return Err(invalid("the L1 table overlaps the refcount table"));
        }
        if h.nb_snapshots > super::snapshot::MAX_SNAPSHOTS {
            return Err(invalid(format!("{} snapshots is too many", h.nb_snapshots)));
        }
        if h.nb_snapshots > 0
            && (!h.snapshots_offset.is_multiple_of(cs) || h.snapshots_offset >= file_len)
        {
            return Err(invalid("the snapshot table is outside the file"));
        }
        h.parse_extensions(first)?;
        h.parse_backing_name(first)?;
        Ok(h)
    }

    fn parse_extensions(&mut self, first: &[u8]) -> Result<()> {
        let mut at = self.header_length as usize;
        let end = if self.backing_file_offset > 0 {
            usize::try_from(self.backing_file_offset)
                .unwrap_or(first.len())
                .min(first.len())
        } else {
            first.len()
        };
        loop {
            if at + 8 > end {
                // No end marker before the backing name or the cluster end:
                // QEMU tolerates this.
                return Ok(());
            }
            let kind = be32(first, at);
            let len = be32(first, at + 4) as usize;
            at += 8;
            if kind == ext::END {
                return Ok(());
            }
            if len > end - at {
                return Err(invalid(format!(
                    "header extension {kind:#x} runs past the header cluster"
                )));
            }
            let data = &first[at..at + len];
            match kind {
                ext::BACKING_FORMAT => {
                    self.backing_format = Some(String::from_utf8_lossy(data).into_owned());
                }
                ext::DATA_FILE => {
                    return Err(Error::UnsupportedFeature("external data files".into()));
                }
                _ => self.other_extensions.push(Extension {
                    kind,
                    data: data.to_vec(),
                }),
            }
            at += len.div_ceil(8) * 8;
        }
    }

    fn parse_backing_name(&mut self, first: &[u8]) -> Result<()> {
        if self.backing_file_offset == 0 {
            return Ok(());
        }
        if self.backing_file_size == 0 || self.backing_file_size > MAX_BACKING_NAME {
            return Err(invalid(format!(
                "backing file name length {} is invalid",
                self.backing_file_size
            )));
        }
        let start = usize::try_from(self.backing_file_offset).unwrap_or(usize::MAX);
        let len = self.backing_file_size as usize;
        if start > first.len() || len > first.len() - start {
            return Err(invalid(
                "the backing file name is outside the header cluster",
            ));
        }
        let name = std::str::from_utf8(&first[start..start + len])
            .map_err(|_| invalid("the backing file name is not UTF-8"))?;
        self.backing_file = Some(name.to_string());
        Ok(())
    }

    /// Encode the header, its extensions and the backing file name into
    /// one cluster. Fails if they do not fit.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let cs = usize::try_from(self.cluster_size()).unwrap_or(0);
        let mut b = Vec::with_capacity(cs);
        b.extend_from_slice(&MAGIC.to_be_bytes());
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&0u64.to_be_bytes()); // backing offset, patched below
        b.extend_from_slice(&0u32.to_be_bytes()); // backing size, patched below
        b.extend_from_slice(&self.cluster_bits.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.crypt_method.to_be_bytes());
        b.extend_from_slice(&self.l1_size.to_be_bytes());
        b.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_clusters.to_be_bytes());
        b.extend_from_slice(&self.nb_snapshots.to_be_bytes());
        b.extend_from_slice(&self.snapshots_offset.to_be_bytes());
        if self.version >= 3 {
            b.extend_from_slice(&self.incompatible_features.to_be_bytes());
            b.extend_from_slice(&self.compatible_features.to_be_bytes());
            b.extend_from_slice(&self.autoclear_features.to_be_bytes());
            b.extend_from_slice(&self.refcount_order.to_be_bytes());
            b.extend_from_slice(&V3_HEADER_LEN.to_be_bytes());
        }
        let push_ext = |b: &mut Vec<u8>, kind: u32, data: &[u8]| -> Result<()> {
            let len = u32::try_from(data.len()).map_err(|_| invalid("extension too large"))?;
            b.extend_from_slice(&kind.to_be_bytes());
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(data);
            b.resize(b.len().div_ceil(8) * 8, 0);
            Ok(())
        };
        if let Some(fmt) = &self.backing_format {
            push_ext(&mut b, ext::BACKING_FORMAT, fmt.as_bytes())?;
        }
        for e in &self.other_extensions {
            push_ext(&mut b, e.kind, &e.data)?;
        }
        push_ext(&mut b, ext::END, &[])?;
        if let Some(name) = &self.backing_file {
            let len = u32::try_from(name.len()).unwrap_or(u32::MAX);
            if len == 0 || len > MAX_BACKING_NAME {
                return Err(invalid(format!("backing file name of {len} bytes")));
            }
            let off = b.len() as u64;
            b[8..16].copy_from_slice(&off.to_be_bytes());
            b[16..20].copy_from_slice(&len.to_be_bytes());
            b.extend_from_slice(name.as_bytes());
        }
        if b.len() > cs {
            return Err(invalid("the header does not fit in one cluster"));
        }
        b.resize(cs, 0);
        Ok(b)
    }

    /// The feature name table QEMU writes into version 3 images.
    pub fn feature_table() -> Extension {
        let names: [(u8, u8, &str); 7] = [
            (0, 0, "dirty bit"),
            (0, 1, "corrupt bit"),
            (0, 2, "external data file"),
            (0, 3, "compression type"),
            (0, 4, "extended L2 entries"),
            (1, 0, "lazy refcounts"),
            (2, 0, "bitmaps"),
        ];
        let mut data = Vec::new();
        for (kind, bit, name) in names {
            let mut entry = [0u8; 48];
            entry[0] = kind;
            entry[1] = bit;
            entry[2..2 + name.len()].copy_from_slice(name.as_bytes());
            data.extend_from_slice(&entry);
        }
        Extension {
            kind: ext::FEATURE_TABLE,
            data,
        }
    }
}

/// Name unknown incompatible features from the image's own feature table
/// when it has one ("extended L2 entries"), by bit number otherwise.
fn unknown_features(bits: u64, first: &[u8], h: &Header) -> String {
    let mut probe = h.clone();
    probe.incompatible_features = 0;
    let mut names = Vec::new();
    let table = probe.parse_extensions(first).ok().and_then(|()| {
        probe
            .other_extensions
            .iter()
            .find(|e| e.kind == ext::FEATURE_TABLE)
            .cloned()
    });
    for bit in 0..64u8 {
        if bits & (1u64 << bit) == 0 {
            continue;
        }
        let named = table.as_ref().and_then(|t| {
            t.data.chunks_exact(48).find_map(|e| {
                (e[0] == 0 && e[1] == bit).then(|| {
                    let raw = &e[2..];
                    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
                    String::from_utf8_lossy(&raw[..end]).into_owned()
                })
            })
        });
        names.push(match named {
            Some(n) => format!("{n} (incompatible bit {bit})"),
            None => format!("incompatible bit {bit}"),
        });
    }
    names.join(", ")
}

/// A table at `offset` of `len` bytes must be cluster aligned, no larger
/// than `max`, and inside the file.
pub fn check_table(
    what: &str,
    offset: u64,
    len: u64,
    max: u64,
    cluster_size: u64,
    file_len: u64,
) -> Result<()> {
    if len > max {
        return Err(invalid(format!(
            "{what} of {len} bytes is larger than the {max}-byte limit"
        )));
    }
    if len == 0 {
        return Ok(());
    }
    if !offset.is_multiple_of(cluster_size) {
        return Err(invalid(format!(
            "{what} offset {offset:#x} is not cluster aligned"
        )));
    }
    match offset.checked_add(len) {
        Some(end) if end <= file_len.div_ceil(cluster_size) * cluster_size => Ok(()),
        _ => Err(invalid(format!(
            "{what} at {offset:#x} ({len} bytes) is past the end of the file"
        ))),
    }
}
