//! The I/O APIC of a split irqchip: its registers in user space, its
//! deliveries through KVM's in-kernel local APICs.
//!
//! Follows the 82093AA datasheet: an index register (IOREGSEL, offset
//! 0x00) selects one 32-bit register that the data window (IOWIN, offset
//! 0x10) reads or writes. Registers: 0x00 ID, 0x01 version, 0x02
//! arbitration ID, and from 0x10 the 24 redirection entries, two
//! registers (low, high) each.
//!
//! A redirection entry is turned into the MSI message the same interrupt
//! would carry on the system bus. The VMM installs that message as the
//! KVM route of the pin's GSI ([`IoapicSink::set_route`]), so a device
//! that pulses its irqfd on that GSI reaches the guest without leaving
//! the kernel. Lines raised from user space ([`Ioapic::set_irq`]) are sent
//! through [`IoapicSink::send_msi`]. A level-triggered route makes KVM
//! exit on the guest's EOI of its vector, which the vCPU loop passes to
//! [`Ioapic::end_of_interrupt`]: remote IRR is cleared and a line still
//! asserted is delivered again.
//!
//! Everything here is reached by the guest; no access, whatever its
//! offset, width or value, may panic.

use std::sync::Arc;

use crate::bus::BusDevice;

/// Redirection entries (pins), as on the 82093AA; GSIs `0..24`.
pub const IOAPIC_PINS: usize = 24;
/// Size of the MMIO range the I/O APIC decodes.
pub const IOAPIC_MMIO_SIZE: u64 = 0x1000;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;

const REG_ID: u8 = 0x00;
const REG_VERSION: u8 = 0x01;
const REG_ARBITRATION: u8 = 0x02;
const REG_REDIR_FIRST: u8 = 0x10;

/// Version 0x11 (the 82093AA's, and KVM's in-kernel IOAPIC's: no EOI
/// register) with the highest entry index in bits 16..24.
#[allow(clippy::cast_possible_truncation)]
const VERSION: u32 = 0x11 | ((IOAPIC_PINS as u32 - 1) << 16);
/// The four bits of the ID register (and the arbitration ID) that exist.
const ID_MASK: u32 = 0x0f00_0000;

const RTE_VECTOR: u64 = 0xff;
const RTE_DELIVERY_MODE_SHIFT: u32 = 8;
const RTE_DELIVERY_MODE: u64 = 0x7 << RTE_DELIVERY_MODE_SHIFT;
const RTE_DEST_MODE_LOGICAL: u64 = 1 << 11;
const RTE_POLARITY_LOW: u64 = 1 << 13;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_TRIGGER_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
const RTE_DEST_SHIFT: u32 = 56;
const RTE_DEST: u64 = 0xff << RTE_DEST_SHIFT;
/// The bits a guest may write; delivery status and remote IRR are the
/// chip's own, and bits 17..56 are reserved.
const RTE_WRITABLE: u64 = RTE_VECTOR
    | RTE_DELIVERY_MODE
    | RTE_DEST_MODE_LOGICAL
    | RTE_POLARITY_LOW
    | RTE_TRIGGER_LEVEL
    | RTE_MASKED
    | RTE_DEST;

/// Delivery modes 0 (fixed), 1 (lowest priority), 2 (SMI), 4 (NMI),
/// 5 (INIT) and 7 (ExtINT) exist; 3 and 6 are reserved and deliver nothing.
const RESERVED_DELIVERY_MODES: [u64; 2] = [3, 6];

/// Base of the MSI address window: messages to the local APICs.
const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;
const MSI_ADDRESS_DEST_SHIFT: u32 = 12;
const MSI_ADDRESS_DEST_MODE_LOGICAL: u64 = 1 << 2;
const MSI_DATA_LEVEL_ASSERT: u32 = 1 << 14;
const MSI_DATA_TRIGGER_LEVEL: u32 = 1 << 15;

/// An interrupt message to the local APICs, as a PCI device would write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// Address: `0xfee00000 | dest << 12 | dest mode << 2`.
    pub address: u64,
    /// Data: vector, delivery mode, level assert and trigger mode.
    pub data: u32,
}

/// Where the I/O APIC sends its interrupts: KVM in a VM, a recorder in tests.
pub trait IoapicSink: Send + Sync {
    /// From now on GSI `pin` raised by an irqfd delivers `msi`, or nothing
    /// while the pin is masked (`None`).
    fn set_route(&self, pin: u32, msi: Option<MsiMessage>) -> std::io::Result<()>;
    /// Deliver `msi` now.
    fn send_msi(&self, msi: MsiMessage) -> std::io::Result<()>;
}

/// What the guest sees of the I/O APIC, and the level of each input line.
pub struct Ioapic {
    sink: Arc<dyn IoapicSink>,
    id: u32,
    select: u8,
    entries: [u64; IOAPIC_PINS],
    /// Lines raised from user space and still high (level-triggered).
    asserted: [bool; IOAPIC_PINS],
    /// The route each pin has in the sink, so an entry write that does not
    /// change the message does not rebuild KVM's routing table.
    routes: [Option<MsiMessage>; IOAPIC_PINS],
}

impl Ioapic {
    /// An I/O APIC after reset: every pin masked, no routes.
    pub fn new(sink: Arc<dyn IoapicSink>) -> Self {
        Self {
            sink,
            id: 0,
            select: 0,
            entries: [RTE_MASKED; IOAPIC_PINS],
            asserted: [false; IOAPIC_PINS],
            routes: [None; IOAPIC_PINS],
        }
    }

    /// Redirection entry `pin`, as the guest would read it (`None` past the
    /// last pin).
    pub fn entry(&self, pin: usize) -> Option<u64> {
        self.entries.get(pin).copied()
    }

    /// Drive input line `pin` from user space: `true` raises it. An edge-
    /// triggered pin delivers on a rising edge; a level-triggered one
    /// delivers while high, once per EOI.
    pub fn set_irq(&mut self, pin: usize, level: bool) {
        let Some(&entry) = self.entries.get(pin) else {
            tracing::warn!(pin, "interrupt on a pin the I/O APIC does not have");
            return;
        };
        let rising = level && !self.asserted[pin];
        self.asserted[pin] = level;
        if entry & RTE_TRIGGER_LEVEL != 0 {
            self.service(pin);
        } else if rising && entry & RTE_MASKED == 0 {
            self.deliver(pin);
        }
    }

    /// The guest's local APIC ended interrupt `vector` (KVM's
    /// `KVM_EXIT_IOAPIC_EOI`): clear remote IRR of every level-triggered
    /// pin with that vector and deliver again those still asserted.
    pub fn end_of_interrupt(&mut self, vector: u8) {
        for pin in 0..IOAPIC_PINS {
            let entry = self.entries[pin];
            if entry & RTE_VECTOR == u64::from(vector) && entry & RTE_TRIGGER_LEVEL != 0 {
                self.entries[pin] &= !RTE_REMOTE_IRR;
                self.service(pin);
            }
        }
    }

    /// Deliver a level-triggered pin if it is asserted, unmasked and not
    /// already waiting for its EOI.
    fn service(&mut self, pin: usize) {
        let entry = self.entries[pin];
        if self.asserted[pin]
            && entry & RTE_TRIGGER_LEVEL != 0
            && entry & (RTE_MASKED | RTE_REMOTE_IRR) == 0
            && self.deliver(pin)
        {
            self.entries[pin] |= RTE_REMOTE_IRR;
        }
    }

    fn deliver(&self, pin: usize) -> bool {
        let Some(msi) = message(self.entries[pin]) else {
            return false;
        };
        match self.sink.send_msi(msi) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(pin, "I/O APIC delivery failed: {e}");
                false
            }
        }
    }

    fn read_register(&self) -> u32 {
        match self.select {
            REG_ID | REG_ARBITRATION => self.id,
            REG_VERSION => VERSION,
            reg => match redirection_register(reg) {
                Some((pin, high)) => {
                    let [lo, hi] = split(self.entries[pin]);
                    if high {
                        hi
                    } else {
                        lo
                    }
                }
                None => 0,
            },
        }
    }

    fn write_register(&mut self, value: u32) {
        match self.select {
            REG_ID => self.id = value & ID_MASK,
            // Version and arbitration ID are read-only.
            REG_VERSION | REG_ARBITRATION => {}
            reg => {
                let Some((pin, high)) = redirection_register(reg) else {
                    tracing::debug!(reg, "write to a missing I/O APIC register");
                    return;
                };
                let old = self.entries[pin];
                let [lo, hi] = split(old);
                let new = if high {
                    join(lo, value)
                } else {
                    join(value, hi)
                };
                let mut entry = (old & !RTE_WRITABLE) | (new & RTE_WRITABLE);
                // Remote IRR only means something for level-triggered pins.
                if entry & RTE_TRIGGER_LEVEL == 0 {
                    entry &= !RTE_REMOTE_IRR;
                }
                self.entries[pin] = entry;
                self.update_route(pin);
                // Unmasking a level-triggered line that is still high
                // delivers it, as the hardware does.
                self.service(pin);
            }
        }
    }

    fn update_route(&mut self, pin: usize) {
        let entry = self.entries[pin];
        let route = if entry & RTE_MASKED == 0 {
            message(entry)
        } else {
            None
        };
        if route == self.routes[pin] {
            return;
        }
        #[allow(clippy::cast_possible_truncation)]
        match self.sink.set_route(pin as u32, route) {
            Ok(()) => {
                tracing::debug!(pin, ?route, "I/O APIC pin routed");
                self.routes[pin] = route;
            }
            Err(e) => tracing::warn!(pin, "setting the I/O APIC route failed: {e}"),
        }
    }
}

/// The MSI message redirection entry `entry` sends, or `None` for a
/// reserved delivery mode.
pub fn message(entry: u64) -> Option<MsiMessage> {
    let mode = (entry & RTE_DELIVERY_MODE) >> RTE_DELIVERY_MODE_SHIFT;
    if RESERVED_DELIVERY_MODES.contains(&mode) {
        return None;
    }
    let dest = entry >> RTE_DEST_SHIFT;
    let mut address = MSI_ADDRESS_BASE | dest << MSI_ADDRESS_DEST_SHIFT;
    if entry & RTE_DEST_MODE_LOGICAL != 0 {
        address |= MSI_ADDRESS_DEST_MODE_LOGICAL;
    }
    let [lo, _] = split(entry);
    // Vector and delivery mode sit at the same bits in both formats.
    let mut data = lo & 0x7ff;
    if entry & RTE_TRIGGER_LEVEL != 0 {
        data |= MSI_DATA_TRIGGER_LEVEL | MSI_DATA_LEVEL_ASSERT;
    }
    Some(MsiMessage { address, data })
}

/// Which pin and which half register `reg` selects, if any.
fn redirection_register(reg: u8) -> Option<(usize, bool)> {
    let index = usize::from(reg.checked_sub(REG_REDIR_FIRST)?);
    let pin = index / 2;
    (pin < IOAPIC_PINS).then_some((pin, index % 2 == 1))
}

fn split(v: u64) -> [u32; 2] {
    let b = v.to_le_bytes();
    [
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    ]
}

fn join(lo: u32, hi: u32) -> u64 {
    u64::from(hi) << 32 | u64::from(lo)
}

impl BusDevice for Ioapic {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The chip decodes 32-bit accesses to its two registers (and a byte
        // read of the index); anything else reads as the bus left it.
        match (offset, data.len()) {
            (IOREGSEL, 4) => data.copy_from_slice(&u32::from(self.select).to_le_bytes()),
            (IOREGSEL, 1) => data[0] = self.select,
            (IOWIN, 4) => data.copy_from_slice(&self.read_register().to_le_bytes()),
            _ => tracing::debug!(offset, len = data.len(), "odd I/O APIC read"),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (IOREGSEL, [b0, ..]) if matches!(data.len(), 1 | 4) => self.select = *b0,
            (IOWIN, &[b0, b1, b2, b3]) => self.write_register(u32::from_le_bytes([b0, b1, b2, b3])),
            _ => tracing::debug!(offset, len = data.len(), "odd I/O APIC write"),
        }
    }
}

#[cfg(test)]
mod tests;
