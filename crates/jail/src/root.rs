//! The jail's root: a small read-only tmpfs mounted on the jail directory
//! in the VMM's own mount namespace, holding a `/proc` of its own PID
//! namespace (the VMM reads its threads' state there), and made `/` with
//! `pivot_root`; the host's root is detached.

use std::ffi::CString;
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

/// Unshare the namespaces and make `dir` the root.
pub(crate) fn pivot(dir: &Path, options: &EnterOptions) -> Result<(), Error> {
    let target = cstring(dir)?;
    let setup = |what: &str| {
        let what = what.to_string();
        move |source| Error::Setup { what, source }
    };
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    // The shared empty network namespace is found (or made and pinned)
    // while this process still sees the host's mounts. Where it cannot be
    // (no /run, a read-only one), the VMM gets a namespace of its own, as
    // safe and 0.65 ms dearer.
    let shared_net = if options.new_network {
        crate::netns::shared(Path::new(crate::netns::SHARED)).ok()
    } else {
        None
    };
    if options.new_network && shared_net.is_none() {
        flags |= libc::CLONE_NEWNET;
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
    // Only the process directories (subset=pid, Linux 5.8): no /proc/sys,
    // no kernel tables. Older kernels get a whole proc, still of the
    // VMM's own PID namespace.
    mount(
        Some(c"proc"),
        &proc_dir,
        Some(c"proc"),
        hardened,
        Some(c"subset=pid"),
    )
    .or_else(|_| mount(Some(c"proc"), &proc_dir, Some(c"proc"), hardened, None))
    .map_err(setup("mounting /proc in the jail"))?;
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
    } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
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
