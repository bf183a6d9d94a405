//! A blocking QMP client: QEMU's JSON monitor over its unix socket.
//!
//! One reader thread owns the receiving half. It hands each command's
//! answer to the caller waiting for that command's `id` and records the
//! events the driver acts on (`SHUTDOWN`, `STOP`, `RESUME`,
//! `DEVICE_DELETED`). Commands are matched by `id`, so an answer that
//! arrives after its caller gave up is dropped instead of being taken
//! for the next command's. Every wait is bounded.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// How long a command may take before the caller gives up.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest line QEMU may send; a longer one ends the connection
/// rather than growing a buffer without bound.
const MAX_LINE_BYTES: u64 = 4 << 20;

/// A QMP failure, one line.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached or broke.
    #[error("QMP socket {path}: {source}")]
    Io {
        /// The socket.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// QEMU said something that is not QMP.
    #[error("QMP: {0}")]
    Protocol(String),
    /// QEMU answered the command with an error.
    #[error("QEMU refused {command}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's `desc`.
        desc: String,
    },
    /// No answer in time.
    #[error("QEMU did not answer {0} within {1:?}")]
    Timeout(String, Duration),
    /// The connection ended (QEMU exited).
    #[error("the QMP connection closed (QEMU exited?)")]
    Closed,
}

/// The last `SHUTDOWN` event: whether the guest asked, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownEvent {
    /// `guest`: the guest caused it.
    pub guest: bool,
    /// QEMU's reason (`guest-shutdown`, `guest-reset`, `host-signal`, ...).
    pub reason: String,
}

/// What the events said so far.
#[derive(Debug, Default)]
pub struct EventState {
    /// The last `SHUTDOWN`.
    pub shutdown: Option<ShutdownEvent>,
    /// Device ids a `DEVICE_DELETED` named.
    pub deleted: Vec<String>,
    /// True after `STOP` until `RESUME`.
    pub stopped: bool,
    /// How many `STOP` events came (a stop QEMU made itself, on an
    /// emulation failure, is only seen through `query-status`).
    pub stops: u64,
    /// The connection has ended.
    pub closed: bool,
}

type Pending = Arc<Mutex<HashMap<u64, Sender<Value>>>>;

/// A QMP connection in command mode.
pub struct Qmp {
    path: String,
    writer: Mutex<UnixStream>,
    pending: Pending,
    events: Arc<(Mutex<EventState>, Condvar)>,
    next_id: AtomicU64,
    reader: Mutex<Option<JoinHandle<()>>>,
    /// QEMU's version from the greeting (`7.2.22`).
    pub version: String,
}

impl Qmp {
    /// Connects to `path`, reads the greeting and leaves capabilities
    /// negotiation, all within `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let shown = path.display().to_string();
        let io = |source| QmpError::Io {
            path: shown.clone(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(io)?;
        // QEMU serves one monitor client at a time and queues the rest, so
        // a connection can succeed and then hear nothing: the greeting is
        // read under a timeout.
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
        let greeting = read_greeting(&mut reader, Instant::now() + timeout)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    QmpError::Timeout("the QMP greeting".into(), timeout)
                }
                std::io::ErrorKind::InvalidData => QmpError::Protocol(e.to_string()),
                _ => io(e),
            })?
            .ok_or(QmpError::Closed)?;
        let greeting: Value = serde_json::from_str(&greeting)
            .map_err(|e| QmpError::Protocol(format!("greeting is not JSON: {e}")))?;
        let v = greeting
            .pointer("/QMP/version/qemu")
            .ok_or_else(|| QmpError::Protocol("no QMP greeting".into()))?;
        let num = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let version = format!("{}.{}.{}", num("major"), num("minor"), num("micro"));
        // The reader thread blocks until data or EOF; shutdown() on drop
        // wakes it.
        stream.set_read_timeout(None).map_err(io)?;
        reader.get_ref().set_read_timeout(None).map_err(io)?;

        let pending: Pending = Arc::default();
        let events: Arc<(Mutex<EventState>, Condvar)> = Arc::default();
        let thread = {
            let pending = pending.clone();
            let events = events.clone();
            std::thread::Builder::new()
                .name("qmp-reader".into())
                .spawn(move || read_loop(reader, pending, events))
                .map_err(io)?
        };
        let qmp = Qmp {
            path: shown,
            writer: Mutex::new(stream),
            pending,
            events,
            next_id: AtomicU64::new(1),
            reader: Mutex::new(Some(thread)),
            version,
        };
        qmp.execute_timeout("qmp_capabilities", None, timeout)?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments`, waiting [`COMMAND_TIMEOUT`].
    pub fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        self.execute_timeout(command, arguments, COMMAND_TIMEOUT)
    }

    /// Runs `command`, waiting at most `timeout` for its answer.
    pub fn execute_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        self.run(command, arguments, timeout, None)
    }

    /// Runs `command` with `fd` sent along (SCM_RIGHTS), as `getfd` wants.
    pub fn execute_with_fd(
        &self,
        command: &str,
        arguments: Value,
        fd: BorrowedFd<'_>,
    ) -> Result<Value, QmpError> {
        self.run(command, Some(arguments), COMMAND_TIMEOUT, Some(fd))
    }

    fn run(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let (tx, rx): (Sender<Value>, Receiver<Value>) = mpsc::channel();
        lock(&self.pending).insert(id, tx);
        if lock(&self.events.0).closed {
            lock(&self.pending).remove(&id);
            return Err(QmpError::Closed);
        }
        let mut line = msg.to_string();
        line.push('\n');
        let written = {
            let mut writer = lock(&self.writer);
            let mut bytes = line.as_bytes();
            // A descriptor rides with the command's first bytes.
            let sent = match fd {
                Some(fd) => writer
                    .send_with_fd(bytes, fd.as_raw_fd())
                    .map_err(|e| std::io::Error::from_raw_os_error(e.errno())),
                None => Ok(0),
            };
            sent.and_then(|n| {
                bytes = &bytes[n..];
                writer.write_all(bytes)
            })
        };
        if let Err(source) = written {
            lock(&self.pending).remove(&id);
            return Err(QmpError::Io {
                path: self.path.clone(),
                source,
            });
        }
        let answer = rx.recv_timeout(timeout);
        lock(&self.pending).remove(&id);
        let answer = match answer {
            Ok(a) => a,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(QmpError::Timeout(command.to_string(), timeout))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(QmpError::Closed),
        };
        if let Some(err) = answer.get("error") {
            return Err(QmpError::Command {
                command: command.to_string(),
                desc: err
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("no description")
                    .to_string(),
            });
        }
        Ok(answer.get("return").cloned().unwrap_or(Value::Null))
    }

    /// Runs `f` on the event state.
    pub fn with_events<T>(&self, f: impl FnOnce(&mut EventState) -> T) -> T {
        f(&mut lock(&self.events.0))
    }

    /// Waits until `done` holds for the event state, or the connection
    /// closes, or `timeout` passes. Returns whether `done` held.
    pub fn wait_event(&self, timeout: Duration, mut done: impl FnMut(&EventState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.events;
        let mut st = lock(m);
        loop {
            if done(&st) {
                return true;
            }
            let now = Instant::now();
            if st.closed || now >= deadline {
                return false;
            }
            st = match cv.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Waits (bounded) for the reader to see the end of the connection,
    /// so that every event QEMU wrote before exiting has been read.
    pub fn drain(&self, timeout: Duration) {
        self.wait_event(timeout, |st| st.closed);
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        // Wakes the reader, and frees QEMU's one monitor slot for the
        // next client (a daemon adopting this QEMU again).
        let _ = lock(&self.writer).shutdown(Shutdown::Both);
        if let Some(t) = lock(&self.reader).take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One line, at most [`MAX_LINE_BYTES`]; `None` at EOF.
fn read_line(r: &mut BufReader<UnixStream>) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE_BYTES)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && n as u64 >= MAX_LINE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a QMP line is longer than 4 MiB",
        ));
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The longest greeting: QEMU's is a few hundred bytes.
const MAX_GREETING_BYTES: usize = 64 * 1024;

/// The greeting line, all of it by `deadline`: each read waits only for
/// what is left, so a QEMU that trickles bytes cannot stretch the wait
/// (a per-read timeout alone would allow one byte per timeout).
fn read_greeting(
    r: &mut BufReader<UnixStream>,
    deadline: Instant,
) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        r.get_ref().set_read_timeout(Some(left))?;
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(None);
        }
        let (take, done) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        line.extend_from_slice(&avail[..take]);
        r.consume(take);
        if done {
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
        if line.len() > MAX_GREETING_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the QMP greeting is longer than 64 KiB",
            ));
        }
    }
}

fn read_loop(
    mut reader: BufReader<UnixStream>,
    pending: Pending,
    events: Arc<(Mutex<EventState>, Condvar)>,
) {
    loop {
        let line = match read_line(&mut reader) {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("QMP read ended: {e}");
                break;
            }
        };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!("QMP: ignoring a line that is not JSON");
            continue;
        };
        if let Some(name) = msg.get("event").and_then(Value::as_str) {
            let data = msg.get("data").cloned().unwrap_or(Value::Null);
            let (m, cv) = &*events;
            let mut st = lock(m);
            match name {
                "SHUTDOWN" => {
                    st.shutdown = Some(ShutdownEvent {
                        guest: data.get("guest").and_then(Value::as_bool).unwrap_or(false),
                        reason: data
                            .get("reason")
                            .and_then(Value::as_str)
                            .unwrap_or("unknown")
                            .to_string(),
                    })
                }
                "STOP" => {
                    st.stopped = true;
                    st.stops += 1;
                }
                "RESUME" => st.stopped = false,
                "DEVICE_DELETED" => {
                    if let Some(d) = data.get("device").and_then(Value::as_str) {
                        // Bounded at 256, oldest first out: QEMU reports
                        // every deletion (a guest can eject some devices
                        // itself), and a waiter looks for its own id soon
                        // after its device_del.
                        if st.deleted.len() >= 256 {
                            st.deleted.remove(0);
                        }
                        st.deleted.push(d.to_string());
                    }
                }
                _ => {}
            }
            cv.notify_all();
            continue;
        }
        let Some(id) = msg.get("id").and_then(Value::as_u64) else {
            continue;
        };
        if let Some(tx) = lock(&pending).remove(&id) {
            let _ = tx.send(msg);
        }
    }
    let (m, cv) = &*events;
    lock(m).closed = true;
    // Dropping the senders wakes every caller still waiting.
    lock(&pending).clear();
    cv.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A server that sends `byte` every 50 ms until the client goes.
    fn trickler(path: &Path, byte: u8) -> JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            while s.write_all(&[byte]).is_ok() {
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }

    #[test]
    fn a_greeting_that_trickles_times_out_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let server = trickler(&path, b'{');
        let begun = Instant::now();
        let err = Qmp::connect(&path, Duration::from_millis(400))
            .err()
            .unwrap();
        assert!(matches!(err, QmpError::Timeout(..)), "{err}");
        assert!(
            begun.elapsed() < Duration::from_secs(2),
            "{:?}",
            begun.elapsed()
        );
        server.join().unwrap();
    }

    #[test]
    fn a_greeting_past_its_bound_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.write_all(&vec![b'x'; MAX_GREETING_BYTES + 8192]);
        });
        let err = Qmp::connect(&path, Duration::from_secs(5)).err().unwrap();
        assert!(
            matches!(err, QmpError::Protocol(ref m) if m.contains("64 KiB")),
            "{err}"
        );
        server.join().unwrap();
    }
}
