//! `console`: the domain's serial console on this terminal, raw, until
//! `Ctrl-]` (as virsh) or the domain stops. Also works with a pipe on
//! stdin (scripts and tests): its end stops input, output keeps coming.

use std::io::{self, Write as _};
use std::os::fd::{AsFd, BorrowedFd};

use clap::Args;
use devices::RawTerminal;
use manager::client::Client;

use super::{name_of, print_out, Failure, Output};
use crate::proxy::{self, FarEnd, StdinEof};

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

impl FarEnd for manager::client::Console {
    fn read_fd(&self) -> BorrowedFd<'_> {
        manager::client::Console::read_fd(self)
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        manager::client::Console::read(self, buf)
    }
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        manager::client::Console::write_all(self, data)
    }
}

/// Copy stdin to the console and the console to stdout until Ctrl-] or
/// the console's end.
fn pump(con: &mut manager::client::Console, stdin: BorrowedFd<'_>) -> Result<(), Failure> {
    let pending = con.take_pending();
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(&pending)
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure(format!("console: writing stdout: {e}")))?;
    drop(stdout);
    proxy::pump(con, stdin, Some(ESCAPE), StdinEof::StopsInput)
        .map_err(|e| Failure(format!("console: {e}")))?;
    Ok(())
}
