//! Turning balloon chains into page numbers, free ranges and statistics:
//! the one place the balloon parses and bounds what the guest put in its
//! rings. Whether a page lies in guest RAM is checked where it is
//! released (`ram.rs`), which knows the regions.

use vm_memory::{Address, Bytes, GuestAddress};

use crate::queue::Chain;

/// Most page numbers taken from one inflate or deflate chain (Linux sends
/// at most 256): bounds the work one chain can ask for.
pub const MAX_PFNS_PER_CHAIN: usize = 4096;

/// Size of one statistic: a little-endian u16 tag and u64 value, packed.
pub const STAT_LEN: usize = 10;

/// Most statistics taken from one buffer. The spec defines 10 tags and
/// Linux sends 16 today; the slack leaves room for newer guests.
pub const MAX_STATS: usize = 64;

/// Why a chain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The chain loops, runs longer than the queue, links outside its
    /// table, or a descriptor could not be read (the walk stops silently;
    /// a last descriptor still linking onwards gives it away).
    #[error("the descriptor chain loops, is too long or cannot be read")]
    BrokenChain,
    /// A device-writable descriptor where the device only reads.
    #[error("the chain has a device-writable descriptor where a readable one belongs")]
    WritableDescriptor,
    /// A buffer lies (partly) outside guest memory.
    #[error("a buffer lies outside guest memory")]
    BadBuffer,
    /// More than the chain's kind allows.
    #[error("the chain holds more than {0} bytes")]
    TooLong(usize),
    /// A length that is not a whole number of entries.
    #[error("{len} bytes is not a whole number of {entry}-byte entries")]
    Misaligned {
        /// The chain's length.
        len: usize,
        /// The entry size.
        entry: usize,
    },
    /// No bytes at all.
    #[error("the chain is empty")]
    Empty,
}

/// The bytes of a chain of device-readable descriptors, at most `max`.
fn readable_bytes(chain: Chain<'_>, max: usize, out: &mut Vec<u8>) -> Result<(), RequestError> {
    let mem = chain.memory();
    out.clear();
    let mut cut_short = false;
    for desc in chain.clone() {
        cut_short = desc.has_next();
        if desc.is_write_only() {
            return Err(RequestError::WritableDescriptor);
        }
        let len = usize::try_from(desc.len()).map_err(|_| RequestError::TooLong(max))?;
        if out.len() + len > max {
            return Err(RequestError::TooLong(max));
        }
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

/// The page frame numbers (4 KiB units, little-endian u32) of an inflate
/// or deflate chain, into `out` (cleared first). `scratch` is reused
/// between chains.
pub fn page_numbers(
    chain: Chain<'_>,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u32>,
) -> Result<(), RequestError> {
    out.clear();
    readable_bytes(chain, MAX_PFNS_PER_CHAIN * 4, scratch)?;
    if !scratch.len().is_multiple_of(4) {
        return Err(RequestError::Misaligned {
            len: scratch.len(),
            entry: 4,
        });
    }
    out.extend(
        scratch
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
    Ok(())
}

/// The (tag, value) pairs of a statistics buffer, in the order sent.
pub fn statistics(
    chain: Chain<'_>,
    scratch: &mut Vec<u8>,
) -> Result<Vec<(u16, u64)>, RequestError> {
    readable_bytes(chain, MAX_STATS * STAT_LEN, scratch)?;
    if !scratch.len().is_multiple_of(STAT_LEN) {
        return Err(RequestError::Misaligned {
            len: scratch.len(),
            entry: STAT_LEN,
        });
    }
    Ok(scratch
        .chunks_exact(STAT_LEN)
        .map(|s| {
            let tag = u16::from_le_bytes([s[0], s[1]]);
            let mut value = [0u8; 8];
            value.copy_from_slice(&s[2..]);
            (tag, u64::from_le_bytes(value))
        })
        .collect())
}

/// The guest-physical ranges of a free page report: each descriptor is a
/// range the guest says is free. Linux posts them device-writable
/// (nothing is written), so either direction is taken. Zero-length
/// descriptors are skipped; ranges that wrap the address space are refused.
pub fn reported_ranges(
    chain: Chain<'_>,
    out: &mut Vec<(GuestAddress, u64)>,
) -> Result<(), RequestError> {
    out.clear();
    let mut cut_short = false;
    for desc in chain.clone() {
        cut_short = desc.has_next();
        let len = u64::from(desc.len());
        if len == 0 {
            continue;
        }
        if desc.addr().checked_add(len).is_none() {
            return Err(RequestError::BadBuffer);
        }
        out.push((desc.addr(), len));
    }
    if cut_short {
        return Err(RequestError::BrokenChain);
    }
    if out.is_empty() {
        return Err(RequestError::Empty);
    }
    Ok(())
}
