//! The network namespace jailed VMMs without a network disk share: empty
//! (a loopback device that stays down, no other interface, no route), made
//! by the first jailed VMM of a boot and pinned by a bind mount at
//! [`SHARED`], as `ip netns add` pins its namespaces.
//!
//! Why shared and not one per VMM: making a network namespace is about
//! 0.65 ms of kernel work on the project's hosts (every network subsystem
//! sets itself up for it: sysctl tables, the loopback device) and its
//! teardown more, in a kernel worker, for each VMM start; joining one is a
//! `setns`. What a VMM needs from it is to reach no network of the host,
//! which an empty namespace gives whoever shares it. What sharing adds is
//! a channel between jailed VMMs (abstract unix sockets): a VMM never
//! listens on one, so only two VMMs both taken over by their guests could
//! use it. `docs/security.md` says so.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Where the shared namespace is pinned.
pub const SHARED: &str = "/run/vireo/netns/isolated";

use crate::pin::{io_error, last_error};

/// A descriptor of the shared empty network namespace pinned at `path`,
/// made and pinned first if no namespace is there. Call as root, with one
/// thread, in the host's mount namespace (so the pin is seen by the next
/// VMM); the caller's own network namespace is unchanged.
pub fn shared(path: &Path) -> Result<OwnedFd, String> {
    crate::pin::found_or_made(path, make)
}

/// Make an empty network namespace and pin it on `path`; this process
/// stays in its own.
fn make(path: &Path) -> Result<(), String> {
    let host = File::open("/proc/thread-self/ns/net")
        .map_err(|e| io_error("opening this thread's network namespace", e))?;
    // SAFETY: unshare changes only this (single-threaded) process's
    // network namespace, which is restored below.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(last_error("unshare(CLONE_NEWNET)"));
    }
    let pinned = crate::pin::bind("/proc/thread-self/ns/net", path);
    // SAFETY: a namespace descriptor opened above.
    let back = unsafe { libc::setns(host.as_raw_fd(), libc::CLONE_NEWNET) };
    if back != 0 {
        // This process is in a namespace it did not ask for; the caller
        // is about to enter one anyway, but must not go on half made.
        return Err(last_error("returning to the host's network namespace"));
    }
    pinned
}

/// Join the namespace `fd` names.
pub(crate) fn join(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: setns on a namespace descriptor this process holds.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_empty_namespace_is_made_pinned_and_then_found() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            testkit::skip("making a network namespace needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("vireo-netns-{}", std::process::id()));
        let path = dir.join("sub").join("isolated");
        crate::pin::testing::made_once(&path, "net", || shared(&path).unwrap());
        let links = std::process::Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .args(["ip", "-o", "link"])
            .output()
            .unwrap();
        let links = String::from_utf8_lossy(&links.stdout);
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(
            links.contains(": lo: ") && links.contains("state DOWN"),
            "{links}"
        );
        crate::pin::testing::unpin(&path, &dir);
    }
}
