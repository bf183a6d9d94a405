//! The VM's interrupt controllers: KVM's whole irqchip, or KVM's local
//! APICs with the I/O APIC here (the split irqchip, the default).
//!
//! Either way the legacy lines (COM1 on GSI 4, the GED on GSI 5) are
//! irqfds on their GSI: with the in-kernel irqchip KVM routes them to its
//! IOAPIC pins; with the split one the user-space I/O APIC gives each
//! unmasked pin an MSI route built from its redirection entry, so the
//! irqfds keep working without a trip through user space.

use std::sync::{Arc, Mutex};

use arch::layout;
use devices::ioapic::IOAPIC_MMIO_SIZE;
use devices::{Bus, Ioapic, IoapicSink, MsiMessage};
use hypervisor::{IrqchipMode, Vm};

use crate::config::VmConfig;
use crate::error::Result;

/// The user-space I/O APIC's way into KVM.
struct KvmIoapicSink {
    vm: Arc<Vm>,
}

fn to_io(e: hypervisor::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl IoapicSink for KvmIoapicSink {
    fn set_route(&self, pin: u32, msi: Option<MsiMessage>) -> std::io::Result<()> {
        match msi {
            Some(m) => self.vm.set_msi_route(pin, m.address, m.data),
            None => self.vm.clear_msi_route(pin),
        }
        .map_err(to_io)
    }

    fn send_msi(&self, msi: MsiMessage) -> std::io::Result<()> {
        self.vm.signal_msi(msi.address, msi.data).map_err(to_io)
    }
}

/// Create the interrupt controllers `config` asks for, before any vCPU;
/// with a split irqchip, put the I/O APIC on `mmio` and return it for the
/// vCPUs' EOI exits.
pub(crate) fn create(
    vm: &Arc<Vm>,
    config: &VmConfig,
    mmio: &mut Bus,
) -> Result<Option<Arc<Mutex<Ioapic>>>> {
    vm.create_irqchip(config.irqchip, config.pit)?;
    if config.irqchip == IrqchipMode::Kernel {
        return Ok(None);
    }
    let ioapic = Arc::new(Mutex::new(Ioapic::new(Arc::new(KvmIoapicSink {
        vm: vm.clone(),
    }))));
    mmio.insert(ioapic.clone(), layout::IOAPIC_START, IOAPIC_MMIO_SIZE)?;
    Ok(Some(ioapic))
}
