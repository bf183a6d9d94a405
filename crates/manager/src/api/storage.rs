//! The API's shapes for storage pools and volumes (`pool-*` and `vol-*`
//! verbs).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/pools?filter=active\|inactive\|all` | | `[`[`PoolSummary`]`]` (default `active`) |
//! | POST | `/pools` | [`DefineRequest`](super::DefineRequest) | [`DefineResponse`](super::DefineResponse) (pool-define) |
//! | POST | `/pools/create` | [`DefineRequest`](super::DefineRequest) | [`DefineResponse`](super::DefineResponse) (pool-create: transient, started) |
//! | GET | `/pools/{pool}` | | [`PoolSummary`] (pool-info) |
//! | DELETE | `/pools/{pool}` | | 204 (pool-undefine; an active pool becomes transient) |
//! | GET | `/pools/{pool}/xml?inactive=true` | | [`XmlDocument`](super::XmlDocument) |
//! | POST | `/pools/{pool}/build` | | 204 (makes its directory) |
//! | POST | `/pools/{pool}/start` | | 204 |
//! | POST | `/pools/{pool}/destroy` | | 204 |
//! | POST | `/pools/{pool}/delete` | | 204 (pool-delete: removes its empty directory) |
//! | POST | `/pools/{pool}/refresh` | | 204 |
//! | PUT | `/pools/{pool}/autostart` | [`AutostartRequest`](super::AutostartRequest) | 204 |
//! | GET | `/pools/{pool}/volumes` | | `[`[`VolumeSummary`]`]` (vol-list) |
//! | POST | `/pools/{pool}/volumes` | [`VolumeCreateRequest`] | [`VolumeSummary`] (vol-create) |
//! | GET | `/pools/{pool}/volumes/{vol}` | | [`VolumeSummary`] (vol-info) |
//! | GET | `/pools/{pool}/volumes/{vol}/xml` | | [`XmlDocument`](super::XmlDocument) (vol-dumpxml) |
//! | DELETE | `/pools/{pool}/volumes/{vol}` | | 204 (vol-delete) |
//! | POST | `/pools/{pool}/volumes/{vol}/resize` | [`VolumeResizeRequest`] | [`VolumeSummary`] |
//! | POST | `/pools/{pool}/volumes/{vol}/copy` | [`VolumeCopyRequest`] | [`VolumeSummary`] of the new volume (vol-create-from, vol-clone) |
//! | POST | `/pools/{pool}/volumes/{vol}/wipe` | [`VolumeWipeRequest`] | [`VolumeSummary`] (vol-wipe) |
//! | PUT | `/pools/{pool}/volumes/{vol}/content?offset=N&length=N` | the bytes (chunked) | [`VolumeTransfer`] (vol-upload) |
//! | GET | `/pools/{pool}/volumes/{vol}/content?offset=N&length=N` | | the bytes, chunked (vol-download) |
//!
//! `{pool}` is a pool's name or UUID; `{vol}` a volume's name in it.
//! Errors are as for domains: 404 for no such pool or volume, 409 when a
//! state forbids it (an inactive pool's volumes, deleting a volume a
//! running domain uses), 422 for what cannot be (bad XML, no space, a
//! shrink not asked for).

use serde::{Deserialize, Serialize};

/// A pool, as `pool-list --details` and `pool-info` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolSummary {
    /// Its name.
    pub name: String,
    /// Its UUID.
    pub uuid: String,
    /// Its type (`dir`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether it is running.
    pub active: bool,
    /// Whether a definition is kept.
    pub persistent: bool,
    /// Whether it starts with the daemon.
    pub autostart: bool,
    /// Where its volumes are.
    pub path: Option<String>,
    /// Total bytes (0 while inactive).
    pub capacity: u64,
    /// Bytes used.
    pub allocation: u64,
    /// Bytes free for new volumes.
    pub available: u64,
}

/// A volume, as `vol-list --details` and `vol-info` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeSummary {
    /// Its name in the pool.
    pub name: String,
    /// Its path on the host (also its key).
    pub path: String,
    /// `file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `raw` or `qcow2`.
    pub format: String,
    /// Bytes the guest sees.
    pub capacity: u64,
    /// Bytes allocated on the host.
    pub allocation: u64,
    /// The file's length.
    pub physical: u64,
}

/// `POST /pools/{pool}/volumes`: vol-create.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumeCreateRequest {
    /// The volume's libvirt XML.
    pub xml: String,
    /// virsh's `--prealloc-metadata` (qcow2 only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prealloc_metadata: bool,
}

/// `POST /pools/{pool}/volumes/{vol}/resize`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumeResizeRequest {
    /// The new size in bytes.
    pub capacity: u64,
    /// Allow a smaller size (data past it is lost).
    #[serde(default)]
    pub shrink: bool,
}

/// `POST /pools/{pool}/volumes/{vol}/copy`: a new volume in `pool`, as
/// `xml` defines it, with the guest data of the volume in the path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumeCopyRequest {
    /// The pool the new volume goes in (name or UUID).
    pub pool: String,
    /// The new volume's libvirt XML.
    pub xml: String,
    /// virsh's `--reflink`: share the source's blocks (a copy-on-write
    /// clone) or fail.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reflink: bool,
    /// virsh's `--prealloc-metadata` (a qcow2 copy only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prealloc_metadata: bool,
}

/// `POST /pools/{pool}/volumes/{vol}/wipe`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumeWipeRequest {
    /// virsh's `--algorithm` (libvirt's names); `zero` when absent.
    #[serde(default)]
    pub algorithm: Option<String>,
}

/// What an upload or download moved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeTransfer {
    /// Bytes written to (or read from) the volume.
    pub bytes: u64,
}
