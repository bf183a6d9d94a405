//! What the guest network tests share: a TCP echo server inside a named
//! network namespace, and the hash the `virtio` guest prints of what it
//! sent and received.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

/// The hash the `virtio` guest prints of a TCP stream (`sent-hash=`,
/// `received-hash=`, `hash=`), fed piece by piece: the stream as
/// little-endian 8-byte words, word i hashed with FNV-1a 64 into lane
/// i mod 4 (lane k starting from the offset basis plus k), then the four
/// lanes, the zero-padded partial last word if any and the length hashed
/// into the offset basis (guests/virtio/src/stream.rs).
pub struct StreamHash {
    lanes: [u64; 4],
    words: u64,
    tail: Vec<u8>,
    len: u64,
}

const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV64_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv64(hash: u64, word: u64) -> u64 {
    (hash ^ word).wrapping_mul(FNV64_PRIME)
}

impl StreamHash {
    pub fn new() -> Self {
        Self {
            lanes: std::array::from_fn(|k| FNV64_OFFSET_BASIS.wrapping_add(k as u64)),
            words: 0,
            tail: Vec::new(),
            len: 0,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        self.tail.extend_from_slice(bytes);
        let whole = self.tail.len() / 8 * 8;
        for w in self.tail[..whole].chunks_exact(8) {
            let lane = (self.words % 4) as usize;
            self.lanes[lane] = fnv64(self.lanes[lane], u64::from_le_bytes(w.try_into().unwrap()));
            self.words += 1;
        }
        self.tail.drain(..whole);
    }

    /// As the guest prints it: 16 lowercase hex digits.
    pub fn finish(&self) -> String {
        let mut hash = self
            .lanes
            .iter()
            .fold(FNV64_OFFSET_BASIS, |h, &l| fnv64(h, l));
        if !self.tail.is_empty() {
            let mut word = [0u8; 8];
            word[..self.tail.len()].copy_from_slice(&self.tail);
            hash = fnv64(hash, u64::from_le_bytes(word));
        }
        format!("{:016x}", fnv64(hash, self.len))
    }
}

/// [`StreamHash`] of `bytes`.
pub fn stream_hash(bytes: &[u8]) -> String {
    let mut h = StreamHash::new();
    h.update(bytes);
    h.finish()
}

/// [`StreamHash`] of the guest's pattern: byte i is i mod 251.
pub fn pattern_hash(len: u64) -> String {
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    stream_hash(&bytes)
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
/// received, their [`StreamHash`]) per connection. Returns once it listens.
pub fn echo_server(
    netns: &str,
    bind: SocketAddr,
    connections: usize,
) -> mpsc::Receiver<(SocketAddr, u64, String)> {
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
            let (mut total, mut hash) = (0u64, StreamHash::new());
            let mut buf = [0u8; 4096];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        total += n as u64;
                        hash.update(&buf[..n]);
                        if conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            drop(conn);
            let _ = tx.send((peer, total, hash.finish()));
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
