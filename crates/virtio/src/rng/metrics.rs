//! Counters for one virtio-rng device.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the device has done, updated by its worker.
#[derive(Debug, Default)]
pub struct RngMetrics {
    /// Requests served.
    pub requests: AtomicU64,
    /// Random bytes handed to the guest.
    pub bytes: AtomicU64,
    /// Requests that failed (malformed chains, host errors).
    pub errors: AtomicU64,
}

impl RngMetrics {
    /// The counters as (name, value) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("requests", self.requests.load(Ordering::Relaxed)),
            ("bytes", self.bytes.load(Ordering::Relaxed)),
            ("errors", self.errors.load(Ordering::Relaxed)),
        ]
    }
}
