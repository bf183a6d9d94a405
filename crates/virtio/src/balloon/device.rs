//! The virtio-balloon device: its features, its configuration space
//! (`num_pages` set by the host, `actual` written by the guest) and the
//! control handle the VMM uses to set the target and read statistics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use vmm_sys_util::eventfd::EventFd;

use super::event_handler::{BalloonHandler, QueueRoles};
use super::metrics::BalloonMetrics;
use super::ram::GuestRam;
use crate::device::{ActivateContext, ActivateError, VirtioDevice, VirtioInterrupt};
use crate::worker::Worker;

/// The virtio device ID of a memory balloon.
pub const VIRTIO_ID_BALLOON: u32 = 5;
/// The guest's OOM path may take pages back out of the balloon.
pub const VIRTIO_BALLOON_F_DEFLATE_ON_OOM: u32 = 2;
/// The statistics queue exists.
pub const VIRTIO_BALLOON_F_STATS_VQ: u32 = 1;
/// The free page reporting queue exists.
pub const VIRTIO_BALLOON_F_REPORTING: u32 = 5;

/// Queue size of every balloon queue.
const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 4] = [QUEUE_SIZE; 4];
/// num_pages (u32), actual (u32); the fields after them belong to
/// features Vireo does not offer and read as zero.
const CONFIG_LEN: usize = 8;
const ACTUAL_OFFSET: usize = 4;

/// Statistics tags the spec defines (5.5.6.3); others are ignored.
pub const KNOWN_STATS: u16 = 10;

/// How the balloon starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BalloonConfig {
    /// The balloon's initial size in 4 KiB pages (what the guest is asked
    /// to give up).
    pub num_pages: u32,
    /// Offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM.
    pub deflate_on_oom: bool,
    /// Offer VIRTIO_BALLOON_F_REPORTING (free page reporting).
    pub free_page_reporting: bool,
    /// Seconds between requests for fresh statistics; 0: never ask.
    pub stats_period: u32,
}

/// The latest statistics the guest sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalloonStats {
    /// Tag to value, as the guest reported them (bytes for memory sizes,
    /// counts for events); only the spec's tags.
    pub values: BTreeMap<u16, u64>,
    /// When they arrived.
    pub last_update: Option<SystemTime>,
}

/// What the device, its worker and the VMM share.
pub(super) struct State {
    pub num_pages: u32,
    pub actual: u32,
    pub stats_period: u32,
    pub stats: BalloonStats,
    /// The driver's interrupt while the device is active, for
    /// configuration changes.
    pub interrupt: Option<Arc<dyn VirtioInterrupt>>,
}

pub(super) struct Shared {
    state: Mutex<State>,
    /// Tells the worker the statistics period changed.
    pub period_changed: EventFd,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The VMM's hold on a balloon: set the target, read what the guest did.
#[derive(Clone)]
pub struct BalloonControl {
    shared: Arc<Shared>,
}

impl BalloonControl {
    /// The balloon's target size in 4 KiB pages.
    pub fn num_pages(&self) -> u32 {
        self.shared.lock().num_pages
    }

    /// The pages the guest says it has put in the balloon (its own claim).
    pub fn actual_pages(&self) -> u32 {
        self.shared.lock().actual
    }

    /// Ask the guest for a balloon of `pages` 4 KiB pages; a running
    /// driver gets a configuration-change interrupt.
    pub fn set_num_pages(&self, pages: u32) {
        let mut state = self.shared.lock();
        if state.num_pages == pages {
            return;
        }
        state.num_pages = pages;
        if let Some(interrupt) = state.interrupt.clone() {
            drop(state);
            interrupt.notify_config();
        }
    }

    /// Seconds between requests for statistics (0: never).
    pub fn stats_period(&self) -> u32 {
        self.shared.lock().stats_period
    }

    /// Change the statistics period; takes effect at once.
    pub fn set_stats_period(&self, seconds: u32) {
        self.shared.lock().stats_period = seconds;
        let _ = self.shared.period_changed.write(1);
    }

    /// The latest statistics.
    pub fn stats(&self) -> BalloonStats {
        self.shared.lock().stats.clone()
    }
}

/// A memory balloon.
pub struct Balloon {
    features: u64,
    queues: usize,
    shared: Arc<Shared>,
    metrics: Arc<BalloonMetrics>,
    worker: Option<Worker>,
}

impl Balloon {
    /// A balloon starting as `config` says.
    pub fn new(config: BalloonConfig) -> std::io::Result<Self> {
        let mut features = 1 << VIRTIO_BALLOON_F_STATS_VQ;
        let mut queues = 3;
        if config.deflate_on_oom {
            features |= 1 << VIRTIO_BALLOON_F_DEFLATE_ON_OOM;
        }
        if config.free_page_reporting {
            features |= 1 << VIRTIO_BALLOON_F_REPORTING;
            queues = 4;
        }
        Ok(Self {
            features,
            queues,
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    num_pages: config.num_pages,
                    actual: 0,
                    stats_period: config.stats_period,
                    stats: BalloonStats::default(),
                    interrupt: None,
                }),
                period_changed: EventFd::new(libc::EFD_NONBLOCK)?,
            }),
            metrics: Arc::new(BalloonMetrics::default()),
            worker: None,
        })
    }

    /// The handle the VMM keeps.
    pub fn control(&self) -> BalloonControl {
        BalloonControl {
            shared: self.shared.clone(),
        }
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES[..self.queues]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let mut config = [0u8; CONFIG_LEN];
        {
            let state = self.shared.lock();
            config[..4].copy_from_slice(&state.num_pages.to_le_bytes());
            config[4..].copy_from_slice(&state.actual.to_le_bytes());
        }
        let Some(start) = usize::try_from(offset).ok().filter(|o| *o < CONFIG_LEN) else {
            return;
        };
        let n = (CONFIG_LEN - start).min(data.len());
        data[..n].copy_from_slice(&config[start..start + n]);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` is the driver's to write; bytes of it a write
        // covers change, the rest of the write is ignored.
        let Ok(offset) = usize::try_from(offset) else {
            return;
        };
        let mut state = self.shared.lock();
        let mut actual = state.actual.to_le_bytes();
        for (i, b) in data.iter().enumerate() {
            let Some(at) = offset.checked_add(i) else {
                break;
            };
            if (ACTUAL_OFFSET..ACTUAL_OFFSET + 4).contains(&at) {
                actual[at - ACTUAL_OFFSET] = *b;
            }
        }
        state.actual = u32::from_le_bytes(actual);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let roles = QueueRoles::negotiated(ctx.features);
        let mut handler = BalloonHandler::new(
            ctx.mem.clone(),
            ctx.interrupt.clone(),
            self.metrics.clone(),
            self.shared.clone(),
            GuestRam::new(&ctx.mem),
        )?;
        for q in ctx.queues {
            handler.take_queue(&roles, q);
        }
        handler.check_queues()?;
        self.shared.lock().interrupt = Some(ctx.interrupt);
        self.worker = Some(Worker::spawn("virtio-balloon", handler)?);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
        let mut state = self.shared.lock();
        state.interrupt = None;
        // The driver that held the balloon is gone; its pages are the
        // guest's again.
        state.actual = 0;
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
