//! The daemon's client: blocking, std only (the CLI and `vireo run` are
//! one binary, and `vireo run` must not carry an async runtime).
//!
//! [`Client`] connects lazily on its first request and keeps that one
//! connection for every later request (HTTP keep-alive), over the daemon's
//! unix socket or `ssh` + `vireo proxy` ([`uri`]). Every wait is bounded
//! ([`Client::timeout`]) except a stream's between-item waits, which end
//! when the daemon or the caller ends the stream.

mod bandwidth;
pub mod http;
mod iface;
mod network;
mod pool;
mod secret;
mod tuning;
mod vol_ops;

pub use vol_ops::{UploadError, UploadRange};
pub mod transport;
pub mod uri;

use std::io;
use std::ops::ControlFlow;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use self::http::{Connection, Head, HttpError, MAX_LINE};
use self::transport::Stream;
use self::uri::{percent_encode, ConnectUri, Transport};
use crate::api::{
    ApiError, AutostartRequest, CreateRequest, DefineRequest, DefineResponse, DestroyRequest,
    DeviceRequest, DiskRow, DomainInfo, DomainStateInfo, DomainStats, DomainSummary, Event,
    InterfaceRow, NodeInfo, StartRequest, VersionInfo, XmlDocument,
};

/// How long an answer may take unless [`Client::timeout`] says otherwise:
/// long enough for a graceful destroy or an `ssh` login, short enough that
/// a stuck daemon does not hang a script.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How often [`Client::events`] asks whether it was interrupted while no
/// event comes.
pub const INTERRUPT_CHECK: Duration = Duration::from_millis(100);

/// The largest domain definition the daemon accepts (virtxml's document
/// bound): a client reads at most this much of a file it will send.
pub const MAX_DEFINITION_BYTES: usize = virtxml::MAX_DOCUMENT_BYTES;

/// The longest wait a deadline may stand for (a year, in seconds): what a
/// timeout given by a user is checked against, since a larger one would
/// overflow `Instant` (a panic) and means "forever" anyway.
pub const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// The instant `wait` from now, with `wait` capped at [`MAX_TIMEOUT_SECS`]
/// so that no duration can overflow the clock.
pub fn deadline_after(wait: Duration) -> Instant {
    Instant::now() + wait.min(Duration::from_secs(MAX_TIMEOUT_SECS))
}

/// Everything the client can fail with; each is one line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A bad connection URI.
    #[error("{0}")]
    Uri(String),
    /// The daemon could not be reached.
    #[error("cannot connect to the vireo daemon at {at}: {cause}")]
    Connect {
        /// The socket (and host).
        at: String,
        /// Why.
        cause: String,
    },
    /// The daemon refused: its `{"error": ...}` answer.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The daemon's one line.
        message: String,
    },
    /// No answer in time.
    #[error("the vireo daemon at {at} did not answer within {secs} s")]
    Timeout {
        /// The socket (and host).
        at: String,
        /// The bound.
        secs: u64,
    },
    /// The connection failed after it was made.
    #[error("the connection to the vireo daemon at {at} failed: {cause}")]
    Io {
        /// The socket (and host).
        at: String,
        /// Why.
        cause: String,
    },
    /// The daemon answered something the client does not understand.
    #[error("unexpected answer from the vireo daemon at {at}: {what}")]
    Protocol {
        /// The socket (and host).
        at: String,
        /// What.
        what: String,
    },
}

impl ClientError {
    /// The HTTP status of an API refusal (404 for an unknown domain).
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A typed answer together with the JSON it came as (for `--json`).
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// The answer.
    pub value: T,
    /// The daemon's JSON, as sent.
    pub json: String,
}

/// Which domains `list` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFilter {
    /// Running, paused, in shutdown.
    Active,
    /// Shut off, crashed.
    Inactive,
    /// Both.
    All,
}

/// A console session: the upgraded connection, raw bytes both ways.
#[derive(Debug)]
pub struct Console {
    stream: Stream,
    /// Guest output that came with the upgrade answer.
    pending: Vec<u8>,
}

impl Console {
    /// Guest output received with the answer, to show first.
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// The descriptor to poll for guest output.
    pub fn read_fd(&self) -> BorrowedFd<'_> {
        self.stream.read_fd()
    }

    /// Guest output; `Ok(0)` when the daemon closed the console (the
    /// domain stopped).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read_some(buf, None)
    }

    /// Send keys to the guest.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }
}

/// A client of one daemon.
#[derive(Debug)]
pub struct Client {
    uri: ConnectUri,
    conn: Option<Connection>,
    timeout: Duration,
}

impl Client {
    /// A client for `uri`; nothing is connected until the first request.
    pub fn new(uri: ConnectUri) -> Self {
        Self {
            uri,
            conn: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Bound every answer by `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URI this client talks to.
    pub fn uri(&self) -> &ConnectUri {
        &self.uri
    }

    /// Where the daemon is, for messages.
    pub fn location(&self) -> String {
        match &self.uri.transport {
            Transport::Unix { socket } => transport::describe(Some(socket), None),
            Transport::Ssh(t) => transport::describe(t.socket.as_deref(), Some(t)),
        }
    }

    fn connect(&self) -> Result<Connection, ClientError> {
        let stream = match &self.uri.transport {
            Transport::Unix { socket } => Stream::unix(socket),
            Transport::Ssh(t) => Stream::ssh(t),
        }
        .map_err(|e| ClientError::Connect {
            at: self.location(),
            cause: io_cause(&e),
        })?;
        Ok(Connection::new(stream))
    }

    /// Send a request and read the answer's head; on success the
    /// connection is left positioned at the body.
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        extra: &[&str],
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<(Connection, Head), ClientError> {
        // A kept-alive connection the daemon closed meanwhile is retried
        // once on a new one, for reads only (a write may have been done).
        let mut retry = method == "GET";
        loop {
            // An idle kept-alive connection with something to read has
            // been closed by the daemon (its idle timeout, while an editor
            // ran): a new one, rather than a request it will never read.
            let kept = self
                .conn
                .take()
                .filter(|c| !transport::poll_in(c.stream.read_fd(), 0).unwrap_or(true));
            let mut conn = match kept {
                Some(c) => c,
                None => {
                    retry = false;
                    self.connect()?
                }
            };
            let fresh = !conn.used;
            let sent = conn.send(method, path, extra, body);
            let result = sent.and_then(|()| conn.read_head(method, deadline));
            match result {
                Ok(head) => return Ok((conn, head)),
                Err(HttpError::Closed { started: false }) if retry && !fresh => {
                    retry = false;
                    continue;
                }
                Err(HttpError::Io(e))
                    if retry
                        && !fresh
                        && matches!(
                            e.kind(),
                            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                        ) =>
                {
                    retry = false;
                    continue;
                }
                Err(e) => return Err(self.failure(e, &mut conn, fresh)),
            }
        }
    }

    /// The one-line error for a failed exchange.
    fn failure(&self, e: HttpError, conn: &mut Connection, fresh: bool) -> ClientError {
        let at = self.location();
        // Over ssh a stream that ends or fails is explained by what ssh or
        // the far proxy said; asking waits for ssh to exit, so only the
        // arms that use the reason ask (a timeout or a protocol error
        // leaves ssh running: waiting would only add its grace period).
        match e {
            HttpError::Io(e) if e.kind() == io::ErrorKind::TimedOut => ClientError::Timeout {
                at,
                secs: self.timeout.as_secs(),
            },
            HttpError::Closed { started: false } | HttpError::Io(_) if fresh => {
                let cause = match (&e, conn.stream.failure_reason()) {
                    (_, Some(r)) => remote_cause(&r, &self.uri),
                    (HttpError::Io(e), None) => io_cause(e),
                    _ => "the connection was closed before an answer".into(),
                };
                ClientError::Connect { at, cause }
            }
            HttpError::Io(e) => ClientError::Io {
                at,
                cause: io_cause(&e),
            },
            HttpError::Closed { .. } => ClientError::Io {
                at,
                cause: conn
                    .stream
                    .failure_reason()
                    .unwrap_or_else(|| "the connection was closed before the answer ended".into()),
            },
            HttpError::Protocol(what) => ClientError::Protocol { at, what },
        }
    }

    /// One request with its whole answer: the body on 2xx, the daemon's
    /// error otherwise.
    fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        let deadline = deadline_after(self.timeout);
        let (mut conn, head) = self.exchange(method, path, &[], body, deadline)?;
        let data = match conn.read_body(deadline) {
            Ok(d) => d,
            Err(e) => return Err(self.failure(e, &mut conn, false)),
        };
        if head.keep_alive {
            self.conn = Some(conn);
        }
        if (200..300).contains(&head.status) {
            Ok(data)
        } else {
            Err(api_error(head.status, &data))
        }
    }

    fn get<T: DeserializeOwned>(&mut self, path: &str) -> Result<Reply<T>, ClientError> {
        let body = self.call("GET", path, None)?;
        self.decode(body)
    }

    fn send_json<B: Serialize, T: DeserializeOwned>(
        &mut self,
        method: &str,
        path: &str,
        request: &B,
    ) -> Result<Reply<T>, ClientError> {
        let bytes = serde_json::to_vec(request).map_err(|e| ClientError::Protocol {
            at: self.location(),
            what: format!("cannot encode the request: {e}"),
        })?;
        let body = self.call(method, path, Some(&bytes))?;
        self.decode(body)
    }

    fn send_no_answer<B: Serialize>(
        &mut self,
        method: &str,
        path: &str,
        request: Option<&B>,
    ) -> Result<(), ClientError> {
        let bytes = match request {
            Some(r) => Some(serde_json::to_vec(r).map_err(|e| ClientError::Protocol {
                at: self.location(),
                what: format!("cannot encode the request: {e}"),
            })?),
            None => None,
        };
        self.call(method, path, bytes.as_deref()).map(drop)
    }

    fn decode<T: DeserializeOwned>(&self, body: Vec<u8>) -> Result<Reply<T>, ClientError> {
        let value = serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
            at: self.location(),
            what: format!("malformed JSON: {e}"),
        })?;
        let json = String::from_utf8_lossy(&body).trim_end().to_string();
        Ok(Reply { value, json })
    }

    /// `GET /version`.
    pub fn version(&mut self) -> Result<Reply<VersionInfo>, ClientError> {
        self.get("/version")
    }

    /// `GET /host`.
    pub fn node_info(&mut self) -> Result<Reply<NodeInfo>, ClientError> {
        self.get("/host")
    }

    /// `GET /host/capabilities`.
    pub fn capabilities(&mut self) -> Result<Reply<XmlDocument>, ClientError> {
        self.get("/host/capabilities")
    }

    /// `GET /domains?filter=...`.
    pub fn list(&mut self, filter: ListFilter) -> Result<Reply<Vec<DomainSummary>>, ClientError> {
        let f = match filter {
            ListFilter::Active => "active",
            ListFilter::Inactive => "inactive",
            ListFilter::All => "all",
        };
        self.get(&format!("/domains?filter={f}"))
    }

    /// `POST /domains`: define or update.
    pub fn define(&mut self, xml: &str) -> Result<DefineResponse, ClientError> {
        let req = DefineRequest { xml: xml.into() };
        Ok(self.send_json("POST", "/domains", &req)?.value)
    }

    /// `POST /domains/create`: a transient domain, started.
    pub fn create(&mut self, xml: &str, paused: bool) -> Result<DefineResponse, ClientError> {
        let req = CreateRequest {
            xml: xml.into(),
            paused,
        };
        Ok(self.send_json("POST", "/domains/create", &req)?.value)
    }

    /// `GET /domains/{dom}`.
    pub fn info(&mut self, dom: &str) -> Result<Reply<DomainInfo>, ClientError> {
        self.get(&dom_path(dom, ""))
    }

    /// `DELETE /domains/{dom}`.
    pub fn undefine(&mut self, dom: &str) -> Result<(), ClientError> {
        self.send_no_answer::<()>("DELETE", &dom_path(dom, ""), None)
    }

    /// `GET /domains/{dom}/xml`.
    pub fn xml(&mut self, dom: &str, inactive: bool) -> Result<Reply<XmlDocument>, ClientError> {
        let q = if inactive { "?inactive=true" } else { "" };
        self.get(&format!("{}{q}", dom_path(dom, "/xml")))
    }

    /// `GET /domains/{dom}/state`.
    pub fn state(&mut self, dom: &str) -> Result<Reply<DomainStateInfo>, ClientError> {
        self.get(&dom_path(dom, "/state"))
    }

    /// `POST /domains/{dom}/start`.
    pub fn start(&mut self, dom: &str, paused: bool) -> Result<DomainStateInfo, ClientError> {
        let req = StartRequest { paused };
        Ok(self
            .send_json("POST", &dom_path(dom, "/start"), &req)?
            .value)
    }

    /// `POST /domains/{dom}/{action}` for shutdown, reboot, reset,
    /// suspend and resume.
    pub fn action(&mut self, dom: &str, action: Action) -> Result<(), ClientError> {
        let suffix = match action {
            Action::Shutdown => "/shutdown",
            Action::Reboot => "/reboot",
            Action::Reset => "/reset",
            Action::Suspend => "/suspend",
            Action::Resume => "/resume",
        };
        self.send_no_answer::<()>("POST", &dom_path(dom, suffix), None)
    }

    /// `POST /domains/{dom}/destroy`.
    pub fn destroy(&mut self, dom: &str, graceful: bool) -> Result<(), ClientError> {
        let req = DestroyRequest { graceful };
        self.send_no_answer("POST", &dom_path(dom, "/destroy"), Some(&req))
    }

    /// `PUT /domains/{dom}/autostart`.
    pub fn set_autostart(&mut self, dom: &str, enabled: bool) -> Result<(), ClientError> {
        let req = AutostartRequest { enabled };
        self.send_no_answer("PUT", &dom_path(dom, "/autostart"), Some(&req))
    }

    /// `GET /domains/{dom}/stats`.
    pub fn stats(&mut self, dom: &str) -> Result<Reply<DomainStats>, ClientError> {
        self.get(&dom_path(dom, "/stats"))
    }

    /// `GET /domains/{dom}/disks`.
    pub fn disks(&mut self, dom: &str) -> Result<Reply<Vec<DiskRow>>, ClientError> {
        self.get(&dom_path(dom, "/disks"))
    }

    /// `GET /domains/{dom}/interfaces`.
    pub fn interfaces(&mut self, dom: &str) -> Result<Reply<Vec<InterfaceRow>>, ClientError> {
        self.get(&dom_path(dom, "/interfaces"))
    }

    /// `POST /domains/{dom}/disks` or `/interfaces`.
    pub fn attach(
        &mut self,
        dom: &str,
        kind: DeviceKind,
        req: &DeviceRequest,
    ) -> Result<(), ClientError> {
        self.send_no_answer("POST", &dom_path(dom, kind.suffix()), Some(req))
    }

    /// `DELETE /domains/{dom}/disks/{target}` or `/interfaces/{mac}`.
    pub fn detach(
        &mut self,
        dom: &str,
        kind: DeviceKind,
        id: &str,
        live: bool,
        config: bool,
    ) -> Result<(), ClientError> {
        let path = format!(
            "{}/{}?live={live}&config={config}",
            dom_path(dom, kind.suffix()),
            percent_encode(id)
        );
        self.send_no_answer::<()>("DELETE", &path, None)
    }

    /// `GET /events`: call `each` with every event (and its JSON line) as
    /// it comes, until `each` breaks, the daemon ends the stream, `until`
    /// passes, or the wait is interrupted: by a caught signal, or
    /// `interrupted` answering true (asked every [`INTERRUPT_CHECK`] while
    /// no event comes, since a signal caught just before the wait began
    /// interrupts nothing).
    pub fn events(
        &mut self,
        domain: Option<&str>,
        until: Option<Instant>,
        interrupted: &dyn Fn() -> bool,
        mut each: impl FnMut(Event, &str) -> ControlFlow<()>,
    ) -> Result<StreamEnd, ClientError> {
        let path = match domain {
            Some(d) => format!("/events?domain={}", percent_encode(d)),
            None => "/events".to_string(),
        };
        let deadline = deadline_after(self.timeout);
        let (mut conn, head) = self.exchange("GET", &path, &[], None, deadline)?;
        if !(200..300).contains(&head.status) {
            let body = conn
                .read_body(deadline)
                .map_err(|e| self.failure(e, &mut conn, false))?;
            return Err(api_error(head.status, &body));
        }
        let mut pending: Vec<u8> = Vec::new();
        loop {
            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line);
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                let event: Event =
                    serde_json::from_str(text).map_err(|e| ClientError::Protocol {
                        at: self.location(),
                        what: format!("malformed event: {e}"),
                    })?;
                if each(event, text).is_break() {
                    return Ok(StreamEnd::Stopped);
                }
            }
            if pending.len() > MAX_LINE {
                return Err(ClientError::Protocol {
                    at: self.location(),
                    what: "an event line over 1 MiB".into(),
                });
            }
            if interrupted() {
                return Ok(StreamEnd::Interrupted);
            }
            let check = Instant::now() + INTERRUPT_CHECK;
            let wait = until.map_or(check, |u| u.min(check));
            match conn.read_chunk(&mut pending, Some(wait)) {
                Ok(true) => {}
                Ok(false) => return Ok(StreamEnd::Closed),
                Err(HttpError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
                    if until.is_some_and(|u| Instant::now() >= u) {
                        return Ok(StreamEnd::TimedOut);
                    }
                }
                Err(HttpError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {
                    return Ok(StreamEnd::Interrupted)
                }
                // A daemon that stops cuts the stream short: the end too.
                Err(HttpError::Closed { .. }) => return Ok(StreamEnd::Closed),
                Err(e) => return Err(self.failure(e, &mut conn, false)),
            }
        }
    }

    /// `GET /domains/{dom}/console`, upgraded to a raw byte stream. The
    /// connection becomes the console's; later requests open another.
    pub fn console(&mut self, dom: &str, force: bool) -> Result<Console, ClientError> {
        let deadline = deadline_after(self.timeout);
        let path = dom_path(
            dom,
            if force {
                "/console?force=true"
            } else {
                "/console"
            },
        );
        let (mut conn, head) = self.exchange(
            "GET",
            &path,
            &["Connection: Upgrade", "Upgrade: vireo-console"],
            None,
            deadline,
        )?;
        if head.status != 101 {
            let body = conn
                .read_body(deadline)
                .map_err(|e| self.failure(e, &mut conn, false))?;
            if (200..300).contains(&head.status) {
                return Err(ClientError::Protocol {
                    at: self.location(),
                    what: format!("status {} instead of 101 for the console", head.status),
                });
            }
            return Err(api_error(head.status, &body));
        }
        let pending = conn.take_buffered();
        Ok(Console {
            stream: conn.stream,
            pending,
        })
    }
}

/// Why an event stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The callback asked to stop.
    Stopped,
    /// The daemon ended the stream (it stopped).
    Closed,
    /// The deadline passed.
    TimedOut,
    /// A signal the caller catches interrupted the wait.
    Interrupted,
}

/// The domain verbs without a body or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// ACPI power button.
    Shutdown,
    /// Reboot.
    Reboot,
    /// Reset.
    Reset,
    /// Pause the vCPUs.
    Suspend,
    /// Run them again.
    Resume,
}

/// Which devices a hot-plug call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// `<disk>`.
    Disk,
    /// `<interface>`.
    Interface,
}

impl DeviceKind {
    fn suffix(self) -> &'static str {
        match self {
            DeviceKind::Disk => "/disks",
            DeviceKind::Interface => "/interfaces",
        }
    }
}

/// `/domains/{dom}{suffix}` with the domain percent-encoded.
fn dom_path(dom: &str, suffix: &str) -> String {
    format!("/domains/{}{suffix}", percent_encode(dom))
}

/// The longest daemon message shown, in characters.
const MAX_MESSAGE_CHARS: usize = 4096;

/// The daemon's `{"error": ...}`, or a line saying what came instead;
/// either way one line of at most [`MAX_MESSAGE_CHARS`], with control
/// characters (newlines, terminal escapes) shown as spaces, since it goes
/// to the user's terminal as the CLI's one error line.
fn api_error(status: u16, body: &[u8]) -> ClientError {
    let message = match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => one_line(&e.error, MAX_MESSAGE_CHARS),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let first = one_line(text.lines().next().unwrap_or(""), 200);
            let first = first.trim();
            if first.is_empty() {
                format!("the daemon answered with status {status}")
            } else {
                format!("the daemon answered with status {status}: {first}")
            }
        }
    };
    ClientError::Api { status, message }
}

/// `text` cut to `max` characters, each control character a space.
fn one_line(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// An io error without Rust's ` (os error N)` suffix, as tools print it.
pub fn io_cause(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The cause ssh or the far `vireo proxy` gave. The proxy's own "cannot
/// connect" line is reduced to its cause, since the caller says the rest.
fn remote_cause(line: &str, uri: &ConnectUri) -> String {
    let line = line.strip_prefix("vireo: ").unwrap_or(line);
    if let Transport::Ssh(t) = &uri.transport {
        let socket = t.socket.as_deref().map_or_else(
            || crate::api::DEFAULT_SOCKET.to_string(),
            |p| p.display().to_string(),
        );
        let prefix = format!("cannot connect to the vireo daemon at {socket}: ");
        if let Some(rest) = line.strip_prefix(&prefix) {
            return rest.to_string();
        }
    }
    line.to_string()
}

#[cfg(test)]
mod tests;
