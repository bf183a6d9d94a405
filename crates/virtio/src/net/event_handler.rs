//! The net worker for one queue pair (and, on the first pair's worker,
//! the control queue): wakes on queue kicks and TAP readiness, moves
//! frames between the TAP and the guest's rings.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_net::{VIRTIO_NET_ERR, VIRTIO_NET_OK};
use virtio_queue::QueueT;
use vmm_sys_util::epoll::EventSet;

use super::device::TapQueues;
use super::metrics::{add, NetMetrics};
use super::request::{self, CtrlCommand, CtrlRequest, RxBuffer, TxFrame, NET_HDR_LEN};
use crate::device::{ActiveQueue, GuestMemory, VirtioInterrupt};
use crate::queue::{self, RingError};

const RX_KICK: u32 = 0;
const TX_KICK: u32 = 1;
const CTRL_KICK: u32 = 2;
const TAP_READY: u32 = 3;

/// Frames received per wake-up before yielding to the pair's other work
/// (the TAP stays watched, so the loop comes straight back).
const RX_BURST: usize = 256;

/// How received frames are laid into guest buffers.
#[derive(Debug, Clone, Copy)]
pub struct RxMode {
    /// VIRTIO_NET_F_MRG_RXBUF: a frame may span several chains.
    pub mergeable: bool,
    /// With `mergeable`, buffer bytes to hold before reading the TAP, so
    /// the largest frame the TAP may hand over always fits.
    pub need: usize,
}

/// The control queue and what its commands may change.
pub struct CtrlQueue {
    /// The queue.
    pub queue: ActiveQueue,
    /// The queue pairs in use.
    pub mq: MqState,
}

/// Multiqueue as the control queue sees it.
pub struct MqState {
    /// VIRTIO_NET_F_MQ was negotiated.
    pub negotiated: bool,
    /// Queue pairs the device offers.
    pub max_pairs: u16,
    /// Queue pairs in use: 1 until the driver sets more.
    pub pairs: u16,
    /// The TAP queues to attach and detach as pairs come and go.
    pub tap_queues: TapQueues,
}

impl MqState {
    /// VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET `n`: whether it is allowed and the
    /// TAP's queues now follow it.
    fn set_pairs(&mut self, n: u16) -> bool {
        if !self.negotiated || !(1..=self.max_pairs).contains(&n) {
            return false;
        }
        match self.tap_queues.use_pairs(usize::from(n)) {
            Ok(()) => {
                tracing::debug!("virtio-net: {n} queue pairs in use");
                self.pairs = n;
                true
            }
            Err(e) => {
                tracing::warn!("virtio-net: cannot use {n} queue pairs: {e}");
                if let Err(e) = self.tap_queues.use_pairs(usize::from(self.pairs)) {
                    tracing::warn!("virtio-net: restoring {} queue pairs: {e}", self.pairs);
                }
                false
            }
        }
    }
}

/// Whether `count` stashed buffers of `bytes` in all can take a frame.
fn enough(mode: RxMode, count: usize, bytes: usize) -> bool {
    if mode.mergeable {
        bytes >= mode.need
    } else {
        count > 0
    }
}

/// The state one worker thread owns.
pub struct NetHandler {
    mem: GuestMemory,
    interrupt: Arc<dyn VirtioInterrupt>,
    metrics: Arc<NetMetrics>,
    rx: Option<ActiveQueue>,
    tx: Option<ActiveQueue>,
    ctrl: Option<CtrlQueue>,
    tap: OwnedFd,
    mode: RxMode,
    /// Receive buffers popped from the ring and not yet filled.
    stash: VecDeque<RxBuffer>,
    stash_bytes: usize,
    stash_segments: usize,
    tap_watched: bool,
    /// A ring failed: the device awaits a reset and serves nothing.
    broken: bool,
}

/// The queues and backend one worker serves.
pub struct PairQueues {
    /// The receive queue, if enabled.
    pub rx: Option<ActiveQueue>,
    /// The transmit queue, if enabled.
    pub tx: Option<ActiveQueue>,
    /// The control queue, on the first pair's worker.
    pub ctrl: Option<CtrlQueue>,
    /// This pair's TAP descriptor.
    pub tap: OwnedFd,
}

impl NetHandler {
    /// A worker's state for `queues`.
    pub fn new(
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        metrics: Arc<NetMetrics>,
        queues: PairQueues,
        mode: RxMode,
    ) -> Self {
        Self {
            mem,
            interrupt,
            metrics,
            rx: queues.rx,
            tx: queues.tx,
            ctrl: queues.ctrl,
            tap: queues.tap,
            mode,
            stash: VecDeque::new(),
            stash_bytes: 0,
            stash_segments: 0,
            tap_watched: false,
            broken: false,
        }
    }

    fn watch_tap(&mut self, ops: &mut EventOps, on: bool) {
        if on == self.tap_watched {
            return;
        }
        let events = Events::with_data(&self.tap, TAP_READY, EventSet::IN);
        let result = if on {
            ops.add(events)
        } else {
            ops.remove(events)
        };
        match result {
            Ok(()) => self.tap_watched = on,
            Err(e) => tracing::error!("virtio-net: cannot change the TAP watch: {e:?}"),
        }
    }

    fn ring_failed(&mut self, e: &RingError, ops: &mut EventOps) {
        tracing::warn!("virtio-net: {e}");
        self.broken = true;
        self.watch_tap(ops, false);
        self.interrupt.set_needs_reset();
    }

    /// Pop receive chains until a frame surely fits. Returns whether it
    /// does; when not, the driver's next refill kicks the queue.
    /// Malformed chains are returned at once with length 0.
    fn fill_stash(&mut self, refused: &mut bool) -> Result<bool, RingError> {
        let Some(rx) = self.rx.as_mut() else {
            return Ok(false);
        };
        loop {
            if enough(self.mode, self.stash.len(), self.stash_bytes) {
                return Ok(true);
            }
            if self.stash_segments >= request::MAX_SEGMENTS {
                // A driver offering only tiny buffers gets what fits.
                return Ok(!self.stash.is_empty());
            }
            let Some(chain) = queue::pop(&mut rx.queue, &self.mem)? else {
                if rx.queue.enable_notification(&self.mem)? {
                    continue;
                }
                return Ok(false);
            };
            let head = chain.head_index();
            match RxBuffer::parse(chain) {
                Ok(buf) => {
                    self.stash_bytes += buf.capacity();
                    self.stash_segments += buf.segment_count();
                    self.stash.push_back(buf);
                }
                Err(e) => {
                    tracing::debug!("virtio-net: receive chain refused: {e}");
                    add(&self.metrics.rx_errors, 1);
                    rx.queue.add_used(&self.mem, head, 0)?;
                    *refused = true;
                }
            }
        }
    }

    /// Publish a frame of `n` bytes (header included) just read into the
    /// front of the stash.
    fn deliver(&mut self, n: usize) -> Result<(), RingError> {
        // The buffers the frame fills: as many as it spans when mergeable,
        // else the first (which readv was given alone).
        let count = if self.mode.mergeable {
            let mut left = n;
            self.stash
                .iter()
                .take_while(|b| {
                    let more = left > 0;
                    left = left.saturating_sub(b.capacity());
                    more
                })
                .count()
        } else {
            usize::from(!self.stash.is_empty())
        };
        let Some(rx) = self.rx.as_mut() else {
            return Ok(());
        };
        if let Some(first) = self.stash.front().filter(|_| count > 0) {
            // The TAP leaves num_buffers alone; the driver needs it. The
            // stash never holds more than a queue's worth of buffers.
            first.set_num_buffers(&self.mem, u16::try_from(count).unwrap_or(u16::MAX));
        }
        let mut left = n;
        for _ in 0..count {
            let Some(buf) = self.stash.pop_front() else {
                break;
            };
            self.stash_bytes -= buf.capacity();
            self.stash_segments -= buf.segment_count();
            let len = buf.capacity().min(left);
            left -= len;
            rx.queue
                .add_used(&self.mem, buf.head, u32::try_from(len).unwrap_or(0))?;
        }
        add(&self.metrics.rx_frames, 1);
        add(&self.metrics.rx_bytes, n.saturating_sub(NET_HDR_LEN));
        Ok(())
    }

    fn process_rx(&mut self, ops: &mut EventOps) {
        if self.broken || self.rx.is_none() {
            self.watch_tap(ops, false);
            return;
        }
        let mut used = false;
        let mut watch = true;
        for _ in 0..RX_BURST {
            match self.fill_stash(&mut used) {
                Ok(true) => {}
                Ok(false) => {
                    add(&self.metrics.rx_no_buffers, 1);
                    watch = false;
                    break;
                }
                Err(e) => return self.ring_failed(&e, ops),
            }
            let buffers = if self.mode.mergeable {
                self.stash.len()
            } else {
                1
            };
            match request::read_frame(&self.mem, self.tap.as_fd(), self.stash.iter().take(buffers))
            {
                Ok(n) if n >= NET_HDR_LEN => {
                    if let Err(e) = self.deliver(n) {
                        return self.ring_failed(&e, ops);
                    }
                    used = true;
                }
                Ok(n) => {
                    tracing::warn!("virtio-net: TAP read of {n} bytes, shorter than a header");
                    watch = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // Not retried until the next kick, so a dead TAP
                    // cannot spin the worker.
                    tracing::warn!("virtio-net: reading the TAP: {e}");
                    watch = false;
                    break;
                }
            }
        }
        self.watch_tap(ops, watch);
        self.notify_if_needed(used, |h| h.rx.as_mut());
    }

    fn process_tx(&mut self, ops: &mut EventOps) {
        let Some(tx) = self.tx.as_mut() else { return };
        let (mem, tap, metrics) = (&self.mem, self.tap.as_fd(), &self.metrics);
        let (interrupt, index) = (&self.interrupt, tx.index);
        let notify = || interrupt.notify_queue(index);
        let result =
            queue::drain_polling(&mut tx.queue, mem, queue::poll_budget(), notify, |chain| {
                match TxFrame::parse(chain) {
                    Ok(frame) => match frame.write_to(mem, tap) {
                        Ok(_) => {
                            add(&metrics.tx_frames, 1);
                            add(&metrics.tx_bytes, frame.packet_len() - NET_HDR_LEN);
                        }
                        Err(e) => {
                            tracing::debug!("virtio-net: the TAP refused a frame: {e}");
                            add(&metrics.tx_dropped, 1);
                        }
                    },
                    Err(e) => {
                        tracing::debug!("virtio-net: transmit chain refused: {e}");
                        add(&metrics.tx_errors, 1);
                    }
                }
                // The device writes nothing into transmit buffers.
                0
            });
        if let Err(e) = result {
            self.ring_failed(&e, ops);
        }
    }

    fn process_ctrl(&mut self, ops: &mut EventOps) {
        let Some(ctrl) = self.ctrl.as_mut() else {
            return;
        };
        let (mem, metrics) = (&self.mem, &self.metrics);
        let CtrlQueue {
            queue: ctrl_queue,
            mq,
        } = ctrl;
        let result = queue::drain(&mut ctrl_queue.queue, mem, |chain| {
            add(&metrics.ctrl_requests, 1);
            let req = match CtrlRequest::parse(chain) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("virtio-net: control chain refused: {e}");
                    add(&metrics.ctrl_errors, 1);
                    return 0;
                }
            };
            let ok = match req.command {
                CtrlCommand::SetQueuePairs(n) => mq.set_pairs(n),
                CtrlCommand::Unsupported { class, command } => {
                    tracing::debug!("virtio-net: unsupported control command {class}/{command}");
                    false
                }
            };
            if !ok {
                add(&metrics.ctrl_errors, 1);
            }
            let status = if ok { VIRTIO_NET_OK } else { VIRTIO_NET_ERR };
            u32::from(req.complete(mem, u8::try_from(status).unwrap_or(1)))
        });
        match result {
            Ok(true) => self.interrupt.notify_queue(ctrl_queue.index),
            Ok(false) => {}
            Err(e) => self.ring_failed(&e, ops),
        }
    }

    fn notify_if_needed(
        &mut self,
        used: bool,
        queue: impl FnOnce(&mut Self) -> Option<&mut ActiveQueue>,
    ) {
        if !used {
            return;
        }
        let mem = self.mem.clone();
        let interrupt = self.interrupt.clone();
        let Some(q) = queue(self) else { return };
        match q.queue.needs_notification(&mem) {
            Ok(true) => interrupt.notify_queue(q.index),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("virtio-net: {e}");
                interrupt.set_needs_reset();
            }
        }
    }
}

impl MutEventSubscriber for NetHandler {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let kick = |q: &Option<ActiveQueue>| {
            if let Some(q) = q {
                let _ = q.kick.read();
            }
        };
        match events.data() {
            RX_KICK => {
                kick(&self.rx);
                self.process_rx(ops);
            }
            TX_KICK => {
                kick(&self.tx);
                if !self.broken {
                    self.process_tx(ops);
                }
            }
            CTRL_KICK => {
                if let Some(c) = &self.ctrl {
                    let _ = c.queue.kick.read();
                }
                if !self.broken {
                    self.process_ctrl(ops);
                }
            }
            TAP_READY => {
                if events
                    .event_set()
                    .intersects(EventSet::ERROR | EventSet::HANG_UP)
                {
                    tracing::warn!("virtio-net: the TAP reported an error; receive paused");
                    self.watch_tap(ops, false);
                    return;
                }
                self.process_rx(ops);
            }
            other => tracing::debug!("virtio-net: unexpected event {other}"),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let mut watch = |fd: Option<&vmm_sys_util::eventfd::EventFd>, data| {
            if let Some(fd) = fd {
                if let Err(e) = ops.add(Events::with_data(fd, data, EventSet::IN)) {
                    tracing::error!("virtio-net: cannot watch a queue: {e:?}");
                }
            }
        };
        watch(self.rx.as_ref().map(|q| &q.kick), RX_KICK);
        watch(self.tx.as_ref().map(|q| &q.kick), TX_KICK);
        watch(self.ctrl.as_ref().map(|c| &c.queue.kick), CTRL_KICK);
        if self.rx.is_some() {
            self.watch_tap(ops, true);
        }
    }
}
