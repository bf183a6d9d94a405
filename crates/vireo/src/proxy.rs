//! `vireo proxy`: joins stdin/stdout to the daemon's unix socket, byte for
//! byte, until either side closes. `ssh HOST vireo proxy` is how a remote
//! client reaches a daemon (`vireo+ssh://` URIs), as libvirt's
//! virt-ssh-helper does; the proxy knows nothing of HTTP.

use std::io::{self, Read as _, Write as _};
use std::os::fd::AsRawFd;
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
    let sock = match UnixStream::connect(&args.socket) {
        Ok(s) => s,
        Err(e) => {
            let cause = e.to_string();
            let cause = cause.split(" (os error").next().unwrap_or(&cause);
            eprintln!(
                "vireo: cannot connect to the vireo daemon at {}: {cause}",
                args.socket.display()
            );
            return ExitCode::from(1);
        }
    };
    match copy_both_ways(sock) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vireo: proxy: {e}");
            ExitCode::from(1)
        }
    }
}

fn copy_both_ways(mut sock: UnixStream) -> io::Result<()> {
    let stdin_fd = io::stdin().as_raw_fd();
    let mut stdout = io::stdout().lock();
    let mut buf = vec![0u8; 65536];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: stdin_fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of two pollfds whose descriptors
        // (stdin, the socket) stay open for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents != 0 {
            let n = match sock.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(());
            }
            match stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()) {
                Ok(()) => {}
                // The client went away.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        if fds[0].revents != 0 {
            // SAFETY: reading into a live buffer of its length from stdin,
            // which stays open. Unbuffered, so poll sees every byte.
            let n = unsafe { libc::read(stdin_fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = usize::try_from(n).unwrap_or(0);
            if n == 0 {
                return Ok(());
            }
            match sock.write_all(&buf[..n]) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return Ok(())
                }
                Err(e) => return Err(e),
            }
        }
    }
}
