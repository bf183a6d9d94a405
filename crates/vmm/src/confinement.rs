//! What the VMM must know about the jail it runs in (`vireo run --jail`,
//! crate `jail`): that it is jailed, so requests naming host paths are
//! refused with a reason rather than an ENOENT, and how its threads' ids
//! in its own PID namespace map to the host's, which the API reports.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Maps thread ids in this process's PID namespace to the host's.
pub type HostTidMap = Box<dyn Fn(&[libc::pid_t]) -> Vec<Option<libc::pid_t>> + Send + Sync>;

static JAIL_DIR: OnceLock<PathBuf> = OnceLock::new();
static HOST_TIDS: OnceLock<HostTidMap> = OnceLock::new();

/// Record that this process now runs jailed in `dir` (the host's path of
/// its root), and how to map its thread ids to the host's. Once.
pub fn set_jailed(dir: PathBuf, host_tids: HostTidMap) {
    let _ = JAIL_DIR.set(dir);
    let _ = HOST_TIDS.set(host_tids);
}

/// The jail's directory, when jailed.
pub(crate) fn jail_dir() -> Option<&'static Path> {
    JAIL_DIR.get().map(PathBuf::as_path)
}

/// Why a request that needs a host path or device (`subject`) cannot be
/// done here, if this process is jailed; `instead` says what to send.
pub(crate) fn refuse_path(subject: &str, instead: &str) -> Option<String> {
    jail_dir().map(|dir| {
        format!(
            "{subject}: this VMM runs jailed in {} and cannot open host paths or devices; {instead}",
            dir.display()
        )
    })
}

/// Thread ids as the host sees them (unchanged outside a jail; an id the
/// map does not know stays as it is).
pub(crate) fn host_tids(tids: &[libc::pid_t]) -> Vec<libc::pid_t> {
    match HOST_TIDS.get() {
        None => tids.to_vec(),
        Some(map) => tids
            .iter()
            .zip(map(tids))
            .map(|(&t, host)| host.unwrap_or(t))
            .collect(),
    }
}
