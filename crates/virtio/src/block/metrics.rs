//! Counters for one virtio-blk device.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the device has done, updated by its worker.
#[derive(Debug, Default)]
pub struct BlockMetrics {
    /// Read requests completed.
    pub reads: AtomicU64,
    /// Bytes read.
    pub read_bytes: AtomicU64,
    /// Write requests completed.
    pub writes: AtomicU64,
    /// Bytes written.
    pub write_bytes: AtomicU64,
    /// Flushes completed.
    pub flushes: AtomicU64,
    /// Discard and write-zeroes requests completed.
    pub discards: AtomicU64,
    /// Requests that failed: malformed by the guest, or refused or failed by the disk.
    pub errors: AtomicU64,
    /// Failed requests held by a `stop` error policy (each time one was).
    pub held: AtomicU64,
}

impl BlockMetrics {
    /// The counters as (name, value) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("read_requests", get(&self.reads)),
            ("read_bytes", get(&self.read_bytes)),
            ("write_requests", get(&self.writes)),
            ("write_bytes", get(&self.write_bytes)),
            ("flushes", get(&self.flushes)),
            ("discards", get(&self.discards)),
            ("errors", get(&self.errors)),
            ("held_requests", get(&self.held)),
        ]
    }
}
