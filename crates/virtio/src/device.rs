//! The seam between a transport and a device: what every virtio device
//! implements, and what it is handed when the driver starts it.

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Guest memory as devices see it.
pub type GuestMemory = GuestMemoryMmap<()>;

/// How a device interrupts the driver. The transport implements it (MSI-X
/// vectors and the ISR register for virtio-pci).
pub trait VirtioInterrupt: Send + Sync {
    /// Tell the driver queue `queue` has new used buffers.
    fn notify_queue(&self, queue: u16);
    /// Tell the driver the device configuration changed.
    fn notify_config(&self);
    /// The device hit an error it cannot recover from without a reset
    /// (e.g. a corrupt ring): set DEVICE_NEEDS_RESET and tell the driver.
    fn set_needs_reset(&self);
}

/// One queue the driver enabled, ready for the device's worker.
pub struct ActiveQueue {
    /// The queue's index in the device's queue list.
    pub index: u16,
    /// The ring, with the driver's addresses, size and negotiated options.
    pub queue: Queue,
    /// Signalled when the driver notifies (kicks) this queue.
    pub kick: EventFd,
}

/// Everything a device needs to start serving its queues.
pub struct ActivateContext {
    /// Guest memory, where rings and buffers live.
    pub mem: GuestMemory,
    /// How to interrupt the driver.
    pub interrupt: Arc<dyn VirtioInterrupt>,
    /// The enabled queues, in index order.
    pub queues: Vec<ActiveQueue>,
    /// Features both sides agreed on.
    pub features: u64,
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver enabled a set of queues the device cannot work with.
    #[error("unusable queue set: {0}")]
    BadQueues(String),
    /// A host resource (thread, eventfd, backend) failed.
    #[error("{what}: {source}")]
    Host {
        /// What was being set up.
        what: &'static str,
        /// The host error.
        #[source]
        source: std::io::Error,
    },
}

/// A virtio device, independent of its transport.
///
/// The transport owns feature negotiation and queue set-up; the device
/// names what it offers, serves its configuration space, and does its I/O
/// on its own worker thread once activated (never on a vCPU thread).
pub trait VirtioDevice: Send {
    /// The virtio device ID (1 net, 2 block, 3 console, 4 entropy, ...).
    fn device_type(&self) -> u32;
    /// Largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Device-specific feature bits offered (the transport adds its own).
    fn features(&self) -> u64;
    /// Read `data.len()` bytes of device configuration at `offset`.
    /// Bytes past the configuration's end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Driver write to the device configuration. Read-only fields, or
    /// devices with none writable, ignore it.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Start serving `ctx.queues` with the negotiated features.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// Stop the worker and forget the queues, so the driver can start the
    /// device again. Backends (files, TAPs) stay open.
    fn reset(&mut self);
    /// Hold the device's worker(s) between events: it touches neither its
    /// queues nor guest memory until [`VirtioDevice::resume`]. Returns
    /// false if a worker did not comply. Devices without workers have
    /// nothing to hold.
    fn pause(&mut self) -> bool {
        true
    }
    /// Let paused workers go on.
    fn resume(&mut self) {}
    /// Counters for this device, as (name, value) pairs.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}
