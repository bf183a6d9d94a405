//! A `Transport` wrapper for the `msix` test: gives a queue its MSI-X
//! vector the way Linux does (select the queue, write queue_msix_vector,
//! read it back, all before the queue is enabled), and hides
//! VIRTIO_RING_F_EVENT_IDX from the driver.
//!
//! Why hide EVENT_IDX: virtio-drivers polls. When the device has published
//! a used buffer, the driver may see it, pop it and move `used_event` past
//! it before the device has read `used_event` to decide whether to
//! interrupt; the device then rightly sees that the driver wants no
//! interrupt for that buffer (virtio 1.2, 2.7.10) and raises none. Seen
//! here: whether a request interrupts became a race the guest lost now
//! and then. Without EVENT_IDX every used buffer interrupts.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{PhysAddr, Result};
use zerocopy::{FromBytes, Immutable, IntoBytes};

const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// Offsets in the common configuration (virtio 1.2, 4.1.4.3).
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;

pub struct Vectored<T> {
    inner: T,
    /// The common configuration's address.
    common: u64,
    /// The queue to give a vector and the vector (MSI-X table entry).
    queue: u16,
    vector: u16,
}

/// What queue_msix_vector read back after the last write (NOT_WRITTEN
/// before one): the driver owns the transport by then, so it is kept here.
static READ_BACK: AtomicU32 = AtomicU32::new(NOT_WRITTEN);
const NOT_WRITTEN: u32 = u32::MAX;

/// The vector register's value right after the wrapper set it, if it did.
pub fn read_back() -> Option<u16> {
    u16::try_from(READ_BACK.load(Ordering::Relaxed)).ok()
}

impl<T> Vectored<T> {
    pub fn new(inner: T, common: u64, queue: u16, vector: u16) -> Self {
        READ_BACK.store(NOT_WRITTEN, Ordering::Relaxed);
        Self {
            inner,
            common,
            queue,
            vector,
        }
    }
}

impl<T: Transport> Transport for Vectored<T> {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }

    fn read_device_features(&mut self) -> u64 {
        self.inner.read_device_features() & !VIRTIO_RING_F_EVENT_IDX
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        self.inner.write_driver_features(driver_features)
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }

    fn notify(&mut self, queue: u16) {
        self.inner.notify(queue)
    }

    fn get_status(&self) -> DeviceStatus {
        self.inner.get_status()
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status)
    }

    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.inner.set_guest_page_size(guest_page_size)
    }

    fn requires_legacy_layout(&self) -> bool {
        self.inner.requires_legacy_layout()
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        if queue == self.queue {
            // SAFETY: the common configuration lies in the function's BAR,
            // identity-mapped below 4 GiB.
            unsafe {
                write_volatile((self.common + QUEUE_SELECT) as *mut u16, queue);
                write_volatile((self.common + QUEUE_MSIX_VECTOR) as *mut u16, self.vector);
                let got = read_volatile((self.common + QUEUE_MSIX_VECTOR) as *const u16);
                READ_BACK.store(u32::from(got), Ordering::Relaxed);
            }
        }
        self.inner
            .queue_set(queue, size, descriptors, driver_area, device_area)
    }

    fn queue_unset(&mut self, queue: u16) {
        self.inner.queue_unset(queue)
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }

    fn read_config_generation(&self) -> u32 {
        self.inner.read_config_generation()
    }

    fn read_config_space<C: FromBytes + IntoBytes>(&self, offset: usize) -> Result<C> {
        self.inner.read_config_space(offset)
    }

    fn write_config_space<C: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: C,
    ) -> Result<()> {
        self.inner.write_config_space(offset, value)
    }
}
