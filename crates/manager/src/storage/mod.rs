//! Storage pools on the host: what a pool's type does to come up, to
//! report its space, and to list, create, copy ([`copy`]), wipe
//! ([`wipe`]), resize and delete its volumes; [`stream`] checks the byte
//! ranges of uploads and downloads.
//!
//! The daemon reaches every pool through [`Backend`], one variant per
//! pool type: `dir` ([`dir`]), `fs` ([`fs`]), `netfs` ([`netfs`]), `disk`
//! ([`disk`]), `logical` ([`logical`]), `iscsi` ([`iscsi`]) and, with the
//! `iscsi` feature, `iscsi-direct` (`iscsi_direct`). The
//! daemon refuses to define a pool of another type, saying so, rather
//! than keep a definition it cannot start. Images are made with the
//! project's own block layer, never by running `qemu-img`.

pub mod blockdev;
pub mod copy;
pub mod dir;
pub mod disk;
pub mod fs;
pub mod iscsi;
#[cfg(feature = "iscsi")]
pub mod iscsi_direct;
pub mod lease;
pub mod logical;
pub mod netfs;
pub mod stream;
pub mod tool;
pub mod wipe;

use std::path::PathBuf;

use virtxml::{BackingStore, Permissions, Pool, PoolSpace, Volume, VolumeFormat};

use dir::DirPool;
use disk::DiskPool;
use fs::FsPool;
use iscsi::IscsiPool;
#[cfg(feature = "iscsi")]
use iscsi_direct::IscsiDirectPool;
use logical::LogicalPool;
use netfs::NetfsPool;

/// How `pool-build` treats what is already on a pool's device (virsh's
/// `--overwrite` and `--no-overwrite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BuildMode {
    /// Neither flag: an `fs` pool gets only its target directory; a
    /// `disk` pool gets a label only on a device that carries nothing.
    #[default]
    Default,
    /// Make the filesystem or label whatever the device holds.
    Overwrite,
    /// Make it only on a device that carries no signature.
    NoOverwrite,
}

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

/// CHAP credentials found for an iSCSI pool or disk: a user and the
/// value of its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// CHAP user name.
    pub user: String,
    /// CHAP secret (the password).
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    // The secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish()
    }
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

/// A pool of one of the types the daemon runs, with the operations every
/// type has. A pool type's quirks stay in its own module; this only
/// dispatches.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A directory of image files.
    Dir(DirPool),
    /// A block device's filesystem, mounted on the target path.
    Fs(FsPool),
    /// An NFS export, mounted on the target path.
    Netfs(NetfsPool),
    /// A GPT-labelled block device whose partitions are the volumes.
    Disk(DiskPool),
    /// An LVM volume group whose logical volumes are the volumes.
    Logical(LogicalPool),
    /// An iSCSI target's LUNs, logged in through the kernel's initiator.
    Iscsi(IscsiPool),
    /// An iSCSI target's LUNs, reached in user space.
    #[cfg(feature = "iscsi")]
    IscsiDirect(IscsiDirectPool),
}

impl Backend {
    /// The backend for `pool`'s type (its definition is already valid),
    /// logging in with `chap` where the pool has `<auth>`.
    pub fn open_with(pool: &Pool, chap: Option<Credentials>) -> Result<Backend, StorageError> {
        #[cfg(feature = "iscsi")]
        if pool.kind == virtxml::PoolType::IscsiDirect {
            return Ok(Backend::IscsiDirect(
                IscsiDirectPool::new(pool)?.with_chap(chap),
            ));
        }
        let _ = chap;
        Backend::open(pool)
    }

    /// The backend for `pool`'s type (its definition is already valid),
    /// without credentials.
    pub fn open(pool: &Pool) -> Result<Backend, StorageError> {
        supported(pool.kind).map_err(StorageError::Invalid)?;
        Ok(match pool.kind {
            virtxml::PoolType::Fs => Backend::Fs(FsPool::new(pool)?),
            virtxml::PoolType::Netfs => Backend::Netfs(NetfsPool::new(pool)?),
            virtxml::PoolType::Disk => Backend::Disk(DiskPool::new(pool)?),
            virtxml::PoolType::Logical => Backend::Logical(LogicalPool::new(pool)?),
            virtxml::PoolType::Iscsi => Backend::Iscsi(IscsiPool::new(pool)?),
            #[cfg(feature = "iscsi")]
            virtxml::PoolType::IscsiDirect => Backend::IscsiDirect(IscsiDirectPool::new(pool)?),
            _ => Backend::Dir(DirPool::new(pool)?),
        })
    }

    /// `pool-build`: makes what the pool lives on, with `perms`; `mode`
    /// says whether what a device already holds may be replaced.
    pub fn build(&self, perms: &Permissions, mode: BuildMode) -> Result<(), StorageError> {
        match self {
            Backend::Dir(p) => p.build(perms),
            Backend::Fs(p) => p.build(perms, mode),
            Backend::Netfs(p) => p.build(perms),
            Backend::Disk(p) => p.build(mode),
            Backend::Logical(p) => p.build(mode),
            Backend::Iscsi(p) => p.nothing_to_build(),
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(p) => p.build(),
        }
    }

    /// `pool-delete`: removes what `build` made.
    pub fn delete(&self) -> Result<(), StorageError> {
        match self {
            Backend::Dir(p) => p.delete(),
            Backend::Fs(p) => p.delete(),
            Backend::Netfs(p) => p.delete(),
            Backend::Disk(p) => p.delete(),
            Backend::Logical(p) => p.delete(),
            Backend::Iscsi(p) => p.nothing_to_build(),
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(_) => Ok(()),
        }
    }

    /// `pool-start`: brings the pool up (mounts, logins), or says why
    /// it cannot.
    pub fn start(&self) -> Result<(), StorageError> {
        match self {
            Backend::Dir(p) => p.check(),
            Backend::Fs(p) => p.start(),
            Backend::Netfs(p) => p.start(),
            Backend::Disk(p) => p.check(),
            Backend::Logical(p) => p.start(),
            Backend::Iscsi(p) => p.start(),
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(p) => p.check(),
        }
    }

    /// `pool-destroy`: takes down what `start` brought up; volumes stay.
    pub fn stop(&self) -> Result<(), StorageError> {
        match self {
            Backend::Dir(_) | Backend::Disk(_) => Ok(()),
            // Each listing logs in and out itself: no session stays up.
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(_) => Ok(()),
            Backend::Fs(p) => p.stop(),
            Backend::Netfs(p) => p.stop(),
            Backend::Logical(p) => p.stop(),
            Backend::Iscsi(p) => p.stop(),
        }
    }

    /// Whether a pool recorded as running is still up (`pool-refresh`,
    /// and the daemon re-adopting pools at its start).
    pub fn check(&self) -> Result<(), StorageError> {
        match self {
            Backend::Dir(p) => p.check(),
            Backend::Fs(p) => p.check(),
            Backend::Netfs(p) => p.check(),
            Backend::Disk(p) => p.check(),
            Backend::Logical(p) => p.check(),
            Backend::Iscsi(p) => p.check(),
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(p) => p.check(),
        }
    }

    /// Capacity, allocation and available space, as `pool-info` shows.
    pub fn space(&self) -> Result<PoolSpace, StorageError> {
        match self {
            Backend::Dir(p) => p.space(),
            Backend::Fs(p) => p.space(),
            Backend::Netfs(p) => p.space(),
            Backend::Disk(p) => p.space(),
            Backend::Logical(p) => p.space(),
            Backend::Iscsi(p) => p.space(),
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(p) => p.space(),
        }
    }

    /// Every volume, sorted by name.
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>, StorageError> {
        match self {
            Backend::Dir(p) => p.volumes(),
            Backend::Fs(p) => p.volumes(),
            Backend::Netfs(p) => p.volumes(),
            Backend::Disk(p) => p.volumes(),
            Backend::Logical(p) => p.volumes(),
            Backend::Iscsi(p) => p.volumes(),
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(p) => p.volumes(),
        }
    }

    /// The volume `name`.
    pub fn volume(&self, name: &str) -> Result<VolumeInfo, StorageError> {
        match self {
            Backend::Dir(p) => p.volume(name),
            Backend::Fs(p) => p.volume(name),
            Backend::Netfs(p) => p.volume(name),
            Backend::Disk(p) => p.volume(name),
            Backend::Logical(p) => p.volume(name),
            Backend::Iscsi(p) => p.volume(name),
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(p) => p.volume(name),
        }
    }

    /// `vol-create --prealloc-metadata`: a qcow2 volume made with every
    /// cluster mapped; only pools of image files make qcow2 volumes.
    pub fn create_preallocated(&self, vol: &Volume) -> Result<VolumeInfo, StorageError> {
        match self {
            Backend::Dir(p) => p.create_with(vol, true),
            Backend::Fs(p) => p.create_with(vol, true),
            Backend::Netfs(p) => p.create_with(vol, true),
            _ => Err(StorageError::Invalid(
                "metadata preallocation is for qcow2 volumes, which only dir, fs and netfs pools hold"
                    .into(),
            )),
        }
    }

    /// `vol-create`: a new volume as `vol` defines it.
    pub fn create(&self, vol: &Volume) -> Result<VolumeInfo, StorageError> {
        match self {
            Backend::Dir(p) => p.create(vol),
            Backend::Fs(p) => p.create(vol),
            Backend::Netfs(p) => p.create(vol),
            Backend::Disk(p) => p.create(vol),
            Backend::Logical(p) => p.create(vol),
            Backend::Iscsi(p) => p.create(vol),
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(p) => p.create(vol),
        }
    }

    /// `vol-create-from` and `vol-clone`: a new volume as `vol` defines
    /// it with the guest data of `source` (a volume of any pool), as
    /// `how` says.
    pub fn create_from(
        &self,
        vol: &Volume,
        source: &VolumeInfo,
        how: CopyOptions,
    ) -> Result<VolumeInfo, StorageError> {
        match self {
            Backend::Dir(p) => p.create_from(vol, source, how),
            Backend::Fs(p) => p.create_from(vol, source, how),
            Backend::Netfs(p) => p.create_from(vol, source, how),
            Backend::Disk(p) => p.create_from(vol),
            Backend::Logical(p) => p.create_from(vol),
            Backend::Iscsi(p) => p.create_from(vol),
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(p) => p.create_from(vol),
        }
    }

    /// `vol-wipe` with `algorithm`.
    pub fn wipe(&self, name: &str, algorithm: wipe::Algorithm) -> Result<VolumeInfo, StorageError> {
        match self {
            Backend::Dir(p) => p.wipe(name, algorithm),
            Backend::Fs(p) => p.wipe(name, algorithm),
            Backend::Netfs(p) => p.wipe(name, algorithm),
            Backend::Disk(p) => p.wipe(name, algorithm),
            Backend::Logical(p) => p.wipe(name, algorithm),
            Backend::Iscsi(p) => p.wipe(name, algorithm),
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(p) => p.wipe(name, algorithm),
        }
    }

    /// Removes unfinished volumes a killed daemon left behind.
    pub fn sweep(&self) {
        match self {
            Backend::Dir(p) => p.sweep(),
            Backend::Fs(p) => p.sweep(),
            Backend::Netfs(p) => p.sweep(),
            Backend::Disk(_) | Backend::Logical(_) | Backend::Iscsi(_) => {}
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(_) => {}
        }
    }

    /// `vol-delete`.
    pub fn delete_volume(&self, name: &str) -> Result<(), StorageError> {
        match self {
            Backend::Dir(p) => p.delete_volume(name),
            Backend::Fs(p) => p.delete_volume(name),
            Backend::Netfs(p) => p.delete_volume(name),
            Backend::Disk(p) => p.delete_volume(name),
            Backend::Logical(p) => p.delete_volume(name),
            Backend::Iscsi(p) => p.delete_volume(name),
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(p) => p.delete_volume(name),
        }
    }

    /// `vol-resize` to `capacity` bytes; smaller only when `shrink`.
    pub fn resize(
        &self,
        name: &str,
        capacity: u64,
        shrink: bool,
    ) -> Result<VolumeInfo, StorageError> {
        match self {
            Backend::Dir(p) => p.resize(name, capacity, shrink),
            Backend::Fs(p) => p.resize(name, capacity, shrink),
            Backend::Netfs(p) => p.resize(name, capacity, shrink),
            Backend::Disk(p) => p.resize(name, capacity, shrink),
            Backend::Logical(p) => p.resize(name, capacity, shrink),
            Backend::Iscsi(p) => p.resize(name),
            #[cfg(feature = "iscsi")]
            Backend::IscsiDirect(p) => p.resize(name),
        }
    }
}

/// The space of a pool whose volumes are a target's LUNs (`iscsi`,
/// `iscsi-direct`): capacity and allocation are their sum; nothing is
/// available, as the target, not the pool, makes LUNs.
fn lun_space(luns: &[VolumeInfo]) -> PoolSpace {
    let total = luns.iter().map(|v| v.capacity).sum();
    PoolSpace {
        capacity: total,
        allocation: total,
        available: 0,
    }
}

/// The volume called `name` among `vols`, or libvirt's not-found error.
fn named(vols: Vec<VolumeInfo>, name: &str) -> Result<VolumeInfo, StorageError> {
    vols.into_iter().find(|v| v.name == name).ok_or_else(|| {
        StorageError::NotFound(format!("no storage volume with matching name '{name}'"))
    })
}

/// Whether the daemon can run a pool of this type: every type the XML
/// knows, except `iscsi-direct` in a build without libiscsi.
pub fn supported(kind: virtxml::PoolType) -> Result<(), String> {
    match kind {
        virtxml::PoolType::Dir
        | virtxml::PoolType::Fs
        | virtxml::PoolType::Netfs
        | virtxml::PoolType::Disk
        | virtxml::PoolType::Logical
        | virtxml::PoolType::Iscsi => Ok(()),
        #[cfg(feature = "iscsi")]
        virtxml::PoolType::IscsiDirect => Ok(()),
        #[cfg(not(feature = "iscsi"))]
        virtxml::PoolType::IscsiDirect => Err(
            "pool type 'iscsi-direct' is not available in this build of vireo (built without the iscsi feature)"
                .into(),
        ),
    }
}

/// How `vol-create-from` and `vol-clone` make their copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// `--reflink`: share the source's blocks, or fail.
    pub reflink: bool,
    /// `--prealloc-metadata`: a qcow2 copy's clusters all mapped first.
    pub prealloc_metadata: bool,
}
