//! HTTP/1.1 over a [`Stream`]: requests written by hand, responses parsed
//! with `httparse`, bodies by `Content-Length`, chunked, or to the end of
//! the stream. One connection carries every request of a CLI invocation
//! (keep-alive) unless the daemon says `Connection: close`.

use std::io;
use std::time::Instant;

use super::transport::Stream;

/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The largest response body accepted (a domain list of thousands fits).
pub const MAX_BODY: usize = 64 << 20;
/// The longest line of a streamed body (one event).
pub const MAX_LINE: usize = 1 << 20;
/// The most read from the stream at once.
const FILL: usize = 256 << 10;

/// What can go wrong in an exchange.
#[derive(Debug)]
pub enum HttpError {
    /// The stream failed or timed out.
    Io(io::Error),
    /// The stream ended; `started` tells whether any of the answer came.
    Closed {
        /// Some bytes of the answer had arrived.
        started: bool,
    },
    /// The peer does not speak HTTP as expected.
    Protocol(String),
}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        HttpError::Io(e)
    }
}

/// A response's status line and the headers the client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// `Content-Length`.
    pub content_length: Option<usize>,
    /// Whether the connection stays open after this answer.
    pub keep_alive: bool,
    /// The `Upgrade` header.
    pub upgrade: Option<String>,
}

/// How the current body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (204, 304, 101, or `Content-Length: 0` read).
    Done,
    /// This many bytes left.
    Length(usize),
    /// Chunked; bytes left in the current chunk (0: at a chunk header).
    Chunked(usize),
    /// Until the stream ends.
    Eof,
}

/// A connection: the stream and what was read past the last answer.
#[derive(Debug)]
pub struct Connection {
    /// The byte stream.
    pub stream: Stream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    framing: Framing,
    /// Whether any answer was read on this connection yet.
    pub used: bool,
}

impl Connection {
    /// A connection over `stream`.
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            framing: Framing::Done,
            used: false,
        }
    }

    /// Send one request. `extra` are whole header lines (`Name: value`).
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        extra: &[&str],
        body: Option<&[u8]>,
    ) -> Result<(), HttpError> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: vireo\r\nUser-Agent: vireo/{}\r\nAccept: application/json\r\n",
            env!("CARGO_PKG_VERSION")
        );
        for h in extra {
            req.push_str(h);
            req.push_str("\r\n");
        }
        match body {
            Some(b) => req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )),
            None if method != "GET" => req.push_str("Content-Length: 0\r\n"),
            None => {}
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        self.stream.write_all(&bytes)?;
        Ok(())
    }

    /// Send a request's head only: its body follows with
    /// [`Connection::send_chunk`] (the caller's `extra` says
    /// `Transfer-Encoding: chunked`).
    pub fn send_head(&mut self, method: &str, path: &str, extra: &[&str]) -> Result<(), HttpError> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: vireo\r\nUser-Agent: vireo/{}\r\nAccept: application/json\r\n",
            env!("CARGO_PKG_VERSION")
        );
        for h in extra {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes())?;
        Ok(())
    }

    /// Send one chunk of a chunked body; an empty `data` is the last.
    /// The data is written as it is, between its size line and CRLF,
    /// not copied into a frame.
    pub fn send_chunk(&mut self, data: &[u8]) -> Result<(), HttpError> {
        self.stream
            .write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
        if !data.is_empty() {
            self.stream.write_all(data)?;
        }
        // After the last chunk (`0\r\n`) this CRLF ends the (empty)
        // trailer section.
        self.stream.write_all(b"\r\n")?;
        Ok(())
    }

    /// Read an answer's head; its body is then read with
    /// [`Connection::read_body`] or [`Connection::read_chunk`].
    pub fn read_head(&mut self, method: &str, deadline: Instant) -> Result<Head, HttpError> {
        self.read_head_or_continue(method, deadline, false)
    }

    /// As [`Connection::read_head`]; with `want_continue`, a
    /// `100 Continue` is returned (the daemon will read the body) rather
    /// than skipped.
    pub fn read_head_or_continue(
        &mut self,
        method: &str,
        deadline: Instant,
        want_continue: bool,
    ) -> Result<Head, HttpError> {
        loop {
            if let Some((head, len)) = parse_head(&self.buf)? {
                self.buf.drain(..len);
                self.used = true;
                if want_continue && head.status == 100 {
                    return Ok(head);
                }
                // An interim answer (100 Continue, 102 Processing) has no
                // body and is followed by the real one; 101 is final.
                if (100..200).contains(&head.status) && head.status != 101 {
                    continue;
                }
                self.framing = if head.status == 101
                    || head.status == 204
                    || head.status == 304
                    || method == "HEAD"
                {
                    Framing::Done
                } else if head.chunked {
                    Framing::Chunked(0)
                } else if let Some(n) = head.content_length {
                    if n > MAX_BODY {
                        return Err(HttpError::Protocol(format!("an answer of {n} bytes")));
                    }
                    if n == 0 {
                        Framing::Done
                    } else {
                        Framing::Length(n)
                    }
                } else {
                    Framing::Eof
                };
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(HttpError::Protocol("an answer head over 64 KiB".into()));
            }
            if self.fill(Some(deadline))? == 0 {
                return Err(HttpError::Closed {
                    started: !self.buf.is_empty(),
                });
            }
        }
    }

    /// The whole body, at most [`MAX_BODY`] bytes.
    pub fn read_body(&mut self, deadline: Instant) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        while self.read_chunk(&mut out, Some(deadline))? {
            if out.len() > MAX_BODY {
                return Err(HttpError::Protocol("an answer over 64 MiB".into()));
            }
        }
        Ok(out)
    }

    /// Append the next piece of the body to `out`, waiting until
    /// `deadline` (forever with `None`); `Ok(false)` at its end.
    pub fn read_chunk(
        &mut self,
        out: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<bool, HttpError> {
        loop {
            match self.framing {
                Framing::Done => return Ok(false),
                Framing::Length(left) => {
                    if self.buf.is_empty() && self.fill(deadline)? == 0 {
                        return Err(HttpError::Closed { started: true });
                    }
                    let n = left.min(self.buf.len());
                    out.extend(self.buf.drain(..n));
                    self.framing = if left == n {
                        Framing::Done
                    } else {
                        Framing::Length(left - n)
                    };
                    return Ok(true);
                }
                Framing::Eof => {
                    if self.buf.is_empty() && self.fill(deadline)? == 0 {
                        self.framing = Framing::Done;
                        return Ok(false);
                    }
                    out.append(&mut self.buf);
                    return Ok(true);
                }
                Framing::Chunked(0) => {
                    let Some(line_end) = find(&self.buf, b"\r\n") else {
                        if self.buf.len() > 1024 {
                            return Err(HttpError::Protocol("a chunk header over 1 KiB".into()));
                        }
                        if self.fill(deadline)? == 0 {
                            return Err(HttpError::Closed { started: true });
                        }
                        continue;
                    };
                    let size = parse_chunk_size(&self.buf[..line_end])?;
                    if size == 0 {
                        // The last chunk: skip trailers up to the empty line.
                        loop {
                            if self.buf[line_end + 2..].starts_with(b"\r\n") {
                                self.buf.drain(..line_end + 4);
                                break;
                            }
                            if let Some(end) = find(&self.buf[line_end + 2..], b"\r\n\r\n") {
                                self.buf.drain(..line_end + 2 + end + 4);
                                break;
                            }
                            if self.buf.len() > MAX_HEAD {
                                return Err(HttpError::Protocol("trailers over 64 KiB".into()));
                            }
                            if self.fill(deadline)? == 0 {
                                return Err(HttpError::Closed { started: true });
                            }
                        }
                        self.framing = Framing::Done;
                        return Ok(false);
                    }
                    if size > MAX_BODY {
                        return Err(HttpError::Protocol(format!("a chunk of {size} bytes")));
                    }
                    self.buf.drain(..line_end + 2);
                    self.framing = Framing::Chunked(size);
                }
                Framing::Chunked(left) => {
                    // The chunk's data, then its CRLF.
                    if self.buf.is_empty() {
                        if self.fill(deadline)? == 0 {
                            return Err(HttpError::Closed { started: true });
                        }
                        continue;
                    }
                    let n = left.min(self.buf.len());
                    out.extend(self.buf.drain(..n));
                    if left == n {
                        while self.buf.len() < 2 {
                            if self.fill(deadline)? == 0 {
                                return Err(HttpError::Closed { started: true });
                            }
                        }
                        if &self.buf[..2] != b"\r\n" {
                            return Err(HttpError::Protocol("a chunk without its CRLF".into()));
                        }
                        self.buf.drain(..2);
                        self.framing = Framing::Chunked(0);
                    } else {
                        self.framing = Framing::Chunked(left - n);
                    }
                    return Ok(true);
                }
            }
        }
    }

    /// Hand over what was read past the answer (after a 101, the first
    /// bytes of the upgraded stream).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    fn fill(&mut self, deadline: Option<Instant>) -> Result<usize, HttpError> {
        // Straight into the buffer, in large reads: a volume download
        // comes through here, and 16 KiB reads through a copy cost it
        // most of its speed.
        let start = self.buf.len();
        self.buf.resize(start + FILL, 0);
        let read = self.stream.read_some(&mut self.buf[start..], deadline);
        let n = *read.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n);
        Ok(read?)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_chunk_size(line: &[u8]) -> Result<usize, HttpError> {
    let text =
        std::str::from_utf8(line).map_err(|_| HttpError::Protocol("a bad chunk size".into()))?;
    let hex = text.split(';').next().unwrap_or("").trim();
    usize::from_str_radix(hex, 16)
        .map_err(|_| HttpError::Protocol(format!("a bad chunk size '{hex}'")))
}

/// Parse a response head from `buf`: `Ok(None)` while incomplete, else the
/// head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HttpError::Protocol(format!("a malformed answer: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let mut head = Head {
        status,
        chunked: false,
        content_length: None,
        keep_alive: resp.version == Some(1),
        upgrade: None,
    };
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| HttpError::Protocol(format!("Content-Length '{value}'")))?;
            // Two lengths that differ leave the body's end unknown (RFC
            // 9112 6.3): taking either would misframe every later answer.
            if head.content_length.is_some_and(|m| m != n) {
                return Err(HttpError::Protocol("two different Content-Lengths".into()));
            }
            head.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in value.split(',').map(str::trim) {
                if t.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if t.eq_ignore_ascii_case("keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            head.upgrade = Some(value);
        }
    }
    // A body that runs to the end of the stream ends the connection too.
    if !head.chunked
        && head.content_length.is_none()
        && !matches!(status, 101 | 204 | 304)
        && !(100..200).contains(&status)
    {
        head.keep_alive = false;
    }
    Ok(Some((head, len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// A connection whose peer has written `wire` (and stays open).
    fn conn_with(wire: &[u8]) -> (Connection, UnixStream) {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(wire).unwrap();
        (Connection::new(Stream::Unix(a)), b)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn keep_alive_answers_follow_each_other() {
        let (mut c, _peer) = conn_with(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
              HTTP/1.1 204 No Content\r\n\r\n\
              HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n{\"error\":\"nope\"}\n",
        );
        let h = c.read_head("GET", soon()).unwrap();
        assert_eq!((h.status, h.keep_alive), (200, true));
        assert_eq!(c.read_body(soon()).unwrap(), b"hello");
        let h = c.read_head("POST", soon()).unwrap();
        assert_eq!(h.status, 204);
        assert!(c.read_body(soon()).unwrap().is_empty());
        let h = c.read_head("GET", soon()).unwrap();
        assert_eq!(h.status, 404);
        assert_eq!(c.read_body(soon()).unwrap(), b"{\"error\":\"nope\"}\n");
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let (mut c, _peer) = conn_with(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n\
              HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        c.read_head("GET", soon()).unwrap();
        assert_eq!(c.read_body(soon()).unwrap(), b"Wikipedia");
        c.read_head("GET", soon()).unwrap();
        assert_eq!(c.read_body(soon()).unwrap(), b"abc");
    }

    #[test]
    fn chunks_arrive_as_they_are_sent() {
        let (mut c, mut peer) =
            conn_with(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nline1\n\r\n");
        c.read_head("GET", soon()).unwrap();
        let mut out = Vec::new();
        assert!(c.read_chunk(&mut out, Some(soon())).unwrap());
        assert_eq!(out, b"line1\n");
        // Nothing more yet: the read waits, then times out.
        let e = c
            .read_chunk(&mut out, Some(Instant::now() + Duration::from_millis(50)))
            .unwrap_err();
        assert!(matches!(e, HttpError::Io(ref e) if e.kind() == io::ErrorKind::TimedOut));
        peer.write_all(b"6\r\nline2\n\r\n0\r\n\r\n").unwrap();
        out.clear();
        assert!(c.read_chunk(&mut out, Some(soon())).unwrap());
        assert_eq!(out, b"line2\n");
        assert!(!c.read_chunk(&mut out, Some(soon())).unwrap());
    }

    #[test]
    fn close_delimited_and_connection_close() {
        let (mut c, peer) = conn_with(b"HTTP/1.1 200 OK\r\n\r\nall of it");
        drop(peer);
        let h = c.read_head("GET", soon()).unwrap();
        assert!(!h.keep_alive);
        assert_eq!(c.read_body(soon()).unwrap(), b"all of it");

        let (mut c, _peer) =
            conn_with(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
        assert!(!c.read_head("GET", soon()).unwrap().keep_alive);
    }

    #[test]
    fn upgrade_keeps_the_bytes_after_the_head() {
        let (mut c, _peer) = conn_with(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: vireo-console\r\n\r\nidle: waiting\n",
        );
        let h = c.read_head("GET", soon()).unwrap();
        assert_eq!(h.status, 101);
        assert_eq!(h.upgrade.as_deref(), Some("vireo-console"));
        assert_eq!(c.take_buffered(), b"idle: waiting\n");
    }

    #[test]
    fn interim_answers_are_skipped() {
        let (mut c, _peer) = conn_with(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        let h = c.read_head("POST", soon()).unwrap();
        assert_eq!((h.status, h.keep_alive), (200, true));
        assert_eq!(c.read_body(soon()).unwrap(), b"ok");
    }

    #[test]
    fn bad_answers() {
        for wire in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 20\r\n\r\nok",
        ] {
            let (mut c, _peer) = conn_with(wire);
            assert!(
                matches!(c.read_head("GET", soon()), Err(HttpError::Protocol(_))),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        let (mut c, _peer) =
            conn_with(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        c.read_head("GET", soon()).unwrap();
        assert!(matches!(c.read_body(soon()), Err(HttpError::Protocol(_))));

        // A stream that ends mid-answer.
        let (mut c, peer) = conn_with(b"HTTP/1.1 200 OK\r\nContent-Le");
        drop(peer);
        assert!(matches!(
            c.read_head("GET", soon()),
            Err(HttpError::Closed { started: true })
        ));
        let (mut c, peer) = conn_with(b"");
        drop(peer);
        assert!(matches!(
            c.read_head("GET", soon()),
            Err(HttpError::Closed { started: false })
        ));
    }

    #[test]
    fn chunked_uploads_are_framed() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut c = Connection::new(Stream::Unix(a));
        c.send_head("PUT", "/x", &["Transfer-Encoding: chunked"])
            .unwrap();
        c.send_chunk(&[b'a'; 26]).unwrap();
        c.send_chunk(b"").unwrap();
        drop(c);
        let mut wire = String::new();
        std::io::Read::read_to_string(&mut b, &mut wire).unwrap();
        assert!(wire.starts_with("PUT /x HTTP/1.1\r\n"), "{wire}");
        assert!(
            wire.ends_with(&format!(
                "Transfer-Encoding: chunked\r\n\r\n1a\r\n{}\r\n0\r\n\r\n",
                "a".repeat(26)
            )),
            "{wire}"
        );
    }

    #[test]
    fn requests_are_well_formed() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut c = Connection::new(Stream::Unix(a));
        c.send("POST", "/domains", &[], Some(b"{\"xml\":\"x\"}"))
            .unwrap();
        c.send("POST", "/domains/a%20b/shutdown", &[], None)
            .unwrap();
        c.send(
            "GET",
            "/domains/x/console",
            &["Connection: Upgrade", "Upgrade: vireo-console"],
            None,
        )
        .unwrap();
        drop(c);
        let mut wire = String::new();
        std::io::Read::read_to_string(&mut b, &mut wire).unwrap();
        assert!(wire.starts_with("POST /domains HTTP/1.1\r\nHost: vireo\r\n"));
        assert!(
            wire.contains("Content-Length: 11\r\n\r\n{\"xml\":\"x\"}POST /domains/a%20b/shutdown")
        );
        assert!(wire.contains("shutdown HTTP/1.1\r\n"));
        assert!(wire.contains("Content-Length: 0\r\n\r\nGET /domains/x/console"));
        assert!(wire.ends_with("Connection: Upgrade\r\nUpgrade: vireo-console\r\n\r\n"));
    }
}
