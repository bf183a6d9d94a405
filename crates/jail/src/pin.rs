//! Namespaces pinned by a bind mount of their file, so the next jailed
//! VMM finds them: the shared network namespace ([`crate::netns`]) and
//! the jail's root template ([`crate::mntns`]), each made by the first
//! jailed VMM of a boot, as `ip netns add` pins its own.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// `statfs`'s type of a namespace file (`NSFS_MAGIC`).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// `what: error`, one line.
pub(crate) fn io_error(what: &str, e: std::io::Error) -> String {
    format!("{what}: {e}")
}

/// [`io_error`] with errno.
pub(crate) fn last_error(what: &str) -> String {
    io_error(what, std::io::Error::last_os_error())
}

/// The namespace pinned at `path`, if a namespace file is mounted there
/// (of any kind: the caller's `setns` says if it is the wrong one).
pub(crate) fn open_pinned(path: &Path) -> Option<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let mut fs = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs writes a whole `statfs` when it succeeds.
    if unsafe { libc::fstatfs(file.as_raw_fd(), fs.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstatfs succeeded.
    let fs = unsafe { fs.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type's width differs by libc
    (fs.f_type as i64 == NSFS_MAGIC).then(|| OwnedFd::from(file))
}

/// Bind-mount the namespace file `source` (a /proc path naming it) on
/// `path`. (util-linux's `unshare --mount=FILE` asks for a mount
/// namespace's pin on a private mount; Linux 6.18 takes one under a shared
/// mount too, as /run is under systemd, which `mntns`'s tests check.)
pub(crate) fn bind(source: &str, path: &Path) -> Result<(), String> {
    let nul = |_| "a NUL in a path";
    let source = CString::new(source).map_err(nul)?;
    let target = CString::new(path.as_os_str().as_bytes()).map_err(nul)?;
    // SAFETY: two NUL-terminated strings; no type or data.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(last_error(&format!(
            "pinning the namespace on {}",
            path.display()
        )));
    }
    Ok(())
}

/// The namespace pinned at `path`; if none is, `make` makes one and pins
/// it there (on the empty file made for it). One maker at a time: the
/// others wait on a lock beside the pin, then find the maker's pin.
pub(crate) fn found_or_made(
    path: &Path,
    make: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<OwnedFd, String> {
    if let Some(fd) = open_pinned(path) {
        return Ok(fd);
    }
    let dir = path.parent().ok_or("the pin has no directory")?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| io_error(&format!("mkdir {}", dir.display()), e))?;
    let lock = File::create(dir.join(".lock"))
        .map_err(|e| io_error(&format!("creating {}/.lock", dir.display()), e))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(last_error("locking the pin"));
    }
    if let Some(fd) = open_pinned(path) {
        return Ok(fd);
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o444)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_error(&format!("creating {}", path.display()), e))?;
    make(path)?;
    open_pinned(path)
        .ok_or_else(|| format!("{} holds no namespace after mounting one", path.display()))
}

/// What the pins' tests share.
#[cfg(test)]
pub(crate) mod testing {
    use std::ffi::CString;
    use std::fs::{self, File};
    use std::os::fd::OwnedFd;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    fn inode(fd: &OwnedFd) -> u64 {
        File::from(fd.try_clone().unwrap())
            .metadata()
            .unwrap()
            .ino()
    }

    /// `make` twice at `path`: the second finds what the first made and
    /// pinned, a namespace other than the caller's `kind` one (a name in
    /// /proc/thread-self/ns), which is unchanged. Returns the first.
    pub(crate) fn made_once(path: &Path, kind: &str, make: impl Fn() -> OwnedFd) -> OwnedFd {
        let own = format!("/proc/thread-self/ns/{kind}");
        let host = fs::metadata(&own).unwrap().ino();
        let first = make();
        let again = make();
        assert_eq!(
            inode(&first),
            inode(&again),
            "the pin is found, not made again"
        );
        assert_ne!(inode(&first), host, "the host's own namespace");
        assert_eq!(
            fs::metadata(&own).unwrap().ino(),
            host,
            "the caller's namespace is unchanged"
        );
        assert!(path.exists());
        first
    }

    /// Unmount the pin at `path` and remove `dir`.
    pub(crate) fn unpin(path: &Path, dir: &Path) {
        let target = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        assert_eq!(rc, 0);
        fs::remove_dir_all(dir).unwrap();
    }
}
