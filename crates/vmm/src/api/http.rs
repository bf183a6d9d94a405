//! The API's HTTP/1.1 server on a unix stream socket.
//!
//! One accept thread, one thread per connection (at most
//! [`ServerLimits::max_connections`]). When every slot is taken, the
//! connection that has sat idle longest between requests is closed to make
//! room (a keep-alive client may be closed between requests at any time;
//! it reconnects), so idle clients can never lock a new one out of the
//! control socket; only when every connection is busy mid-request does a
//! new client get 503. A
//! connection thread parses requests with `httparse`, resolves them with
//! [`routes::resolve`] and calls the
//! [`VmController`] without holding any server lock, so a slow or stuck
//! client holds only its own thread, and a slow action only its own
//! connection. Bodies are Content-Length only; every limit (header size,
//! body size, how long a request may take to arrive) ends in a JSON error
//! and a closed connection, never in a panic.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::message::{parse_head, Fault, Request, Response};
use super::routes::{self, Target, OPENAPI_DOCUMENT};
use super::types::{Action, ApiError, VmController};
use crate::passed_fd::PassedFd;

/// The server's bounds. [`Default`] gives the production values.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Connections served at once; a client beyond this gets 503.
    pub max_connections: usize,
    /// How long the accept thread waits for a connection slot to free
    /// before answering 503 (rides out bursts of short-lived clients).
    pub slot_wait: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// How long a connection must have sat idle before it may be closed
    /// to make room for a new client when every slot is taken (a client
    /// that just connected has not sent its request yet).
    pub reclaim_after: Duration,
    /// How long a request may take to arrive, from its first byte to its
    /// last; a slower client gets 408.
    pub request_timeout: Duration,
    /// How long a response may take to leave.
    pub write_timeout: Duration,
    /// Request line plus headers, in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 16,
            slot_wait: Duration::from_millis(100),
            idle_timeout: Duration::from_secs(60),
            reclaim_after: Duration::from_millis(500),
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_header_bytes: 8 << 10,
            max_body_bytes: 64 << 10,
        }
    }
}

/// How long a connection thread whose client left waits for the next
/// connection before it ends. Reusing threads saves a spawn (tens of
/// microseconds) on every fresh connection, which is what a CLI call is.
const IDLE_WORKER_LINGER: Duration = Duration::from_secs(10);

/// A running API server. Dropping it (or [`ApiServer::shutdown`]) stops
/// accepting, closes every open connection and removes the socket file.
pub struct ApiServer {
    path: PathBuf,
    /// Device and inode of the socket file we created, so shutdown removes
    /// only our own file, never one someone put there since.
    identity: (u64, u64),
    shared: Arc<Shared>,
    wake: EventFd,
    accept: Option<JoinHandle<()>>,
}

/// What the accept thread and connection threads share.
struct Shared {
    stop: AtomicBool,
    /// Open connections (a clone of each stream, to shut them down on
    /// stop or reclaim them when idle); its length is the number of taken
    /// slots.
    conns: Mutex<HashMap<u64, Conn>>,
    /// Signalled when a connection ends.
    slot_freed: Condvar,
    next_id: AtomicU64,
    /// Admitted connections waiting for an idle connection thread.
    handoff: Mutex<Handoff>,
    /// Signalled when a connection is queued in `handoff`, or on stop.
    work: Condvar,
}

/// One open connection, as the accept thread sees it.
struct Conn {
    stream: UnixStream,
    /// Since when it has waited for a request with nothing of one read;
    /// `None` while a request is arriving or being answered.
    idle_since: Option<Instant>,
    /// A whole request was read and its answer is not written yet.
    answering: bool,
}

/// Connections handed from the accept thread to idle connection threads.
#[derive(Default)]
struct Handoff {
    queue: VecDeque<(UnixStream, Slot)>,
    /// Connection threads waiting for work.
    idle: usize,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Conn>> {
        // A panic elsewhere while holding the lock leaves the map intact
        // (insert and remove are atomic); keep serving.
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn handoff(&self) -> MutexGuard<'_, Handoff> {
        self.handoff.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by a connection thread whose client left: wait a while for
    /// another connection. `None`: none came, or the server is stopping.
    fn next_connection(&self) -> Option<(UnixStream, Slot)> {
        let deadline = Instant::now() + IDLE_WORKER_LINGER;
        let mut handoff = self.handoff();
        handoff.idle += 1;
        loop {
            if let Some(work) = handoff.queue.pop_front() {
                handoff.idle -= 1;
                return Some(work);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stop.load(Ordering::SeqCst) {
                handoff.idle -= 1;
                return None;
            }
            handoff = self
                .work
                .wait_timeout(handoff, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A bound and listening API socket that nothing serves yet. Dropped
/// unserved, it removes its socket file.
#[derive(Debug)]
pub struct ApiListener {
    /// Taken by [`ApiServer::serve`].
    listener: Option<UnixListener>,
    path: PathBuf,
    identity: (u64, u64),
}

impl ApiServer {
    /// Serve `controller` on a new unix socket at `path`, with default limits.
    ///
    /// A stale socket at `path` (nobody accepting) is replaced; a live one,
    /// or any other kind of file, is an error.
    pub fn start(path: &Path, controller: Arc<dyn VmController>) -> io::Result<ApiServer> {
        Self::start_with_limits(path, controller, ServerLimits::default())
    }

    /// [`ApiServer::start`] with explicit limits (tests use short timeouts).
    pub fn start_with_limits(
        path: &Path,
        controller: Arc<dyn VmController>,
        limits: ServerLimits,
    ) -> io::Result<ApiServer> {
        Self::serve(Self::bind(path)?, controller, limits)
    }

    /// Bind and listen on `path` (as [`ApiServer::start`] does), without
    /// serving yet: a VMM that enters a jail binds first, where the path
    /// is reachable, and serves after, once it is confined.
    pub fn bind(path: &Path) -> io::Result<ApiListener> {
        let listener = bind_private(path)?;
        let meta = fs::symlink_metadata(path)?;
        listener.set_nonblocking(true)?;
        Ok(ApiListener {
            listener: Some(listener),
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// Serve `controller` on a socket [`ApiServer::bind`] made.
    pub fn serve(
        bound: ApiListener,
        controller: Arc<dyn VmController>,
        limits: ServerLimits,
    ) -> io::Result<ApiServer> {
        let mut bound = bound;
        let listener = bound
            .listener
            .take()
            .ok_or_else(|| io::Error::other("the API socket is already served"))?;
        let identity = bound.identity;
        let path = bound.path.as_path();
        let wake = EventFd::new(libc::EFD_NONBLOCK)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            slot_freed: Condvar::new(),
            next_id: AtomicU64::new(0),
            handoff: Mutex::new(Handoff::default()),
            work: Condvar::new(),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            let wake = wake.try_clone()?;
            confine::spawn(confine::ThreadKind::Api, "vireo-api".into(), move || {
                accept_loop(&listener, &wake, &shared, &controller, &limits)
            })
        };
        let accept = match accept {
            Ok(handle) => handle,
            Err(e) => {
                let _ = fs::remove_file(path);
                return Err(e);
            }
        };
        tracing::info!(path = %path.display(), "API server listening");
        Ok(ApiServer {
            path: path.to_path_buf(),
            identity,
            shared,
            wake,
            accept: Some(accept),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop accepting, close open connections and remove the socket file.
    /// A connection answering a request is closed once its answer is
    /// written, or after [`ANSWER_GRACE`]: the request may be what ended
    /// the VM (a power-off), and its client is owed the answer. Does not
    /// wait for connection threads beyond that: one may be inside the
    /// controller, which may itself be what is shutting the server down.
    pub fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.slot_freed.notify_all();
        if let Err(e) = self.wake.write(1) {
            tracing::warn!("API server: cannot wake the accept thread: {e}");
        }
        if accept.join().is_err() {
            tracing::warn!("API server: the accept thread panicked");
        }
        // Idle connection threads end; connections not yet picked up close.
        let queued = std::mem::take(&mut self.shared.handoff().queue);
        drop(queued);
        self.shared.work.notify_all();
        let deadline = Instant::now() + ANSWER_GRACE;
        let mut conns = self.shared.conns();
        while conns.values().any(|c| c.answering) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("API server: closing with a request still being answered");
                break;
            }
            conns = self
                .shared
                .slot_freed
                .wait_timeout(conns, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(conns);
        for conn in self.shared.conns().values() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.identity {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// How long a shutdown waits for the answers of requests under way.
pub const ANSWER_GRACE: Duration = Duration::from_secs(2);

impl Drop for ApiListener {
    fn drop(&mut self) {
        if self.listener.is_none() {
            return;
        }
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.identity {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Bind a listening socket at `path` that nobody but its owner can ever
/// connect to.
///
/// The socket is bound inside a fresh mode-0700 directory next to `path`,
/// chmod-ed to 0600 there, then hard-linked into place. Until the link
/// exists nobody else can reach it (the directory is private), and when it
/// appears it already has its final mode. Changing the umask instead would
/// be simpler, but the umask is per process and other threads (disk images,
/// console sockets) may be creating files at the same moment. `link(2)`
/// never replaces an existing file, so a file that appears at `path` while
/// we work is not clobbered. The cost: the private path is a few bytes
/// longer than `path`, so a `path` within ~20 bytes of the 107-byte
/// `sun_path` limit fails to bind.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let context = |e: io::Error, what: &str| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    remove_stale_socket(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if path.file_name().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        ));
    }
    static PRIVATE_DIRS: AtomicU64 = AtomicU64::new(0);
    let private = loop {
        let n = PRIVATE_DIRS.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!(".vireo-api.{}.{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => continue,
            Err(e) => return Err(context(e, "cannot create a private directory next to")),
        }
    };
    let tmp = private.join("s");
    let bound = UnixListener::bind(&tmp)
        .and_then(|l| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map(|()| l))
        .and_then(|l| fs::hard_link(&tmp, path).map(|()| l));
    let _ = fs::remove_file(&tmp);
    let _ = fs::remove_dir(&private);
    bound.map_err(|e| context(e, "cannot bind the API socket at"))
}

/// Remove a socket file nobody accepts on; refuse to touch anything else.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not replacing it",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running server", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
                e.kind(),
                format!("cannot remove stale socket {}: {e}", path.display()),
            )),
            _ => Ok(()),
        },
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{} exists and cannot be probed: {e}", path.display()),
        )),
    }
}

fn accept_loop(
    listener: &UnixListener,
    wake: &EventFd,
    shared: &Arc<Shared>,
    controller: &Arc<dyn VmController>,
    limits: &ServerLimits,
) {
    let mut fds = [
        libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    while !shared.stop.load(Ordering::SeqCst) {
        // SAFETY: `fds` is a valid array of two pollfd for the duration of
        // the call, and its length is passed with it.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!("API server: poll failed: {e}");
                return;
            }
            continue;
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => admit(stream, shared, controller, limits),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                // Out of file descriptors and the like: back off instead of
                // spinning on a listener that stays readable.
                tracing::warn!("API server: accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Give a new connection a slot and a thread, or a 503.
fn admit(
    stream: UnixStream,
    shared: &Arc<Shared>,
    controller: &Arc<dyn VmController>,
    limits: &ServerLimits,
) {
    let deadline = Instant::now() + limits.slot_wait;
    let mut conns = shared.conns();
    while conns.len() >= limits.max_connections && !shared.stop.load(Ordering::SeqCst) {
        reclaim_idle(&mut conns, limits.reclaim_after);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            drop(conns);
            tracing::warn!(
                "API server: {} connections open; refusing one",
                limits.max_connections
            );
            let message = format!(
                "too many API connections (at most {})",
                limits.max_connections
            );
            refuse_now(stream, &Response::error(503, &message));
            return;
        }
        conns = shared
            .slot_freed
            .wait_timeout(conns, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    let clone = match stream.try_clone() {
        Ok(clone) => clone,
        Err(e) => {
            drop(conns);
            refuse_now(stream, &Response::error(503, &format!("cannot serve: {e}")));
            return;
        }
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    conns.insert(
        id,
        Conn {
            stream: clone,
            idle_since: None,
            answering: false,
        },
    );
    drop(conns);
    let slot = Slot {
        shared: Arc::clone(shared),
        id,
    };
    // An idle connection thread takes it if there is one not yet promised
    // to an earlier connection; otherwise a new thread.
    let mut handoff = shared.handoff();
    if handoff.idle > handoff.queue.len() {
        handoff.queue.push_back((stream, slot));
        drop(handoff);
        shared.work.notify_one();
        return;
    }
    drop(handoff);
    let first = (stream, slot);
    let shared = Arc::clone(shared);
    let controller = Arc::clone(controller);
    let limits = limits.clone();
    let spawned = confine::spawn(
        confine::ThreadKind::Api,
        "vireo-api-conn".into(),
        move || {
            let mut next = Some(first);
            while let Some((stream, slot)) = next.take() {
                serve_connection(stream, &slot, controller.as_ref(), &limits);
                drop(slot);
                next = shared.next_connection();
            }
        },
    );
    if let Err(e) = spawned {
        // The closure (and with it the slot and the stream) was dropped.
        tracing::warn!("API server: cannot start a connection thread: {e}");
    }
}

/// Close the connection that has been idle longest, if one has been idle
/// for `after`: its thread sees the end of its stream and frees the slot.
/// A connection with a request under way, or with bytes of its next one
/// already sent, is never cut.
fn reclaim_idle(conns: &mut HashMap<u64, Conn>, after: Duration) {
    let now = Instant::now();
    let oldest = conns
        .values_mut()
        .filter(|c| {
            c.idle_since
                .is_some_and(|t| now.duration_since(t) >= after && !has_input(&c.stream))
        })
        .min_by_key(|c| c.idle_since);
    if let Some(conn) = oldest {
        tracing::info!("API server: every slot taken; closing the longest-idle connection");
        // Not picked again while its thread winds down.
        conn.idle_since = None;
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Whether the client has sent bytes not yet read.
fn has_input(stream: &UnixStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: `byte` is a live one-byte buffer; MSG_PEEK leaves the data
    // in the socket and MSG_DONTWAIT keeps the call from blocking.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n > 0
}

/// Send a short response without ever blocking the accept thread, and
/// close. The response is far smaller than a socket buffer.
fn refuse_now(stream: UnixStream, response: &Response) {
    if stream.set_nonblocking(true).is_ok() {
        let _ = (&stream).write(&response.to_bytes(false, false));
    }
}

/// A connection's claim on a slot; dropping it (however the thread ends)
/// frees the slot.
struct Slot {
    shared: Arc<Shared>,
    id: u64,
}

impl Slot {
    /// The connection waits for its next request (`true`) or has one
    /// arriving or being answered (`false`).
    fn set_idle(&self, idle: bool) {
        if let Some(conn) = self.shared.conns().get_mut(&self.id) {
            conn.idle_since = idle.then(Instant::now);
        }
    }

    /// The connection has a whole request to answer (`true`), or has
    /// written its answer (`false`).
    fn set_answering(&self, answering: bool) {
        if let Some(conn) = self.shared.conns().get_mut(&self.id) {
            conn.answering = answering;
        }
        if !answering {
            // A shutdown may be waiting for this answer.
            self.shared.slot_freed.notify_all();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.conns().remove(&self.id);
        self.shared.slot_freed.notify_one();
    }
}

fn serve_connection(
    mut stream: UnixStream,
    slot: &Slot,
    controller: &dyn VmController,
    limits: &ServerLimits,
) {
    if stream
        .set_write_timeout(Some(limits.write_timeout))
        .is_err()
    {
        return;
    }
    // Bytes read but not yet consumed: a partial request, or the start of
    // the next one when a client pipelines.
    let mut pending = Vec::with_capacity(1024);
    // Descriptors received and not yet given to a request.
    let mut fds = Vec::new();
    loop {
        let request = match read_request(&mut stream, &mut pending, &mut fds, slot, limits) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(Fault(response)) => {
                // Close what came with a refused request before answering.
                fds.clear();
                let _ = stream.write_all(&response.to_bytes(false, false));
                linger(&mut stream);
                return;
            }
        };
        let (keep_alive, http10) = (request.keep_alive, request.http10);
        slot.set_answering(true);
        let response = dispatch(request, controller);
        let written = stream.write_all(&response.to_bytes(keep_alive, http10));
        slot.set_answering(false);
        if written.is_err() || !keep_alive {
            return;
        }
    }
}

/// Before closing on an error, let the client's unread request drain for a
/// moment: closing a unix socket with unread input makes the peer's next
/// read fail with ECONNRESET, which some clients report instead of our
/// answer.
fn linger(stream: &mut UnixStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + Duration::from_millis(200);
    let mut sink = [0u8; 4096];
    let mut drained = 0usize;
    while drained < (1 << 20) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Read one request. `Ok(None)`: the client closed, or sat idle too long,
/// between requests (nothing to answer).
fn read_request(
    stream: &mut UnixStream,
    pending: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
    slot: &Slot,
    limits: &ServerLimits,
) -> Result<Option<Request>, Fault> {
    // The request clock starts with its first byte; until then the
    // connection is idle (and may be reclaimed for a new client).
    let mut started = (!pending.is_empty()).then(Instant::now);
    if started.is_none() {
        slot.set_idle(true);
    }
    let head = loop {
        if !pending.is_empty() {
            if let Some(head) = parse_head(pending, limits)? {
                break head;
            }
        }
        match read_more(stream, pending, fds, started, limits) {
            Ok(true) => {
                if started.is_none() {
                    slot.set_idle(false);
                }
                started.get_or_insert_with(Instant::now);
            }
            Ok(false) => return Ok(None),
            Err(fault) => return Err(fault),
        }
    };
    let started = started.unwrap_or_else(Instant::now);
    let total = head.len + head.content_length;
    if head.expect_continue && pending.len() < total {
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|_| Fault::new(400, "cannot write 100 Continue"))?;
    }
    while pending.len() < total {
        match read_more(stream, pending, fds, Some(started), limits) {
            Ok(true) => {}
            // The client hung up mid-body: nobody to answer.
            Ok(false) => return Ok(None),
            Err(fault) => return Err(fault),
        }
    }
    let body = pending[head.len..total].to_vec();
    pending.drain(..total);
    Ok(Some(Request {
        method: head.method,
        target: head.target,
        keep_alive: head.keep_alive,
        http10: head.http10,
        body,
        // What came while this request arrived is this request's.
        fds: std::mem::take(fds),
    }))
}

/// Read what the client has sent next. `Ok(false)`: it closed, or sat idle
/// with no request begun past the idle timeout.
fn read_more(
    stream: &mut UnixStream,
    pending: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
    started: Option<Instant>,
    limits: &ServerLimits,
) -> Result<bool, Fault> {
    let timeout = match started {
        None => limits.idle_timeout,
        Some(t) => {
            let left = limits.request_timeout.saturating_sub(t.elapsed());
            if left.is_zero() {
                return Err(Fault::new(408, "request not received in time"));
            }
            left
        }
    };
    if stream.set_read_timeout(Some(timeout)).is_err() {
        return Ok(false);
    }
    let mut chunk = [0u8; 4096];
    loop {
        match receive(stream, &mut chunk, fds) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                if fds.len() > MAX_PASSED_FDS {
                    return Err(Fault::new(
                        400,
                        &format!("at most {MAX_PASSED_FDS} descriptors may come with a request"),
                    ));
                }
                pending.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return match started {
                    None if pending.is_empty() => Ok(false),
                    _ => Err(Fault::new(408, "request not received in time")),
                };
            }
            Err(_) => return Ok(false),
        }
    }
}

/// Descriptors a request may bring (SCM_RIGHTS); more is 400.
const MAX_PASSED_FDS: usize = 4;

/// `read` that also takes the descriptors sent with the bytes (close on
/// exec, owned: those no request uses are closed when dropped).
fn receive(stream: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for MAX_PASSED_FDS descriptors in one control message, 8-byte
    // aligned as cmsghdr wants; a sender's surplus is closed by the kernel
    // (MSG_CTRUNC) and caught by the count check of the caller.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at a live iovec over `buf` and at `control`, both
    // sized as stated, for the duration of the call.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    // Negative is the one failure; any other count fits a usize.
    let Ok(n) = usize::try_from(n) else {
        return Err(io::Error::last_os_error());
    };
    // SAFETY: the CMSG_* walk stays within msg_controllen as the kernel
    // set it; each SCM_RIGHTS payload is an array of ints the kernel just
    // installed as new descriptors in this process, which we now own.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                for i in 0..bytes / std::mem::size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(n)
}

/// Gives a request's descriptors to the action that asked for them; a
/// descriptor nobody asked for is refused (and closed).
fn attach_fds(action: &mut Action, mut fds: Vec<OwnedFd>) -> Result<(), Response> {
    match action {
        Action::AddNet(spec) if spec.tap_fd => {
            // Schema-valid, so 422: what is missing is not in the body.
            if fds.len() != 1 {
                return Err(Response::error(
                    422,
                    &format!(
                        "tap_fd: send the TAP's descriptor (one, as SCM_RIGHTS) with the request; {} came",
                        fds.len()
                    ),
                ));
            }
            spec.passed = fds.pop().map(PassedFd::new);
            Ok(())
        }
        Action::AddDisk(spec) if spec.image_fd => {
            if fds.len() != 1 {
                return Err(Response::error(
                    422,
                    &format!(
                        "image_fd: send the image's descriptor (one, as SCM_RIGHTS) with the request; {} came",
                        fds.len()
                    ),
                ));
            }
            spec.passed = fds.pop().map(PassedFd::new);
            Ok(())
        }
        _ if !fds.is_empty() => Err(Response::error(
            400,
            "descriptors came with a request that takes none (add-net takes one with tap_fd, add-disk with image_fd)",
        )),
        _ => Ok(()),
    }
}

/// Answer one well-formed request.
fn dispatch(request: Request, controller: &dyn VmController) -> Response {
    let mut action = match routes::resolve(&request.method, &request.target, &request.body) {
        Ok(Target::OpenApi) => {
            return Response::json(200, OPENAPI_DOCUMENT.as_bytes().to_vec());
        }
        Ok(Target::Action(action)) => action,
        Err(refusal) => {
            let mut response = Response::error(refusal.error.status, &refusal.error.message);
            response.allow = refusal.allow;
            return response;
        }
    };
    if let Err(refused) = attach_fds(&mut action, request.fds) {
        return refused;
    }
    tracing::debug!(?action, "API request");
    // A panicking controller must not take the connection down silently
    // (with panic=abort it takes the process, as any panic does).
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| controller.handle(action)))
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                500,
                "internal error while handling the request",
            ))
        });
    match outcome {
        Ok(serde_json::Value::Null) => Response::json(204, Vec::new()),
        Ok(value) => match serde_json::to_vec(&value) {
            Ok(body) => Response::json(200, body),
            Err(e) => Response::error(500, &format!("cannot encode the answer: {e}")),
        },
        Err(e) if (400..=599).contains(&e.status) => Response::error(e.status, &e.message),
        Err(e) => Response::error(
            500,
            &format!("{} (controller gave status {})", e.message, e.status),
        ),
    }
}
