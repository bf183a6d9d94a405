//! Running the `vireo` CLI under test as a child process, every wait
//! bounded (shared by `virsh.rs` and `virsh_remote.rs`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a CLI run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    /// Exit status (None: killed by a signal).
    pub code: Option<i32>,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
    /// How long it took.
    pub took: Duration,
}

impl Run {
    /// Panics unless it exited 0; its stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:?}");
        &self.stdout
    }

    /// Panics unless it failed with exit 1 and exactly one stderr line
    /// `error: ...`; that line without its prefix.
    pub fn error(&self) -> String {
        assert_eq!(self.code, Some(1), "{self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one error line: {self:?}");
        lines[0]
            .strip_prefix("error: ")
            .unwrap_or_else(|| panic!("no error: prefix: {self:?}"))
            .to_string()
    }
}

/// The longest any CLI run may take.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// `command` run to its end (killed and a panic after `limit`), with
/// `stdin` written to it.
pub fn run_command(mut command: Command, stdin: &[u8], limit: Duration) -> Run {
    let start = Instant::now();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = reader(child.stdout.take().expect("stdout"));
    let err = reader(child.stderr.take().expect("stderr"));
    let status = wait_bounded(&mut child, limit);
    let _ = writer.join();
    Run {
        code: status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        took: start.elapsed(),
    }
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    })
}

/// Wait for `child`; kill it and panic after `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `vireo -c URI ARGS...` command.
pub fn vireo_command(uri: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vireo"));
    c.arg("-c")
        .arg(uri)
        .args(args)
        .env_remove("VIREO_DEFAULT_URI");
    c
}

/// `vireo -c URI ARGS...` run to its end.
pub fn vireo(uri: &str, args: &[&str]) -> Run {
    run_command(vireo_command(uri, args), b"", RUN_LIMIT)
}

/// A child's stdout, line by line as it comes, on a channel.
pub fn lines_of(mut r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut pending = Vec::new();
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                if tx
                    .send(String::from_utf8_lossy(&line).trim_end().to_string())
                    .is_err()
                {
                    return;
                }
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(String::from_utf8_lossy(&pending).into_owned());
        }
    });
    rx
}

/// Receive lines until one satisfies `want` (within `limit`); the lines
/// seen before it.
pub fn wait_line(
    rx: &mpsc::Receiver<String>,
    limit: Duration,
    want: impl Fn(&str) -> bool,
) -> Result<Vec<String>, Vec<String>> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if want(&l) => return Ok(seen),
            Ok(l) => seen.push(l),
            Err(_) => return Err(seen),
        }
    }
}
