//! The daemon's API: JSON over HTTP/1.1 on a unix socket.
//!
//! These types are the contract between the daemon and every client (the
//! CLI first). They carry no behaviour beyond naming states as libvirt does.
//!
//! # Routes
//!
//! `{dom}` is a domain's name, UUID or (while it runs) numeric id, looked up
//! in that order of precedence as virsh does: id first when all digits, then
//! UUID, then name. Every error is `{"error": "<one line>"}` ([`ApiError`])
//! with 400 (malformed request), 404 (no such domain), 409 (the domain's
//! state forbids it), 422 (well-formed but impossible: bad XML, an
//! unsupported element, a duplicate name), 403 (a write on the read-only
//! socket) or 500/502 (the driver or the VMM failed).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/openapi` | | the OpenAPI document |
//! | GET | `/version` | | [`VersionInfo`] |
//! | GET | `/host` | | [`NodeInfo`] |
//! | GET | `/host/capabilities` | | [`XmlDocument`] (libvirt capabilities XML) |
//! | GET | `/domains?filter=active\|inactive\|all` | | `[`[`DomainSummary`]`]` (default `active`) |
//! | POST | `/domains` | [`DefineRequest`] | [`DefineResponse`] (define or update, persistent) |
//! | POST | `/domains/create` | [`CreateRequest`] | [`DefineResponse`] (transient, started) |
//! | GET | `/domains/{dom}` | | [`DomainInfo`] |
//! | DELETE | `/domains/{dom}` | | 204 (undefine; a running domain becomes transient) |
//! | GET | `/domains/{dom}/xml?inactive=true` | | [`XmlDocument`] |
//! | GET | `/domains/{dom}/state` | | [`DomainStateInfo`] |
//! | POST | `/domains/{dom}/start` | [`StartRequest`] | [`DomainStateInfo`] |
//! | POST | `/domains/{dom}/shutdown` | | 204 (ACPI power button; state `in shutdown`) |
//! | POST | `/domains/{dom}/destroy` | [`DestroyRequest`] | 204 |
//! | POST | `/domains/{dom}/reboot` | | 204 |
//! | POST | `/domains/{dom}/reset` | | 204 |
//! | POST | `/domains/{dom}/suspend` | | 204 |
//! | POST | `/domains/{dom}/resume` | | 204 |
//! | PUT | `/domains/{dom}/autostart` | [`AutostartRequest`] | 204 |
//! | GET | `/domains/{dom}/stats` | | [`DomainStats`] |
//! | GET | `/domains/{dom}/disks` | | `[`[`DiskRow`]`]` (domblklist) |
//! | POST | `/domains/{dom}/disks` | [`DeviceRequest`] | 204 (attach-disk) |
//! | DELETE | `/domains/{dom}/disks/{target}?live=&config=` | | 204 (detach-disk) |
//! | GET | `/domains/{dom}/interfaces` | | `[`[`InterfaceRow`]`]` (domiflist) |
//! | POST | `/domains/{dom}/interfaces` | [`DeviceRequest`] | 204 (attach-interface) |
//! | DELETE | `/domains/{dom}/interfaces/{mac}?live=&config=` | | 204 (detach-interface) |
//! | GET | `/domains/{dom}/interfaces/{iface}/bandwidth?config=` | | [`InterfaceBandwidth`] (domiftune) |
//! | PUT | `/domains/{dom}/interfaces/{iface}/bandwidth` | [`BandwidthRequest`] | 204 (domiftune with rates) |
//! | GET | `/domains/{dom}/memory` | | [`MemoryStats`] (dommemstat) |
//! | PUT | `/domains/{dom}/memory` | [`SetMemoryRequest`] | 204 (setmem) |
//! | GET | `/domains/{dom}/vcpus?config=` | | `[`[`VcpuRow`]`]` (vcpuinfo, vcpupin) |
//! | PUT | `/domains/{dom}/vcpus/{vcpu}/affinity` | [`PinRequest`] | 204 (vcpupin with a set) |
//! | GET | `/domains/{dom}/emulator/affinity?config=` | | [`Affinity`] (emulatorpin) |
//! | PUT | `/domains/{dom}/emulator/affinity` | [`PinRequest`] | 204 (emulatorpin with a set) |
//! | GET | `/domains/{dom}/numatune?config=` | | [`NumaTuneInfo`] (numatune) |
//! | PUT | `/domains/{dom}/numatune` | [`NumaTuneRequest`] | 204 (numatune with a mode or set) |
//! | GET | `/domains/{dom}/limits?config=` | | [`ResourceLimits`] (schedinfo, memtune, blkiotune) |
//! | PUT | `/domains/{dom}/limits` | [`LimitsRequest`] | 204 (the same, with values) |
//! | GET | `/domains/{dom}/console` | | 101 Switching Protocols (`Upgrade: vireo-console`), then raw bytes both ways with the guest's serial console |
//! | GET | `/events?domain={dom}` | | 200, a stream of [`Event`]s, one JSON object per line, until the client closes |
//!
//! Virtual networks have routes of their own, listed in [`network`]'s
//! documentation; host interfaces too, in [`iface`]'s; storage pools in
//! [`storage`]'s; secrets in [`secret`]'s.
//!
//! The read-only socket answers only `GET` routes other than `console`,
//! a volume's `content` and a secret's `value`;
//! anything else there is 403 `{"error": "operation forbidden: read only access"}`.

pub mod bandwidth;
pub mod iface;
pub mod network;
pub mod secret;
pub mod storage;
pub mod tuning;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use bandwidth::{BandwidthRequest, InterfaceBandwidth, RateSpec};
pub use iface::{InterfaceDefineResponse, InterfaceSummary};
pub use network::{
    DhcpLease, InterfaceAddress, NetworkDestroyRequest, NetworkSummary, NetworkUpdateRequest,
};
pub use secret::{SecretSummary, SecretValue};
pub use storage::{
    PoolSummary, VolumeCopyRequest, VolumeCreateRequest, VolumeResizeRequest, VolumeSummary,
    VolumeTransfer, VolumeWipeRequest,
};
pub use tuning::{
    Affinity, DeviceLimits, LimitsRequest, MemoryStat, MemoryStats, NumaTuneInfo, NumaTuneRequest,
    PinRequest, ResourceLimits, SetMemoryRequest, VcpuRow,
};

/// The daemon's read-write socket unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vireo/vireo.sock";

/// The daemon's state directory unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vireo";

/// The read-only socket beside the read-write socket `main`:
/// `vireo.sock` → `vireo-ro.sock` (`NAME.sock` → `NAME-ro.sock`, and
/// `NAME` → `NAME-ro`).
pub fn read_only_socket(main: &Path) -> PathBuf {
    let name = main.file_name().unwrap_or_default().to_string_lossy();
    let ro = match name.strip_suffix(".sock") {
        Some(stem) => format!("{stem}-ro.sock"),
        None => format!("{name}-ro"),
    };
    main.with_file_name(ro)
}

/// Every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    /// One line, without a trailing period, fit to print after `error: `.
    pub error: String,
}

/// `GET /version`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionInfo {
    /// The daemon's version (the crate version).
    pub daemon: String,
    /// The drivers this daemon runs, with their versions where known
    /// (`vireo 0.1.0`, `qemu 7.2.0`).
    pub drivers: Vec<String>,
    /// The host's name (`hostname`).
    pub hostname: String,
    /// The host's kernel release.
    pub kernel: String,
}

/// `GET /host`: what `virsh nodeinfo` prints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// `x86_64`.
    pub cpu_model: String,
    /// Online logical CPUs.
    pub cpus: u32,
    /// Nominal frequency in MHz (0 when unknown).
    pub mhz: u32,
    /// NUMA nodes.
    pub numa_nodes: u32,
    /// Sockets per node.
    pub sockets_per_node: u32,
    /// Cores per socket.
    pub cores_per_socket: u32,
    /// Threads per core.
    pub threads_per_core: u32,
    /// Total memory in KiB.
    pub memory_kib: u64,
}

/// An XML document in a JSON answer (`dumpxml`, `capabilities`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct XmlDocument {
    /// The document.
    pub xml: String,
}

/// `POST /domains`: define (or update) a persistent domain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DefineRequest {
    /// libvirt domain XML.
    pub xml: String,
}

/// `POST /domains/create`: start a transient domain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// libvirt domain XML.
    pub xml: String,
    /// Start with the vCPUs paused.
    #[serde(default)]
    pub paused: bool,
}

/// The answer to define and create.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DefineResponse {
    /// The domain's name.
    pub name: String,
    /// Its UUID.
    pub uuid: String,
    /// One line per element accepted without effect (the accept-and-warn
    /// rule of `docs/domain-xml.md`); the CLI prints each as `warning: ...`.
    pub warnings: Vec<String>,
    /// Whether this replaced an existing definition.
    pub updated: bool,
}

/// `POST /domains/{dom}/start`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Start with the vCPUs paused (`start --paused`).
    #[serde(default)]
    pub paused: bool,
}

/// `POST /domains/{dom}/destroy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DestroyRequest {
    /// Ask the VMM to stop (SIGTERM) and wait for it rather than killing it.
    #[serde(default)]
    pub graceful: bool,
}

/// `PUT /domains/{dom}/autostart`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AutostartRequest {
    /// Start the domain when the daemon starts.
    pub enabled: bool,
}

/// `POST /domains/{dom}/disks` and `/interfaces`: attach a device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeviceRequest {
    /// The device's XML (`<disk>...</disk>` or `<interface>...</interface>`).
    pub xml: String,
    /// Change the running domain (virsh `--live`).
    #[serde(default)]
    pub live: bool,
    /// Change the persistent definition (virsh `--config`).
    #[serde(default)]
    pub config: bool,
}

/// A domain's state, named as libvirt names it (`virsh domstate`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    /// `running`.
    Running,
    /// `paused`.
    Paused,
    /// `in shutdown`: the guest was asked to power off.
    InShutdown,
    /// `shut off`.
    ShutOff,
    /// `crashed`.
    Crashed,
}

impl DomainState {
    /// virsh's words for the state.
    pub fn virsh_name(self) -> &'static str {
        match self {
            DomainState::Running => "running",
            DomainState::Paused => "paused",
            DomainState::InShutdown => "in shutdown",
            DomainState::ShutOff => "shut off",
            DomainState::Crashed => "crashed",
        }
    }

    /// Whether a VMM process exists for the domain.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            DomainState::Running | DomainState::Paused | DomainState::InShutdown
        )
    }
}

/// Why a domain is in its state, as libvirt's reasons.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum StateReason {
    /// Not known (for instance after re-adoption).
    Unknown,
    /// running: it was started.
    Booted,
    /// running: it was resumed.
    Unpaused,
    /// paused: a user paused it (or `start --paused`).
    User,
    /// paused: a disk's error policy stopped it on an I/O error.
    IoError,
    /// shut off: the guest powered off.
    Shutdown,
    /// shut off: `destroy`.
    Destroyed,
    /// shut off: the guest crashed, or the VMM died.
    Crashed,
    /// shut off: the VMM could not be started.
    Failed,
    /// shut off: never started since it was defined.
    Defined,
}

impl StateReason {
    /// virsh's words for the reason (`domstate --reason`).
    pub fn virsh_name(self) -> &'static str {
        match self {
            StateReason::Unknown => "unknown",
            StateReason::Booted => "booted",
            StateReason::Unpaused => "unpaused",
            StateReason::User => "user",
            StateReason::IoError => "ioerror",
            StateReason::Shutdown => "shutdown",
            StateReason::Destroyed => "destroyed",
            StateReason::Crashed => "crashed",
            StateReason::Failed => "failed",
            // libvirt reports a never-started domain as shut off (unknown).
            StateReason::Defined => "unknown",
        }
    }
}

/// `GET /domains/{dom}/state`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct DomainStateInfo {
    /// The state.
    pub state: DomainState,
    /// Why.
    pub reason: StateReason,
}

/// One row of `GET /domains` (`virsh list`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DomainSummary {
    /// Numeric id while active, as virsh's `Id` column (`-` when inactive).
    pub id: Option<u32>,
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: String,
    /// State.
    pub state: DomainState,
    /// Reason.
    pub reason: StateReason,
    /// Whether a definition is kept (false for `create`d domains).
    pub persistent: bool,
    /// Whether it starts with the daemon.
    pub autostart: bool,
}

/// `GET /domains/{dom}` (`virsh dominfo`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DomainInfo {
    /// The same fields as a list row.
    #[serde(flatten)]
    pub summary: DomainSummary,
    /// `hvm`.
    pub os_type: String,
    /// The driver that runs it (`vireo` or `qemu`).
    pub driver: String,
    /// vCPUs.
    pub vcpus: u32,
    /// CPU time used by the VMM process, nanoseconds (0 when inactive).
    pub cpu_time_ns: u64,
    /// `memory`, KiB.
    pub max_memory_kib: u64,
    /// `currentMemory`, KiB.
    pub used_memory_kib: u64,
    /// The VMM's pid while active.
    pub pid: Option<u32>,
}

/// `GET /domains/{dom}/stats` (`virsh domstats`): the VMM's own counters,
/// flattened to virsh's `group.field=value` keys (`vcpu.0.exits.mmio_read`,
/// `block.0.rd.bytes`, `net.0.tx.bytes`, `state.state`, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DomainStats {
    /// Name.
    pub name: String,
    /// Counters in a stable (sorted) order.
    pub fields: std::collections::BTreeMap<String, serde_json::Value>,
}

/// One row of `domblklist`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskRow {
    /// `target dev` (`vda`).
    pub target: String,
    /// The file or device path.
    pub source: String,
    /// `file` or `block`.
    pub kind: String,
    /// `disk`.
    pub device: String,
}

/// One row of `domiflist`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceRow {
    /// The host-side device (the TAP), `-` when not known.
    pub interface: String,
    /// `ethernet`, `bridge`, `network`.
    pub kind: String,
    /// The bridge or network, `-` for ethernet.
    pub source: String,
    /// `virtio`.
    pub model: String,
    /// MAC address.
    pub mac: String,
}

/// A lifecycle event, as libvirt's (`virsh event --loop` prints
/// `event 'lifecycle' for domain 'NAME': Started Booted`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Seconds since the epoch, with fractions.
    pub timestamp: f64,
    /// The domain's name.
    pub domain: String,
    /// Its UUID.
    pub uuid: String,
    /// What happened.
    pub event: EventKind,
    /// libvirt's detail word (`Booted`, `Destroyed`, `Crashed`, `Added`, ...).
    pub detail: String,
}

/// libvirt's lifecycle event types.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Defined (detail `Added` or `Updated`).
    Defined,
    /// Undefined (`Removed`).
    Undefined,
    /// Started (`Booted`).
    Started,
    /// Suspended (`Paused`).
    Suspended,
    /// Resumed (`Unpaused`).
    Resumed,
    /// Stopped (`Shutdown`, `Destroyed`, `Crashed`, `Failed`).
    Stopped,
    /// Shutdown (`Finished`: the guest finished powering off).
    Shutdown,
    /// Crashed (`Panicked`).
    Crashed,
}

impl EventKind {
    /// virsh's word for the event (`Started`).
    pub fn virsh_name(self) -> &'static str {
        match self {
            EventKind::Defined => "Defined",
            EventKind::Undefined => "Undefined",
            EventKind::Started => "Started",
            EventKind::Suspended => "Suspended",
            EventKind::Resumed => "Resumed",
            EventKind::Stopped => "Stopped",
            EventKind::Shutdown => "Shutdown",
            EventKind::Crashed => "Crashed",
        }
    }
}
