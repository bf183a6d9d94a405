//! The host side of a virtio-console port (`--console`): the same words
//! as `--serial`, with the same meaning. `file:` truncates (once per
//! process, so a guest reboot continues the file), `unix:` listens
//! (through the serial backend's socket code, so a late client gets the
//! output it missed; the socket lasts the whole run, across reboots),
//! `unix-connect:` connects to a listener.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use devices::serial_backend::{open_output_file, SerialBackend, SocketFile};
use devices::SharedOutput;
use vmm_sys_util::eventfd::EventFd;

use crate::config::ConsoleConfig;
use crate::error::{Error, Result};

/// A console backend opened ahead of the first boot ([`hold_consoles`]).
enum Held {
    /// A `file:` backend's file, truncated when it was opened.
    File(File),
    /// A `unix-connect:` backend's connection.
    Connected(std::os::unix::net::UnixStream),
    /// A `unix:` backend's socket, bound and listening, whose thread
    /// starts with the first boot that uses it.
    Bound(PendingPort),
}

/// The backends [`hold_consoles`] opened, by path.
static HELD: Mutex<BTreeMap<PathBuf, Held>> = Mutex::new(BTreeMap::new());

/// Open now every console backend `consoles` name by path: each boot's
/// device then takes a duplicate of the file or connection, and the first
/// boot starts the listening socket's thread. A VMM that enters a jail
/// calls this before, while the paths are in reach; the threads start
/// after, inside it.
pub fn hold_consoles(consoles: &[ConsoleConfig]) -> Result<()> {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    for console in consoles {
        match console {
            ConsoleConfig::Stdout => {}
            ConsoleConfig::File(path) => {
                let file = open_output_file(path, first_open(path))
                    .map_err(open_err("console file", path))?;
                held.insert(path.clone(), Held::File(file));
            }
            ConsoleConfig::UnixConnect(path) => {
                let stream = std::os::unix::net::UnixStream::connect(path)
                    .map_err(open_err("console socket", path))?;
                held.insert(path.clone(), Held::Connected(stream));
            }
            ConsoleConfig::Unix(path) => {
                let port = bind_port(path)?;
                held.insert(path.clone(), Held::Bound(port));
            }
        }
    }
    Ok(())
}

/// A duplicate of the file or connection [`hold_consoles`] opened for
/// `path`, if it did.
fn held_handle(path: &Path) -> Option<io::Result<OwnedFd>> {
    let held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    match held.get(path)? {
        Held::File(f) => Some(f.try_clone().map(OwnedFd::from)),
        Held::Connected(s) => Some(s.try_clone().map(OwnedFd::from)),
        Held::Bound(_) => None,
    }
}

/// Open a console port's backend.
pub(crate) fn create_console(console: &ConsoleConfig) -> Result<virtio::console::Console> {
    let (output, input): (Box<dyn Write + Send>, _) = match console {
        ConsoleConfig::Stdout => (Box::new(io::stdout()), None),
        ConsoleConfig::File(path) => {
            let file = match held_handle(path) {
                Some(fd) => fd.map(File::from).map_err(open_err("console file", path))?,
                None => open_output_file(path, first_open(path))
                    .map_err(open_err("console file", path))?,
            };
            (Box::new(file), None)
        }
        ConsoleConfig::Unix(path) => {
            let port = listening_port(path)?;
            let input = port
                .input
                .try_clone()
                .map_err(|e| Error::Host("console pipe", e))?;
            let handle = PortHandle {
                output: port.output.clone(),
                _port: port,
            };
            (Box::new(handle), Some(input))
        }
        ConsoleConfig::UnixConnect(path) => {
            let stream = match held_handle(path) {
                Some(fd) => fd
                    .map(std::os::unix::net::UnixStream::from)
                    .map_err(open_err("console socket", path))?,
                None => std::os::unix::net::UnixStream::connect(path)
                    .map_err(open_err("console socket", path))?,
            };
            let input = stream
                .try_clone()
                .map_err(open_err("console socket", path))?;
            (Box::new(stream), Some(OwnedFd::from(input)))
        }
    };
    Ok(virtio::console::Console::new(output, input))
}

/// Whether this process has not opened `path` as a console file before.
/// The device is created again on every boot, but a file is truncated
/// only when `vireo` starts (as the serial file, opened once): a guest
/// that reboots under `--reboot` continues its log.
fn first_open(path: &Path) -> bool {
    static OPENED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    // The path as configured: every boot of a VM has the same one.
    OPENED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path.to_path_buf())
}

fn open_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Open { what, path, source }
}

/// A listening `unix:` port: the serial backend's socket, whose input
/// thread accepts clients and moves their input into a pipe the console
/// device reads (the device takes one descriptor for its whole life, while
/// clients come and go).
struct ListeningPort {
    output: SharedOutput,
    /// The pipe's read end; each boot's device reads a duplicate.
    input: OwnedFd,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    /// Removes the socket file when the port goes.
    _socket: Option<SocketFile>,
}

/// The listening ports of this process by path. The console device is
/// made again on every boot; its socket is not, so a guest reboot under
/// `--reboot` does not cut the client off (as the serial socket, opened
/// once, does not). [`close_console_sockets`] lets them go.
static PORTS: Mutex<BTreeMap<PathBuf, Arc<ListeningPort>>> = Mutex::new(BTreeMap::new());

fn listening_port(path: &Path) -> Result<Arc<ListeningPort>> {
    let mut ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(port) = ports.get(path) {
        return Ok(port.clone());
    }
    let pending = match HELD.lock().unwrap_or_else(|e| e.into_inner()).remove(path) {
        Some(Held::Bound(pending)) => pending,
        _ => bind_port(path)?,
    };
    let port = Arc::new(start_port(pending)?);
    ports.insert(path.to_path_buf(), port.clone());
    Ok(port)
}

/// Close the `--console unix:` sockets (each goes when the last device
/// using it does) and remove their files: call when the VMM is done with
/// its VMs.
pub fn close_console_sockets() {
    PORTS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    HELD.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// What one boot's console device writes to.
struct PortHandle {
    output: SharedOutput,
    _port: Arc<ListeningPort>,
}

/// A `unix:` port's socket, bound and listening, before its thread runs.
struct PendingPort {
    opened: devices::serial_backend::OpenedBackend,
}

fn bind_port(path: &Path) -> Result<PendingPort> {
    // Only the stdout backend uses the quit event (for Ctrl-A x).
    let unused_quit = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Host("eventfd", e))?;
    let opened = SerialBackend::Unix(path.to_path_buf())
        .open(&unused_quit)
        .map_err(|e| {
            Error::InvalidConfig(format!(
                "--console unix:{}: {}",
                path.display(),
                crate::error_chain(&e)
            ))
        })?;
    Ok(PendingPort { opened })
}

fn start_port(pending: PendingPort) -> Result<ListeningPort> {
    let host = |what| move |e| Error::Host(what, e);
    let mut opened = pending.opened;
    let (read_end, write_end) = pipe().map_err(host("pipe"))?;
    let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(host("eventfd"))?;
    let thread = match opened.input.take() {
        Some(input) => {
            let write_end = File::from(write_end);
            let thread = devices::spawn_input_thread(
                input,
                stop.try_clone().map_err(host("eventfd"))?,
                move |bytes| write_some(&write_end, bytes),
            )
            .map_err(host("console input thread"))?;
            Some(thread)
        }
        None => None,
    };
    Ok(ListeningPort {
        output: opened.output,
        input: read_end,
        stop,
        thread,
        _socket: opened.socket_file.take(),
    })
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, a live 2-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody
    // else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Write what the pipe takes now; the input thread offers the rest again,
/// so a guest that does not read holds the client back instead of losing
/// its input.
fn write_some(pipe: &File, bytes: &[u8]) -> usize {
    // SAFETY: `pipe` is an open descriptor; `bytes` a live slice.
    let n = unsafe { libc::write(pipe.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    usize::try_from(n).unwrap_or(0)
}

impl Write for PortHandle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ListeningPort {
    fn drop(&mut self) {
        if let Err(e) = self.stop.write(1) {
            tracing::warn!("console: cannot stop the socket thread: {e}");
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_file_is_truncated_once_per_process_then_continued() {
        let path = std::env::temp_dir().join(format!("vireo-console-{}", std::process::id()));
        std::fs::write(&path, "from an earlier run\n").unwrap();
        let config = ConsoleConfig::File(path.clone());
        // The file is opened as each boot's device is made.
        drop(create_console(&config).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        std::fs::write(&path, "first boot\n").unwrap();
        drop(create_console(&config).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first boot\n");
        assert!(!first_open(&path));
        std::fs::remove_file(&path).unwrap();
    }
}
