//! Raw mode for the terminal the serial console runs on.
//!
//! With `--serial stdout` on a terminal, keys must reach the guest as typed:
//! no line editing, no echo, and Ctrl-C goes to the guest rather than
//! killing the VMM (QEMU's `-serial stdio` settings). [`RawTerminal`] saves
//! the terminal's settings, switches to raw mode, and puts the saved settings
//! back on [`RawTerminal::restore`] or on drop, whichever comes first.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

/// A terminal in raw mode; restores the saved settings when dropped.
#[derive(Debug)]
pub struct RawTerminal {
    fd: OwnedFd,
    /// The settings to restore; `None` once restored.
    saved: Mutex<Option<libc::termios>>,
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: isatty only inspects the descriptor, which `fd` keeps open.
    unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
}

pub(crate) fn get_termios(fd: BorrowedFd<'_>) -> io::Result<libc::termios> {
    // SAFETY: an all-zero termios is a valid value (plain integers and
    // arrays) that tcgetattr overwrites.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the duration of the call and `termios` is a
    // live local tcgetattr writes into.
    if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut termios) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(termios)
}

pub(crate) fn set_termios(fd: BorrowedFd<'_>, termios: &libc::termios) -> io::Result<()> {
    // SAFETY: `fd` is open for the duration of the call; tcsetattr only
    // reads `termios`.
    if unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, termios) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The settings QEMU uses for `-serial stdio`: raw input, 8-bit chars, no
/// echo, no signals from the keyboard; output processing stays on so the
/// host terminal still maps newlines.
fn raw_settings(mut t: libc::termios) -> libc::termios {
    t.c_iflag &= !(libc::IGNBRK
        | libc::BRKINT
        | libc::PARMRK
        | libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IXON);
    t.c_oflag |= libc::OPOST;
    t.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::IEXTEN | libc::ISIG);
    t.c_cflag &= !(libc::CSIZE | libc::PARENB);
    t.c_cflag |= libc::CS8;
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    t
}

impl RawTerminal {
    /// Put the terminal `fd` refers to in raw mode. Returns `Ok(None)` when
    /// `fd` is not a terminal (a pipe or file: nothing to do).
    pub fn enter(fd: BorrowedFd<'_>) -> io::Result<Option<Self>> {
        if !is_terminal(fd) {
            return Ok(None);
        }
        let fd = fd.try_clone_to_owned()?;
        let saved = get_termios(fd.as_fd())?;
        set_termios(fd.as_fd(), &raw_settings(saved))?;
        Ok(Some(Self {
            fd,
            saved: Mutex::new(Some(saved)),
        }))
    }

    /// Put the saved settings back. Calling it again does nothing, so every
    /// exit path of the VMM may call it.
    pub fn restore(&self) -> io::Result<()> {
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(termios) = saved.take() {
            set_termios(self.fd.as_fd(), &termios)?;
        }
        Ok(())
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            tracing::warn!("cannot restore terminal settings: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial_backend::open_pty;

    #[test]
    fn raw_mode_is_entered_and_restored_once() {
        let pty = open_pty().unwrap();
        let slave = pty.slave.as_fd();
        // open_pty leaves the slave raw; start from cooked settings.
        let mut cooked = get_termios(slave).unwrap();
        cooked.c_lflag |= libc::ECHO | libc::ICANON | libc::ISIG;
        cooked.c_iflag |= libc::ICRNL;
        set_termios(slave, &cooked).unwrap();
        let before = get_termios(slave).unwrap();

        let raw = RawTerminal::enter(slave)
            .unwrap()
            .expect("a pty is a terminal");
        let now = get_termios(slave).unwrap();
        assert_eq!(now.c_lflag & (libc::ECHO | libc::ICANON | libc::ISIG), 0);
        assert_eq!(now.c_iflag & libc::ICRNL, 0);

        raw.restore().unwrap();
        let restored = get_termios(slave).unwrap();
        assert_eq!(restored.c_lflag, before.c_lflag);
        assert_eq!(restored.c_iflag, before.c_iflag);

        // A second restore (and the one on drop) must not re-apply stale
        // settings over changes made since.
        let mut changed = restored;
        changed.c_lflag &= !libc::ECHO;
        set_termios(slave, &changed).unwrap();
        raw.restore().unwrap();
        drop(raw);
        assert_eq!(get_termios(slave).unwrap().c_lflag & libc::ECHO, 0);
    }

    #[test]
    fn drop_restores() {
        let pty = open_pty().unwrap();
        let slave = pty.slave.as_fd();
        let mut cooked = get_termios(slave).unwrap();
        cooked.c_lflag |= libc::ECHO | libc::ICANON;
        set_termios(slave, &cooked).unwrap();
        drop(RawTerminal::enter(slave).unwrap());
        assert_ne!(get_termios(slave).unwrap().c_lflag & libc::ICANON, 0);
    }

    #[test]
    fn non_terminals_are_left_alone() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(RawTerminal::enter(file.as_fd()).unwrap().is_none());
    }
}
