//! A small blocking HTTP/1.1 client for a VMM's per-VM API (docs/api.md).
//!
//! One request per connection (`Connection: close`): the VMM hands a fresh
//! connection to a pooled thread, so this costs tens of microseconds, and
//! no connection state can go stale between calls. Every call is bounded:
//! connect, write and read each time out, the whole exchange has a
//! deadline, and the answer is capped in size, so a stuck or hostile VMM
//! costs its caller at most the timeout.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::client::http::{parse_head, HttpError};

/// Largest answer read from a VMM: `GET /vm` and the counters of a VM with
/// many devices fit well within it.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Largest answer head: the API sends a status line and two headers, and
/// the head is parsed again as each read arrives, so a VMM that never ends
/// its head is cut off here rather than at [`MAX_ANSWER_BYTES`].
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Why an API call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Nothing answers on the socket (the VMM is gone or not up yet).
    Connect(std::io::Error),
    /// The VMM did not answer within the timeout.
    TimedOut,
    /// The exchange broke (a reset connection, a malformed answer).
    Io(String),
    /// The VMM answered with an error status and message.
    Status(u16, String),
}

/// A VMM's API socket.
#[derive(Debug, Clone)]
pub(crate) struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    pub(crate) fn new(socket: PathBuf, timeout: Duration) -> Self {
        Self { socket, timeout }
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// The pid of the process serving the socket (SO_PEERCRED: the one
    /// that listened on it).
    pub(crate) fn server_pid(&self) -> std::io::Result<u32> {
        use std::os::fd::AsRawFd;
        let stream = UnixStream::connect(&self.socket)?;
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>())
            .map_err(std::io::Error::other)?;
        // SAFETY: SO_PEERCRED writes at most `len` bytes into `cred`, a
        // live ucred; `len` says its size.
        let ret = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                std::ptr::from_mut(&mut cred).cast(),
                &mut len,
            )
        };
        if ret < 0 {
            return Err(std::io::Error::last_os_error());
        }
        u32::try_from(cred.pid).map_err(std::io::Error::other)
    }

    /// `GET path`: the JSON answer.
    pub(crate) fn get(&self, path: &str) -> Result<Value, CallError> {
        self.call("GET", path, None, None)
    }

    /// `PUT path` with an optional JSON body: the JSON answer (`Null` for
    /// 204).
    pub(crate) fn put(&self, path: &str, body: Option<&Value>) -> Result<Value, CallError> {
        self.call("PUT", path, body, None)
    }

    /// As [`ApiClient::put`], with `fd` sent along (SCM_RIGHTS) for the
    /// VMM to take, as `add-net` with `tap_fd` does.
    pub(crate) fn put_with_fd(
        &self,
        path: &str,
        body: &Value,
        fd: BorrowedFd<'_>,
    ) -> Result<Value, CallError> {
        self.call("PUT", path, Some(body), Some(fd))
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value, CallError> {
        let deadline = Instant::now() + self.timeout;
        let mut stream = UnixStream::connect(&self.socket).map_err(CallError::Connect)?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|e| CallError::Io(e.to_string()))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: application/json\r\n"
        );
        if !body.is_empty() {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        let mut bytes = request.as_bytes();
        if let Some(fd) = fd {
            // The descriptor rides with the first bytes; the rest follow.
            let sent = stream
                .send_with_fd(bytes, fd.as_raw_fd())
                .map_err(|e| CallError::Io(format!("cannot send the descriptor: {e}")))?;
            bytes = &bytes[sent..];
        }
        stream.write_all(bytes).map_err(io_error)?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            // Each read waits only for what is left of the deadline, so a
            // VMM that trickles bytes cannot stretch the call.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::TimedOut);
            }
            stream
                .set_read_timeout(Some(left))
                .map_err(|e| CallError::Io(e.to_string()))?;
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
            if answer.len() > MAX_ANSWER_BYTES {
                return Err(CallError::Io(format!(
                    "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            // The answer is complete once the body's announced length has
            // arrived; the VMM then closes, but do not depend on it.
            if let Some(done) = parse_answer(&answer)? {
                return done;
            }
        }
        match parse_answer(&answer)? {
            Some(done) => done,
            None => Err(CallError::Io("the connection closed mid-answer".into())),
        }
    }
}

fn io_error(e: std::io::Error) -> CallError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => CallError::TimedOut,
        _ => CallError::Io(e.to_string()),
    }
}

/// The answer, once `bytes` hold all of it (`None` while more is due).
/// The head is parsed by the daemon client's parser
/// ([`crate::client::http::parse_head`]); the VMM's API always gives a
/// `Content-Length` (none means no body) and never chunks.
#[allow(clippy::type_complexity)]
fn parse_answer(bytes: &[u8]) -> Result<Option<Result<Value, CallError>>, CallError> {
    let (head, head_len) = match parse_head(bytes) {
        Ok(Some(parsed)) => parsed,
        Ok(None) if bytes.len() > MAX_HEAD_BYTES => {
            return Err(CallError::Io(format!(
                "the answer's head is larger than {MAX_HEAD_BYTES} bytes"
            )))
        }
        Ok(None) => return Ok(None),
        Err(HttpError::Protocol(e)) => return Err(CallError::Io(e)),
        Err(e) => return Err(CallError::Io(format!("{e:?}"))),
    };
    if head.chunked {
        return Err(CallError::Io(
            "a chunked answer (the API never chunks)".into(),
        ));
    }
    let length = head.content_length.unwrap_or(0);
    if length > MAX_ANSWER_BYTES {
        return Err(CallError::Io(format!(
            "the answer is larger than {MAX_ANSWER_BYTES} bytes"
        )));
    }
    let body = &bytes[head_len..];
    if body.len() < length {
        return Ok(None);
    }
    let body = &body[..length];
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| CallError::Io(format!("the answer is not JSON: {e}")))?
    };
    let status = head.status;
    if (200..300).contains(&status) {
        return Ok(Some(Ok(value)));
    }
    let message = value
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP status {status}"));
    Ok(Some(Err(CallError::Status(status, message))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn answer(text: &str) -> Result<Value, CallError> {
        parse_answer(text.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn parses_success_no_content_and_errors() {
        // A Content-Length one short cuts the JSON: an error, not a guess.
        assert!(matches!(
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"state\":\"paused\"}"),
            Err(CallError::Io(_))
        ));
        let ok = answer("HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n{\"state\":\"paused\"}");
        assert_eq!(ok.unwrap()["state"], "paused");
        assert_eq!(
            answer("HTTP/1.1 204 No Content\r\n\r\n").unwrap(),
            Value::Null
        );
        let err = answer(
            "HTTP/1.1 409 Conflict\r\ncontent-length: 36\r\n\r\n{\"error\":\"the VM is already paused\"}",
        );
        assert!(
            matches!(err, Err(CallError::Status(409, ref m)) if m == "the VM is already paused")
        );
        assert!(
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}")
                .unwrap()
                .is_none()
        );
        assert!(parse_answer(b"garbage\r\n\r\n").is_err());
        assert!(matches!(
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"),
            Err(CallError::Io(m)) if m.contains("larger")
        ));
        // A head that never ends is refused once past its bound.
        let mut endless = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        endless.resize(MAX_HEAD_BYTES, b'a');
        assert!(parse_answer(&endless).unwrap().is_none());
        endless.push(b'a');
        assert!(matches!(parse_answer(&endless), Err(CallError::Io(m)) if m.contains("head")));
        assert!(matches!(
            parse_answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
            ),
            Err(CallError::Io(_))
        ));
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let client = ApiClient::new(path, Duration::from_millis(300));
        let begun = Instant::now();
        let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        assert!(matches!(client.get("/vm"), Err(CallError::TimedOut)));
        assert!(begun.elapsed() < Duration::from_secs(2));
        drop(held.join());
    }
}
