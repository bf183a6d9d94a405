//! The rng worker: wakes on queue kicks and serves the queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::metrics::RngMetrics;
use super::request;
use crate::device::{ActiveQueue, GuestMemory, VirtioInterrupt};
use crate::queue;

/// The state the worker thread owns.
pub struct RngHandler {
    pub(super) mem: GuestMemory,
    pub(super) queue: ActiveQueue,
    pub(super) interrupt: Arc<dyn VirtioInterrupt>,
    pub(super) metrics: Arc<RngMetrics>,
}

impl RngHandler {
    fn serve(&mut self) {
        let metrics = &self.metrics;
        let result = queue::drain(&mut self.queue.queue, &self.mem, |chain| {
            let mut written = 0;
            metrics.requests.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = request::fill(chain, &mut written) {
                tracing::debug!("virtio-rng: request failed: {e}");
                metrics.errors.fetch_add(1, Ordering::Relaxed);
            }
            metrics
                .bytes
                .fetch_add(u64::from(written), Ordering::Relaxed);
            written
        });
        match result {
            Ok(true) => self.interrupt.notify_queue(self.queue.index),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("virtio-rng: {e}");
                self.interrupt.set_needs_reset();
            }
        }
    }
}

impl MutEventSubscriber for RngHandler {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.queue.kick.read();
        self.serve();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.queue.kick, EventSet::IN)) {
            tracing::error!("virtio-rng: cannot watch the queue: {e:?}");
        }
    }
}
