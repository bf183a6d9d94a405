//! The virtio-console device: one port, no features, a fixed
//! configuration (no size, one port).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;

use super::event_handler::{ConsoleHandler, Output};
use super::metrics::ConsoleMetrics;
use crate::device::{ActivateContext, ActivateError, VirtioDevice};
use crate::worker::Worker;

/// Index of the receive queue (host to guest).
pub const RECEIVE_QUEUE: u16 = 0;
/// Index of the transmit queue (guest to host).
pub const TRANSMIT_QUEUE: u16 = 1;
const QUEUE_SIZES: [u16; 2] = [256, 256];
/// cols (u16), rows (u16), max_nr_ports (u32), emerg_wr (u32).
const CONFIG_LEN: usize = 12;

/// A console device with a single port.
pub struct Console {
    output: Output,
    input: Option<OwnedFd>,
    metrics: Arc<ConsoleMetrics>,
    worker: Option<Worker>,
}

impl Console {
    /// A console writing guest output to `output` (stdout, a file, a
    /// connected unix socket...) and, if `input` is given, feeding what
    /// can be read from it to the guest. `input` is read only after it
    /// polls readable, one read at a time, so a blocking descriptor (a
    /// terminal, a socket) is fine; at its end the guest gets no more.
    pub fn new(output: Box<dyn Write + Send>, input: Option<OwnedFd>) -> Self {
        Self {
            output: Arc::new(Mutex::new(output)),
            input,
            metrics: Arc::new(ConsoleMetrics::default()),
            worker: None,
        }
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let mut config = [0u8; CONFIG_LEN];
        // cols and rows stay 0 (size unknown); one port.
        config[4..8].copy_from_slice(&1u32.to_le_bytes());
        let Some(start) = usize::try_from(offset).ok().filter(|o| *o < CONFIG_LEN) else {
            return;
        };
        let n = (CONFIG_LEN - start).min(data.len());
        data[..n].copy_from_slice(&config[start..start + n]);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let mut rx = None;
        let mut tx = None;
        for q in ctx.queues {
            match q.index {
                RECEIVE_QUEUE => rx = Some(q),
                TRANSMIT_QUEUE => tx = Some(q),
                other => tracing::debug!("virtio-console: queue {other} is not in use"),
            }
        }
        if rx.is_none() && tx.is_none() {
            return Err(ActivateError::BadQueues(
                "neither the receive nor the transmit queue is enabled".into(),
            ));
        }
        let input = match &self.input {
            Some(fd) => Some(fd.try_clone().map_err(|source| ActivateError::Host {
                what: "duplicating the console input",
                source,
            })?),
            None => None,
        };
        let handler = ConsoleHandler {
            mem: ctx.mem,
            interrupt: ctx.interrupt,
            metrics: self.metrics.clone(),
            rx,
            tx,
            output: self.output.clone(),
            input,
            pending: None,
            input_watched: false,
            input_done: false,
            broken: false,
        };
        self.worker = Some(Worker::spawn("virtio-console", handler)?);
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
