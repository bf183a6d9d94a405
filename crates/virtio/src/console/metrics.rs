//! Counters for one virtio-console device.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the device has done, updated by its worker.
#[derive(Debug, Default)]
pub struct ConsoleMetrics {
    /// Bytes the guest wrote that reached the output.
    pub tx_bytes: AtomicU64,
    /// Transmit chains refused as malformed.
    pub tx_errors: AtomicU64,
    /// Output writes that failed (the bytes are dropped).
    pub output_errors: AtomicU64,
    /// Input bytes handed to the guest.
    pub rx_bytes: AtomicU64,
    /// Receive chains refused as malformed.
    pub rx_errors: AtomicU64,
}

impl ConsoleMetrics {
    /// The counters as (name, value) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("tx_bytes", get(&self.tx_bytes)),
            ("tx_errors", get(&self.tx_errors)),
            ("output_errors", get(&self.output_errors)),
            ("rx_bytes", get(&self.rx_bytes)),
            ("rx_errors", get(&self.rx_errors)),
        ]
    }
}

/// Add `n` to counter `c`.
pub(super) fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}
