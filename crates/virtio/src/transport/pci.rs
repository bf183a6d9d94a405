//! The modern virtio-pci transport (virtio 1.2, 4.1): a PCI function whose
//! BAR 0 holds the common configuration, ISR, device configuration,
//! notification doorbells and the MSI-X table, each announced by a
//! vendor-specific capability.
//!
//! Every register the driver can touch is decoded here; the device behind
//! it only sees feature bits, its configuration space and, once the driver
//! sets DRIVER_OK, its queues.
//!
//! A queue's doorbell becomes an ioeventfd only when the driver starts the
//! device (DRIVER_OK) with that queue enabled, and stops being one at
//! reset: registering one makes KVM wait for an SRCU grace period at VM
//! teardown, which a VM whose guest never drives the device should not
//! pay. Until then a doorbell write exits to `notify_write`, which signals
//! the same eventfd.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pci::{
    BarRange, BarSpec, IoEventRegistry, MsiRoutes, Msix, MsixVector, PciConfiguration, PciDevice,
    PciHeader,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::common_config::{self, CommonReg, COMMON_CONFIG_SIZE};
use super::interrupt::{PciInterrupt, NO_VECTOR, STATUS_DRIVER_OK, STATUS_NEEDS_RESET};
use crate::device::{ActivateContext, ActiveQueue, GuestMemory, VirtioDevice};

/// Vendor ID of virtio devices.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Modern devices use 0x1040 + the virtio device ID.
const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;
const VENDOR_CAP_ID: u8 = 0x09;

const CAP_COMMON_CFG: u8 = 1;
const CAP_NOTIFY_CFG: u8 = 2;
const CAP_ISR_CFG: u8 = 3;
const CAP_DEVICE_CFG: u8 = 4;
const CAP_PCI_CFG: u8 = 5;

/// BAR 0 layout. Regions sit on their own pages so a guest can map them
/// separately.
const BAR_INDEX: u8 = 0;
const COMMON_OFFSET: u64 = 0x0000;
const ISR_OFFSET: u64 = 0x1000;
const ISR_SIZE: u64 = 4;
const DEVICE_CFG_OFFSET: u64 = 0x2000;
const DEVICE_CFG_SIZE: u64 = 0x1000;
const NOTIFY_OFFSET: u64 = 0x3000;
/// Each queue's doorbell is 4 bytes after the previous one's.
const NOTIFY_OFF_MULTIPLIER: u32 = 4;
const MSIX_TABLE_OFFSET: u64 = 0x4000;
const MSIX_PBA_OFFSET: u64 = 0x6000;
const BAR_SIZE: u64 = 0x8000;
/// Queues a function may have: the doorbells and the MSI-X table (one
/// vector per queue plus one for configuration) must fit their regions.
pub const MAX_QUEUES: usize = 256;

const STATUS_FEATURES_OK: u8 = 8;
const STATUS_FAILED: u8 = 128;

/// Feature bits the transport itself offers on top of the device's.
const TRANSPORT_FEATURES: u64 =
    1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX | 1 << VIRTIO_RING_F_INDIRECT_DESC;

/// What the driver set up for one queue.
#[derive(Debug, Clone, Copy)]
struct QueueSetup {
    max_size: u16,
    size: u16,
    enabled: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

impl QueueSetup {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }
}

/// Errors creating a virtio-pci function.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The device has no queues, or more than the BAR layout holds.
    #[error("a virtio-pci device needs 1 to {MAX_QUEUES} queues, not {0}")]
    QueueCount(usize),
    /// The caller gave the wrong number of MSI-X vectors.
    #[error("{given} MSI-X vectors given, {needed} needed")]
    VectorCount {
        /// Vectors given.
        given: usize,
        /// Vectors needed (one per queue plus configuration).
        needed: usize,
    },
    /// A queue size is zero or not a power of two.
    #[error("queue size {0} is not a power of two")]
    QueueSize(u16),
    /// Building configuration space failed.
    #[error(transparent)]
    Config(#[from] pci::ConfigError),
    /// Creating a doorbell eventfd failed.
    #[error("eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// A virtio device on the PCI bus.
pub struct VirtioPciDevice {
    config: PciConfiguration,
    device: Box<dyn VirtioDevice>,
    interrupt: Arc<PciInterrupt>,
    ioevents: Arc<dyn IoEventRegistry>,
    mem: GuestMemory,
    queues: Vec<QueueSetup>,
    kicks: Vec<EventFd>,
    offered_features: u64,
    driver_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    queue_select: u16,
    active: bool,
    msix_cap: usize,
    pci_cfg_cap: usize,
    bar_base: Option<u64>,
    /// Queues whose doorbell is registered as an ioeventfd at `bar_base`.
    doorbells: Vec<usize>,
}

impl VirtioPciDevice {
    /// Number of MSI-X vectors a device with `num_queues` queues needs.
    pub fn msix_vectors_for(num_queues: usize) -> usize {
        num_queues + 1
    }

    /// Wrap `device`. `vectors` must hold [`Self::msix_vectors_for`] the
    /// device's queue count; `routes` and `ioevents` reach the host.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        vectors: Vec<MsixVector>,
        routes: Arc<dyn MsiRoutes>,
        ioevents: Arc<dyn IoEventRegistry>,
    ) -> Result<Self, TransportError> {
        let sizes = device.queue_max_sizes().to_vec();
        if sizes.is_empty() || sizes.len() > MAX_QUEUES {
            return Err(TransportError::QueueCount(sizes.len()));
        }
        if let Some(&bad) = sizes.iter().find(|s| !s.is_power_of_two()) {
            return Err(TransportError::QueueSize(bad));
        }
        let needed = Self::msix_vectors_for(sizes.len());
        if vectors.len() != needed {
            return Err(TransportError::VectorCount {
                given: vectors.len(),
                needed,
            });
        }
        let device_type = device.device_type();
        let (class, subclass) = class_of(device_type);
        let type_id = u16::try_from(device_type).unwrap_or(0);
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            device_id: VIRTIO_PCI_DEVICE_ID_BASE + type_id,
            // Modern-only devices have revision 1 or more (virtio 4.1.2.1).
            revision_id: 1,
            class,
            subclass,
            prog_if: 0,
            subsystem_vendor_id: VIRTIO_PCI_VENDOR_ID,
            subsystem_id: 0x40,
        });
        config.add_bar(
            usize::from(BAR_INDEX),
            BarSpec {
                size: BAR_SIZE,
                is_64bit: true,
                prefetchable: false,
            },
        )?;
        let num_queues = u32::try_from(sizes.len()).unwrap_or(0);
        for (cfg_type, offset, len) in [
            (CAP_COMMON_CFG, COMMON_OFFSET, COMMON_CONFIG_SIZE),
            (CAP_ISR_CFG, ISR_OFFSET, ISR_SIZE),
            (CAP_DEVICE_CFG, DEVICE_CFG_OFFSET, DEVICE_CFG_SIZE),
        ] {
            config.add_capability(VENDOR_CAP_ID, &vendor_cap(cfg_type, offset, len, &[]), &[])?;
        }
        let notify_len = u64::from(num_queues * NOTIFY_OFF_MULTIPLIER);
        config.add_capability(
            VENDOR_CAP_ID,
            &vendor_cap(
                CAP_NOTIFY_CFG,
                NOTIFY_OFFSET,
                notify_len,
                &NOTIFY_OFF_MULTIPLIER.to_le_bytes(),
            ),
            &[],
        )?;
        // The PCI configuration access capability: a window onto BAR
        // registers through configuration space. bar, offset, length and
        // the data dword are the driver's to write.
        let mut pci_cfg_writable = [0u8; 18];
        pci_cfg_writable[2] = 0xff;
        pci_cfg_writable[6..18].fill(0xff);
        let pci_cfg_cap = config.add_capability(
            VENDOR_CAP_ID,
            &vendor_cap(CAP_PCI_CFG, 0, 0, &[0; 4]),
            &pci_cfg_writable,
        )?;
        let msix = Msix::new(vectors, routes);
        let table_offset = u32::try_from(MSIX_TABLE_OFFSET).unwrap_or(0);
        let pba_offset = u32::try_from(MSIX_PBA_OFFSET).unwrap_or(0);
        let (body, writable) = msix.capability(BAR_INDEX, table_offset, pba_offset);
        let msix_cap = config.add_capability(pci::MSIX_CAP_ID, &body, &writable)?;
        let kicks = sizes
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(TransportError::EventFd)?;
        let offered_features = device.features() | TRANSPORT_FEATURES;
        Ok(Self {
            config,
            device,
            interrupt: Arc::new(PciInterrupt::new(msix, sizes.len())),
            ioevents,
            mem,
            queues: sizes.iter().map(|&s| QueueSetup::new(s)).collect(),
            kicks,
            offered_features,
            driver_features: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            queue_select: 0,
            active: false,
            msix_cap,
            pci_cfg_cap,
            bar_base: None,
            doorbells: Vec::new(),
        })
    }

    /// Size of BAR 0, for the caller placing it.
    pub fn bar_size() -> u64 {
        BAR_SIZE
    }

    /// Place BAR 0 at `addr` and turn decoding on, as firmware would.
    pub fn assign_bar(&mut self, addr: u64) {
        self.config.set_bar_address(usize::from(BAR_INDEX), addr);
        self.config.enable_memory_and_bus_master();
    }

    /// Quiesce the device (see [`VirtioDevice::pause`]).
    pub fn pause(&mut self) -> bool {
        !self.active || self.device.pause()
    }

    /// Undo [`VirtioPciDevice::pause`].
    pub fn resume(&mut self) {
        if self.active {
            self.device.resume();
        }
    }

    /// The device's counters.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        self.device.counters()
    }

    /// The interrupt state, for a device that changes its configuration
    /// on its own (e.g. a disk resized by the VMM).
    pub fn interrupt(&self) -> Arc<PciInterrupt> {
        self.interrupt.clone()
    }

    fn status(&self) -> u8 {
        self.interrupt.status.load(Ordering::Acquire)
    }

    fn selected_queue(&mut self) -> Option<&mut QueueSetup> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    fn common_read(&mut self, offset: u64, data: &mut [u8]) {
        let Some(reg) = common_config::decode(offset, data.len()) else {
            data.fill(0);
            return;
        };
        let q = self.queues.get(usize::from(self.queue_select)).copied();
        let qv = self
            .interrupt
            .queue_vectors
            .get(usize::from(self.queue_select))
            .map_or(NO_VECTOR, |v| v.load(Ordering::Acquire));
        let value: u64 = match reg {
            CommonReg::DeviceFeatureSelect => u64::from(self.device_feature_select),
            CommonReg::DeviceFeature => match self.device_feature_select {
                0 => self.offered_features & 0xffff_ffff,
                1 => self.offered_features >> 32,
                _ => 0,
            },
            CommonReg::DriverFeatureSelect => u64::from(self.driver_feature_select),
            CommonReg::DriverFeature => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            CommonReg::ConfigMsixVector => {
                u64::from(self.interrupt.config_vector.load(Ordering::Acquire))
            }
            CommonReg::NumQueues => self.queues.len() as u64,
            CommonReg::DeviceStatus => u64::from(self.status()),
            CommonReg::ConfigGeneration => {
                u64::from(self.interrupt.config_generation.load(Ordering::Acquire))
            }
            CommonReg::QueueSelect => u64::from(self.queue_select),
            // An out-of-range queue reads as size 0: "not available".
            CommonReg::QueueSize => q.map_or(0, |q| u64::from(q.size)),
            CommonReg::QueueMsixVector => u64::from(qv),
            CommonReg::QueueEnable => q.map_or(0, |q| u64::from(q.enabled)),
            CommonReg::QueueNotifyOff => u64::from(self.queue_select),
            CommonReg::QueueDesc(h) => q.map_or(0, |q| common_config::get_half(q.desc, h)),
            CommonReg::QueueDriver(h) => q.map_or(0, |q| common_config::get_half(q.driver, h)),
            CommonReg::QueueDevice(h) => q.map_or(0, |q| common_config::get_half(q.device, h)),
        };
        let bytes = value.to_le_bytes();
        data.copy_from_slice(&bytes[..data.len()]);
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        let Some(reg) = common_config::decode(offset, data.len()) else {
            tracing::debug!("virtio-pci: ignored common config write at {offset:#x}");
            return;
        };
        let mut v = [0u8; 8];
        v[..data.len()].copy_from_slice(data);
        let wide = u64::from_le_bytes(v);
        let value = u32::try_from(wide & 0xffff_ffff).unwrap_or(0);
        let v16 = u16::try_from(value & 0xffff).unwrap_or(0);
        // Queue layout is frozen once the driver is live (4.1.4.3.2).
        let queues_frozen = self.status() & STATUS_DRIVER_OK != 0;
        match reg {
            CommonReg::DeviceFeatureSelect => self.device_feature_select = value,
            CommonReg::DriverFeatureSelect => self.driver_feature_select = value,
            CommonReg::DriverFeature => {
                if self.status() & STATUS_FEATURES_OK == 0 {
                    match self.driver_feature_select {
                        0 => {
                            self.driver_features =
                                (self.driver_features & !0xffff_ffff) | u64::from(value)
                        }
                        1 => {
                            self.driver_features =
                                (self.driver_features & 0xffff_ffff) | u64::from(value) << 32
                        }
                        _ => {}
                    }
                }
            }
            CommonReg::ConfigMsixVector => self.set_vector(None, v16),
            CommonReg::DeviceStatus => self.write_status(data[0]),
            CommonReg::QueueSelect => self.queue_select = v16,
            CommonReg::QueueMsixVector => self.set_vector(Some(self.queue_select), v16),
            CommonReg::QueueSize if !queues_frozen => {
                if let Some(q) = self.selected_queue() {
                    // Split rings must be a power of two no larger than the maximum.
                    if v16.is_power_of_two() && v16 <= q.max_size {
                        q.size = v16;
                    }
                }
            }
            CommonReg::QueueEnable if !queues_frozen => {
                if let Some(q) = self.selected_queue() {
                    // Only 1 is defined; a driver disables queues by reset.
                    if v16 == 1 {
                        q.enabled = true;
                    }
                }
            }
            CommonReg::QueueDesc(h) if !queues_frozen => {
                if let Some(q) = self.selected_queue() {
                    q.desc = common_config::set_half(q.desc, h, wide);
                }
            }
            CommonReg::QueueDriver(h) if !queues_frozen => {
                if let Some(q) = self.selected_queue() {
                    q.driver = common_config::set_half(q.driver, h, wide);
                }
            }
            CommonReg::QueueDevice(h) if !queues_frozen => {
                if let Some(q) = self.selected_queue() {
                    q.device = common_config::set_half(q.device, h, wide);
                }
            }
            _ => tracing::debug!("virtio-pci: ignored write to {reg:?}"),
        }
    }

    /// Set the configuration vector (`queue` None) or a queue's. A vector
    /// the function does not have reads back as NO_VECTOR, telling the
    /// driver the assignment failed (4.1.5.1.2).
    fn set_vector(&mut self, queue: Option<u16>, vector: u16) {
        // The table has one vector per queue plus configuration (checked
        // in `new`); no need to lock it to ask.
        let num_vectors = Self::msix_vectors_for(self.queues.len());
        let valid = vector == NO_VECTOR || usize::from(vector) < num_vectors;
        let vector = if valid { vector } else { NO_VECTOR };
        match queue {
            None => self
                .interrupt
                .config_vector
                .store(vector, Ordering::Release),
            Some(q) => {
                if let Some(v) = self.interrupt.queue_vectors.get(usize::from(q)) {
                    v.store(vector, Ordering::Release);
                }
            }
        }
    }

    fn write_status(&mut self, new: u8) {
        if new == 0 {
            self.reset();
            return;
        }
        let old = self.status();
        let mut new = new | (old & STATUS_NEEDS_RESET);
        if new & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            let acceptable = self.driver_features & !self.offered_features == 0
                && self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0;
            if !acceptable {
                tracing::warn!(
                    "virtio-pci: driver features {:#x} refused (offered {:#x})",
                    self.driver_features,
                    self.offered_features
                );
                new &= !STATUS_FEATURES_OK;
            }
        }
        if new & STATUS_DRIVER_OK != 0 && new & STATUS_FEATURES_OK == 0 {
            // A driver that skipped feature negotiation is not one we serve.
            new &= !STATUS_DRIVER_OK;
        }
        self.interrupt.status.store(new, Ordering::Release);
        if new & STATUS_DRIVER_OK != 0 && old & STATUS_DRIVER_OK == 0 && !self.active {
            self.activate();
        }
        if new & STATUS_FAILED != 0 && old & STATUS_FAILED == 0 {
            tracing::info!("virtio-pci: the driver gave up on the device (FAILED)");
        }
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut queues = Vec::new();
        for (i, setup) in self.queues.iter().enumerate() {
            if !setup.enabled {
                continue;
            }
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            match build_queue(setup, event_idx, &self.mem) {
                Some(queue) => {
                    let kick = match self.kicks[i].try_clone() {
                        Ok(k) => k,
                        Err(e) => {
                            tracing::error!("virtio-pci: cloning a doorbell eventfd: {e}");
                            return self.interrupt.set_needs_reset_now();
                        }
                    };
                    queues.push(ActiveQueue { index, queue, kick });
                }
                None => {
                    tracing::warn!(
                        "virtio-pci: queue {i} has an invalid layout; device needs reset"
                    );
                    return self.interrupt.set_needs_reset_now();
                }
            }
        }
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            interrupt: self.interrupt.clone(),
            queues,
            features: self.driver_features,
        };
        match self.device.activate(ctx) {
            Ok(()) => {
                self.active = true;
                self.register_doorbells();
            }
            Err(e) => {
                tracing::warn!("virtio-pci: activating the device failed: {e}");
                self.interrupt.set_needs_reset_now();
            }
        }
    }

    /// Make the doorbells of the enabled queues ioeventfds, if BAR 0 is
    /// decoded.
    fn register_doorbells(&mut self) {
        let Some(base) = self.bar_base else { return };
        for (i, (setup, k)) in self.queues.iter().zip(&self.kicks).enumerate() {
            if !setup.enabled || self.doorbells.contains(&i) {
                continue;
            }
            // Without the ioeventfd, doorbell writes still arrive through
            // notify_write, only slower; so a failure is not fatal.
            match self.ioevents.register(Self::notify_addr(base, i), k) {
                Ok(()) => self.doorbells.push(i),
                Err(e) => tracing::warn!("virtio-pci: doorbell {i} stays on the slow path: {e}"),
            }
        }
    }

    fn unregister_doorbells(&mut self) {
        let Some(base) = self.bar_base else { return };
        for i in std::mem::take(&mut self.doorbells) {
            if let Some(k) = self.kicks.get(i) {
                if let Err(e) = self.ioevents.unregister(Self::notify_addr(base, i), k) {
                    tracing::warn!("virtio-pci: removing doorbell {i}: {e}");
                }
            }
        }
    }

    fn reset(&mut self) {
        self.unregister_doorbells();
        if self.active {
            self.device.reset();
            self.active = false;
        }
        for q in &mut self.queues {
            *q = QueueSetup::new(q.max_size);
        }
        for v in &self.interrupt.queue_vectors {
            v.store(NO_VECTOR, Ordering::Release);
        }
        self.interrupt
            .config_vector
            .store(NO_VECTOR, Ordering::Release);
        self.interrupt.take_isr();
        self.driver_features = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.queue_select = 0;
        // Stale kicks would wake the next activation's worker for nothing.
        for k in &self.kicks {
            let _ = k.read();
        }
        self.interrupt.status.store(0, Ordering::Release);
    }

    fn notify_write(&mut self, offset: u64) {
        // Reached only when the ioeventfd is not registered (or for a
        // doorbell outside any queue); the eventfd is the one path to the worker.
        let q = offset / u64::from(NOTIFY_OFF_MULTIPLIER);
        match usize::try_from(q).ok().and_then(|q| self.kicks.get(q)) {
            Some(k) => {
                let _ = k.write(1);
            }
            None => tracing::debug!("virtio-pci: doorbell for nonexistent queue {q}"),
        }
    }

    fn notify_addr(base: u64, queue: usize) -> u64 {
        base + NOTIFY_OFFSET + queue as u64 * u64::from(NOTIFY_OFF_MULTIPLIER)
    }

    /// Handle a write that touched the MSI-X capability or the PCI
    /// configuration access window.
    fn after_config_write(&mut self, offset: usize, len: usize) {
        let touches = |start: usize, n: usize| offset < start + n && start < offset + len;
        if touches(self.msix_cap + 2, 2) {
            let mut control = [0u8; 2];
            self.config.read(self.msix_cap + 2, &mut control);
            self.interrupt
                .msix()
                .set_control(u16::from_le_bytes(control));
        }
        let data_offset = self.pci_cfg_cap + 16;
        if touches(data_offset, 4) {
            if let Some((bar_offset, n)) = self.pci_cfg_window() {
                let mut data = [0u8; 4];
                self.config.read(data_offset, &mut data);
                self.bar_write(BAR_INDEX, bar_offset, &data[..n]);
            }
        }
    }

    /// The BAR offset and length the PCI configuration access capability
    /// selects, if it selects BAR 0 with a valid access.
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let mut cap = [0u8; 16];
        self.config.read(self.pci_cfg_cap, &mut cap);
        let bar = cap[4];
        let offset = u32::from_le_bytes([cap[8], cap[9], cap[10], cap[11]]);
        let len = u32::from_le_bytes([cap[12], cap[13], cap[14], cap[15]]);
        let len = usize::try_from(len).ok()?;
        let aligned = offset.is_multiple_of(u32::try_from(len.max(1)).ok()?);
        (bar == BAR_INDEX && matches!(len, 1 | 2 | 4) && aligned)
            .then_some((u64::from(offset), len))
    }
}

/// Build a queue from the driver's set-up, or None if its rings do not fit
/// guest memory (or are misaligned).
fn build_queue(setup: &QueueSetup, event_idx: bool, mem: &GuestMemory) -> Option<Queue> {
    let mut q = Queue::new(setup.max_size).ok()?;
    q.try_set_size(setup.size).ok()?;
    q.try_set_desc_table_address(GuestAddress(setup.desc))
        .ok()?;
    q.try_set_avail_ring_address(GuestAddress(setup.driver))
        .ok()?;
    q.try_set_used_ring_address(GuestAddress(setup.device))
        .ok()?;
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q.is_valid(mem).then_some(q)
}

fn vendor_cap(cfg_type: u8, offset: u64, len: u64, extra: &[u8]) -> Vec<u8> {
    // Body after the ID and next bytes: cap_len, cfg_type, bar, id,
    // padding[2], offset, length, then type-specific fields.
    let cap_len = u8::try_from(16 + extra.len()).unwrap_or(0);
    let mut body = vec![cap_len, cfg_type, BAR_INDEX, 0, 0, 0];
    body.extend_from_slice(&u32::try_from(offset).unwrap_or(0).to_le_bytes());
    body.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_le_bytes());
    body.extend_from_slice(extra);
    body
}

/// PCI class and subclass for a virtio device type, as guests expect.
fn class_of(device_type: u32) -> (u8, u8) {
    match device_type {
        1 => (0x02, 0x00), // network controller, Ethernet
        2 => (0x01, 0x00), // mass storage, SCSI (what QEMU reports)
        3 => (0x07, 0x80), // communication controller, other
        _ => (0xff, 0x00), // unclassified
    }
}

impl PciInterrupt {
    /// Set DEVICE_NEEDS_RESET from the transport itself (activation failed).
    fn set_needs_reset_now(&self) {
        use crate::device::VirtioInterrupt;
        self.set_needs_reset();
    }
}

impl PciDevice for VirtioPciDevice {
    fn config_read(&mut self, reg: usize) -> u32 {
        if reg == (self.pci_cfg_cap + 16) / 4 {
            if let Some((offset, n)) = self.pci_cfg_window() {
                let mut data = [0u8; 4];
                self.bar_read(BAR_INDEX, offset, &mut data[..n]);
                return u32::from_le_bytes(data);
            }
        }
        self.config.read_reg(reg)
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
        self.after_config_write(offset, data.len());
    }

    fn decoded_bars(&self) -> Vec<BarRange> {
        self.config.decoded_bars()
    }

    fn bars_moved(&mut self, _old: &[BarRange], new: &[BarRange]) {
        self.unregister_doorbells();
        self.bar_base = new.iter().find(|b| b.index == BAR_INDEX).map(|b| b.addr);
        if self.active {
            self.register_doorbells();
        }
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar != BAR_INDEX {
            return;
        }
        match offset {
            o if o < COMMON_OFFSET + COMMON_CONFIG_SIZE => {
                self.common_read(o - COMMON_OFFSET, data)
            }
            // An empty access reads nothing, so it must not clear the ISR.
            o if o == ISR_OFFSET => {
                if let Some(b) = data.first_mut() {
                    *b = self.interrupt.take_isr();
                }
            }
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_SIZE).contains(&o) => {
                self.device.read_config(o - DEVICE_CFG_OFFSET, data);
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.interrupt
                    .msix()
                    .table_read(o - MSIX_TABLE_OFFSET, data);
            }
            o if (MSIX_PBA_OFFSET..BAR_SIZE).contains(&o) => {
                self.interrupt.msix().pba_read(o - MSIX_PBA_OFFSET, data);
            }
            _ => {}
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if bar != BAR_INDEX {
            return;
        }
        match offset {
            o if o < COMMON_OFFSET + COMMON_CONFIG_SIZE => {
                self.common_write(o - COMMON_OFFSET, data)
            }
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_SIZE).contains(&o) => {
                self.device.write_config(o - DEVICE_CFG_OFFSET, data);
            }
            o if (NOTIFY_OFFSET..MSIX_TABLE_OFFSET).contains(&o) => {
                self.notify_write(o - NOTIFY_OFFSET)
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.interrupt
                    .msix()
                    .table_write(o - MSIX_TABLE_OFFSET, data);
            }
            _ => tracing::debug!("virtio-pci: ignored BAR write at {offset:#x}"),
        }
    }
}

impl Drop for VirtioPciDevice {
    fn drop(&mut self) {
        if self.active {
            self.device.reset();
        }
    }
}
