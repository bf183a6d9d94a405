//! ACPI PCI hot-plug registers for bus 0 (the scheme QEMU's PIIX4 ACPI
//! uses, on MMIO): how the guest's AML learns which slots changed and how
//! it tells the VMM that it let go of a device.
//!
//! Adding a device: the VMM puts it on the PCI bus, calls
//! [`PciHotplug::slot_added`], then notifies the GED's PCI hot-plug event.
//! The guest's `\_SB.PCI0.PCNT` reads `PCIU` and sends a bus check
//! (`Notify 1`) to each slot in it; the OS rescans the slot.
//!
//! Removing a device: the VMM calls [`PciHotplug::slot_removal_requested`]
//! and notifies the GED, but leaves the device on the bus. `PCNT` reads
//! `PCID` and sends an eject request (`Notify 3`) to each slot in it; the OS
//! unbinds its driver and calls the slot's `_EJ0`, which writes the slot's
//! bit to `B0EJ`. That write signals [`PciHotplug::eject_event`]; the VMM
//! then takes the bitmap with [`PciHotplug::take_ejected`] and only now
//! removes the device. A guest that never ejects keeps the device.
//!
//! Register block (map it with [`PCI_HOTPLUG_RANGE_LEN`]; every register is
//! a bitmap of the 32 slots of bus 0, bit n = slot n):
//!
//! | offset | register | access |
//! |---|---|---|
//! | 0x0 | `PCIU`: slots that gained a device | read; **read to clear** |
//! | 0x4 | `PCID`: slots asked to give up their device | read; **read to clear** |
//! | 0x8 | `B0EJ`: slots the guest has ejected | write (bits accumulate until taken); reads as zero |
//! | 0xc | reserved | reads as zero, writes ignored |
//!
//! Accesses of any width are taken byte by byte; a read clears exactly the
//! bits it returned. Slot 0 holds the host bridge: it is never reported and
//! never ejected.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Length of the register block as mapped.
pub const PCI_HOTPLUG_RANGE_LEN: u64 = 0x10;
/// Offset of `PCIU` (slots up).
pub const PCIU_OFFSET: u64 = 0x0;
/// Offset of `PCID` (slots down).
pub const PCID_OFFSET: u64 = 0x4;
/// Offset of `B0EJ` (slots ejected).
pub const B0EJ_OFFSET: u64 = 0x8;
/// Number of slots on bus 0, one bit each.
pub const HOTPLUG_SLOTS: u8 = 32;
/// Slot 0 is the host bridge's.
const HOST_BRIDGE_BIT: u32 = 1;

/// Errors from hot-plug requests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciHotplugError {
    /// Slot 0 (the host bridge) or a slot past 31.
    #[error("PCI slot {0} cannot be hot-plugged (slots 1 to 31 can)")]
    InvalidSlot(u8),
}

#[derive(Debug, Default)]
struct Registers {
    up: u32,
    down: u32,
    ejected: u32,
}

#[derive(Debug)]
struct Shared {
    registers: Mutex<Registers>,
    eject: EventFd,
    /// Slot bits the guest ejected, for counters.
    ejections: AtomicU64,
}

/// The PCI hot-plug controller of bus 0.
///
/// Cloning gives another handle to the same controller: the VMM keeps one
/// and puts another on the MMIO bus.
#[derive(Clone, Debug)]
pub struct PciHotplug {
    shared: Arc<Shared>,
}

impl PciHotplug {
    /// A controller with nothing pending, and its own (non-blocking) eject
    /// event fd.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            shared: Arc::new(Shared {
                registers: Mutex::new(Registers::default()),
                eject: EventFd::new(libc::EFD_NONBLOCK)?,
                ejections: AtomicU64::new(0),
            }),
        })
    }

    fn registers(&self) -> MutexGuard<'_, Registers> {
        // Every update is a few plain stores; a panic elsewhere cannot
        // leave them half done.
        self.shared
            .registers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Reports `slot` as having gained a device (it must already be on the
    /// bus). Cancels a removal of the same slot the guest has not read yet.
    /// Follow with the GED's PCI hot-plug event.
    pub fn slot_added(&self, slot: u8) -> Result<(), PciHotplugError> {
        let bit = slot_bit(slot)?;
        let mut r = self.registers();
        r.up |= bit;
        r.down &= !bit;
        Ok(())
    }

    /// Asks the guest to give up the device in `slot` (which stays on the
    /// bus until the guest ejects it). Cancels an addition of the same slot
    /// the guest has not read yet. Follow with the GED's PCI hot-plug event.
    pub fn slot_removal_requested(&self, slot: u8) -> Result<(), PciHotplugError> {
        let bit = slot_bit(slot)?;
        let mut r = self.registers();
        r.down |= bit;
        r.up &= !bit;
        Ok(())
    }

    /// Signalled (counter incremented) whenever the guest ejects slots;
    /// the VMM waits on it, then calls [`PciHotplug::take_ejected`].
    pub fn eject_event(&self) -> &EventFd {
        &self.shared.eject
    }

    /// The slots the guest ejected since the last call (bit n = slot n),
    /// clearing them.
    ///
    /// The guest may eject a slot the VMM never asked about (Linux can
    /// power a slot off on its own); the VMM decides what that means.
    pub fn take_ejected(&self) -> u32 {
        std::mem::take(&mut self.registers().ejected)
    }

    /// `(PCIU, PCID)` as the guest would read them now, without clearing.
    pub fn pending(&self) -> (u32, u32) {
        let r = self.registers();
        (r.up, r.down)
    }

    /// Slots ejected by the guest since the controller was made.
    pub fn ejections(&self) -> u64 {
        self.shared.ejections.load(Ordering::Relaxed)
    }
}

fn slot_bit(slot: u8) -> Result<u32, PciHotplugError> {
    match slot {
        1..HOTPLUG_SLOTS => Ok(1 << slot),
        _ => Err(PciHotplugError::InvalidSlot(slot)),
    }
}

/// Which register byte `addr` (an offset in the block) is: (register
/// offset, byte in it).
fn register_byte(addr: u64) -> Option<(u64, u32)> {
    let register = addr & !3;
    let byte = u32::try_from(addr & 3).ok()?;
    matches!(register, PCIU_OFFSET | PCID_OFFSET | B0EJ_OFFSET).then_some((register, byte))
}

/// The block offsets a `len`-byte access at `offset` covers, with their
/// index in the access; stops rather than wraps at `u64::MAX`.
fn covered(offset: u64, len: usize) -> impl Iterator<Item = (usize, u64)> {
    (0..len).map_while(move |i| Some((i, offset.checked_add(u64::try_from(i).ok()?)?)))
}

impl BusDevice for PciHotplug {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let mut r = self.registers();
        for (i, addr) in covered(offset, data.len()) {
            let register = match register_byte(addr) {
                Some((PCIU_OFFSET, byte)) => Some((&mut r.up, byte)),
                Some((PCID_OFFSET, byte)) => Some((&mut r.down, byte)),
                _ => None,
            };
            if let Some((value, byte)) = register {
                let shift = byte * 8;
                data[i] = (*value >> shift).to_le_bytes()[0];
                *value &= !(0xff << shift);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut ejected = 0u32;
        for (i, addr) in covered(offset, data.len()) {
            match register_byte(addr) {
                Some((B0EJ_OFFSET, byte)) => ejected |= u32::from(data[i]) << (byte * 8),
                _ => tracing::debug!("pci hotplug: ignored write at {addr:#x}"),
            }
        }
        ejected &= !HOST_BRIDGE_BIT;
        if ejected == 0 {
            return;
        }
        tracing::info!("pci hotplug: guest ejected slots {ejected:#010x}");
        self.registers().ejected |= ejected;
        self.shared
            .ejections
            .fetch_add(u64::from(ejected.count_ones()), Ordering::Relaxed);
        if let Err(e) = self.shared.eject.write(1) {
            tracing::error!("pci hotplug: cannot signal the eject: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_u32(dev: &mut PciHotplug, offset: u64) -> u32 {
        let mut b = [0xffu8; 4];
        dev.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn layout_matches_the_acpi_tables() {
        use arch::layout;
        assert_eq!(PCIU_OFFSET, layout::PCI_HOTPLUG_PCIU_OFFSET);
        assert_eq!(PCID_OFFSET, layout::PCI_HOTPLUG_PCID_OFFSET);
        assert_eq!(B0EJ_OFFSET, layout::PCI_HOTPLUG_B0EJ_OFFSET);
        assert_eq!(PCI_HOTPLUG_RANGE_LEN, layout::PCI_HOTPLUG_MMIO_SIZE);
    }

    #[test]
    fn added_and_removed_slots_read_once() {
        let hp = PciHotplug::new().unwrap();
        let mut dev = hp.clone();
        hp.slot_added(3).unwrap();
        hp.slot_added(31).unwrap();
        hp.slot_removal_requested(5).unwrap();
        assert_eq!(hp.pending(), (1 << 3 | 1 << 31, 1 << 5));
        assert_eq!(read_u32(&mut dev, PCIU_OFFSET), 1 << 3 | 1 << 31);
        assert_eq!(read_u32(&mut dev, PCIU_OFFSET), 0, "PCIU clears on read");
        assert_eq!(read_u32(&mut dev, PCID_OFFSET), 1 << 5);
        assert_eq!(read_u32(&mut dev, PCID_OFFSET), 0, "PCID clears on read");
        assert_eq!(read_u32(&mut dev, B0EJ_OFFSET), 0);
    }

    #[test]
    fn the_latest_request_for_a_slot_wins() {
        let hp = PciHotplug::new().unwrap();
        hp.slot_added(4).unwrap();
        hp.slot_removal_requested(4).unwrap();
        assert_eq!(hp.pending(), (0, 1 << 4));
        hp.slot_added(4).unwrap();
        assert_eq!(hp.pending(), (1 << 4, 0));
    }

    #[test]
    fn slot_zero_and_past_31_are_refused() {
        let hp = PciHotplug::new().unwrap();
        assert_eq!(hp.slot_added(0), Err(PciHotplugError::InvalidSlot(0)));
        assert_eq!(
            hp.slot_removal_requested(32),
            Err(PciHotplugError::InvalidSlot(32))
        );
        assert_eq!(hp.pending(), (0, 0));
    }

    #[test]
    fn eject_signals_and_accumulates_until_taken() {
        let hp = PciHotplug::new().unwrap();
        let mut dev = hp.clone();
        assert!(hp.eject_event().read().is_err(), "nothing yet");
        dev.write(B0EJ_OFFSET, &(1u32 << 3).to_le_bytes());
        dev.write(B0EJ_OFFSET, &(1u32 << 7).to_le_bytes());
        assert_eq!(hp.eject_event().read().unwrap(), 2);
        assert_eq!(hp.take_ejected(), 1 << 3 | 1 << 7);
        assert_eq!(hp.take_ejected(), 0);
        assert_eq!(hp.ejections(), 2);
        // The host bridge's bit is dropped; a write of nothing signals nothing.
        dev.write(B0EJ_OFFSET, &1u32.to_le_bytes());
        dev.write(B0EJ_OFFSET, &0u32.to_le_bytes());
        assert!(hp.eject_event().read().is_err());
        assert_eq!(hp.take_ejected(), 0);
    }

    #[test]
    fn narrow_accesses_work_byte_by_byte() {
        let hp = PciHotplug::new().unwrap();
        let mut dev = hp.clone();
        hp.slot_added(9).unwrap(); // byte 1 of PCIU
        hp.slot_added(2).unwrap(); // byte 0
        let mut b = [0xffu8];
        dev.read(PCIU_OFFSET + 1, &mut b);
        assert_eq!(b, [2]);
        assert_eq!(hp.pending(), (1 << 2, 0), "only the byte read is cleared");
        // Slot 17 ejected with a one-byte write to byte 2 of B0EJ.
        dev.write(B0EJ_OFFSET + 2, &[2]);
        assert_eq!(hp.take_ejected(), 1 << 17);
        // An 8-byte read at 0 returns PCIU and PCID together.
        hp.slot_removal_requested(6).unwrap();
        let mut q = [0xffu8; 8];
        dev.read(0, &mut q);
        assert_eq!(q, [4, 0, 0, 0, 1 << 6, 0, 0, 0]);
        assert_eq!(hp.pending(), (0, 0));
    }

    #[test]
    fn wild_accesses_are_harmless() {
        let hp = PciHotplug::new().unwrap();
        let mut dev = hp.clone();
        hp.slot_added(3).unwrap();
        for offset in [0, 1, 4, 7, 0xc, 0xf, u64::MAX - 2, u64::MAX] {
            for len in [1, 2, 4, 8] {
                if offset < B0EJ_OFFSET + 4 && offset.saturating_add(len as u64) > B0EJ_OFFSET {
                    continue;
                }
                dev.write(offset, &vec![0xff; len]);
            }
        }
        assert_eq!(
            hp.pending(),
            (1 << 3, 0),
            "writes outside B0EJ change nothing"
        );
        assert!(hp.eject_event().read().is_err());
        let mut q = [0xffu8; 8];
        dev.read(u64::MAX - 3, &mut q);
        assert_eq!(q, [0; 8]);
        dev.read(0xc, &mut q);
        assert_eq!(q, [0; 8]);
        assert_eq!(hp.pending(), (1 << 3, 0));
    }
}
