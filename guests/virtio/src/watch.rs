//! A `Transport` wrapper that bounds virtio-drivers' blocking requests.
//!
//! The crate's blocking calls (blk flush/read/write, console send, rng read)
//! notify the device and then spin on the used ring with no limit. When this
//! wrapper is told which queue carries such requests, its `notify` waits,
//! with a deadline, until the device has used everything made available on
//! that queue; on timeout it panics (the guest prints `virtio: panic ...`
//! and powers off) instead of spinning forever. Queues the guest polls
//! itself (net) are not watched.
//!
//! A polling driver can also take the doorbells over ([`Doorbells`]):
//! virtio-drivers notifies after every buffer it adds (its EVENT_IDX check
//! asks for a notification whenever the device's `avail_event` is behind,
//! which it nearly always is), and each notification is a VM exit that
//! wakes the device's worker. Deferred, a queue's doorbell is rung at most
//! once per round of the driver's loop, when its available index moved,
//! and only if the device asked for it (the virtio spec's
//! `vring_need_event` rule, as Linux applies it).

use crate::pci::NotifyLayout;
use crate::time::wait_until;
use alloc::rc::Rc;
use core::cell::Cell;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{fence, AtomicU64, Ordering};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{PhysAddr, Result};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// How long one request may take before the device is declared stuck,
/// unless the command line says otherwise (`request-timeout-ms`).
pub const REQUEST_TIMEOUT_MS: u64 = 5000;

/// The bound in force: [`REQUEST_TIMEOUT_MS`] or the command line's.
static REQUEST_TIMEOUT: AtomicU64 = AtomicU64::new(REQUEST_TIMEOUT_MS);

/// Set the bound every request waits for (from the command line).
pub fn set_request_timeout_ms(ms: u64) {
    REQUEST_TIMEOUT.store(ms, Ordering::Relaxed);
}

/// The bound every request waits for.
pub fn request_timeout_ms() -> u64 {
    REQUEST_TIMEOUT.load(Ordering::Relaxed)
}

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
    /// Set by `defer_doorbells`: notifications wait for its `flush`.
    deferred: Option<Rc<Doorbells>>,
}

/// VIRTIO_RING_F_EVENT_IDX.
const EVENT_IDX: u64 = 1 << 29;
/// VIRTQ_USED_F_NO_NOTIFY in the used ring's flags.
const NO_NOTIFY: u16 = 1;

/// A queue whose notifications are deferred.
#[derive(Clone, Copy)]
struct Deferred {
    doorbell: u64,
    avail: PhysAddr,
    used: PhysAddr,
    size: u16,
    /// The available index at the last flush.
    flushed: u16,
}

/// Doorbells of a device whose driver is polled: rung by [`Self::flush`],
/// once per round, rather than on every buffer.
#[derive(Default)]
pub struct Doorbells {
    queues: [Cell<Option<Deferred>>; MAX_QUEUES],
    event_idx: Cell<bool>,
    /// Notifications wait for [`Self::flush`]; when off, they ring at once
    /// (and a watched queue waits for its completions, as undeferred).
    holding: Cell<bool>,
}

impl Doorbells {
    /// Hold notifications for [`Self::flush`] (on), or ring them at once
    /// (off): a driver that keeps several requests in flight holds them,
    /// the blocking calls around it need them rung.
    pub fn hold(&self, on: bool) {
        self.holding.set(on);
    }

    /// Rings each queue that got buffers since the last flush, if the
    /// device wants to hear about them. Whether buffers were added is read
    /// off the available index, not from virtio-drivers' notify calls,
    /// which its own test (wrong once the index wraps) may leave out.
    pub fn flush(&self) {
        for (index, cell) in self.queues.iter().enumerate() {
            let Some(mut q) = cell.get() else {
                continue;
            };
            let new = ring_idx(q.avail);
            if new == q.flushed {
                continue;
            }
            // The available index is written before the device's wishes
            // are read (Linux's virtio_mb before kick_prepare).
            fence(Ordering::SeqCst);
            if self.needs_kick(&q, new) {
                // SAFETY: the doorbell lies in the function's BAR, which is
                // mapped; writing the queue index is what the spec asks.
                unsafe { write_volatile(q.doorbell as *mut u16, index as u16) };
            }
            q.flushed = new;
            cell.set(Some(q));
        }
    }

    fn needs_kick(&self, q: &Deferred, new: u16) -> bool {
        if self.event_idx.get() {
            // avail_event follows the used ring's size entries of 8 bytes.
            let at = q.used + 4 + 8 * u64::from(q.size);
            // SAFETY: the used ring lives in DMA memory this guest
            // allocated; the device writes avail_event concurrently.
            let event = unsafe { read_volatile(at as *const u16) };
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(q.flushed)
        } else {
            // SAFETY: as above, the used ring's flags.
            let flags = unsafe { read_volatile(q.used as *const u16) };
            flags & NO_NOTIFY == 0
        }
    }
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
            deferred: None,
        }
    }

    /// From now on, notifications of queues with a known doorbell wait for
    /// the returned [`Doorbells::flush`]. Call before the driver sets the
    /// queues up.
    pub fn defer_doorbells(&mut self) -> Rc<Doorbells> {
        let bells = Rc::new(Doorbells::default());
        bells.hold(true);
        self.deferred = Some(bells.clone());
        bells
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
        if let Some(d) = &self.deferred {
            d.event_idx.set(driver_features & EVENT_IDX != 0);
        }
        self.inner.write_driver_features(driver_features)
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }

    fn notify(&mut self, queue: u16) {
        let deferred = self
            .deferred
            .as_ref()
            .filter(|d| d.holding.get())
            .and_then(|d| d.queues.get(usize::from(queue)))
            .is_some_and(|cell| cell.get().is_some());
        if deferred {
            // Doorbells::flush rings it, if the device asked.
            return;
        }
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
        let timeout = request_timeout_ms();
        let done = wait_until(timeout, || ring_idx(used) == ring_idx(avail));
        if !done {
            panic!(
                "{}: no completion on queue {} within {} ms (avail idx {}, used idx {})",
                self.name,
                queue,
                timeout,
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
            let doorbell = layout.notify + u64::from(off) * u64::from(layout.multiplier);
            *slot = Some(doorbell);
            if let Some(cell) = self
                .deferred
                .as_ref()
                .and_then(|d| d.queues.get(usize::from(queue)))
            {
                cell.set(Some(Deferred {
                    doorbell,
                    avail: driver_area,
                    used: device_area,
                    size: u16::try_from(size).unwrap_or(u16::MAX),
                    flushed: 0,
                }));
            }
        }
    }

    fn queue_unset(&mut self, queue: u16) {
        if let Some(slot) = self.doorbells.get_mut(usize::from(queue)) {
            *slot = None;
        }
        if let Some(cell) = self
            .deferred
            .as_ref()
            .and_then(|d| d.queues.get(usize::from(queue)))
        {
            cell.set(None);
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
