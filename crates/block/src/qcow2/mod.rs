//! qcow2 images (QEMU copy-on-write, versions 2 and 3).
//!
//! Reads and writes of allocated clusters run concurrently: the metadata
//! lock is held only to look the clusters up. Writes that allocate, and
//! everything that frees clusters, run under it. Discards also take the
//! I/O gate exclusively so no read or write is in flight on a cluster
//! while it is freed and perhaps reused.

mod chain;
mod check;
mod create;
pub mod header;
mod io;
mod l2;
mod meta;
mod refcount;
pub mod snapshot;
mod snapshot_ops;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub use chain::backing_chain;
pub use check::{CheckReport, RepairMode};
pub use create::{create, format, CreateOptions};
pub use header::Header;
pub use snapshot::Snapshot;

use crate::file::HostFile;
use crate::image_file::ImageFile;
use crate::{DiskImage, Error, ImageFormat, OpenOptions, Result};

use meta::Meta;

/// The first four bytes of every qcow2 image: "QFI\xfb".
pub const MAGIC: u32 = 0x5146_49fb;

/// An open qcow2 image, in a host file unless `F` says otherwise (a
/// remote file: see `image_file`).
pub struct Qcow2Disk<F: ImageFile = HostFile> {
    file: F,
    path: PathBuf,
    backing: Option<Arc<dyn DiskImage>>,
    cluster_bits: u32,
    version: u32,
    read_only: bool,
    size: AtomicU64,
    /// Held shared by reads and writes, exclusively while clusters are freed.
    gate: RwLock<()>,
    /// Reads mapped by `begin_direct_read` and not yet ended: they hold
    /// off cluster frees as the gate does.
    direct_reads: AtomicUsize,
    /// A write onto metadata was refused: the image is marked corrupt and
    /// takes no more writes.
    corrupt: AtomicBool,
    meta: Mutex<Meta>,
}

impl<F: ImageFile> std::fmt::Debug for Qcow2Disk<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Disk")
            .field("path", &self.path)
            .field("size", &self.size)
            .finish()
    }
}

/// What `vireo img info` shows about a qcow2 image.
#[derive(Debug, Clone)]
pub struct Qcow2Info {
    /// The decoded header.
    pub header: Header,
    /// Internal snapshots.
    pub snapshots: Vec<Snapshot>,
}

/// How an image is opened (see the `open` functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Normal,
    Repair,
    WithoutBacking,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidImage(msg.into())
}

impl Qcow2Disk {
    /// Open a qcow2 image (see [`crate::open`]).
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Self> {
        let file = HostFile::open(path, options.read_only, options.direct)?;
        let mut chain = crate::Chain::start(path, &file)?;
        let disk = Self::from_file(file, path, options, &mut chain)?;
        chain.warn_probed_backing();
        Ok(disk)
    }

    /// Open a snapshot of the image at `path`, read-only: reads see the
    /// disk as it was when the snapshot named (or numbered) `snapshot` was
    /// taken.
    pub fn open_snapshot(path: &Path, snapshot: &str, direct: bool) -> Result<Self> {
        let options = OpenOptions {
            read_only: true,
            direct,
            format: Some(ImageFormat::Qcow2),
            ..OpenOptions::default()
        };
        let disk = Self::open(path, &options)?;
        {
            let mut m = disk.lock_meta();
            let s = m
                .snapshots
                .iter()
                .find(|s| s.id == snapshot || s.name == snapshot)
                .cloned()
                .ok_or_else(|| snapshot_ops::no_snapshot(snapshot))?;
            let cs = 1u64 << disk.cluster_bits;
            let file_len = disk.file.len()?;
            header::check_table(
                "snapshot L1 table",
                s.l1_table_offset,
                u64::from(s.l1_size) * 8,
                header::MAX_L1_BYTES,
                cs,
                file_len,
            )?;
            let size = s.disk_size.unwrap_or(m.header.size);
            if u64::from(s.l1_size) < size.div_ceil(cs * (cs / 8)) {
                return Err(invalid("snapshot L1 table is too small for its disk"));
            }
            m.l1 = load_l1(&disk.file, s.l1_table_offset, s.l1_size)?;
            m.l1_loaded = true;
            m.l1_offset = s.l1_table_offset;
            m.invalidate_overlap();
            disk.size.store(size, Ordering::Release);
        }
        Ok(disk)
    }

    /// Open an image for `vireo img check -r`: writable even when marked
    /// corrupt (a repair that leaves no corruption clears the mark).
    pub fn open_for_repair(path: &Path) -> Result<Self> {
        let options = OpenOptions {
            read_only: false,
            direct: false,
            format: Some(ImageFormat::Qcow2),
            ..OpenOptions::default()
        };
        let file = HostFile::open(path, false, false)?;
        let mut chain = crate::Chain::start(path, &file)?;
        let disk = Self::open_file(file, path, &options, &mut chain, Open::Repair)?;
        chain.warn_probed_backing();
        Ok(disk)
    }

    /// Open the image read-only without its backing file, as `qemu-img
    /// info` does: for showing the image itself (its header names a
    /// backing file that may be missing). Unallocated clusters read as
    /// zeroes, so this is not a view of the disk's contents.
    pub fn open_without_backing(path: &Path) -> Result<Self> {
        let options = OpenOptions {
            read_only: true,
            direct: false,
            format: Some(ImageFormat::Qcow2),
            ..OpenOptions::default()
        };
        let file = HostFile::open(path, true, false)?;
        let mut chain = crate::Chain::start(path, &file)?;
        Self::open_file(file, path, &options, &mut chain, Open::WithoutBacking)
    }
}

impl<F: ImageFile> Qcow2Disk<F> {
    /// Preallocate the image's metadata, as qemu-img's
    /// `preallocation=metadata` does: for a new image (see
    /// `io::preallocate_metadata_impl`).
    pub fn preallocate_metadata(&self) -> Result<()> {
        self.preallocate_metadata_impl()
    }

    /// Open the qcow2 image in `file`, named `path`, as one more image
    /// of `chain` (the caller has entered it there and locked it).
    pub(crate) fn from_file(
        file: F,
        path: &Path,
        options: &OpenOptions,
        chain: &mut crate::Chain,
    ) -> Result<Self> {
        Self::open_file(file, path, options, chain, Open::Normal)
    }

    fn open_file(
        file: F,
        path: &Path,
        options: &OpenOptions,
        chain: &mut crate::Chain,
        how: Open,
    ) -> Result<Self> {
        let repair = how == Open::Repair;
        // The chain holds this image already: a backing file when it holds more.
        let backing_file = chain.len() > 1;
        let file_len = file.len()?;
        let mut probe = vec![0u8; usize::try_from(file_len.min(4096)).unwrap_or(0)];
        file.read_exact_strict(&mut probe, 0)?;
        if probe.len() < 24 {
            // Enough to say "bad magic" or "too short" precisely.
            Header::parse(&probe, file_len)?;
        }
        let bits = if probe.len() >= 24 {
            u32::from_be_bytes([probe[20], probe[21], probe[22], probe[23]])
        } else {
            header::MIN_CLUSTER_BITS
        };
        let first = if (header::MIN_CLUSTER_BITS..=header::MAX_CLUSTER_BITS).contains(&bits) {
            let len = (1u64 << bits).min(file_len);
            let mut b = vec![0u8; usize::try_from(len).unwrap_or(0)];
            file.read_exact_strict(&mut b, 0)?;
            b
        } else {
            probe
        };
        let header = Header::parse(&first, file_len)?;
        let read_only = options.read_only;
        if header.incompatible_features & header::incompat::CORRUPT != 0 && !read_only && !repair {
            return Err(invalid(
                "the image is marked corrupt; it can only be opened read-only (check it with qemu-img check -r all)",
            ));
        }
        let dirty = header.incompatible_features & header::incompat::DIRTY != 0;
        // What one open allocates up front is bounded: a read-only image
        // (every backing file) reads its L1 and refcount tables when first
        // needed (never, for `img info`), and a backing file never needs
        // its snapshot table. A chain of hostile images claiming the
        // largest tables costs little until its data is read.
        let l1 = if read_only {
            None
        } else {
            Some(load_l1(&file, header.l1_table_offset, header.l1_size)?)
        };
        let refs = refcount::Refcounts::open(
            &file,
            header.refcount_table_offset,
            header.refcount_table_clusters,
            header.refcount_order,
            header.cluster_bits,
            read_only,
        )?;
        let snapshots = if !backing_file {
            load_snapshots(&file, &header, file_len)?
        } else {
            Vec::new()
        };
        let backing = match &header.backing_file {
            Some(_) if how == Open::WithoutBacking => None,
            Some(name) => Some(open_backing::<F>(
                path,
                name,
                header.backing_format.as_deref(),
                options,
                chain,
            )?),
            None => None,
        };
        let cs = 1u64 << header.cluster_bits;
        let meta = Meta {
            l1_offset: header.l1_table_offset,
            l1_loaded: l1.is_some(),
            l1: l1.unwrap_or_default(),
            l2: if !backing_file {
                l2::L2Cache::new(header.cluster_bits)
            } else {
                l2::L2Cache::with_bytes(header.cluster_bits, l2::BACKING_CACHE_BYTES)
            },
            refs,
            snapshots,
            pool: VecDeque::new(),
            file_end: file_len.div_ceil(cs) * cs,
            compressed_end: file_len.div_ceil(512) * 512,
            overlap: None,
            overlap_refused: false,
            header,
        };
        let disk = Qcow2Disk {
            cluster_bits: meta.header.cluster_bits,
            version: meta.header.version,
            size: AtomicU64::new(meta.header.size),
            file,
            path: path.to_owned(),
            backing,
            read_only,
            gate: RwLock::new(()),
            direct_reads: AtomicUsize::new(0),
            corrupt: AtomicBool::new(false),
            meta: Mutex::new(meta),
        };
        if !read_only {
            if dirty {
                // Lazy refcounts were in use when the last writer stopped:
                // counts may be low, so rebuild them before allocating.
                disk.check(RepairMode::All)?;
                disk.set_incompatible(header::incompat::DIRTY, false)?;
            }
            disk.clear_autoclear()?;
        }
        disk.file.opened()?;
        Ok(disk)
    }

    /// Exclusive access for operations that free clusters: no read or
    /// write may be in flight, through the gate or through io_uring.
    fn exclusive(&self) -> Result<RwLockWriteGuard<'_, ()>> {
        /// Longest wait for io_uring reads to be reaped.
        const MAX_WAIT: Duration = Duration::from_secs(10);
        let guard = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let start = Instant::now();
        // Direct reads end when their AsyncDisk reaps them; new ones cannot
        // start while we hold the gate.
        while self.direct_reads.load(Ordering::Acquire) > 0 {
            if start.elapsed() > MAX_WAIT {
                return Err(Error::Unsupported(
                    "freeing clusters while io_uring reads stay unreaped",
                ));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        Ok(guard)
    }

    fn lock_meta(&self) -> MutexGuard<'_, Meta> {
        // Metadata updates are written through one step at a time, so a
        // panic elsewhere leaves it as consistent as a crash would.
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Header fields and snapshots, for `vireo img info`.
    pub fn info(&self) -> Qcow2Info {
        let m = self.lock_meta();
        Qcow2Info {
            header: m.header.clone(),
            snapshots: m.snapshots.clone(),
        }
    }

    /// The backing image, if any.
    pub fn backing(&self) -> Option<&Arc<dyn DiskImage>> {
        self.backing.as_ref()
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn set_incompatible(&self, bit: u64, on: bool) -> Result<()> {
        if self.version < 3 {
            return Ok(());
        }
        let mut m = self.lock_meta();
        let mut v = m.header.incompatible_features;
        if on {
            v |= bit;
        } else {
            v &= !bit;
        }
        self.file.write_all_at(&v.to_be_bytes(), 72)?;
        self.file.sync_data()?;
        m.header.incompatible_features = v;
        Ok(())
    }

    /// Set the corrupt bit (version 3; QEMU does the same on a refused
    /// metadata overwrite) so later opens for writing refuse the image,
    /// and refuse further writes in this one.
    fn mark_corrupt(&self, m: &mut Meta) {
        if self.corrupt.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!(
            "{}: a write would have overwritten qcow2 metadata; image marked corrupt",
            self.path.display()
        );
        if self.version < 3 {
            return;
        }
        let v = m.header.incompatible_features | header::incompat::CORRUPT;
        let r = self
            .file
            .write_all_at(&v.to_be_bytes(), 72)
            .and_then(|()| self.file.sync_data());
        match r {
            Ok(()) => m.header.incompatible_features = v,
            Err(e) => tracing::warn!("{}: marking corrupt: {e}", self.path.display()),
        }
    }

    /// Auto-clear bits name features (such as dirty bitmaps) whose data a
    /// writer that does not know them would make stale: clear them.
    fn clear_autoclear(&self) -> Result<()> {
        let mut m = self.lock_meta();
        if self.version < 3 || m.header.autoclear_features == 0 {
            return Ok(());
        }
        self.file.write_all_at(&0u64.to_be_bytes(), 88)?;
        self.file.sync_data()?;
        m.header.autoclear_features = 0;
        Ok(())
    }
}

impl<F: ImageFile> Drop for Qcow2Disk<F> {
    fn drop(&mut self) {
        if self.read_only {
            return;
        }
        let mut m = self.lock_meta();
        let r = m
            .drain_pool(&self.file)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = r {
            tracing::warn!("{}: closing: {e}", self.path.display());
        }
    }
}

pub(crate) fn load_l1<F: ImageFile>(file: &F, offset: u64, entries: u32) -> Result<Vec<u64>> {
    let len = u64::from(entries) * 8;
    // Snapshot L1 sizes come straight from the image: bound the allocation
    // here too, not only where a caller checked the table.
    if len > header::MAX_L1_BYTES {
        return Err(invalid(format!(
            "L1 table of {entries} entries is too large"
        )));
    }
    // Read in pieces so the raw bytes never double the table's footprint.
    const PIECE: u64 = 1 << 20;
    let mut table = Vec::with_capacity(usize::try_from(len / 8).unwrap_or(0));
    let mut raw = vec![0u8; usize::try_from(len.min(PIECE)).unwrap_or(0)];
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from((len - at).min(PIECE)).unwrap_or(0);
        file.read_exact_strict(&mut raw[..n], offset.saturating_add(at))?;
        table.extend(l2::decode_table(&raw[..n]));
        at += PIECE;
    }
    Ok(table)
}

fn load_snapshots<F: ImageFile>(file: &F, h: &Header, file_len: u64) -> Result<Vec<Snapshot>> {
    if h.nb_snapshots == 0 {
        return Ok(Vec::new());
    }
    let avail = file_len.saturating_sub(h.snapshots_offset);
    let mut want = 64 * 1024u64;
    loop {
        let n = want.min(avail).min(snapshot::MAX_TABLE_BYTES);
        let mut raw = vec![0u8; usize::try_from(n).unwrap_or(0)];
        file.read_exact_strict(&mut raw, h.snapshots_offset)?;
        match snapshot::parse(&raw, h.nb_snapshots) {
            Ok(s) => {
                for snap in &s {
                    header::check_table(
                        &format!("the L1 table of snapshot {} ('{}')", snap.id, snap.name),
                        snap.l1_table_offset,
                        u64::from(snap.l1_size) * 8,
                        header::MAX_L1_BYTES,
                        h.cluster_size(),
                        file_len,
                    )?;
                }
                return Ok(s);
            }
            Err(e) if n == want => {
                let _ = e;
                want *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Open a backing file named in an image at `image_path`, where the
/// image's kind of file `F` finds it (a host file: relative names are
/// relative to the image's directory); the chain is read-only and obeys
/// `options.backing`. Without a recorded format a host file is probed, as
/// QEMU does, with a warning (a policy may refuse that instead; a remote
/// file refuses it).
fn open_backing<F: ImageFile>(
    image_path: &Path,
    name: &str,
    format: Option<&str>,
    options: &OpenOptions,
    chain: &mut crate::Chain,
) -> Result<Arc<dyn DiskImage>> {
    let path = F::backing_location(image_path, name)?;
    let format = match format {
        None if options.backing.require_format => {
            return Err(Error::BackingRefused {
                path,
                reason: format!(
                    "{} does not record the backing file's format",
                    image_path.display()
                ),
            })
        }
        None => {
            chain.note_probed_backing(image_path, &path);
            None
        }
        Some(f) => Some(
            f.parse::<ImageFormat>()
                .map_err(|_| Error::UnsupportedFeature(format!("backing file format '{f}'")))?,
        ),
    };
    let opts = OpenOptions {
        read_only: true,
        direct: options.direct,
        format,
        backing: options.backing.clone(),
        unsafe_cache: false,
    };
    F::open_backing(&path, &opts, chain).map_err(|e| match e {
        // Chain errors name their images themselves.
        e @ (Error::BackingLoop { .. } | Error::BackingTooDeep { .. }) => e,
        e => Error::Open {
            path: path.clone(),
            source: Box::new(e),
        },
    })
}

impl<F: ImageFile> DiskImage for Qcow2Disk<F> {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_vectored(&self, offset: u64, bufs: &[crate::IoBufMut]) -> Result<()> {
        self.read_impl(offset, bufs)
    }

    fn write_vectored(&self, offset: u64, bufs: &[crate::IoBuf]) -> Result<()> {
        self.write_impl(offset, bufs)
    }

    fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        // Metadata is written through, so one sync covers data and tables.
        self.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.clear_range(offset, len, io::Clear::Discard)
    }

    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<()> {
        self.clear_range(offset, len, io::Clear::Zeroes { unmap })
    }

    fn resize(&self, new_size: u64) -> Result<()> {
        self.resize_impl(new_size)
    }

    fn format(&self) -> ImageFormat {
        ImageFormat::Qcow2
    }

    fn allocation(&self, offset: u64, len: u64) -> Result<Option<(bool, u64)>> {
        self.allocation_impl(offset, len)
    }

    fn host_allocated_bytes(&self) -> Result<u64> {
        self.file.allocated_bytes()
    }

    fn direct_file(&self) -> Option<crate::DirectFile> {
        self.file.direct_file()
    }

    fn begin_direct_read(&self, offset: u64, len: u64) -> Option<u64> {
        self.begin_direct_read_impl(offset, len)
    }

    fn end_direct_read(&self) {
        self.direct_reads.fetch_sub(1, Ordering::AcqRel);
    }
}
