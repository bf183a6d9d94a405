//! The NETLINK_ROUTE socket and request/answer exchange: every request
//! asks for an acknowledgement or is a dump; every read is bounded in
//! size, count and time, so a silent or babbling kernel cannot hang or
//! exhaust the caller.

use super::msg::{self, Msg};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long one exchange (including a whole dump) may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Receive buffer: the kernel sizes dump datagrams to at most 32 KiB.
const RECV_BUF: usize = 64 * 1024;
/// Most messages one dump may return before it is abandoned.
const MAX_DUMP_MESSAGES: usize = 100_000;

pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

/// What the caller wants back from one request.
#[derive(Clone, Copy, PartialEq)]
pub enum Want {
    /// Only the acknowledgement.
    Ack,
    /// Every message until NLMSG_DONE.
    Dump,
    /// The single answer to a get request.
    One,
}

/// The size of a small C struct as socket calls take it.
fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "no complete answer from the kernel within {} s",
            TIMEOUT.as_secs()
        ),
    )
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed netlink answer: {what}"),
    )
}

impl Socket {
    pub fn open() -> io::Result<Socket> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tv = libc::timeval {
            tv_sec: TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            // SAFETY: `tv` is a valid timeval of the length passed.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&raw const tv).cast(),
                    socklen::<libc::timeval>(),
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: an all-zero sockaddr_nl is valid; fields are set below.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = 16; // AF_NETLINK
                           // SAFETY: `sa` is a valid sockaddr_nl of the length passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sa).cast(),
                socklen::<libc::sockaddr_nl>(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Wait up to `left` for a datagram; false on timeout.
    fn readable(&self, left: std::time::Duration) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        loop {
            // SAFETY: one valid pollfd, count 1.
            let r = unsafe { libc::poll(&raw mut p, 1, ms) };
            if r >= 0 {
                return Ok(r > 0);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Send `m` and collect what `want` asks for: the payloads (after
    /// the netlink header) of the answer's data messages. A kernel error
    /// comes back as the matching `io::Error` (errno).
    pub fn exchange(&mut self, m: Msg, want: Want) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = m.finish(seq);
        // SAFETY: `bytes` is valid for its length; the kernel is the
        // destination because the socket is bound to AF_NETLINK and an
        // unconnected netlink send with no address goes to pid 0.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                timed_out()
            } else {
                e
            });
        }
        let deadline = Instant::now() + TIMEOUT;
        let mut out = Vec::new();
        loop {
            // The deadline covers the whole answer, not each datagram: a
            // dump that trickles on without NLMSG_DONE still ends.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.readable(left)? {
                return Err(timed_out());
            }
            // MSG_TRUNC makes recv report the datagram's real length, so
            // one too large for the buffer is detected, not misparsed.
            // SAFETY: the buffer is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Err(timed_out()),
                    _ => return Err(e),
                }
            }
            let n = usize::try_from(n).unwrap_or(0);
            if n > self.buf.len() {
                return Err(malformed("datagram larger than 64 KiB"));
            }
            let msgs = msg::split(&self.buf[..n]).ok_or_else(|| malformed("bad message length"))?;
            for r in msgs {
                // Answers to an earlier request that timed out are stale.
                if r.seq != seq {
                    continue;
                }
                match i32::from(r.ty) {
                    libc::NLMSG_ERROR => {
                        let code = r
                            .payload
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map(i32::from_ne_bytes)
                            .ok_or_else(|| malformed("short error message"))?;
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(code.saturating_neg()));
                        }
                        // An acknowledgement: only Ack requests end here.
                        if want != Want::Dump {
                            return Ok(out);
                        }
                    }
                    libc::NLMSG_DONE => {
                        if want == Want::Dump {
                            return Ok(out);
                        }
                    }
                    libc::NLMSG_NOOP => {}
                    _ => {
                        if out.len() >= MAX_DUMP_MESSAGES {
                            return Err(malformed("more than 100000 messages in one answer"));
                        }
                        out.push(r.payload.to_vec());
                        if want == Want::One {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }
}
