//! The host side of the serial console: `--serial
//! stdout|file:PATH|unix:PATH|unix-connect:PATH|pty|off`. `vireo run
//! --console` uses the same `unix:` code, so each word means one thing.
//!
//! [`SerialBackend::open`] gives the output sink the UART (and the debug
//! console) print to, and where there is one, the input source the
//! `serial-input` thread ([`crate::serial_input`]) forwards to the guest.
//! No sink ever blocks the guest: a socket client or pty reader that does
//! not keep up loses output rather than stalling a vCPU.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::serial::SharedOutput;
use crate::serial_input::{EscapeFilter, InputSource, SerialInput};
use crate::terminal::{self, RawTerminal};

/// Where the serial console's bytes go on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialBackend {
    /// Output to stdout, input from stdin (raw mode when it is a terminal,
    /// with QEMU's `Ctrl-A x` to quit and `Ctrl-A Ctrl-A` for a literal
    /// Ctrl-A).
    Stdout,
    /// Output to a file, created or truncated; no input.
    File(PathBuf),
    /// A listening unix socket; the connected client gets output and sends
    /// input.
    Unix(PathBuf),
    /// A unix socket someone else listens on, connected once at start:
    /// the peer gets output and sends input.
    UnixConnect(PathBuf),
    /// A new pseudo-terminal; its slave path is reported after opening.
    Pty,
    /// Output discarded, no input.
    Off,
}

/// Errors parsing or opening a serial backend.
#[derive(Debug, thiserror::Error)]
pub enum SerialBackendError {
    /// The text names no backend.
    #[error("unknown serial backend '{0}' (expected stdout, file:PATH, unix:PATH, unix-connect:PATH, pty or off)")]
    Unknown(String),
    /// `file:` or `unix:` without a path.
    #[error("serial backend '{0}' needs a path, as in '{0}/path/to/file'")]
    MissingPath(String),
    /// A socket path longer than a unix socket address holds.
    #[error("{0}")]
    SocketPath(String),
    /// The output file could not be created.
    #[error("--serial file:{}: cannot open the output file", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Something other than a socket already exists at the socket path.
    #[error("refusing to replace {0}: it exists and is not a socket")]
    NotASocket(PathBuf),
    /// A live socket is at the path.
    #[error("{0} is in use: something listens on it")]
    InUse(PathBuf),
    /// The socket could not be created.
    #[error("cannot listen on unix socket {path}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket to connect to is not there or refused.
    #[error("cannot connect to unix socket {path}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No pseudo-terminal could be set up.
    #[error("cannot open a pseudo-terminal")]
    Pty(#[source] io::Error),
    /// Stdin or the terminal could not be set up.
    #[error("cannot set up the console on stdin")]
    Stdin(#[source] io::Error),
}

impl FromStr for SerialBackend {
    type Err = SerialBackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let path = |prefix: &str, rest: &str| {
            if rest.is_empty() {
                Err(SerialBackendError::MissingPath(prefix.to_string()))
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        match s {
            "stdout" => Ok(Self::Stdout),
            "pty" => Ok(Self::Pty),
            "off" => Ok(Self::Off),
            _ => {
                if let Some(rest) = s.strip_prefix("file:") {
                    path("file:", rest).map(Self::File)
                } else if let Some(rest) = s.strip_prefix("unix-connect:") {
                    let path = path("unix-connect:", rest)?;
                    check_socket_path(&path).map_err(SerialBackendError::SocketPath)?;
                    Ok(Self::UnixConnect(path))
                } else if let Some(rest) = s.strip_prefix("unix:") {
                    let path = path("unix:", rest)?;
                    check_socket_path(&path).map_err(SerialBackendError::SocketPath)?;
                    Ok(Self::Unix(path))
                } else {
                    Err(SerialBackendError::Unknown(s.to_string()))
                }
            }
        }
    }
}

impl fmt::Display for SerialBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::UnixConnect(p) => write!(f, "unix-connect:{}", p.display()),
            Self::Pty => f.write_str("pty"),
            Self::Off => f.write_str("off"),
        }
    }
}

/// An opened backend: what the VMM keeps for the life of the VM.
#[derive(Debug)]
pub struct OpenedBackend {
    /// The sink for the UART and the debug console.
    pub output: SharedOutput,
    /// Host input for the guest, if the backend has any; hand it to
    /// [`crate::serial_input::spawn_serial_input`]. For `unix` that thread
    /// also accepts the clients, so output reaches nobody until it runs.
    pub input: Option<SerialInput>,
    /// For `pty`: the slave device to report ("serial: /dev/pts/N").
    pub pty_path: Option<PathBuf>,
    /// For `stdout` on a terminal: the raw-mode guard. Call
    /// [`RawTerminal::restore`] on every exit path (dropping it also
    /// restores).
    pub terminal: Option<RawTerminal>,
    /// For `unix`: removes the socket file when dropped.
    pub socket_file: Option<SocketFile>,
}

impl SerialBackend {
    /// Open the backend. `quit` is signalled when the user types `Ctrl-A x`
    /// on a raw terminal (the `stdout` backend); other backends ignore it.
    pub fn open(&self, quit: &EventFd) -> Result<OpenedBackend, SerialBackendError> {
        let mut opened = OpenedBackend {
            output: SharedOutput::discard(),
            input: None,
            pty_path: None,
            terminal: None,
            socket_file: None,
        };
        match self {
            Self::Stdout => {
                opened.output = SharedOutput::new(io::stdout());
                let stdin = io::stdin();
                let fd = stdin
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(SerialBackendError::Stdin)?;
                let terminal =
                    RawTerminal::enter(stdin.as_fd()).map_err(SerialBackendError::Stdin)?;
                let escape = match terminal {
                    Some(_) => Some(EscapeFilter::new(
                        quit.try_clone().map_err(SerialBackendError::Stdin)?,
                    )),
                    None => None,
                };
                opened.terminal = terminal;
                // Nothing ever comes from /dev/null (what services and
                // benchmarks give a VMM): no thread to watch it.
                if !is_dev_null(&fd) {
                    opened.input = Some(SerialInput::new(InputSource::Stdin {
                        fd: File::from(fd),
                        escape,
                    }));
                }
            }
            Self::File(path) => {
                let file =
                    open_output_file(path, true).map_err(|source| SerialBackendError::File {
                        path: path.clone(),
                        source,
                    })?;
                opened.output = SharedOutput::new(file);
            }
            Self::Unix(path) => {
                let listener = listen(path)?;
                let slot = ClientSlot::new().map_err(|source| SerialBackendError::Listen {
                    path: path.clone(),
                    source,
                })?;
                let client = Arc::new(Mutex::new(slot));
                opened.output = SharedOutput::new(UnixClientOutput {
                    client: client.clone(),
                });
                opened.input = Some(SerialInput::new(InputSource::Unix { listener, client }));
                opened.socket_file = Some(SocketFile { path: path.clone() });
            }
            Self::UnixConnect(path) => {
                let connect_error = |source| SerialBackendError::Connect {
                    path: path.clone(),
                    source,
                };
                let stream = UnixStream::connect(path).map_err(connect_error)?;
                stream.set_nonblocking(true).map_err(connect_error)?;
                let mut slot = ClientSlot::new().map_err(connect_error)?;
                slot.connect(stream);
                let client = Arc::new(Mutex::new(slot));
                opened.output = SharedOutput::new(UnixClientOutput {
                    client: client.clone(),
                });
                opened.input = Some(SerialInput::new(InputSource::Connected { client }));
            }
            Self::Pty => {
                let pty = open_pty().map_err(SerialBackendError::Pty)?;
                let master = pty.master.try_clone().map_err(SerialBackendError::Pty)?;
                opened.output = SharedOutput::new(PtyOutput {
                    master: pty.master,
                    _slave: pty.slave,
                });
                opened.input = Some(SerialInput::new(InputSource::Pty {
                    master: File::from(master),
                }));
                opened.pty_path = Some(pty.path);
            }
            Self::Off => {}
        }
        Ok(opened)
    }
}

/// Longest path a unix socket can have: `sun_path` is 108 bytes with the
/// terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Refuse a unix socket path that does not fit `sun_path`: bound through a
/// hard link (as the API socket is) it would exist but no client could
/// ever connect to it.
pub fn check_socket_path(path: &Path) -> Result<(), String> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(format!(
            "the socket path is {len} bytes; a unix socket path can have at most {MAX_SOCKET_PATH}"
        ));
    }
    Ok(())
}

/// What kind of file `t` is, in words, for errors ("a FIFO").
pub fn file_kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a file"
    }
}

/// Open `path` as an output file, created if missing, and truncated if
/// `truncate` (as QEMU's `file:` chardev does) or else appended to. Only a
/// regular file is accepted: the type is checked before opening (opening
/// a FIFO for writing blocks until a reader comes) and again on the
/// descriptor, which is opened non-blocking and without truncation, so
/// nothing that is not a regular file is ever truncated or waited on.
pub fn open_output_file(path: &Path, truncate: bool) -> io::Result<File> {
    let refuse = |t: std::fs::FileType| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is {}, not a regular file", path.display(), file_kind(t)),
        )
    };
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(refuse(meta.file_type())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = OpenOptions::new()
        .append(!truncate)
        .write(true)
        .create(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refuse(meta.file_type()));
    }
    if truncate {
        file.set_len(0)?;
    }
    Ok(file)
}

/// Bind a listening socket at `path`, replacing a stale socket file but
/// nothing else: a socket something listens on (another VM's console, this
/// VM's API socket) is refused, not stolen.
fn listen(path: &Path) -> Result<UnixListener, SerialBackendError> {
    let listen_error = |source| SerialBackendError::Listen {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if is_listening(path) {
                return Err(SerialBackendError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(listen_error)?;
        }
        Ok(_) => return Err(SerialBackendError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_error(e)),
    }
    let listener = UnixListener::bind(path).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    Ok(listener)
}

/// Whether a socket in this network namespace listens at `path`, from
/// `/proc/net/unix` rather than by connecting: a probe connection would be
/// taken by the listener as its new console client, cutting off the real
/// one.
fn is_listening(path: &Path) -> bool {
    /// `__SO_ACCEPTCON` in the Flags column: a listening socket.
    const ACCEPTING: u32 = 1 << 16;
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let absolute = std::fs::canonicalize(path).ok();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let listening = fields
            .get(3)
            .and_then(|f| u32::from_str_radix(f, 16).ok())
            .is_some_and(|f| f & ACCEPTING != 0);
        let Some(bound) = fields.get(7..).filter(|f| !f.is_empty()) else {
            return false;
        };
        let bound = PathBuf::from(bound.join(" "));
        listening && (bound == path || absolute.as_deref() == Some(bound.as_path()))
    })
}

/// The socket file of a `unix:` backend; removed (if it is still a socket)
/// when this is dropped.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let is_socket = std::fs::symlink_metadata(&self.path)
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false);
        if is_socket {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::debug!("cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

/// The client slot of a `unix:` backend, filled by the input thread.
pub(crate) type UnixClient = Arc<Mutex<ClientSlot>>;

/// Most output kept for the next client while none is connected (the
/// newest bytes win), so a client that connects after the guest started
/// still sees how it booted.
pub const REPLAY_CAPACITY: usize = 64 * 1024;

/// The connected client of a `unix:` backend, if any, and the output
/// produced while there was none.
///
/// Output for a connected client goes through `pending`: a unix stream
/// socket counts every send against its buffer at a kernel buffer's size,
/// not the bytes' (about 280 one-byte sends fill it), and a guest writes
/// its UART a byte at a time, so a reader that falls a moment behind
/// would see output dropped after a few lines. What the socket does not
/// take now waits here (as one send when it does), up to
/// [`REPLAY_CAPACITY`]; the input thread sends it when the socket has
/// room, and at the end before the VM goes.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    stream: Option<UnixStream>,
    unseen: VecDeque<u8>,
    pending: VecDeque<u8>,
    /// Wakes the input thread when output starts to wait, so it polls for
    /// the socket's room; `woken` until it has.
    wake: EventFd,
    woken: bool,
}

impl ClientSlot {
    /// An empty slot.
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            stream: None,
            unseen: VecDeque::new(),
            pending: VecDeque::new(),
            wake: EventFd::new(libc::EFD_NONBLOCK)?,
            woken: false,
        })
    }

    /// What the input thread polls to learn that output waits.
    pub(crate) fn wake_fd(&self) -> std::os::fd::RawFd {
        self.wake.as_raw_fd()
    }

    /// The input thread saw the wake-up: it polls for room from now on.
    pub(crate) fn woke(&mut self) {
        let _ = self.wake.read();
        self.woken = false;
    }

    /// The connected client.
    pub(crate) fn stream(&self) -> Option<&UnixStream> {
        self.stream.as_ref()
    }

    /// Make `stream` (non-blocking) the client, replacing any other, and
    /// give it the output it missed.
    pub(crate) fn connect(&mut self, stream: UnixStream) {
        self.pending = std::mem::take(&mut self.unseen);
        self.stream = Some(stream);
        self.flush();
    }

    /// Forget the client (it hung up).
    pub(crate) fn disconnect(&mut self) {
        self.stream = None;
        self.pending.clear();
    }

    /// Whether output waits for the client's socket to take it.
    pub(crate) fn wants_to_send(&self) -> bool {
        self.stream.is_some() && !self.pending.is_empty()
    }

    /// Send what waits, as far as the socket takes it now. A client that
    /// is gone is forgotten.
    pub(crate) fn flush(&mut self) {
        let Some(stream) = &self.stream else {
            return;
        };
        while !self.pending.is_empty() {
            let (front, _) = self.pending.as_slices();
            match send_now(stream, front) {
                Ok(0) => return,
                Ok(n) => {
                    self.pending.drain(..n.min(self.pending.len()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // EPIPE, ECONNRESET: the input thread sees the hang-up.
                    self.pending.clear();
                    return;
                }
            }
        }
    }

    /// Send what waits, waiting for the socket up to `deadline` (the VM
    /// is ending: its last output must not be left behind).
    pub(crate) fn flush_until(&mut self, deadline: std::time::Instant) {
        loop {
            self.flush();
            let Some(stream) = &self.stream else {
                return;
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self.pending.is_empty() || left.is_zero() {
                return;
            }
            let mut pfd = libc::pollfd {
                fd: stream.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis())
                .unwrap_or(libc::c_int::MAX)
                .max(1);
            // SAFETY: one valid pollfd, for the call only.
            if unsafe { libc::poll(&mut pfd, 1, ms) } < 0
                && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted
            {
                return;
            }
        }
    }

    fn write(&mut self, buf: &[u8]) {
        let queue = if self.stream.is_some() {
            &mut self.pending
        } else {
            &mut self.unseen
        };
        // The newest bytes win when a reader is far behind (or absent).
        let keep = buf.len().min(REPLAY_CAPACITY);
        let tail = buf.get(buf.len() - keep..).unwrap_or_default();
        let excess = (queue.len() + keep).saturating_sub(REPLAY_CAPACITY);
        queue.drain(..excess);
        queue.extend(tail);
        self.flush();
        if self.wants_to_send() && !self.woken {
            self.woken = self.wake.write(1).is_ok();
        }
    }
}

/// One non-blocking send: the bytes the socket took.
fn send_now(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the fd belongs to `stream`, borrowed for this call; `buf`
        // is a live slice. MSG_NOSIGNAL: a vanished client must not raise
        // SIGPIPE.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        match usize::try_from(n) {
            Ok(n) => return Ok(n),
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Output to the connected socket client; kept for the next client while
/// there is none. Never blocks: what the client's socket cannot take now
/// waits in the slot (see [`ClientSlot`]).
struct UnixClientOutput {
    client: UnixClient,
}

impl Write for UnixClientOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Write as much of `buf` as `write_fn` (a raw write/send returning the
/// syscall result) takes without blocking; drop the rest.
fn write_nonblocking(buf: &[u8], mut write_fn: impl FnMut(&[u8]) -> isize) {
    let mut rest = buf;
    while !rest.is_empty() {
        let n = write_fn(rest);
        match usize::try_from(n) {
            Ok(0) => break,
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            // EAGAIN (nobody reading), EPIPE, EIO (no slave): drop it.
            Err(_) => break,
        }
    }
}

/// Output to a pty master (non-blocking). Holds the slave open so the
/// master never sees a hang-up between clients; the slave is in raw mode,
/// so nothing written here echoes back as input. Output written while no
/// client is attached waits in the pty buffer (the next client sees it)
/// until the buffer is full; after that it is dropped.
struct PtyOutput {
    master: OwnedFd,
    _slave: OwnedFd,
}

impl Write for PtyOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fd = self.master.as_raw_fd();
        write_nonblocking(buf, |chunk| {
            // SAFETY: `fd` is owned by `self` and open; `chunk` is a live
            // slice of `chunk.len()` bytes.
            unsafe { libc::write(fd, chunk.as_ptr().cast(), chunk.len()) }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A pseudo-terminal pair.
#[derive(Debug)]
pub(crate) struct Pty {
    /// Non-blocking, close-on-exec master.
    pub master: OwnedFd,
    /// The slave, open and in raw mode.
    pub slave: OwnedFd,
    /// The slave's path, e.g. `/dev/pts/3`.
    pub path: PathBuf,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Open a pty with posix_openpt/grantpt/unlockpt/ptsname_r.
pub(crate) fn open_pty() -> io::Result<Pty> {
    // SAFETY: posix_openpt takes flags only and returns a new descriptor.
    let fd = check(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just opened and nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: grantpt/unlockpt act on the open master descriptor only.
    check(unsafe { libc::grantpt(master.as_raw_fd()) })?;
    // SAFETY: as above.
    check(unsafe { libc::unlockpt(master.as_raw_fd()) })?;

    let mut name = [0u8; 128];
    // SAFETY: `name` is a live buffer of `name.len()` bytes that ptsname_r
    // fills with a NUL-terminated path (or fails with ERANGE).
    let ret = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr().cast(), name.len()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    let name = std::ffi::CStr::from_bytes_until_nul(&name)
        .map_err(|_| io::Error::other("pty name is not terminated"))?;
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()));

    let slave: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)?
        .into();
    let mut termios = terminal::get_termios(slave.as_fd())?;
    // SAFETY: `termios` is a live, initialised local cfmakeraw edits.
    unsafe { libc::cfmakeraw(&mut termios) };
    terminal::set_termios(slave.as_fd(), &termios)?;

    // SAFETY: F_GETFL/F_SETFL on an open descriptor we own.
    let flags = check(unsafe { libc::fcntl(master.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;

    Ok(Pty {
        master,
        slave,
        path,
    })
}

/// Whether `fd` is the null device (character device 1:3), which reads
/// as an immediate end of input.
fn is_dev_null(fd: &impl AsFd) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole stat into `st` when it returns 0.
    if unsafe { libc::fstat(fd.as_fd().as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat returned 0.
    let st = unsafe { st.assume_init() };
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3)
}

#[cfg(test)]
mod tests;
