//! `vireo proxy`: joins stdin/stdout to the daemon's unix socket, byte for
//! byte, until either side closes. `ssh HOST vireo proxy` is how a remote
//! client reaches a daemon (`vireo+ssh://` URIs), as libvirt's
//! virt-ssh-helper does; the proxy knows nothing of HTTP.
//!
//! [`pump`], the copy loop, also carries `vireo console`'s session.

use std::io::{self, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// `vireo proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The daemon's socket.
    #[arg(long, value_name = "PATH", default_value = manager::api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// Run `vireo proxy`: exit 0 when either side closes, 1 (one line on
/// stderr) when the daemon cannot be reached or the copy fails.
pub fn proxy_command(args: ProxyArgs) -> ExitCode {
    let mut sock = match UnixStream::connect(&args.socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "vireo: cannot connect to the vireo daemon at {}: {}",
                args.socket.display(),
                manager::client::io_cause(&e)
            );
            return ExitCode::from(1);
        }
    };
    let stdin = io::stdin();
    match pump(&mut sock, stdin.as_fd(), None, StdinEof::Ends) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vireo: proxy: {e}");
            ExitCode::from(1)
        }
    }
}

/// What [`pump`] joins to stdin and stdout.
pub trait FarEnd {
    /// The descriptor to poll for bytes from the far end.
    fn read_fd(&self) -> BorrowedFd<'_>;
    /// Bytes from the far end; `Ok(0)` when it closed.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Bytes to the far end.
    fn write_all(&mut self, data: &[u8]) -> io::Result<()>;
}

impl FarEnd for UnixStream {
    fn read_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(self, buf)
    }
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        io::Write::write_all(self, data)
    }
}

/// What the end of stdin means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinEof {
    /// The session is over (the proxy: the client hung up).
    Ends,
    /// Input stops; output keeps coming (a console fed by a pipe).
    StopsInput,
}

/// Why [`pump`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpEnd {
    /// The far end closed (or reset) its side.
    FarClosed,
    /// Stdin ended (with [`StdinEof::Ends`]) or stdout's reader went away.
    LocalClosed,
    /// The escape byte was typed.
    Escaped,
}

/// A failed copy, one line: which direction, and why.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    /// poll(2) failed.
    #[error("waiting for input: {0}")]
    Poll(io::Error),
    /// Reading the far end failed.
    #[error("reading the far end: {0}")]
    ReadFar(io::Error),
    /// Writing the far end failed.
    #[error("writing the far end: {0}")]
    WriteFar(io::Error),
    /// Reading stdin failed.
    #[error("reading stdin: {0}")]
    ReadStdin(io::Error),
    /// Writing stdout failed.
    #[error("writing stdout: {0}")]
    WriteStdout(io::Error),
}

/// A peer that went away: the end of the session rather than an error.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Copy `stdin` to `far` and `far` to stdout until one side closes or,
/// with `escape`, that byte is typed (it and what follows it in the same
/// read are not sent). Memory is one fixed buffer; every wakeup reads
/// (a hangup or error reads as 0 or fails), so poll never spins.
pub fn pump(
    far: &mut impl FarEnd,
    stdin: BorrowedFd<'_>,
    escape: Option<u8>,
    on_eof: StdinEof,
) -> Result<PumpEnd, PumpError> {
    let mut stdout = io::stdout().lock();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 65536];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: far.read_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { stdin.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of two pollfds whose descriptors
        // stay open while borrowed (a negative fd is ignored by poll).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(PumpError::Poll(e));
        }
        if fds[0].revents != 0 {
            let n = match far.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if gone(&e) => 0,
                Err(e) => return Err(PumpError::ReadFar(e)),
            };
            if n == 0 {
                return Ok(PumpEnd::FarClosed);
            }
            match stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()) {
                Ok(()) => {}
                Err(e) if gone(&e) => return Ok(PumpEnd::LocalClosed),
                Err(e) => return Err(PumpError::WriteStdout(e)),
            }
        }
        if stdin_open && fds[1].revents != 0 {
            // SAFETY: reading into a live buffer of its length from stdin,
            // which stays open while borrowed. Unbuffered, so poll sees
            // every byte.
            let n = unsafe { libc::read(stdin.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(PumpError::ReadStdin(e));
            }
            let n = usize::try_from(n).unwrap_or(0);
            if n == 0 {
                match on_eof {
                    StdinEof::Ends => return Ok(PumpEnd::LocalClosed),
                    StdinEof::StopsInput => {
                        stdin_open = false;
                        continue;
                    }
                }
            }
            let data = &buf[..n];
            let (data, escaped) = match escape.and_then(|x| data.iter().position(|&b| b == x)) {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            if !data.is_empty() {
                match far.write_all(data) {
                    Ok(()) => {}
                    Err(e) if gone(&e) => return Ok(PumpEnd::FarClosed),
                    Err(e) => return Err(PumpError::WriteFar(e)),
                }
            }
            if escaped {
                return Ok(PumpEnd::Escaped);
            }
        }
    }
}
