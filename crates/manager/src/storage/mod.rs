//! Storage pools on the host: what a pool's type does to come up, to
//! report its space, and to list, create, resize and delete its volumes.
//!
//! Only the `dir` type ([`dir`]) is built so far; the daemon refuses to
//! define a pool of another type, saying so, rather than keep a
//! definition it cannot start. Images are made with the project's own
//! block layer, never by running `qemu-img`.

pub mod dir;

use std::path::PathBuf;

use virtxml::{BackingStore, VolumeFormat};

/// Why a storage operation failed; each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The pool or volume does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It exists, or is in a state that forbids the operation.
    #[error("{0}")]
    Conflict(String),
    /// The request cannot be met here (too large, shrink not asked for).
    #[error("{0}")]
    Invalid(String),
    /// The host refused (I/O, permissions).
    #[error("{0}")]
    Host(String),
}

/// A volume as `vol-info` and `vol-list --details` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Its name in the pool.
    pub name: String,
    /// Its path on the host (also its key, as for libvirt's file volumes).
    pub path: PathBuf,
    /// The image format found in the file.
    pub format: VolumeFormat,
    /// The size the guest sees, in bytes.
    pub capacity: u64,
    /// Bytes allocated on the host.
    pub allocation: u64,
    /// The file's length, in bytes.
    pub physical: u64,
    /// A qcow2 overlay's backing image, as its header names it.
    pub backing: Option<BackingStore>,
}

/// Whether the daemon can run a pool of this type.
pub fn supported(kind: virtxml::PoolType) -> Result<(), String> {
    match kind {
        virtxml::PoolType::Dir => Ok(()),
        other => Err(format!(
            "pool type '{}' is not available in this version of Vireo: only 'dir' pools are",
            other.as_str()
        )),
    }
}
