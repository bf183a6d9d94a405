//! A domain's memory and CPU placement at run time: the balloon
//! (`setmem`, `dommemstat`), vCPU and emulator pinning (`vcpupin`,
//! `emulatorpin`, `vcpuinfo`) and the host memory policy (`numatune`).
//! Sets of CPUs and nodes are strings in libvirt's syntax (`0-3,^2`).

use serde::{Deserialize, Serialize};

/// `GET /domains/{dom}/memory`: virsh `dommemstat`'s keys and values, in
/// its order (memory in KiB, faults as counts, `last_update` in seconds
/// since the epoch); only what is known is listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct MemoryStats {
    /// The statistics, in virsh's order.
    pub stats: Vec<MemoryStat>,
}

/// One `dommemstat` line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemoryStat {
    /// virsh's key (`actual`, `unused`, `rss`, ...).
    pub name: String,
    /// Its value.
    pub value: u64,
}

/// `PUT /domains/{dom}/memory` (virsh `setmem`): the memory the guest
/// should have, which the balloon reaches on a running domain and
/// `currentMemory` records in the definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SetMemoryRequest {
    /// The target, KiB: at least 4096, at most the domain's `memory`.
    pub kib: u64,
    /// Change the running domain (virsh `--live`).
    #[serde(default)]
    pub live: bool,
    /// Change the persistent definition (virsh `--config`).
    #[serde(default)]
    pub config: bool,
}

/// One vCPU, as `vcpuinfo` and `vcpupin` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VcpuRow {
    /// The vCPU's number.
    pub vcpu: u32,
    /// The host CPU it last ran on (running domains only).
    pub cpu: Option<u32>,
    /// `running`, or `offline` for a domain that does not run.
    pub state: String,
    /// CPU time its thread has used, nanoseconds (running domains only).
    pub cpu_time_ns: Option<u64>,
    /// The host CPUs it may run on.
    pub affinity: String,
}

/// `PUT /domains/{dom}/vcpus/{vcpu}/affinity` and
/// `PUT /domains/{dom}/emulator/affinity` (virsh `vcpupin`, `emulatorpin`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    /// The host CPUs, libvirt's syntax.
    pub cpuset: String,
    /// Change the running domain.
    #[serde(default)]
    pub live: bool,
    /// Change the persistent definition.
    #[serde(default)]
    pub config: bool,
}

/// `GET /domains/{dom}/emulator/affinity`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Affinity {
    /// The host CPUs, libvirt's normal form.
    pub cpuset: String,
}

/// `GET /domains/{dom}/numatune`: the binding of all guest memory
/// (`numatune/memory`), as `virsh numatune` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NumaTuneInfo {
    /// `strict`, `preferred`, `interleave` or `restrictive`.
    pub mode: String,
    /// The host nodes; empty when memory is not bound.
    pub nodeset: String,
}

/// `PUT /domains/{dom}/numatune` (virsh `numatune --mode --nodeset`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NumaTuneRequest {
    /// The new mode; the old one (or strict) when absent.
    #[serde(default)]
    pub mode: Option<String>,
    /// The new host nodes; the old ones when absent.
    #[serde(default)]
    pub nodeset: Option<String>,
    /// Change the running domain: refused, memory placed at start stays.
    #[serde(default)]
    pub live: bool,
    /// Change the persistent definition.
    #[serde(default)]
    pub config: bool,
}

/// `GET /domains/{dom}/limits` and the body of `PUT`: the domain's
/// cgroup limits as `schedinfo`, `memtune` and `blkiotune` show them.
/// In a request, a field left out keeps its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// `cpu_shares`: relative CPU weight, 2 to 262144.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// `global_period`, µs (1000 to 1000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_period: Option<u64>,
    /// `global_quota`, µs per period; -1 is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_quota: Option<i64>,
    /// `hard_limit`, KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_limit_kib: Option<u64>,
    /// `soft_limit`, KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_limit_kib: Option<u64>,
    /// `swap_hard_limit` (memory and swap), KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_hard_limit_kib: Option<u64>,
    /// blkiotune `weight`, 100 to 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blkio_weight: Option<u64>,
    /// Per-device weights and throttles; in a request, the devices named
    /// replace their old entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceLimits>,
}

/// One block device's limits (`blkiotune --device-*`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct DeviceLimits {
    /// The host block device.
    pub path: String,
    /// Weight, 100 to 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u64>,
    /// Bytes per second read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bytes_sec: Option<u64>,
    /// Bytes per second written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bytes_sec: Option<u64>,
    /// Reads per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_iops_sec: Option<u64>,
    /// Writes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_iops_sec: Option<u64>,
}

/// `PUT /domains/{dom}/limits`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// The new limits.
    pub limits: ResourceLimits,
    /// Change the running domain's cgroup.
    #[serde(default)]
    pub live: bool,
    /// Change the persistent definition.
    #[serde(default)]
    pub config: bool,
}
