//! The three ways in from a vCPU: configuration mechanism #1 (ports
//! CF8/CFC), ECAM (memory-mapped configuration), and the MMIO windows
//! where BARs live. Each is a [`BusDevice`] on the VMM's PIO or MMIO bus.

use std::sync::Arc;

use devices::BusDevice;

use crate::bus::PciBus;
use crate::config::read_dword_bytes;

/// Ports taken by configuration mechanism #1: address at 0xcf8, data at 0xcfc.
pub const CONFIG_IO_PORT: u64 = 0xcf8;
/// Length of the CF8/CFC port range.
pub const CONFIG_IO_LEN: u64 = 8;
const CONFIG_ADDRESS_ENABLE: u32 = 1 << 31;

/// Configuration mechanism #1: a 32-bit address latch and a data window.
pub struct PciConfigIo {
    bus: Arc<PciBus>,
    address: u32,
}

impl PciConfigIo {
    /// The CF8/CFC pair for `bus`.
    pub fn new(bus: Arc<PciBus>) -> Self {
        Self { bus, address: 0 }
    }

    /// (bus, slot, function, byte offset) the latch selects, if enabled.
    fn target(&self, data_offset: u64) -> Option<(u8, u8, u8, usize)> {
        if self.address & CONFIG_ADDRESS_ENABLE == 0 {
            return None;
        }
        let a = self.address;
        let bus = ((a >> 16) & 0xff) as u8;
        let slot = ((a >> 11) & 0x1f) as u8;
        let function = ((a >> 8) & 0x7) as u8;
        let reg = usize::try_from(a & 0xfc).ok()?;
        let byte = usize::try_from(data_offset).ok()?;
        Some((bus, slot, function, reg + byte))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset < 4 {
            let bytes = self.address.to_le_bytes();
            for (i, b) in data.iter_mut().enumerate() {
                *b = bytes
                    .get(usize::try_from(offset).unwrap_or(4) + i)
                    .copied()
                    .unwrap_or(0xff);
            }
            return;
        }
        data.fill(0xff);
        let Some((bus, slot, function, off)) = self.target(offset - 4) else {
            return;
        };
        read_dword_bytes(
            |reg| self.bus.config_read(bus, slot, function, reg),
            off,
            data,
        );
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.len() == 4 {
            self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            return;
        }
        if offset < 4 {
            // Byte writes to 0xcf8..0xcfb are other chipset registers on a
            // real PC (e.g. the reset control at 0xcf9); none exist here.
            return;
        }
        if let Some((bus, slot, function, off)) = self.target(offset - 4) {
            self.bus.config_write(bus, slot, function, off, data);
        }
    }
}

/// ECAM: 4 KiB of configuration space per function, bus:slot.function
/// encoded in the address.
pub struct PciEcam {
    bus: Arc<PciBus>,
}

impl PciEcam {
    /// ECAM for `bus`.
    pub fn new(bus: Arc<PciBus>) -> Self {
        Self { bus }
    }

    fn decode(offset: u64) -> (u8, u8, u8, usize) {
        let bus = ((offset >> 20) & 0xff) as u8;
        let slot = ((offset >> 15) & 0x1f) as u8;
        let function = ((offset >> 12) & 0x7) as u8;
        let reg = (offset & 0xfff) as usize;
        (bus, slot, function, reg)
    }
}

impl BusDevice for PciEcam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let (bus, slot, function, off) = Self::decode(offset);
        if off + data.len() > 0x1000 || data.len() > 4 {
            data.fill(0xff);
            return;
        }
        read_dword_bytes(
            |reg| self.bus.config_read(bus, slot, function, reg),
            off,
            data,
        );
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (bus, slot, function, off) = Self::decode(offset);
        if off + data.len() > 0x1000 || data.len() > 4 {
            return;
        }
        self.bus.config_write(bus, slot, function, off, data);
    }
}

/// One PCI MMIO window on the VMM's MMIO bus: accesses go to whichever
/// BAR holds the address.
pub struct PciMmioWindow {
    bus: Arc<PciBus>,
    base: u64,
}

impl PciMmioWindow {
    /// The window starting at guest-physical `base`.
    pub fn new(bus: Arc<PciBus>, base: u64) -> Self {
        Self { bus, base }
    }
}

impl BusDevice for PciMmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.bus.mmio_read(self.base + offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.bus.mmio_write(self.base + offset, data);
    }
}
