//! The jail a VMM enters once it has opened everything it needs: its own
//! PID, mount, IPC and UTS namespaces (and network namespace when it uses
//! no host network), a root holding nothing but a `/proc` of its own PID
//! namespace, an unprivileged uid and gid, no capabilities and
//! `no_new_privs`. Firecracker's jailer and libvirt's QEMU confinement do
//! the same; `docs/security.md` ("Jail and privileges") says what it
//! gives and what it does not.
//!
//! Two steps, both while the process has one thread:
//!
//! 1. [`fork_keeper`], first thing: the process forks into a new PID
//!    namespace. The child (PID 1 there) goes on to be the VMM; the parent
//!    becomes its *keeper*: it drops its privileges too, forwards signals
//!    to the child, answers the child's questions about its threads' host
//!    ids, writes the exit status file the child hands it, and exits as
//!    the child did. The keeper's pid is the one its starter knows.
//! 2. [`enter`], once the VMM has opened its files, sockets and devices:
//!    the namespaces, the new root (`pivot_root`) and the privilege drop.
//!
//! Not here: seccomp filters (crate `confine`, installed after [`enter`])
//! and resource limits (the management daemon's cgroups).

mod keeper;
pub mod mntns;
pub mod netns;
mod pin;
mod privileges;
mod root;

use std::io;
use std::path::{Path, PathBuf};

pub use keeper::{fork_keeper, fork_keeper_early, Keeper, KeeperPlan};

/// The uid and gid a jailed VMM runs as when none is given: `nobody` and
/// `nogroup` on Debian-like systems.
pub const DEFAULT_ID: u32 = 65534;

/// Where and as whom a VMM is confined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// The directory the jail's root is mounted on (a tmpfs in the VMM's
    /// own mount namespace: nothing of the host directory shows inside,
    /// and nothing is written to it).
    pub dir: PathBuf,
    /// The uid the VMM runs as; never 0.
    pub uid: u32,
    /// The gid the VMM runs as; never 0.
    pub gid: u32,
}

/// What [`enter`] unshares beyond the mount, IPC and UTS namespaces.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnterOptions {
    /// A network namespace of its own. Open TAP descriptors keep working
    /// in it; only a VMM that must reach the host's network after the
    /// drop (an iSCSI disk reconnecting) stays in the host's.
    pub new_network: bool,
}

/// Why the jail could not be made; each is one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory is unusable.
    #[error("--jail {}: {reason}", dir.display())]
    Dir { dir: PathBuf, reason: String },
    /// A uid or gid of 0 would keep root.
    #[error("--{0} 0: a jailed VMM must not run as root (give another id, or leave it out for {DEFAULT_ID})")]
    RootId(&'static str),
    /// Only root can make namespaces, mount and change user.
    #[error("--jail needs root (it makes namespaces, mounts a root and changes user); this process runs as uid {0}")]
    NotRoot(u32),
    /// The process already has other threads, which would stay outside.
    #[error("cannot enter the jail: the process has {0} threads, and must have one")]
    Threaded(usize),
    /// A system call failed.
    #[error("cannot enter the jail: {what}: {source}")]
    Setup { what: String, source: io::Error },
}

/// The error for the system call `what`, from errno.
fn os_error(what: impl Into<String>) -> Error {
    Error::Setup {
        what: what.into(),
        source: io::Error::last_os_error(),
    }
}

impl Jail {
    /// Check what can be checked before anything is made: the ids are not
    /// root's, the process is root's, and `dir` is a directory other than
    /// `/` (made absolute and resolved here).
    pub fn check(&mut self) -> Result<(), Error> {
        if self.uid == 0 {
            return Err(Error::RootId("uid"));
        }
        if self.gid == 0 {
            return Err(Error::RootId("gid"));
        }
        // SAFETY: geteuid has no arguments and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(Error::NotRoot(euid));
        }
        let dir_error = |reason: String| Error::Dir {
            dir: self.dir.clone(),
            reason,
        };
        let meta = std::fs::metadata(&self.dir).map_err(|e| dir_error(e.to_string()))?;
        if !meta.is_dir() {
            return Err(dir_error("not a directory".into()));
        }
        let dir = std::fs::canonicalize(&self.dir).map_err(|e| dir_error(e.to_string()))?;
        if dir == Path::new("/") {
            return Err(dir_error(
                "the host's root cannot be the jail; give a directory of its own".into(),
            ));
        }
        self.dir = dir;
        Ok(())
    }
}

/// How many threads this process has: the link count of
/// /proc/self/task, which Linux gives as two plus the threads (one `stat`
/// where listing the directory took about 20 µs of a jailed start, twice),
/// or its entries where that count says nothing.
fn thread_count() -> Result<usize, Error> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata("/proc/self/task") {
        if let Some(n) = usize::try_from(meta.nlink())
            .ok()
            .and_then(|l| l.checked_sub(2))
        {
            if n > 0 {
                return Ok(n);
            }
        }
    }
    Ok(std::fs::read_dir("/proc/self/task")
        .map_err(|e| Error::Setup {
            what: "reading /proc/self/task".into(),
            source: e,
        })?
        .count())
}

fn single_threaded() -> Result<(), Error> {
    match thread_count()? {
        1 => Ok(()),
        n => Err(Error::Threaded(n)),
    }
}

/// Enter `jail`: new mount, IPC and UTS namespaces (and network, per
/// `options`), the jail's root in place of the host's, then the uid and
/// gid, no supplementary groups, no capabilities (bounding, ambient,
/// permitted, effective, inheritable) and `no_new_privs`.
///
/// Call with one thread (namespaces and credentials are per thread until
/// threads are made), after everything the VMM needs by path is open, and
/// before its seccomp filters are installed.
pub fn enter(jail: &Jail, options: &EnterOptions) -> Result<(), Error> {
    single_threaded()?;
    root::pivot(&jail.dir, options)?;
    privileges::drop_all(jail.uid, jail.gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jail(dir: &str, uid: u32, gid: u32) -> Jail {
        Jail {
            dir: dir.into(),
            uid,
            gid,
        }
    }

    #[test]
    fn the_thread_count_is_the_task_directory_s() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let held = std::thread::spawn(move || rx.recv());
        // Other tests' threads come and go: the two must agree once.
        let agree = (0..100).any(|_| {
            let listed = std::fs::read_dir("/proc/self/task").unwrap().count();
            thread_count().unwrap() == listed && listed >= 2
        });
        assert!(agree);
        drop(tx);
        held.join().unwrap().unwrap_err();
    }

    #[test]
    fn root_ids_are_refused_first() {
        let e = jail("/nonexistent", 0, 5).check().unwrap_err().to_string();
        assert!(
            e.starts_with("--uid 0: a jailed VMM must not run as root"),
            "{e}"
        );
        let e = jail("/nonexistent", 5, 0).check().unwrap_err().to_string();
        assert!(e.starts_with("--gid 0:"), "{e}");
    }

    #[test]
    fn the_directory_must_be_one_and_not_the_root() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            let e = jail("/tmp", 5, 5).check().unwrap_err().to_string();
            assert!(e.starts_with("--jail needs root"), "{e}");
            return;
        }
        let e = jail("/nonexistent/j", 5, 5)
            .check()
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--jail /nonexistent/j: No such file or directory (os error 2)"
        );
        let e = jail("/proc/self/status", 5, 5)
            .check()
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--jail /proc/self/status: not a directory");
        let e = jail("/tmp/..", 5, 5).check().unwrap_err().to_string();
        assert!(e.contains("the host's root cannot be the jail"), "{e}");
        let mut ok = jail("/tmp/./", 5, 5);
        ok.check().unwrap();
        assert_eq!(ok.dir, Path::new("/tmp"));
    }
}
