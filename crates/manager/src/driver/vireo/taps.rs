//! The TAPs this driver makes for bridge interfaces, the macvtaps it
//! makes for direct ones, and the network namespace they are made in.
//!
//! Every such TAP is opened here, not persistent, on its bridge, and its
//! descriptor handed to the VMM (on the command line at start, over the
//! API socket for hot-plug): it goes when the VMM lets go of it, so
//! nothing here ever has to remove one. Interfaces are named per network
//! namespace, so a hot-plugged card's TAP is made in the namespace the
//! domain started in, whichever thread asks.

use std::fs::File;
use std::os::fd::AsRawFd;

use super::config::{BridgePort, BridgeTap, DirectLink, DirectPort};
use crate::driver::DriverError;

/// The network namespace of the thread that created it.
#[derive(Debug)]
pub(crate) struct NetNs(Option<File>);

impl NetNs {
    /// The calling thread's namespace (`None` inside: the current one is
    /// used, as when `/proc` is not mounted).
    pub(crate) fn current() -> NetNs {
        NetNs(File::open("/proc/thread-self/ns/net").ok())
    }

    /// Runs `f` in this namespace, on a thread of its own that enters it.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let Some(ns) = &self.0 else {
            return f();
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns only changes this (scoped, short-lived)
                // thread's namespace; `ns` is an open namespace file.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                    tracing::warn!(
                        "cannot enter the namespace the TAPs were made in: {}",
                        std::io::Error::last_os_error()
                    );
                }
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

/// Opens each start-time bridge port (not persistent: each goes when the
/// last descriptor on it closes, the VMM's included) and puts `,fd=N` on
/// its `--net` argument. The TAPs returned must stay open until the VMM
/// is spawned.
pub(crate) fn open_ports(
    domain: &str,
    ports: &[BridgePort],
    args: &mut [String],
) -> Result<Vec<netvirt::Tap>, DriverError> {
    let mut open = Vec::new();
    for p in ports {
        let tap = netvirt::bridge::open_bridge_port(&p.port.tap, &p.port.bridge).map_err(|e| {
            DriverError::Failed(format!(
                "domain {domain}: bridge interface on '{}': {e}",
                p.port.bridge
            ))
        })?;
        tag(domain, &p.port)?;
        let fd = tap
            .queue(0)
            .map(|q| q.as_raw_fd())
            .ok_or_else(|| DriverError::Failed(format!("domain {domain}: a TAP with no queue")))?;
        if let Some(arg) = args.get_mut(p.arg) {
            arg.push_str(&format!(",fd={fd}"));
        }
        open.push(tap);
    }
    Ok(open)
}

/// Puts a bridge port in its NIC's VLAN, if it has one.
pub(crate) fn tag(domain: &str, port: &BridgeTap) -> Result<(), DriverError> {
    let Some(vid) = port.vlan else {
        return Ok(());
    };
    netvirt::bridge::tag_bridge_port(&port.tap, &port.bridge, vid, port.may_filter).map_err(|e| {
        DriverError::Failed(format!(
            "domain {domain}: bridge interface on '{}', VLAN {vid}: {e}",
            port.bridge
        ))
    })
}

/// Creates each start-time direct port's macvtap, opens it and puts
/// `,fd=N` on its `--net` argument. The descriptors returned must stay
/// open until the VMM is spawned; the links stay until
/// [`remove_direct`]. On a failure removes those already made.
pub(crate) fn open_direct_ports(
    domain: &str,
    ports: &[DirectPort],
    args: &mut [String],
) -> Result<Vec<netvirt::Tap>, DriverError> {
    let mut open = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let tap = match open_direct(domain, &p.link, p.mode, p.mac.0) {
            Ok(t) => t,
            Err(e) => {
                let made: Vec<DirectLink> = ports[..i].iter().map(|p| p.link.clone()).collect();
                for l in remove_direct(&made) {
                    tracing::warn!("domain {domain}: cannot remove macvtap {}", l.name);
                }
                return Err(e);
            }
        };
        if let (Some(arg), Some(q)) = (args.get_mut(p.arg), tap.queue(0)) {
            arg.push_str(&format!(",fd={}", q.as_raw_fd()));
        }
        open.push(tap);
    }
    Ok(open)
}

/// Creates a direct interface's macvtap and opens it; the descriptor goes
/// to the VMM (at start on its command line, hot-plugged over its API).
pub(crate) fn open_direct(
    domain: &str,
    link: &DirectLink,
    mode: netvirt::link::MacvlanMode,
    mac: [u8; 6],
) -> Result<netvirt::Tap, DriverError> {
    netvirt::macvtap::open_direct_port(&link.name, &link.dev, mode, mac).map_err(|e| {
        DriverError::Failed(format!(
            "domain {domain}: direct interface on '{}': {e}",
            link.dev
        ))
    })
}

/// Deletes macvtaps this driver made; returns those that could not be
/// deleted.
pub(crate) fn remove_direct(links: &[DirectLink]) -> Vec<DirectLink> {
    let mut left = Vec::new();
    for l in links {
        if let Err(e) = netvirt::macvtap::remove_direct_port(&l.name) {
            tracing::warn!("cannot remove macvtap {}: {e}", l.name);
            left.push(l.clone());
        }
    }
    left
}
