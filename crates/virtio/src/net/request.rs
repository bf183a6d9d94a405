//! Turning guest descriptor chains into network buffers: the one place
//! net parses and bounds what the guest put in its rings, and the one
//! place guest memory ranges are handed to readv/writev on the TAP.
//!
//! A transmit chain becomes a [`TxFrame`] (device-readable ranges: the
//! virtio-net header, then the frame); a receive chain an [`RxBuffer`]
//! (device-writable ranges); a control chain a [`CtrlRequest`]. Every
//! range is checked to lie inside guest memory before any I/O.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use virtio_bindings::virtio_net::{VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use crate::device::GuestMemory;
use crate::queue::Chain;

/// Bytes of `virtio_net_hdr_v1` in front of every frame (VERSION_1 is
/// always negotiated, so the header always has `num_buffers`).
pub const NET_HDR_LEN: usize = netvirt::VNET_HDR_LEN;

/// Offset of `num_buffers` inside the header.
const NUM_BUFFERS_OFFSET: usize = 10;

/// Largest Ethernet frame handled: 64 KiB of payload (a whole GSO
/// super-frame) plus an Ethernet header with a VLAN tag.
pub const MAX_FRAME_LEN: usize = 65_536 + 18;

/// Largest header + frame the device moves in either direction.
pub const MAX_PACKET_LEN: usize = NET_HDR_LEN + MAX_FRAME_LEN;

/// Smallest transmit chain: a header and an Ethernet header.
const MIN_TX_LEN: usize = NET_HDR_LEN + 14;

/// Most memory ranges handed to one readv/writev (the kernel's IOV_MAX).
pub const MAX_SEGMENTS: usize = 1024;

/// Readable bytes of a control command kept (class, command, data): the
/// commands served are a few bytes; anything longer is not read.
const MAX_CTRL_LEN: usize = 64;

/// Why a chain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The chain was cut short: it loops, runs longer than the queue,
    /// links outside its table, or a descriptor could not be read (the
    /// chain walk stops there silently; a last descriptor still linking
    /// onwards gives it away).
    #[error("the descriptor chain loops, is too long or cannot be read")]
    BrokenChain,
    /// A device-writable descriptor where only readable ones belong.
    #[error("the chain has a device-writable descriptor where a readable one belongs")]
    WritableDescriptor,
    /// A device-readable descriptor where only writable ones belong.
    #[error("the chain has a device-readable descriptor where a writable one belongs")]
    ReadableDescriptor,
    /// A buffer lies (partly) outside guest memory.
    #[error("a buffer lies outside guest memory")]
    BadBuffer,
    /// The chain holds more than a packet's worth of bytes.
    #[error("the chain is longer than {MAX_PACKET_LEN} bytes")]
    TooLong,
    /// The chain is too short to hold a header (and, to send, a frame).
    #[error("the chain is too short ({0} bytes)")]
    TooShort(usize),
    /// The chain has more ranges than one system call can take.
    #[error("the chain has more than {MAX_SEGMENTS} memory ranges")]
    TooManySegments,
    /// A control chain has no writable status byte.
    #[error("the control chain has no status byte")]
    NoStatus,
}

/// A range of guest memory, checked to lie inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    addr: GuestAddress,
    len: usize,
}

/// The ranges of one chain, in order.
#[derive(Debug, Default)]
struct Segments {
    list: Vec<Segment>,
    total: usize,
}

impl Segments {
    /// Add the descriptor range `addr`/`len` after checking it.
    fn push(
        &mut self,
        mem: &GuestMemory,
        addr: GuestAddress,
        len: u32,
    ) -> Result<(), RequestError> {
        let len = usize::try_from(len).map_err(|_| RequestError::TooLong)?;
        if len == 0 {
            return Ok(());
        }
        if addr.checked_add(len as u64).is_none() || !mem.check_range(addr, len) {
            return Err(RequestError::BadBuffer);
        }
        if self.list.len() == MAX_SEGMENTS {
            return Err(RequestError::TooManySegments);
        }
        self.total = self.total.checked_add(len).ok_or(RequestError::TooLong)?;
        self.list.push(Segment { addr, len });
        Ok(())
    }

    /// Write `bytes` at byte `offset` of the chain's ranges.
    fn write_at(&self, mem: &GuestMemory, mut offset: usize, mut bytes: &[u8]) -> bool {
        for seg in &self.list {
            if bytes.is_empty() {
                break;
            }
            if offset >= seg.len {
                offset -= seg.len;
                continue;
            }
            let n = (seg.len - offset).min(bytes.len());
            let Some(addr) = seg.addr.checked_add(offset as u64) else {
                return false;
            };
            if mem.write_slice(&bytes[..n], addr).is_err() {
                return false;
            }
            bytes = &bytes[n..];
            offset = 0;
        }
        bytes.is_empty()
    }
}

/// One frame the guest wants sent: header and frame, ready for writev.
#[derive(Debug)]
pub struct TxFrame {
    segments: Segments,
}

impl TxFrame {
    /// Parse a transmit chain: readable descriptors only, a header and
    /// an Ethernet header at least, at most [`MAX_PACKET_LEN`] bytes.
    pub fn parse(chain: Chain<'_>) -> Result<Self, RequestError> {
        let mem = chain.memory();
        let mut segments = Segments::default();
        let mut cut_short = false;
        for desc in chain.clone() {
            cut_short = desc.has_next();
            if desc.is_write_only() {
                return Err(RequestError::WritableDescriptor);
            }
            segments.push(mem, desc.addr(), desc.len())?;
            if segments.total > MAX_PACKET_LEN {
                return Err(RequestError::TooLong);
            }
        }
        if cut_short {
            return Err(RequestError::BrokenChain);
        }
        if segments.total < MIN_TX_LEN {
            return Err(RequestError::TooShort(segments.total));
        }
        Ok(Self { segments })
    }

    /// Header and frame bytes.
    pub fn packet_len(&self) -> usize {
        self.segments.total
    }

    /// Write the frame to the TAP in one writev (a TAP takes one frame
    /// per write). Returns the bytes written.
    pub fn write_to(&self, mem: &GuestMemory, tap: BorrowedFd<'_>) -> io::Result<usize> {
        let mut guards = Vec::with_capacity(self.segments.list.len());
        let mut iovs = Vec::with_capacity(self.segments.list.len());
        for seg in &self.segments.list {
            for slice in mem.get_slices(seg.addr, seg.len) {
                let slice = slice.map_err(|e| io::Error::other(e.to_string()))?;
                let guard = slice.ptr_guard();
                iovs.push(libc::iovec {
                    iov_base: guard.as_ptr().cast_mut().cast(),
                    iov_len: guard.len(),
                });
                guards.push(guard);
            }
        }
        let count = libc::c_int::try_from(iovs.len())
            .ok()
            .filter(|n| usize::try_from(*n).is_ok_and(|n| n <= MAX_SEGMENTS))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        loop {
            // SAFETY: each iovec describes a range of guest memory checked
            // to lie in a mapped region and kept mapped by its guard in
            // `guards` for the call; writev only reads those ranges.
            let n = unsafe { libc::writev(tap.as_raw_fd(), iovs.as_ptr(), count) };
            if n >= 0 {
                return Ok(usize::try_from(n).unwrap_or(0));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// One receive buffer the guest offered: writable ranges.
#[derive(Debug)]
pub struct RxBuffer {
    /// The chain's head, to return it as used.
    pub head: u16,
    segments: Segments,
}

impl RxBuffer {
    /// Parse a receive chain: writable descriptors only, room for the
    /// header at least.
    pub fn parse(chain: Chain<'_>) -> Result<Self, RequestError> {
        let mem = chain.memory();
        let head = chain.head_index();
        let mut segments = Segments::default();
        let mut cut_short = false;
        for desc in chain.clone() {
            cut_short = desc.has_next();
            if !desc.is_write_only() {
                return Err(RequestError::ReadableDescriptor);
            }
            segments.push(mem, desc.addr(), desc.len())?;
        }
        if cut_short {
            return Err(RequestError::BrokenChain);
        }
        if segments.total < NET_HDR_LEN {
            return Err(RequestError::TooShort(segments.total));
        }
        Ok(Self { head, segments })
    }

    /// Bytes the buffer holds.
    pub fn capacity(&self) -> usize {
        self.segments.total
    }

    /// Memory ranges the buffer has.
    pub fn segment_count(&self) -> usize {
        self.segments.list.len()
    }

    /// Set the header's `num_buffers` (the buffer must hold the header,
    /// which [`RxBuffer::parse`] checked).
    pub fn set_num_buffers(&self, mem: &GuestMemory, count: u16) -> bool {
        self.segments
            .write_at(mem, NUM_BUFFERS_OFFSET, &count.to_le_bytes())
    }
}

/// Read one frame from the TAP into `buffers`, in order, in one readv
/// (the TAP hands over one frame per read; the part that does not fit is
/// lost, so callers offer room for the largest frame they expect).
/// Returns the bytes read; `WouldBlock` when the TAP has nothing.
pub fn read_frame<'a>(
    mem: &GuestMemory,
    tap: BorrowedFd<'_>,
    buffers: impl Iterator<Item = &'a RxBuffer>,
) -> io::Result<usize> {
    let mut guards = Vec::new();
    let mut iovs = Vec::new();
    'outer: for buf in buffers {
        for seg in &buf.segments.list {
            for slice in mem.get_slices(seg.addr, seg.len) {
                if iovs.len() == MAX_SEGMENTS {
                    break 'outer;
                }
                let slice = slice.map_err(|e| io::Error::other(e.to_string()))?;
                let guard = slice.ptr_guard_mut();
                iovs.push(libc::iovec {
                    iov_base: guard.as_ptr().cast(),
                    iov_len: guard.len(),
                });
                guards.push(guard);
            }
        }
    }
    let count = libc::c_int::try_from(iovs.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    loop {
        // SAFETY: each iovec describes a range of guest memory checked to
        // lie in a mapped region and kept mapped by its guard in `guards`
        // for the call; readv writes only within those ranges, which are
        // guest buffers the driver handed to the device to fill.
        let n = unsafe { libc::readv(tap.as_raw_fd(), iovs.as_ptr(), count) };
        if n >= 0 {
            return Ok(usize::try_from(n).unwrap_or(0));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A control-queue command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtrlCommand {
    /// VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET: use this many queue pairs.
    SetQueuePairs(u16),
    /// Anything else (answered with VIRTIO_NET_ERR).
    Unsupported {
        /// Command class.
        class: u8,
        /// Command within the class.
        command: u8,
    },
}

/// A parsed control request: the command and where its status goes.
#[derive(Debug)]
pub struct CtrlRequest {
    /// What the driver asks.
    pub command: CtrlCommand,
    status: GuestAddress,
}

impl CtrlRequest {
    /// Parse a control chain: readable class, command and data, then a
    /// writable status byte.
    pub fn parse(chain: Chain<'_>) -> Result<Self, RequestError> {
        let mem = chain.memory();
        let mut data = [0u8; MAX_CTRL_LEN];
        let mut got = 0;
        let mut status = None;
        let mut writable = false;
        let mut cut_short = false;
        for desc in chain.clone() {
            cut_short = desc.has_next();
            if desc.is_write_only() {
                writable = true;
                if desc.len() == 0 {
                    continue;
                }
                if !mem.check_range(desc.addr(), 1) {
                    return Err(RequestError::BadBuffer);
                }
                status.get_or_insert(desc.addr());
                continue;
            }
            if writable {
                // Readable data after a writable descriptor (the status,
                // or an empty one before it) is not a control request.
                return Err(RequestError::ReadableDescriptor);
            }
            let want = (MAX_CTRL_LEN - got).min(usize::try_from(desc.len()).unwrap_or(0));
            if want > 0 {
                mem.read_slice(&mut data[got..got + want], desc.addr())
                    .map_err(|_| RequestError::BadBuffer)?;
                got += want;
            }
        }
        if cut_short {
            return Err(RequestError::BrokenChain);
        }
        let status = status.ok_or(RequestError::NoStatus)?;
        if got < 2 {
            return Err(RequestError::TooShort(got));
        }
        let (class, command) = (data[0], data[1]);
        let command = if u32::from(class) == VIRTIO_NET_CTRL_MQ
            && u32::from(command) == VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET
            && got >= 4
        {
            CtrlCommand::SetQueuePairs(u16::from_le_bytes([data[2], data[3]]))
        } else {
            CtrlCommand::Unsupported { class, command }
        };
        Ok(Self { command, status })
    }

    /// Write the status byte; returns whether it landed.
    pub fn complete(&self, mem: &GuestMemory, status: u8) -> bool {
        mem.write_obj(status, self.status).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::net::tests::{make_queue, memory, BUF_BASE, D};

    /// Parse `descs` (linked in order) as a control chain.
    fn parse_ctrl(descs: &[D]) -> Result<CtrlRequest, RequestError> {
        let mem = memory();
        mem.write_slice(&[4, 0, 2, 0], GuestAddress(BUF_BASE))
            .unwrap();
        let (mut active, mut driver) = make_queue(&mem, 0);
        driver.push(descs);
        let chain = crate::queue::pop(&mut active.queue, &mem).unwrap().unwrap();
        CtrlRequest::parse(chain)
    }

    #[test]
    fn control_command_then_status_parses() {
        let req = parse_ctrl(&[D(BUF_BASE, 4, false), D(BUF_BASE + 0x10, 1, true)]).unwrap();
        assert_eq!(req.command, CtrlCommand::SetQueuePairs(2));
    }

    // Found by the net_request fuzz target: an empty writable descriptor
    // in front of the command let readable data follow a writable one.
    #[test]
    fn control_readable_after_empty_writable_is_refused() {
        let descs = [
            D(BUF_BASE + 0x40, 0, true),
            D(BUF_BASE, 4, false),
            D(BUF_BASE + 0x10, 1, true),
        ];
        assert_eq!(
            parse_ctrl(&descs).unwrap_err(),
            RequestError::ReadableDescriptor
        );
    }
}
