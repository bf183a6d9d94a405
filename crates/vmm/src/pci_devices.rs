//! The VM's PCI side: the bus, its ways in from the vCPUs, and the virtio
//! functions on it, with their BARs placed and their interrupts and
//! doorbells wired into KVM.

use std::sync::{Arc, Mutex};

use arch::acpi::PciHostBridge;
use arch::layout;
use devices::Bus;
use hypervisor::Vm;
use pci::{
    BarAllocator, IoEventRegistry, MsiRoutes, MsixVector, PciBus, PciConfigIo, PciEcam,
    PciMmioWindow,
};
use virtio::{VirtioDevice, VirtioPciDevice};
use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, Result};
use crate::memory::GuestMemory;

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

/// A virtio function on the bus, kept for counters and teardown.
#[allow(dead_code)] // read by the control API (counters, hot-unplug)
pub(crate) struct PciFunction {
    /// What the user calls it ("disk0", "rng").
    pub name: String,
    /// PCI slot on bus 0.
    pub slot: u8,
    /// The function itself.
    pub device: Arc<Mutex<VirtioPciDevice>>,
}

/// The PCI bus and everything on it.
pub(crate) struct PciDevices {
    bus: Arc<PciBus>,
    bars: BarAllocator,
    kvm: Arc<KvmIrqs>,
    mem: GuestMemory,
    next_gsi: u32,
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
            mmio64,
            functions: Vec::new(),
        })
    }

    /// Put `device` on the bus as a virtio-pci function called `name`.
    pub fn add_virtio(&mut self, name: &str, device: Box<dyn VirtioDevice>) -> Result<()> {
        let host = |what| move |e| Error::Host(what, e);
        let queues = device.queue_max_sizes().len();
        let mut vectors = Vec::new();
        for _ in 0..VirtioPciDevice::msix_vectors_for(queues) {
            let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(host("irqfd"))?;
            let gsi = self.next_gsi;
            self.kvm.vm.register_irqfd(&irqfd, gsi)?;
            self.next_gsi += 1;
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
            name: name.to_string(),
            slot,
            device: function,
        });
        Ok(())
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
    #[allow(dead_code)] // read by the control API (counters, hot-unplug)
    pub fn functions(&self) -> &[PciFunction] {
        &self.functions
    }
}
