//! Interrupt delivery for a virtio-pci function: MSI-X vectors chosen by
//! the driver per queue and for configuration changes, plus the ISR
//! status register the driver reads (and clears) to learn why.

use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::Mutex;

use pci::Msix;

use crate::device::VirtioInterrupt;

/// "No vector" in the vector registers.
pub const NO_VECTOR: u16 = 0xffff;
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;
/// Device status bit: the device needs a reset.
pub const STATUS_NEEDS_RESET: u8 = 64;
/// Device status bit: the driver is ready and the device live.
pub const STATUS_DRIVER_OK: u8 = 4;

/// State shared by the transport (vCPU threads) and the device's worker.
pub struct PciInterrupt {
    pub(crate) msix: Mutex<Msix>,
    pub(crate) isr: AtomicU8,
    pub(crate) status: AtomicU8,
    pub(crate) config_generation: AtomicU8,
    pub(crate) config_vector: AtomicU16,
    pub(crate) queue_vectors: Vec<AtomicU16>,
}

impl PciInterrupt {
    pub(crate) fn new(msix: Msix, num_queues: usize) -> Self {
        Self {
            msix: Mutex::new(msix),
            isr: AtomicU8::new(0),
            status: AtomicU8::new(0),
            config_generation: AtomicU8::new(0),
            config_vector: AtomicU16::new(NO_VECTOR),
            queue_vectors: (0..num_queues).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
        }
    }

    pub(crate) fn msix(&self) -> std::sync::MutexGuard<'_, Msix> {
        self.msix.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn raise(&self, vector: u16) {
        if vector != NO_VECTOR {
            self.msix().trigger(vector);
        }
    }

    /// Read and clear the ISR, as a driver read of it does.
    pub(crate) fn take_isr(&self) -> u8 {
        self.isr.swap(0, Ordering::AcqRel)
    }
}

impl VirtioInterrupt for PciInterrupt {
    fn notify_queue(&self, queue: u16) {
        self.isr.fetch_or(ISR_QUEUE, Ordering::AcqRel);
        if let Some(v) = self.queue_vectors.get(usize::from(queue)) {
            self.raise(v.load(Ordering::Acquire));
        }
    }

    fn notify_config(&self) {
        self.config_generation.fetch_add(1, Ordering::AcqRel);
        self.isr.fetch_or(ISR_CONFIG, Ordering::AcqRel);
        self.raise(self.config_vector.load(Ordering::Acquire));
    }

    fn set_needs_reset(&self) {
        let status = self.status.load(Ordering::Acquire);
        if status & STATUS_DRIVER_OK != 0 && status & STATUS_NEEDS_RESET == 0 {
            self.status.fetch_or(STATUS_NEEDS_RESET, Ordering::AcqRel);
            tracing::warn!("virtio device needs reset");
            self.notify_config();
        }
    }
}
