//! `netfs` pools: an NFS export mounted by the kernel's client on the
//! target path; its image files are the volumes, as in a `dir` pool.
//!
//! The mount goes through Debian's `mount.nfs` (nfs-common), as libvirt's
//! does: it resolves the server, picks the protocol version and handles
//! the mount protocol, which a bare mount(2) leaves to its caller. One
//! attempt only (`retry=0`), under a deadline, so an unreachable server
//! fails `pool-start` in one line instead of retrying for minutes.
//! Unmounting is mount(2)'s own business ([`super::fs`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use virtxml::{Permissions, Pool, PoolSpace, Volume};

use super::blockdev;
use super::dir::DirPool;
use super::{fs, tool, StorageError, VolumeInfo};

/// How long one mount may take before it is given up.
const DEADLINE: Duration = Duration::from_secs(60);

/// A `netfs` pool: the server's export and the mount point.
#[derive(Debug, Clone)]
pub struct NetfsPool {
    /// `host:/export`, as mount.nfs takes it and mountinfo shows it.
    source: String,
    port: Option<u16>,
    dir: DirPool,
}

impl NetfsPool {
    /// The pool `pool` defines: `source/host`, `source/dir`, a
    /// `target/path`; format `auto` or `nfs`.
    pub fn new(pool: &Pool) -> Result<NetfsPool, StorageError> {
        let host = pool.source.host.as_ref().ok_or_else(|| {
            StorageError::Invalid("a netfs pool needs <source><host name='...'/>".into())
        })?;
        let export = pool.source.dir.as_deref().ok_or_else(|| {
            StorageError::Invalid("a netfs pool needs <source><dir path='...'/>".into())
        })?;
        if let Some(f) = pool
            .source
            .format
            .as_deref()
            .filter(|f| !["auto", "nfs"].contains(f))
        {
            return Err(StorageError::Invalid(format!(
                "netfs pool format '{f}' is not supported: only nfs"
            )));
        }
        Ok(NetfsPool {
            source: nfs_source(&host.name, export)?,
            port: host.port,
            dir: DirPool::new(pool)?,
        })
    }

    fn target(&self) -> &Path {
        self.dir.path()
    }

    /// `pool-build`: the mount point, with the definition's permissions
    /// (the export itself is the server's).
    pub fn build(&self, perms: &Permissions) -> Result<(), StorageError> {
        self.dir.build(perms)
    }

    /// `pool-delete`: removes the (unmounted, empty) mount point.
    pub fn delete(&self) -> Result<(), StorageError> {
        if self.mounted()?.is_some() {
            return Err(StorageError::Conflict(format!(
                "{} is still mounted: pool-destroy first",
                self.target().display()
            )));
        }
        self.dir.delete()
    }

    /// `pool-start`: mounts the export on the target path (made if
    /// missing). The pool's own mount, found already there (a daemon
    /// that stopped between mounting and recording), is taken as it is.
    pub fn start(&self) -> Result<(), StorageError> {
        let target = self.canonical_target()?;
        if let Some(m) = self.mounted()? {
            if is_nfs(&m.fstype) && same_source(&m.source, &self.source) {
                return Ok(());
            }
            return Err(StorageError::Conflict(format!(
                "target path {} is already a mount point ({} of {})",
                target.display(),
                m.fstype,
                m.source
            )));
        }
        // No devices or set-uid programs from a server: a pool holds
        // images, not either.
        let mut options = String::from("nodev,nosuid,noexec,retry=0");
        if let Some(p) = self.port {
            options.push_str(&format!(",port={p}"));
        }
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "nfs", "-o", &options, &self.source])
            .arg(&target);
        tool::run(cmd, "nfs-common", DEADLINE)
            .map(|_| ())
            .map_err(|e| {
                StorageError::Host(format!(
                    "cannot mount {} on {}: {e}",
                    self.source,
                    target.display()
                ))
            })
    }

    /// `pool-destroy`: unmounts; refused while a running guest holds a
    /// file open in it.
    pub fn stop(&self) -> Result<(), StorageError> {
        fs::unmount(self.target())
    }

    /// Whether the pool is up: the export is mounted on the target.
    pub fn check(&self) -> Result<(), StorageError> {
        match self.mounted()? {
            Some(m) if is_nfs(&m.fstype) && same_source(&m.source, &self.source) => Ok(()),
            _ => Err(StorageError::Invalid(format!(
                "{} is not mounted on {}",
                self.source,
                self.target().display()
            ))),
        }
    }

    /// The mount on the target path, if any (the last one is in use).
    fn mounted(&self) -> Result<Option<blockdev::Mount>, StorageError> {
        let Ok(target) = std::fs::canonicalize(self.target()) else {
            return Ok(None);
        };
        Ok(blockdev::mounts()?
            .into_iter()
            .rev()
            .find(|m| m.point == target))
    }

    fn canonical_target(&self) -> Result<PathBuf, StorageError> {
        let t = self.target();
        if !t.exists() {
            std::fs::create_dir_all(t).map_err(|e| blockdev::host(t, e))?;
        }
        self.dir.check()?;
        std::fs::canonicalize(t).map_err(|e| blockdev::host(t, e))
    }

    /// The export's figures, as the server reports them (`statvfs`).
    pub fn space(&self) -> Result<PoolSpace, StorageError> {
        self.dir.space()
    }

    /// Its volumes: image files in the export.
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

    /// `vol-create-from`: a copy (or overlay) of `source`, as in a `dir`
    /// pool.
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

/// `host:/export` for mount.nfs; an IPv6 address goes in brackets. Names
/// that could be read as options or carry separators are refused.
fn nfs_source(host: &str, export: &str) -> Result<String, StorageError> {
    let host_ok = !host.is_empty()
        && !host.starts_with('-')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:_".contains(&b));
    if !host_ok {
        return Err(StorageError::Invalid(format!(
            "'{host}' is not a host name or address"
        )));
    }
    if !export.starts_with('/') || export.contains(',') || export.bytes().any(|b| b < 0x20) {
        return Err(StorageError::Invalid(format!(
            "export path '{export}' must be absolute, without commas or control characters"
        )));
    }
    Ok(if host.contains(':') {
        format!("[{host}]:{export}")
    } else {
        format!("{host}:{export}")
    })
}

fn is_nfs(fstype: &str) -> bool {
    fstype == "nfs" || fstype == "nfs4"
}

/// Whether mountinfo's source is the pool's export (the kernel may drop
/// a trailing slash).
fn same_source(mounted: &str, ours: &str) -> bool {
    let norm = |s: &str| s.trim_end_matches('/').to_string();
    norm(mounted) == norm(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_written_as_mount_nfs_takes_them() {
        assert_eq!(
            nfs_source("192.0.2.1", "/srv/a").unwrap(),
            "192.0.2.1:/srv/a"
        );
        assert_eq!(nfs_source("2001:db8::1", "/e").unwrap(), "[2001:db8::1]:/e");
        assert_eq!(nfs_source("nfs.example", "/e").unwrap(), "nfs.example:/e");
        for (h, e) in [
            ("-o", "/e"),
            ("a b", "/e"),
            ("", "/e"),
            ("h", "rel"),
            ("h", "/a,b"),
            ("h", "/a\nb"),
        ] {
            assert!(nfs_source(h, e).is_err(), "{h} {e}");
        }
        assert!(same_source("h:/srv/a/", "h:/srv/a"));
        assert!(!same_source("h:/srv/b", "h:/srv/a"));
    }
}
