//! The virtio-net device: configuration space, features, and activation
//! that hands each queue pair to its own worker thread.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use netvirt::{Offloads, Tap};
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::*;

use super::event_handler::{CtrlQueue, MqState, NetHandler, PairQueues, RxMode};
use super::metrics::{add, NetMetrics};
use super::request::{MAX_FRAME_LEN, NET_HDR_LEN};
use crate::device::{ActivateContext, ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt};
use crate::worker::Worker;

/// Size of each receive and transmit queue.
pub const QUEUE_SIZE: u16 = 256;
/// Size of the control queue.
pub const CTRL_QUEUE_SIZE: u16 = 64;
/// Most queue pairs a device offers (one TAP descriptor and worker each).
pub const MAX_QUEUE_PAIRS: u16 = 16;
/// Ethernet header with a VLAN tag: what a frame adds to the MTU.
const ETH_OVERHEAD: usize = 18;
/// MTU assumed when none is configured.
const DEFAULT_MTU: u16 = 1500;
/// Bytes of configuration space: mac, status, max_virtqueue_pairs, mtu.
const CONFIG_LEN: usize = 12;

/// What a virtio-net device is built from.
pub struct NetConfig {
    /// The host side: one TAP descriptor per queue pair (at least).
    pub tap: Tap,
    /// The guest's MAC address (see [`generate_mac`](super::generate_mac)).
    pub mac: [u8; 6],
    /// Queue pairs offered (1 to [`MAX_QUEUE_PAIRS`]); more than one
    /// offers VIRTIO_NET_F_MQ.
    pub queue_pairs: u16,
    /// MTU advertised to the guest (VIRTIO_NET_F_MTU), if any.
    pub mtu: Option<u16>,
}

/// Why a device could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Queue pairs out of range, or more than the TAP has queues.
    #[error(
        "{pairs} queue pairs requested; 1 to {max} possible (the TAP has {tap_queues} queues)"
    )]
    QueuePairs {
        /// Pairs asked for.
        pairs: u16,
        /// The most allowed.
        max: u16,
        /// Queues the TAP was opened with.
        tap_queues: usize,
    },
    /// An MTU below IPv4's minimum.
    #[error("MTU {0} is below 68")]
    Mtu(u16),
    /// The MAC is multicast (or all zero), which no NIC may have.
    #[error("MAC {0} is not a unicast address")]
    Mac(String),
}

/// The host side of the device's frames.
enum Backend {
    Tap(Tap),
    /// Stand-in descriptors (socket pairs) for unit tests, recording
    /// which queues are attached.
    #[cfg(test)]
    Fds {
        fds: Vec<OwnedFd>,
        attached: Mutex<Vec<bool>>,
    },
}

impl Backend {
    fn supported_offloads(&self) -> Offloads {
        match self {
            Self::Tap(t) => t.supported_offloads(),
            #[cfg(test)]
            Self::Fds { .. } => Offloads::ALL,
        }
    }

    fn set_offloads(&self, o: Offloads) -> Result<(), ActivateError> {
        match self {
            Self::Tap(t) => t.set_offloads(o).map_err(|e| ActivateError::Host {
                what: "TAP offloads",
                source: std::io::Error::other(e.to_string()),
            }),
            #[cfg(test)]
            Self::Fds { .. } => Ok(()),
        }
    }

    fn clone_queues(&self) -> std::io::Result<Vec<OwnedFd>> {
        match self {
            Self::Tap(t) => t.clone_queues(),
            #[cfg(test)]
            Self::Fds { fds, .. } => fds.iter().map(OwnedFd::try_clone).collect(),
        }
    }

    /// The host side's MTU (1500 if it cannot be read).
    fn mtu(&self) -> usize {
        match self {
            Self::Tap(t) => t
                .mtu()
                .ok()
                .and_then(|m| usize::try_from(m).ok())
                .unwrap_or(usize::from(DEFAULT_MTU)),
            #[cfg(test)]
            Self::Fds { .. } => usize::from(DEFAULT_MTU),
        }
    }

    fn num_queues(&self) -> usize {
        match self {
            Self::Tap(t) => t.num_queues(),
            #[cfg(test)]
            Self::Fds { fds, .. } => fds.len(),
        }
    }

    fn set_queue_enabled(&self, index: usize, enabled: bool) -> Result<(), netvirt::TapError> {
        match self {
            Self::Tap(t) => t.set_queue_enabled(index, enabled),
            #[cfg(test)]
            Self::Fds { attached, .. } => {
                let mut attached = attached.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(a) = attached.get_mut(index) {
                    *a = enabled;
                }
                Ok(())
            }
        }
    }
}

/// Which of the TAP's queues the kernel hands guest-bound frames to:
/// those of the queue pairs the driver uses. Held by the device and by
/// the control queue, which changes it on VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET.
///
/// A multi-queue TAP spreads frames over its attached queues by flow
/// hash, so a queue whose pair the driver does not use must be detached,
/// or the frames the kernel puts there are never read (virtio 5.1.6.5.5:
/// the device starts with one pair and uses only the pairs the driver
/// sets). Detaching a queue drops the frames already waiting on it, as
/// the kernel does; the flows they belong to move to the queues left.
#[derive(Clone)]
pub struct TapQueues(Arc<Backend>);

impl TapQueues {
    /// Attach the TAP queues of pairs `0..pairs` and detach the rest.
    pub fn use_pairs(&self, pairs: usize) -> Result<(), netvirt::TapError> {
        let total = self.0.num_queues();
        // Attach first, so no moment has fewer queues than before or after.
        for i in 0..pairs.min(total) {
            self.0.set_queue_enabled(i, true)?;
        }
        for i in pairs..total {
            self.0.set_queue_enabled(i, false)?;
        }
        Ok(())
    }

    /// Attach every queue: the state a TAP is opened in.
    fn attach_all(&self) -> Result<(), netvirt::TapError> {
        self.use_pairs(self.0.num_queues())
    }
}

/// Link status shared by the device, its owner and the driver's view.
struct LinkState {
    up: AtomicBool,
    /// Set while the device is active, to tell the driver of changes.
    interrupt: Mutex<Option<Arc<dyn VirtioInterrupt>>>,
}

/// A handle on a device's link status, usable after the device itself
/// has been handed to its transport.
#[derive(Clone)]
pub struct NetLink(Arc<LinkState>);

impl NetLink {
    /// Set the link up or down as the guest sees it (the status field),
    /// telling the driver with a configuration-change interrupt.
    pub fn set_up(&self, up: bool) {
        if self.0.up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        let interrupt = self.0.interrupt.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = interrupt.as_ref() {
            i.notify_config();
        }
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::Acquire)
    }

    fn set_interrupt(&self, interrupt: Option<Arc<dyn VirtioInterrupt>>) {
        *self.0.interrupt.lock().unwrap_or_else(|e| e.into_inner()) = interrupt;
    }
}

/// A virtio network device backed by a TAP.
pub struct Net {
    backend: Arc<Backend>,
    mac: [u8; 6],
    queue_pairs: u16,
    mtu: Option<u16>,
    features: u64,
    queue_sizes: Vec<u16>,
    link: NetLink,
    metrics: Arc<NetMetrics>,
    workers: Vec<Worker>,
}

const fn bit(b: u32) -> u64 {
    1 << b
}

impl Net {
    /// A device over `config.tap`, link up. Offloads are offered as far
    /// as the TAP supports them.
    pub fn new(config: NetConfig) -> Result<Self, NetError> {
        let NetConfig {
            tap,
            mac,
            queue_pairs,
            mtu,
        } = config;
        Self::build(Backend::Tap(tap), mac, queue_pairs, mtu)
    }

    /// A device over stand-in descriptors, one per queue pair.
    #[cfg(test)]
    pub(crate) fn with_fds(fds: Vec<OwnedFd>, mac: [u8; 6], mtu: Option<u16>) -> Self {
        let pairs = u16::try_from(fds.len()).unwrap_or(1);
        let attached = Mutex::new(vec![true; fds.len()]);
        match Self::build(Backend::Fds { fds, attached }, mac, pairs, mtu) {
            Ok(n) => n,
            Err(e) => panic!("test device: {e}"),
        }
    }

    fn build(
        backend: Backend,
        mac: [u8; 6],
        queue_pairs: u16,
        mtu: Option<u16>,
    ) -> Result<Self, NetError> {
        if queue_pairs == 0
            || queue_pairs > MAX_QUEUE_PAIRS
            || usize::from(queue_pairs) > backend.num_queues()
        {
            return Err(NetError::QueuePairs {
                pairs: queue_pairs,
                max: MAX_QUEUE_PAIRS,
                tap_queues: backend.num_queues(),
            });
        }
        if let Some(m) = mtu.filter(|m| *m < 68) {
            return Err(NetError::Mtu(m));
        }
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(NetError::Mac(super::format_mac(&mac)));
        }
        let features = offered_features(backend.supported_offloads(), queue_pairs, mtu);
        let mut queue_sizes = vec![QUEUE_SIZE; usize::from(queue_pairs) * 2];
        queue_sizes.push(CTRL_QUEUE_SIZE);
        Ok(Self {
            backend: Arc::new(backend),
            mac,
            queue_pairs,
            mtu,
            features,
            queue_sizes,
            link: NetLink(Arc::new(LinkState {
                up: AtomicBool::new(true),
                interrupt: Mutex::new(None),
            })),
            metrics: Arc::new(NetMetrics::default()),
            workers: Vec::new(),
        })
    }

    /// Set the link up or down (see [`NetLink::set_up`]).
    pub fn set_link(&self, up: bool) {
        self.link.set_up(up);
    }

    /// A handle to change the link status later, from any thread.
    pub fn link(&self) -> NetLink {
        self.link.clone()
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Which backend queues are attached (the test backend records it).
    #[cfg(test)]
    pub(crate) fn attached_queues(&self) -> Vec<bool> {
        match &*self.backend {
            Backend::Tap(t) => (0..t.num_queues()).map(|i| t.queue_enabled(i)).collect(),
            Backend::Fds { attached, .. } => {
                attached.lock().unwrap_or_else(|e| e.into_inner()).clone()
            }
        }
    }

    fn tap_queues(&self) -> TapQueues {
        TapQueues(self.backend.clone())
    }

    fn config_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        c[0..6].copy_from_slice(&self.mac);
        let status = if self.link.is_up() {
            VIRTIO_NET_S_LINK_UP
        } else {
            0
        };
        c[6..8].copy_from_slice(&u16::try_from(status).unwrap_or(0).to_le_bytes());
        c[8..10].copy_from_slice(&self.queue_pairs.to_le_bytes());
        c[10..12].copy_from_slice(&self.mtu.unwrap_or(0).to_le_bytes());
        c
    }
}

/// The device features offered for a TAP supporting `offloads`.
fn offered_features(offloads: Offloads, queue_pairs: u16, mtu: Option<u16>) -> u64 {
    let mut f = bit(VIRTIO_NET_F_MAC)
        | bit(VIRTIO_NET_F_STATUS)
        | bit(VIRTIO_NET_F_MRG_RXBUF)
        | bit(VIRTIO_NET_F_CTRL_VQ);
    if queue_pairs > 1 {
        f |= bit(VIRTIO_NET_F_MQ);
    }
    if mtu.is_some() {
        f |= bit(VIRTIO_NET_F_MTU);
    }
    if offloads.csum {
        // Frames from the guest go to the TAP with their header; a TAP
        // with vnet headers takes partial checksums and GSO as they are.
        f |= bit(VIRTIO_NET_F_CSUM)
            | bit(VIRTIO_NET_F_HOST_TSO4)
            | bit(VIRTIO_NET_F_HOST_TSO6)
            | bit(VIRTIO_NET_F_HOST_ECN)
            | bit(VIRTIO_NET_F_GUEST_CSUM);
        for (on, b) in [
            (offloads.tso4, VIRTIO_NET_F_GUEST_TSO4),
            (offloads.tso6, VIRTIO_NET_F_GUEST_TSO6),
            (offloads.tso_ecn, VIRTIO_NET_F_GUEST_ECN),
            (offloads.ufo, VIRTIO_NET_F_GUEST_UFO),
            (offloads.ufo, VIRTIO_NET_F_HOST_UFO),
        ] {
            if on {
                f |= bit(b);
            }
        }
    }
    f
}

/// The TAP offloads matching the guest's negotiated receive features.
fn negotiated_offloads(features: u64) -> Offloads {
    let has = |b| features & bit(b) != 0;
    let csum = has(VIRTIO_NET_F_GUEST_CSUM);
    Offloads {
        csum,
        tso4: csum && has(VIRTIO_NET_F_GUEST_TSO4),
        tso6: csum && has(VIRTIO_NET_F_GUEST_TSO6),
        tso_ecn: csum && has(VIRTIO_NET_F_GUEST_ECN),
        ufo: csum && has(VIRTIO_NET_F_GUEST_UFO),
    }
}

/// Queues of one pair being assembled at activation.
#[derive(Default)]
struct PairSlot {
    rx: Option<ActiveQueue>,
    tx: Option<ActiveQueue>,
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let config = self.config_bytes();
        let Some(start) = usize::try_from(offset).ok().filter(|o| *o < CONFIG_LEN) else {
            return;
        };
        let n = (CONFIG_LEN - start).min(data.len());
        data[..n].copy_from_slice(&config[start..start + n]);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Every field is read-only for a modern driver (the MAC is set
        // through the control queue, which this device does not offer).
        tracing::debug!(
            "virtio-net: ignored a {}-byte config write at {offset}",
            data.len()
        );
        add(&self.metrics.config_writes_ignored, 1);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let has = |b| ctx.features & bit(b) != 0;
        let pairs = if has(VIRTIO_NET_F_MQ) {
            self.queue_pairs
        } else {
            1
        };
        let ctrl_index = has(VIRTIO_NET_F_CTRL_VQ).then_some(2 * pairs);
        let offloads = negotiated_offloads(ctx.features);
        self.backend.set_offloads(offloads)?;
        // Without segmentation offloads the TAP hands over nothing longer
        // than its MTU allows (which the host may have raised).
        let frame = if offloads.tso4 || offloads.tso6 || offloads.ufo {
            MAX_FRAME_LEN
        } else {
            let mtu = usize::from(self.mtu.unwrap_or(DEFAULT_MTU)).max(self.backend.mtu());
            (mtu + ETH_OVERHEAD).min(MAX_FRAME_LEN)
        };
        let mode = RxMode {
            mergeable: has(VIRTIO_NET_F_MRG_RXBUF),
            need: NET_HDR_LEN + frame,
        };

        // One pair until the driver sets more (VQ_PAIRS_SET), with or
        // without MQ: the TAP hands frames to pair 0's queue only.
        let tap_queues = self.tap_queues();
        tap_queues.use_pairs(1).map_err(|e| ActivateError::Host {
            what: "TAP queue attachment",
            source: std::io::Error::other(e.to_string()),
        })?;

        let mut slots: Vec<PairSlot> = (0..pairs).map(|_| PairSlot::default()).collect();
        let mut ctrl = None;
        for q in ctx.queues {
            if Some(q.index) == ctrl_index {
                ctrl = Some(CtrlQueue {
                    queue: q,
                    mq: MqState {
                        negotiated: has(VIRTIO_NET_F_MQ),
                        max_pairs: self.queue_pairs,
                        pairs: 1,
                        tap_queues: tap_queues.clone(),
                    },
                });
                continue;
            }
            let pair = usize::from(q.index / 2);
            match slots.get_mut(pair) {
                Some(slot) if q.index % 2 == 0 => slot.rx = Some(q),
                Some(slot) => slot.tx = Some(q),
                None => tracing::debug!("virtio-net: queue {} is not in use", q.index),
            }
        }
        if slots.iter().all(|s| s.rx.is_none() && s.tx.is_none()) {
            return Err(ActivateError::BadQueues(
                "no receive or transmit queue is enabled".into(),
            ));
        }
        let fds = self
            .backend
            .clone_queues()
            .map_err(|source| ActivateError::Host {
                what: "duplicating TAP descriptors",
                source,
            })?;
        let mut workers = Vec::new();
        for (i, (slot, tap)) in slots.into_iter().zip(fds).enumerate() {
            let ctrl = if i == 0 { ctrl.take() } else { None };
            if slot.rx.is_none() && slot.tx.is_none() && ctrl.is_none() {
                continue;
            }
            let queues = PairQueues {
                rx: slot.rx,
                tx: slot.tx,
                ctrl,
                tap,
            };
            let handler = NetHandler::new(
                ctx.mem.clone(),
                ctx.interrupt.clone(),
                self.metrics.clone(),
                queues,
                mode,
            );
            workers.push(Worker::spawn(&format!("virtio-net-q{i}"), handler)?);
        }
        self.workers = workers;
        self.link.set_interrupt(Some(ctx.interrupt));
        Ok(())
    }

    fn reset(&mut self) {
        self.link.set_interrupt(None);
        self.workers.clear();
        // Back to the state the TAP was opened in, so the next activation
        // starts from it.
        if let Err(e) = self.tap_queues().attach_all() {
            tracing::warn!("virtio-net: reattaching the TAP queues: {e}");
        }
    }

    fn pause(&mut self) -> bool {
        // Pause every worker even if one fails, so none is left running.
        let paused: Vec<bool> = self.workers.iter().map(Worker::pause).collect();
        paused.into_iter().all(|ok| ok)
    }

    fn resume(&mut self) {
        for w in &self.workers {
            w.resume();
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.metrics.snapshot()
    }
}
