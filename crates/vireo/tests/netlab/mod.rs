//! What the guest network tests share: a TCP echo server inside a named
//! network namespace, and the FNV-1a checksums the `virtio` guest prints
//! for what it sent and received.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

/// FNV-1a 32-bit's starting value.
pub const FNV_START: u32 = 0x811c_9dc5;

/// FNV-1a 32-bit of `bytes`, continuing from `hash`.
pub fn fnv1a(mut hash: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    hash
}

/// FNV-1a of the guest's pattern: byte i is i mod 251.
pub fn pattern_hash(len: u64) -> u32 {
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    fnv1a(FNV_START, &bytes)
}

/// The value after `key` on the first line that starts with `prefix`.
pub fn field<'a>(text: &'a str, prefix: &str, key: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(prefix))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key))
}

/// A TCP echo server on `bind` inside network namespace `netns` (a name
/// under /run/netns) for `connections` connections: each is read to its
/// end, echoing as it goes, then closed. Sends back (peer, bytes
/// received, FNV-1a of them) per connection. Returns once it listens.
pub fn echo_server(
    netns: &str,
    bind: SocketAddr,
    connections: usize,
) -> mpsc::Receiver<(SocketAddr, u64, u32)> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = File::open(&path).expect("open the namespace");
        // SAFETY: setns on a valid namespace descriptor changes only this
        // thread's network namespace.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let listener = TcpListener::bind(bind).expect("bind the server");
        ready_tx.send(()).unwrap();
        for _ in 0..connections {
            let Ok((mut conn, peer)) = listener.accept() else {
                return;
            };
            conn.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let (mut total, mut hash) = (0u64, FNV_START);
            let mut buf = [0u8; 4096];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        total += n as u64;
                        hash = fnv1a(hash, &buf[..n]);
                        if conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            drop(conn);
            let _ = tx.send((peer, total, hash));
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("echo server ready");
    rx
}

/// From inside network namespace `netns`: connects to `to`, sends `data`,
/// shuts the sending side and reads until the peer closes (30 s bound
/// each: a polled guest on a busy host is slow to answer). What came back, or the error as
/// text.
pub fn exchange(netns: &str, to: SocketAddr, data: &[u8]) -> Result<Vec<u8>, String> {
    let path = format!("/run/netns/{netns}");
    let data = data.to_vec();
    std::thread::spawn(move || {
        let ns = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: as in echo_server: only this thread moves.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        let limit = Duration::from_secs(30);
        let mut s = std::net::TcpStream::connect_timeout(&to, limit)
            .map_err(|e| format!("connect {to}: {e}"))?;
        s.set_read_timeout(Some(limit)).unwrap();
        s.set_write_timeout(Some(limit)).unwrap();
        s.write_all(&data).map_err(|e| format!("send: {e}"))?;
        s.shutdown(std::net::Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
        let mut back = Vec::new();
        s.read_to_end(&mut back)
            .map_err(|e| format!("receive: {e}"))?;
        Ok(back)
    })
    .join()
    .map_err(|_| "the exchange thread panicked".to_string())?
}
