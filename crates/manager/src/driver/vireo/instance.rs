//! A running Vireo VMM as the daemon drives it: its per-VM API, its
//! process (held through a pidfd), its console socket and the TAPs made
//! for it.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use virtxml::{CpuSet, Disk, Domain, Interface, InterfaceKind, MacAddress};

use super::config::{self, BridgeTap, DirectLink};
use super::http::{ApiClient, CallError};
use super::stats;
use super::taps::{self, NetNs};
use super::tuning;
use crate::driver::process::{self, PidFd, ProcStat};
use crate::driver::{
    ConsoleStream, DriverError, ExitReason, Instance, Plugged, RunRecord, RuntimeState, Unplug,
    VcpuThread, UNPLUG_WAIT,
};

/// How long `destroy(graceful)` gives the VMM after SIGTERM.
const GRACE: Duration = Duration::from_secs(5);
/// How long a VMM may take to go after SIGKILL before destroy gives up.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What [`RunRecord::extra`] holds for this driver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Extra {
    pub api_socket: PathBuf,
    pub console_socket: PathBuf,
    pub exit_status: PathBuf,
    /// Bridge TAPs made at start and handed over by descriptor: they go
    /// with the VMM (recorded for the user's sake). Hot-plugged cards'
    /// TAPs are handed over the same way and go with their card.
    #[serde(default)]
    pub bridge_ports: Vec<BridgeTap>,
    /// Macvtaps of direct interfaces (at start and hot-plugged): deleted
    /// when unplugged or when the VMM has ended.
    #[serde(default)]
    pub direct_links: Vec<DirectLink>,
    /// The uid a jailed VMM runs under (`--jail`); `None`: not jailed.
    /// The recorded pid is then the jail's keeper, whose one child is
    /// the VMM.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Files given `uid` an ACL entry for the run, taken back at its end.
    #[serde(default)]
    pub granted: Vec<PathBuf>,
}

impl Extra {
    /// Takes back what the run was given (the ACL entries), once.
    pub(crate) fn release(&mut self, domain: &str) {
        if let Some(uid) = self.uid {
            super::jail::revoke_files(domain, uid, &std::mem::take(&mut self.granted));
        }
    }
}

/// The process that runs the VM: `pid` itself, or for a jailed VMM the
/// one child of its keeper `pid` (docs/security.md).
pub(crate) fn vmm_pid(pid: u32, jailed: bool) -> u32 {
    if !jailed {
        return pid;
    }
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next()?.parse().ok())
        .unwrap_or(pid)
}

/// What `vireo run --exit-status` writes as the VMM ends.
#[derive(Debug, Deserialize)]
struct ExitStatusFile {
    reason: String,
    #[serde(default)]
    detail: String,
}

/// The reason in the exit status file a VMM wrote at `path`, if it wrote
/// one (it does not when killed with SIGKILL).
pub(crate) fn recorded_reason(path: &std::path::Path) -> Option<ExitReason> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // The VMM writes one short JSON object. Whatever else is there (a
    // FIFO that would block the read, a link, a huge file) is not one:
    // opened without following links or waiting, regular files only,
    // and read up to a bound.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_EXIT_STATUS_BYTES + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > MAX_EXIT_STATUS_BYTES {
        return None;
    }
    let file: ExitStatusFile = serde_json::from_slice(&bytes).ok()?;
    Some(match file.reason.as_str() {
        "poweroff" | "signal" => ExitReason::Poweroff,
        "reset" => ExitReason::Reset,
        "crashed" => ExitReason::Crashed(if file.detail.is_empty() {
            "the guest crashed".into()
        } else {
            file.detail
        }),
        // The VMM's fault (or a guest that got control of a thread), not
        // the guest's crash: the domain shuts off as crashed, as libvirt
        // reports a QEMU that died.
        "seccomp" => ExitReason::Failed(format!("seccomp: {}", file.detail)),
        _ => ExitReason::Failed(if file.detail.is_empty() {
            "the VMM failed".into()
        } else {
            file.detail
        }),
    })
}

/// Largest exit status file read: the VMM's is one line of JSON with a
/// one-line detail.
const MAX_EXIT_STATUS_BYTES: u64 = 16 * 1024;

/// A running (or adopted) Vireo VMM.
pub struct VireoInstance {
    name: String,
    id: u32,
    pidfd: PidFd,
    start_time: u64,
    /// The process, when this daemon started it: reaped by `wait_exit`.
    child: Mutex<Option<Child>>,
    api: ApiClient,
    extra: Mutex<Extra>,
    /// The live definition: hot-plugs change it.
    domain: Mutex<Domain>,
    /// Where bridge TAPs were made.
    netns: NetNs,
    destroyed: AtomicBool,
    /// Names for TAPs of hot-plugged bridge interfaces.
    next_tap: AtomicU32,
    /// A jailed VMM itself (the keeper's child): its end is the domain's
    /// end, which the keeper's may precede (a SIGKILL to the keeper ends
    /// the VMM by its parent-death signal, a moment later).
    jailed_vmm: Option<PidFd>,
}

/// How long a jailed VMM may take to go after its keeper did.
const VMM_AFTER_KEEPER: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VireoInstance {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        domain: Domain,
        id: u32,
        pidfd: PidFd,
        start_time: u64,
        child: Option<Child>,
        api: ApiClient,
        extra: Extra,
        netns: NetNs,
    ) -> Self {
        let jailed_vmm = extra.uid.and_then(|_| {
            let pid = vmm_pid(pidfd.pid(), true);
            let start = process::start_time(pid).ok()?;
            PidFd::open(pid, start).ok().flatten()
        });
        Self {
            jailed_vmm,
            name: domain.name.clone(),
            id,
            pidfd,
            start_time,
            child: Mutex::new(child),
            api,
            extra: Mutex::new(extra),
            domain: Mutex::new(domain),
            netns,
            destroyed: AtomicBool::new(false),
            next_tap: AtomicU32::new(0),
        }
    }

    /// Once the keeper has gone: wait for its VMM too, killing it if it
    /// lingers.
    fn wait_for_jailed_vmm(&self) -> std::io::Result<()> {
        match &self.jailed_vmm {
            Some(vmm) if !vmm.wait(Some(VMM_AFTER_KEEPER))? => vmm.terminate(None, KILL_WAIT),
            _ => Ok(()),
        }
    }

    /// The VMM's own pid (not its jail's keeper's).
    fn vmm_pid(&self) -> u32 {
        vmm_pid(self.pidfd.pid(), lock(&self.extra).uid.is_some())
    }

    /// Maps an API failure to the driver's error, naming the domain.
    fn error(&self, e: CallError) -> DriverError {
        let name = &self.name;
        match e {
            CallError::TimedOut => DriverError::Failed(format!(
                "the VMM of {name} did not answer within {} s",
                super::API_TIMEOUT.as_secs()
            )),
            CallError::Connect(e) => DriverError::Failed(format!(
                "the VMM of {name} does not answer on {}: {e}",
                self.api.socket().display()
            )),
            CallError::Io(m) => DriverError::Failed(format!("the VMM of {name}: {m}")),
            CallError::Status(404 | 409, m) => DriverError::Conflict(format!("domain {name}: {m}")),
            CallError::Status(400 | 422, m) => {
                DriverError::Unsupported(format!("domain {name}: {m}"))
            }
            CallError::Status(_, m) => DriverError::Failed(format!("domain {name}: {m}")),
        }
    }

    /// Asks the VMM to unplug `device` (the guest is sent an eject
    /// request) and waits [`UNPLUG_WAIT`] at most for it to be gone.
    fn unplug(&self, device: &Plugged) -> Result<Unplug, DriverError> {
        let id = device_id(device);
        match self
            .api
            .put("/vm/remove-device", Some(&json!({ "id": id })))
        {
            // 409: asked before and still pending; wait for it again.
            Ok(_) | Err(CallError::Status(409, _)) => {}
            Err(e) => return Err(self.error(e)),
        }
        let deadline = std::time::Instant::now() + UNPLUG_WAIT;
        loop {
            if !self.has_device(&id)? {
                self.forget(device);
                return Ok(Unplug::Done);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(Unplug::Pending);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the VMM still has a device called `id`.
    fn has_device(&self, id: &str) -> Result<bool, DriverError> {
        let info = self.get("/vm")?;
        Ok(info["devices"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["id"] == id)))
    }

    /// Drops an unplugged device from the live definition. A bridge
    /// card's TAP went with the card: its descriptor was the only one.
    fn forget(&self, device: &Plugged) {
        let gone: Vec<String> = {
            let mut domain = lock(&self.domain);
            match device {
                Plugged::Disk(t) => {
                    domain.devices.disks.retain(|d| d.target != *t);
                    Vec::new()
                }
                Plugged::Interface(mac) => {
                    let (gone, kept) = std::mem::take(&mut domain.devices.interfaces)
                        .into_iter()
                        .partition(|i| i.mac == *mac);
                    domain.devices.interfaces = kept;
                    gone.into_iter()
                        .filter_map(|i: Interface| i.target)
                        .collect()
                }
            }
        };
        // A direct card's macvtap is a link of its own: it goes now.
        self.remove_direct_named(&gone);
    }

    /// A jailed VMM cannot open host paths: the daemon opens the image
    /// and hands it over (`image_fd`), and gives the VMM's uid its ACL
    /// entry as for the disks it started with.
    fn attach_disk_jailed(
        &self,
        disk: &Disk,
        mut spec: Value,
        uid: u32,
    ) -> Result<(), DriverError> {
        use std::os::fd::AsFd;
        use std::os::unix::fs::OpenOptionsExt;
        let path = match disk.source.host_path() {
            Some(p) => PathBuf::from(p),
            None => {
                return Err(DriverError::Failed(format!(
                    "domain {}: disk {} has no host path",
                    self.name, disk.target
                )))
            }
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!disk.readonly)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| {
                DriverError::Failed(format!(
                    "domain {}: cannot open {}: {e}",
                    self.name,
                    path.display()
                ))
            })?;
        spec["image_fd"] = true.into();
        self.api
            .put_with_fd("/vm/add-disk", &spec, file.as_fd())
            .map_err(|e| self.error(e))?;
        let files = super::jail::domain_files_of_disks(&[(path, disk.readonly)]);
        let granted = super::jail::grant_files(&self.name, uid, &files);
        lock(&self.extra).granted.extend(granted);
        Ok(())
    }

    fn put(&self, path: &str, body: Option<&Value>) -> Result<Value, DriverError> {
        self.api.put(path, body).map_err(|e| self.error(e))
    }

    fn get(&self, path: &str) -> Result<Value, DriverError> {
        self.api.get(path).map_err(|e| self.error(e))
    }

    /// Why the VMM ended, once it has: the exit status file it wrote, or
    /// what its wait status (when it was our child) says.
    fn exit_reason(&self, status: Option<std::process::ExitStatus>) -> ExitReason {
        if self.destroyed.load(Ordering::Acquire) {
            return ExitReason::Destroyed;
        }
        let path = lock(&self.extra).exit_status.clone();
        if let Some(reason) = recorded_reason(&path) {
            return reason;
        }
        use std::os::unix::process::ExitStatusExt;
        ExitReason::Failed(match status.and_then(|s| s.signal()) {
            Some(sig) => format!(
                "the VMM process was killed by signal {sig} before it could say why it ended"
            ),
            None => "the VMM process was killed, or ended without recording why".into(),
        })
    }

    /// The host side of a hot-plugged card: an `ethernet` NIC's TAP by
    /// name; for a bridge (or network) NIC a TAP the daemon opens on the
    /// bridge, not persistent; for a direct NIC a macvtap the daemon makes
    /// (recorded in `extra`, deleted with the card). An opened one's
    /// descriptor goes to the VMM.
    fn tap_for(&self, iface: &Interface) -> Result<HotTap, DriverError> {
        match (&iface.kind, iface.host_bridge()) {
            // A jailed VMM cannot open /dev/net/tun: the daemon opens
            // the TAP (or makes it) and hands it over.
            (InterfaceKind::Ethernet, _) if lock(&self.extra).uid.is_some() => {
                let tap = self
                    .netns
                    .run(|| netvirt::Tap::open(iface.target.as_deref(), 1))
                    .map_err(|e| DriverError::Failed(format!("domain {}: {e}", self.name)))?;
                Ok(HotTap::Opened(tap))
            }
            (InterfaceKind::Ethernet, _) => Ok(HotTap::Named(iface.target.clone())),
            (InterfaceKind::Direct { dev, mode }, _) => {
                let name = iface.target.clone().unwrap_or_else(|| {
                    let n = self.next_tap.fetch_add(1, Ordering::Relaxed);
                    super::config::bridge_tap_name(
                        self.id,
                        'm',
                        usize::try_from(n).unwrap_or_default(),
                    )
                });
                let link = DirectLink {
                    name,
                    dev: dev.clone(),
                };
                let mode = crate::driver::macvlan_mode(*mode);
                let tap = self
                    .netns
                    .run(|| taps::open_direct(&self.name, &link, mode, iface.mac.0))?;
                lock(&self.extra).direct_links.push(link);
                Ok(HotTap::Opened(tap))
            }
            (_, Some(bridge)) => {
                let name = iface.target.clone().unwrap_or_else(|| {
                    let n = self.next_tap.fetch_add(1, Ordering::Relaxed);
                    super::config::bridge_tap_name(
                        self.id,
                        'h',
                        usize::try_from(n).unwrap_or_default(),
                    )
                });
                let made = BridgeTap::for_interface(name.clone(), bridge, iface);
                let tap = self.netns.run(|| {
                    let tap = netvirt::bridge::open_bridge_port(&name, bridge).map_err(|e| {
                        DriverError::Failed(format!(
                            "domain {}: bridge interface on '{bridge}': {e}",
                            self.name
                        ))
                    })?;
                    // Dropping the TAP on a failure removes it.
                    taps::tag(&self.name, &made)?;
                    Ok::<_, DriverError>(tap)
                })?;
                Ok(HotTap::Opened(tap))
            }
            (_, None) => Err(DriverError::Unsupported(format!(
                "domain {}: {}",
                self.name,
                super::config::unresolved_network(iface)
            ))),
        }
    }
}

/// See [`VireoInstance::tap_for`].
enum HotTap {
    /// The VMM opens (or makes) this TAP; `None` lets it name one.
    Named(Option<String>),
    /// Opened here, handed over by descriptor.
    Opened(netvirt::Tap),
}

impl VireoInstance {
    /// Deletes the recorded macvtaps among `names`; those that cannot go
    /// stay recorded, for the end of the domain.
    fn remove_direct_named(&self, names: &[String]) {
        let gone: Vec<DirectLink> = {
            let mut extra = lock(&self.extra);
            let (gone, kept) = std::mem::take(&mut extra.direct_links)
                .into_iter()
                .partition(|l| names.contains(&l.name));
            extra.direct_links = kept;
            gone
        };
        if !gone.is_empty() {
            let left = self.netns.run(|| taps::remove_direct(&gone));
            lock(&self.extra).direct_links.extend(left);
        }
    }
}

impl Instance for VireoInstance {
    fn record(&self) -> RunRecord {
        RunRecord {
            driver: "vireo".into(),
            pid: self.pidfd.pid(),
            start_time: self.start_time,
            id: self.id,
            xml: lock(&self.domain).to_xml(),
            extra: serde_json::to_value(&*lock(&self.extra)).unwrap_or(Value::Null),
        }
    }

    fn state(&self) -> Result<RuntimeState, DriverError> {
        let info = self.get("/vm")?;
        match info.get("state").and_then(Value::as_str) {
            Some("running") => Ok(RuntimeState::Running),
            Some("paused") => Ok(RuntimeState::Paused),
            other => Err(DriverError::Failed(format!(
                "the VMM of {} reports state {}",
                self.name,
                other.unwrap_or("(none)")
            ))),
        }
    }

    fn pause(&self) -> Result<(), DriverError> {
        self.put("/vm/pause", None).map(drop)
    }

    fn resume(&self) -> Result<(), DriverError> {
        self.put("/vm/resume", None).map(drop)
    }

    fn shutdown(&self) -> Result<(), DriverError> {
        self.put("/vm/shutdown", None).map(drop)
    }

    fn reset(&self) -> Result<(), DriverError> {
        self.put("/vm/reset", None).map(drop)
    }

    /// Graceful: SIGTERM, on which the VMM stops the guest at once and
    /// exits cleanly (removing its sockets), up to 5 s; then SIGKILL. Not
    /// graceful: SIGKILL. Neither asks the guest (that is `shutdown`).
    fn destroy(&self, graceful: bool) -> Result<(), DriverError> {
        if self
            .pidfd
            .wait(Some(Duration::ZERO))
            .map_err(|e| DriverError::Failed(format!("domain {}: {e}", self.name)))?
        {
            return Ok(());
        }
        self.destroyed.store(true, Ordering::Release);
        let failed = |e: std::io::Error| DriverError::Failed(format!("domain {}: {e}", self.name));
        if let (false, Some(vmm)) = (graceful, &self.jailed_vmm) {
            // The VMM itself; its keeper reaps it and ends as it did. (A
            // keeper killed first would leave the VMM to init to reap.)
            let _ = vmm.signal(libc::SIGKILL);
            if self.pidfd.wait(Some(KILL_WAIT)).map_err(failed)? {
                return self.wait_for_jailed_vmm().map_err(failed);
            }
        }
        self.pidfd
            .terminate(graceful.then_some(GRACE), KILL_WAIT)
            .map_err(failed)?;
        self.wait_for_jailed_vmm().map_err(failed)
    }

    fn wait_exit(&self) -> ExitReason {
        loop {
            match self.pidfd.wait(None) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    // poll on a pidfd does not fail in practice; do not spin.
                    tracing::warn!("waiting for the VMM of {}: {e}", self.name);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        let status = lock(&self.child).take().and_then(|mut c| c.wait().ok());
        if let Err(e) = self.wait_for_jailed_vmm() {
            tracing::warn!("domain {}: {e}", self.name);
        }
        let reason = self.exit_reason(status);
        lock(&self.extra).release(&self.name);
        let links = std::mem::take(&mut lock(&self.extra).direct_links);
        if !links.is_empty() {
            for l in self.netns.run(|| taps::remove_direct(&links)) {
                tracing::warn!("domain {}: cannot remove macvtap {}", self.name, l.name);
            }
        }
        reason
    }

    fn attach_disk(
        &self,
        disk: &Disk,
        chap: Option<&crate::storage::Credentials>,
    ) -> Result<(), DriverError> {
        let mut spec = {
            let domain = lock(&self.domain);
            if domain.devices.disks.iter().any(|d| d.target == disk.target) {
                return Err(DriverError::Conflict(format!(
                    "domain {}: a disk with target '{}' is attached already",
                    self.name, disk.target
                )));
            }
            config::disk_spec(&domain, disk)?
        };
        // In the body only: the per-VM API socket is the VMM's own (mode
        // 0600), and nothing logs a body.
        match (disk.source.chap(), chap) {
            (Some(_), Some(c)) => spec["chap_secret"] = c.secret.clone().into(),
            (Some(_), None) => {
                return Err(DriverError::Failed(format!(
                    "domain {}: disk {}: no CHAP credentials were found for it",
                    self.name, disk.target
                )))
            }
            _ => {}
        }
        let jailed = lock(&self.extra).uid;
        match jailed {
            // A network disk is no host path: the VMM reaches it itself.
            Some(uid) if !disk.source.is_network() => self.attach_disk_jailed(disk, spec, uid)?,
            _ => {
                self.put("/vm/add-disk", Some(&spec))?;
            }
        }
        lock(&self.domain).devices.disks.push(disk.clone());
        Ok(())
    }

    fn detach_disk(&self, target: &str) -> Result<Unplug, DriverError> {
        if !lock(&self.domain)
            .devices
            .disks
            .iter()
            .any(|d| d.target == target)
        {
            return Err(DriverError::Conflict(format!(
                "domain {}: no disk {target}",
                self.name
            )));
        }
        self.unplug(&Plugged::Disk(target.to_string()))
    }

    fn attach_interface(&self, iface: &Interface) -> Result<(), DriverError> {
        if lock(&self.domain)
            .devices
            .interfaces
            .iter()
            .any(|i| i.mac == iface.mac)
        {
            return Err(DriverError::Conflict(format!(
                "domain {}: an interface with MAC {} is attached already",
                self.name, iface.mac
            )));
        }
        let mut spec = json!({ "id": config::net_id(&iface.mac), "mac": iface.mac.to_string() });
        let tap = match self.tap_for(iface)? {
            HotTap::Named(name) => {
                if let Some(name) = &name {
                    spec["tap"] = name.clone().into();
                }
                self.put("/vm/add-net", Some(&spec))?;
                name
            }
            HotTap::Opened(tap) => {
                let name = tap.name().to_string();
                let queue = tap.queue(0).ok_or_else(|| {
                    DriverError::Failed(format!("domain {}: a TAP with no queue", self.name))
                })?;
                spec["tap_fd"] = true.into();
                if let Err(e) = self.api.put_with_fd("/vm/add-net", &spec, queue) {
                    self.remove_direct_named(std::slice::from_ref(&name));
                    return Err(self.error(e));
                }
                // Ours closes here; the VMM's copy keeps the TAP (or, on a
                // failure, nothing does and it is gone).
                Some(name)
            }
        };
        let mut live = iface.clone();
        if live.target.is_none() {
            live.target = tap;
        }
        lock(&self.domain).devices.interfaces.push(live);
        Ok(())
    }

    fn detach_interface(&self, mac: &MacAddress) -> Result<Unplug, DriverError> {
        if !lock(&self.domain)
            .devices
            .interfaces
            .iter()
            .any(|i| i.mac == *mac)
        {
            return Err(DriverError::Conflict(format!(
                "domain {}: no interface with MAC {mac}",
                self.name
            )));
        }
        self.unplug(&Plugged::Interface(*mac))
    }

    fn unplug_finished(&self, device: &Plugged) -> Result<bool, DriverError> {
        if self.has_device(&device_id(device))? {
            return Ok(false);
        }
        self.forget(device);
        Ok(true)
    }

    fn stats(&self) -> Result<BTreeMap<String, Value>, DriverError> {
        let info = self.get("/vm")?;
        let counters = self.get("/vm/counters")?;
        Ok(stats::domstats(&info, &counters, self.cpu_time()))
    }

    fn console(&self) -> Result<ConsoleStream, DriverError> {
        let path = lock(&self.extra).console_socket.clone();
        UnixStream::connect(&path).map_err(|e| {
            DriverError::Failed(format!(
                "cannot connect to the console of {} at {}: {e}",
                self.name,
                path.display()
            ))
        })
    }

    fn cpu_time(&self) -> Duration {
        let pid = self.pidfd.pid();
        match ProcStat::read(pid) {
            Ok(stat) if stat.start_time == self.start_time => process::cpu_time(self.vmm_pid()),
            _ => Duration::ZERO,
        }
    }

    fn io_error(&self) -> Result<Option<String>, DriverError> {
        let info = self.get("/vm")?;
        Ok(info
            .get("io_error")
            .and_then(Value::as_str)
            .map(str::to_string))
    }

    fn set_balloon(&self, target_kib: u64) -> Result<(), DriverError> {
        self.put("/vm/balloon", Some(&json!({ "target_kib": target_kib })))
            .map(drop)
    }

    fn memory_stats(&self) -> Result<Vec<(String, u64)>, DriverError> {
        let mut out = match self.api.get("/vm/balloon") {
            Ok(v) => tuning::balloon_stats(&v),
            // A VM without a balloon answers 4xx: it has no statistics.
            Err(CallError::Status(status, _)) if (400..500).contains(&status) => Vec::new(),
            Err(e) => return Err(self.error(e)),
        };
        if let Some(rss) = tuning::rss_kib(self.vmm_pid()) {
            out.push(("rss".to_string(), rss));
        }
        Ok(out)
    }

    fn vcpus(&self) -> Result<Vec<VcpuThread>, DriverError> {
        tuning::vcpu_threads(&self.get("/vm/vcpus")?)
    }

    fn pin_vcpu(&self, vcpu: u32, cpus: &CpuSet) -> Result<(), DriverError> {
        let cpus: Vec<u32> = cpus.iter().collect();
        self.put("/vm/vcpu-pin", Some(&json!({ "vcpu": vcpu, "cpus": cpus })))
            .map(drop)
    }

    fn pin_emulator(&self, cpus: &CpuSet) -> Result<(), DriverError> {
        let cpus: Vec<u32> = cpus.iter().collect();
        self.put("/vm/emulator-pin", Some(&json!({ "cpus": cpus })))
            .map(drop)
    }

    fn emulator_affinity(&self) -> Result<CpuSet, DriverError> {
        tuning::main_thread_affinity(self.vmm_pid())
    }
}

impl Drop for VireoInstance {
    /// A daemon that drops an instance without waiting for it leaves the
    /// VMM running (it outlives the daemon by design); only a child that
    /// has already ended is reaped, so it does not stay a zombie.
    fn drop(&mut self) {
        if let Some(child) = lock(&self.child).as_mut() {
            let _ = process::reap(child);
        }
    }
}

/// The VMM's name for `device`.
fn device_id(device: &Plugged) -> String {
    match device {
        Plugged::Disk(target) => target.clone(),
        Plugged::Interface(mac) => config::net_id(mac),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seccomp_stop_is_a_failed_vmm_naming_thread_and_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        std::fs::write(
            &path,
            r#"{"reason":"seccomp","detail":"thread \"vcpu0\" made forbidden system call 110 (getppid)"}"#,
        )
        .unwrap();
        assert!(matches!(
            recorded_reason(&path),
            Some(ExitReason::Failed(d))
                if d == "seccomp: thread \"vcpu0\" made forbidden system call 110 (getppid)"
        ));
    }

    #[test]
    fn exit_status_file_is_read_only_when_it_is_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        std::fs::write(
            &path,
            r#"{"reason":"crashed","detail":"vcpu0: triple fault"}"#,
        )
        .unwrap();
        assert!(
            matches!(recorded_reason(&path), Some(ExitReason::Crashed(d)) if d == "vcpu0: triple fault")
        );
        // A link to a good file is not the VMM's file.
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(recorded_reason(&link).is_none());
        // Too large: refused, not read whole.
        let big = dir.path().join("big.json");
        let detail = "x".repeat(usize::try_from(MAX_EXIT_STATUS_BYTES).unwrap());
        std::fs::write(
            &big,
            format!(r#"{{"reason":"crashed","detail":"{detail}"}}"#),
        )
        .unwrap();
        assert!(recorded_reason(&big).is_none());
        // A FIFO with no writer would block a plain read forever.
        let fifo = dir.path().join("fifo.json");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path only.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(recorded_reason(&fifo).is_none());
    }
}
