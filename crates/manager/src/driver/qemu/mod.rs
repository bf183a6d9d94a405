//! The QEMU driver: runs a domain under `qemu-system-x86_64` and drives
//! it over QMP.
//!
//! - [`cmdline`]: the domain → command line mapping, and what is refused.
//! - [`qmp`]: the blocking QMP client (answers matched by id, events kept).
//! - [`instance`]: a running QEMU: lifecycle, hot-plug, stats, its end.
//!
//! QEMU starts held (`-S`) so that QMP is connected before the guest runs
//! its first instruction; the driver then `cont`s unless the domain starts
//! paused. Machine and device choices are documented in
//! `docs/domain-xml.md`, "The QEMU driver".

pub mod cmdline;
pub mod instance;
pub mod qmp;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use virtxml::{Domain, InterfaceKind};

use self::cmdline::{Machine, RunPaths};
use self::instance::QemuInstance;
use self::qmp::Qmp;
use crate::driver::process::{self, PidFd};
use crate::driver::{Driver, DriverError, Instance, RunRecord, StartContext};

/// How long QEMU has to open its QMP socket after exec.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the QMP greeting and capabilities may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `qemu --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs domains under the QEMU at `binary`.
pub struct QemuDriver {
    binary: PathBuf,
    version: OnceLock<String>,
}

impl QemuDriver {
    /// A driver running `binary` (a `qemu-system-x86_64`, or a wrapper
    /// that execs one). Nothing is checked until it is used.
    pub fn new(binary: PathBuf) -> QemuDriver {
        QemuDriver {
            binary,
            version: OnceLock::new(),
        }
    }

    fn fail_start(
        &self,
        child: &mut std::process::Child,
        pidfd: Option<&PidFd>,
        log: &std::path::Path,
        what: String,
    ) -> DriverError {
        match pidfd {
            Some(p) => {
                let _ = p.terminate(None, Duration::from_secs(5));
            }
            None => {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
        let tail = process::log_tail(log, 2048);
        let last = tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        if last.is_empty() {
            DriverError::Failed(what)
        } else {
            DriverError::Failed(format!("{what}: {last}"))
        }
    }
}

/// `qemu 7.2.22` from `QEMU emulator version 7.2.22 (Debian ...)`.
fn parse_version(out: &str) -> Option<String> {
    let rest = out.split("version ").nth(1)?;
    let v: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (!v.is_empty()).then(|| format!("qemu {v}"))
}

impl Driver for QemuDriver {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn version(&self) -> String {
        self.version
            .get_or_init(|| {
                let run = || -> Result<String, String> {
                    let mut child = Command::new(&self.binary)
                        .arg("--version")
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                        .map_err(|e| format!("{}: {e}", self.binary.display()))?;
                    let deadline = Instant::now() + VERSION_TIMEOUT;
                    loop {
                        match child.try_wait() {
                            Ok(Some(_)) => break,
                            Ok(None) if Instant::now() < deadline => {
                                std::thread::sleep(Duration::from_millis(10))
                            }
                            _ => {
                                let _ = child.kill();
                                let _ = child.wait();
                                return Err("no answer to --version".into());
                            }
                        }
                    }
                    let mut out = String::new();
                    if let Some(mut so) = child.stdout.take() {
                        // Bounded: the process has exited, the pipe holds
                        // what it wrote and no more can come.
                        let _ = so.by_ref().take(64 << 10).read_to_string(&mut out);
                    }
                    parse_version(&out).ok_or_else(|| "no version in its output".into())
                };
                run().unwrap_or_else(|e| format!("qemu (unknown version: {e})"))
            })
            .clone()
    }

    fn validate(&self, domain: &Domain) -> Result<(), DriverError> {
        cmdline::validate(&super::as_started(domain)).map(drop)
    }

    fn start(
        &self,
        domain: &Domain,
        id: u32,
        ctx: &StartContext,
    ) -> Result<Box<dyn Instance>, DriverError> {
        let machine = cmdline::validate(domain)?;
        let paths = RunPaths::new(&ctx.run_dir);
        for stale in [&paths.qmp, &paths.console, &paths.pidfile] {
            let _ = std::fs::remove_file(stale);
        }
        let debug_exit = true;
        // Bridge ports: the driver makes each TAP, attaches it and hands
        // QEMU the descriptor, so the TAP goes when QEMU does, however it
        // ends. The live definition names the TAPs it made.
        let mut live = domain.clone();
        let mut ports = Vec::new();
        let mut tap_fds = vec![None; live.devices.interfaces.len()];
        let mut direct = MacvtapGuard(Vec::new());
        for (i, iface) in live.devices.interfaces.iter_mut().enumerate() {
            if let InterfaceKind::Direct { dev, mode } = &iface.kind {
                let name = iface
                    .target
                    .clone()
                    .unwrap_or_else(|| format!("vq{}d{}", id % 100_000, i % 1000));
                let mode = crate::driver::macvlan_mode(*mode);
                let tap = netvirt::macvtap::open_direct_port(&name, dev, mode, iface.mac.0)
                    .map_err(|e| {
                        DriverError::Failed(format!(
                            "/domain/devices/interface[{}]: direct interface on '{dev}': {e}",
                            i + 1
                        ))
                    })?;
                direct.0.push(name.clone());
                tap_fds[i] = tap.queue(0).map(|fd| fd.as_raw_fd());
                iface.target = Some(name);
                ports.push(tap);
                continue;
            }
            let Some(bridge) = iface.host_bridge().map(str::to_string) else {
                continue;
            };
            let bridge = &bridge;
            let name = cmdline::bridge_tap_name(id, iface, Some(i));
            let tap = netvirt::bridge::open_bridge_port(&name, bridge).map_err(|e| {
                DriverError::Failed(format!(
                    "/domain/devices/interface[{}]: bridge '{bridge}': {e}",
                    i + 1
                ))
            })?;
            if let Some(vid) = iface.vlan {
                let may_filter = matches!(iface.kind, InterfaceKind::Network { .. });
                netvirt::bridge::tag_bridge_port(&name, bridge, vid, may_filter).map_err(|e| {
                    DriverError::Failed(format!(
                        "/domain/devices/interface[{}]: bridge '{bridge}', VLAN {vid}: {e}",
                        i + 1
                    ))
                })?;
            }
            tap_fds[i] = tap.queue(0).map(|fd| fd.as_raw_fd());
            iface.target = Some(tap.name().to_string());
            ports.push(tap);
        }
        let keep: Vec<i32> = tap_fds.iter().flatten().copied().collect();
        let mut cmd = Command::new(&self.binary);
        cmd.args(cmdline::build(&live, machine, &paths, debug_exit, &tap_fds));
        let spawned = process::spawn_session(&mut cmd, &ctx.log_path, &keep, &ctx.cgroup_procs);
        // QEMU holds its own copies now (or failed to start).
        drop(ports);
        let mut child = spawned.map_err(|e| {
            DriverError::Failed(format!("cannot run {}: {e}", self.binary.display()))
        })?;
        let pidfd = match PidFd::from_child(&child) {
            Ok(p) => p,
            Err(e) => {
                return Err(self.fail_start(
                    &mut child,
                    None,
                    &ctx.log_path,
                    format!("QEMU ended at once ({e})"),
                ))
            }
        };
        let pid = pidfd.pid();
        let start_time = match process::start_time(pid) {
            Ok(t) => t,
            Err(e) => {
                return Err(self.fail_start(
                    &mut child,
                    Some(&pidfd),
                    &ctx.log_path,
                    format!("QEMU ended at once ({e})"),
                ))
            }
        };
        // The socket appears once QEMU has parsed its options and built
        // the machine; until then, a dead QEMU is a failed start.
        let deadline = Instant::now() + START_TIMEOUT;
        let qmp = loop {
            if paths.qmp.exists() {
                match Qmp::connect(&paths.qmp, CONNECT_TIMEOUT) {
                    Ok(q) => break q,
                    Err(e) if Instant::now() >= deadline => {
                        return Err(self.fail_start(
                            &mut child,
                            Some(&pidfd),
                            &ctx.log_path,
                            format!("QEMU's QMP socket does not answer: {e}"),
                        ))
                    }
                    Err(_) => {}
                }
            }
            match pidfd.wait(Some(Duration::from_millis(5))) {
                Ok(false) if Instant::now() < deadline => {}
                Ok(false) => {
                    return Err(self.fail_start(
                        &mut child,
                        Some(&pidfd),
                        &ctx.log_path,
                        format!(
                            "QEMU did not open its QMP socket within {} s",
                            START_TIMEOUT.as_secs()
                        ),
                    ))
                }
                Ok(true) | Err(_) => {
                    return Err(self.fail_start(
                        &mut child,
                        Some(&pidfd),
                        &ctx.log_path,
                        "QEMU exited at start".into(),
                    ))
                }
            }
        };
        if !ctx.paused {
            if let Err(e) = qmp.execute("cont", None) {
                drop(qmp);
                return Err(self.fail_start(
                    &mut child,
                    Some(&pidfd),
                    &ctx.log_path,
                    format!("QEMU did not start the guest: {e}"),
                ));
            }
        }
        tracing::info!(pid, domain = %domain.name, "QEMU started");
        Ok(Box::new(QemuInstance {
            pidfd,
            child: Mutex::new(Some(child)),
            status: Mutex::new(None),
            qmp,
            machine,
            paths,
            live: Mutex::new(live),
            unplugging: Mutex::new(Vec::new()),
            direct_links: Mutex::new(std::mem::take(&mut direct.0)),
            start_time,
            id,
            debug_exit,
            destroyed: AtomicBool::new(false),
        }))
    }

    fn adopt(
        &self,
        record: &RunRecord,
        ctx: &StartContext,
    ) -> Result<Option<Box<dyn Instance>>, DriverError> {
        let adopted = self.adopt_qemu(record, ctx);
        // A QEMU that is gone leaves its macvtaps, which no descriptor
        // closing removes.
        if let Ok(None) = adopted {
            let links = record
                .extra
                .get("direct_links")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            drop(MacvtapGuard(links));
        }
        adopted
    }
}

impl QemuDriver {
    fn adopt_qemu(
        &self,
        record: &RunRecord,
        ctx: &StartContext,
    ) -> Result<Option<Box<dyn Instance>>, DriverError> {
        let Some(pidfd) = PidFd::open(record.pid, record.start_time)
            .map_err(|e| DriverError::Failed(format!("cannot watch pid {}: {e}", record.pid)))?
        else {
            return Ok(None);
        };
        let domain = Domain::parse(&record.xml)
            .map_err(|e| {
                DriverError::Failed(format!("the recorded definition does not parse: {e}"))
            })?
            .domain;
        let machine = record
            .extra
            .get("machine")
            .and_then(Value::as_str)
            .and_then(Machine::from_record)
            .unwrap_or(Machine::Microvm);
        let mut paths = RunPaths::new(&ctx.run_dir);
        if let Some(q) = record.extra.get("qmp").and_then(Value::as_str) {
            paths.qmp = PathBuf::from(q);
        }
        if let Some(c) = record.extra.get("console").and_then(Value::as_str) {
            paths.console = PathBuf::from(c);
        }
        let debug_exit = record
            .extra
            .get("debug_exit")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let direct_links: Vec<String> = record
            .extra
            .get("direct_links")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        // A live QEMU whose monitor does not answer is not "gone": saying
        // so would leave it running unwatched.
        let qmp = Qmp::connect(&paths.qmp, CONNECT_TIMEOUT).map_err(|e| {
            DriverError::Failed(format!(
                "QEMU pid {} runs but its QMP socket does not answer: {e}",
                record.pid
            ))
        })?;
        Ok(Some(Box::new(QemuInstance {
            pidfd,
            child: Mutex::new(None),
            status: Mutex::new(None),
            qmp,
            machine,
            paths,
            live: Mutex::new(domain),
            unplugging: Mutex::new(Vec::new()),
            direct_links: Mutex::new(direct_links),
            start_time: record.start_time,
            id: record.id,
            debug_exit,
            destroyed: AtomicBool::new(false),
        })))
    }
}

/// Macvtaps made for a start not yet handed to its instance: a start that
/// fails deletes them (a macvtap does not go with its descriptors).
struct MacvtapGuard(Vec<String>);

impl Drop for MacvtapGuard {
    fn drop(&mut self) {
        for name in &self.0 {
            if let Err(e) = netvirt::macvtap::remove_direct_port(name) {
                tracing::warn!("cannot remove macvtap {name} of a failed start: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_line() {
        assert_eq!(
            parse_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b2)\n"),
            Some("qemu 7.2.22".into())
        );
        assert_eq!(parse_version("nonsense"), None);
    }
}
