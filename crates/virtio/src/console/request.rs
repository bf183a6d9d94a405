//! Turning console chains into bytes: the one place the console parses
//! and bounds what the guest put in its rings.

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use crate::device::GuestMemory;
use crate::queue::Chain;

/// Most bytes taken from, or given to, one chain; a driver with more to
/// say uses more chains.
pub const MAX_CHAIN_LEN: usize = 64 * 1024;

/// Why a chain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The chain was cut short: it loops, runs longer than the queue,
    /// links outside its table, or a descriptor could not be read (the
    /// chain walk stops there silently; a last descriptor still linking
    /// onwards gives it away).
    #[error("the descriptor chain loops, is too long or cannot be read")]
    BrokenChain,
    /// A device-writable descriptor in a transmit chain.
    #[error("the chain has a device-writable descriptor where a readable one belongs")]
    WritableDescriptor,
    /// A device-readable descriptor in a receive chain.
    #[error("the chain has a device-readable descriptor where a writable one belongs")]
    ReadableDescriptor,
    /// A buffer lies (partly) outside guest memory.
    #[error("a buffer lies outside guest memory")]
    BadBuffer,
    /// More than [`MAX_CHAIN_LEN`] bytes.
    #[error("the chain is longer than {MAX_CHAIN_LEN} bytes")]
    TooLong,
    /// No bytes at all.
    #[error("the chain is empty")]
    Empty,
}

/// Check that `addr`/`len` lies in guest memory.
fn check(mem: &GuestMemory, addr: GuestAddress, len: usize) -> Result<(), RequestError> {
    if addr.checked_add(len as u64).is_none() || !mem.check_range(addr, len) {
        return Err(RequestError::BadBuffer);
    }
    Ok(())
}

/// The bytes of a transmit chain (readable descriptors only), into `out`
/// (cleared first, so one buffer serves many chains).
pub fn output_bytes(chain: Chain<'_>, out: &mut Vec<u8>) -> Result<(), RequestError> {
    let mem = chain.memory();
    out.clear();
    let mut cut_short = false;
    for desc in chain.clone() {
        cut_short = desc.has_next();
        if desc.is_write_only() {
            return Err(RequestError::WritableDescriptor);
        }
        let len = usize::try_from(desc.len()).map_err(|_| RequestError::TooLong)?;
        if out.len() + len > MAX_CHAIN_LEN {
            return Err(RequestError::TooLong);
        }
        check(mem, desc.addr(), len)?;
        let start = out.len();
        out.resize(start + len, 0);
        mem.read_slice(&mut out[start..], desc.addr())
            .map_err(|_| RequestError::BadBuffer)?;
    }
    if cut_short {
        return Err(RequestError::BrokenChain);
    }
    if out.is_empty() {
        return Err(RequestError::Empty);
    }
    Ok(())
}

/// A receive chain: writable ranges, checked.
#[derive(Debug)]
pub struct InputBuffer {
    /// The chain's head, to return it as used.
    pub head: u16,
    ranges: Vec<(GuestAddress, usize)>,
    capacity: usize,
}

impl InputBuffer {
    /// Parse a receive chain: writable descriptors only, at least a byte;
    /// room past [`MAX_CHAIN_LEN`] is not used.
    pub fn parse(chain: Chain<'_>) -> Result<Self, RequestError> {
        let mem = chain.memory();
        let head = chain.head_index();
        let mut ranges = Vec::new();
        let mut capacity = 0usize;
        let mut cut_short = false;
        for desc in chain.clone() {
            cut_short = desc.has_next();
            if !desc.is_write_only() {
                return Err(RequestError::ReadableDescriptor);
            }
            let len = usize::try_from(desc.len())
                .map_err(|_| RequestError::TooLong)?
                .min(MAX_CHAIN_LEN - capacity);
            if len == 0 {
                continue;
            }
            check(mem, desc.addr(), len)?;
            ranges.push((desc.addr(), len));
            capacity += len;
        }
        if cut_short {
            return Err(RequestError::BrokenChain);
        }
        if capacity == 0 {
            return Err(RequestError::Empty);
        }
        Ok(Self {
            head,
            ranges,
            capacity,
        })
    }

    /// Bytes the buffer holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Copy `data` (at most [`InputBuffer::capacity`] bytes) into the
    /// buffer; returns the bytes written.
    pub fn fill(&self, mem: &GuestMemory, mut data: &[u8]) -> Result<usize, RequestError> {
        let mut written = 0;
        for (addr, len) in &self.ranges {
            if data.is_empty() {
                break;
            }
            let n = data.len().min(*len);
            mem.write_slice(&data[..n], *addr)
                .map_err(|_| RequestError::BadBuffer)?;
            written += n;
            data = &data[n..];
        }
        Ok(written)
    }
}
