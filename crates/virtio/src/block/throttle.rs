//! I/O limits of one disk (QEMU's `throttling.*`, libvirt's `iotune`):
//! operations and bytes per second, for reads, writes or both, each a
//! token bucket that may hold a burst.
//!
//! A request the buckets cannot pay for yet waits in the device's worker
//! (its queue is not read further meanwhile) until a timer says they can:
//! the guest sees a slower disk, never an error.

use std::time::{Duration, Instant};

/// The limits, per second; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoLimits {
    /// Operations of any kind.
    pub iops_total: Option<u64>,
    /// Reads.
    pub iops_read: Option<u64>,
    /// Writes (with flushes, discards and write-zeroes).
    pub iops_write: Option<u64>,
    /// Bytes of any kind.
    pub bps_total: Option<u64>,
    /// Bytes read.
    pub bps_read: Option<u64>,
    /// Bytes written.
    pub bps_write: Option<u64>,
    /// How many seconds' worth of a limit may go at once after a quiet
    /// spell (the buckets' size); 1 when not given.
    pub burst_secs: Option<u64>,
}

impl IoLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        [
            self.iops_total,
            self.iops_read,
            self.iops_write,
            self.bps_total,
            self.bps_read,
            self.bps_write,
        ]
        .iter()
        .any(Option::is_some)
    }
}

/// Which requests a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applies {
    All,
    Reads,
    Writes,
}

#[derive(Debug)]
struct Bucket {
    applies: Applies,
    /// Counts bytes (else operations).
    bytes: bool,
    rate: f64,
    capacity: f64,
    level: f64,
}

/// The buckets of one disk.
#[derive(Debug)]
pub(super) struct Throttle {
    buckets: Vec<Bucket>,
    last: Instant,
}

impl Throttle {
    /// Buckets for `limits`, full; `None` when nothing is limited.
    pub(super) fn new(limits: &IoLimits, now: Instant) -> Option<Throttle> {
        let burst = limits.burst_secs.unwrap_or(1).max(1) as f64;
        let mut buckets = Vec::new();
        for (limit, applies, bytes) in [
            (limits.iops_total, Applies::All, false),
            (limits.iops_read, Applies::Reads, false),
            (limits.iops_write, Applies::Writes, false),
            (limits.bps_total, Applies::All, true),
            (limits.bps_read, Applies::Reads, true),
            (limits.bps_write, Applies::Writes, true),
        ] {
            if let Some(rate) = limit.filter(|r| *r > 0) {
                let rate = rate as f64;
                buckets.push(Bucket {
                    applies,
                    bytes,
                    rate,
                    capacity: rate * burst,
                    level: rate * burst,
                });
            }
        }
        (!buckets.is_empty()).then_some(Throttle { buckets, last: now })
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        for b in &mut self.buckets {
            b.level = (b.level + b.rate * dt).min(b.capacity);
        }
    }

    /// Pays for one request (`read` or not, `bytes` long) if every bucket
    /// that counts it can; else says how long until they can, and takes
    /// nothing.
    pub(super) fn admit(&mut self, read: bool, bytes: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let mut wait = 0f64;
        for b in &self.buckets {
            let counts = match b.applies {
                Applies::All => true,
                Applies::Reads => read,
                Applies::Writes => !read,
            };
            if !counts {
                continue;
            }
            // A request bigger than a bucket goes once the bucket is full.
            let cost = if b.bytes {
                (bytes as f64).min(b.capacity)
            } else {
                1.0
            };
            if b.level < cost {
                wait = wait.max((cost - b.level) / b.rate);
            }
        }
        if wait > 0.0 {
            // At least a millisecond: a timer shorter than that would
            // only spin.
            return Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)));
        }
        for b in &mut self.buckets {
            let counts = match b.applies {
                Applies::All => true,
                Applies::Reads => read,
                Applies::Writes => !read,
            };
            if counts {
                let cost = if b.bytes {
                    (bytes as f64).min(b.capacity)
                } else {
                    1.0
                };
                b.level -= cost;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iops_pace_requests_after_the_burst() {
        let t0 = Instant::now();
        let limits = IoLimits {
            iops_total: Some(100),
            ..Default::default()
        };
        let mut t = Throttle::new(&limits, t0).unwrap();
        // A full bucket: 100 at once, then one every 10 ms.
        for _ in 0..100 {
            assert!(t.admit(true, 4096, t0).is_ok());
        }
        let wait = t.admit(true, 4096, t0).unwrap_err();
        assert!((9..=11).contains(&wait.as_millis()), "{wait:?}");
        assert!(t.admit(false, 4096, t0 + Duration::from_millis(10)).is_ok());
        // Over a second of steady requests, about 100 go.
        let mut now = t0 + Duration::from_secs(5);
        t.admit(true, 0, now).ok();
        let end = now + Duration::from_secs(1);
        let mut admitted = 0;
        // Drain the refilled burst first.
        while t.admit(true, 0, now).is_ok() {}
        while now < end {
            match t.admit(true, 0, now) {
                Ok(()) => admitted += 1,
                Err(w) => now += w,
            }
        }
        assert!((99..=101).contains(&admitted), "{admitted}");
    }

    #[test]
    fn reads_and_writes_have_their_own_buckets() {
        let t0 = Instant::now();
        let limits = IoLimits {
            bps_write: Some(1 << 20),
            ..Default::default()
        };
        let mut t = Throttle::new(&limits, t0).unwrap();
        assert!(t.admit(false, 1 << 20, t0).is_ok());
        assert!(t.admit(false, 4096, t0).is_err());
        // Reads are not limited.
        assert!(t.admit(true, 64 << 20, t0).is_ok());
        // A write larger than the bucket waits for a full bucket only.
        let w = t.admit(false, 8 << 20, t0).unwrap_err();
        assert!(w <= Duration::from_secs(1), "{w:?}");
        assert!(Throttle::new(&IoLimits::default(), t0).is_none());
    }
}
