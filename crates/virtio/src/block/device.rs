//! The virtio-blk device: its configuration space, features and queues.

use std::sync::Arc;

use block::DiskImage;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ,
    VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;

use super::event_handler::{BlockHandler, ErrorHandling};
use super::metrics::BlockMetrics;
use super::policy::{ErrorPolicy, StopNotifier};
use super::request::{MAX_SEGMENTS, MAX_TRANSFER, SECTOR_SIZE};
use crate::device::{ActivateContext, ActivateError, VirtioDevice};
use crate::worker::Worker;

/// Descriptors per queue.
const QUEUE_SIZE: u16 = 256;
/// Most data segments per request we announce (seg_max): the queue size
/// minus header and status.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Size of `struct virtio_blk_config` up to write_zeroes_may_unmap.
const CONFIG_LEN: usize = 60;
/// Most queues a disk may have.
pub const MAX_QUEUES: u16 = 16;

/// How a disk is set up.
pub struct BlockConfig {
    /// The image.
    pub disk: Arc<dyn DiskImage>,
    /// Device serial returned by GET_ID (at most 20 bytes are used).
    pub serial: String,
    /// Request queues (1 to 16; more are clamped).
    pub queues: u16,
    /// Host threads doing the disk I/O (0: the block layer's default).
    pub io_workers: usize,
    /// What a failed request does.
    pub error_policy: ErrorPolicy,
    /// Told when a request is held by a `stop` policy; without it, such a
    /// request is reported to the guest instead (nothing would resume).
    pub on_stop: Option<StopNotifier>,
    /// I/O limits (`iotune`).
    pub limits: super::IoLimits,
}

/// A virtio block device.
pub struct Block {
    disk: Arc<dyn DiskImage>,
    serial: [u8; 20],
    queue_sizes: Vec<u16>,
    io_workers: usize,
    metrics: Arc<BlockMetrics>,
    error_policy: ErrorPolicy,
    on_stop: Option<StopNotifier>,
    limits: super::IoLimits,
    /// The running worker's retry eventfd: held requests go again when
    /// the device resumes.
    retry: Option<vmm_sys_util::eventfd::EventFd>,
    worker: Option<Worker>,
    /// Host CPUs for the device's threads (its I/O thread's pin).
    io_cpus: Option<Arc<[usize]>>,
}

impl Block {
    /// A device over `config.disk`. Queue counts outside 1..=16 are clamped.
    pub fn new(config: BlockConfig) -> Self {
        let mut serial = [0u8; 20];
        let bytes = config.serial.as_bytes();
        let n = bytes.len().min(serial.len());
        serial[..n].copy_from_slice(&bytes[..n]);
        let queues = config.queues.clamp(1, MAX_QUEUES);
        Self {
            disk: config.disk,
            serial,
            queue_sizes: vec![QUEUE_SIZE; usize::from(queues)],
            io_workers: config.io_workers,
            metrics: Arc::new(BlockMetrics::default()),
            error_policy: if config.on_stop.is_some() {
                config.error_policy
            } else {
                report_instead_of_stop(config.error_policy)
            },
            on_stop: config.on_stop,
            limits: config.limits,
            retry: None,
            worker: None,
            io_cpus: None,
        }
    }

    /// Run the device's threads (its worker and its disk's I/O threads) on
    /// `cpus` from its next activation on, as an I/O thread pinned there
    /// (libvirt's `iothreadpin`); `None` leaves them with the emulator's.
    pub fn set_io_cpus(&mut self, cpus: Option<Arc<[usize]>>) {
        self.io_cpus = cpus;
    }

    fn config_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        let sectors = self.disk.size() / SECTOR_SIZE;
        c[0..8].copy_from_slice(&sectors.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&u32::try_from(SECTOR_SIZE).unwrap_or(512).to_le_bytes());
        // writeback: the guest must flush for durability.
        c[32] = 1;
        let queues = u16::try_from(self.queue_sizes.len()).unwrap_or(1);
        c[34..36].copy_from_slice(&queues.to_le_bytes());
        let max_sectors = u32::try_from(MAX_TRANSFER / SECTOR_SIZE).unwrap_or(u32::MAX);
        c[36..40].copy_from_slice(&max_sectors.to_le_bytes()); // max_discard_sectors
        c[40..44].copy_from_slice(&MAX_SEGMENTS.to_le_bytes()); // max_discard_seg
        c[44..48].copy_from_slice(&1u32.to_le_bytes()); // discard_sector_alignment
        c[48..52].copy_from_slice(&max_sectors.to_le_bytes()); // max_write_zeroes_sectors
        c[52..56].copy_from_slice(&MAX_SEGMENTS.to_le_bytes()); // max_write_zeroes_seg
        c[56] = 1; // write_zeroes_may_unmap
        c
    }
}

/// `stop` and `enospc` need someone to resume the VM; without one they
/// report, as the default does.
fn report_instead_of_stop(p: ErrorPolicy) -> ErrorPolicy {
    let keep = |a: super::ErrorAction| {
        if a.may_stop() {
            super::ErrorAction::Report
        } else {
            a
        }
    };
    ErrorPolicy {
        write: keep(p.write),
        read: keep(p.read),
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        let mut f = 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            | 1 << VIRTIO_BLK_F_FLUSH
            | 1 << VIRTIO_BLK_F_MQ;
        if self.disk.read_only() {
            f |= 1 << VIRTIO_BLK_F_RO;
        } else {
            f |= 1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            *b = at.and_then(|o| config.get(o)).copied().unwrap_or(0);
        }
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.is_empty() {
            return Err(ActivateError::BadQueues("no queue is enabled".into()));
        }
        let host = |what| move |source| ActivateError::Host { what, source };
        // The worker and the disk's I/O threads start on the I/O thread's CPUs.
        let _placement = confine::place_spawned(self.io_cpus.clone());
        let retry = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK)
            .map_err(host("virtio-blk retry eventfd"))?;
        let errors = ErrorHandling {
            policy: self.error_policy,
            on_stop: self.on_stop.clone(),
            retry: retry
                .try_clone()
                .map_err(host("virtio-blk retry eventfd"))?,
            limits: self.limits,
        };
        let handler = BlockHandler::new(
            self.disk.clone(),
            self.io_workers,
            self.serial,
            ctx,
            self.metrics.clone(),
            errors,
        )?;
        self.worker = Some(Worker::spawn("virtio-blk", handler)?);
        self.retry = Some(retry);
        Ok(())
    }

    fn reset(&mut self) {
        // Dropping the worker drops its handler, which waits for every
        // request in flight before guest memory can go away (held ones are
        // not in flight: the driver that reset the device gave them up).
        self.worker = None;
        self.retry = None;
    }

    fn pause(&mut self) -> bool {
        self.worker.as_ref().is_none_or(Worker::pause)
    }

    fn resume(&mut self) {
        if let Some(w) = &self.worker {
            w.resume();
        }
        if let Some(r) = &self.retry {
            let _ = r.write(1);
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.metrics.snapshot()
    }
}
