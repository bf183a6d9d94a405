//! A real `vireo daemon` process for the daemon tests, and a small HTTP
//! client for its unix socket (std only, every wait bounded).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every socket read and write gives up after this.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The built test guests' directory.
pub fn guest(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guests");
        let status = Command::new(root.join("guests/build.sh"))
            .arg(&out)
            .args(["idle", "exit", "reset"])
            .status()
            .expect("run guests/build.sh");
        assert!(status.success(), "guests/build.sh failed");
        out
    });
    let elf = DIR.get().expect("set above").join(format!("{name}.elf"));
    // The other guests are built (once per test process, so never stale)
    // when first asked for, one build at a time.
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !["idle", "exit", "reset"].contains(&name) && !built.iter().any(|b| b == name) {
        built.push(name.to_string());
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = Command::new(root.join("guests/build.sh"))
            .arg(elf.parent().expect("a directory"))
            .arg(name)
            .status()
            .expect("run guests/build.sh");
        assert!(status.success(), "guests/build.sh {name} failed");
    }
    elf
}

/// Whether this host can run VMs (tests that start domains skip without).
pub fn have_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// A domain definition running `guest` (`idle`, `exit` or `reset`).
pub fn domain_xml(name: &str, guest_name: &str, extra: &str) -> String {
    format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64'>hvm</type><kernel>{}</kernel></os>{extra}\
         <devices><serial type='pty'/></devices></domain>",
        guest(guest_name).display()
    )
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The `error` line of an error answer.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error line: {}", self.body))
            .to_string()
    }
}

fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    let s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn request_head(method: &str, path: &str, body: &str, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: vireo\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

/// One request on a new connection (closed after the answer).
pub fn http(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Answer {
    try_http(socket, method, path, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", socket.display()))
}

/// As [`http`], with a broken connection (a daemon killed under it) an
/// error rather than a panic.
pub fn try_http(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<Answer> {
    use std::io::{Error, ErrorKind};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = connect(socket)?;
    s.write_all(request_head(method, path, &body, "Connection: close\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let bad = |what: &str| Error::new(ErrorKind::InvalidData, format!("{what} in {text:?}"));
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no HTTP head"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    Ok(Answer {
        status,
        body: rest.to_string(),
    })
}

/// A request that must succeed with 2xx; its JSON body (Null for 204).
pub fn ok(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Value {
    let a = http(socket, method, path, body);
    assert!(
        (200..300).contains(&a.status),
        "{method} {path}: {} {}",
        a.status,
        a.body
    );
    if a.body.is_empty() {
        Value::Null
    } else {
        a.json()
    }
}

/// An open `GET /events` stream.
pub struct Events {
    reader: BufReader<UnixStream>,
    pending: Vec<u8>,
}

impl Events {
    /// Subscribes (to one domain's events when `domain` is given).
    pub fn open(socket: &Path, domain: Option<&str>) -> Events {
        let path = match domain {
            Some(d) => format!("/events?domain={d}"),
            None => "/events".to_string(),
        };
        let mut s = connect(socket).expect("connect for events");
        s.write_all(request_head("GET", &path, "", "").as_bytes())
            .expect("send");
        let mut reader = BufReader::new(s);
        // The head: once it is here, the daemon has subscribed us.
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        assert!(status.contains(" 200 "), "events: {status}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        Events {
            reader,
            pending: Vec::new(),
        }
    }

    /// The next event, waiting at most `limit`.
    pub fn next(&mut self, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).expect("event JSON"));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            // Chunked framing: a size line, the data, CRLF.
            let mut size = String::new();
            if self.reader.read_line(&mut size).ok()? == 0 {
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                return None;
            }
            let mut data = vec![0u8; n + 2];
            self.reader.read_exact(&mut data).ok()?;
            data.truncate(n);
            self.pending.extend_from_slice(&data);
        }
    }

    /// Waits for an event `event`/`detail`, returning those seen before.
    pub fn wait_for(&mut self, event: &str, detail: &str, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no {event} {detail} event; saw {seen:?}"));
            let e = self
                .next(left)
                .unwrap_or_else(|| panic!("no {event} {detail} event; saw {seen:?}"));
            if e["event"] == event && e["detail"] == detail {
                return seen;
            }
            seen.push(e);
        }
    }
}

/// Opens a console session: the upgraded stream.
pub fn console(socket: &Path, dom: &str, force: bool) -> Result<UnixStream, Answer> {
    let mut s = connect(socket).expect("connect for console");
    let path = format!(
        "/domains/{dom}/console{}",
        if force { "?force=true" } else { "" }
    );
    s.write_all(
        request_head(
            "GET",
            &path,
            "",
            "Connection: upgrade\r\nUpgrade: vireo-console\r\n",
        )
        .as_bytes(),
    )
    .expect("send");
    // Read the head byte by byte: what follows it is the console's.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).expect("read head") == 0 {
            break;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status == 101 {
        return Ok(s);
    }
    // The connection stays open (keep-alive): read just the body.
    let length = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).expect("read error body");
    Err(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A `vireo daemon` under test, in a directory of its own.
pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub ro_socket: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
    env: Vec<(String, String)>,
    netns: Option<String>,
    /// More `vireo daemon` options.
    pub args: Vec<String>,
    child: Option<Child>,
}

impl Daemon {
    /// Starts a daemon in `dir` (its state, sockets and log all inside).
    pub fn start(dir: &Path) -> Daemon {
        Daemon::start_with(dir, &[])
    }

    /// As [`Daemon::start`], with `env` set for the daemon.
    pub fn start_with(dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_in(dir, env, None)
    }

    /// As [`Daemon::start`], with more `vireo daemon` options.
    pub fn start_args(dir: &Path, args: &[&str]) -> Daemon {
        let mut d = Daemon::new(dir, &[], None);
        d.args = args.iter().map(|a| a.to_string()).collect();
        d.spawn();
        d
    }

    /// As [`Daemon::start_with`], the daemon (and so its VMMs and TAPs) in
    /// network namespace `netns` (`ip netns exec`, which execs the daemon).
    pub fn start_in(dir: &Path, env: &[(&str, &str)], netns: Option<&str>) -> Daemon {
        let mut d = Daemon::new(dir, env, netns);
        d.spawn();
        d
    }

    fn new(dir: &Path, env: &[(&str, &str)], netns: Option<&str>) -> Daemon {
        Daemon {
            dir: dir.to_path_buf(),
            socket: dir.join("v.sock"),
            ro_socket: dir.join("v-ro.sock"),
            state: dir.join("state"),
            log: dir.join("daemon.log"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            netns: netns.map(str::to_string),
            args: Vec::new(),
            child: None,
        }
    }

    /// This daemon's parent cgroup: its own (named after a hash of its
    /// whole directory: tests run at once, and many call theirs `a`), so
    /// the test can remove it.
    pub fn cgroup_parent(&self) -> String {
        format!("vireo-test-{:016x}", self.dir_hash())
    }

    /// The uids this daemon's VMMs run under: a range of 1000 of its own,
    /// so daemons of tests that run at once never pick the same uid.
    pub fn vmm_uids(&self) -> String {
        let first = 1_900_100_000 + (self.dir_hash() % 100_000) * 1000;
        format!("{first}-{}", first + 999)
    }

    fn dir_hash(&self) -> u64 {
        self.dir
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
    }

    /// The command that starts this daemon.
    pub fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_vireo")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_vireo")),
        };
        cmd.arg("daemon")
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--log")
            .arg(&self.log)
            .arg("--cgroup-parent")
            .arg(self.cgroup_parent())
            .arg("--vmm-uids")
            .arg(self.vmm_uids())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// (Re)starts the process and waits until it answers.
    pub fn spawn(&mut self) {
        let child = self.command().spawn().expect("spawn vireo daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = connect(&self.socket) {
                drop(s);
                // An error here is judged below: a daemon that exited
                // says why there.
                let answered = try_http(&self.socket, "GET", "/version", None);
                if answered.as_ref().is_ok_and(|a| a.status == 200) {
                    return;
                }
                if let Err(e) = answered {
                    eprintln!("GET /version while the daemon starts: {e}");
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = c.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!(
                        "the daemon exited ({status}): {err}\nlog:\n{}",
                        self.log_text()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer within 20 s; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// `kill -9` of the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and the exit it must make within 10 s.
    pub fn terminate(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                assert!(status.success(), "daemon exit on SIGTERM: {status}");
                return;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("the daemon did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A request that must succeed.
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        ok(&self.socket, method, path, body)
    }

    /// A request.
    pub fn http(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        http(&self.socket, method, path, body)
    }

    /// Defines a domain.
    pub fn define(&self, xml: &str) -> Value {
        self.ok("POST", "/domains", Some(&serde_json::json!({ "xml": xml })))
    }

    /// The `state` and `reason` of a domain.
    pub fn state(&self, dom: &str) -> (String, String) {
        let v = self.ok("GET", &format!("/domains/{dom}/state"), None);
        (
            v["state"].as_str().unwrap_or_default().to_string(),
            v["reason"].as_str().unwrap_or_default().to_string(),
        )
    }

    /// Polls until `dom` is in `state`, at most `limit`.
    pub fn wait_state(&self, dom: &str, state: &str, limit: Duration) -> (String, String) {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.state(dom);
            if now.0 == state {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "{dom} stayed {now:?}, not {state}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Processes (other than the daemon) whose command line mentions this
    /// test's directory: the VMMs it started.
    pub fn vmm_pids(&self) -> Vec<u32> {
        let found: Vec<u32> = processes_mentioning(&self.dir)
            .into_iter()
            .filter(|p| !is_daemon(*p))
            .collect();
        // A jailed VMM (in its own PID namespace) is the child of its
        // keeper, the process the daemon started, which has the same
        // command line: the keeper is the domain's pid.
        found
            .iter()
            .copied()
            .filter(|&p| !parent_of(p).is_some_and(|parent| found.contains(&parent)))
            .collect()
    }

    /// The processes that run the VMs themselves: a jailed VMM, not its
    /// keeper (for looking at its threads in /proc).
    pub fn vmm_processes(&self) -> Vec<u32> {
        self.vmm_pids().into_iter().map(vmm_process).collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // Whatever the test left running goes with it.
        for pid in processes_mentioning(&self.dir) {
            // SAFETY: kill(2) with a pid and a signal number.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        // And so do the cgroups of the VMMs it killed, once they are gone.
        let parents: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path().join(self.cgroup_parent()))
                    .chain([PathBuf::from("/sys/fs/cgroup").join(self.cgroup_parent())])
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(2);
        for parent in parents {
            loop {
                if let Ok(groups) = std::fs::read_dir(&parent) {
                    for g in groups.filter_map(Result::ok) {
                        if g.path().is_dir() {
                            let _ = std::fs::remove_dir(g.path());
                        }
                    }
                }
                if std::fs::remove_dir(&parent).is_ok() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// `kill -9 PID`.
pub fn sigkill(pid: u64) {
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    // SAFETY: kill(2) with a pid and a signal number.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn is_daemon(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).nth(1) == Some(b"daemon"))
        .unwrap_or(false)
}

/// Live processes whose command line contains `dir`.
/// The VMM of the domain whose pid is `pid`: its keeper's one child when
/// it is jailed, else `pid` itself.
pub fn vmm_process(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next()?.parse().ok())
        .unwrap_or(pid)
}

/// A process's parent pid.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes().to_vec();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
        {
            out.push(pid);
        }
    }
    out
}
