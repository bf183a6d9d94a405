//! The seam between the daemon and what runs a VM.
//!
//! A [`Driver`] validates a definition and starts it, or re-adopts a VMM a
//! previous daemon left running. What it hands back is an [`Instance`]: the
//! one handle the daemon has on a running domain. Calls are blocking (the
//! daemon runs them off its async threads, one domain at a time), and every
//! call that talks to a VMM is bounded in time, so a stuck VMM costs only
//! the caller that asked it something.
//!
//! The daemon persists an instance's [`RunRecord`] atomically after start,
//! and gives it back to [`Driver::adopt`] after a restart.

pub mod process;
pub mod qemu;
pub mod vireo;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use virtxml::{Disk, Domain, Interface, MacAddress};

/// A driver failure, one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The definition asks for something this driver cannot do; nothing
    /// was started. Answered as 422.
    #[error("{0}")]
    Unsupported(String),
    /// The request does not fit the domain's current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The VMM could not be started, or failed or did not answer in time
    /// (500/502).
    #[error("{0}")]
    Failed(String),
}

/// Where a driver may put a domain's run-time files. The daemon creates
/// `run_dir` (mode 0700) before [`Driver::start`] and removes it after the
/// instance has ended.
#[derive(Debug, Clone)]
pub struct StartContext {
    /// A directory for the VMM's sockets (API, console, QMP), private to
    /// this domain: short enough for unix socket paths.
    pub run_dir: PathBuf,
    /// The VMM's log file (stderr), appended to across runs.
    pub log_path: PathBuf,
    /// Start with the vCPUs paused.
    pub paused: bool,
    /// The `cgroup.procs` files of the domain's cgroup: the VMM joins it
    /// before it runs (empty: no cgroup).
    pub cgroup_procs: Vec<PathBuf>,
    /// The CHAP credentials of the disks that log in with them (`<auth>`),
    /// by target name, as the daemon found them in its secrets. A driver
    /// hands them to its VMM privately, never on its command line.
    pub disk_secrets: std::collections::BTreeMap<String, crate::storage::Credentials>,
}

/// What the daemon keeps about a running VMM to find it again after a
/// restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunRecord {
    /// The driver's name ([`Driver::name`]).
    pub driver: String,
    /// The VMM's pid.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field
    /// 22): a pid reused by another process has another start time.
    pub start_time: u64,
    /// The domain's numeric id while it runs.
    pub id: u32,
    /// The domain's definition as it was started (the live XML).
    pub xml: String,
    /// Driver-specific data (sockets, TAPs it created, ...).
    pub extra: serde_json::Value,
}

/// How a VMM ended, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off.
    Poweroff,
    /// The guest reset (reboot) and the VMM exited for the daemon to act on
    /// `on_reboot`.
    Reset,
    /// The guest crashed (a panic it reported, a triple fault, an
    /// instruction the VMM could not emulate): the VMM saw it and said so.
    /// libvirt's `Crashed Panicked`.
    Crashed(String),
    /// The VMM itself failed or died without saying why (killed, a runtime
    /// error). libvirt's `Stopped Failed`; `on_crash` does not apply.
    Failed(String),
    /// [`Instance::destroy`] ended it.
    Destroyed,
}

/// The run-time state a VMM reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeState {
    /// vCPUs running.
    Running,
    /// vCPUs paused.
    Paused,
}

/// A console connection: raw bytes both ways with the guest's serial port.
pub type ConsoleStream = UnixStream;

/// A way to run domains.
pub trait Driver: Send + Sync {
    /// `vireo` or `qemu`: what [`RunRecord::driver`] holds.
    fn name(&self) -> &'static str;

    /// The driver's version line for `vireo version` (`qemu 7.2.0`).
    fn version(&self) -> String;

    /// Refuses, with one line naming the element, what this driver cannot
    /// honour in `domain`. Called at define time and again at start.
    fn validate(&self, domain: &Domain) -> Result<(), DriverError>;

    /// Starts `domain` as numeric `id`. Returns once the VMM runs the guest
    /// (or holds it paused), with its record filled in.
    fn start(
        &self,
        domain: &Domain,
        id: u32,
        ctx: &StartContext,
    ) -> Result<Box<dyn Instance>, DriverError>;

    /// Takes back a VMM a previous daemon started. `Ok(None)` when it is
    /// gone (or its pid now belongs to another process).
    fn adopt(
        &self,
        record: &RunRecord,
        ctx: &StartContext,
    ) -> Result<Option<Box<dyn Instance>>, DriverError>;

    /// How the VMM of `record` ended, for one [`Driver::adopt`] found gone
    /// (it ended while no daemon watched it). `None` while it still runs,
    /// or when the driver cannot tell; the daemon then says crashed.
    fn ended(&self, record: &RunRecord) -> Option<ExitReason> {
        let _ = record;
        None
    }
}

/// A running domain, as its driver drives it.
pub trait Instance: Send + Sync {
    /// What to persist to find it again.
    fn record(&self) -> RunRecord;

    /// Asks the VMM whether the vCPUs run.
    fn state(&self) -> Result<RuntimeState, DriverError>;

    /// Pauses the vCPUs.
    fn pause(&self) -> Result<(), DriverError>;

    /// Resumes them.
    fn resume(&self) -> Result<(), DriverError>;

    /// Presses the ACPI power button; the guest decides.
    fn shutdown(&self) -> Result<(), DriverError>;

    /// Resets the machine and boots it again, in the same VMM.
    fn reset(&self) -> Result<(), DriverError>;

    /// Stops the VMM: SIGTERM and a bounded wait when `graceful`, else
    /// SIGKILL. Returns once the process is gone.
    fn destroy(&self, graceful: bool) -> Result<(), DriverError>;

    /// Blocks until the VMM process ends, then says how. Called once, on a
    /// thread of its own; must return promptly after [`Instance::destroy`].
    fn wait_exit(&self) -> ExitReason;

    /// Hot-plugs a disk; `chap` is its CHAP credentials when it has
    /// `<auth>`, handed to the VMM privately (the per-VM API's body).
    fn attach_disk(
        &self,
        disk: &Disk,
        chap: Option<&crate::storage::Credentials>,
    ) -> Result<(), DriverError>;

    /// Asks the guest to release the disk with this `target dev`, waiting
    /// a bounded while ([`UNPLUG_WAIT`]) for it to.
    fn detach_disk(&self, target: &str) -> Result<Unplug, DriverError>;

    /// Hot-plugs a NIC.
    fn attach_interface(&self, iface: &Interface) -> Result<(), DriverError>;

    /// Asks the guest to release the NIC with this MAC, as
    /// [`Instance::detach_disk`] does.
    fn detach_interface(&self, mac: &MacAddress) -> Result<Unplug, DriverError>;

    /// After [`Unplug::Pending`]: whether the guest has released `device`
    /// since; when it has, the driver finishes the unplug (drops the
    /// device from its live definition, frees what backed it).
    fn unplug_finished(&self, device: &Plugged) -> Result<bool, DriverError>;

    /// The VMM's counters as virsh `domstats` keys.
    fn stats(&self) -> Result<std::collections::BTreeMap<String, serde_json::Value>, DriverError>;

    /// A new connection to the guest's serial console.
    fn console(&self) -> Result<ConsoleStream, DriverError>;

    /// CPU time the VMM process has used.
    fn cpu_time(&self) -> Duration;

    /// While the VMM holds the VM paused because a disk's error policy
    /// stopped it: the error.
    fn io_error(&self) -> Result<Option<String>, DriverError> {
        Ok(None)
    }

    /// Sets the balloon's target: the memory the guest should keep, KiB.
    fn set_balloon(&self, _target_kib: u64) -> Result<(), DriverError> {
        Err(DriverError::Unsupported(
            "this driver has no memory balloon".into(),
        ))
    }

    /// The balloon's size and the guest's memory statistics, as virsh
    /// `dommemstat` names them (memory in KiB), in its order; without a
    /// balloon, none.
    fn memory_stats(&self) -> Result<Vec<(String, u64)>, DriverError> {
        Ok(Vec::new())
    }

    /// The vCPU threads: where each last ran, its CPU time and affinity.
    fn vcpus(&self) -> Result<Vec<VcpuThread>, DriverError> {
        Err(DriverError::Unsupported(
            "this driver does not report its vCPU threads".into(),
        ))
    }

    /// Pins vCPU `vcpu`'s thread to `cpus`.
    fn pin_vcpu(&self, _vcpu: u32, _cpus: &virtxml::CpuSet) -> Result<(), DriverError> {
        Err(DriverError::Unsupported(
            "this driver does not pin vCPU threads".into(),
        ))
    }

    /// Pins every thread that is not a vCPU to `cpus`.
    fn pin_emulator(&self, _cpus: &virtxml::CpuSet) -> Result<(), DriverError> {
        Err(DriverError::Unsupported(
            "this driver does not pin its threads".into(),
        ))
    }

    /// The host CPUs the VMM's non-vCPU threads may run on.
    fn emulator_affinity(&self) -> Result<virtxml::CpuSet, DriverError> {
        Err(DriverError::Unsupported(
            "this driver does not report its threads' affinity".into(),
        ))
    }
}

/// One vCPU thread of a running VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuThread {
    /// The vCPU's number.
    pub vcpu: u32,
    /// The host CPU it last ran on.
    pub cpu: u32,
    /// CPU time used, nanoseconds.
    pub cpu_time_ns: u64,
    /// The host CPUs it may run on.
    pub affinity: virtxml::CpuSet,
}

/// How long a detach waits for the guest to release the device before it
/// answers [`Unplug::Pending`] (libvirt waits as long).
pub const UNPLUG_WAIT: Duration = Duration::from_secs(5);

/// A hot-pluggable device of a running domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plugged {
    /// The disk with this `target dev`.
    Disk(String),
    /// The NIC with this MAC.
    Interface(MacAddress),
}

/// How far a detach got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unplug {
    /// The guest released the device: it is out of the live definition.
    Done,
    /// The guest was asked and has not released it yet: the device stays
    /// in the live definition (the guest still uses it) until
    /// [`Instance::unplug_finished`] says it went, as libvirt keeps a
    /// device until QEMU's `DEVICE_DELETED`.
    Pending,
}

/// The macvtap mode of a direct interface's `source mode=`.
pub(crate) fn macvlan_mode(mode: virtxml::DirectMode) -> netvirt::link::MacvlanMode {
    use netvirt::link::MacvlanMode as M;
    use virtxml::DirectMode as D;
    match mode {
        D::Bridge => M::Bridge,
        D::Vepa => M::Vepa,
        D::Private => M::Private,
        D::Passthrough => M::Passthru,
    }
}

/// `domain` as it will be when the daemon starts it: each `type='network'`
/// interface plugged into a bridge, each `type='volume'` disk found in its
/// pool. A definition is checked before its networks and pools run (they
/// may not yet), and neither the bridge's name nor the volume's path
/// changes anything a driver checks, so stand-ins do.
pub fn as_started(domain: &Domain) -> std::borrow::Cow<'_, Domain> {
    let unplugged =
        |i: &Interface| matches!(i.kind, virtxml::InterfaceKind::Network { bridge: None, .. });
    let unresolved = |d: &virtxml::Disk| d.source.host_path().is_none();
    if !domain.devices.interfaces.iter().any(unplugged)
        && !domain.devices.disks.iter().any(unresolved)
    {
        return std::borrow::Cow::Borrowed(domain);
    }
    let mut plugged = domain.clone();
    for iface in &mut plugged.devices.interfaces {
        if let virtxml::InterfaceKind::Network { bridge, .. } = &mut iface.kind {
            bridge.get_or_insert_with(|| "virbr0".to_string());
        }
    }
    for disk in &mut plugged.devices.disks {
        if let virtxml::DiskSource::Volume(v) = &mut disk.source {
            let path = format!("/{}/{}", v.pool, v.volume);
            v.resolved.get_or_insert(virtxml::ResolvedVolume {
                path,
                block: false,
                auth: None,
            });
        }
    }
    std::borrow::Cow::Owned(plugged)
}
