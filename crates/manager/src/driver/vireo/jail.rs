//! How the daemon confines each VMM it starts: `vireo run --jail DIR
//! --uid U --gid U` (docs/security.md), with U the domain's own uid from
//! the daemon's `--vmm-uids` range, and the files the domain uses opened
//! to U by an ACL entry while it runs (libvirt's dynamic ownership).
//!
//! A domain's uid is the first one from `first + (id - 1) mod count` on
//! (its numeric id mapped into the range, wrapping) that no process has:
//! nothing to allocate or to remember across a daemon restart (the run
//! record keeps the uid), and another daemon's VMMs or a VMM still
//! running from an earlier start are stepped over.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use virtxml::Domain;

use crate::acl::{self, Access};

/// The default `--vmm-uids`: far above the ranges distributions give
/// users, system services and containers (systemd hands out up to
/// 1879048191 for containers), so no other process has these ids.
pub const DEFAULT_VMM_UIDS: &str = "1900000000-1900065535";

/// The uids (and equal gids) VMMs run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    first: u32,
    count: u32,
}

impl FromStr for UidRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a uid range FIRST-LAST (e.g. {DEFAULT_VMM_UIDS})");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let first: u32 = a.trim().parse().map_err(|_| bad())?;
        let last: u32 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(format!(
                "uid range {s}: it must not hold uid 0 and must not end before it starts"
            ));
        }
        // The kernel's "no id" is u32::MAX and u16::MAX-style overflow ids.
        if last >= u32::MAX - 1 {
            return Err(format!("uid range {s}: {last} is not a usable uid"));
        }
        Ok(Self {
            first,
            count: last - first + 1,
        })
    }
}

impl UidRange {
    /// Where the domain with numeric id `id` (1 up) looks for its uid.
    pub fn uid_for(&self, id: u32) -> u32 {
        self.first + id.saturating_sub(1) % self.count
    }

    /// The first uid from [`UidRange::uid_for`] on, wrapping within the
    /// range, that is not in `used`.
    pub fn free_uid(&self, id: u32, used: &std::collections::BTreeSet<u32>) -> Option<u32> {
        let start = id.saturating_sub(1) % self.count;
        (0..self.count)
            .map(|k| self.first + (start + k) % self.count)
            .find(|u| !used.contains(u))
    }
}

/// Every uid some process has (real, effective or saved).
pub(crate) fn uids_in_use() -> std::collections::BTreeSet<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    procs
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| {
                    u.split_whitespace()
                        .take(3)
                        .filter_map(|v| v.parse().ok())
                        .collect::<Vec<u32>>()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// The directories a jailed VMM needs in its run directory: the jail's
/// mount point (the VMM mounts an empty tmpfs on it in its own mount
/// namespace; nothing is written there) and the directory its keeper
/// writes the exit status to as `uid`, which only `uid` may write.
pub(crate) fn prepare_dirs(run_dir: &Path, uid: u32) -> std::io::Result<(PathBuf, PathBuf)> {
    let jail = run_dir.join("jail");
    let status = run_dir.join("status");
    for dir in [&jail, &status] {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    std::os::unix::fs::chown(&status, Some(uid), Some(uid))?;
    std::fs::set_permissions(&jail, std::fs::Permissions::from_mode(0o755))?;
    Ok((jail, status))
}

/// The files a running domain uses, with the access its VMM needs: the
/// kernel and initrd (read), each file or volume disk (read, or read and
/// write) and the backing files of a qcow2 one (read).
pub(crate) fn domain_files(domain: &Domain, disks: &[(PathBuf, bool)]) -> Vec<(PathBuf, Access)> {
    let mut files = Vec::new();
    let os = &domain.os;
    for p in std::iter::once(&os.kernel).chain(os.initrd.as_ref()) {
        files.push((PathBuf::from(p), Access::Read));
    }
    files.extend(domain_files_of_disks(disks));
    files
}

/// The image files of `disks` (path, read-only) with their backing
/// chains, and the access each needs.
pub(crate) fn domain_files_of_disks(disks: &[(PathBuf, bool)]) -> Vec<(PathBuf, Access)> {
    let mut files = Vec::new();
    for (path, readonly) in disks {
        let chain = block::qcow2::backing_chain(path);
        for (i, (p, _)) in chain.iter().enumerate() {
            let access = if i == 0 && !readonly {
                Access::ReadWrite
            } else {
                Access::Read
            };
            files.push((p.clone(), access));
        }
    }
    files
}

/// Gives `uid` its access to each file; returns those it was given, for
/// [`revoke_files`]. A file system without ACLs (or a file that is gone)
/// is logged and passed over: the VMM opens its files before it drops
/// its privileges, so the entry is for what reopens them later.
pub(crate) fn grant_files(domain: &str, uid: u32, files: &[(PathBuf, Access)]) -> Vec<PathBuf> {
    let mut granted = Vec::new();
    for (path, access) in files {
        match acl::grant(path, uid, *access) {
            Ok(()) => granted.push(path.clone()),
            Err(e) => tracing::warn!(
                "domain {domain}: cannot give uid {uid} access to {} by an ACL entry: {e}",
                path.display()
            ),
        }
    }
    granted
}

/// Takes `uid`'s entries off the files [`grant_files`] gave it.
pub(crate) fn revoke_files(domain: &str, uid: u32, files: &[PathBuf]) {
    for path in files {
        if let Err(e) = acl::revoke(path, uid) {
            tracing::warn!(
                "domain {domain}: cannot remove uid {uid}'s ACL entry from {}: {e}",
                path.display()
            );
        }
    }
}

/// ACL entries given for a start, taken back if the start fails (when
/// dropped before [`Grants::take`]).
pub(crate) struct Grants {
    domain: String,
    /// The uid they were given to.
    pub uid: Option<u32>,
    files: Vec<PathBuf>,
}

impl Grants {
    pub(crate) fn new(domain: &str, uid: Option<u32>, files: Vec<PathBuf>) -> Self {
        Self {
            domain: domain.to_string(),
            uid,
            files,
        }
    }

    /// The files, now the caller's to take back.
    pub(crate) fn take(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.files)
    }
}

impl Drop for Grants {
    fn drop(&mut self) {
        if let Some(uid) = self.uid {
            revoke_files(&self.domain, uid, &self.files);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_ids_map_into_them() {
        let r: UidRange = "1000-1002".parse().unwrap();
        assert_eq!(r.uid_for(1), 1000);
        assert_eq!(r.uid_for(3), 1002);
        assert_eq!(r.uid_for(4), 1000, "wraps around");
        assert!(DEFAULT_VMM_UIDS.parse::<UidRange>().is_ok());
        for bad in ["0-10", "10-5", "x", "5", "1-4294967295"] {
            assert!(bad.parse::<UidRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn uids_in_use_are_stepped_over() {
        // SAFETY: getuid only reads the caller's credentials.
        let me = unsafe { libc::getuid() };
        let used = uids_in_use();
        assert!(used.contains(&me));
        assert!(!used.contains(&1_900_065_535));
        let r: UidRange = "1000-1002".parse().unwrap();
        let used = [1001, 1002].into_iter().collect();
        assert_eq!(r.free_uid(2, &used), Some(1000), "wraps to the first");
        assert_eq!(r.free_uid(1, &used), Some(1000));
        let all = [1000, 1001, 1002].into_iter().collect();
        assert_eq!(r.free_uid(1, &all), None);
    }
}
