//! The VM's PCI side: the bus, its ways in from the vCPUs, and the virtio
//! functions on it, with their BARs placed and their interrupts and
//! doorbells wired into KVM.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arch::acpi::PciHostBridge;
use arch::layout;
use block::DiskImage;
use devices::Bus;
use hypervisor::Vm;
use pci::{
    BarAllocator, IoEventRegistry, MsiRoutes, MsixVector, PciBus, PciConfigIo, PciEcam,
    PciMmioWindow,
};
use virtio::VirtioPciDevice;
use vmm_sys_util::eventfd::EventFd;

use crate::config::{DiskConfig, NetConfig};
use crate::error::{Error, Result};
use crate::memory::GuestMemory;
use crate::virtio_devices::NewDevice;

/// KVM as the PCI layer's host: MSI routes and doorbell ioeventfds.
struct KvmIrqs {
    vm: Arc<Vm>,
}

fn to_io(e: hypervisor::Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl MsiRoutes for KvmIrqs {
    fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> std::io::Result<()> {
        self.vm.set_msi_route(gsi, address, data).map_err(to_io)
    }

    fn clear_route(&self, gsi: u32) -> std::io::Result<()> {
        self.vm.clear_msi_route(gsi).map_err(to_io)
    }
}

impl IoEventRegistry for KvmIrqs {
    fn register(&self, addr: u64, fd: &EventFd) -> std::io::Result<()> {
        self.vm.register_mmio_ioevent(fd, addr).map_err(to_io)
    }

    fn unregister(&self, addr: u64, fd: &EventFd) -> std::io::Result<()> {
        self.vm.unregister_mmio_ioevent(fd, addr).map_err(to_io)
    }
}

/// What the control API knows about a device.
pub(crate) struct DeviceDescription {
    /// What the user calls it ("disk0", "rng").
    pub id: String,
    /// `virtio-blk`, `virtio-net`, ...
    pub kind: &'static str,
    /// Facts for `GET /vm` (path, size, TAP, MAC).
    pub details: BTreeMap<String, String>,
    /// The image behind a disk, for resizing.
    pub disk: Option<Arc<dyn DiskImage>>,
    /// The options it was made from, so a reboot makes it again.
    pub source: Option<DeviceSource>,
    /// A balloon's control handle.
    pub balloon: Option<virtio::balloon::BalloonControl>,
}

/// What a disk or network card was made from.
#[derive(Debug, Clone)]
pub(crate) enum DeviceSource {
    /// A `--disk` (or `add-disk`).
    Disk(DiskConfig),
    /// A `--net` (or `add-net`).
    Net(NetConfig),
}

impl DeviceDescription {
    /// A description without a disk.
    pub fn new(id: &str, kind: &'static str, details: BTreeMap<String, String>) -> Self {
        Self {
            id: id.to_string(),
            kind,
            details,
            disk: None,
            source: None,
            balloon: None,
        }
    }
}

/// A virtio function on the bus.
pub(crate) struct PciFunction {
    /// Name, kind and facts.
    pub description: DeviceDescription,
    /// PCI slot on bus 0.
    pub slot: u8,
    /// The function itself.
    pub device: Arc<Mutex<VirtioPciDevice>>,
    /// Where its BAR was placed, to free it on removal.
    bar: u64,
    /// Its interrupt lines (a clone of each irqfd and its GSI), to
    /// unregister on removal.
    irqfds: Vec<(EventFd, u32)>,
}

/// The PCI bus and everything on it.
pub(crate) struct PciDevices {
    bus: Arc<PciBus>,
    bars: BarAllocator,
    kvm: Arc<KvmIrqs>,
    mem: GuestMemory,
    next_gsi: u32,
    /// GSIs of removed devices, reused before new ones.
    free_gsis: Vec<u32>,
    mmio64: (u64, u64),
    functions: Vec<PciFunction>,
}

impl PciDevices {
    /// An empty bus for a VM with `memory_size` bytes of RAM.
    pub fn new(vm: Arc<Vm>, mem: GuestMemory, memory_size: u64) -> Result<Self> {
        let mmio64 = (
            arch::memory::pci_mmio64_start(memory_size),
            layout::PCI_MMIO64_SIZE,
        );
        let mmio32 = (layout::PCI_MMIO32_START, layout::PCI_MMIO32_SIZE);
        let bars = BarAllocator::new(mmio32.0, mmio32.1, mmio64.0, mmio64.1)
            .map_err(|e| Error::Pci(e.to_string()))?;
        Ok(Self {
            bus: Arc::new(PciBus::new(&[mmio32, mmio64])),
            bars,
            kvm: Arc::new(KvmIrqs { vm }),
            mem,
            next_gsi: hypervisor::IOAPIC_PINS,
            free_gsis: Vec::new(),
            mmio64,
            functions: Vec::new(),
        })
    }

    /// Put `new.device` on the bus as a virtio-pci function; returns its slot.
    pub fn add_virtio(&mut self, new: NewDevice) -> Result<u8> {
        let NewDevice {
            device,
            description,
        } = new;
        let name = description.id.clone();
        if self.functions.iter().any(|f| f.description.id == name) {
            return Err(Error::Pci(format!("a device called {name} exists already")));
        }
        let host = |what| move |e| Error::Host(what, e);
        let queues = device.queue_max_sizes().len();
        let mut vectors = Vec::new();
        let mut irqfds = Vec::new();
        for _ in 0..VirtioPciDevice::msix_vectors_for(queues) {
            let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(host("irqfd"))?;
            let gsi = self.free_gsis.pop().unwrap_or_else(|| {
                self.next_gsi += 1;
                self.next_gsi - 1
            });
            self.kvm.vm.register_irqfd(&irqfd, gsi)?;
            irqfds.push((irqfd.try_clone().map_err(host("irqfd"))?, gsi));
            vectors.push(MsixVector { gsi, irqfd });
        }
        let routes: Arc<dyn MsiRoutes> = self.kvm.clone();
        let ioevents: Arc<dyn IoEventRegistry> = self.kvm.clone();
        let mut function =
            VirtioPciDevice::new(device, self.mem.clone(), vectors, routes, ioevents)
                .map_err(|e| Error::Pci(format!("{name}: {e}")))?;
        let bar = self
            .bars
            .allocate(VirtioPciDevice::bar_size(), true)
            .map_err(|e| Error::Pci(format!("{name}: {e}")))?;
        function.assign_bar(bar);
        let function = Arc::new(Mutex::new(function));
        let slot = self
            .bus
            .add_device(None, function.clone())
            .map_err(|e| Error::Pci(format!("{name}: {e}")))?;
        tracing::info!("{name}: PCI 00:{slot:02x}.0, BAR 0 at {bar:#x}");
        self.functions.push(PciFunction {
            description,
            slot,
            device: function,
            bar,
            irqfds,
        });
        Ok(slot)
    }

    /// Take the device `id` off the bus (its worker stops when the last
    /// reference goes); its BAR and interrupt lines are freed for reuse.
    pub fn remove(&mut self, id: &str) -> Result<PciFunction> {
        let index = self
            .functions
            .iter()
            .position(|f| f.description.id == id)
            .ok_or_else(|| Error::Pci(format!("no device called {id}")))?;
        let function = self.functions.remove(index);
        self.bus
            .remove_device(function.slot)
            .map_err(|e| Error::Pci(format!("{id}: {e}")))?;
        self.bars.free(function.bar, VirtioPciDevice::bar_size());
        for (irqfd, gsi) in &function.irqfds {
            if let Err(e) = self.kvm.vm.unregister_irqfd(irqfd, *gsi) {
                tracing::warn!("{id}: removing the irqfd of GSI {gsi}: {e}");
            }
            if let Err(e) = self.kvm.vm.clear_msi_route(*gsi) {
                tracing::warn!("{id}: clearing the route of GSI {gsi}: {e}");
            }
            self.free_gsis.push(*gsi);
        }
        Ok(function)
    }

    /// Quiesce every device; false if one did not comply.
    pub fn pause_all(&self) -> bool {
        let paused: Vec<bool> = self
            .functions
            .iter()
            .map(|f| lock(&f.device).pause())
            .collect();
        paused.into_iter().all(|ok| ok)
    }

    /// Undo [`PciDevices::pause_all`].
    pub fn resume_all(&self) {
        for f in &self.functions {
            lock(&f.device).resume();
        }
    }

    /// Connect the bus to the vCPUs: CF8/CFC on the port bus, ECAM and
    /// both BAR windows on the MMIO bus.
    pub fn attach(&self, pio: &mut Bus, mmio: &mut Bus) -> Result<()> {
        pio.insert(
            Arc::new(Mutex::new(PciConfigIo::new(self.bus.clone()))),
            pci::CONFIG_IO_PORT,
            pci::CONFIG_IO_LEN,
        )?;
        mmio.insert(
            Arc::new(Mutex::new(PciEcam::new(self.bus.clone()))),
            layout::PCI_ECAM_START,
            layout::PCI_ECAM_SIZE,
        )?;
        for (base, size) in [
            (layout::PCI_MMIO32_START, layout::PCI_MMIO32_SIZE),
            self.mmio64,
        ] {
            mmio.insert(
                Arc::new(Mutex::new(PciMmioWindow::new(self.bus.clone(), base))),
                base,
                size,
            )?;
        }
        Ok(())
    }

    /// The host bridge as the ACPI tables describe it.
    pub fn acpi(&self) -> PciHostBridge {
        PciHostBridge {
            ecam_base: layout::PCI_ECAM_START,
            last_bus: 0,
            mmio32: (layout::PCI_MMIO32_START, layout::PCI_MMIO32_SIZE),
            mmio64: self.mmio64,
        }
    }

    /// The functions on the bus.
    pub fn functions(&self) -> &[PciFunction] {
        &self.functions
    }

    /// The function called `id`.
    pub fn function(&self, id: &str) -> Option<&PciFunction> {
        self.functions.iter().find(|f| f.description.id == id)
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
