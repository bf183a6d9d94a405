//! HTTP/1.1 messages as the API server reads and writes them: a request's
//! head parsed (and bounded) with `httparse`, and responses put on the
//! wire. No I/O here: `http.rs` reads the bytes and calls in.

use std::io::Write;

use super::http::ServerLimits;

/// Header lines httparse parses at most; more is 431.
const MAX_HEADERS: usize = 32;

/// One parsed request.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) keep_alive: bool,
    /// HTTP/1.0, where keeping the connection open must be said.
    pub(super) http10: bool,
    pub(super) body: Vec<u8>,
    /// Descriptors that came with the request (SCM_RIGHTS).
    pub(super) fds: Vec<std::os::fd::OwnedFd>,
}

/// A request that cannot be served; the connection closes after the answer.
pub(super) struct Fault(pub(super) Response);

impl Fault {
    pub(super) fn new(status: u16, message: &str) -> Self {
        Fault(Response::error(status, message))
    }
}

/// A response, before it is put on the wire.
pub(super) struct Response {
    pub(super) status: u16,
    /// `Allow` header, for 405.
    pub(super) allow: Option<&'static str>,
    /// JSON body; empty for 204.
    pub(super) body: Vec<u8>,
}

impl Response {
    pub(super) fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            allow: None,
            body,
        }
    }

    pub(super) fn error(status: u16, message: &str) -> Self {
        let body = serde_json::json!({ "error": message }).to_string();
        Self::json(status, body.into_bytes())
    }

    /// The response on the wire. `keep_alive`: the connection stays open;
    /// `say_keep_alive`: say so (HTTP/1.0 closes unless told otherwise).
    pub(super) fn to_bytes(&self, keep_alive: bool, say_keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.body.len());
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if self.status != 204 {
            let _ = write!(
                out,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                self.body.len()
            );
        }
        if let Some(allow) = self.allow {
            let _ = write!(out, "Allow: {allow}\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if say_keep_alive {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if self.status != 204 {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ if status < 500 => "Client Error",
        _ => "Server Error",
    }
}

/// A request's line and headers, as far as the server cares.
pub(super) struct Head {
    /// Bytes of request line and headers, including the blank line.
    pub(super) len: usize,
    pub(super) method: String,
    pub(super) target: String,
    pub(super) keep_alive: bool,
    pub(super) http10: bool,
    pub(super) content_length: usize,
    pub(super) expect_continue: bool,
}

/// Parse the head if it is all in `buf`. `Ok(None)`: not yet.
pub(super) fn parse_head(buf: &[u8], limits: &ServerLimits) -> Result<Option<Head>, Fault> {
    let too_large = || {
        Fault::new(
            431,
            &format!(
                "request line and headers exceed {} bytes",
                limits.max_header_bytes
            ),
        )
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_header_bytes => {
            return Err(too_large())
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Fault::new(
                431,
                &format!("more than {MAX_HEADERS} header lines"),
            ))
        }
        Err(e) => return Err(Fault::new(400, &format!("malformed request: {e}"))),
    };
    if len > limits.max_header_bytes {
        return Err(too_large());
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Fault::new(400, "malformed request line"));
    };
    let mut head = Head {
        len,
        method: method.to_string(),
        target: target.to_string(),
        // HTTP/1.1 keeps connections open unless told otherwise; 1.0 closes.
        keep_alive: version >= 1,
        http10: version == 0,
        content_length: 0,
        expect_continue: false,
    };
    let mut length: Option<usize> = None;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| Fault::new(400, &format!("header {} is not UTF-8", h.name)))?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(value)
                .ok_or_else(|| Fault::new(400, &format!("bad Content-Length: {value}")))?;
            if length.is_some_and(|m| m != n) {
                return Err(Fault::new(400, "conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Content-Length framing only: keeps the parser small, and
            // every client we care about sends small JSON bodies with it.
            return Err(if value.to_ascii_lowercase().contains("chunked") {
                Fault::new(411, "chunked bodies are not supported; send Content-Length")
            } else {
                Fault::new(501, &format!("Transfer-Encoding {value} is not supported"))
            });
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    head.content_length = length.unwrap_or(0);
    if head.content_length > limits.max_body_bytes {
        return Err(Fault::new(
            413,
            &format!("body exceeds {} bytes", limits.max_body_bytes),
        ));
    }
    Ok(Some(head))
}

/// Content-Length: digits only (no sign, no spaces inside).
fn parse_length(value: &str) -> Option<usize> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head>, u16> {
        parse_head(raw.as_bytes(), &ServerLimits::default()).map_err(|Fault(r)| r.status)
    }

    #[test]
    fn heads() {
        let h = head("GET /vm HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.method.as_str(), h.target.as_str()), ("GET", "/vm"));
        assert!(h.keep_alive);
        let h = head("PUT /vm/pause HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        assert_eq!(h.content_length, 2);
        let h = head("GET /vm HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive && h.http10);
        let h = head("GET /vm HTTP/1.1\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        assert!(head("GET /vm HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
    }

    #[test]
    fn bad_heads() {
        assert_eq!(head("GARBAGE\r\n\r\n").err(), Some(400));
        assert_eq!(head("GET /vm HTTP/9.9\r\n\r\n").err(), Some(400));
        let cl = |v: &str| head(&format!("PUT /vm HTTP/1.1\r\nContent-Length: {v}\r\n\r\n")).err();
        assert_eq!(cl("-1"), Some(400));
        assert_eq!(cl("1x"), Some(400));
        assert_eq!(cl("99999999999999999999999"), Some(400));
        assert_eq!(cl("65537"), Some(413));
        assert_eq!(
            head("PUT /vm HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").err(),
            Some(400)
        );
        assert_eq!(
            head("PUT /vm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").err(),
            Some(411)
        );
        assert_eq!(
            head("PUT /vm HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").err(),
            Some(501)
        );
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            head(&format!("GET /vm HTTP/1.1\r\n{many}\r\n")).err(),
            Some(431)
        );
        let big = "a".repeat(9000);
        assert_eq!(
            head(&format!("GET /vm HTTP/1.1\r\nX: {big}")).err(),
            Some(431)
        );
        assert_eq!(
            head(&format!("GET /vm HTTP/1.1\r\nX: {big}\r\n\r\n")).err(),
            Some(431)
        );
    }

    #[test]
    fn responses() {
        let r = Response::json(204, Vec::new()).to_bytes(true, false);
        assert_eq!(r, b"HTTP/1.1 204 No Content\r\n\r\n");
        let r = Response::json(204, Vec::new()).to_bytes(true, true);
        assert_eq!(
            r,
            b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
        );
        let mut e = Response::error(405, "no \"way\"");
        e.allow = Some("GET");
        let text = String::from_utf8(e.to_bytes(false, true)).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("Allow: GET\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"error\":\"no \\\"way\\\"\"}"));
    }
}
