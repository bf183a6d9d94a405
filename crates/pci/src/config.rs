//! A PCI function's configuration space: registers, which bits the guest
//! may change, BARs and the capability list.
//!
//! Every register write goes through a per-bit writable mask, so BAR sizing
//! (write all ones, read back the size mask) and read-only fields behave as
//! on hardware without special cases.

/// Bytes of configuration space per function (PCIe extended space).
pub const CONFIG_SPACE_SIZE: usize = 4096;
const NUM_REGS: usize = CONFIG_SPACE_SIZE / 4;

/// Offset of the command register (16 bits, followed by status).
pub const COMMAND_REG: usize = 1;
/// Command register: respond to memory-space accesses.
pub const COMMAND_MEMORY_SPACE: u32 = 1 << 1;
/// Command register: the function may master the bus (DMA, MSI).
pub const COMMAND_BUS_MASTER: u32 = 1 << 2;
/// Command register: INTx disabled.
pub const COMMAND_INTX_DISABLE: u32 = 1 << 10;
const STATUS_CAPABILITIES_LIST: u32 = 1 << (16 + 4);
/// Register holding the first BAR.
pub const BAR0_REG: usize = 4;
/// BARs in a type 0 header.
pub const NUM_BARS: usize = 6;
const SUBSYSTEM_REG: usize = 11;
const CAPABILITY_POINTER_REG: usize = 13;
const INTERRUPT_REG: usize = 15;
/// Where the capability list starts (after the type 0 header).
const FIRST_CAPABILITY_OFFSET: usize = 0x40;
/// End of the legacy (non-extended) configuration space.
const LEGACY_CONFIG_END: usize = 0x100;

const BAR_MEM_64BIT: u32 = 0b100;
const BAR_PREFETCHABLE: u32 = 0b1000;

/// What identifies a function to the guest.
#[derive(Debug, Clone, Copy, Default)]
pub struct PciHeader {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision_id: u8,
    /// Class code.
    pub class: u8,
    /// Subclass code.
    pub subclass: u8,
    /// Programming interface.
    pub prog_if: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
}

/// A memory BAR: its size and type. I/O BARs are not offered: guests at
/// CPL 3 cannot reach port I/O here, and virtio needs none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarSpec {
    /// Size in bytes: a power of two, at least 4 KiB.
    pub size: u64,
    /// Whether the BAR takes two registers and may sit above 4 GiB.
    pub is_64bit: bool,
    /// Whether the prefetchable bit is set.
    pub prefetchable: bool,
}

/// A BAR's current place in guest-physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRange {
    /// BAR index (0..6).
    pub index: u8,
    /// Guest-physical base address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Errors building a configuration space.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The BAR index is taken, out of range, or (64-bit) has no room for its upper half.
    #[error("BAR {0} is already used or out of range")]
    BarSlot(usize),
    /// The BAR size is not a power of two of at least 4 KiB.
    #[error("BAR size {0:#x} is not a power of two of at least 4 KiB")]
    BarSize(u64),
    /// The capability list is full.
    #[error("no room for a {0}-byte capability")]
    CapabilitySpace(usize),
}

/// The configuration space of one PCI function (type 0 header).
#[derive(Clone)]
pub struct PciConfiguration {
    regs: Box<[u32; NUM_REGS]>,
    writable: Box<[u32; NUM_REGS]>,
    bars: [Option<BarSpec>; NUM_BARS],
    last_capability: Option<usize>,
    next_capability: usize,
}

impl PciConfiguration {
    /// A type 0 header with `header`'s identity, memory decoding off.
    pub fn new(header: &PciHeader) -> Self {
        let mut regs = Box::new([0u32; NUM_REGS]);
        let mut writable = Box::new([0u32; NUM_REGS]);
        regs[0] = u32::from(header.device_id) << 16 | u32::from(header.vendor_id);
        regs[2] = u32::from(header.class) << 24
            | u32::from(header.subclass) << 16
            | u32::from(header.prog_if) << 8
            | u32::from(header.revision_id);
        regs[SUBSYSTEM_REG] =
            u32::from(header.subsystem_id) << 16 | u32::from(header.subsystem_vendor_id);
        writable[COMMAND_REG] = COMMAND_MEMORY_SPACE | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
        // Interrupt line is scratch space for the guest; the pin stays 0
        // (no INTx: our functions interrupt through MSI-X only).
        writable[INTERRUPT_REG] = 0xff;
        Self {
            regs,
            writable,
            bars: [None; NUM_BARS],
            last_capability: None,
            next_capability: FIRST_CAPABILITY_OFFSET,
        }
    }

    /// Declare BAR `index` (and `index + 1` for a 64-bit BAR).
    pub fn add_bar(&mut self, index: usize, spec: BarSpec) -> Result<(), ConfigError> {
        let slots = if spec.is_64bit { 2 } else { 1 };
        if index + slots > NUM_BARS || self.bar_slot_used(index, slots) {
            return Err(ConfigError::BarSlot(index));
        }
        let fits = if spec.is_64bit {
            true
        } else {
            spec.size <= 1 << 31
        };
        if !spec.size.is_power_of_two() || spec.size < 0x1000 || !fits {
            return Err(ConfigError::BarSize(spec.size));
        }
        let mask = !(spec.size - 1);
        let mut flags = 0;
        if spec.is_64bit {
            flags |= BAR_MEM_64BIT;
        }
        if spec.prefetchable {
            flags |= BAR_PREFETCHABLE;
        }
        let reg = BAR0_REG + index;
        self.regs[reg] = flags;
        self.writable[reg] = low_half(mask) & !0xf;
        if spec.is_64bit {
            self.writable[reg + 1] = high_half(mask);
        }
        self.bars[index] = Some(spec);
        Ok(())
    }

    fn bar_slot_used(&self, index: usize, slots: usize) -> bool {
        (0..NUM_BARS).any(|i| {
            self.bars[i].is_some_and(|b| {
                let n = if b.is_64bit { 2 } else { 1 };
                i < index + slots && index < i + n
            })
        })
    }

    /// Set BAR `index`'s address (as firmware would before boot).
    pub fn set_bar_address(&mut self, index: usize, addr: u64) {
        let Some(spec) = self.bars.get(index).copied().flatten() else {
            return;
        };
        let reg = BAR0_REG + index;
        let mask = !(spec.size - 1);
        self.regs[reg] = (self.regs[reg] & 0xf) | (low_half(addr & mask) & !0xf);
        if spec.is_64bit {
            self.regs[reg + 1] = high_half(addr & mask);
        }
    }

    /// BAR `index`'s programmed address, if it is a BAR.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let spec = self.bars.get(index).copied().flatten()?;
        let reg = BAR0_REG + index;
        let low = u64::from(self.regs[reg] & !0xf);
        let high = if spec.is_64bit {
            u64::from(self.regs[reg + 1])
        } else {
            0
        };
        Some(high << 32 | low)
    }

    /// The BARs the function decodes now: memory space enabled, each at
    /// its programmed address. Sizing probes (all ones) are included; the
    /// bus ignores BARs outside its windows.
    pub fn decoded_bars(&self) -> Vec<BarRange> {
        if self.regs[COMMAND_REG] & COMMAND_MEMORY_SPACE == 0 {
            return Vec::new();
        }
        (0..NUM_BARS)
            .filter_map(|i| {
                let spec = self.bars[i]?;
                let addr = self.bar_address(i)?;
                let index = u8::try_from(i).ok()?;
                Some(BarRange {
                    index,
                    addr,
                    len: spec.size,
                })
            })
            .collect()
    }

    /// Turn memory decoding and bus mastering on (as firmware would).
    pub fn enable_memory_and_bus_master(&mut self) {
        self.regs[COMMAND_REG] |= COMMAND_MEMORY_SPACE | COMMAND_BUS_MASTER;
    }

    /// Append a capability with ID `id` whose body (after the ID and next
    /// pointer) is `body`; `writable` masks the bits of the body the guest
    /// may change, byte for byte. Returns the capability's offset.
    pub fn add_capability(
        &mut self,
        id: u8,
        body: &[u8],
        writable: &[u8],
    ) -> Result<usize, ConfigError> {
        let len = (body.len() + 2).next_multiple_of(4);
        let offset = self.next_capability;
        if offset + len > LEGACY_CONFIG_END {
            return Err(ConfigError::CapabilitySpace(len));
        }
        self.write_byte_raw(offset, id, 0);
        self.write_byte_raw(offset + 1, 0, 0);
        for (i, &b) in body.iter().enumerate() {
            self.write_byte_raw(offset + 2 + i, b, writable.get(i).copied().unwrap_or(0));
        }
        match self.last_capability {
            Some(prev) => self.write_byte_raw(prev + 1, offset_byte(offset), 0),
            None => {
                self.regs[CAPABILITY_POINTER_REG] = u32::from(offset_byte(offset));
                self.regs[COMMAND_REG] |= STATUS_CAPABILITIES_LIST;
            }
        }
        self.last_capability = Some(offset);
        self.next_capability = offset + len;
        Ok(offset)
    }

    fn write_byte_raw(&mut self, offset: usize, value: u8, writable: u8) {
        let (reg, shift) = (offset / 4, (offset % 4) * 8);
        self.regs[reg] = (self.regs[reg] & !(0xff << shift)) | u32::from(value) << shift;
        self.writable[reg] = (self.writable[reg] & !(0xff << shift)) | u32::from(writable) << shift;
    }

    /// Register `reg` (a dword index) as the guest reads it.
    pub fn read_reg(&self, reg: usize) -> u32 {
        self.regs.get(reg).copied().unwrap_or(u32::MAX)
    }

    /// Read `data.len()` bytes at byte `offset`, as the guest would.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        read_dword_bytes(|reg| self.read_reg(reg), offset, data);
    }

    /// A guest write of `data` at byte `offset`: only writable bits change.
    /// Writes that straddle registers or run past the space are applied
    /// byte by byte as far as they reach, like split accesses.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let o = offset + i;
            if o >= CONFIG_SPACE_SIZE {
                break;
            }
            let (reg, shift) = (o / 4, (o % 4) * 8);
            let mask = self.writable[reg] & (0xff << shift);
            self.regs[reg] = (self.regs[reg] & !mask) | (u32::from(b) << shift & mask);
        }
    }

    /// Overwrite register `reg` regardless of the writable mask (for the
    /// function's own state, such as a capability's read-only fields).
    pub fn set_reg(&mut self, reg: usize, value: u32) {
        if let Some(r) = self.regs.get_mut(reg) {
            *r = value;
        }
    }
}

#[allow(clippy::cast_possible_truncation)] // keeping the low 32 bits is the point
fn low_half(v: u64) -> u32 {
    v as u32
}

#[allow(clippy::cast_possible_truncation)] // after the shift, 32 bits remain
fn high_half(v: u64) -> u32 {
    (v >> 32) as u32
}

/// Fill `data` from byte `off` of a configuration space whose dwords
/// `read_reg` returns, calling it once per dword the access covers (a
/// register read may have side effects, and on the bus it costs a slot
/// lookup and a lock).
pub(crate) fn read_dword_bytes(
    mut read_reg: impl FnMut(usize) -> u32,
    off: usize,
    data: &mut [u8],
) {
    let mut done = 0;
    while done < data.len() {
        let o = off + done;
        let (reg, byte) = (o / 4, o % 4);
        let n = (4 - byte).min(data.len() - done);
        let word = read_reg(reg).to_le_bytes();
        data[done..done + n].copy_from_slice(&word[byte..byte + n]);
        done += n;
    }
}

fn offset_byte(offset: usize) -> u8 {
    // Capabilities live below 0x100 (checked when added).
    u8::try_from(offset).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PciConfiguration {
        PciConfiguration::new(&PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1042,
            class: 1,
            ..Default::default()
        })
    }

    #[test]
    fn identity_is_read_only() {
        let mut c = config();
        c.write(0, &[0xff; 4]);
        assert_eq!(c.read_reg(0), 0x1042_1af4);
        assert_eq!(c.read_reg(2) >> 24, 1);
    }

    #[test]
    fn bar_sizing_reads_back_the_size_mask() {
        let mut c = config();
        let spec = BarSpec {
            size: 0x4000,
            is_64bit: true,
            prefetchable: false,
        };
        c.add_bar(0, spec).unwrap();
        c.write(0x10, &u32::MAX.to_le_bytes());
        c.write(0x14, &u32::MAX.to_le_bytes());
        assert_eq!(c.read_reg(4), 0xffff_c000 | BAR_MEM_64BIT);
        assert_eq!(c.read_reg(5), u32::MAX);
        c.write(0x10, &0xc000_0000u32.to_le_bytes());
        c.write(0x14, &0u32.to_le_bytes());
        assert_eq!(c.bar_address(0), Some(0xc000_0000));
        assert!(c.decoded_bars().is_empty(), "memory decoding is off");
        c.write(4, &COMMAND_MEMORY_SPACE.to_le_bytes()[..1]);
        assert_eq!(
            c.decoded_bars(),
            vec![BarRange {
                index: 0,
                addr: 0xc000_0000,
                len: 0x4000
            }]
        );
    }

    #[test]
    fn bars_reject_overlap_and_bad_sizes() {
        let mut c = config();
        let b64 = BarSpec {
            size: 0x1000,
            is_64bit: true,
            prefetchable: false,
        };
        c.add_bar(0, b64).unwrap();
        assert_eq!(c.add_bar(1, b64), Err(ConfigError::BarSlot(1)));
        assert_eq!(c.add_bar(5, b64), Err(ConfigError::BarSlot(5)));
        let bad = BarSpec {
            size: 0x1800,
            ..b64
        };
        assert_eq!(c.add_bar(2, bad), Err(ConfigError::BarSize(0x1800)));
    }

    #[test]
    fn capabilities_form_a_list() {
        let mut c = config();
        let a = c
            .add_capability(0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], &[])
            .unwrap();
        let b = c.add_capability(0x09, &[0; 14], &[]).unwrap();
        assert_eq!(a, 0x40);
        assert_eq!(b, 0x4c);
        assert_eq!(c.read_reg(CAPABILITY_POINTER_REG) & 0xff, 0x40);
        assert_ne!(c.read_reg(COMMAND_REG) & STATUS_CAPABILITIES_LIST, 0);
        let mut hdr = [0u8; 2];
        c.read(a, &mut hdr);
        assert_eq!(hdr, [0x11, 0x4c]);
        c.read(b, &mut hdr);
        assert_eq!(hdr, [0x09, 0]);
    }

    #[test]
    fn capability_writes_obey_the_mask() {
        let mut c = config();
        let off = c.add_capability(0x11, &[0, 0], &[0, 0xc0]).unwrap();
        c.write(off + 2, &[0xff, 0xff]);
        let mut v = [0u8; 2];
        c.read(off + 2, &mut v);
        assert_eq!(v, [0, 0xc0]);
    }

    #[test]
    fn out_of_range_accesses_are_harmless() {
        let mut c = config();
        c.write(CONFIG_SPACE_SIZE - 2, &[1, 2, 3, 4]);
        let mut v = [0u8; 4];
        c.read(CONFIG_SPACE_SIZE - 2, &mut v);
        assert_eq!(&v[2..], &[0xff, 0xff]);
    }
}
