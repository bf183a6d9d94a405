//! The template every jail's root is copied from: a mount namespace whose
//! whole tree is one read-only tmpfs holding an empty `proc` directory,
//! made by the first jailed VMM of a boot and pinned by a bind mount at
//! [`TEMPLATE`] (as [`crate::netns`] pins the shared network namespace).
//!
//! A jailed VMM joins the template and unshares a mount namespace of its
//! own from it: one mount to copy, on which it mounts its `/proc`. Making
//! the same root per VMM means copying the host's whole mount tree, making
//! it private, mounting a tmpfs, `pivot_root` (which visits every task on
//! the host) and detaching the host's tree (an expedited RCU grace
//! period): about 0.08 ms more of every jailed start on the project's
//! hosts (`docs/security.md`). Nothing is shared between VMMs but that
//! empty read-only file system, which none of them can write or remount
//! (they hold no capability once jailed).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Where the template is pinned. The name carries the template's layout:
/// a vireo that lays it out otherwise pins its own beside it.
pub const TEMPLATE: &str = "/run/vireo/jail/root-1";

use crate::pin::{io_error, last_error};

/// A descriptor of the template pinned at `path`, made and pinned first
/// (its root mounted on `build_on`, a directory of the host's, in the
/// template's namespace only) if none is there. Call as root, with one
/// thread, in the host's mount namespace; the caller's namespaces, root
/// and working directory are the host's again when this returns (the
/// working directory `/`).
pub fn template(path: &Path, build_on: &Path) -> Result<OwnedFd, String> {
    crate::pin::found_or_made(path, |path| {
        let made = build(build_on)?;
        crate::pin::bind(&format!("/proc/self/fd/{}", made.as_raw_fd()), path)
    })
}

/// Make the template's namespace and come back to the host's: a
/// descriptor of it.
fn build(build_on: &Path) -> Result<OwnedFd, String> {
    let host = File::open("/proc/thread-self/ns/mnt")
        .map_err(|e| io_error("opening this thread's mount namespace", e))?;
    // SAFETY: unshare changes only this (single-threaded) process's mount
    // namespace, which is restored below.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(last_error("unshare(CLONE_NEWNS)"));
    }
    let made = File::open("/proc/thread-self/ns/mnt")
        .map(OwnedFd::from)
        .map_err(|e| io_error("opening the new mount namespace", e));
    // Only a real pivot_root will do: a template whose root was chrooted
    // into (a host running from its initramfs) would give every VMM that
    // joins it the host's tree as its root.
    let built = made.and_then(|made| {
        crate::root::make_root(build_on, crate::root::Make::Template)
            .map(|()| made)
            .map_err(|e| e.to_string())
    });
    // SAFETY: a namespace descriptor opened above.
    if unsafe { libc::setns(host.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
        // This process is in a namespace it did not ask for; the caller
        // is about to enter one anyway, but must not go on half made.
        return Err(last_error("returning to the host's mount namespace"));
    }
    built
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn a_pin_under_a_shared_mount_is_taken() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            testkit::skip("making a mount namespace needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("vireo-mntns-shared-{}", std::process::id()));
        let (pin_dir, build_on) = (dir.join("pin"), dir.join("on"));
        fs::create_dir_all(&pin_dir).unwrap();
        fs::create_dir_all(&build_on).unwrap();
        let listed = std::thread::spawn(move || {
            // This thread's own mount namespace, private from the host's;
            // in it the pin's directory is a shared mount, as /run is
            // under systemd.
            // SAFETY: this thread's file system state and mount namespace.
            unsafe { assert_eq!(libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS), 0) };
            let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
            let mount = |src: &CString, dst: &CString, flags| {
                // SAFETY: NUL-terminated paths; no type or data.
                let rc = unsafe {
                    libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        flags,
                        std::ptr::null(),
                    )
                };
                assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            };
            let root = c(Path::new("/"));
            mount(&root, &root, libc::MS_REC | libc::MS_PRIVATE);
            let shared = c(&pin_dir);
            mount(&shared, &shared, libc::MS_BIND);
            mount(&shared, &shared, libc::MS_SHARED);
            let path = pin_dir.join("root");
            template(&path, &build_on).unwrap();
            template(&path, &build_on).unwrap();
            let info = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
            let at = |p: &Path| -> Vec<String> {
                info.lines()
                    .filter(|l| l.split(' ').nth(4) == p.to_str())
                    .map(String::from)
                    .collect()
            };
            (at(&pin_dir), at(&path))
        })
        .join()
        .unwrap();
        let (dir_mounts, pins) = listed;
        assert_eq!(dir_mounts.len(), 1, "{dir_mounts:?}");
        assert!(dir_mounts[0].contains("shared:"), "{dir_mounts:?}");
        assert_eq!(pins.len(), 1, "{pins:?}");
        assert!(pins[0].contains(" nsfs "), "{pins:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_template_is_made_pinned_and_then_found() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            testkit::skip("making a mount namespace needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("vireo-mntns-{}", std::process::id()));
        let build_on = dir.join("on");
        fs::create_dir_all(&build_on).unwrap();
        let path = dir.join("pin").join("root");
        let first =
            crate::pin::testing::made_once(&path, "mnt", || template(&path, &build_on).unwrap());
        assert!(
            fs::read_dir(&build_on).unwrap().next().is_none(),
            "the host's directory shows nothing of the template"
        );
        // Inside (a thread with a root of its own joins it): one
        // read-only tmpfs holding only an empty `proc`.
        let fd = first.try_clone().unwrap();
        let (entries, proc_entries, write) = std::thread::spawn(move || {
            // SAFETY: this thread's own file system state, then its mount
            // namespace; the thread ends right after.
            unsafe {
                assert_eq!(libc::unshare(libc::CLONE_FS), 0);
                assert_eq!(libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNS), 0);
            }
            let names = |p: &str| -> Vec<String> {
                fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            };
            (
                names("/"),
                names("/proc"),
                fs::create_dir("/x").unwrap_err().raw_os_error(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(entries, ["proc"]);
        assert!(proc_entries.is_empty(), "{proc_entries:?}");
        assert_eq!(write, Some(libc::EROFS));
        crate::pin::testing::unpin(&path, &dir);
    }
}
