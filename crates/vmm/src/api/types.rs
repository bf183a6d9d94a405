//! What the per-VM API speaks: the actions a client can ask for and the
//! JSON shapes of their bodies. The HTTP side (`http.rs`, `routes.rs`)
//! turns requests into [`Action`]s; the VMM's [`VmController`] carries them
//! out. Neither side knows the other's internals.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Started with `--api-socket` and no kernel: waiting for `PUT /vm/config`.
    NotConfigured,
    /// Configured, waiting for `PUT /vm/boot`.
    Configured,
    /// vCPUs running.
    Running,
    /// vCPUs held out of the guest, devices quiesced.
    Paused,
    /// The guest powered off (or was powered off); the process is ending.
    Shutdown,
}

/// A disk, as `PUT /vm/config` and `PUT /vm/add-disk` take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Name for later requests (`remove-device`, `resize-disk`); default `disk<N>`.
    #[serde(default)]
    pub id: Option<String>,
    /// Image path (raw or qcow2).
    pub path: PathBuf,
    /// `raw` or `qcow2`; probed from the image when absent, which is only
    /// safe for trusted images (docs/security.md).
    #[serde(default)]
    pub format: Option<String>,
    /// Open read-only.
    #[serde(default)]
    pub readonly: bool,
    /// `none` (O_DIRECT) or `writeback` (default).
    #[serde(default)]
    pub cache: Option<String>,
    /// Serial the guest reads with GET_ID.
    #[serde(default)]
    pub serial: Option<String>,
    /// Request queues (default 1).
    #[serde(default)]
    pub queues: Option<u16>,
    /// What a failed write does: `report` (default), `ignore`, `stop`
    /// (pause the VM; the request goes again on resume) or `enospc` (stop
    /// when the host is out of space, report the rest).
    #[serde(default)]
    pub werror: Option<String>,
    /// What a failed read does: `report` (default), `ignore` or `stop`.
    #[serde(default)]
    pub rerror: Option<String>,
    /// `add-disk` only: the image is the descriptor sent with this
    /// request as SCM_RIGHTS ancillary data (opened read-write unless
    /// `readonly`); `path` names it in messages. What a jailed VMM
    /// (`vireo run --jail`) takes.
    #[serde(default)]
    pub image_fd: bool,
    /// That descriptor, attached by the server; never in JSON.
    #[serde(skip)]
    pub passed: Option<crate::passed_fd::PassedFd>,
    /// The CHAP secret of an `iscsi://USER@HOST/IQN/LUN` disk, carried
    /// in the request body so that it stands in no command line.
    /// (Boxed: it is rarely there, and keeps the request small.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_secret: Option<Box<crate::config::SecretText>>,
}

/// A network card, as `PUT /vm/config` and `PUT /vm/add-net` take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    /// Name for later requests; default `net<N>`.
    #[serde(default)]
    pub id: Option<String>,
    /// TAP to attach to (created if missing); default: a new one.
    #[serde(default)]
    pub tap: Option<String>,
    /// Guest MAC, `xx:xx:xx:xx:xx:xx`; default: generated.
    #[serde(default)]
    pub mac: Option<String>,
    /// Queue pairs (default 1).
    #[serde(default)]
    pub queues: Option<u16>,
    /// `add-net` only: the TAP is the descriptor sent with this request as
    /// SCM_RIGHTS ancillary data (one queue), instead of `tap`.
    #[serde(default)]
    pub tap_fd: bool,
    /// That descriptor, attached by the server; never in JSON.
    #[serde(skip)]
    pub passed: Option<crate::passed_fd::PassedFd>,
}

/// The whole machine, for `PUT /vm/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfigSpec {
    /// Kernel image path.
    pub kernel: PathBuf,
    /// Initial ramdisk path.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line (default: `vireo run`'s).
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Guest RAM in MiB (default 128).
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// vCPUs (default 1).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Disks.
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// Network cards.
    #[serde(default)]
    pub nets: Vec<NetSpec>,
    /// A virtio-rng device.
    #[serde(default)]
    pub rng: bool,
}

/// `PUT /vm/remove-device` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveDeviceSpec {
    /// The device's id.
    pub id: String,
}

/// `PUT /vm/resize-disk` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeDiskSpec {
    /// The disk's id.
    pub id: String,
    /// New virtual size in bytes (a multiple of 512).
    pub size_bytes: u64,
    /// Allow a size below the current one (the data past it is lost).
    #[serde(default)]
    pub shrink: bool,
}

/// `PUT /vm/balloon` body: at least one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonSpec {
    /// Guest memory the balloon aims for, in KiB (rounded down to 4 KiB):
    /// from 4096 up to the VM's memory.
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_kib: Option<u64>,
    /// Seconds between requests for fresh statistics; 0 stops asking.
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub stats_period: Option<u32>,
}

/// An optional field that, when given, must not be `null`: the document
/// says it is a number, and "leave it as it is" is saying nothing.
fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `GET /vm/balloon` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonInfo {
    /// Guest memory the balloon aims for, in KiB.
    pub target_kib: u64,
    /// Guest memory outside the balloon as the guest reports it, in KiB.
    pub actual_kib: u64,
    /// Seconds between requests for statistics; 0: never.
    pub stats_period: u32,
    /// When the guest last sent statistics (unix seconds), if ever.
    pub last_update: Option<u64>,
    /// The guest's statistics by libvirt's dommemstat names (sizes in
    /// KiB), only those it reported.
    pub stats: BTreeMap<String, u64>,
}

/// One device, as `GET /vm` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Its id.
    pub id: String,
    /// `virtio-blk`, `virtio-net`, `virtio-console` or `virtio-rng`.
    pub kind: String,
    /// PCI address, `00:03.0`.
    pub pci: String,
    /// Kind-specific facts (disk path and size, TAP name and MAC, ...).
    pub details: BTreeMap<String, String>,
}

/// `GET /vm` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// Lifecycle state.
    pub state: VmState,
    /// vCPUs.
    pub cpus: u32,
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// Kernel path, if configured.
    pub kernel: Option<String>,
    /// Kernel command line, if configured.
    pub cmdline: Option<String>,
    /// Devices on the PCI bus.
    pub devices: Vec<DeviceInfo>,
    /// While paused because a disk's error policy stopped the VM: the
    /// error (`disk ID: ...`). Resuming sends the held requests again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_error: Option<String>,
}

/// `GET /vm/counters` response: per device and per vCPU, counter name to value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Device id to its counters (bytes, requests, errors, ...).
    pub devices: BTreeMap<String, BTreeMap<String, u64>>,
    /// vCPU index to its exit counts by reason (`mmio`, `pio`, `hlt`, ...).
    pub vcpus: BTreeMap<u32, BTreeMap<String, u64>>,
}

/// One vCPU, as `GET /vm/vcpus` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuInfo {
    /// Its index.
    pub id: u32,
    /// Its APIC ID (the index unless `--cpu-topology` leaves gaps).
    pub apic_id: u32,
    /// Its host thread id.
    pub tid: i32,
    /// The host CPU it last ran on.
    pub cpu: u32,
    /// The host CPUs it may run on.
    pub affinity: Vec<usize>,
    /// Time it has spent on a host CPU, in nanoseconds.
    pub cpu_time_ns: u64,
}

/// `PUT /vm/vcpu-pin` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuPinSpec {
    /// The vCPU's index.
    pub vcpu: u32,
    /// Host CPUs it may run on from now on.
    pub cpus: Vec<usize>,
}

/// `PUT /vm/emulator-pin` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatorPinSpec {
    /// Host CPUs every thread but the vCPUs' may run on from now on.
    pub cpus: Vec<usize>,
}

/// One guest NUMA cell, as `GET /vm/numa` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaCellInfo {
    /// Its node number in the guest.
    pub id: u32,
    /// Its memory in bytes.
    pub memory_bytes: u64,
    /// Its vCPUs, by index.
    pub cpus: Vec<u32>,
    /// Host nodes its memory is bound to (empty: not bound).
    pub host_nodes: Vec<u32>,
    /// `strict`, `preferred`, `interleave` or `restrictive`; null when not bound.
    pub policy: Option<String>,
}

/// `GET /vm/numa` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaInfo {
    /// The cells (empty: the guest has no NUMA description).
    pub cells: Vec<NumaCellInfo>,
    /// `distances[from][to]`, one row per cell.
    pub distances: Vec<Vec<u8>>,
}

/// Something a client asks the VM to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET /vm`.
    GetVm,
    /// `GET /vm/counters`.
    GetCounters,
    /// `PUT /vm/config`.
    Configure(Box<VmConfigSpec>),
    /// `PUT /vm/boot`.
    Boot,
    /// `PUT /vm/pause`.
    Pause,
    /// `PUT /vm/resume`.
    Resume,
    /// `PUT /vm/shutdown`: ACPI power button; the guest decides.
    Shutdown,
    /// `PUT /vm/reset`.
    Reset,
    /// `PUT /vm/power-off`: immediate, without asking the guest.
    PowerOff,
    /// `PUT /vm/add-disk`.
    AddDisk(DiskSpec),
    /// `PUT /vm/add-net`.
    AddNet(NetSpec),
    /// `PUT /vm/remove-device`.
    RemoveDevice(RemoveDeviceSpec),
    /// `PUT /vm/resize-disk`.
    ResizeDisk(ResizeDiskSpec),
    /// `GET /vm/balloon`.
    GetBalloon,
    /// `PUT /vm/balloon`.
    SetBalloon(BalloonSpec),
    /// `GET /vm/vcpus`.
    GetVcpus,
    /// `PUT /vm/vcpu-pin`.
    PinVcpu(VcpuPinSpec),
    /// `PUT /vm/emulator-pin`.
    PinEmulator(EmulatorPinSpec),
    /// `GET /vm/numa`.
    GetNuma,
}

/// A refused or failed action: the HTTP status and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// HTTP status: 400 the request breaks the API's document, 404 no such
    /// device, 409 wrong state, 422 well formed but impossible here (a
    /// missing file, a host limit), 500 host failure.
    pub status: u16,
    /// One line for the client, naming the problem.
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// What an action returns: a JSON body (`Null` means 204 No Content).
pub type ActionResult = Result<serde_json::Value, ApiError>;

/// The VMM side of the API: carries out actions, one at a time.
pub trait VmController: Send + Sync {
    /// Carry out `action`. Called from API connection threads; the
    /// implementation serializes actions itself.
    fn handle(&self, action: Action) -> ActionResult;
}
