//! Turning a descriptor chain into a typed block request: the one place a
//! guest's block request is parsed and bounded.
//!
//! A chain is a 16-byte header (type, reserved, sector) in device-readable
//! buffers, then the data (device-readable for writes, device-writable for
//! reads), then one device-writable status byte at the very end. Every
//! field is checked against the disk before any I/O happens; buffers are
//! resolved to host memory through vm-memory, so none can lie outside the
//! guest's RAM.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use block::{IoBuf, IoBufMut};

use crate::device::GuestMemory;
use crate::queue::Chain;

/// Bytes per sector, the unit of every offset in the protocol.
pub const SECTOR_SIZE: u64 = 512;
const HEADER_LEN: usize = 16;
/// Bytes of one discard/write-zeroes segment.
const SEGMENT_LEN: usize = 16;
/// Segments per discard or write-zeroes request we accept (announced in
/// the configuration as max_discard_seg / max_write_zeroes_seg).
pub const MAX_SEGMENTS: u32 = 1;
/// Largest data transfer one request may carry; bounds the work a single
/// request can ask for.
pub const MAX_TRANSFER: u64 = 32 << 20;
const WRITE_ZEROES_UNMAP: u32 = 1;

/// What the request asks for.
#[derive(Debug)]
pub enum RequestKind {
    /// Read into `bufs` from `offset`.
    Read {
        /// Byte offset on the disk.
        offset: u64,
        /// Guest buffers, in order.
        bufs: Vec<IoBufMut<'static>>,
    },
    /// Write `bufs` at `offset`.
    Write {
        /// Byte offset on the disk.
        offset: u64,
        /// Guest buffers, in order.
        bufs: Vec<IoBuf<'static>>,
    },
    /// Flush the disk's write cache.
    Flush,
    /// Write the device serial into the guest's buffer at `addr`, at most `len` bytes.
    GetId {
        /// Guest address of the ID buffer.
        addr: GuestAddress,
        /// Its length (at most 20 is written).
        len: u32,
    },
    /// Discard a byte range.
    Discard {
        /// Byte offset.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Zero a byte range.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// The guest allows freeing the space.
        unmap: bool,
    },
}

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    /// What to do.
    pub kind: RequestKind,
    /// Where the status byte goes.
    pub status_addr: GuestAddress,
    /// Bytes the device writes into the chain on success (read data plus status).
    pub used_len: u32,
}

/// Why a chain is not a valid request. `status_addr`, when known, is where
/// the failure can be reported.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The chain has no device-writable last byte for the status.
    #[error("no writable status byte at the end of the chain")]
    NoStatus,
    /// The header is missing or short.
    #[error("the request header is missing or shorter than 16 bytes")]
    ShortHeader,
    /// The request type is one we do not implement.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    /// Buffers point in the wrong direction for the request type.
    #[error("a data buffer has the wrong direction")]
    WrongDirection,
    /// A buffer lies (partly) outside guest memory.
    #[error("a buffer lies outside guest memory")]
    BadBuffer,
    /// Lengths overflow, are not whole sectors, or exceed the limits.
    #[error("bad length: {0}")]
    BadLength(&'static str),
    /// The range reaches past the disk's end.
    #[error("sectors beyond the end of the disk")]
    OutOfRange,
    /// The request needs write access to a read-only disk.
    #[error("the disk is read-only")]
    ReadOnly,
    /// The chain was cut short: it loops, runs longer than the queue,
    /// links outside its table, or a descriptor could not be read.
    #[error("the descriptor chain loops, is too long or cannot be read")]
    BrokenChain,
}

/// A descriptor as we need it.
#[derive(Clone, Copy)]
struct Desc {
    addr: GuestAddress,
    len: u32,
    writable: bool,
}

/// Parse `chain` for a disk of `capacity` bytes. On error, the status
/// address is returned too when the chain has one, so the failure can be
/// reported to the guest.
pub fn parse(
    chain: Chain<'_>,
    capacity: u64,
    read_only: bool,
) -> Result<Request, (RequestError, Option<GuestAddress>)> {
    let mem = chain.memory();
    // The chain iterator stops at the queue size (loops and over-long
    // chains end there), at 4 GiB of total length and at descriptors it
    // cannot read, without saying so: a last descriptor that still links
    // onwards means the chain was cut short, and none of it is trusted.
    let mut cut_short = false;
    let mut body: Vec<Desc> = chain
        .clone()
        .map(|d| {
            cut_short = d.has_next();
            Desc {
                addr: d.addr(),
                len: d.len(),
                writable: d.is_write_only(),
            }
        })
        .collect();
    if cut_short {
        return Err((RequestError::BrokenChain, None));
    }
    // Everything but the status byte: the last descriptor loses one byte.
    let last = body
        .last_mut()
        .filter(|d| d.writable && d.len > 0)
        .ok_or((RequestError::NoStatus, None))?;
    last.len -= 1;
    let status_addr = last
        .addr
        .checked_add(u64::from(last.len))
        .filter(|a| mem.address_in_range(*a))
        .ok_or((RequestError::NoStatus, None))?;
    let fail = |e| (e, Some(status_addr));
    let (header, data) = split_header(mem, &body).map_err(fail)?;
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let sector = u64::from_le_bytes([
        header[8], header[9], header[10], header[11], header[12], header[13], header[14],
        header[15],
    ]);
    let data_len: u64 = data.iter().map(|d| u64::from(d.len)).sum();
    let (kind, used_len) = match kind {
        VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => {
            let write = kind == VIRTIO_BLK_T_OUT;
            if write && read_only {
                return Err(fail(RequestError::ReadOnly));
            }
            if data.iter().any(|d| d.writable == write) {
                return Err(fail(RequestError::WrongDirection));
            }
            let offset = check_range(sector, data_len, capacity).map_err(fail)?;
            if data_len > MAX_TRANSFER {
                return Err(fail(RequestError::BadLength("transfer too large")));
            }
            if write {
                let bufs = resolve(mem, &data, |p, l| {
                    // SAFETY: the range was resolved within a guest memory
                    // region, which stays mapped while the device runs (the
                    // worker holds the memory and drains every request
                    // before it is dropped).
                    unsafe { IoBuf::from_raw(p, l) }
                })
                .map_err(fail)?;
                (RequestKind::Write { offset, bufs }, 1)
            } else {
                let bufs = resolve(mem, &data, |p, l| {
                    // SAFETY: as above; the guest gave these buffers to
                    // the device, and nothing in the VMM references them.
                    unsafe { IoBufMut::from_raw(p, l) }
                })
                .map_err(fail)?;
                let used = u32::try_from(data_len + 1)
                    .map_err(|_| fail(RequestError::BadLength("transfer too large")))?;
                (RequestKind::Read { offset, bufs }, used)
            }
        }
        VIRTIO_BLK_T_FLUSH => (RequestKind::Flush, 1),
        VIRTIO_BLK_T_GET_ID => {
            let d = data
                .first()
                .filter(|d| d.writable)
                .ok_or(fail(RequestError::WrongDirection))?;
            let len = d.len.min(20);
            (RequestKind::GetId { addr: d.addr, len }, len + 1)
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            if read_only {
                return Err(fail(RequestError::ReadOnly));
            }
            let seg = read_segment(mem, &data).map_err(fail)?;
            let (seg_sector, sectors, flags) = seg;
            let len = u64::from(sectors) * SECTOR_SIZE;
            let offset = check_range(seg_sector, len, capacity).map_err(fail)?;
            // The configuration announces MAX_TRANSFER as the largest
            // discard and write-zeroes; a bigger one is the driver's error.
            if len > MAX_TRANSFER {
                return Err(fail(RequestError::BadLength(
                    "more sectors than max_discard_sectors / max_write_zeroes_sectors",
                )));
            }
            if kind == VIRTIO_BLK_T_DISCARD {
                (RequestKind::Discard { offset, len }, 1)
            } else {
                let unmap = flags & WRITE_ZEROES_UNMAP != 0;
                (RequestKind::WriteZeroes { offset, len, unmap }, 1)
            }
        }
        other => return Err(fail(RequestError::Unsupported(other))),
    };
    Ok(Request {
        kind,
        status_addr,
        used_len,
    })
}

/// Read the 16-byte header from the leading readable buffers; return it
/// and the descriptors (or parts) after it.
fn split_header(
    mem: &GuestMemory,
    body: &[Desc],
) -> Result<([u8; HEADER_LEN], Vec<Desc>), RequestError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    let mut rest = Vec::new();
    for d in body {
        if got < HEADER_LEN {
            if d.writable {
                return Err(RequestError::ShortHeader);
            }
            let take = (HEADER_LEN - got).min(d.len as usize);
            mem.read_slice(&mut header[got..got + take], d.addr)
                .map_err(|_| RequestError::BadBuffer)?;
            got += take;
            let take32 = u32::try_from(take).map_err(|_| RequestError::ShortHeader)?;
            if take32 < d.len {
                let addr = d
                    .addr
                    .checked_add(u64::from(take32))
                    .ok_or(RequestError::BadBuffer)?;
                rest.push(Desc {
                    addr,
                    len: d.len - take32,
                    writable: d.writable,
                });
            }
        } else if d.len > 0 {
            rest.push(*d);
        }
    }
    if got < HEADER_LEN {
        return Err(RequestError::ShortHeader);
    }
    Ok((header, rest))
}

/// Byte offset of `sector` if `[sector, sector + len)` is whole sectors on
/// the disk.
fn check_range(sector: u64, len: u64, capacity: u64) -> Result<u64, RequestError> {
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(RequestError::BadLength("not a whole number of sectors"));
    }
    let offset = sector
        .checked_mul(SECTOR_SIZE)
        .ok_or(RequestError::OutOfRange)?;
    let end = offset.checked_add(len).ok_or(RequestError::OutOfRange)?;
    if end > capacity {
        return Err(RequestError::OutOfRange);
    }
    Ok(offset)
}

/// Read the single discard/write-zeroes segment.
fn read_segment(mem: &GuestMemory, data: &[Desc]) -> Result<(u64, u32, u32), RequestError> {
    let total: u64 = data.iter().map(|d| u64::from(d.len)).sum();
    if total != SEGMENT_LEN as u64 * u64::from(MAX_SEGMENTS) {
        return Err(RequestError::BadLength(
            "expected exactly one 16-byte segment",
        ));
    }
    if data.iter().any(|d| d.writable) {
        return Err(RequestError::WrongDirection);
    }
    let mut seg = [0u8; SEGMENT_LEN];
    let mut got = 0;
    for d in data {
        let n = d.len as usize;
        mem.read_slice(&mut seg[got..got + n], d.addr)
            .map_err(|_| RequestError::BadBuffer)?;
        got += n;
    }
    let sector = u64::from_le_bytes([
        seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6], seg[7],
    ]);
    let sectors = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
    let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
    Ok((sector, sectors, flags))
}

/// Resolve descriptors to host memory ranges, splitting where a buffer
/// crosses from one guest memory region into the next.
fn resolve<T>(
    mem: &GuestMemory,
    descs: &[Desc],
    make: impl Fn(*mut u8, usize) -> T,
) -> Result<Vec<T>, RequestError> {
    let mut out = Vec::with_capacity(descs.len());
    for d in descs {
        for slice in mem.get_slices(d.addr, d.len as usize) {
            let slice = slice.map_err(|_| RequestError::BadBuffer)?;
            out.push(make(slice.ptr_guard_mut().as_ptr(), slice.len()));
        }
    }
    Ok(out)
}
