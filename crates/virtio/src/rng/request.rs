//! Filling one entropy request: every device-writable descriptor of the
//! chain gets random bytes, up to a per-request cap so a guest cannot make
//! one request take unbounded time.

use vm_memory::{Address, Bytes};

use crate::queue::Chain;

/// Most bytes served per request; a driver wanting more asks again.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// A descriptor the device must write is device-readable.
    #[error("the chain has a device-readable descriptor")]
    ReadableDescriptor,
    /// A buffer lies outside guest memory.
    #[error("a buffer lies outside guest memory")]
    BadBuffer,
    /// getrandom failed.
    #[error("getrandom: {0}")]
    Host(String),
}

/// Fill the chain's buffers, adding the bytes written to `written`
/// (those written before an error too).
pub fn fill(chain: Chain<'_>, written: &mut u32) -> Result<(), RequestError> {
    let mem = chain.memory();
    let mut budget = MAX_REQUEST_BYTES;
    let mut buf = [0u8; 4096];
    for desc in chain.clone() {
        if !desc.is_write_only() {
            return Err(RequestError::ReadableDescriptor);
        }
        let mut addr = desc.addr();
        let mut left = (desc.len() as usize).min(budget);
        while left > 0 {
            let n = left.min(buf.len());
            getrandom(&mut buf[..n])?;
            mem.write_slice(&buf[..n], addr)
                .map_err(|_| RequestError::BadBuffer)?;
            addr = addr.checked_add(n as u64).ok_or(RequestError::BadBuffer)?;
            left -= n;
            budget -= n;
            *written += u32::try_from(n).unwrap_or(0);
        }
        if budget == 0 {
            break;
        }
    }
    Ok(())
}

fn getrandom(buf: &mut [u8]) -> Result<(), RequestError> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, a live mutable
        // slice; getrandom writes at most that many bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RequestError::Host(e.to_string()));
        }
        done += usize::try_from(n).unwrap_or(0);
    }
    Ok(())
}
