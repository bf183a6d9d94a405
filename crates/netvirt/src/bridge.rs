//! Bridge ports: a TAP made for a VM and attached to a host bridge, by
//! the management daemon, which does this privileged work for the VMM.
//!
//! Two ways to hand it over. [`open_bridge_port`] keeps the TAP open and
//! not persistent: the daemon passes the descriptor to the VMM (`vireo
//! run --net fd=N`, [`Tap::from_fd`]) and the interface goes when the VMM
//! exits, however it exits. For a card hot-plugged over the API, where no
//! descriptor can be passed, [`create_bridge_port`] makes the TAP
//! persistent (TUNSETPERSIST) so the VMM can attach to it by name, and
//! [`remove_persistent_tap`] removes it once it is unplugged or the VM has
//! ended. Both use the flags [`Tap::open`] uses for one queue, so the
//! VMM's attach matches.

use std::io;
use std::os::fd::AsRawFd;

use crate::ifreq;
use crate::tap::{Tap, TapError};

/// SIOCBRADDIF from <linux/sockios.h> (not in the libc crate).
const SIOCBRADDIF: libc::Ioctl = 0x89a2;

/// Creates the TAP `tap`, makes it persistent, brings it up and attaches
/// it to `bridge`. An interface of that name that exists already is
/// refused, not taken: the caller removes what this makes (on unplug, or
/// here when the bridge refuses it), and must never remove an interface
/// someone else made.
pub fn create_bridge_port(tap: &str, bridge: &str) -> Result<(), TapError> {
    if ifreq::flags(tap).is_ok() {
        return Err(TapError::Unusable {
            name: tap.to_string(),
            reason: "an interface of that name exists already (a bridge port is a new TAP)".into(),
        });
    }
    let configure = |what: &'static str| {
        move |source: io::Error| TapError::Configure {
            name: tap.to_string(),
            what,
            source,
        }
    };
    let opened = Tap::open(Some(tap), 1)?;
    let fd = opened.queue(0).ok_or(TapError::NoQueues)?;
    set_persist(fd.as_raw_fd(), true).map_err(configure("making it persistent"))?;
    if let Err(e) = add_to_bridge(tap, bridge) {
        // Do not leave a persistent TAP behind for a port that failed.
        let _ = set_persist(fd.as_raw_fd(), false);
        return Err(TapError::Unusable {
            name: tap.to_string(),
            reason: format!("cannot attach it to bridge '{bridge}': {e}"),
        });
    }
    Ok(())
}

/// Creates the TAP `tap` (not persistent: it goes when the last
/// descriptor on it closes), brings it up and attaches it to `bridge`.
/// The caller hands the queue's descriptor to the VMM and closes its own.
pub fn open_bridge_port(tap: &str, bridge: &str) -> Result<Tap, TapError> {
    let opened = Tap::open(Some(tap), 1)?;
    add_to_bridge(opened.name(), bridge).map_err(|e| TapError::Unusable {
        name: tap.to_string(),
        reason: format!("cannot attach it to bridge '{bridge}': {e}"),
    })?;
    Ok(opened)
}

/// Makes bridge port `port` an untagged member of VLAN `vid` alone (a
/// NIC's `vlan/tag`). The bridge must filter VLANs: when it does not,
/// filtering is turned on if `may_enable_filtering` (a bridge Vireo's
/// network made), and refused otherwise (a host bridge is its owner's
/// to reconfigure). Untagged ports stay in the default VLAN 1, so turning
/// filtering on leaves them as they were.
pub fn tag_bridge_port(
    port: &str,
    bridge: &str,
    vid: u16,
    may_enable_filtering: bool,
) -> Result<(), crate::link::LinkError> {
    let mut nl = crate::link::Netlink::open()?;
    if !nl.bridge_vlan_filtering(bridge)? {
        if !may_enable_filtering {
            return Err(crate::link::LinkError::InvalidArgument {
                op: format!("putting {port} in VLAN {vid}"),
                why: format!(
                    "bridge '{bridge}' does not filter VLANs; turn its vlan_filtering on to tag its ports"
                ),
            });
        }
        nl.set_bridge_vlan_filtering(bridge, true)?;
    }
    nl.set_port_access_vlan(port, vid)
}

/// Removes the persistent TAP `tap` (it goes once no process holds it).
/// Ok when it does not exist.
pub fn remove_persistent_tap(tap: &str) -> Result<(), TapError> {
    if ifreq::flags(tap).is_err() {
        return Ok(());
    }
    let opened = Tap::open(Some(tap), 1)?;
    let fd = opened.queue(0).ok_or(TapError::NoQueues)?;
    set_persist(fd.as_raw_fd(), false).map_err(|source| TapError::Configure {
        name: tap.to_string(),
        what: "clearing persistence",
        source,
    })
}

fn set_persist(fd: libc::c_int, on: bool) -> io::Result<()> {
    // TUNSETPERSIST takes its argument by value.
    let arg = libc::c_ulong::from(on);
    // SAFETY: TUNSETPERSIST reads no memory: the flag is the argument.
    let ret = unsafe { libc::ioctl(fd, libc::TUNSETPERSIST, arg) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SIOCBRADDIF: the bridge's name in the request, the port's ifindex in
/// `ifru_ifindex`.
fn add_to_bridge(port: &str, bridge: &str) -> io::Result<()> {
    if bridge.len() > ifreq::MAX_NAME_LEN || bridge.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an interface name",
        ));
    }
    let name =
        std::ffi::CString::new(port).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    let sock = ifreq::control_socket()?;
    let mut req = ifreq::request(bridge);
    req.ifr_ifru.ifru_ifindex =
        libc::c_int::try_from(index).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: SIOCBRADDIF takes a struct ifreq (the bridge's name and the
    // port's index); `req` is live for the call.
    unsafe { ifreq::ifreq_ioctl(&sock, SIOCBRADDIF, &mut req) }.map_err(|e| {
        if e.raw_os_error() == Some(libc::ENODEV) {
            io::Error::new(e.kind(), format!("no bridge called '{bridge}'"))
        } else if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
            io::Error::new(e.kind(), format!("'{bridge}' is not a bridge"))
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::run_isolated;

    /// `ip -o link show PORT`, run from this thread, so in its namespace.
    fn link_line(port: &str) -> String {
        std::process::Command::new("ip")
            .args(["-o", "link", "show", port])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Whether link `name` is gone within 5 s. Another test thread that
    /// forks a child (its `ip` command) holds a copy of every descriptor
    /// until the child execs, so a TAP's last close can come a moment
    /// after the test's own.
    fn goes_away(name: &str) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ifreq::flags(name).is_ok() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        true
    }

    #[test]
    fn a_port_joins_the_bridge_and_goes_when_removed() {
        let outcome = run_isolated(|| {
            let status = std::process::Command::new("ip")
                .args(["link", "add", "vbr0", "type", "bridge"])
                .status();
            match status {
                Ok(s) if s.success() => {}
                other => return Err(format!("cannot create a bridge with ip: {other:?}")),
            }
            create_bridge_port("vport0", "vbr0").map_err(|e| e.to_string())?;
            let persistent = ifreq::flags("vport0").is_ok();
            let line = link_line("vport0");
            remove_persistent_tap("vport0").map_err(|e| e.to_string())?;
            let gone = goes_away("vport0");
            let refused = create_bridge_port("vport1", "nosuchbr")
                .unwrap_err()
                .to_string();
            let leftover = !goes_away("vport1");
            // Someone else's persistent TAP: refused, and still there
            // after the refusal (a taken one would be removed later).
            let theirs = Tap::open(Some("vtheirs"), 1).map_err(|e| e.to_string())?;
            set_persist(theirs.queue(0).unwrap().as_raw_fd(), true).map_err(|e| e.to_string())?;
            drop(theirs);
            let exists = create_bridge_port("vtheirs", "vbr0")
                .unwrap_err()
                .to_string();
            let kept = ifreq::flags("vtheirs").is_ok() && !link_line("vtheirs").contains("master");
            Ok((persistent, line, gone, refused, leftover, exists, kept))
        })
        .expect("unshare(CLONE_NEWNET) (tests need root)");
        let (persistent, line, gone, refused, leftover, exists, kept) = outcome.unwrap();
        assert!(exists.contains("exists already"), "{exists}");
        assert!(kept, "an existing TAP was taken over or removed");
        assert!(persistent, "the TAP did not outlive its descriptor");
        assert!(line.contains("master vbr0"), "{line}");
        assert!(gone, "the TAP stayed after remove_persistent_tap");
        assert!(refused.contains("no bridge called 'nosuchbr'"), "{refused}");
        assert!(!leftover, "a failed port left its TAP");
    }

    #[test]
    fn an_open_port_is_handed_over_by_descriptor_and_goes_with_it() {
        let outcome = run_isolated(|| {
            let status = std::process::Command::new("ip")
                .args(["link", "add", "vbr1", "type", "bridge"])
                .status();
            assert!(
                matches!(status, Ok(s) if s.success()),
                "ip link add: {status:?}"
            );
            let port = open_bridge_port("vport2", "vbr1").unwrap();
            let line = link_line("vport2");
            let handed = Tap::from_fd(port.queue(0).unwrap()).unwrap();
            let name = handed.name().to_string();
            drop(port);
            let still_there = ifreq::flags("vport2").is_ok();
            drop(handed);
            let gone = goes_away("vport2");
            let null = std::fs::File::open("/dev/null").unwrap();
            let refused = Tap::from_fd(std::os::fd::AsFd::as_fd(&null))
                .unwrap_err()
                .to_string();
            (line, name, still_there, gone, refused)
        })
        .expect("unshare(CLONE_NEWNET) (tests need root)");
        let (line, name, still_there, gone, refused) = outcome;
        assert!(line.contains("master vbr1"), "{line}");
        assert_eq!(name, "vport2");
        assert!(
            still_there,
            "the TAP went while the handed descriptor was open"
        );
        assert!(gone, "the TAP stayed after its last descriptor closed");
        assert!(refused.contains("not a TAP descriptor"), "{refused}");
    }
}
