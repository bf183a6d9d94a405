//! KVM's GSI routing table, kept whole in user space.
//!
//! `KVM_SET_GSI_ROUTING` replaces the entire table, and the first call
//! drops KVM's default routes for the IOAPIC and PIC pins. So the VM keeps
//! the full table here, starting from those defaults, and every change to
//! one MSI route pushes all of it. With a split irqchip there are no
//! in-kernel pins: the user-space IOAPIC gives each unmasked pin's GSI an
//! MSI route, and KVM refuses irqchip routes.

use std::collections::BTreeMap;

use crate::vm::IrqchipMode;
use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};

/// Pins on the in-kernel IOAPIC; GSIs below this are wired to it.
pub const IOAPIC_PINS: u32 = 24;
const PIC_PINS: u32 = 16;

/// The routing table: fixed irqchip pins plus MSI routes (address, data)
/// by GSI.
#[derive(Debug)]
pub(crate) struct GsiRoutes {
    irqchip_pins: bool,
    msi: BTreeMap<u32, (u64, u32)>,
}

impl GsiRoutes {
    /// An empty table for a VM whose irqchip is `mode`.
    pub(crate) fn new(mode: IrqchipMode) -> Self {
        Self {
            irqchip_pins: mode == IrqchipMode::Kernel,
            msi: BTreeMap::new(),
        }
    }

    pub(crate) fn set_msi(&mut self, gsi: u32, address: u64, data: u32) {
        self.msi.insert(gsi, (address, data));
    }

    pub(crate) fn clear(&mut self, gsi: u32) {
        self.msi.remove(&gsi);
    }

    /// The whole table as KVM wants it.
    pub(crate) fn to_kvm(&self) -> Result<KvmIrqRouting, vmm_sys_util::fam::Error> {
        let mut entries = Vec::new();
        // The defaults KVM installs at KVM_CREATE_IRQCHIP: every legacy
        // GSI to both PICs and the IOAPIC, the rest to the IOAPIC only.
        let pins = if self.irqchip_pins { IOAPIC_PINS } else { 0 };
        for gsi in 0..pins {
            if gsi < PIC_PINS {
                let (chip, pin) = if gsi < 8 {
                    (KVM_IRQCHIP_PIC_MASTER, gsi)
                } else {
                    (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
                };
                entries.push(irqchip_entry(gsi, chip, pin));
            }
            entries.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
        }
        for (&gsi, &(address, data)) in &self.msi {
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            let [lo, hi] = split_u64(address);
            e.u.msi.address_lo = lo;
            e.u.msi.address_hi = hi;
            e.u.msi.data = data;
            entries.push(e);
        }
        KvmIrqRouting::from_entries(&entries)
    }
}

pub(crate) fn split_u64(v: u64) -> [u32; 2] {
    let b = v.to_le_bytes();
    [
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    ]
}

fn irqchip_entry(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_keeps_the_legacy_pins_and_adds_msi() {
        let mut r = GsiRoutes::new(IrqchipMode::Kernel);
        r.set_msi(24, 0xfee0_1000, 0x4031);
        let t = r.to_kvm().unwrap();
        let entries = t.as_slice();
        assert_eq!(entries.len(), 16 + 24 + 1);
        let msi = entries.last().unwrap();
        assert_eq!((msi.gsi, msi.type_), (24, KVM_IRQ_ROUTING_MSI));
        // SAFETY: the entry was built as an MSI route.
        let m = unsafe { msi.u.msi };
        assert_eq!(
            (m.address_lo, m.address_hi, m.data),
            (0xfee0_1000, 0, 0x4031)
        );
        r.clear(24);
        assert_eq!(r.to_kvm().unwrap().as_slice().len(), 40);
    }

    #[test]
    fn split_table_has_only_msi_routes() {
        let mut r = GsiRoutes::new(IrqchipMode::Split);
        assert!(r.to_kvm().unwrap().as_slice().is_empty());
        // An IOAPIC pin routed as MSI by the user-space IOAPIC.
        r.set_msi(4, 0xfee0_0000, 0x24);
        let t = r.to_kvm().unwrap();
        let entries = t.as_slice();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].gsi, entries[0].type_), (4, KVM_IRQ_ROUTING_MSI));
    }
}
