//! Disk images behind one interface.
//!
//! A [`DiskImage`] is a guest disk: byte-addressed reads and writes, flush,
//! discard, write-zeroes, size and resize. Raw files and qcow2 images both
//! implement it; virtio-blk and `vireo img` use nothing else. This crate
//! knows nothing about virtio or guests: buffers arrive as [`IoBuf`]s,
//! which may point into guest memory but are only ever used as raw memory.

mod iobuf;

pub use iobuf::{IoBuf, IoBufMut};

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
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

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
}
