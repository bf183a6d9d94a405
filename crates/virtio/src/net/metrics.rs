//! Counters for one virtio-net device (all its queue pairs together).

use std::sync::atomic::{AtomicU64, Ordering};

/// What the device has done, updated by its workers.
#[derive(Debug, Default)]
pub struct NetMetrics {
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Bytes delivered to the guest (frames, without headers).
    pub rx_bytes: AtomicU64,
    /// Receive chains refused as malformed (returned with length 0).
    pub rx_errors: AtomicU64,
    /// Times receiving paused because the guest had no buffers left.
    pub rx_no_buffers: AtomicU64,
    /// Frames sent for the guest.
    pub tx_frames: AtomicU64,
    /// Bytes sent for the guest (frames, without headers).
    pub tx_bytes: AtomicU64,
    /// Transmit chains refused as malformed or oversized.
    pub tx_errors: AtomicU64,
    /// Well-formed frames the TAP would not take (full, bad offload header).
    pub tx_dropped: AtomicU64,
    /// Control commands served.
    pub ctrl_requests: AtomicU64,
    /// Control commands refused (malformed or unsupported).
    pub ctrl_errors: AtomicU64,
    /// Driver writes to the read-only configuration space.
    pub config_writes_ignored: AtomicU64,
}

impl NetMetrics {
    /// The counters as (name, value) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("rx_frames", get(&self.rx_frames)),
            ("rx_bytes", get(&self.rx_bytes)),
            ("rx_errors", get(&self.rx_errors)),
            ("rx_no_buffers", get(&self.rx_no_buffers)),
            ("tx_frames", get(&self.tx_frames)),
            ("tx_bytes", get(&self.tx_bytes)),
            ("tx_errors", get(&self.tx_errors)),
            ("tx_dropped", get(&self.tx_dropped)),
            ("ctrl_requests", get(&self.ctrl_requests)),
            ("ctrl_errors", get(&self.ctrl_errors)),
            ("config_writes_ignored", get(&self.config_writes_ignored)),
        ]
    }
}

/// Add `n` to counter `c`.
pub(super) fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}
