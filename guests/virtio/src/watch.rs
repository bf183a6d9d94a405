//! A `Transport` wrapper that bounds virtio-drivers' blocking requests.
//!
//! The crate's blocking calls (blk flush/read/write, console send, rng read)
//! notify the device and then spin on the used ring with no limit. When this
//! wrapper is told which queue carries such requests, its `notify` waits,
//! with a deadline, until the device has used everything made available on
//! that queue; on timeout it panics (the guest prints `virtio: panic ...`
//! and powers off) instead of spinning forever. Queues the guest polls
//! itself (net) are not watched.

use crate::pci::NotifyLayout;
use crate::time::wait_until;
use core::ptr::{read_volatile, write_volatile};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{PhysAddr, Result};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// How long one request may take before the device is declared stuck.
pub const REQUEST_TIMEOUT_MS: u64 = 5000;

/// Queues whose doorbell addresses are remembered.
const MAX_QUEUES: usize = 8;

pub struct Watched {
    inner: PciTransport,
    layout: Option<NotifyLayout>,
    /// Each queue's doorbell address, read once when the queue is set up.
    doorbells: [Option<u64>; MAX_QUEUES],
    name: &'static str,
    watched_queue: Option<u16>,
    /// (available ring, used ring) of the watched queue, once set up.
    rings: Option<(PhysAddr, PhysAddr)>,
}

impl Watched {
    pub fn new(
        inner: PciTransport,
        name: &'static str,
        watched_queue: Option<u16>,
        layout: Option<NotifyLayout>,
    ) -> Self {
        Self {
            inner,
            layout,
            doorbells: [None; MAX_QUEUES],
            name,
            watched_queue,
            rings: None,
        }
    }
}

/// The `idx` field of an available or used ring (a u16 after the flags).
fn ring_idx(ring: PhysAddr) -> u16 {
    // SAFETY: the ring lives in DMA memory this guest allocated; the device
    // updates it concurrently, hence the volatile read.
    unsafe { read_volatile((ring + 2) as *const u16) }
}

impl Transport for Watched {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }

    fn read_device_features(&mut self) -> u64 {
        self.inner.read_device_features()
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        self.inner.write_driver_features(driver_features)
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }

    fn notify(&mut self, queue: u16) {
        match self.doorbells.get(usize::from(queue)).copied().flatten() {
            // SAFETY: the doorbell lies in the function's BAR, which is
            // mapped; writing the queue index is what the spec asks.
            Some(addr) => unsafe { write_volatile(addr as *mut u16, queue) },
            None => self.inner.notify(queue),
        }
        if self.watched_queue != Some(queue) {
            return;
        }
        let Some((avail, used)) = self.rings else {
            return;
        };
        let done = wait_until(REQUEST_TIMEOUT_MS, || ring_idx(used) == ring_idx(avail));
        if !done {
            panic!(
                "{}: no completion on queue {} within {} ms (avail idx {}, used idx {})",
                self.name,
                queue,
                REQUEST_TIMEOUT_MS,
                ring_idx(avail),
                ring_idx(used)
            );
        }
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
        if self.watched_queue == Some(queue) {
            self.rings = Some((driver_area, device_area));
        }
        self.inner
            .queue_set(queue, size, descriptors, driver_area, device_area);
        // queue_set leaves the queue selected: its notify offset is current.
        if let (Some(layout), Some(slot)) =
            (self.layout, self.doorbells.get_mut(usize::from(queue)))
        {
            // SAFETY: the common configuration lies in the function's BAR.
            let off = unsafe { read_volatile((layout.common + 0x1e) as *const u16) };
            *slot = Some(layout.notify + u64::from(off) * u64::from(layout.multiplier));
        }
    }

    fn queue_unset(&mut self, queue: u16) {
        if let Some(slot) = self.doorbells.get_mut(usize::from(queue)) {
            *slot = None;
        }
        if self.watched_queue == Some(queue) {
            self.rings = None;
        }
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

    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> Result<T> {
        self.inner.read_config_space(offset)
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> Result<()> {
        self.inner.write_config_space(offset, value)
    }
}
