//! The virtio-rng device: no configuration, one queue.

use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

use super::event_handler::RngHandler;
use super::metrics::RngMetrics;
use crate::device::{ActivateContext, ActivateError, VirtioDevice};
use crate::worker::Worker;

const QUEUE_SIZES: [u16; 1] = [256];

/// An entropy device backed by the host's getrandom(2).
#[derive(Default)]
pub struct Rng {
    metrics: Arc<RngMetrics>,
    worker: Option<Worker>,
}

impl Rng {
    /// A new entropy device.
    pub fn new() -> Self {
        Self::default()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let Some(queue) = ctx.queues.into_iter().find(|q| q.index == 0) else {
            return Err(ActivateError::BadQueues("queue 0 is not enabled".into()));
        };
        let handler = RngHandler {
            mem: ctx.mem,
            queue,
            interrupt: ctx.interrupt,
            metrics: self.metrics.clone(),
        };
        self.worker = Some(Worker::spawn("virtio-rng", handler)?);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
    }

    fn pause(&mut self) -> bool {
        self.worker.as_ref().is_none_or(Worker::pause)
    }

    fn resume(&mut self) {
        if let Some(w) = &self.worker {
            w.resume();
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.metrics.snapshot()
    }
}
