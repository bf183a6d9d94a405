//! Disk images behind one interface.
//!
//! A [`DiskImage`] is a guest disk: byte-addressed reads and writes, flush,
//! discard, write-zeroes, size and resize. Raw files and qcow2 images both
//! implement it; virtio-blk and `vireo img` use nothing else. This crate
//! knows nothing about virtio or guests: buffers arrive as [`IoBuf`]s,
//! which may point into guest memory but are only ever used as raw memory.
//!
//! [`open`] opens an image of any supported format (probing it when the
//! format is not given) and locks it against a second writer;
//! [`AsyncDisk`] runs requests on any image without blocking the caller.

mod async_io;
mod file;
mod iobuf;
pub mod qcow2;
mod raw;
mod replace;
mod uring;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use async_io::{AsyncDisk, Completion, Engine, Request, DEFAULT_WORKERS};
pub use iobuf::{IoBuf, IoBufMut};
pub use raw::RawDisk;
pub use replace::{FileId, Replacement};
pub use uring::DirectFile;

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
    /// The format; probed from the file's first bytes when `None`.
    pub format: Option<ImageFormat>,
}

/// Open the image at `path`: probe its format unless given, lock it
/// (exclusively when writable, shared otherwise) and open its backing
/// chain read-only.
pub fn open(path: &Path, options: &OpenOptions) -> Result<Arc<dyn DiskImage>> {
    open_inner(path, options, 0).map_err(|e| match e {
        e @ Error::Open { .. } => e,
        e => Error::Open {
            path: path.to_owned(),
            source: Box::new(e),
        },
    })
}

/// Deepest backing chain followed before giving up (a loop or a bomb).
const MAX_BACKING_DEPTH: u32 = 32;

pub(crate) fn open_inner(
    path: &Path,
    options: &OpenOptions,
    depth: u32,
) -> Result<Arc<dyn DiskImage>> {
    if depth > MAX_BACKING_DEPTH {
        return Err(Error::InvalidImage(format!(
            "backing chain deeper than {MAX_BACKING_DEPTH} images"
        )));
    }
    let file = file::HostFile::open(path, options.read_only, options.direct)?;
    let format = match options.format {
        Some(f) => f,
        None => probe_file(&file)?,
    };
    match format {
        ImageFormat::Raw => Ok(Arc::new(RawDisk::from_host_file(file)?)),
        ImageFormat::Qcow2 => Ok(Arc::new(qcow2::Qcow2Disk::from_host_file(
            file, path, options, depth,
        )?)),
    }
}

/// The format of the image at `path`, from its magic (raw when none matches).
pub fn probe(path: &Path) -> Result<ImageFormat> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", e))?;
    let mut magic = [0u8; 4];
    let n = std::os::unix::fs::FileExt::read_at(&file, &mut magic, 0)
        .map_err(|e| Error::io("read", e))?;
    Ok(format_from_magic(&magic[..n]))
}

fn probe_file(file: &file::HostFile) -> Result<ImageFormat> {
    let mut magic = [0u8; 4];
    let n = file.read_prefix(&mut magic)?;
    Ok(format_from_magic(&magic[..n]))
}

fn format_from_magic(magic: &[u8]) -> ImageFormat {
    if magic == qcow2::MAGIC.to_be_bytes() {
        ImageFormat::Qcow2
    } else {
        ImageFormat::Raw
    }
}
