//! The TAPs this driver makes for bridge interfaces, and the network
//! namespace they are made in.
//!
//! Every such TAP is opened here, not persistent, on its bridge, and its
//! descriptor handed to the VMM (on the command line at start, over the
//! API socket for hot-plug): it goes when the VMM lets go of it, so
//! nothing here ever has to remove one. Interfaces are named per network
//! namespace, so a hot-plugged card's TAP is made in the namespace the
//! domain started in, whichever thread asks.

use std::fs::File;
use std::os::fd::AsRawFd;

use super::config::BridgePort;
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
