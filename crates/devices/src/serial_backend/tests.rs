use super::*;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::serial_input::spawn_input_thread;

/// A fresh path under the temp dir, removed (with whatever is there) on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("vireo-serial-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Self(path)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn evt() -> EventFd {
    EventFd::new(libc::EFD_NONBLOCK).unwrap()
}

/// Collect delivered input into a channel.
fn collect(input: SerialInput) -> (mpsc::Receiver<Vec<u8>>, EventFd, thread::JoinHandle<()>) {
    let stop = evt();
    let (tx, rx) = mpsc::channel();
    let handle = spawn_input_thread(input, stop.try_clone().unwrap(), move |b| {
        let _ = tx.send(b.to_vec());
        b.len()
    })
    .unwrap();
    (rx, stop, handle)
}

use std::thread;

fn recv_exactly(rx: &mpsc::Receiver<Vec<u8>>, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < len {
        got.extend(rx.recv_timeout(Duration::from_secs(5)).unwrap());
    }
    got
}

#[test]
fn parses_every_backend_and_round_trips() {
    for text in [
        "stdout",
        "pty",
        "off",
        "file:/tmp/x.log",
        "unix:/run/vm.sock",
        "unix-connect:/run/peer.sock",
    ] {
        let backend: SerialBackend = text.parse().unwrap();
        assert_eq!(backend.to_string(), text);
    }
    assert_eq!(
        "file:/a b".parse::<SerialBackend>().unwrap(),
        SerialBackend::File(PathBuf::from("/a b"))
    );
}

#[test]
fn parse_errors_name_the_bad_value() {
    let err = "foo".parse::<SerialBackend>().unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown serial backend 'foo' (expected stdout, file:PATH, unix:PATH, unix-connect:PATH, pty or off)"
    );
    let err = "file:".parse::<SerialBackend>().unwrap_err().to_string();
    assert!(err.contains("'file:' needs a path"), "{err}");
    let err = "unix:".parse::<SerialBackend>().unwrap_err().to_string();
    assert!(err.contains("'unix:' needs a path"), "{err}");
    let long = format!("unix:/{}", "s".repeat(107));
    let err = long.parse::<SerialBackend>().unwrap_err().to_string();
    assert!(err.contains("the socket path is 108 bytes"), "{err}");
    assert!(format!("unix:/{}", "s".repeat(106))
        .parse::<SerialBackend>()
        .is_ok());
    assert!("STDOUT".parse::<SerialBackend>().is_err());
    assert!("".parse::<SerialBackend>().is_err());
}

#[test]
fn file_backend_truncates_and_writes() {
    let path = TempPath::new("file");
    std::fs::write(&path.0, b"old contents that must go").unwrap();
    let mut opened = SerialBackend::File(path.0.clone()).open(&evt()).unwrap();
    assert!(opened.input.is_none());
    assert!(opened.pty_path.is_none());
    opened.output.write_all(b"boot ok\n").unwrap();
    assert_eq!(std::fs::read(&path.0).unwrap(), b"boot ok\n");
}

#[test]
fn output_files_append_when_not_truncated() {
    let path = TempPath::new("append");
    std::fs::write(&path.0, b"kept\n").unwrap();
    let mut f = open_output_file(&path.0, false).unwrap();
    f.write_all(b"more\n").unwrap();
    assert_eq!(std::fs::read(&path.0).unwrap(), b"kept\nmore\n");
    let mut f = open_output_file(&path.0, true).unwrap();
    f.write_all(b"new\n").unwrap();
    assert_eq!(std::fs::read(&path.0).unwrap(), b"new\n");
}

#[test]
fn file_backend_reports_unwritable_path() {
    let err = SerialBackend::File(PathBuf::from("/nonexistent-dir/x.log"))
        .open(&evt())
        .unwrap_err();
    assert!(matches!(err, SerialBackendError::File { .. }));
    assert!(err.to_string().contains("/nonexistent-dir/x.log"));
}

#[test]
fn off_discards() {
    let mut opened = SerialBackend::Off.open(&evt()).unwrap();
    assert!(opened.input.is_none());
    assert_eq!(opened.output.write(b"nowhere").unwrap(), 7);
}

#[test]
fn unix_backend_talks_to_a_client() {
    let path = TempPath::new("sock");
    let mut opened = SerialBackend::Unix(path.0.clone()).open(&evt()).unwrap();
    // No client yet: output is kept for the first client, not blocked on.
    opened.output.write_all(b"early").unwrap();

    let (rx, stop, handle) = collect(opened.input.take().unwrap());
    let mut client = UnixStream::connect(&path.0).unwrap();
    // Input from the client reaches the guest side; once it has, the
    // client is registered for output.
    client.write_all(b"in").unwrap();
    assert_eq!(recv_exactly(&rx, 2), b"in");
    opened.output.write_all(b"hello").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 10];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"earlyhello");

    // A client that never reads does not block the writer.
    let t = Instant::now();
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..64 {
        opened.output.write_all(&chunk).unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(5));

    // A second client replaces the first.
    drop(client);
    let mut second = UnixStream::connect(&path.0).unwrap();
    second.write_all(b"2").unwrap();
    assert_eq!(recv_exactly(&rx, 1), b"2");
    opened.output.write_all(b"to-second").unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 9];
    second.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"to-second");

    stop.write(1).unwrap();
    handle.join().unwrap();
    // Dropping the backend removes the socket file.
    drop(opened);
    assert!(!path.0.exists());
}

#[test]
fn unix_backend_replays_only_the_newest_output_kept() {
    let path = TempPath::new("ring");
    let mut opened = SerialBackend::Unix(path.0.clone()).open(&evt()).unwrap();
    // More than the ring holds, before anyone connects: the oldest bytes
    // go, the newest REPLAY_CAPACITY stay.
    opened.output.write_all(b"old").unwrap();
    let filler = vec![b'f'; REPLAY_CAPACITY - 3];
    opened.output.write_all(&filler).unwrap();
    opened.output.write_all(b"new").unwrap();
    let (_rx, stop, handle) = collect(opened.input.take().unwrap());
    let mut client = UnixStream::connect(&path.0).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = vec![0u8; REPLAY_CAPACITY];
    client.read_exact(&mut got).unwrap();
    assert!(got.starts_with(b"fff"));
    assert!(got.ends_with(b"fnew"));
    // Nothing more was kept.
    opened.output.write_all(b"!").unwrap();
    let mut one = [0u8; 1];
    client.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"!");
    stop.write(1).unwrap();
    handle.join().unwrap();
}

#[test]
fn file_backend_refuses_what_is_not_a_regular_file() {
    let dir = TempPath::new("fifo-dir");
    std::fs::create_dir(&dir.0).unwrap();
    let err = SerialBackend::File(dir.0.clone()).open(&evt()).unwrap_err();
    assert!(
        format!("{err}: {}", std::error::Error::source(&err).unwrap()).contains("is a directory"),
        "{err}"
    );
    std::fs::remove_dir(&dir.0).unwrap();
    let fifo = TempPath::new("fifo");
    let c = std::ffi::CString::new(fifo.0.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path only.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Opening a FIFO for writing would block until a reader came.
    let err = SerialBackend::File(fifo.0.clone())
        .open(&evt())
        .unwrap_err();
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("is a FIFO, not a regular file"), "{source}");
}

#[test]
fn unix_connect_backend_talks_to_the_listener() {
    let path = TempPath::new("peer");
    let listener = UnixListener::bind(&path.0).unwrap();
    let mut opened = SerialBackend::UnixConnect(path.0.clone())
        .open(&evt())
        .unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    opened.output.write_all(b"out").unwrap();
    let mut buf = [0u8; 3];
    peer.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"out");
    let (rx, stop, handle) = collect(opened.input.take().unwrap());
    peer.write_all(b"in").unwrap();
    assert_eq!(recv_exactly(&rx, 2), b"in");
    stop.write(1).unwrap();
    handle.join().unwrap();
    // Nobody listening: one line naming the socket.
    drop(listener);
    let err = SerialBackend::UnixConnect(path.0.clone())
        .open(&evt())
        .unwrap_err();
    assert!(
        err.to_string().contains(&path.0.display().to_string()),
        "{err}"
    );
}

#[test]
fn unix_backend_does_not_steal_a_live_socket() {
    let path = TempPath::new("live");
    let live = UnixListener::bind(&path.0).unwrap();
    let err = SerialBackend::Unix(path.0.clone())
        .open(&evt())
        .unwrap_err();
    assert!(matches!(err, SerialBackendError::InUse(_)), "{err}");
    // The listener still owns the path: a client reaches it.
    live.set_nonblocking(true).unwrap();
    let _client = UnixStream::connect(&path.0).unwrap();
    assert!(live.accept().is_ok());
}

#[test]
fn unix_backend_replaces_stale_socket_but_not_files() {
    let path = TempPath::new("stale");
    drop(UnixListener::bind(&path.0).unwrap());
    assert!(path.0.exists());
    let opened = SerialBackend::Unix(path.0.clone()).open(&evt()).unwrap();
    drop(opened);

    std::fs::write(&path.0, b"precious").unwrap();
    let err = SerialBackend::Unix(path.0.clone())
        .open(&evt())
        .unwrap_err();
    assert!(matches!(err, SerialBackendError::NotASocket(_)));
    assert!(err.to_string().contains("not a socket"));
    assert_eq!(std::fs::read(&path.0).unwrap(), b"precious");
}

#[test]
fn pty_round_trips() {
    let mut opened = SerialBackend::Pty.open(&evt()).unwrap();
    let path = opened.pty_path.clone().unwrap();
    assert!(path.starts_with("/dev/pts"), "{}", path.display());
    let (rx, stop, handle) = collect(opened.input.take().unwrap());

    let mut slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .unwrap();
    opened.output.write_all(b"guest says hi\n").unwrap();
    let mut buf = [0u8; 14];
    slave.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"guest says hi\n");

    // Raw mode: bytes arrive unchanged (no CR/NL mapping, no echo back).
    slave.write_all(b"ls\r\x03").unwrap();
    assert_eq!(recv_exactly(&rx, 4), b"ls\r\x03");
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());

    stop.write(1).unwrap();
    handle.join().unwrap();
}

#[test]
fn pty_output_never_blocks_without_a_reader() {
    let mut opened = SerialBackend::Pty.open(&evt()).unwrap();
    let t = Instant::now();
    let chunk = vec![b'y'; 4096];
    for _ in 0..256 {
        opened.output.write_all(&chunk).unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn socket_file_guard_keeps_non_sockets() {
    let path = TempPath::new("guard");
    std::fs::write(&path.0, b"x").unwrap();
    std::fs::set_permissions(&path.0, std::fs::Permissions::from_mode(0o600)).unwrap();
    drop(SocketFile {
        path: path.0.clone(),
    });
    assert!(path.0.exists());
}

#[test]
fn stdout_backend_reads_stdin() {
    // Only where the test's stdin is not a terminal: raw mode on the
    // developer's terminal is not something a unit test may do.
    if terminal::is_terminal(io::stdin().as_fd()) {
        eprintln!("skipped: stdin is a terminal");
        return;
    }
    let opened = SerialBackend::Stdout.open(&evt()).unwrap();
    assert!(opened.terminal.is_none());
    // cargo test's stdin may be /dev/null, which gets no input thread.
    assert_eq!(opened.input.is_some(), !is_dev_null(&io::stdin()));
    assert!(opened.pty_path.is_none());
}

#[test]
fn a_client_that_reads_late_still_gets_every_byte_written_one_at_a_time() {
    let path = TempPath::new("late");
    let mut opened = SerialBackend::Unix(path.0.clone()).open(&evt()).unwrap();
    let (rx, stop, handle) = collect(opened.input.take().unwrap());
    let mut client = UnixStream::connect(&path.0).unwrap();
    client.write_all(b"in").unwrap();
    assert_eq!(recv_exactly(&rx, 2), b"in");
    // A guest writes its UART a byte at a time: each is a send of its
    // own, and a unix socket holds only a few hundred of those unread.
    let text: Vec<u8> = (0..4000u32).map(|i| b'a' + (i % 26) as u8).collect();
    // The client reads only now, and the guest writes nothing more: what
    // waited is sent as the socket drains.
    write_bytewise_then_read_late(&mut opened.output, &mut client, &text);

    // Output still waiting when the VM ends goes out before the input
    // thread does.
    write_bytewise(&mut opened.output, &text);
    stop.write(1).unwrap();
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; 4000];
        client.read_exact(&mut got).map(|()| got)
    });
    handle.join().unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), text);
}

#[test]
fn a_unix_connect_peer_that_reads_late_gets_every_byte_and_its_hang_up_ends_input() {
    let path = TempPath::new("late-peer");
    let listener = UnixListener::bind(&path.0).unwrap();
    let mut opened = SerialBackend::UnixConnect(path.0.clone())
        .open(&evt())
        .unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    let (_rx, stop, handle) = collect(opened.input.take().unwrap());
    let text: Vec<u8> = (0..4000u32).map(|i| b'A' + (i % 26) as u8).collect();
    write_bytewise_then_read_late(&mut opened.output, &mut peer, &text);
    // The VM ends with output still waiting: it goes out first.
    write_bytewise(&mut opened.output, &text);
    stop.write(1).unwrap();
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; 4000];
        peer.read_exact(&mut got).map(|()| (got, peer))
    });
    handle.join().unwrap();
    let (got, peer) = reader.join().unwrap().unwrap();
    assert_eq!(got, text);

    // A new input thread on a fresh backend ends when the peer hangs up.
    let mut opened = SerialBackend::UnixConnect(path.0.clone())
        .open(&evt())
        .unwrap();
    let (second, _) = listener.accept().unwrap();
    let (_rx, _stop, handle) = collect(opened.input.take().unwrap());
    drop(second);
    drop(peer);
    handle.join().unwrap();
}

/// Write `text` as a guest's UART does, one byte per write.
fn write_bytewise(output: &mut impl Write, text: &[u8]) {
    for b in text {
        output.write_all(std::slice::from_ref(b)).unwrap();
    }
}

/// Write `text` one byte at a time before `reader` reads anything, then
/// read it all back (within 5 s): nothing may be lost while it waited.
fn write_bytewise_then_read_late(output: &mut impl Write, reader: &mut UnixStream, text: &[u8]) {
    write_bytewise(output, text);
    reader
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = vec![0u8; text.len()];
    reader.read_exact(&mut got).unwrap();
    assert_eq!(got, text);
}

#[test]
fn only_the_null_device_counts_as_no_input() {
    let null = File::open("/dev/null").unwrap();
    assert!(is_dev_null(&null));
    let zero = File::open("/dev/zero").unwrap();
    assert!(!is_dev_null(&zero));
    let (a, _b) = UnixStream::pair().unwrap();
    assert!(!is_dev_null(&a));
}
