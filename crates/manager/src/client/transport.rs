//! The byte streams the client speaks HTTP over: the daemon's unix socket,
//! or the stdin/stdout of an `ssh` running `vireo proxy` on the far host.
//!
//! Reads wait with poll(2) against a deadline, so a daemon or host that
//! never answers ends in an error rather than a hang, whichever the stream.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::uri::SshTarget;

/// How long `ssh` may take to reach the host (its `ConnectTimeout`).
pub const SSH_CONNECT_TIMEOUT_SECS: u32 = 10;
/// How much of `ssh`'s stderr is kept for the error message.
const SSH_STDERR_KEEP: usize = 8192;
/// How long a closed `ssh` may take to exit before it is killed.
const SSH_EXIT_GRACE: Duration = Duration::from_secs(2);
/// How long the stderr reader may take to finish once ssh has exited.
const STDERR_DRAIN: Duration = Duration::from_millis(500);
/// A write that makes no progress for this long fails.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection to the daemon.
#[derive(Debug)]
pub enum Stream {
    /// The daemon's socket on this host.
    Unix(UnixStream),
    /// `ssh HOST -- vireo proxy`.
    Ssh(SshStream),
}

/// An `ssh` child whose stdin and stdout are the connection.
#[derive(Debug)]
pub struct SshStream {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    /// The tail of ssh's stderr (its own errors and the far side's).
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    /// Connect to a unix socket.
    pub fn unix(path: &Path) -> io::Result<Self> {
        let s = UnixStream::connect(path)?;
        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(Stream::Unix(s))
    }

    /// Start `ssh` to `target`, running `vireo proxy` there.
    pub fn ssh(target: &SshTarget) -> io::Result<Self> {
        // Its own process group: Ctrl-C on the terminal is for `vireo`
        // (which ends the session cleanly), not a kill of the transport.
        let mut child = Command::new("ssh")
            .args(ssh_args(target))
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run ssh: {e}")))?;
        let (Some(stdin), Some(stdout), Some(mut err)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("ssh was started without its pipes"));
        };
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        // A thread, so that ssh never blocks on a full stderr pipe while
        // the connection is busy.
        let stderr_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut kept = sink.lock().unwrap_or_else(|e| e.into_inner());
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > SSH_STDERR_KEEP {
                    let cut = kept.len() - SSH_STDERR_KEEP;
                    kept.drain(..cut);
                }
            }
        });
        Ok(Stream::Ssh(SshStream {
            child,
            stdin: Some(stdin),
            stdout,
            stderr,
            stderr_thread: Some(stderr_thread),
        }))
    }

    /// The descriptor to poll for reading.
    pub fn read_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Ssh(s) => s.stdout.as_fd(),
        }
    }

    /// Read what is there, waiting until `deadline` (forever with `None`)
    /// for something to arrive. `Ok(0)` is the end of the stream.
    pub fn read_some(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        loop {
            let timeout = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
                    }
                    i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX)
                }
            };
            if poll_in(self.read_fd(), timeout)? {
                let r = match self {
                    Stream::Unix(s) => s.read(buf),
                    Stream::Ssh(s) => s.stdout.read(buf),
                };
                match r {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => return other,
                }
            }
        }
    }

    /// Write all of `data`.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.write_all(data),
            Stream::Ssh(s) => match s.stdin.as_mut() {
                Some(w) => w.write_all(data).and_then(|()| w.flush()),
                None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
            },
        }
    }

    /// For `ssh`: the last line it (or the far side) wrote on stderr, once
    /// it has exited or within a short wait; what explains a closed stream.
    pub fn failure_reason(&mut self) -> Option<String> {
        let Stream::Ssh(s) = self else { return None };
        let deadline = Instant::now() + SSH_EXIT_GRACE;
        let status = loop {
            match s.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break None,
            }
        };
        if status.is_some() {
            // ssh is gone: what it wrote is drained within the grace
            // (and a moment more when it took all of it to exit).
            let drained = deadline.max(Instant::now() + STDERR_DRAIN);
            s.stderr_thread = join_by(s.stderr_thread.take(), drained);
        }
        let text = s.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let text = String::from_utf8_lossy(&text);
        let last = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(str::to_string);
        last.or_else(|| status.map(|st| format!("ssh exited with {st}")))
    }
}

impl Drop for SshStream {
    fn drop(&mut self) {
        // EOF on the far proxy's stdin ends it, and so ssh; a stuck one is
        // killed after a grace period.
        drop(self.stdin.take());
        let deadline = Instant::now() + SSH_EXIT_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        self.stderr_thread = join_by(self.stderr_thread.take(), Instant::now() + STDERR_DRAIN);
    }
}

/// Join the stderr reader if it ends by `deadline`; else hand it back
/// (left detached when dropped). Its pipe stays open as long as any
/// process holds it, and one that ssh started (a `ProxyCommand`) can
/// outlive ssh: an unbounded join would hang the client at exit.
fn join_by(
    thread: Option<std::thread::JoinHandle<()>>,
    deadline: Instant,
) -> Option<std::thread::JoinHandle<()>> {
    let t = thread?;
    while !t.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if t.is_finished() {
        let _ = t.join();
        None
    } else {
        Some(t)
    }
}

/// `ssh`'s arguments for `target`: never a password prompt, a bounded
/// connect, dead peers noticed, no escape character (the console carries
/// raw bytes), and the remote command quoted for the far shell.
pub fn ssh_args(target: &SshTarget) -> Vec<String> {
    let mut a: Vec<String> = [
        "-T",
        "-x",
        "-a",
        "-e",
        "none",
        "-o",
        "BatchMode=yes",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push("-o".into());
    a.push(format!("ConnectTimeout={SSH_CONNECT_TIMEOUT_SECS}"));
    if let Some(p) = target.port {
        a.push("-p".into());
        a.push(p.to_string());
    }
    if let Some(k) = &target.keyfile {
        a.push("-i".into());
        a.push(k.display().to_string());
    }
    if let Some(k) = &target.known_hosts {
        a.push("-o".into());
        a.push(format!("UserKnownHostsFile={}", k.display()));
    }
    if target.no_verify {
        a.push("-o".into());
        a.push("StrictHostKeyChecking=no".into());
    }
    if let Some(u) = &target.user {
        a.push("-l".into());
        a.push(u.clone());
    }
    a.push("--".into());
    a.push(target.host.clone());
    let mut remote = vec![shell_quote(&target.proxy), "proxy".to_string()];
    if let Some(s) = &target.socket {
        remote.push("--socket".into());
        remote.push(shell_quote(&s.display().to_string()));
    }
    a.push(remote.join(" "));
    a
}

/// Quote `s` for a POSIX shell (the far side runs the command through
/// the login shell).
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Wait up to `timeout_ms` (-1: forever) for `fd` to be readable (or
/// closed). `Ok(false)` when the time ran out; a caught signal is an
/// `Interrupted` error.
pub fn poll_in(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one live pollfd for the duration of the call and the
    // descriptor stays open (it is borrowed).
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if n < 0 {
        // EINTR included: a caller that catches a signal (Ctrl-C in
        // `event --loop`) wants to hear of it.
        return Err(io::Error::last_os_error());
    }
    Ok(n > 0)
}

/// Where a transport leads, for messages: the socket path, or
/// `PATH on user@host:port` over ssh.
pub fn describe(socket: Option<&Path>, ssh: Option<&SshTarget>) -> String {
    match (ssh, socket) {
        (Some(t), s) => format!(
            "{} on {}",
            s.map_or_else(
                || crate::api::DEFAULT_SOCKET.to_string(),
                |p| p.display().to_string()
            ),
            t.display_host()
        ),
        (None, Some(s)) => s.display().to_string(),
        (None, None) => PathBuf::from(crate::api::DEFAULT_SOCKET)
            .display()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_line() {
        let t = SshTarget {
            user: Some("root".into()),
            host: "127.0.0.1".into(),
            port: Some(2222),
            socket: Some("/tmp/my dir/s.sock".into()),
            keyfile: Some("/k/id".into()),
            proxy: "/opt/vireo".into(),
            known_hosts: Some("/k/known".into()),
            no_verify: true,
        };
        let a = ssh_args(&t);
        let line = a.join(" ");
        for want in [
            "-o BatchMode=yes",
            "-o ConnectTimeout=10",
            "-e none",
            "-p 2222",
            "-i /k/id",
            "-o UserKnownHostsFile=/k/known",
            "-o StrictHostKeyChecking=no",
            "-l root",
        ] {
            assert!(line.contains(want), "{want} missing from {line}");
        }
        // The host comes after `--`, the remote command is one argument
        // with the socket path quoted for the far shell.
        let dashes = a.iter().position(|x| x == "--").unwrap();
        assert_eq!(a[dashes + 1], "127.0.0.1");
        assert_eq!(
            a[dashes + 2],
            "/opt/vireo proxy --socket '/tmp/my dir/s.sock'"
        );
        assert_eq!(a.len(), dashes + 3);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/usr/bin/vireo"), "/usr/bin/vireo");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("$(rm)"), "'$(rm)'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn a_reader_that_never_ends_is_not_joined() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut a = a;
        let stuck = std::thread::spawn(move || {
            let mut buf = [0u8; 1];
            let _ = a.read(&mut buf);
        });
        let start = Instant::now();
        let left = join_by(Some(stuck), Instant::now() + Duration::from_millis(100));
        assert!(left.is_some());
        assert!(start.elapsed() < Duration::from_secs(2));
        let done = std::thread::spawn(|| {});
        assert!(join_by(Some(done), Instant::now() + Duration::from_secs(5)).is_none());
    }

    #[test]
    fn a_silent_peer_times_out() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut s = Stream::Unix(a);
        let start = Instant::now();
        let mut buf = [0u8; 8];
        let e = s
            .read_some(&mut buf, Some(Instant::now() + Duration::from_millis(100)))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
