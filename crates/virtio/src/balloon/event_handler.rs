//! The balloon worker: inflate and deflate chains, free page reports, and
//! the statistics buffer it holds and hands back every period.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::QueueT;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use super::device::{Shared, KNOWN_STATS, VIRTIO_BALLOON_F_REPORTING, VIRTIO_BALLOON_F_STATS_VQ};
use super::metrics::{add, BalloonMetrics};
use super::ram::GuestRam;
use super::request;
use crate::device::{ActivateError, ActiveQueue, GuestMemory, VirtioInterrupt};
use crate::queue::{self, RingError};

const INFLATE: u32 = 0;
const DEFLATE: u32 = 1;
const STATS: u32 = 2;
const REPORTING: u32 = 3;
const TIMER: u32 = 4;
const PERIOD_CHANGED: u32 = 5;

/// Which queue index plays which part. Linux numbers only the queues
/// whose feature was negotiated (statistics at 2 if negotiated, then
/// reporting), so the indices follow the negotiated features.
pub struct QueueRoles {
    stats: Option<u16>,
    reporting: Option<u16>,
}

impl QueueRoles {
    /// The roles for `features`.
    pub fn negotiated(features: u64) -> Self {
        let mut next = 2;
        let mut take = |bit: u32| {
            (features & (1 << bit) != 0).then(|| {
                next += 1;
                next - 1
            })
        };
        let stats = take(VIRTIO_BALLOON_F_STATS_VQ);
        let reporting = take(VIRTIO_BALLOON_F_REPORTING);
        Self { stats, reporting }
    }
}

/// The state the worker thread owns.
pub struct BalloonHandler {
    mem: GuestMemory,
    interrupt: Arc<dyn VirtioInterrupt>,
    metrics: Arc<BalloonMetrics>,
    shared: Arc<Shared>,
    ram: GuestRam,
    inflate: Option<ActiveQueue>,
    deflate: Option<ActiveQueue>,
    stats: Option<ActiveQueue>,
    reporting: Option<ActiveQueue>,
    period_changed: EventFd,
    timer: TimerFd,
    /// The statistics buffer the device holds until it wants fresh ones.
    held_stats: Option<u16>,
    /// A ring failed: the device awaits a reset.
    broken: bool,
    bytes: Vec<u8>,
    pfns: Vec<u32>,
    ranges: Vec<(vm_memory::GuestAddress, u64)>,
}

impl BalloonHandler {
    pub(super) fn new(
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        metrics: Arc<BalloonMetrics>,
        shared: Arc<Shared>,
        ram: GuestRam,
    ) -> Result<Self, ActivateError> {
        let host = |what| move |source| ActivateError::Host { what, source };
        let period_changed = shared
            .period_changed
            .try_clone()
            .map_err(host("balloon eventfd"))?;
        let timer = TimerFd::new().map_err(|e| ActivateError::Host {
            what: "balloon statistics timer",
            source: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        // Non-blocking: a period change handled in the same wake-up may
        // disarm the timer (and zero its count) before its own event is
        // read, and that read must not block the worker for ever.
        // SAFETY: F_SETFL on a descriptor the timer owns; no memory is passed.
        if unsafe { libc::fcntl(timer.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
            return Err(ActivateError::Host {
                what: "balloon statistics timer",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            mem,
            interrupt,
            metrics,
            shared,
            ram,
            inflate: None,
            deflate: None,
            stats: None,
            reporting: None,
            period_changed,
            timer,
            held_stats: None,
            broken: false,
            bytes: Vec::new(),
            pfns: Vec::new(),
            ranges: Vec::new(),
        })
    }

    /// Take queue `q` in the part `roles` gives its index.
    pub(super) fn take_queue(&mut self, roles: &QueueRoles, q: ActiveQueue) {
        let slot = match q.index {
            0 => &mut self.inflate,
            1 => &mut self.deflate,
            i if Some(i) == roles.stats => &mut self.stats,
            i if Some(i) == roles.reporting => &mut self.reporting,
            other => {
                tracing::debug!("virtio-balloon: queue {other} has no use");
                return;
            }
        };
        *slot = Some(q);
    }

    /// The balloon needs its inflate and deflate queues.
    pub(super) fn check_queues(&self) -> Result<(), ActivateError> {
        if self.inflate.is_none() || self.deflate.is_none() {
            return Err(ActivateError::BadQueues(
                "the inflate and deflate queues must both be enabled".into(),
            ));
        }
        Ok(())
    }

    fn ring_failed(&mut self, e: &RingError) {
        tracing::warn!("virtio-balloon: {e}");
        self.broken = true;
        self.interrupt.set_needs_reset();
    }

    fn serve_pages(&mut self, inflate: bool) {
        let q = if inflate {
            self.inflate.as_mut()
        } else {
            self.deflate.as_mut()
        };
        let Some(q) = q else { return };
        let (ram, metrics, bytes, pfns) = (
            &mut self.ram,
            &self.metrics,
            &mut self.bytes,
            &mut self.pfns,
        );
        let result = queue::drain(&mut q.queue, &self.mem, |chain| {
            if let Err(e) = request::page_numbers(chain, bytes, pfns) {
                tracing::debug!("virtio-balloon: page chain refused: {e}");
                add(&metrics.chain_errors, 1);
                return 0;
            }
            let out = if inflate {
                ram.inflate(pfns)
            } else {
                ram.deflate(pfns)
            };
            let pages = if inflate {
                &metrics.inflated_pages
            } else {
                &metrics.deflated_pages
            };
            add(pages, out.pages);
            add(&metrics.released_bytes, out.released);
            add(&metrics.bad_pages, out.bad);
            add(&metrics.host_errors, out.errors);
            if out.bad > 0 {
                tracing::debug!("virtio-balloon: {} page numbers outside guest RAM", out.bad);
            }
            0
        });
        let index = q.index;
        match result {
            Ok(true) => self.interrupt.notify_queue(index),
            Ok(false) => {}
            Err(e) => self.ring_failed(&e),
        }
    }

    fn serve_reports(&mut self) {
        let Some(q) = self.reporting.as_mut() else {
            return;
        };
        let (ram, metrics, ranges) = (&mut self.ram, &self.metrics, &mut self.ranges);
        let result = queue::drain(&mut q.queue, &self.mem, |chain| {
            if let Err(e) = request::reported_ranges(chain, ranges) {
                tracing::debug!("virtio-balloon: report refused: {e}");
                add(&metrics.chain_errors, 1);
                return 0;
            }
            for &(addr, len) in ranges.iter() {
                let out = ram.report(addr, len);
                add(&metrics.reported_bytes, out.released);
                add(&metrics.skipped_bytes, out.skipped);
                add(&metrics.bad_pages, out.bad);
                add(&metrics.host_errors, out.errors);
            }
            0
        });
        let index = q.index;
        match result {
            Ok(true) => self.interrupt.notify_queue(index),
            Ok(false) => {}
            Err(e) => self.ring_failed(&e),
        }
    }

    /// Take statistics buffers: the newest is held, any older one (a
    /// driver should only have one) and malformed ones go back at once.
    fn take_stats(&mut self) -> Result<(), RingError> {
        let Some(q) = self.stats.as_mut() else {
            return Ok(());
        };
        let mut used = false;
        loop {
            let Some(chain) = queue::pop(&mut q.queue, &self.mem)? else {
                if q.queue.enable_notification(&self.mem)? {
                    continue;
                }
                break;
            };
            let head = chain.head_index();
            match request::statistics(chain, &mut self.bytes) {
                Ok(values) => {
                    let values = values
                        .into_iter()
                        .filter(|(tag, _)| *tag < KNOWN_STATS)
                        .collect();
                    let mut state = self.shared.lock();
                    state.stats.values = values;
                    state.stats.last_update = Some(SystemTime::now());
                    drop(state);
                    add(&self.metrics.stats_updates, 1);
                    if let Some(old) = self.held_stats.replace(head) {
                        q.queue.add_used(&self.mem, old, 0)?;
                        used = true;
                    }
                }
                Err(e) => {
                    tracing::debug!("virtio-balloon: statistics buffer refused: {e}");
                    add(&self.metrics.chain_errors, 1);
                    q.queue.add_used(&self.mem, head, 0)?;
                    used = true;
                }
            }
        }
        if used && q.queue.needs_notification(&self.mem)? {
            self.interrupt.notify_queue(q.index);
        }
        Ok(())
    }

    /// Hand the held statistics buffer back: the driver refills it.
    fn request_stats(&mut self) -> Result<(), RingError> {
        let (Some(q), Some(head)) = (self.stats.as_mut(), self.held_stats.take()) else {
            return Ok(());
        };
        q.queue.add_used(&self.mem, head, 0)?;
        if q.queue.needs_notification(&self.mem)? {
            self.interrupt.notify_queue(q.index);
        }
        Ok(())
    }

    fn arm_timer(&mut self) {
        let period = self.shared.lock().stats_period;
        let result = if period == 0 || self.stats.is_none() {
            self.timer.clear()
        } else {
            let every = Duration::from_secs(u64::from(period));
            self.timer.reset(every, Some(every))
        };
        if let Err(e) = result {
            tracing::warn!("virtio-balloon: setting the statistics timer: {e}");
        }
    }
}

impl MutEventSubscriber for BalloonHandler {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let kick = |q: &Option<ActiveQueue>| {
            if let Some(q) = q {
                let _ = q.kick.read();
            }
        };
        match events.data() {
            INFLATE => kick(&self.inflate),
            DEFLATE => kick(&self.deflate),
            STATS => kick(&self.stats),
            REPORTING => kick(&self.reporting),
            TIMER => {
                let _ = self.timer.wait();
            }
            PERIOD_CHANGED => {
                let _ = self.period_changed.read();
            }
            other => tracing::debug!("virtio-balloon: unexpected event {other}"),
        }
        if self.broken {
            return;
        }
        let result = match events.data() {
            INFLATE => {
                self.serve_pages(true);
                Ok(())
            }
            DEFLATE => {
                self.serve_pages(false);
                Ok(())
            }
            STATS => self.take_stats(),
            REPORTING => {
                self.serve_reports();
                Ok(())
            }
            TIMER => self.request_stats(),
            PERIOD_CHANGED => {
                self.arm_timer();
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            self.ring_failed(&e);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let queues = [
            (&self.inflate, INFLATE),
            (&self.deflate, DEFLATE),
            (&self.stats, STATS),
            (&self.reporting, REPORTING),
        ];
        for (q, data) in queues {
            if let Some(q) = q {
                if let Err(e) = ops.add(Events::with_data(&q.kick, data, EventSet::IN)) {
                    tracing::error!("virtio-balloon: cannot watch a queue: {e:?}");
                }
            }
        }
        let own = [
            Events::with_data(&self.timer, TIMER, EventSet::IN),
            Events::with_data(&self.period_changed, PERIOD_CHANGED, EventSet::IN),
        ];
        for events in own {
            if let Err(e) = ops.add(events) {
                tracing::error!("virtio-balloon: cannot watch the statistics timer: {e:?}");
            }
        }
        self.arm_timer();
        // Chains the driver placed before activation (Linux posts its
        // first statistics at once, and may inflate right away).
        for inflate in [true, false] {
            self.serve_pages(inflate);
        }
        if let Err(e) = self.take_stats() {
            self.ring_failed(&e);
        }
        self.serve_reports();
    }
}
