//! Counters for one virtio-balloon device.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the device has done, updated by its worker.
#[derive(Debug, Default)]
pub struct BalloonMetrics {
    /// 4 KiB pages the guest put in the balloon.
    pub inflated_pages: AtomicU64,
    /// 4 KiB pages the guest took back out.
    pub deflated_pages: AtomicU64,
    /// Bytes given back to the host for inflated pages.
    pub released_bytes: AtomicU64,
    /// Bytes given back to the host for pages the guest reported free.
    pub reported_bytes: AtomicU64,
    /// Reported bytes kept because they cover only part of a host huge page.
    pub skipped_bytes: AtomicU64,
    /// Page numbers (or reported pages) outside guest RAM, ignored.
    pub bad_pages: AtomicU64,
    /// Statistics buffers taken.
    pub stats_updates: AtomicU64,
    /// Malformed chains (returned unused).
    pub chain_errors: AtomicU64,
    /// Host calls (madvise) that failed.
    pub host_errors: AtomicU64,
}

impl BalloonMetrics {
    /// The counters as (name, value) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("inflated_pages", get(&self.inflated_pages)),
            ("deflated_pages", get(&self.deflated_pages)),
            ("released_bytes", get(&self.released_bytes)),
            ("reported_bytes", get(&self.reported_bytes)),
            ("skipped_bytes", get(&self.skipped_bytes)),
            ("bad_pages", get(&self.bad_pages)),
            ("stats_updates", get(&self.stats_updates)),
            ("chain_errors", get(&self.chain_errors)),
            ("host_errors", get(&self.host_errors)),
        ]
    }
}

/// Add `n` to counter `c`.
pub(super) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
