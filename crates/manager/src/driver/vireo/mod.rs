//! Vireo's own VMM as a driver: each running domain is a `vireo run ...
//! --api-socket` process in a session of its own, driven through its
//! per-VM API (docs/api.md).
//!
//! - [`config`]: the definition as a `vireo run` command line, and what
//!   this driver refuses (the mapping table is in its docs).
//! - [`placement`]: memory backing, NUMA, pinning and the balloon as
//!   `vireo run` flags.
//! - `http`: the bounded HTTP/1.1 client for the per-VM API.
//! - `instance`: a running VMM as an [`Instance`] ([`VireoInstance`]).
//! - [`stats`]: the VMM's counters as virsh `domstats` keys.
//! - `taps`: TAPs made for bridge interfaces, macvtaps for direct ones.
//!
//! The run directory holds `api.sock`, `console.sock` (COM1: the VMM
//! replays its last 64 KiB of output to a new client) and `exit.json`
//! (`vireo run --exit-status`: why the VMM ended, written just before it
//! exits, so the reason is known after a daemon restart too).
//!
//! How [`Instance::wait_exit`] names an end:
//!
//! | what happened | exit status file | [`ExitReason`] |
//! |---|---|---|
//! | [`Instance::destroy`] (either kind) | any | `Destroyed` |
//! | the guest powered off | `poweroff` | `Poweroff` |
//! | the guest reset, `on_reboot` not `restart` | `reset` | `Reset` |
//! | SIGTERM, SIGINT or SIGHUP from outside the daemon | `signal` | `Poweroff` (an orderly stop from the host, as libvirt counts a QEMU ended by a signal) |
//! | triple fault, emulation failure | `crashed` | `Crashed(first line of the reason)` |
//! | the VMM failed (an I/O error it cannot go on after) | `failed` | `Failed(first line of the reason)` |
//! | a VMM thread made a system call its seccomp filter forbids | `seccomp` | `Failed(thread and call)` |
//! | SIGKILL, or any death without a word | none | `Failed("the VMM process was killed ...")` |
//!
//! A start the VMM refuses (exit code 2: a missing kernel, a locked disk,
//! too much memory) is a start error quoting the last line of its log; a
//! guest that ends before it is seen running still started, and
//! `wait_exit` says how it ended at once.

pub mod config;
mod http;
mod instance;
mod jail;
pub use self::jail::{UidRange, DEFAULT_VMM_UIDS};
pub mod placement;
pub mod stats;
mod taps;
mod tuning;

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use virtxml::Domain;

use self::http::{ApiClient, CallError};
use self::instance::Extra;
pub use self::instance::VireoInstance;
use self::taps::NetNs;
use super::process::{self, PidFd};
use super::{Driver, DriverError, ExitReason, Instance, RunRecord, StartContext};

/// Every call to a VMM's API is answered within this, or fails.
pub(crate) const API_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a VMM has from spawn to a running (or paused) guest: it takes
/// milliseconds, but on a host whose CPUs are all busy (other guests in
/// CPL-0 emulation, builds) seconds; libvirt gives QEMU's monitor 30 s.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Each `GET /vm` while waiting for a start.
const POLL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long adopting waits for a VMM whose API is gone to finish exiting.
const ADOPT_EXIT_WAIT: Duration = Duration::from_secs(2);
/// The longest unix socket path (sun_path less its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Room the VMM needs beside its API socket's path for the private
/// directory it binds in (docs/api.md).
const API_SOCKET_SLACK: usize = 20;

/// Runs domains on Vireo's own VMM.
#[derive(Debug, Clone)]
pub struct VireoDriver {
    vmm_binary: PathBuf,
    /// The uids jailed VMMs run under; `None`: VMMs run unjailed, as root.
    jail: Option<UidRange>,
}

impl VireoDriver {
    /// A driver that starts `vmm_binary run ...` (the daemon passes its
    /// own executable), unjailed.
    pub fn new(vmm_binary: PathBuf) -> Self {
        Self {
            vmm_binary,
            jail: None,
        }
    }

    /// Every VMM from now on runs jailed (`vireo run --jail`) under a uid
    /// of its own from `uids`.
    pub fn jailed(mut self, uids: UidRange) -> Self {
        self.jail = Some(uids);
        self
    }

    /// Jail the VMM `plan` starts: its uid, its directories, its flags,
    /// and its files' ACL entries. Returns the uid and the files granted.
    fn confine(
        &self,
        uids: UidRange,
        domain: &Domain,
        id: u32,
        ctx: &StartContext,
        plan: &mut config::Plan,
    ) -> Result<(u32, Vec<PathBuf>), DriverError> {
        let name = &domain.name;
        let uid = uids.free_uid(id, &jail::uids_in_use()).ok_or_else(|| {
            failed(
                name,
                "every uid of --vmm-uids is in use by a process; give the daemon a wider range",
            )
        })?;
        let (jail_dir, status_dir) = jail::prepare_dirs(&ctx.run_dir, uid).map_err(|e| {
            failed(
                name,
                format!("cannot prepare the jail in {}: {e}", ctx.run_dir.display()),
            )
        })?;
        // The keeper writes the exit status as the jail's uid.
        plan.exit_status = status_dir.join("exit.json");
        if let Some(i) = plan.args.iter().position(|a| a == "--exit-status") {
            plan.args[i + 1] = plan.exit_status.display().to_string();
        }
        for (flag, value) in [
            ("--jail", jail_dir.display().to_string()),
            ("--uid", uid.to_string()),
            ("--gid", uid.to_string()),
        ] {
            config::push(&mut plan.args, flag, value);
        }
        let disks: Vec<(PathBuf, bool)> = domain
            .devices
            .disks
            .iter()
            .filter(|d| !d.source.is_network())
            .filter_map(|d| Some((PathBuf::from(d.source.host_path()?), d.readonly)))
            .collect();
        let granted = jail::grant_files(name, uid, &jail::domain_files(domain, &disks));
        Ok((uid, granted))
    }
}

/// Macvtaps made for a start that has not handed them to its instance
/// yet: a start that fails deletes them.
struct DirectGuard {
    links: Vec<config::DirectLink>,
}

impl Drop for DirectGuard {
    fn drop(&mut self) {
        for l in taps::remove_direct(&self.links) {
            tracing::warn!("cannot remove macvtap {} of a failed start", l.name);
        }
    }
}

/// A pipe holding `value` with its writing end closed: the reading end,
/// for the VMM to inherit and read to its end (`--secret fd=`). The value
/// (a CHAP secret, at most 255 bytes) fits the pipe's buffer.
fn secret_pipe(value: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two new descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    let (read, mut write) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    write.write_all(value.as_bytes())?;
    drop(write);
    Ok(read)
}

fn failed(domain: &str, message: impl std::fmt::Display) -> DriverError {
    DriverError::Failed(format!("domain {domain}: {message}"))
}

/// The domain a run record is of, for log lines.
fn record_name(record: &RunRecord) -> String {
    Domain::parse(&record.xml).map_or_else(|_| format!("pid {}", record.pid), |p| p.domain.name)
}

/// The last non-empty line of a VMM's log: what it said before it died.
fn last_log_line(log: &Path) -> String {
    process::log_tail(log, 4096)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| format!("nothing in its log {}", log.display()))
}

impl Driver for VireoDriver {
    fn name(&self) -> &'static str {
        "vireo"
    }

    fn version(&self) -> String {
        format!("vireo {}", env!("CARGO_PKG_VERSION"))
    }

    fn validate(&self, domain: &Domain) -> Result<(), DriverError> {
        let domain = super::as_started(domain);
        config::plan(&domain, 0, Path::new("/run/vireo/domains/0"), false).map(drop)
    }

    fn start(
        &self,
        domain: &Domain,
        id: u32,
        ctx: &StartContext,
    ) -> Result<Box<dyn Instance>, DriverError> {
        let name = &domain.name;
        let mut plan = config::plan(domain, id, &ctx.run_dir, ctx.paused)?;
        let (uid, granted) = match self.jail {
            Some(uids) => {
                let (uid, granted) = self.confine(uids, domain, id, ctx, &mut plan)?;
                (Some(uid), granted)
            }
            None => (None, Vec::new()),
        };
        // Until the instance holds them, a failed start takes them back.
        let mut grants = jail::Grants::new(name, uid, granted);
        for socket in [&plan.api_socket, &plan.console_socket] {
            let room = if *socket == plan.api_socket {
                MAX_SOCKET_PATH - API_SOCKET_SLACK
            } else {
                MAX_SOCKET_PATH
            };
            if socket.as_os_str().len() > room {
                return Err(failed(
                    name,
                    format!(
                        "the socket path {} is longer than the {room} bytes a unix socket address holds",
                        socket.display()
                    ),
                ));
            }
        }
        // A status left by an earlier run must not be taken for this one's.
        match std::fs::remove_file(&plan.exit_status) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(failed(
                    name,
                    format!("cannot remove {}: {e}", plan.exit_status.display()),
                ))
            }
        }
        let netns = NetNs::current();
        let mut args = plan.args;
        let mut ports = taps::open_ports(name, &plan.bridge_ports, &mut args)?;
        ports.extend(taps::open_direct_ports(
            name,
            &plan.direct_ports,
            &mut args,
        )?);
        // Macvtaps outlive their descriptors: until the instance owns
        // them, a failed start deletes them.
        let mut direct = DirectGuard {
            links: plan.direct_ports.iter().map(|p| p.link.clone()).collect(),
        };
        // Each CHAP secret on a pipe of its own, which the VMM reads at
        // once and closes: never in its command line, never on disk.
        let mut secret_fds = Vec::new();
        for target in &plan.secrets {
            let c = ctx.disk_secrets.get(target).ok_or_else(|| {
                failed(
                    name,
                    format!("disk {target}: no CHAP credentials were found for it"),
                )
            })?;
            let fd = secret_pipe(&c.secret).map_err(|e| {
                failed(
                    name,
                    format!("disk {target}: cannot hand the VMM its CHAP secret: {e}"),
                )
            })?;
            config::push(
                &mut args,
                "--secret",
                format!("id={target},fd={}", fd.as_raw_fd()),
            );
            secret_fds.push(fd);
        }
        let keep: Vec<RawFd> = ports
            .iter()
            .filter_map(|t| t.queue(0).map(|q| q.as_raw_fd()))
            .chain(secret_fds.iter().map(AsRawFd::as_raw_fd))
            .collect();

        let mut cmd = Command::new(&self.vmm_binary);
        cmd.args(&args);
        let spawned = process::spawn_session(&mut cmd, &ctx.log_path, &keep, &ctx.cgroup_procs);
        // The VMM holds its own copies now: once it exits, nothing holds
        // the TAPs and they go.
        drop(ports);
        drop(secret_fds);
        let mut child = spawned.map_err(|e| {
            failed(
                name,
                format!("cannot start {}: {e}", self.vmm_binary.display()),
            )
        })?;
        let watched = PidFd::from_child(&child).and_then(|p| {
            let start = process::start_time(p.pid())?;
            Ok((p, start))
        });
        let (pidfd, start_time) = match watched {
            Ok(w) => w,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(
                    name,
                    format!(
                        "the VMM ended at once ({e}): {}",
                        last_log_line(&ctx.log_path)
                    ),
                ));
            }
        };
        let api = ApiClient::new(plan.api_socket.clone(), API_TIMEOUT);
        let want = if ctx.paused { "paused" } else { "running" };
        let mut ended_at_once = false;
        // Polled with a short timeout, so a VMM that hangs while starting
        // costs START_TIMEOUT and a little, not an API timeout more.
        let poll = ApiClient::new(plan.api_socket.clone(), POLL_TIMEOUT);
        match wait_for_state(&poll, &pidfd, want) {
            Ok(()) => {}
            Err(StartFailure::Exited) => {
                // Exit code 2 is the VMM refusing its input (it never
                // booted); 0 or 1 with an exit status is a guest that ran
                // and ended (powered off, crashed) before it was seen
                // running: a start, whose end wait_exit reports at once.
                let code = child.wait().ok().and_then(|s| s.code());
                if code == Some(2) || !plan.exit_status.exists() {
                    return Err(failed(
                        name,
                        format!(
                            "the VMM exited while starting: {}",
                            last_log_line(&ctx.log_path)
                        ),
                    ));
                }
                ended_at_once = true;
            }
            Err(StartFailure::Timeout(state)) => {
                let _ = pidfd.terminate(None, Duration::from_secs(5));
                let _ = child.wait();
                return Err(failed(
                    name,
                    format!(
                        "the VMM was not {want} within {} s (state: {state}); it was killed",
                        START_TIMEOUT.as_secs()
                    ),
                ));
            }
        }
        // The live definition names the TAPs made for it, as libvirt's
        // does (`domiflist` shows them).
        let mut live = domain.clone();
        for p in &plan.bridge_ports {
            if let Some(iface) = live.devices.interfaces.get_mut(p.iface) {
                iface.target = Some(p.port.tap.clone());
            }
        }
        for p in &plan.direct_ports {
            if let Some(iface) = live.devices.interfaces.get_mut(p.iface) {
                iface.target = Some(p.link.name.clone());
            }
        }
        let extra = Extra {
            api_socket: plan.api_socket,
            console_socket: plan.console_socket,
            exit_status: plan.exit_status,
            bridge_ports: plan.bridge_ports.into_iter().map(|p| p.port).collect(),
            direct_links: std::mem::take(&mut direct.links),
            uid: grants.uid,
            granted: grants.take(),
        };
        Ok(Box::new(VireoInstance::new(
            live,
            id,
            pidfd,
            start_time,
            // Reaped already when the guest ended at once.
            (!ended_at_once).then_some(child),
            api,
            extra,
            netns,
        )))
    }

    /// From the exit status file the VMM left in its run directory; no
    /// file from a VMM that is gone means it was killed.
    fn ended(&self, record: &RunRecord) -> Option<ExitReason> {
        Self::ended_reason(record)
    }

    fn adopt(
        &self,
        record: &RunRecord,
        _ctx: &StartContext,
    ) -> Result<Option<Box<dyn Instance>>, DriverError> {
        let adopted = self.adopt_vmm(record);
        // A VMM that is gone leaves its macvtaps, which no descriptor
        // closing removes.
        if let Ok(None) = adopted {
            if let Ok(mut extra) = serde_json::from_value::<Extra>(record.extra.clone()) {
                extra.release(&record_name(record));
                drop(DirectGuard {
                    links: extra.direct_links,
                });
            }
        }
        adopted
    }
}

impl VireoDriver {
    fn adopt_vmm(&self, record: &RunRecord) -> Result<Option<Box<dyn Instance>>, DriverError> {
        if record.driver != self.name() {
            return Err(DriverError::Failed(format!(
                "a run record of driver '{}' was given to the vireo driver",
                record.driver
            )));
        }
        let parsed = Domain::parse(&record.xml).map_err(|e| {
            DriverError::Failed(format!("the recorded definition does not parse: {e}"))
        })?;
        let domain = parsed.domain;
        let extra: Extra = serde_json::from_value(record.extra.clone()).map_err(|e| {
            failed(
                &domain.name,
                format!("the run record's driver data is not Vireo's: {e}"),
            )
        })?;
        let Some(pidfd) = PidFd::open(record.pid, record.start_time).map_err(|e| {
            failed(
                &domain.name,
                format!("cannot watch pid {}: {e}", record.pid),
            )
        })?
        else {
            return Ok(None);
        };
        let api = ApiClient::new(extra.api_socket.clone(), API_TIMEOUT);
        // The start time names the process to the clock tick; a pid
        // reused within the same tick would pass that. The API socket's
        // server (SO_PEERCRED) must be the recorded pid itself.
        // A jailed VMM is its keeper's child: the keeper is recorded.
        let server = instance::vmm_pid(record.pid, extra.uid.is_some());
        match api.server_pid() {
            Ok(pid) if pid == server => {}
            Ok(pid) => {
                tracing::warn!(
                    "domain {}: its API socket is served by pid {pid}, not the recorded {}; not adopted",
                    domain.name,
                    record.pid
                );
                return Ok(None);
            }
            Err(_) => return self.let_go(&domain.name, record, &pidfd, "no API socket"),
        }
        match api.get("/vm") {
            // Running, paused, or between boots (booting, rebooting): a
            // live VM either way.
            Ok(info) if info.get("state").and_then(Value::as_str) != Some("shutdown") => {}
            answer => {
                return self.let_go(&domain.name, record, &pidfd, &format!("{answer:?}"));
            }
        }
        Ok(Some(Box::new(VireoInstance::new(
            domain,
            record.id,
            pidfd,
            record.start_time,
            None,
            api,
            extra,
            NetNs::current(),
        ))))
    }
}

impl VireoDriver {
    /// A VMM alive with its recorded start time whose API is gone or says
    /// it has shut down is on its way out: give it a moment. One that
    /// lingers without an API cannot be driven, so it is ended rather than
    /// left an orphan, but only if it is this driver's VMM by name too
    /// (its `comm`), never another program.
    fn let_go(
        &self,
        domain: &str,
        record: &RunRecord,
        pidfd: &PidFd,
        why: &str,
    ) -> Result<Option<Box<dyn Instance>>, DriverError> {
        if pidfd.wait(Some(ADOPT_EXIT_WAIT)).unwrap_or(false) {
            return Ok(None);
        }
        let comm =
            std::fs::read_to_string(format!("/proc/{}/comm", record.pid)).unwrap_or_default();
        let ours = self
            .vmm_binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .is_some_and(|name| !comm.trim().is_empty() && name.starts_with(comm.trim()));
        if ours {
            tracing::warn!(
                "domain {domain}: pid {} does not serve a VM ({why}); ending it",
                record.pid
            );
            let _ = pidfd.terminate(None, Duration::from_secs(5));
        } else {
            tracing::warn!(
                "domain {domain}: pid {} ({}) is not a VMM; left alone",
                record.pid,
                comm.trim()
            );
        }
        Ok(None)
    }

    fn ended_reason(record: &RunRecord) -> Option<ExitReason> {
        if process::is_alive(record.pid, record.start_time) {
            return None;
        }
        let extra: Extra = serde_json::from_value(record.extra.clone()).ok()?;
        Some(
            instance::recorded_reason(&extra.exit_status).unwrap_or_else(|| {
                ExitReason::Failed(
                    "the VMM process was killed, or ended without recording why, while the daemon was away"
                        .into(),
                )
            }),
        )
    }
}

enum StartFailure {
    Exited,
    Timeout(String),
}

/// Polls `GET /vm` until the VM is in state `want`, the VMM exits, or
/// [`START_TIMEOUT`] passes.
fn wait_for_state(api: &ApiClient, pidfd: &PidFd, want: &str) -> Result<(), StartFailure> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::from("no API socket yet");
    // Short sleeps: a VMM serves its API within milliseconds and boots a
    // small guest in a few more; start latency is the daemon's figure.
    let mut pause = Duration::from_micros(200);
    loop {
        if pidfd.wait(Some(Duration::ZERO)).unwrap_or(false) {
            return Err(StartFailure::Exited);
        }
        match api.get("/vm") {
            Ok(info) => {
                let state = info
                    .get("state")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if state == want {
                    return Ok(());
                }
                last = state.to_string();
            }
            Err(CallError::Connect(_)) => {}
            Err(e) => last = format!("{e:?}"),
        }
        if Instant::now() >= deadline {
            return Err(StartFailure::Timeout(last));
        }
        // Wait on the pidfd rather than sleep: an exit ends the wait.
        if pidfd.wait(Some(pause)).unwrap_or(false) {
            return Err(StartFailure::Exited);
        }
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}
