//! The console worker: copies transmit chains to the output, and input
//! (when there is any) into receive chains, reading the input only while
//! the guest has a buffer for it so nothing is lost.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::QueueT;
use vmm_sys_util::epoll::EventSet;

use super::metrics::{add, ConsoleMetrics};
use super::request::{self, InputBuffer};
use crate::device::{ActiveQueue, GuestMemory, VirtioInterrupt};
use crate::queue::{self, RingError};

const RX_KICK: u32 = 0;
const TX_KICK: u32 = 1;
const INPUT_READY: u32 = 2;

/// Bytes read from the input at a time.
const READ_CHUNK: usize = 4096;

/// Where guest output goes; shared with the device so it survives resets.
pub type Output = Arc<Mutex<Box<dyn Write + Send>>>;

/// The state the worker thread owns.
pub struct ConsoleHandler {
    pub(super) mem: GuestMemory,
    pub(super) interrupt: Arc<dyn VirtioInterrupt>,
    pub(super) metrics: Arc<ConsoleMetrics>,
    pub(super) rx: Option<ActiveQueue>,
    pub(super) tx: Option<ActiveQueue>,
    pub(super) output: Output,
    pub(super) input: Option<OwnedFd>,
    /// A receive buffer popped and waiting for input.
    pub(super) pending: Option<InputBuffer>,
    pub(super) input_watched: bool,
    /// The input ended (EOF or error): never read again.
    pub(super) input_done: bool,
    /// A ring failed: the device awaits a reset.
    pub(super) broken: bool,
}

impl ConsoleHandler {
    fn watch_input(&mut self, ops: &mut EventOps, on: bool) {
        let Some(fd) = self.input.as_ref() else {
            return;
        };
        if on == self.input_watched {
            return;
        }
        let events = Events::with_data(fd, INPUT_READY, EventSet::IN);
        let result = if on {
            ops.add(events)
        } else {
            ops.remove(events)
        };
        match result {
            Ok(()) => self.input_watched = on,
            Err(e) => tracing::error!("virtio-console: cannot change the input watch: {e:?}"),
        }
    }

    fn ring_failed(&mut self, e: &RingError, ops: &mut EventOps) {
        tracing::warn!("virtio-console: {e}");
        self.broken = true;
        self.watch_input(ops, false);
        self.interrupt.set_needs_reset();
    }

    /// Make sure a receive buffer is waiting; returns whether one is.
    /// Malformed chains are returned at once, with length 0.
    fn take_buffer(&mut self, used: &mut bool) -> Result<bool, RingError> {
        let Some(rx) = self.rx.as_mut() else {
            return Ok(false);
        };
        while self.pending.is_none() {
            let Some(chain) = queue::pop(&mut rx.queue, &self.mem)? else {
                if rx.queue.enable_notification(&self.mem)? {
                    continue;
                }
                return Ok(false);
            };
            let head = chain.head_index();
            match InputBuffer::parse(chain) {
                Ok(b) => self.pending = Some(b),
                Err(e) => {
                    tracing::debug!("virtio-console: receive chain refused: {e}");
                    add(&self.metrics.rx_errors, 1);
                    rx.queue.add_used(&self.mem, head, 0)?;
                    *used = true;
                }
            }
        }
        Ok(true)
    }

    /// Serve the receive side; read the input only if it signalled
    /// readiness (`ready`), since it may be a blocking descriptor.
    fn process_input(&mut self, ops: &mut EventOps, ready: bool) {
        if self.broken || self.input.is_none() || self.input_done {
            self.watch_input(ops, false);
            return;
        }
        let mut used = false;
        let have = match self.take_buffer(&mut used) {
            Ok(h) => h,
            Err(e) => return self.ring_failed(&e, ops),
        };
        if have && ready {
            if let Err(e) = self.read_input(&mut used) {
                return self.ring_failed(&e, ops);
            }
            // The next buffer now, so the input stays watched while the
            // driver has buffers: a driver with buffers queued (Linux
            // keeps its receive ring full) does not kick again, and with
            // EVENT_IDX it must not, so waiting for a kick would leave the
            // rest of the input unread.
            if let Err(e) = self.take_buffer(&mut used) {
                return self.ring_failed(&e, ops);
            }
        }
        let watch = self.pending.is_some() && !self.input_done;
        self.watch_input(ops, watch);
        if used {
            self.notify(true);
        }
    }

    /// One read from the input into the pending buffer.
    fn read_input(&mut self, used: &mut bool) -> Result<(), RingError> {
        let (Some(fd), Some(buf)) = (self.input.as_ref(), self.pending.as_ref()) else {
            return Ok(());
        };
        let mut chunk = [0u8; READ_CHUNK];
        let data = &mut chunk[..buf.capacity().min(READ_CHUNK)];
        let n = loop {
            // SAFETY: reads at most data.len() bytes into `data`, a live
            // buffer of this process (not guest memory).
            let n = unsafe { libc::read(fd.as_raw_fd(), data.as_mut_ptr().cast(), data.len()) };
            if n >= 0 {
                break usize::try_from(n).unwrap_or(0);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(()),
                _ => {
                    tracing::warn!("virtio-console: reading the input: {e}; input closed");
                    self.input_done = true;
                    return Ok(());
                }
            }
        };
        if n == 0 {
            tracing::debug!("virtio-console: input reached its end");
            self.input_done = true;
            return Ok(());
        }
        let Some(buf) = self.pending.take() else {
            return Ok(());
        };
        let written = match buf.fill(&self.mem, &data[..n]) {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!("virtio-console: receive chain refused: {e}");
                add(&self.metrics.rx_errors, 1);
                0
            }
        };
        add(&self.metrics.rx_bytes, written);
        if let Some(rx) = self.rx.as_mut() {
            rx.queue
                .add_used(&self.mem, buf.head, u32::try_from(written).unwrap_or(0))?;
            *used = true;
        }
        Ok(())
    }

    fn notify(&mut self, rx: bool) {
        let q = if rx {
            self.rx.as_mut()
        } else {
            self.tx.as_mut()
        };
        let Some(q) = q else { return };
        match q.queue.needs_notification(&self.mem) {
            Ok(true) => self.interrupt.notify_queue(q.index),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("virtio-console: {e}");
                self.interrupt.set_needs_reset();
            }
        }
    }

    fn process_output(&mut self, ops: &mut EventOps) {
        let Some(tx) = self.tx.as_mut() else { return };
        let (mem, metrics) = (&self.mem, &self.metrics);
        let mut out = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes = Vec::new();
        let result = queue::drain(&mut tx.queue, mem, |chain| {
            match request::output_bytes(chain, &mut bytes) {
                Ok(()) => match out.write_all(&bytes) {
                    Ok(()) => add(&metrics.tx_bytes, bytes.len()),
                    Err(e) => {
                        tracing::debug!("virtio-console: writing the output: {e}");
                        add(&metrics.output_errors, 1);
                    }
                },
                Err(e) => {
                    tracing::debug!("virtio-console: transmit chain refused: {e}");
                    add(&metrics.tx_errors, 1);
                }
            }
            0
        });
        if let Err(e) = out.flush() {
            tracing::debug!("virtio-console: flushing the output: {e}");
            add(&metrics.output_errors, 1);
        }
        drop(out);
        match result {
            Ok(true) => self.interrupt.notify_queue(tx.index),
            Ok(false) => {}
            Err(e) => self.ring_failed(&e, ops),
        }
    }
}

impl MutEventSubscriber for ConsoleHandler {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            RX_KICK => {
                if let Some(q) = &self.rx {
                    let _ = q.kick.read();
                }
                self.process_input(ops, false);
            }
            TX_KICK => {
                if let Some(q) = &self.tx {
                    let _ = q.kick.read();
                }
                if !self.broken {
                    self.process_output(ops);
                }
            }
            INPUT_READY => {
                let set = events.event_set();
                // A hang-up with data still readable is read first; a bare
                // error or hang-up ends the input.
                if !set.contains(EventSet::IN)
                    && set.intersects(EventSet::ERROR | EventSet::HANG_UP)
                {
                    self.input_done = true;
                }
                self.process_input(ops, true);
            }
            other => tracing::debug!("virtio-console: unexpected event {other}"),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (q, data) in [(&self.rx, RX_KICK), (&self.tx, TX_KICK)] {
            if let Some(q) = q {
                if let Err(e) = ops.add(Events::with_data(&q.kick, data, EventSet::IN)) {
                    tracing::error!("virtio-console: cannot watch a queue: {e:?}");
                }
            }
        }
        // Buffers the driver placed before activation are taken now.
        self.process_input(ops, false);
    }
}
