//! The TAPs this driver makes for bridge interfaces, and the network
//! namespace they were made in.
//!
//! Interfaces are named per network namespace, so a TAP is removed in
//! the namespace it was created in, whichever thread does the removal (the
//! one that waits for the VMM to end may live elsewhere).

use std::fs::File;
use std::os::fd::AsRawFd;

use super::config::BridgeTap;
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

/// Creates each TAP and attaches it to its bridge; on a failure removes
/// those already made.
pub(crate) fn create(domain: &str, taps: &[BridgeTap]) -> Result<(), DriverError> {
    for (i, t) in taps.iter().enumerate() {
        if let Err(e) = netvirt::bridge::create_bridge_port(&t.tap, &t.bridge) {
            remove(&taps[..i]);
            return Err(DriverError::Failed(format!(
                "domain {domain}: bridge interface on '{}': {e}",
                t.bridge
            )));
        }
    }
    Ok(())
}

/// Removes TAPs this driver made (logging what fails: the VM is gone
/// either way).
pub(crate) fn remove(taps: &[BridgeTap]) {
    for t in taps {
        if let Err(e) = netvirt::bridge::remove_persistent_tap(&t.tap) {
            tracing::warn!("cannot remove TAP {}: {e}", t.tap);
        }
    }
}
