//! DHCP and DNS for a virtual network: one dnsmasq per network, its
//! configuration generated from plain types, its process supervised by
//! pid file so it outlives (and is re-adopted by) the daemon.

mod conf;
mod leases;

use std::io::Read;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What dnsmasq serves on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The network's name (for messages).
    pub network: String,
    /// The bridge dnsmasq serves.
    pub bridge: String,
    /// Per-network state directory the daemon owns: conf, hosts files,
    /// leases and pid file live here. Must be an absolute path.
    pub dir: PathBuf,
    /// DNS domain of the network.
    pub domain: Option<String>,
    /// Answer names in `domain` locally only, never forwarding them.
    pub local_only_domain: bool,
    /// Addresses to answer on (the bridge's).
    pub listen: Vec<IpAddr>,
    /// DHCP address ranges.
    pub ranges: Vec<Range>,
    /// DHCP hosts: fixed addresses and names.
    pub hosts: Vec<Host>,
    /// Extra DNS records: an address and its names.
    pub dns_hosts: Vec<(IpAddr, Vec<String>)>,
    /// Upstream DNS servers, possibly per domain.
    pub forwarders: Vec<Forwarder>,
    /// Ignore the host's resolv.conf.
    pub no_resolv: bool,
    /// Serve DNS at all; when false only DHCP runs (libvirt's
    /// `<dns enable='no'/>`), leaving port 53 on the bridge closed.
    pub dns: bool,
    /// Offer the bridge as the clients' default router (dnsmasq's own
    /// default). libvirt's isolated networks do not: their host forwards
    /// nothing, so a guest with a route through it would only lose
    /// traffic its other NICs could carry.
    pub router: bool,
}

/// A DHCP address range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First address handed out.
    pub start: IpAddr,
    /// Last address handed out.
    pub end: IpAddr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// Lease time; None is dnsmasq's hour, zero is infinite.
    pub lease: Option<Duration>,
}

/// A DHCP host entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The client's MAC address.
    pub mac: Option<[u8; 6]>,
    /// Its host name (also served in DNS when `ip` is set).
    pub name: Option<String>,
    /// Its fixed address.
    pub ip: Option<IpAddr>,
}

/// An upstream DNS server: `addr` for `domain` (all names if None); a
/// domain without an address is answered locally only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarder {
    /// The server's address.
    pub addr: Option<IpAddr>,
    /// The domain it serves.
    pub domain: Option<String>,
}

/// A DHCP lease as dnsmasq recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Expiry, seconds since the epoch (0: never).
    pub expiry: u64,
    /// The client's MAC address.
    pub mac: [u8; 6],
    /// The leased address.
    pub ip: IpAddr,
    /// The host name the client sent.
    pub hostname: Option<String>,
    /// The client identifier it sent.
    pub client_id: Option<String>,
}

/// Why dnsmasq could not be configured, started, or read.
#[derive(Debug, thiserror::Error)]
pub enum DnsmasqError {
    /// The configuration holds something dnsmasq cannot be given safely.
    #[error("invalid dnsmasq configuration: {0}")]
    Invalid(String),
    /// The `dnsmasq` binary is missing.
    #[error("dnsmasq not found: install the Debian package dnsmasq-base")]
    NotInstalled,
    /// A file or process operation failed.
    #[error("dnsmasq: {0}")]
    Io(String),
    /// dnsmasq refused to start; its own message.
    #[error("dnsmasq failed to start: {0}")]
    Failed(String),
}

/// How long start and stop wait for dnsmasq.
const WAIT: Duration = Duration::from_secs(5);
/// Longest message from dnsmasq we keep.
const MAX_MESSAGE: u64 = 1024;

/// Write the network's conf, DHCP hosts and DNS hosts files atomically;
/// the conf file's path.
pub fn write_config(cfg: &Config) -> Result<PathBuf, DnsmasqError> {
    conf::write_all(cfg)
}

/// The leases in `dir` (none if dnsmasq has not written any yet);
/// malformed lines are skipped.
pub fn leases(dir: &Path) -> Result<Vec<Lease>, DnsmasqError> {
    leases::read(dir)
}

/// A running dnsmasq serving one network.
#[derive(Debug)]
pub struct Dnsmasq {
    pid: u32,
    pidfile: PathBuf,
    conf: PathBuf,
}

impl Dnsmasq {
    /// Write the configuration and start dnsmasq on it, in its own session
    /// so it outlives the daemon; returns once its pid file names a live
    /// dnsmasq (at most 5 s).
    pub fn start(cfg: &Config) -> Result<Dnsmasq, DnsmasqError> {
        // A second dnsmasq would only fail to bind the bridge's port 53.
        if let Some(running) = Self::adopt(&cfg.dir)? {
            return Err(DnsmasqError::Failed(format!(
                "already running for {} (pid {})",
                cfg.dir.display(),
                running.pid
            )));
        }
        let conf = write_config(cfg)?;
        let pidfile = cfg.dir.join(conf::PIDFILE);
        let _ = std::fs::remove_file(&pidfile);
        let errfile = cfg.dir.join("dnsmasq.err");
        let err = std::fs::File::create(&errfile).map_err(|e| conf::io_err(&errfile, e))?;
        let mut cmd = Command::new("dnsmasq");
        cmd.arg(conf_arg(&conf))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        // SAFETY: setsid(2) is async-signal-safe and touches no memory; it
        // detaches dnsmasq from the daemon's session and terminal.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DnsmasqError::NotInstalled,
            _ => DnsmasqError::Io(format!("spawning dnsmasq: {e}")),
        })?;
        // dnsmasq forks its server and the first process exits once the
        // server is set up, with a nonzero status if setup failed.
        let deadline = Instant::now() + WAIT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(DnsmasqError::Failed("did not start within 5 s".into()));
                }
                Err(e) => return Err(DnsmasqError::Io(format!("waiting for dnsmasq: {e}"))),
            }
        };
        if !status.success() {
            let msg = read_bounded(&errfile, MAX_MESSAGE).unwrap_or_default();
            let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
            return Err(DnsmasqError::Failed(if msg.is_empty() {
                format!("exited with {status}")
            } else {
                msg
            }));
        }
        while Instant::now() < deadline {
            if let Some(d) = Self::adopt(&cfg.dir)? {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(DnsmasqError::Failed(format!(
            "no live dnsmasq in {} after 5 s",
            pidfile.display()
        )))
    }

    /// The dnsmasq a previous [`Dnsmasq::start`] left running for `dir`,
    /// if its pid file names a live process whose command line is dnsmasq
    /// on this directory's conf file (a reused pid is never taken).
    pub fn adopt(dir: &Path) -> Result<Option<Dnsmasq>, DnsmasqError> {
        let pidfile = dir.join(conf::PIDFILE);
        let text = match read_bounded(&pidfile, 32) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(conf::io_err(&pidfile, e)),
        };
        let Ok(pid) = text.trim().parse::<u32>() else {
            return Ok(None);
        };
        let d = Dnsmasq {
            pid,
            pidfile,
            conf: dir.join(conf::CONF),
        };
        Ok(d.alive().then_some(d))
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process is still running and still our dnsmasq.
    pub fn alive(&self) -> bool {
        let proc = PathBuf::from(format!("/proc/{}", self.pid));
        let Ok(cmdline) = read_bytes_bounded(&proc.join("cmdline"), 64 << 10) else {
            return false;
        };
        let mut args = cmdline.split(|&b| b == 0);
        let is_dnsmasq = args
            .next()
            .map(|a| a.rsplit(|&b| b == b'/').next() == Some(b"dnsmasq".as_slice()))
            .unwrap_or(false);
        let want = conf_arg(&self.conf);
        let ours = args.any(|a| a == want.as_bytes());
        // A zombie has an empty cmdline, but check the state anyway.
        let running = read_bounded(&proc.join("stat"), 4096)
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            })
            .unwrap_or(false);
        is_dnsmasq && ours && running
    }

    /// Rewrite the DHCP and DNS hosts files and have dnsmasq re-read them.
    /// Other changes (ranges, domain, forwarders) need a restart.
    pub fn reload(&self, cfg: &Config) -> Result<(), DnsmasqError> {
        if cfg.dir.join(conf::CONF) != self.conf {
            return Err(DnsmasqError::Invalid(format!(
                "configuration is for {}, this dnsmasq runs on {}",
                cfg.dir.display(),
                self.conf.display()
            )));
        }
        conf::write_hosts(cfg)?;
        self.signal(libc::SIGHUP)
    }

    /// Stop dnsmasq: SIGTERM, then SIGKILL if it has not gone within 5 s.
    pub fn stop(self) -> Result<(), DnsmasqError> {
        if self.alive() {
            self.signal(libc::SIGTERM)?;
            if !self.wait_gone(WAIT) {
                self.signal(libc::SIGKILL)?;
                if !self.wait_gone(Duration::from_secs(1)) {
                    return Err(DnsmasqError::Io(format!(
                        "pid {} survived SIGKILL",
                        self.pid
                    )));
                }
            }
        }
        let _ = std::fs::remove_file(&self.pidfile);
        Ok(())
    }

    fn wait_gone(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.alive() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Signal the process, having just checked it is still ours.
    fn signal(&self, sig: libc::c_int) -> Result<(), DnsmasqError> {
        let pid = libc::pid_t::try_from(self.pid)
            .map_err(|_| DnsmasqError::Io(format!("pid {} out of range", self.pid)))?;
        if !self.alive() {
            return Err(DnsmasqError::Io(format!(
                "dnsmasq (pid {}) is not running",
                self.pid
            )));
        }
        // SAFETY: kill(2) takes plain integers; the pid was just checked to
        // be our dnsmasq.
        if unsafe { libc::kill(pid, sig) } < 0 {
            return Err(DnsmasqError::Io(format!(
                "signalling pid {}: {}",
                self.pid,
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }
}

fn conf_arg(conf: &Path) -> String {
    format!("--conf-file={}", conf.display())
}

fn read_bytes_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    std::fs::File::open(path)?.take(max).read_to_end(&mut v)?;
    Ok(v)
}

fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    Ok(String::from_utf8_lossy(&read_bytes_bounded(path, max)?).into_owned())
}
