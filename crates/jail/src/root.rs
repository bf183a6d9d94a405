//! The jail's root: a small read-only tmpfs holding a `/proc` of the
//! VMM's own PID namespace (the VMM reads its threads' state there), in a
//! mount namespace of the VMM's own. It is copied from the template
//! [`crate::mntns`] pins; where no template can be made, the VMM makes the
//! same root itself: the tmpfs mounted on the jail directory, made `/`
//! with `pivot_root`, the host's root detached.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::{os_error, EnterOptions, Error};

fn cstring(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Dir {
        dir: path.to_path_buf(),
        reason: "the path holds a NUL byte".into(),
    })
}

/// mount(2) with optional source, type and data.
fn mount(
    source: Option<&std::ffi::CStr>,
    target: &std::ffi::CStr,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
    data: Option<&std::ffi::CStr>,
) -> std::io::Result<()> {
    let ptr = |s: Option<&std::ffi::CStr>| s.map_or(std::ptr::null(), std::ffi::CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string that
    // outlives the call.
    let rc = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What [`make_root`] makes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Make {
    /// The template: no `/proc` yet, and `pivot_root` or nothing.
    Template,
    /// A VMM's own root, with its `/proc`; where `pivot_root` cannot be
    /// used (a host running from its initramfs), a chroot.
    Own,
}

/// Unshare the namespaces and make the jail's root `/`.
pub(crate) fn pivot(dir: &Path, options: &EnterOptions) -> Result<(), Error> {
    let setup = |what: &str| {
        let what = what.to_string();
        move |source| Error::Setup { what, source }
    };
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    // The shared empty network namespace and the root's template are
    // found (or made and pinned) while this process still sees the host's
    // mounts. Where they cannot be (no /run, a read-only one), the VMM
    // makes its own, as safe and dearer.
    let shared_net = if options.new_network {
        crate::netns::shared(Path::new(crate::netns::SHARED)).ok()
    } else {
        None
    };
    if options.new_network && shared_net.is_none() {
        flags |= libc::CLONE_NEWNET;
    }
    let template = crate::mntns::template(Path::new(crate::mntns::TEMPLATE), dir).ok();
    if let Some(template) = &template {
        // SAFETY: setns on a mount namespace descriptor this
        // (single-threaded) process holds.
        if unsafe { libc::setns(template.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
            return Err(os_error(format!(
                "joining the jail's template {}",
                crate::mntns::TEMPLATE
            )));
        }
    }
    // SAFETY: unshare only changes this (single-threaded) process's
    // namespaces.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(os_error("unshare"));
    }
    if let Some(net) = &shared_net {
        crate::netns::join(net).map_err(setup(&format!(
            "joining the shared network namespace {}",
            crate::netns::SHARED
        )))?;
    }
    match template {
        // A copy of the template, private: its /proc only is the VMM's.
        Some(_) => mount_proc(c"/proc"),
        None => make_root(dir, Make::Own),
    }
}

/// Only the process directories (subset=pid, Linux 5.8): no /proc/sys,
/// no kernel tables. Older kernels get a whole proc, still of the VMM's
/// own PID namespace.
fn mount_proc(at: &std::ffi::CStr) -> Result<(), Error> {
    let hardened = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(
        Some(c"proc"),
        at,
        Some(c"proc"),
        hardened,
        Some(c"subset=pid"),
    )
    .or_else(|_| mount(Some(c"proc"), at, Some(c"proc"), hardened, None))
    .map_err(|source| Error::Setup {
        what: "mounting /proc in the jail".into(),
        source,
    })
}

/// In a mount namespace this process has just unshared: mount the jail's
/// tmpfs on `dir` and make it `/`, the host's tree detached; the working
/// directory is `/`.
pub(crate) fn make_root(dir: &Path, make: Make) -> Result<(), Error> {
    let target = cstring(dir)?;
    let setup = |what: &str| {
        let what = what.to_string();
        move |source| Error::Setup { what, source }
    };
    // Nothing mounted from here on reaches the host's namespace.
    mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(setup("making / private"))?;
    let hardened = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(
        Some(c"vireo-jail"),
        &target,
        Some(c"tmpfs"),
        hardened,
        Some(c"mode=0555,size=16k,nr_inodes=16"),
    )
    .map_err(setup("mounting the jail's tmpfs"))?;
    let proc_dir = cstring(&dir.join("proc"))?;
    // SAFETY: a NUL-terminated path; mkdir has no other effect.
    if unsafe { libc::mkdir(proc_dir.as_ptr(), 0o555) } != 0 {
        return Err(os_error("mkdir /proc in the jail"));
    }
    if make == Make::Own {
        mount_proc(&proc_dir)?;
    }
    mount(
        None,
        &target,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | hardened,
        None,
    )
    .map_err(setup("making the jail's root read-only"))?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::chdir(target.as_ptr()) } != 0 {
        return Err(os_error("chdir into the jail"));
    }
    // pivot_root(".", "."): the old root ends up on top of the new one,
    // and is then detached (pivot_root(2)).
    // SAFETY: two NUL-terminated paths.
    if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } == 0 {
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(os_error("detaching the host's root"));
        }
    } else if make == Make::Own
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
    {
        // The host runs from its initramfs (rootfs), which pivot_root
        // cannot move: move the jail over `/` and chroot into it, as
        // switch_root and container runtimes do there. The host's tree
        // stays under the jail's mount, out of reach: nothing in the jail
        // names it, and the VMM loses CAP_SYS_CHROOT before the guest runs.
        mount(Some(c"."), c"/", None, libc::MS_MOVE, None)
            .map_err(setup("moving the jail over / (the host runs from rootfs)"))?;
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::chroot(c".".as_ptr()) } != 0 {
            return Err(os_error("chroot into the jail"));
        }
    } else {
        return Err(os_error("pivot_root"));
    }
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        return Err(os_error("chdir /"));
    }
    Ok(())
}
