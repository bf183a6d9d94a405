//! Direct ports: a macvtap link on a host device, made for a VM's
//! `interface type='direct'` by the management daemon, and the character
//! device (`/dev/tapN`, N the link's index) its frames are read from and
//! written to.
//!
//! Unlike a TAP, a macvtap link does not go when its last descriptor
//! closes: whoever makes one with [`create_direct_port`] or
//! [`open_direct_port`] removes it with [`remove_direct_port`] when the VM
//! ends or the card is unplugged.
//!
//! The character device comes from devtmpfs (or udev) in the host's one
//! `/dev`, while link indexes are per network namespace: `/dev/tapN` may
//! be missing (no devtmpfs, or another namespace's link of that index had
//! the name first and has gone since) or belong to another namespace's
//! link with the same index. So the node is checked against the device
//! number this namespace's sysfs gives for the link, and when it does not
//! match, a node is made with mknod on a tmpfs that only a helper
//! thread's private mount namespace sees.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::link::{LinkError, MacvlanMode, Netlink};
use crate::tap::{Tap, TapError};

/// Why a direct port could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// Creating, configuring or removing the macvtap link failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Opening or configuring its character device failed.
    #[error(transparent)]
    Tap(#[from] TapError),
}

/// Creates macvtap `name` on `parent` in `mode`, with the guest's `mac`
/// (the parent delivers only frames for the macvtap's own address), and
/// brings it up. An existing link of that name is refused, never taken.
pub fn create_direct_port(
    name: &str,
    parent: &str,
    mode: MacvlanMode,
    mac: [u8; 6],
) -> Result<(), DirectError> {
    let mut nl = Netlink::open()?;
    nl.create_macvtap(name, parent, mode, Some(mac))?;
    if let Err(e) = nl.set_up(name, true) {
        let _ = nl.delete(name);
        return Err(e.into());
    }
    Ok(())
}

/// Creates macvtap `name` as [`create_direct_port`] does and opens its
/// character device as a one-queue [`Tap`] (virtio-net headers, no
/// offloads yet). On a failure the link made here is removed.
pub fn open_direct_port(
    name: &str,
    parent: &str,
    mode: MacvlanMode,
    mac: [u8; 6],
) -> Result<Tap, DirectError> {
    create_direct_port(name, parent, mode, mac)?;
    open_macvtap(name).map_err(|e| {
        let _ = remove_direct_port(name);
        e.into()
    })
}

/// Removes macvtap `name`; Ok when it is gone already. A link of that
/// name of another kind is left alone and refused.
pub fn remove_direct_port(name: &str) -> Result<(), LinkError> {
    let mut nl = Netlink::open()?;
    match nl.link(name)? {
        None => Ok(()),
        Some(l) if l.kind.as_deref() == Some("macvtap") => match nl.delete(name) {
            Err(LinkError::NotFound { .. }) => Ok(()),
            other => other,
        },
        Some(l) => Err(LinkError::InvalidArgument {
            op: format!("removing macvtap {name}"),
            why: format!(
                "it is a {} link, not a macvtap",
                l.kind.as_deref().unwrap_or("plain")
            ),
        }),
    }
}

/// Opens the existing macvtap `name`'s character device as a one-queue
/// [`Tap`].
pub fn open_macvtap(name: &str) -> Result<Tap, TapError> {
    let unusable = |reason: String| TapError::Unusable {
        name: name.to_string(),
        reason,
    };
    let mut nl = Netlink::open().map_err(|e| unusable(e.to_string()))?;
    let link = nl
        .link(name)
        .map_err(|e| unusable(e.to_string()))?
        .ok_or_else(|| unusable("no such interface".into()))?;
    if link.kind.as_deref() != Some("macvtap") {
        return Err(unusable("it is not a macvtap device".into()));
    }
    let fd = open_char_device(name, link.index).map_err(|source| TapError::Open {
        name: format!("{name} (/dev/tap{})", link.index),
        source,
    })?;
    let tap = Tap::from_fd(fd.as_fd())?;
    // A node of another namespace's link with the same index would name
    // another interface.
    if tap.name() != name {
        return Err(unusable(format!(
            "/dev/tap{} belongs to '{}', not to it",
            link.index,
            tap.name()
        )));
    }
    Ok(tap)
}

/// The device number ("MAJOR:MINOR") of macvtap `name` with link index
/// `index`, from sysfs, when the sysfs mounted is this namespace's (its
/// entry for `name` has the same index).
fn sysfs_devnum(name: &str, index: u32) -> Option<(u32, u32)> {
    let base = format!("/sys/class/net/{name}");
    let seen: u32 = std::fs::read_to_string(format!("{base}/ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if seen != index {
        return None;
    }
    parse_devnum(&std::fs::read_to_string(format!("{base}/macvtap/tap{index}/dev")).ok()?)
}

/// "MAJOR:MINOR\n" as sysfs writes a `dev` file.
fn parse_devnum(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn open_node(path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is NUL-terminated; open returns a new descriptor or -1.
    let raw = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` was just returned by open(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn open_char_device(name: &str, index: u32) -> io::Result<OwnedFd> {
    let node = format!("/dev/tap{index}");
    let node_is = |dev: libc::dev_t| {
        std::fs::metadata(&node).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == dev)
    };
    if let Some((major, minor)) = sysfs_devnum(name, index) {
        let dev = libc::makedev(major, minor);
        if node_is(dev) {
            return open_node(&node);
        }
    }
    // The sysfs mounted here is another namespace's (the daemon was
    // started in a network namespace without a sysfs of its own), or the
    // node is missing or another link's: look and make the node in a
    // mount namespace of a helper thread's own.
    in_private_mounts(|| {
        // A private tmpfs over /dev first: the sysfs mount point and the
        // node made below are seen by no other process and go with the
        // mount namespace. (sysfs goes in a directory of its own: mounting
        // it on a /sys that already shows this namespace is EBUSY.)
        mount("tmpfs", "/dev", "tmpfs")?;
        std::fs::create_dir("/dev/sys")?;
        mount("sysfs", "/dev/sys", "sysfs")?;
        let text =
            std::fs::read_to_string(format!("/dev/sys/class/net/{name}/macvtap/tap{index}/dev"))?;
        let (major, minor) = parse_devnum(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sysfs gives {text:?} as its device number"),
            )
        })?;
        let path = format!("/dev/tap{index}");
        let c =
            CString::new(path.clone()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is NUL-terminated; mknod reads it only.
        if unsafe {
            libc::mknod(
                c.as_ptr(),
                libc::S_IFCHR | 0o600,
                libc::makedev(major, minor),
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        open_node(&path)
    })
}

/// Mounts a new `fstype` instance on `target` (in a private mount
/// namespace only: see [`in_private_mounts`]).
fn mount(source: &str, target: &str, fstype: &str) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (source, target, fstype) = (c(source)?, c(target)?, c(fstype)?);
    // SAFETY: every pointer is a NUL-terminated string live for the call;
    // no data argument is passed.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread of its own, in the calling thread's network
/// namespace, inside a new mount namespace whose mounts propagate nowhere:
/// what `f` mounts is seen by no other thread and goes with the thread.
/// Descriptors it opens are the process's, as any thread's.
fn in_private_mounts<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare(2) with CLONE_NEWNS gives only this thread a
            // copy of the mount table (and of its fs struct); no memory
            // is passed.
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } < 0 {
                return Err(io::Error::last_os_error());
            }
            let root =
                CString::new("/").map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // Made private before anything is mounted, or the mounts
            // would propagate back to the host's namespace.
            // SAFETY: `root` is NUL-terminated; a propagation change
            // takes no source, type or data.
            let rc = unsafe {
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the helper thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::run_isolated;

    #[test]
    fn sysfs_dev_numbers_are_parsed() {
        assert_eq!(parse_devnum("243:1\n"), Some((243, 1)));
        assert_eq!(parse_devnum("243"), None);
        assert_eq!(parse_devnum("a:1"), None);
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x0d, 0x01];

    #[test]
    fn a_node_of_another_namespace_s_link_is_not_taken() {
        // Fresh namespaces number their links alike: lo, the veth pair,
        // then the macvtap, so both macvtaps get one index and the first
        // one's /dev/tapN.
        let outcome = run_isolated(|| {
            let make = |veth: &str, peer: &str, name: &str| {
                let mut nl = Netlink::open().unwrap();
                nl.create_veth(veth, peer).unwrap();
                nl.set_up(veth, true).unwrap();
                create_direct_port(name, veth, MacvlanMode::Bridge, MAC)
                    .map(|()| nl.index(name).unwrap().unwrap())
            };
            let first = match make("nca", "ncb", "nsmva") {
                Ok(i) => i,
                Err(DirectError::Link(e @ LinkError::Unsupported { .. })) => {
                    return Err(e.to_string())
                }
                Err(e) => panic!("{e}"),
            };
            let mine = open_macvtap("nsmva").unwrap();
            let (second, other) = run_isolated(|| {
                let index = make("nca", "ncb", "nsmvb").unwrap();
                let tap = open_macvtap("nsmvb").map(|t| t.name().to_string());
                remove_direct_port("nsmvb").unwrap();
                (index, tap)
            })
            .expect("a second namespace");
            assert_eq!(mine.name(), "nsmva");
            assert_eq!(other.unwrap(), "nsmvb", "index {first} and {second}");
            drop(mine);
            remove_direct_port("nsmva").unwrap();
            Ok(())
        })
        .expect("new network namespace");
        if let Err(why) = outcome {
            testkit::skip(&why);
        }
    }

    #[test]
    fn a_direct_port_opens_as_a_tap_and_is_removed() {
        let outcome = run_isolated(|| {
            let mut nl = Netlink::open().unwrap();
            nl.create_veth("dpa", "dpb").unwrap();
            nl.set_up("dpa", true).unwrap();
            let tap = match open_direct_port("dmv0", "dpa", MacvlanMode::Bridge, MAC) {
                Ok(t) => t,
                Err(DirectError::Link(e @ LinkError::Unsupported { .. })) => {
                    return Err(e.to_string())
                }
                Err(e) => panic!("{e}"),
            };
            assert_eq!(tap.name(), "dmv0");
            let l = nl.link("dmv0").unwrap().expect("macvtap exists");
            assert_eq!(l.kind.as_deref(), Some("macvtap"));
            assert_eq!(l.mac, Some(MAC));
            assert!(l.up);
            // The device takes the same configuration as a TAP queue.
            tap.set_offloads(crate::Offloads::default()).unwrap();
            // Reopened by name, as the VMM does for a hot-plugged card.
            drop(tap);
            let again = Tap::open(Some("dmv0"), 1).unwrap();
            assert_eq!(again.name(), "dmv0");
            drop(again);

            // An existing name is refused and left alone.
            let e = open_direct_port("dmv0", "dpa", MacvlanMode::Bridge, MAC).unwrap_err();
            assert!(e.to_string().contains("File exists"), "{e}");
            assert!(nl.link("dmv0").unwrap().is_some());
            // A missing parent: one line, nothing made.
            let e = open_direct_port("dmv1", "nosuch0", MacvlanMode::Vepa, MAC).unwrap_err();
            assert_eq!(
                e.to_string(),
                "creating macvtap dmv1: no such interface \"nosuch0\""
            );
            assert!(nl.link("dmv1").unwrap().is_none());
            // Removing refuses what is not a macvtap.
            assert!(remove_direct_port("dpb").is_err());
            assert!(nl.link("dpb").unwrap().is_some());

            remove_direct_port("dmv0").unwrap();
            assert!(nl.link("dmv0").unwrap().is_none());
            remove_direct_port("dmv0").unwrap();
            Ok(())
        })
        .expect("new network namespace");
        if let Err(why) = outcome {
            testkit::skip(&why);
        }
    }
}
