//! A real nfs-ganesha, in a network namespace each test makes, driven
//! through the crate's API from a thread that enters that namespace.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nfs::test_server::{StartError, TestServer};
use nfs::{FileUrl, OpenFlags, RemoteFile};

fn server(tag: &str, dir: &std::path::Path) -> Option<TestServer> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: making a network namespace needs root");
        return None;
    }
    let export = dir.join("export");
    let state = dir.join("state");
    std::fs::create_dir_all(&export).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    match TestServer::start(tag, &export, &state) {
        Ok(s) => Some(s),
        Err(StartError::NotInstalled(why)) => {
            eprintln!("SKIP: {why}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Run `f` on a thread inside the server's network namespace.
fn inside<T: Send + 'static>(s: &TestServer, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = File::open(format!("/run/netns/{}", s.netns())).unwrap();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .unwrap()
}

/// Move the calling thread into the network namespace `ns`.
fn enter(ns: &File) {
    // SAFETY: a network namespace descriptor; affects this thread only.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

const T: Duration = Duration::from_secs(5);

#[test]
fn reads_writes_syncs_and_truncates_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = server("rw", dir.path()) else {
        return;
    };
    let host = s.export().join("disk.img");
    let data: Vec<u8> = (0..5 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(&host, &data).unwrap();
    let url = FileUrl::parse(&s.url("disk.img")).unwrap();
    let got = inside(&s, move || {
        let mut f = RemoteFile::open(&url, OpenFlags::ReadWrite, T).unwrap();
        assert_eq!(f.stat().unwrap().size, 5 << 20);
        // Larger than one call (and than one READ of the server).
        let mut buf = vec![0u8; 5 << 20];
        f.read_at(0, &mut buf).unwrap();
        // So is this write, which rewrites the file with what it holds.
        f.write_at(0, &buf).unwrap();
        f.write_at(4096, &[0xab; 8192]).unwrap();
        f.fsync().unwrap();
        f.truncate(6 << 20).unwrap();
        let mut tail = vec![1u8; 4096];
        // Past the end reads as zeroes.
        f.read_at((6 << 20) - 2048, &mut tail).unwrap();
        assert_eq!(tail, vec![0; 4096]);
        buf
    });
    assert_eq!(got, data);
    let now = std::fs::read(&host).unwrap();
    assert_eq!(now.len(), 6 << 20);
    assert_eq!(&now[12288..5 << 20], &data[12288..]);
    assert_eq!(&now[4096..4096 + 8192], &[0xab; 8192][..]);
    assert_eq!(&now[..4096], &data[..4096]);
}

#[test]
fn missing_exports_and_files_and_a_dead_server_fail_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut s) = server("bad", dir.path()) else {
        return;
    };
    std::fs::create_dir(s.export().join("sub")).unwrap();
    let missing_file = FileUrl::parse(&s.url("nope.img")).unwrap();
    let missing_export = FileUrl::parse("nfs://169.254.78.1/no/such/export/f.img").unwrap();
    let directory = FileUrl::parse(&s.url("sub")).unwrap();
    let (a, b, c) = inside(&s, move || {
        (
            RemoteFile::open(&missing_file, OpenFlags::ReadWrite, T).unwrap_err(),
            RemoteFile::open(&missing_export, OpenFlags::ReadWrite, T).unwrap_err(),
            RemoteFile::open(&directory, OpenFlags::ReadOnly, T).unwrap_err(),
        )
    });
    assert_eq!(a.errno(), Some(libc::ENOENT), "{a}");
    assert!(b.to_string().contains("mount"), "{b}");
    assert!(matches!(c, nfs::Error::NotAFile(_)), "{c}");

    // A frozen server: the call ends by its deadline and breaks the file.
    std::fs::write(s.export().join("d.img"), [0u8; 4096]).unwrap();
    let url = FileUrl::parse(&s.url("d.img")).unwrap();
    let ns = File::open(format!("/run/netns/{}", s.netns())).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        enter(&ns);
        let mut f = RemoteFile::open(&url, OpenFlags::ReadWrite, Duration::from_secs(2)).unwrap();
        tx.send(()).unwrap();
        go_rx.recv().unwrap();
        let start = Instant::now();
        let e = f.write_at(0, &[1u8; 512]).unwrap_err();
        (e.is_transport(), f.is_broken(), start.elapsed())
    });
    rx.recv().unwrap();
    s.freeze();
    go_tx.send(()).unwrap();
    let (transport, broken, took) = worker.join().unwrap();
    assert!(transport && broken);
    assert!(took < Duration::from_secs(4), "{took:?}");

    // Killed: a new open is refused at once.
    s.kill();
    let url = FileUrl::parse(&s.url("d.img")).unwrap();
    let (e, took) = inside(&s, move || {
        let start = Instant::now();
        let e = RemoteFile::open(&url, OpenFlags::ReadWrite, T).unwrap_err();
        (e, start.elapsed())
    });
    assert!(e.is_transport() || e.to_string().contains("mount"), "{e}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// A file queue on `url`, its service thread a plain thread started by
/// a first call (here, so that it is in the caller's network namespace
/// and reconnects there).
fn queue(url: &FileUrl, timeout: Duration) -> std::sync::Arc<nfs::FileQueue> {
    let file = RemoteFile::open(url, OpenFlags::ReadWrite, timeout).unwrap();
    let q = nfs::FileQueue::start(file, |body| std::thread::Builder::new().spawn(body)).unwrap();
    q.stat().unwrap();
    std::sync::Arc::new(q)
}

/// Run `f(i)` on `n` threads at once; their results, in order.
fn at_once<T: Send + 'static>(n: usize, f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let f = std::sync::Arc::new(f);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let f = std::sync::Arc::clone(&f);
            std::thread::spawn(move || f(i))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn a_file_queue_keeps_calls_in_flight_and_survives_a_restart_but_not_a_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut s) = server("queue", dir.path()) else {
        return;
    };
    let host = s.export().join("q.img");
    let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 253) as u8).collect();
    std::fs::write(&host, &data).unwrap();
    let url = FileUrl::parse(&s.url("q.img")).unwrap();
    let timeout = Duration::from_secs(2);
    let q = inside(&s, {
        let url = url.clone();
        move || queue(&url, timeout)
    });

    // Eight callers reading 1 MiB each at once: several calls share the
    // connection, and each gets its own bytes.
    let read = |q: std::sync::Arc<nfs::FileQueue>| {
        at_once(8, move |i| {
            let mut buf = vec![0u8; 1 << 20];
            let raw = [(buf.as_mut_ptr(), buf.len())];
            // SAFETY: `buf` lives, untouched, across the call.
            unsafe { q.read_raw((i as u64) << 20, &raw) }.map(|()| buf)
        })
    };
    for (i, got) in read(q.clone()).into_iter().enumerate() {
        assert!(got.unwrap() == data[i << 20..(i + 1) << 20], "piece {i}");
    }
    assert!(q.peak_in_flight() > 1, "{}", q.peak_in_flight());
    assert_eq!(q.in_flight(), 0);

    // The server restarts under the connection: the calls connect again
    // and go through.
    s.restart().unwrap();
    for got in read(q.clone()) {
        got.unwrap();
    }

    // Frozen: every caller gets a transport error by its deadline and
    // one reconnect's, none hangs.
    s.freeze();
    let start = Instant::now();
    for got in read(q.clone()) {
        let e = got.unwrap_err();
        assert!(e.is_transport(), "{e}");
    }
    let waited = start.elapsed();
    assert!(waited < 2 * timeout + timeout / 2, "{waited:?}");
    s.kill();
    drop(q);
}
