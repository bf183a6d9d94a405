//! `fs` pools: a block device holding a filesystem that the pool mounts
//! on its target path at start. Once mounted, the pool is a `dir` pool on
//! that filesystem, so volumes are the same image files ([`DirPool`]).
//!
//! As libvirt does, `pool-build` alone only makes the target directory;
//! `--no-overwrite` also makes the filesystem when the device carries no
//! signature, `--overwrite` makes it whatever the device holds. The
//! daemon mounts with mount(2) (never `/bin/mount`), so a regular file is
//! not loop-attached behind the user's back: that is the user's step.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use virtxml::{Permissions, Pool, PoolSpace, Volume};

use super::blockdev::{self, last_line};
use super::dir::DirPool;
use super::{BuildMode, StorageError, VolumeInfo};

/// The filesystems an `fs` pool can make and mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsFormat {
    /// Whatever the device holds (found by probing); nothing to make.
    Auto,
    /// A named filesystem type (`ext4`, `xfs`, ...).
    Named(&'static str),
}

const NAMED: [&str; 6] = ["ext2", "ext3", "ext4", "xfs", "btrfs", "vfat"];

impl FsFormat {
    fn parse(s: Option<&str>) -> Result<FsFormat, StorageError> {
        match s {
            None | Some("auto") => Ok(FsFormat::Auto),
            Some(name) => NAMED
                .iter()
                .find(|n| **n == name)
                .map(|n| FsFormat::Named(n))
                .ok_or_else(|| {
                    StorageError::Invalid(format!("fs pool format '{name}' is not supported"))
                }),
        }
    }

    /// Whether a mounted filesystem of type `fstype` is this format.
    fn accepts(self, fstype: &str) -> bool {
        match self {
            FsFormat::Auto => true,
            FsFormat::Named(name) => name == fstype,
        }
    }

    /// The `mkfs` command line for `device`, and the Debian package that
    /// has the program.
    fn mkfs(self, device: &Path) -> Result<(Command, &'static str), StorageError> {
        let FsFormat::Named(name) = self else {
            return Err(StorageError::Invalid(
                "format 'auto' names no filesystem to make: set <format type='ext4'/> (or xfs, vfat, ...)".into(),
            ));
        };
        // Each tool's flag to skip its own prompt; the daemon has already
        // decided (and probed, under --no-overwrite).
        let (program, args, package): (&str, &[&str], &str) = match name {
            "ext2" => ("mkfs.ext2", &["-F", "-q"], "e2fsprogs"),
            "ext3" => ("mkfs.ext3", &["-F", "-q"], "e2fsprogs"),
            "ext4" => ("mkfs.ext4", &["-F", "-q"], "e2fsprogs"),
            "xfs" => ("mkfs.xfs", &["-f", "-q"], "xfsprogs"),
            "btrfs" => ("mkfs.btrfs", &["-f", "-q"], "btrfs-progs"),
            // Whole devices need -I, or mkfs.vfat refuses them.
            _ => ("mkfs.vfat", &["-I"], "dosfstools"),
        };
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd.arg(device).stdin(Stdio::null());
        Ok((cmd, package))
    }
}

/// An `fs` pool: its device, filesystem type and mount point.
#[derive(Debug, Clone)]
pub struct FsPool {
    device: PathBuf,
    format: FsFormat,
    dir: DirPool,
}

impl FsPool {
    /// The pool `pool` defines: one `source/device`, a `target/path`.
    pub fn new(pool: &Pool) -> Result<FsPool, StorageError> {
        let device = match pool.source.devices.as_slice() {
            [one] => PathBuf::from(one),
            _ => {
                return Err(StorageError::Invalid(format!(
                    "fs pool '{}' needs exactly one <source><device path='...'/>",
                    pool.name
                )))
            }
        };
        Ok(FsPool {
            device,
            format: FsFormat::parse(pool.source.format.as_deref())?,
            dir: DirPool::new(pool)?,
        })
    }

    /// The mount point.
    fn target(&self) -> &Path {
        self.dir.path()
    }

    /// `pool-build`: the target directory; with a `mode`, the filesystem.
    pub fn build(&self, perms: &Permissions, mode: BuildMode) -> Result<(), StorageError> {
        self.dir.build(perms)?;
        if mode == BuildMode::Default {
            return Ok(());
        }
        let rdev = blockdev::block_device(&self.device)?;
        if let Some(m) = blockdev::mounts()?.iter().find(|m| m.rdev == rdev) {
            return Err(StorageError::Conflict(format!(
                "source device {} is mounted on {}: unmount it first",
                self.device.display(),
                m.point.display()
            )));
        }
        let (mut cmd, package) = self.format.mkfs(&self.device)?;
        if mode == BuildMode::NoOverwrite {
            let found = blockdev::probe(&self.device)?;
            if !found.is_empty() {
                return Err(StorageError::Conflict(format!(
                    "source device {} already holds {}: pool-build --overwrite replaces it",
                    self.device.display(),
                    found.describe()
                )));
            }
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let out = cmd.output().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StorageError::Host(format!(
                "{program} is not installed (Debian package {package})"
            )),
            _ => StorageError::Host(format!("cannot run {program}: {e}")),
        })?;
        if !out.status.success() {
            return Err(StorageError::Host(format!(
                "{program} {}: {}",
                self.device.display(),
                last_line(&out.stderr)
            )));
        }
        Ok(())
    }

    /// `pool-start`: mounts the device's filesystem on the target path,
    /// made if missing, after checking it is the pool's type.
    pub fn start(&self) -> Result<(), StorageError> {
        let rdev = blockdev::block_device(&self.device)?;
        let mounts = blockdev::mounts()?;
        let target = self.canonical_target()?;
        if let Some(m) = mounts.iter().rev().find(|m| m.point == target) {
            // Ours already (a daemon that stopped between mounting and
            // recording the pool): taken as it is, if it is the pool's type.
            if m.rdev == rdev && self.format.accepts(&m.fstype) {
                return Ok(());
            }
            return Err(StorageError::Conflict(format!(
                "target path {} is already a mount point ({})",
                target.display(),
                m.fstype
            )));
        }
        if let Some(m) = mounts.iter().find(|m| m.rdev == rdev) {
            return Err(StorageError::Conflict(format!(
                "source device {} is already mounted on {}",
                self.device.display(),
                m.point.display()
            )));
        }
        let found = blockdev::probe(&self.device)?;
        let fstype = match (&found.kind, self.format) {
            (None, _) => {
                return Err(StorageError::Invalid(format!(
                    "source device {} holds no filesystem: pool-build --no-overwrite makes one",
                    self.device.display()
                )))
            }
            (Some(k), FsFormat::Named(want)) if k != want => {
                return Err(StorageError::Invalid(format!(
                    "source device {} holds {k}, not the pool's format {want}",
                    self.device.display()
                )))
            }
            (Some(k), _) => k.clone(),
        };
        mount(&self.device, &target, &fstype)
    }

    /// The target path, made if missing, without symlinks (as the kernel
    /// writes it in mountinfo).
    fn canonical_target(&self) -> Result<PathBuf, StorageError> {
        let t = self.target();
        if !t.exists() {
            std::fs::create_dir_all(t).map_err(|e| blockdev::host(t, e))?;
        }
        self.dir.check()?;
        std::fs::canonicalize(t).map_err(|e| blockdev::host(t, e))
    }

    /// `pool-destroy`: unmounts; refused while something (a running
    /// guest) holds a file open in it.
    pub fn stop(&self) -> Result<(), StorageError> {
        unmount(self.target())
    }

    /// Whether the pool is up: the device is mounted on the target.
    pub fn check(&self) -> Result<(), StorageError> {
        let rdev = blockdev::block_device(&self.device)?;
        let target =
            std::fs::canonicalize(self.target()).map_err(|e| blockdev::host(self.target(), e))?;
        // The last mount on a point is the one in use.
        match blockdev::mounts()?.iter().rev().find(|m| m.point == target) {
            Some(m) if m.rdev == rdev => Ok(()),
            _ => Err(StorageError::Invalid(format!(
                "source device {} is not mounted on {}",
                self.device.display(),
                target.display()
            ))),
        }
    }

    /// `pool-delete`: removes the (empty, unmounted) target directory;
    /// the filesystem on the device stays, as libvirt leaves it.
    pub fn delete(&self) -> Result<(), StorageError> {
        self.dir.delete()
    }

    /// The mounted filesystem's figures.
    pub fn space(&self) -> Result<PoolSpace, StorageError> {
        self.dir.space()
    }

    /// Its volumes: image files in the mount.
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>, StorageError> {
        self.dir.volumes()
    }

    /// One volume.
    pub fn volume(&self, name: &str) -> Result<VolumeInfo, StorageError> {
        self.dir.volume(name)
    }

    /// `vol-create` with `--prealloc-metadata` ([`DirPool::create_with`]).
    pub fn create_with(
        &self,
        vol: &Volume,
        prealloc_metadata: bool,
    ) -> Result<VolumeInfo, StorageError> {
        self.dir.create_with(vol, prealloc_metadata)
    }

    /// `vol-create`.
    pub fn create(&self, vol: &Volume) -> Result<VolumeInfo, StorageError> {
        self.dir.create(vol)
    }

    /// `vol-create-from` and `vol-clone`.
    pub fn create_from(
        &self,
        vol: &Volume,
        source: &VolumeInfo,
        how: super::CopyOptions,
    ) -> Result<VolumeInfo, StorageError> {
        self.dir.create_from(vol, source, how)
    }

    /// `vol-wipe`.
    pub fn wipe(
        &self,
        name: &str,
        algorithm: super::wipe::Algorithm,
    ) -> Result<VolumeInfo, StorageError> {
        self.dir.wipe(name, algorithm)
    }

    /// Removes unfinished volumes a killed daemon left.
    pub fn sweep(&self) {
        self.dir.sweep()
    }

    /// `vol-delete`.
    pub fn delete_volume(&self, name: &str) -> Result<(), StorageError> {
        self.dir.delete_volume(name)
    }

    /// `vol-resize`.
    pub fn resize(
        &self,
        name: &str,
        capacity: u64,
        shrink: bool,
    ) -> Result<VolumeInfo, StorageError> {
        self.dir.resize(name, capacity, shrink)
    }
}

/// Unmounts whatever is mounted on `target` (nothing: done); refused
/// while something (a running guest) holds a file open in it.
pub(super) fn unmount(target: &Path) -> Result<(), StorageError> {
    let target = std::fs::canonicalize(target).map_err(|e| blockdev::host(target, e))?;
    if !blockdev::mounts()?.iter().any(|m| m.point == target) {
        return Ok(());
    }
    let c = cstring(&target)?;
    // SAFETY: a NUL-terminated path; umount2 reads it only.
    if unsafe { libc::umount2(c.as_ptr(), 0) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EBUSY) => StorageError::Conflict(format!(
                "cannot unmount {}: it is in use (a running domain's volume?)",
                target.display()
            )),
            _ => blockdev::host(&target, e),
        });
    }
    Ok(())
}

/// mount(2) of `device`'s `fstype` on `target`. No set-uid programs or
/// device nodes are honoured there: a pool holds images, not either.
fn mount(device: &Path, target: &Path, fstype: &str) -> Result<(), StorageError> {
    let (src, dst) = (cstring(device)?, cstring(target)?);
    let kind = CString::new(fstype)
        .map_err(|_| StorageError::Invalid(format!("filesystem type {fstype:?} has a NUL")))?;
    // SAFETY: NUL-terminated strings that outlive the call; no data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            kind.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        let why = match e.raw_os_error() {
            Some(libc::ENODEV) => format!("this kernel has no {fstype} filesystem driver"),
            _ => e.to_string(),
        };
        return Err(StorageError::Host(format!(
            "cannot mount {} ({fstype}) on {}: {why}",
            device.display(),
            target.display()
        )));
    }
    Ok(())
}

fn cstring(p: &Path) -> Result<CString, StorageError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| StorageError::Invalid(format!("{} contains a NUL", p.display())))
}
