//! `console`: the domain's serial console on this terminal, raw, until
//! `Ctrl-]` (as virsh) or the domain stops. Also works with a pipe on
//! stdin (scripts and tests): its end stops input, output keeps coming.

use std::io::{self, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use clap::Args;
use devices::RawTerminal;
use manager::client::Client;

use super::{name_of, print_out, Failure, Output};

/// virsh's escape character, Ctrl-].
const ESCAPE: u8 = 0x1d;

/// `console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// Take the console from another client attached to it.
    #[arg(long)]
    pub force: bool,
}

/// `console DOMAIN`.
pub fn console(c: &mut Client, a: &ConsoleArgs) -> Result<Output, Failure> {
    let name = name_of(c, &a.domain)?;
    attach(c, &name, &a.domain, a.force)
}

/// Attach to `dom`'s console (`name` for the greeting) until detached.
pub fn attach(c: &mut Client, name: &str, dom: &str, force: bool) -> Result<Output, Failure> {
    let mut con = c.console(dom, force)?;
    print_out(&format!(
        "Connected to domain '{name}'\nEscape character is ^] (Ctrl + ])\n"
    ));
    let stdin = io::stdin();
    let raw = RawTerminal::enter(stdin.as_fd())
        .map_err(|e| Failure(format!("cannot put the terminal in raw mode: {e}")))?;
    let result = pump(&mut con, stdin.as_fd());
    // The terminal is put back before anything else is printed.
    drop(raw);
    result?;
    Ok(Output::default())
}

/// Copy stdin to the console and the console to stdout until Ctrl-] or
/// the console's end.
fn pump(con: &mut manager::client::Console, stdin: BorrowedFd<'_>) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    let pending = con.take_pending();
    let out_err = |e: io::Error| Failure(format!("writing the console to stdout: {e}"));
    stdout
        .write_all(&pending)
        .and_then(|()| stdout.flush())
        .map_err(out_err)?;
    let mut stdin_open = true;
    let mut buf = vec![0u8; 16384];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: con.read_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { stdin.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of two pollfds; both descriptors
        // stay open while borrowed (a negative fd is ignored by poll).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Failure(format!("waiting on the console: {e}")));
        }
        if fds[0].revents != 0 {
            let n = con
                .read(&mut buf)
                .map_err(|e| Failure(format!("reading the console: {e}")))?;
            if n == 0 {
                // The daemon closed it: the domain stopped.
                return Ok(());
            }
            stdout
                .write_all(&buf[..n])
                .and_then(|()| stdout.flush())
                .map_err(out_err)?;
        }
        if stdin_open && fds[1].revents != 0 {
            // SAFETY: reading into a live buffer of the given length from
            // a descriptor that stays open (stdin).
            let n = unsafe { libc::read(stdin.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Failure(format!("reading stdin: {e}")));
            }
            let n = usize::try_from(n).unwrap_or(0);
            if n == 0 {
                stdin_open = false;
                continue;
            }
            let data = &buf[..n];
            let (keys, detach) = match data.iter().position(|&b| b == ESCAPE) {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            if !keys.is_empty() {
                con.write_all(keys)
                    .map_err(|e| Failure(format!("writing to the console: {e}")))?;
            }
            if detach {
                return Ok(());
            }
        }
    }
}
