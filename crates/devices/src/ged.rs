//! The ACPI Generic Event Device (GED, `ACPI0013`): how a HW-reduced ACPI
//! platform, which has no SCI and no GPE blocks, tells the guest that
//! something happened (the power button was pressed, a PCI slot changed).
//!
//! The VMM calls [`Ged::notify`] with a [`GedEvent`]; that sets the event's
//! bit in the event register and pulses the GED's interrupt through an
//! irqfd. The guest's `_EVT` method (in the DSDT, see `arch::acpi`) reads
//! the register and dispatches on its bits.
//!
//! Register block (map it with [`GED_RANGE_LEN`]):
//!
//! | offset | width | register |
//! |---|---|---|
//! | 0 | 32 bits | event status: bit 0 power button, bit 1 PCI hot-plug; **read to clear** |
//! | 4..16 | | reserved: read as zero, writes ignored |
//!
//! A read clears exactly the bits it returned, so a 1-byte read of offset 0
//! cannot lose an event in a byte it did not read. Writes are ignored: there
//! is no separate acknowledgement.
//!
//! The interrupt is meant to be edge triggered (the DSDT says so): an irqfd
//! without a resample fd can only pulse a line, and an edge plus
//! read-to-clear loses nothing. An event that lands before `_EVT`'s read is
//! returned by that read (its own pulse then finds the register empty,
//! which `_EVT` ignores); one that lands after the read pulses the line
//! again.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Length of the GED's register block as mapped.
pub const GED_RANGE_LEN: u64 = 0x10;
/// Offset of the event status register.
pub const GED_STATUS_OFFSET: u64 = 0;
/// Width of the event status register in bytes.
const STATUS_LEN: u64 = 4;

/// Something the GED tells the guest about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GedEvent {
    /// The power button was pressed: the guest should shut down.
    PowerButton,
    /// A PCI slot of bus 0 gained a device or is asked to give one up;
    /// the hot-plug registers say which.
    PciHotplug,
}

impl GedEvent {
    /// The event's bit in the status register (and in the DSDT's `_EVT`).
    pub const fn bit(self) -> u32 {
        match self {
            GedEvent::PowerButton => 1 << 0,
            GedEvent::PciHotplug => 1 << 1,
        }
    }
}

/// State shared by every handle to one GED.
#[derive(Debug)]
struct Shared {
    status: AtomicU32,
    irq: EventFd,
    /// Events notified, for counters.
    notified: AtomicU64,
}

/// The Generic Event Device.
///
/// Cloning gives another handle to the same device: the VMM keeps one (to
/// call [`Ged::notify`] from its API thread) and puts another on the MMIO
/// bus. Neither needs a lock: the state is atomic.
#[derive(Clone, Debug)]
pub struct Ged {
    shared: Arc<Shared>,
}

impl Ged {
    /// A GED that pulses its interrupt by writing `irq` (an eventfd the VMM
    /// registered as an irqfd on the GED's GSI).
    pub fn new(irq: EventFd) -> Self {
        Self {
            shared: Arc::new(Shared {
                status: AtomicU32::new(0),
                irq,
                notified: AtomicU64::new(0),
            }),
        }
    }

    /// Latches `event` in the status register and raises the interrupt.
    ///
    /// The interrupt is raised even if the bit was already set and not yet
    /// read: a pulse too many costs the guest one `_EVT` run that finds
    /// nothing new, a pulse too few would leave the event unseen.
    pub fn notify(&self, event: GedEvent) -> std::io::Result<()> {
        self.shared.status.fetch_or(event.bit(), Ordering::SeqCst);
        self.shared.notified.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("ged: {event:?}");
        self.shared.irq.write(1)
    }

    /// Events set and not yet read by the guest (the status register,
    /// without clearing it).
    pub fn pending(&self) -> u32 {
        self.shared.status.load(Ordering::SeqCst)
    }

    /// How many times [`Ged::notify`] was called.
    pub fn notified(&self) -> u64 {
        self.shared.notified.load(Ordering::Relaxed)
    }
}

/// The bytes of a `len`-byte access at `offset` that fall in the status
/// register: (index in the access, byte of the register). Checked
/// arithmetic, so any offset a guest can produce is fine.
fn status_bytes(offset: u64, len: usize) -> impl Iterator<Item = (usize, u32)> {
    (0..len).filter_map(move |i| {
        let byte = offset
            .checked_add(u64::try_from(i).ok()?)?
            .checked_sub(GED_STATUS_OFFSET)
            .filter(|b| *b < STATUS_LEN)?;
        Some((i, u32::try_from(byte).ok()?))
    })
}

impl BusDevice for Ged {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let mask = status_bytes(offset, data.len()).fold(0u32, |m, (_, b)| m | 0xff << (b * 8));
        if mask == 0 {
            return;
        }
        let taken = self.shared.status.fetch_and(!mask, Ordering::SeqCst) & mask;
        let bytes = taken.to_le_bytes();
        for (i, b) in status_bytes(offset, data.len()) {
            data[i] = bytes[b as usize];
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        tracing::debug!("ged: ignored {}-byte write at {offset:#x}", data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ged() -> (Ged, EventFd) {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        (Ged::new(irq.try_clone().unwrap()), irq)
    }

    fn read_u32(dev: &mut Ged, offset: u64) -> u32 {
        let mut b = [0xffu8; 4];
        dev.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn bits_and_size_match_the_acpi_tables() {
        use arch::layout;
        assert_eq!(GedEvent::PowerButton.bit(), layout::GED_EVENT_POWER_BUTTON);
        assert_eq!(GedEvent::PciHotplug.bit(), layout::GED_EVENT_PCI_HOTPLUG);
        assert_eq!(GED_RANGE_LEN, layout::GED_MMIO_SIZE);
    }

    #[test]
    fn notify_sets_the_bit_and_pulses_the_irq() {
        let (ged, irq) = ged();
        let mut on_bus = ged.clone();
        ged.notify(GedEvent::PowerButton).unwrap();
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(ged.pending(), 1);
        ged.notify(GedEvent::PciHotplug).unwrap();
        ged.notify(GedEvent::PciHotplug).unwrap();
        assert_eq!(irq.read().unwrap(), 2, "every notify pulses");
        assert_eq!(ged.notified(), 3);

        assert_eq!(read_u32(&mut on_bus, 0), 0b11);
        assert_eq!(read_u32(&mut on_bus, 0), 0, "read clears");
        assert_eq!(ged.pending(), 0);
    }

    #[test]
    fn a_read_clears_only_the_bytes_it_returns() {
        let (ged, _irq) = ged();
        let mut dev = ged.clone();
        ged.notify(GedEvent::PciHotplug).unwrap();
        // Byte 1 holds no event bits: reading it clears nothing.
        let mut b = [0xffu8];
        dev.read(1, &mut b);
        assert_eq!(b, [0]);
        assert_eq!(ged.pending(), 2);
        // A 2-byte read at offset 3 overlaps the register by one byte only.
        let mut w = [0xffu8; 2];
        dev.read(3, &mut w);
        assert_eq!(w, [0, 0]);
        assert_eq!(ged.pending(), 2);
        dev.read(0, &mut b);
        assert_eq!(b, [2]);
        assert_eq!(ged.pending(), 0);
    }

    #[test]
    fn wild_accesses_are_harmless() {
        let (ged, irq) = ged();
        let mut dev = ged.clone();
        ged.notify(GedEvent::PowerButton).unwrap();
        for offset in [0, 1, 3, 4, 8, 15, u64::MAX - 1] {
            for len in [1, 2, 4, 8] {
                dev.write(offset, &vec![0xff; len]);
            }
        }
        assert_eq!(ged.pending(), 1, "writes change nothing");
        let mut q = [0xffu8; 8];
        dev.read(8, &mut q);
        assert_eq!(q, [0; 8]);
        dev.read(u64::MAX - 3, &mut q);
        assert_eq!(q, [0; 8]);
        assert_eq!(ged.pending(), 1);
        // An 8-byte read at 0 returns the register and zeros.
        dev.read(0, &mut q);
        assert_eq!(q, [1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(irq.read().unwrap(), 1);
    }
}
