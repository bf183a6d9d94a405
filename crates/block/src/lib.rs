//! Disk images behind one interface.
//!
//! A [`DiskImage`] is a guest disk: byte-addressed reads and writes, flush,
//! discard, write-zeroes, size and resize. Raw files and qcow2 images both
//! implement it; virtio-blk and `vireo img` use nothing else. This crate
//! knows nothing about virtio or guests: buffers arrive as [`IoBuf`]s,
//! which may point into guest memory but are only ever used as raw memory.
//!
//! [`open`] opens an image of any supported format (probing it when the
//! format is not given, under the rules docs/security.md states) and locks
//! it against a second writer; [`AsyncDisk`] runs requests on any image
//! without blocking the caller.

mod async_io;
pub mod copy;
mod file;
mod image_file;
mod iobuf;
#[cfg(feature = "iscsi")]
pub mod iscsi_lun;
#[cfg(feature = "nfs")]
pub mod nfs_file;
mod open_chain;
mod probe;
pub mod qcow2;
mod raw;
mod replace;
#[cfg(all(test, any(feature = "iscsi", feature = "nfs")))]
mod test_depth;
mod uring;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use async_io::{AsyncDisk, Completion, Engine, Request, DEFAULT_WORKERS};
pub use iobuf::{IoBuf, IoBufMut};
pub use raw::RawDisk;
pub use replace::{FileId, Replacement};
pub use uring::DirectFile;

pub(crate) use open_chain::Chain;

/// Errors from disk images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host I/O call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The host error.
        #[source]
        source: std::io::Error,
    },
    /// The request reaches past the end of the disk.
    #[error("request {offset:#x}+{len:#x} is beyond the disk's end ({size:#x})")]
    OutOfRange {
        /// First byte of the request.
        offset: u64,
        /// Length of the request.
        len: u64,
        /// Size of the disk.
        size: u64,
    },
    /// A write, discard or resize on an image opened read-only.
    #[error("the image is read-only")]
    ReadOnly,
    /// The operation is not supported by this image format.
    #[error("{0} is not supported by this image")]
    Unsupported(&'static str),
    /// Another process holds a conflicting lock on the image.
    #[error("image {} is in use (another VM, or another disk of this one, holds its lock)", .0.display())]
    InUse(PathBuf),
    /// A request the image cannot honour as asked, though the image is
    /// fine: writing an image over its own source or backing file, a size
    /// past what the format can hold, a snapshot it does not have.
    #[error("{0}")]
    Refused(String),
    /// The image's contents are not a valid image of its format.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// The image uses a feature this implementation does not have.
    #[error("unsupported image feature: {0}")]
    UnsupportedFeature(String),
    /// The path is not a regular file or a block device (a FIFO would
    /// block the open; a directory or socket is no image).
    #[error("is {0}, not a regular file or block device")]
    FileType(&'static str),
    /// Probing found something that must not be opened as raw.
    #[error("{0}")]
    Probe(String),
    /// A write that would leave an image header in sector 0 of a raw image
    /// whose format was probed.
    #[error("refused a write that would put a {0} header into sector 0 of a raw image whose format was probed (give format=raw to allow it)")]
    HeaderWrite(&'static str),
    /// An image in a backing chain names one already in it.
    #[error("backing chain loops: {} names {}, which is already in the chain", .image.display(), .names.display())]
    BackingLoop {
        /// The image whose header names the repeated file.
        image: PathBuf,
        /// The backing file it names.
        names: PathBuf,
    },
    /// A backing chain longer than Vireo follows.
    #[error("backing chain of {} is deeper than {max} images", .top.display())]
    BackingTooDeep {
        /// The image that was being opened.
        top: PathBuf,
        /// Most images followed.
        max: u32,
    },
    /// A backing file the [`BackingPolicy`] refuses.
    #[error("backing file {}: {reason}", .path.display())]
    BackingRefused {
        /// The backing file, as the image names it (resolved).
        path: PathBuf,
        /// Which rule refused it.
        reason: String,
    },
    /// A network disk's target failed the request or could not be reached.
    #[error("{0}")]
    Remote(String),
    /// Opening an image (or one of its backing files) failed.
    #[error("{}", .path.display())]
    Open {
        /// The image being opened.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Io`] wrapping `source`.
    pub(crate) fn io(op: &'static str, source: std::io::Error) -> Self {
        Error::Io { op, source }
    }
}

/// A guest disk: what virtio-blk and `vireo img` see of any image format.
///
/// All methods take `&self`: one image serves several queues and worker
/// threads at once, so implementations lock what they must internally.
/// Every request is checked against [`DiskImage::size`]; none may reach
/// past the end.
pub trait DiskImage: Send + Sync {
    /// Virtual size in bytes (what the guest sees).
    fn size(&self) -> u64;
    /// Whether the image was opened read-only.
    fn read_only(&self) -> bool;
    /// Fill `bufs`, in order, from the disk starting at `offset`.
    fn read_vectored(&self, offset: u64, bufs: &[IoBufMut]) -> Result<()>;
    /// Write `bufs`, in order, to the disk starting at `offset`.
    fn write_vectored(&self, offset: u64, bufs: &[IoBuf]) -> Result<()>;
    /// Make every completed write durable.
    fn flush(&self) -> Result<()>;
    /// Tell the image `[offset, offset + len)` is no longer needed; reads of
    /// it may return zeroes or the old data afterwards.
    fn discard(&self, offset: u64, len: u64) -> Result<()>;
    /// Make `[offset, offset + len)` read as zeroes; with `unmap`, the image
    /// may free the space behind it.
    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<()>;
    /// Change the virtual size.
    fn resize(&self, new_size: u64) -> Result<()>;

    /// The image's format.
    fn format(&self) -> ImageFormat {
        ImageFormat::Raw
    }

    /// What `[offset, offset + len)` starts with: `Some((false, n))` when
    /// its first `n` bytes are known to read as zeroes (a hole, a zero
    /// cluster, unallocated with nothing behind it), `Some((true, n))` when
    /// they may hold data. `None` when the format cannot tell. Used by
    /// `vireo img convert` to keep copies sparse.
    fn allocation(&self, offset: u64, len: u64) -> Result<Option<(bool, u64)>> {
        let _ = (offset, len);
        Ok(None)
    }

    /// For formats that keep guest byte N at byte N of one host file
    /// (raw): that file, so [`AsyncDisk`] can hand reads, writes and
    /// flushes to the kernel's io_uring directly. `None` for the others.
    fn direct_file(&self) -> Option<DirectFile> {
        None
    }

    /// For io_uring reads: when `[offset, offset + len)` is one contiguous
    /// range of the file [`DiskImage::direct_file`] names, its offset
    /// there. The mapping stays valid (the image frees no cluster under
    /// it) until [`DiskImage::end_direct_read`]. `None`: use
    /// [`DiskImage::read_vectored`].
    fn begin_direct_read(&self, offset: u64, len: u64) -> Option<u64> {
        let _ = (offset, len);
        None
    }

    /// Writes that start below this byte must go through
    /// [`DiskImage::write_vectored`], which checks what they put there;
    /// [`AsyncDisk`] hands only writes at or past it to io_uring. 0 (the
    /// default): no such range.
    fn checked_write_prefix(&self) -> u64 {
        0
    }

    /// Ends what a successful [`DiskImage::begin_direct_read`] began.
    fn end_direct_read(&self) {}

    /// Bytes the image occupies on the host (blocks allocated).
    fn host_allocated_bytes(&self) -> Result<u64> {
        Ok(0)
    }

    /// Read into one host buffer (a convenience over [`read_vectored`]).
    ///
    /// [`read_vectored`]: DiskImage::read_vectored
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_vectored(offset, &[IoBufMut::new(buf)])
    }

    /// Write one host buffer (a convenience over [`write_vectored`]).
    ///
    /// [`write_vectored`]: DiskImage::write_vectored
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.write_vectored(offset, &[IoBuf::new(buf)])
    }
}

/// The on-disk formats this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// A plain file or block device: byte N of the disk is byte N of the file.
    Raw,
    /// QEMU copy-on-write version 2 or 3.
    Qcow2,
}

impl ImageFormat {
    /// The name qemu-img uses for the format.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ImageFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "raw" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            other => Err(format!("unknown image format '{other}' (raw or qcow2)")),
        }
    }
}

/// How to open an image.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Open for reading only (takes a shared lock instead of an exclusive one).
    pub read_only: bool,
    /// Bypass the host page cache (`O_DIRECT`, QEMU's `cache=none`).
    pub direct: bool,
    /// The format; probed from the file's first bytes when `None` (then a
    /// raw image refuses writes that would put an image header into its
    /// sector 0: see docs/security.md).
    pub format: Option<ImageFormat>,
    /// Which backing files the image's chain may name.
    pub backing: BackingPolicy,
    /// QEMU's `cache=unsafe` (qemu-img convert's default for its output):
    /// no `fdatasync` at all, neither the ones a qcow2 image orders its
    /// metadata updates with nor a flush's. Only for an image being filled
    /// that nothing uses yet, whose user syncs the file itself when done
    /// and throws it away after a crash (a copy under a temporary name).
    pub unsafe_cache: bool,
}

/// Which backing files an image may name. Whatever the policy, backing
/// files are opened read-only, and relative names are resolved against the
/// directory of the image that names them. The default allows any regular
/// file, probing its format when the image does not record it.
#[derive(Debug, Clone, Default)]
pub struct BackingPolicy {
    /// When not empty, every backing file must lie inside one of these
    /// directories. The path judged is the one of the file actually
    /// opened (symbolic links resolved), so a link cannot smuggle a file
    /// in.
    pub allowed_dirs: Vec<PathBuf>,
    /// Let a backing file be a block device (refused by default: an image
    /// file should not reach the host's disks).
    pub allow_devices: bool,
    /// Refuse a backing file whose format the image does not record,
    /// instead of probing it.
    pub require_format: bool,
    /// Refuse every backing file.
    pub deny_all: bool,
}

impl BackingPolicy {
    /// Check the backing file `file`, opened from `path`, against the policy.
    fn admit(&self, path: &Path, file: &file::HostFile) -> Result<()> {
        let refuse = |reason: String| {
            Err(Error::BackingRefused {
                path: path.to_owned(),
                reason,
            })
        };
        if self.deny_all {
            return refuse("backing files are not allowed".into());
        }
        if file.is_block_device() && !self.allow_devices {
            return refuse("is a block device; backing files must be regular files".into());
        }
        if !self.allowed_dirs.is_empty() {
            let real = file.real_path()?;
            // The directories are compared in canonical form too, so a
            // link among them (/tmp on some hosts) does not refuse all.
            let inside = |d: &PathBuf| {
                real.starts_with(d) || d.canonicalize().is_ok_and(|c| real.starts_with(c))
            };
            if !self.allowed_dirs.iter().any(inside) {
                return refuse(format!(
                    "{} is outside the allowed backing directories",
                    real.display()
                ));
            }
        }
        Ok(())
    }
}

/// As [`open`], with the CHAP secret of an `iscsi://USER@HOST/...` LUN
/// given apart from its URL (`None`: as [`open`]); any other image
/// refuses a secret.
pub fn open_with_secret(
    path: &Path,
    options: &OpenOptions,
    secret: Option<&str>,
) -> Result<Arc<dyn DiskImage>> {
    let Some(secret) = secret else {
        return open(path, options);
    };
    match path.to_str().filter(|p| p.starts_with(ISCSI_SCHEME)) {
        Some(url) => open_iscsi_with_secret(url, options, Some(secret)),
        None => Err(Error::Refused(
            "a CHAP secret is for iscsi:// disks only".into(),
        )),
    }
}

/// Open the image at `path`: probe its format unless given, lock it
/// (exclusively when writable, shared otherwise) and open its backing
/// chain read-only.
pub fn open(path: &Path, options: &OpenOptions) -> Result<Arc<dyn DiskImage>> {
    if let Some(url) = path.to_str().filter(|p| p.starts_with(ISCSI_SCHEME)) {
        return open_iscsi(url, options);
    }
    if let Some(url) = path.to_str().filter(|p| p.starts_with(NFS_SCHEME)) {
        return open_nfs(url, options);
    }
    let mut chain = Chain::empty(path);
    let opened = open_inner(path, options, &mut chain);
    if opened.is_ok() {
        chain.warn_probed_backing();
    }
    opened.map_err(|e| match e {
        // Chain errors name their images themselves; a backing file's
        // error (an Error::Open naming it) is wrapped so the top is named.
        e @ (Error::BackingLoop { .. } | Error::BackingTooDeep { .. }) => e,
        e => Error::Open {
            path: path.to_owned(),
            source: Box::new(e),
        },
    })
}

/// Open the image another process opened as `file` and passed to this
/// one (over a unix socket), as [`open`] opens a path: probed unless the
/// format is given, locked, its backing chain opened read-only. `name`
/// is the image's path where that process found it: messages name it,
/// and a qcow2 image's relative backing names are resolved against its
/// directory (backing files are opened by name, so a process that cannot
/// reach them cannot open such an image from a descriptor).
pub fn open_file(
    file: std::fs::File,
    name: &Path,
    options: &OpenOptions,
) -> Result<Arc<dyn DiskImage>> {
    let mut chain = Chain::empty(name);
    let opened = file::HostFile::from_file(file, options.read_only, options.direct)
        .and_then(|file| open_host_file(file, name, options, &mut chain));
    if opened.is_ok() {
        chain.warn_probed_backing();
    }
    opened.map_err(|e| match e {
        e @ (Error::BackingLoop { .. } | Error::BackingTooDeep { .. }) => e,
        e => Error::Open {
            path: name.to_owned(),
            source: Box::new(e),
        },
    })
}

/// How a path names an iSCSI LUN instead of a file.
pub const ISCSI_SCHEME: &str = "iscsi://";

/// Whether `path` is an `iscsi://` URL rather than a file.
pub fn is_iscsi(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with(ISCSI_SCHEME))
}

/// How a path names a file on an NFS export instead of a host file.
pub const NFS_SCHEME: &str = "nfs://";

/// Whether `path` is an `nfs://` URL rather than a file.
pub fn is_nfs(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with(NFS_SCHEME))
}

/// Whether `path` names a network disk (`iscsi://` or `nfs://`), which
/// is no host path: never made absolute, never stat'ed, never locked.
pub fn is_network(path: &Path) -> bool {
    is_iscsi(path) || is_nfs(path)
}

/// The network disk drivers this build has, by name (`iscsi`, `nfs`).
pub const NETWORK_DRIVERS: &[&str] = &[
    #[cfg(feature = "iscsi")]
    "iscsi",
    #[cfg(feature = "nfs")]
    "nfs",
];

/// Loads the library behind network disk driver `name` (one of
/// [`NETWORK_DRIVERS`]) now, so that disks of that kind can still be
/// opened after the process confined itself. Opening such a disk loads it
/// too; this is for disks that come later (the API adds them).
pub fn load_network_driver(name: &str) -> Result<()> {
    match name {
        #[cfg(feature = "iscsi")]
        "iscsi" => iscsi::load().map_err(|e| Error::Refused(e.to_string())),
        #[cfg(feature = "nfs")]
        "nfs" => nfs::load().map_err(|e| Error::Refused(e.to_string())),
        other => Err(Error::Refused(format!(
            "this build of vireo has no '{}' disk driver (it has: {})",
            other.escape_debug(),
            NETWORK_DRIVERS.join(", ")
        ))),
    }
}

/// Open the NFS file `url` names: raw, or qcow2 when `options.format`
/// says so (with its backing chain on the same export); no host lock.
/// With no format given, a file that starts as a qcow2 image is refused
/// rather than used as raw: a network disk's format is never probed.
#[cfg(feature = "nfs")]
fn open_nfs(url: &str, options: &OpenOptions) -> Result<Arc<dyn DiskImage>> {
    if options.format != Some(ImageFormat::Qcow2) {
        return Ok(Arc::new(nfs_file::NfsDisk::open(
            url,
            options.read_only,
            options.format.is_none(),
        )?));
    }
    let path = Path::new(url);
    let mut chain = Chain::empty(path);
    let opened = nfs_file::open_in_chain(url, options, &mut chain);
    opened.map_err(|e| match e {
        e @ (Error::BackingLoop { .. } | Error::BackingTooDeep { .. }) => e,
        e => Error::Open {
            path: path.to_owned(),
            source: Box::new(e),
        },
    })
}

#[cfg(not(feature = "nfs"))]
fn open_nfs(_url: &str, _options: &OpenOptions) -> Result<Arc<dyn DiskImage>> {
    Err(Error::Refused(
        "nfs:// disks are not supported by this build of vireo (built without the nfs feature)"
            .into(),
    ))
}

/// Open the LUN `url` names: always raw (no format is probed on it, and
/// no host lock is taken: the target decides who shares it).
fn open_iscsi(url: &str, options: &OpenOptions) -> Result<Arc<dyn DiskImage>> {
    open_iscsi_with_secret(url, options, None)
}

/// As `open_iscsi`, with the CHAP secret given apart from the URL.
#[cfg(feature = "iscsi")]
fn open_iscsi_with_secret(
    url: &str,
    options: &OpenOptions,
    secret: Option<&str>,
) -> Result<Arc<dyn DiskImage>> {
    if options.format.is_some_and(|f| f != ImageFormat::Raw) {
        return Err(Error::Refused(
            "an iSCSI LUN is used as a raw disk; format must be raw".into(),
        ));
    }
    Ok(Arc::new(iscsi_lun::IscsiDisk::open_with_secret(
        url,
        options.read_only,
        None,
        secret,
    )?))
}

#[cfg(not(feature = "iscsi"))]
fn open_iscsi_with_secret(
    _url: &str,
    _options: &OpenOptions,
    _secret: Option<&str>,
) -> Result<Arc<dyn DiskImage>> {
    Err(Error::Refused(
        "iscsi:// disks are not supported by this build of vireo (built without the iscsi feature)"
            .into(),
    ))
}

/// Open one image of `chain`: the top one when the chain is empty, a
/// backing file otherwise. Nothing of a file is read, and it is not
/// locked, before it is known not to close a loop and to pass the policy.
pub(crate) fn open_inner(
    path: &Path,
    options: &OpenOptions,
    chain: &mut Chain,
) -> Result<Arc<dyn DiskImage>> {
    chain.check_depth()?;
    let file = file::HostFile::open_unlocked(path, options.read_only, options.direct)?;
    open_host_file(file, path, options, chain)
}

/// [`open_inner`] once the file is open.
fn open_host_file(
    file: file::HostFile,
    path: &Path,
    options: &OpenOptions,
    chain: &mut Chain,
) -> Result<Arc<dyn DiskImage>> {
    let mut file = file;
    let backing = chain.len() > 0;
    if options.unsafe_cache && !backing {
        file.set_unsafe_cache();
    }
    chain.enter(path, &file)?;
    if backing {
        options.backing.admit(path, &file)?;
    }
    file.lock_retrying(path)?;
    let (format, probed) = match options.format {
        Some(f) => (f, false),
        None => (probe_file(&file, path)?, true),
    };
    match format {
        ImageFormat::Raw => {
            let raw = RawDisk::from_host_file(file)?;
            Ok(Arc::new(if probed { raw.guard_header() } else { raw }))
        }
        ImageFormat::Qcow2 => Ok(Arc::new(qcow2::Qcow2Disk::from_file(
            file, path, options, chain,
        )?)),
    }
}

/// The format of the image at `path`, from its first sector: qcow2 by its
/// magic, raw when no format's header is there. An error when it holds a
/// header of a format Vireo cannot open, or a qcow2 header with a damaged
/// magic (neither may be mistaken for raw). The file must be a regular file
/// or a block device.
pub fn probe(path: &Path) -> Result<ImageFormat> {
    let file = file::HostFile::open_unlocked(path, true, false)?;
    probe_file(&file, path)
}

fn probe_file(file: &file::HostFile, path: &Path) -> Result<ImageFormat> {
    let mut sector = [0u8; probe::PROBE_LEN];
    let n = file.read_prefix(&mut sector)?;
    probe::format_of(&sector[..n.min(sector.len())], path)
}
