//! The API server over a real unix socket, with a controller that records
//! what it was asked: routing, errors, HTTP robustness, limits, the socket
//! file's life.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmm::api::{
    Action, ActionResult, ApiError, ApiServer, Counters, DeviceInfo, DiskSpec, NetSpec,
    RemoveDeviceSpec, ResizeDiskSpec, ServerLimits, VmConfigSpec, VmController, VmInfo, VmState,
};

/// A controller that records every action and answers like a small VM.
#[derive(Default)]
struct Recorder {
    actions: Mutex<Vec<Action>>,
}

impl Recorder {
    fn taken(&self) -> Vec<Action> {
        std::mem::take(&mut *self.actions.lock().unwrap())
    }
}

impl VmController for Recorder {
    fn handle(&self, action: Action) -> ActionResult {
        self.actions.lock().unwrap().push(action.clone());
        match action {
            Action::GetVm => Ok(serde_json::to_value(VmInfo {
                state: VmState::Running,
                cpus: 2,
                memory_bytes: 128 << 20,
                kernel: Some("/k".into()),
                cmdline: None,
                devices: vec![DeviceInfo {
                    id: "disk0".into(),
                    kind: "virtio-blk".into(),
                    pci: "00:01.0".into(),
                    details: BTreeMap::new(),
                }],
                io_error: None,
            })
            .unwrap()),
            Action::GetCounters => Ok(serde_json::to_value(Counters::default()).unwrap()),
            Action::Boot => Err(ApiError::new(409, "the VM is already running")),
            Action::RemoveDevice(spec) if spec.id == "nope" => {
                Err(ApiError::new(404, "no device nope"))
            }
            Action::AddDisk(spec) => Ok(json!({"id": spec.id.unwrap_or("disk1".into())})),
            _ => Ok(Value::Null),
        }
    }
}

/// A directory removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vireo-api-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn server(name: &str, limits: ServerLimits) -> (Scratch, ApiServer, Arc<Recorder>) {
    let dir = Scratch::new(name);
    let recorder = Arc::new(Recorder::default());
    let server = ApiServer::start_with_limits(&dir.path("api.sock"), recorder.clone(), limits)
        .expect("start the API server");
    (dir, server, recorder)
}

fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// One parsed response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {:?}", String::from_utf8_lossy(&self.body));
        })
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap().to_string()
    }
}

/// Read one response from `s`; `leftover` carries bytes of the next one.
fn read_reply(s: &mut UnixStream, leftover: &mut Vec<u8>) -> Reply {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = resp.parse(leftover).unwrap() {
            let status = resp.code.unwrap();
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8(h.value.to_vec()).unwrap(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            while leftover.len() < n + len {
                fill(s, leftover);
            }
            let body = leftover[n..n + len].to_vec();
            leftover.drain(..n + len);
            return Reply {
                status,
                headers,
                body,
            };
        }
        fill(s, leftover);
    }
}

fn fill(s: &mut UnixStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = s.read(&mut chunk).expect("read a response");
    assert!(
        n > 0,
        "connection closed mid-response: {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

/// Send `raw` on a fresh connection and read the reply.
fn exchange(path: &Path, raw: &[u8]) -> Reply {
    let mut s = connect(path);
    s.write_all(raw).unwrap();
    read_reply(&mut s, &mut Vec::new())
}

/// [`exchange`], and whether the server closed the connection afterwards.
fn exchange_closing(path: &Path, raw: &[u8]) -> (Reply, bool) {
    let mut s = connect(path);
    s.write_all(raw).unwrap();
    let reply = read_reply(&mut s, &mut Vec::new());
    (reply, closed(&mut s))
}

fn closed(s: &mut UnixStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn req(method: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn every_route_maps_to_its_action() {
    let (_dir, server, rec) = server("routes", ServerLimits::default());
    let disk = DiskSpec {
        id: Some("d2".into()),
        path: "/x.img".into(),
        format: Some("raw".into()),
        readonly: true,
        cache: Some("none".into()),
        serial: Some("s1".into()),
        queues: Some(2),
        werror: Some("enospc".into()),
        rerror: Some("stop".into()),
        image_fd: false,
        passed: None,
        chap_secret: None,
    };
    let net = NetSpec {
        id: None,
        tap: Some("tap7".into()),
        mac: Some("52:54:00:00:00:01".into()),
        queues: None,
        tap_fd: false,
        passed: None,
    };
    let config = VmConfigSpec {
        kernel: "/k".into(),
        initrd: None,
        cmdline: Some("console=ttyS0".into()),
        memory_mib: Some(256),
        cpus: Some(2),
        disks: vec![disk.clone()],
        nets: vec![net.clone()],
        rng: true,
    };
    let cases: Vec<(&str, &str, String, Action, u16)> = vec![
        ("GET", "/vm", String::new(), Action::GetVm, 200),
        (
            "GET",
            "/vm/counters",
            String::new(),
            Action::GetCounters,
            200,
        ),
        (
            "PUT",
            "/vm/config",
            serde_json::to_string(&config).unwrap(),
            Action::Configure(Box::new(config.clone())),
            204,
        ),
        ("PUT", "/vm/boot", String::new(), Action::Boot, 409),
        ("PUT", "/vm/pause", String::new(), Action::Pause, 204),
        ("PUT", "/vm/resume", "{}".into(), Action::Resume, 204),
        ("PUT", "/vm/shutdown", String::new(), Action::Shutdown, 204),
        ("PUT", "/vm/reset", String::new(), Action::Reset, 204),
        ("PUT", "/vm/power-off", String::new(), Action::PowerOff, 204),
        (
            "PUT",
            "/vm/add-disk",
            serde_json::to_string(&disk).unwrap(),
            Action::AddDisk(disk.clone()),
            200,
        ),
        (
            "PUT",
            "/vm/add-net",
            serde_json::to_string(&net).unwrap(),
            Action::AddNet(net.clone()),
            204,
        ),
        (
            "PUT",
            "/vm/remove-device",
            r#"{"id":"nope"}"#.into(),
            Action::RemoveDevice(RemoveDeviceSpec { id: "nope".into() }),
            404,
        ),
        (
            "PUT",
            "/vm/resize-disk",
            r#"{"id":"d2","size_bytes":2147483648,"shrink":true}"#.into(),
            Action::ResizeDisk(ResizeDiskSpec {
                id: "d2".into(),
                size_bytes: 2 << 30,
                shrink: true,
            }),
            204,
        ),
    ];
    // All on one keep-alive connection.
    let mut s = connect(server.path());
    let mut left = Vec::new();
    for (method, path, body, action, status) in cases {
        s.write_all(&req(method, path, &body)).unwrap();
        let reply = read_reply(&mut s, &mut left);
        assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
        assert_eq!(rec.taken(), vec![action], "{method} {path}");
        match status {
            204 => {
                assert!(reply.body.is_empty());
                assert_eq!(reply.header("content-length"), None);
            }
            200 => {
                assert_eq!(reply.header("content-type"), Some("application/json"));
                reply.json();
            }
            _ => assert!(!reply.error().is_empty()),
        }
    }
    assert_eq!(
        read_reply_to(&mut s, &req("GET", "/vm", "")).json()["devices"][0]["id"],
        "disk0"
    );
    let reply = read_reply_to(&mut s, &req("PUT", "/vm/boot", ""));
    assert_eq!(reply.error(), "the VM is already running");
}

fn read_reply_to(s: &mut UnixStream, raw: &[u8]) -> Reply {
    s.write_all(raw).unwrap();
    read_reply(s, &mut Vec::new())
}

#[test]
fn openapi_is_served_as_json() {
    let (_dir, server, rec) = server("openapi", ServerLimits::default());
    let reply = exchange(server.path(), &req("GET", "/openapi", ""));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.json()["paths"]["/vm/pause"]["put"].is_object());
    assert!(
        rec.taken().is_empty(),
        "the controller is not asked for /openapi"
    );
}

#[test]
fn bad_json_and_unknown_fields_are_400_and_keep_the_connection() {
    let (_dir, server, rec) = server("badjson", ServerLimits::default());
    let mut s = connect(server.path());
    let cases = [
        (
            "/vm/add-disk",
            r#"{"path":"/a","colour":"red"}"#,
            "unknown field `colour`",
        ),
        ("/vm/add-disk", r#"{"path":"#, "EOF while parsing"),
        (
            "/vm/add-disk",
            r#"{"readonly":true}"#,
            "missing field `path`",
        ),
        (
            "/vm/resize-disk",
            r#"{"id":"d","size_bytes":"big"}"#,
            "invalid type",
        ),
        ("/vm/add-net", "[1,2]", "must be a JSON object"),
        ("/vm/add-net", "[null,null]", "must be a JSON object"),
        ("/vm/config", "", "needs a JSON VmConfigSpec body"),
        ("/vm/pause", r#"{"force":true}"#, "takes no body"),
        ("/vm/add-disk", "\u{0}\u{1}", "invalid DiskSpec body"),
    ];
    for (path, body, want) in cases {
        let reply = read_reply_to(&mut s, &req("PUT", path, body));
        assert_eq!(reply.status, 400, "{path} {body}");
        let msg = reply.error();
        assert!(msg.contains(want), "{path} {body}: {msg}");
    }
    assert!(rec.taken().is_empty());
    // Deeply nested JSON is refused, not a stack overflow.
    let deep = format!(r#"{{"path":{}}}"#, "[".repeat(5000));
    let reply = read_reply_to(&mut s, &req("PUT", "/vm/add-disk", &deep));
    assert_eq!(reply.status, 400);
    assert_eq!(read_reply_to(&mut s, &req("GET", "/vm", "")).status, 200);
}

#[test]
fn unknown_paths_404_and_wrong_methods_405() {
    let (_dir, server, rec) = server("paths", ServerLimits::default());
    let mut s = connect(server.path());
    let reply = read_reply_to(&mut s, &req("GET", "/nothing", ""));
    assert_eq!(reply.status, 404);
    assert!(reply.error().contains("/nothing"));
    for (method, path, allow) in [
        ("POST", "/vm", "GET"),
        ("PUT", "/vm/counters", "GET"),
        ("GET", "/vm/pause", "PUT"),
        ("DELETE", "/vm/remove-device", "PUT"),
        ("HEAD", "/openapi", "GET"),
    ] {
        let reply = read_reply_to(&mut s, &req(method, path, ""));
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(reply.header("allow"), Some(allow));
        assert!(reply.error().contains(allow));
    }
    assert!(rec.taken().is_empty());
}

#[test]
fn malformed_http_is_400_and_closes() {
    let (_dir, server, rec) = server("malformed", ServerLimits::default());
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /vm HTTP/2.0\r\n\r\n",
        b"GET  HTTP/1.1\r\n\r\n",
        b"GET /vm HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET /vm HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"PUT /vm/pause HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}",
        b"\x00\xff\xfe\r\n\r\n",
    ] {
        let (reply, shut) = exchange_closing(server.path(), raw);
        assert_eq!(reply.status, 400, "{:?}", String::from_utf8_lossy(raw));
        assert!(!reply.error().is_empty());
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(
            shut,
            "{:?} left the connection open",
            String::from_utf8_lossy(raw)
        );
    }
    assert!(rec.taken().is_empty());
}

#[test]
fn chunked_bodies_are_refused() {
    let (_dir, server, _rec) = server("chunked", ServerLimits::default());
    let raw =
        b"PUT /vm/add-disk HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    let (reply, shut) = exchange_closing(server.path(), raw);
    assert_eq!(reply.status, 411);
    assert!(reply.error().contains("Content-Length"));
    assert!(shut);
}

#[test]
fn oversize_headers_431_and_bodies_413() {
    let (_dir, server, rec) = server("oversize", ServerLimits::default());
    let big = format!(
        "GET /vm HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(9 << 10)
    );
    let (reply, shut) = exchange_closing(server.path(), big.as_bytes());
    assert_eq!(reply.status, 431);
    assert!(shut);
    // Headers that never end are cut off at the limit, without waiting
    // for the blank line.
    let mut s = connect(server.path());
    let line = format!("X-A: {}\r\n", "b".repeat(100));
    s.write_all(b"GET /vm HTTP/1.1\r\n").unwrap();
    s.write_all(line.repeat(90).as_bytes()).unwrap();
    assert_eq!(read_reply(&mut s, &mut Vec::new()).status, 431);
    assert!(closed(&mut s));

    let body = format!(r#"{{"path":"{}"}}"#, "p".repeat(70 << 10));
    let (reply, shut) = exchange_closing(server.path(), &req("PUT", "/vm/add-disk", &body));
    assert_eq!(reply.status, 413);
    assert!(reply.error().contains("65536"));
    assert!(shut);
    // A body at the limit is fine.
    let body = format!(r#"{{"path":"{}"}}"#, "p".repeat((64 << 10) - 11));
    assert_eq!(body.len(), 64 << 10);
    let reply = exchange(server.path(), &req("PUT", "/vm/add-disk", &body));
    assert_eq!(reply.status, 200);
    assert_eq!(rec.taken().len(), 1);
}

#[test]
fn a_stalled_client_holds_only_its_own_connection() {
    let limits = ServerLimits {
        request_timeout: Duration::from_millis(800),
        ..ServerLimits::default()
    };
    let (_dir, server, _rec) = server("stall", limits);
    let mut stalled = connect(server.path());
    stalled
        .write_all(b"PUT /vm/add-disk HTTP/1.1\r\nContent-Len")
        .unwrap();
    let mut stalled_body = connect(server.path());
    stalled_body
        .write_all(b"PUT /vm/add-disk HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"pa")
        .unwrap();
    let t = Instant::now();
    for _ in 0..20 {
        let reply = exchange(server.path(), &req("GET", "/vm", ""));
        assert_eq!(reply.status, 200);
    }
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "others waited: {:?}",
        t.elapsed()
    );
    // The stalled ones are cut off with 408 once their time is up.
    for s in [&mut stalled, &mut stalled_body] {
        let reply = read_reply(s, &mut Vec::new());
        assert_eq!(reply.status, 408);
        assert!(closed(s));
    }
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_hundred_concurrent_clients_are_each_answered() {
    let (_dir, server, rec) = server("hundred", ServerLimits::default());
    let path = server.path().to_path_buf();
    let barrier = Arc::new(std::sync::Barrier::new(100));
    let ok = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let path = path.clone();
            let barrier = barrier.clone();
            let ok = ok.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let reply = exchange(
                    &path,
                    b"GET /vm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                );
                assert_eq!(reply.status, 200, "{:?}", reply);
                assert_eq!(reply.json()["cpus"], 2);
                ok.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(ok.load(Ordering::SeqCst), 100);
    assert_eq!(rec.taken().len(), 100);
}

#[test]
fn connections_beyond_the_cap_get_503() {
    let limits = ServerLimits {
        max_connections: 2,
        slot_wait: Duration::from_millis(50),
        // Idle connections are not reclaimed here.
        reclaim_after: Duration::from_secs(3600),
        ..ServerLimits::default()
    };
    let (_dir, server, _rec) = server("cap", limits);
    let mut a = connect(server.path());
    let b = connect(server.path());
    // Make sure both are admitted before the third arrives.
    assert_eq!(read_reply_to(&mut a, &req("GET", "/vm", "")).status, 200);
    let (reply, shut) = exchange_closing(server.path(), &req("GET", "/vm", ""));
    assert_eq!(reply.status, 503);
    assert!(reply.error().contains("at most 2"));
    assert!(shut);
    drop(b);
    std::thread::sleep(Duration::from_millis(50));
    let reply = exchange(server.path(), &req("GET", "/vm", ""));
    assert_eq!(reply.status, 200);
    assert_eq!(read_reply_to(&mut a, &req("GET", "/vm", "")).status, 200);
}

#[test]
fn idle_keep_alive_clients_cannot_lock_a_new_one_out() {
    // Production limits: 16 slots.
    let (_dir, server, _rec) = server("idle16", ServerLimits::default());
    let mut idle: Vec<UnixStream> = (0..16)
        .map(|_| {
            let mut s = connect(server.path());
            assert_eq!(read_reply_to(&mut s, &req("GET", "/vm", "")).status, 200);
            s
        })
        .collect();
    // Each of the 16 is now idle between requests; a 17th and 18th client
    // are served, each by closing the connection idle longest.
    std::thread::sleep(ServerLimits::default().reclaim_after);
    let mut newcomers = Vec::new();
    for _ in 0..2 {
        // They stay connected, so the 18th finds no slot freed by the 17th.
        let mut s = connect(server.path());
        let reply = read_reply_to(&mut s, &req("GET", "/vm", ""));
        assert_eq!(reply.status, 200, "{reply:?}");
        newcomers.push(s);
    }
    assert!(
        closed(&mut idle[0]),
        "the longest-idle connection was not closed"
    );
    assert!(closed(&mut idle[1]));
    // The others were left alone and still work.
    assert_eq!(
        read_reply_to(&mut idle[15], &req("GET", "/vm", "")).status,
        200
    );
}

#[test]
fn busy_connections_are_never_reclaimed() {
    let limits = ServerLimits {
        max_connections: 2,
        slot_wait: Duration::from_millis(50),
        request_timeout: Duration::from_secs(3),
        ..ServerLimits::default()
    };
    let (_dir, server, _rec) = server("busy", limits);
    // Two clients each half-way through a request: neither is idle.
    let mut a = connect(server.path());
    let mut b = connect(server.path());
    for s in [&mut a, &mut b] {
        s.write_all(b"PUT /vm/remove-device HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"id\"")
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let (reply, _) = exchange_closing(server.path(), &req("GET", "/vm", ""));
    assert_eq!(reply.status, 503);
    // Both finish their requests.
    for s in [&mut a, &mut b] {
        s.write_all(b":\"x\"}").unwrap();
        assert_eq!(read_reply(s, &mut Vec::new()).status, 204);
    }
}

#[test]
fn http10_keep_alive_is_answered_with_the_header() {
    let (_dir, server, _rec) = server("http10", ServerLimits::default());
    let mut s = connect(server.path());
    let mut left = Vec::new();
    for _ in 0..3 {
        s.write_all(b"GET /vm HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let reply = read_reply(&mut s, &mut left);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("connection"), Some("keep-alive"));
    }
    // HTTP/1.1 keeps alive by default and says nothing.
    s.write_all(&req("GET", "/vm", "")).unwrap();
    assert_eq!(read_reply(&mut s, &mut left).header("connection"), None);
}

#[test]
fn keep_alive_pipelining_and_connection_close() {
    let (_dir, server, rec) = server("keepalive", ServerLimits::default());
    let mut s = connect(server.path());
    let mut left = Vec::new();
    for _ in 0..50 {
        s.write_all(&req("GET", "/vm", "")).unwrap();
        let reply = read_reply(&mut s, &mut left);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("connection"), None);
    }
    // Three requests in one write, answered in order.
    let mut burst = req("PUT", "/vm/pause", "");
    burst.extend(req("GET", "/vm/counters", ""));
    burst.extend(req("PUT", "/vm/resume", ""));
    s.write_all(&burst).unwrap();
    let statuses: Vec<u16> = (0..3)
        .map(|_| read_reply(&mut s, &mut left).status)
        .collect();
    assert_eq!(statuses, [204, 200, 204]);
    // A request split across many writes.
    for b in req("PUT", "/vm/remove-device", r#"{"id":"disk0"}"#) {
        s.write_all(&[b]).unwrap();
    }
    assert_eq!(read_reply(&mut s, &mut left).status, 204);
    // Expect: 100-continue gets its interim answer before the body is sent.
    s.write_all(
        b"PUT /vm/remove-device HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    )
    .unwrap();
    assert_eq!(read_reply(&mut s, &mut left).status, 100);
    s.write_all(br#"{"id":"x"}"#).unwrap();
    s.write_all(b" ").unwrap();
    assert_eq!(read_reply(&mut s, &mut left).status, 204);
    // Connection: close is honoured.
    s.write_all(b"GET /vm HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let reply = read_reply(&mut s, &mut left);
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(closed(&mut s));
    // HTTP/1.0 closes by default.
    let (reply, shut) = exchange_closing(server.path(), b"GET /vm HTTP/1.0\r\n\r\n");
    assert_eq!(reply.status, 200);
    assert!(shut);
    assert_eq!(rec.taken().len(), 50 + 3 + 2 + 2);
}

#[test]
fn random_bytes_never_hurt_the_server() {
    let (_dir, server, _rec) = server("fuzz", ServerLimits::default());
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let pieces: [&[u8]; 12] = [
        b"GET ",
        b"PUT ",
        b"/vm",
        b"/vm/add-disk",
        b" HTTP/1.1\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 99999999\r\n",
        b"\r\n",
        b"{\"path\":",
        b"\x00\xff",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
    ];
    for _ in 0..300 {
        let mut raw = Vec::new();
        for _ in 0..(next() % 12) {
            if next() % 4 == 0 {
                raw.extend((0..next() % 40).map(|_| (next() & 0xff) as u8));
            } else {
                raw.extend_from_slice(pieces[(next() % 12) as usize]);
            }
        }
        let mut s = connect(server.path());
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let _ = s.write_all(&raw);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let reply = exchange(server.path(), &req("GET", "/vm", ""));
    assert_eq!(reply.status, 200);
}

#[test]
fn socket_mode_stale_sockets_and_removal() {
    let dir = Scratch::new("socketfile");
    let path = dir.path("api.sock");
    let rec: Arc<dyn VmController> = Arc::new(Recorder::default());
    let mut server = ApiServer::start(&path, rec.clone()).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // No private directory is left behind.
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("api.sock")]);
    // A live socket is not taken over.
    let err = ApiServer::start(&path, rec.clone()).err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    // An open connection is closed by shutdown; the file goes away.
    let mut open = connect(&path);
    assert_eq!(read_reply_to(&mut open, &req("GET", "/vm", "")).status, 200);
    server.shutdown();
    assert!(!path.exists());
    assert!(closed(&mut open));
    assert!(UnixStream::connect(&path).is_err());
    drop(server);

    // A stale socket (nobody accepting) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = ApiServer::start(&path, rec.clone()).unwrap();
    assert_eq!(exchange(&path, &req("GET", "/vm", "")).status, 200);
    drop(server);
    assert!(!path.exists());

    // Any other file is left alone.
    std::fs::write(&path, "precious").unwrap();
    let err = ApiServer::start(&path, rec.clone()).err().unwrap();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert!(ApiServer::start(&path, rec.clone()).is_err());
    std::fs::remove_dir(&path).unwrap();

    // A socket file someone put in our place after we started is not
    // removed by our shutdown.
    let server = ApiServer::start(&path, rec.clone()).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "theirs").unwrap();
    drop(server);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "theirs");
}

#[test]
fn drop_returns_promptly_with_idle_and_stalled_clients() {
    let (_dir, server, _rec) = server("drop", ServerLimits::default());
    let path = server.path().to_path_buf();
    let mut idle = connect(&path);
    let mut half = connect(&path);
    half.write_all(b"GET /vm HTTP/1.1\r\n").unwrap();
    assert_eq!(read_reply_to(&mut idle, &req("GET", "/vm", "")).status, 200);
    let t = Instant::now();
    drop(server);
    assert!(t.elapsed() < Duration::from_millis(500));
    assert!(!path.exists());
    assert!(closed(&mut idle));
}

/// Sends `raw` on a fresh connection with `fds` riding on its first
/// bytes (SCM_RIGHTS), then the rest; the reply.
fn exchange_with_fds(path: &Path, raw: &[u8], fds: &[std::os::fd::RawFd]) -> Reply {
    use vmm_sys_util::sock_ctrl_msg::ScmSocket;
    let mut s = connect(path);
    let sent = s.send_with_fds(&[raw], fds).unwrap();
    s.write_all(&raw[sent..]).unwrap();
    read_reply(&mut s, &mut Vec::new())
}

/// `add-net` with `tap_fd` takes the one descriptor sent with it; any
/// other count, or a descriptor on a request that takes none, is 400 and
/// the descriptors are closed, never kept.
#[test]
fn add_net_takes_the_tap_descriptor_sent_with_it() {
    use std::os::fd::AsRawFd;
    let (dir, server, rec) = server("fds", ServerLimits::default());
    // A file of its own, so that counting its descriptors below sees no
    // other test's.
    let marker = dir.path("passed");
    std::fs::write(&marker, b"").unwrap();
    let file = std::fs::File::open(&marker).unwrap();
    let fd = file.as_raw_fd();
    let body = r#"{"id":"n1","tap_fd":true}"#;

    let ok = exchange_with_fds(server.path(), &req("PUT", "/vm/add-net", body), &[fd]);
    assert_eq!(ok.status, 204, "{:?}", String::from_utf8_lossy(&ok.body));
    let taken = rec.taken();
    assert!(
        matches!(
            &taken[..],
            [Action::AddNet(NetSpec {
                tap_fd: true,
                passed: Some(_),
                ..
            })]
        ),
        "{taken:?}"
    );
    // The server's copy is the controller's now; with the recorder gone
    // it is closed (the recorder dropped its action above).
    drop(taken);

    // Schema-valid bodies whose descriptor is missing or doubled: 422.
    let none = exchange(server.path(), &req("PUT", "/vm/add-net", body));
    assert_eq!(none.status, 422);
    assert!(none.error().contains("tap_fd"), "{}", none.error());
    let two = exchange_with_fds(server.path(), &req("PUT", "/vm/add-net", body), &[fd, fd]);
    assert_eq!(two.status, 422);
    assert!(two.error().contains("2 came"), "{}", two.error());
    let stray = exchange_with_fds(server.path(), &req("GET", "/vm", ""), &[fd]);
    assert_eq!(stray.status, 400);
    assert!(stray.error().contains("takes none"), "{}", stray.error());
    let many = exchange_with_fds(
        server.path(),
        &req("PUT", "/vm/add-net", body),
        &[fd, fd, fd, fd, fd],
    );
    assert_eq!(many.status, 400);
    assert!(many.error().contains("at most 4"), "{}", many.error());
    assert!(rec.taken().is_empty());

    // None of the descriptors sent stays open in this process beyond
    // ours: the server closed every copy it was given.
    let open = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| *t == marker)
        .count();
    assert_eq!(open, 1, "copies of the passed descriptor were kept");
}

/// A controller whose power-off takes a while to answer, as a VM's does
/// when the power-off is what ends it: it tells the test when it has
/// begun, then answers.
struct SlowPowerOff {
    begun: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

impl VmController for SlowPowerOff {
    fn handle(&self, action: Action) -> ActionResult {
        if action == Action::PowerOff {
            if let Some(tx) = self.begun.lock().unwrap().take() {
                let _ = tx.send(());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(Value::Null)
    }
}

#[test]
fn a_request_being_answered_when_the_server_shuts_down_gets_its_answer() {
    let dir = Scratch::new("answer-at-shutdown");
    let (tx, begun) = std::sync::mpsc::channel();
    let controller = Arc::new(SlowPowerOff {
        begun: Mutex::new(Some(tx)),
    });
    let mut server = ApiServer::start(&dir.path("api.sock"), controller).unwrap();
    let mut idle = connect(&dir.path("api.sock"));
    let mut s = connect(&dir.path("api.sock"));
    s.write_all(&req("PUT", "/vm/power-off", "")).unwrap();
    begun.recv_timeout(Duration::from_secs(10)).unwrap();
    // The VMM shuts its server down as the VM ends, while the answer is
    // still being made.
    let started = Instant::now();
    server.shutdown();
    assert!(
        started.elapsed() < vmm::api::ANSWER_GRACE,
        "the shutdown waited for its grace period: {:?}",
        started.elapsed()
    );
    let reply = read_reply(&mut s, &mut Vec::new());
    assert_eq!(reply.status, 204);
    // An idle connection is simply closed.
    assert!(closed(&mut idle));
}
