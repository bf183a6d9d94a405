//! The client against a scripted HTTP peer on a real unix socket (the
//! daemon's end-to-end tests live in `crates/vireo/tests/virsh.rs`).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::*;
use crate::api::{DomainState, EventKind};

fn client_for(socket: &Path) -> Client {
    let uri =
        ConnectUri::parse(&format!("vireo+unix:///system?socket={}", socket.display())).unwrap();
    Client::new(uri).timeout(Duration::from_secs(5))
}

/// Read one request head (and its Content-Length body) from `s`.
fn read_request(s: &mut UnixStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(head + &String::from_utf8_lossy(&body))
}

/// A peer that answers each request on each connection with `answer`.
fn serve(
    dir: &Path,
    answer: impl Fn(&str) -> Vec<u8> + Send + 'static,
) -> (std::path::PathBuf, Arc<AtomicUsize>, JoinHandle<()>) {
    let path = dir.join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let handle = std::thread::spawn(move || {
        // One connection at a time is all these tests need.
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            while let Some(req) = read_request(&mut s) {
                if req.starts_with("QUIT") {
                    return;
                }
                let out = answer(&req);
                if s.write_all(&out).is_err() {
                    break;
                }
            }
        }
    });
    (path, connections, handle)
}

fn json_answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn no_daemon_is_one_line_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = client_for(&dir.path().join("absent.sock"));
    let e = c.version().unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "cannot connect to the vireo daemon at {}: No such file or directory",
            dir.path().join("absent.sock").display()
        )
    );
}

#[test]
fn requests_share_one_connection_and_errors_carry_the_daemons_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, connections, _h) = serve(dir.path(), |req| {
        if req.starts_with("GET /domains?filter=all ") {
            json_answer(
                "200 OK",
                r#"[{"id":3,"name":"a b","uuid":"u","state":"running","reason":"booted","persistent":true,"autostart":false}]"#,
            )
        } else if req.starts_with("GET /domains/a%20b/state ") {
            json_answer("200 OK", r#"{"state":"paused","reason":"user"}"#)
        } else if req.starts_with("POST /domains/nosuch/start ") {
            assert!(req.ends_with(r#"{"paused":false}"#), "{req}");
            json_answer("404 Not Found", r#"{"error":"domain not found: 'nosuch'"}"#)
        } else if req.starts_with("DELETE /domains/x/disks/vdb?live=true&config=false ") {
            b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
        } else {
            json_answer("500 Internal Server Error", "not json")
        }
    });
    let mut c = client_for(&path);
    let list = c.list(ListFilter::All).unwrap();
    assert_eq!(list.value[0].name, "a b");
    assert_eq!(list.value[0].id, Some(3));
    assert!(list.json.starts_with("[{\"id\":3"));
    let st = c.state("a b").unwrap().value;
    assert_eq!(st.state, DomainState::Paused);
    let e = c.start("nosuch", false).unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert_eq!(e.to_string(), "domain not found: 'nosuch'");
    c.detach("x", DeviceKind::Disk, "vdb", true, false).unwrap();
    let e = c.version().unwrap_err().to_string();
    assert_eq!(e, "the daemon answered with status 500: not json");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[test]
fn a_daemon_that_does_not_answer_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let listener = UnixListener::bind(&path).unwrap();
    // Accepts (the backlog does) and never answers.
    let mut c = client_for(&path).timeout(Duration::from_millis(300));
    let start = Instant::now();
    let e = c.node_info().unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(
        e.to_string(),
        format!(
            "the vireo daemon at {} did not answer within 0 s",
            path.display()
        )
    );
    drop(listener);
}

#[test]
fn a_closed_keep_alive_connection_is_reopened_for_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let h = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            read_request(&mut s).unwrap();
            s.write_all(&json_answer("200 OK", r#"{"xml":"<capabilities/>"}"#))
                .unwrap();
            // Closed without saying so.
        }
    });
    let mut c = client_for(&path);
    assert_eq!(c.capabilities().unwrap().value.xml, "<capabilities/>");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(c.capabilities().unwrap().value.xml, "<capabilities/>");
    h.join().unwrap();
}

#[test]
fn events_stream_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let req = read_request(&mut s).unwrap();
        assert!(req.starts_with("GET /events?domain=web%201 "), "{req}");
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .unwrap();
        let ev =
            r#"{"timestamp":1.5,"domain":"web 1","uuid":"u","event":"started","detail":"Booted"}"#;
        // One event split over two chunks, then a second one whole.
        let (a, b) = ev.split_at(20);
        for piece in [
            a.to_string(),
            format!("{b}\n"),
            format!("{}\n", ev.replace("started", "stopped")),
        ] {
            s.write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes())
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        // Kept open: the client ends the stream.
        std::thread::sleep(Duration::from_millis(500));
    });
    let mut c = client_for(&path);
    let mut seen = Vec::new();
    let end = c
        .events(Some("web 1"), None, &|| false, |e, line| {
            assert!(line.starts_with('{'));
            seen.push((e.event, e.detail));
            if seen.len() == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(end, StreamEnd::Stopped);
    assert_eq!(
        seen,
        [
            (EventKind::Started, "Booted".to_string()),
            (EventKind::Stopped, "Booted".to_string())
        ]
    );
    h.join().unwrap();
}

#[test]
fn events_until_a_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _h) = serve(dir.path(), |_| {
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()
    });
    let mut c = client_for(&path);
    let start = Instant::now();
    let ended = c
        .events(
            None,
            Some(Instant::now() + Duration::from_millis(200)),
            &|| false,
            |_, _| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(ended, StreamEnd::TimedOut);
    assert!(start.elapsed() < Duration::from_secs(2));
}

/// An interruption that came while the client was not blocked (a Ctrl-C
/// caught between two reads, which interrupts no system call) still ends a
/// wait on a stream that sends nothing more.
#[test]
fn events_end_when_interrupted_between_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _h) = serve(dir.path(), |_| {
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()
    });
    let mut c = client_for(&path);
    let start = Instant::now();
    let asked = std::cell::Cell::new(0);
    let ended = c
        .events(
            None,
            None,
            &|| {
                asked.set(asked.get() + 1);
                asked.get() > 3
            },
            |_, _| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(ended, StreamEnd::Interrupted);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn console_upgrades_and_carries_bytes_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let req = read_request(&mut s).unwrap();
        assert!(
            req.starts_with("GET /domains/vm1/console?force=true "),
            "{req}"
        );
        assert!(req.contains("Upgrade: vireo-console\r\n"), "{req}");
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: vireo-console\r\n\r\nhello\n",
        )
        .unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        s.write_all(&got).unwrap();
    });
    let mut c = client_for(&path);
    let mut con = c.console("vm1", true).unwrap();
    assert_eq!(con.take_pending(), b"hello\n");
    con.write_all(b"ping").unwrap();
    let mut buf = [0u8; 16];
    let mut got = Vec::new();
    while got.len() < 4 {
        let n = con.read(&mut buf).unwrap();
        assert_ne!(n, 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"ping");
    h.join().unwrap();
    assert_eq!(con.read(&mut buf).unwrap(), 0);
}

#[test]
fn console_refusal_is_the_daemons_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _h) = serve(dir.path(), |_| {
        json_answer("409 Conflict", r#"{"error":"domain 'x' is not running"}"#)
    });
    let mut c = client_for(&path);
    let e = c.console("x", false).unwrap_err();
    assert_eq!(e.to_string(), "domain 'x' is not running");
    assert_eq!(e.status(), Some(409));
}

#[test]
fn a_missing_remote_proxy_or_host_is_one_line() {
    if std::process::Command::new("ssh")
        .arg("-V")
        .output()
        .is_err()
    {
        testkit::skip("no ssh client (openssh-client) on PATH");
        return;
    }
    // A port nothing listens on: ssh fails at once, and its own line
    // becomes the cause.
    let uri = ConnectUri::parse("vireo+ssh://127.0.0.1:1/system?no_verify=1").unwrap();
    let mut c = Client::new(uri).timeout(Duration::from_secs(20));
    let start = Instant::now();
    let e = c.version().unwrap_err().to_string();
    assert!(start.elapsed() < Duration::from_secs(15), "{e}");
    assert!(
        e.starts_with(
            "cannot connect to the vireo daemon at /run/vireo/vireo.sock on 127.0.0.1:1: "
        ),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn a_connection_the_daemon_closed_while_idle_is_replaced_before_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let h = std::thread::spawn(move || {
        // First connection: one answer, then closed (an idle timeout).
        let (mut s, _) = listener.accept().unwrap();
        read_request(&mut s).unwrap();
        s.write_all(&json_answer("200 OK", r#"{"xml":"<domain/>"}"#))
            .unwrap();
        drop(s);
        // The POST must come on a new connection.
        let (mut s, _) = listener.accept().unwrap();
        let req = read_request(&mut s).unwrap();
        assert!(req.starts_with("POST /domains "), "{req}");
        s.write_all(&json_answer(
            "200 OK",
            r#"{"name":"d","uuid":"u","warnings":[],"updated":true}"#,
        ))
        .unwrap();
    });
    let mut c = client_for(&path);
    c.xml("d", true).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(c.define("<domain/>").unwrap().updated);
    h.join().unwrap();
}

#[test]
fn deadlines_never_overflow_the_clock() {
    let far = deadline_after(Duration::MAX);
    let year = Duration::from_secs(MAX_TIMEOUT_SECS);
    assert!(far <= Instant::now() + year);
    // Capped at a year, not cut short.
    assert!(far > Instant::now() + year - Duration::from_secs(60));
}

#[test]
fn daemon_messages_are_one_bounded_line() {
    let long = "x".repeat(100_000);
    let body =
        serde_json::to_vec(&serde_json::json!({ "error": format!("bad\n\x1b[2Jthing {long}") }))
            .unwrap();
    let ClientError::Api { status, message } = api_error(400, &body) else {
        panic!("not an API error");
    };
    assert_eq!(status, 400);
    assert!(
        message.starts_with("bad  [2Jthing xxx"),
        "{}",
        &message[..40]
    );
    assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS);
    assert!(!message.chars().any(char::is_control));
    // Not JSON: the first line, cut.
    let ClientError::Api { message, .. } = api_error(502, format!("{long}\nmore").as_bytes())
    else {
        panic!("not an API error");
    };
    assert_eq!(
        message,
        format!("the daemon answered with status 502: {}", &long[..200])
    );
}
