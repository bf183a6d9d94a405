//! The PCI bus: 32 device slots on bus 0 and the routing of configuration
//! and BAR accesses to the function that owns them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::config::{BarRange, CONFIG_SPACE_SIZE};
use crate::device::PciDevice;
use crate::host_bridge::HostBridge;

/// Device slots on a bus.
pub const NUM_SLOTS: u8 = 32;

/// A function shared between the bus and whoever created it.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// Errors adding or removing functions.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciBusError {
    /// Every slot is taken.
    #[error("no free PCI slot on bus 0")]
    NoFreeSlot,
    /// The requested slot is taken or does not exist.
    #[error("PCI slot {0} is taken or out of range")]
    SlotTaken(u8),
    /// Nothing is in the slot.
    #[error("PCI slot {0} is empty")]
    SlotEmpty(u8),
}

#[derive(Clone)]
struct MappedBar {
    len: u64,
    slot: u8,
    bar: u8,
    device: SharedPciDevice,
}

/// Bus 0 of segment 0: the only bus Vireo has.
pub struct PciBus {
    slots: RwLock<Vec<Option<SharedPciDevice>>>,
    bars: RwLock<BTreeMap<u64, MappedBar>>,
    windows: Vec<(u64, u64)>,
}

fn lock(d: &SharedPciDevice) -> MutexGuard<'_, dyn PciDevice + 'static> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

impl PciBus {
    /// A bus whose BARs may live in `windows` (`(base, size)` each), with
    /// the host bridge in slot 0.
    pub fn new(windows: &[(u64, u64)]) -> Self {
        let mut slots: Vec<Option<SharedPciDevice>> = vec![None; usize::from(NUM_SLOTS)];
        slots[0] = Some(Arc::new(Mutex::new(HostBridge::new())));
        Self {
            slots: RwLock::new(slots),
            bars: RwLock::new(BTreeMap::new()),
            windows: windows
                .iter()
                .map(|&(b, s)| (b, b.saturating_add(s)))
                .collect(),
        }
    }

    /// Put `device` in `slot` (or the first free one); returns the slot.
    /// BARs it already decodes are mapped at once.
    pub fn add_device(&self, slot: Option<u8>, device: SharedPciDevice) -> Result<u8, PciBusError> {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        let slot = match slot {
            Some(s) if s < NUM_SLOTS && slots[usize::from(s)].is_none() => s,
            Some(s) => return Err(PciBusError::SlotTaken(s)),
            None => {
                let free = slots.iter().position(Option::is_none);
                free.and_then(|i| u8::try_from(i).ok())
                    .ok_or(PciBusError::NoFreeSlot)?
            }
        };
        let bars = self.in_windows(lock(&device).decoded_bars());
        lock(&device).bars_moved(&[], &bars);
        self.remap(slot, &device, &bars);
        slots[usize::from(slot)] = Some(device);
        Ok(slot)
    }

    /// Take the function out of `slot` (not the host bridge's).
    pub fn remove_device(&self, slot: u8) -> Result<SharedPciDevice, PciBusError> {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        let entry = slots
            .get_mut(usize::from(slot))
            .filter(|_| slot != 0)
            .ok_or(PciBusError::SlotEmpty(slot))?;
        let device = entry.take().ok_or(PciBusError::SlotEmpty(slot))?;
        let old = self.in_windows(lock(&device).decoded_bars());
        lock(&device).bars_moved(&old, &[]);
        self.remap(slot, &device, &[]);
        Ok(device)
    }

    fn device(&self, bus: u8, slot: u8, function: u8) -> Option<SharedPciDevice> {
        if bus != 0 || function != 0 {
            return None;
        }
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.get(usize::from(slot)).cloned().flatten()
    }

    /// Configuration read of dword `reg` of `bus:slot.function`; absent
    /// functions read as all ones, as on hardware.
    pub fn config_read(&self, bus: u8, slot: u8, function: u8, reg: usize) -> u32 {
        match self.device(bus, slot, function) {
            Some(d) if reg < CONFIG_SPACE_SIZE / 4 => lock(&d).config_read(reg),
            _ => u32::MAX,
        }
    }

    /// Configuration write at byte `offset` of `bus:slot.function`; writes
    /// to absent functions are dropped. If the write moves BARs, the BAR map
    /// and the function's doorbells follow.
    pub fn config_write(&self, bus: u8, slot: u8, function: u8, offset: usize, data: &[u8]) {
        let Some(device) = self.device(bus, slot, function) else {
            return;
        };
        if offset >= CONFIG_SPACE_SIZE {
            return;
        }
        let mut d = lock(&device);
        let old = self.in_windows(d.decoded_bars());
        d.config_write(offset, data);
        let new = self.in_windows(d.decoded_bars());
        if old != new {
            d.bars_moved(&old, &new);
            drop(d);
            self.remap(slot, &device, &new);
        }
    }

    /// Only BARs wholly inside a window are decoded: a BAR left at a
    /// sizing pattern or pointed at RAM or the APIC must not capture
    /// accesses (or doorbells) meant for something else.
    fn in_windows(&self, bars: Vec<BarRange>) -> Vec<BarRange> {
        bars.into_iter()
            .filter(|b| {
                let end = b.addr.checked_add(b.len);
                self.windows
                    .iter()
                    .any(|&(ws, we)| b.addr >= ws && end.is_some_and(|e| e <= we))
            })
            .collect()
    }

    fn remap(&self, slot: u8, device: &SharedPciDevice, bars: &[BarRange]) {
        let mut map = self.bars.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, m| m.slot != slot);
        for b in bars {
            map.insert(
                b.addr,
                MappedBar {
                    len: b.len,
                    slot,
                    bar: b.index,
                    device: device.clone(),
                },
            );
        }
    }

    fn find_bar(&self, addr: u64) -> Option<(MappedBar, u64)> {
        let map = self.bars.read().unwrap_or_else(|e| e.into_inner());
        let (&base, m) = map.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset < m.len).then(|| (m.clone(), offset))
    }

    /// A guest read at guest-physical `addr` inside a window. Unclaimed
    /// addresses read as all ones.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.find_bar(addr) {
            Some((m, offset)) if offset + data.len() as u64 <= m.len => {
                lock(&m.device).bar_read(m.bar, offset, data);
            }
            _ => data.fill(0xff),
        }
    }

    /// A guest write at guest-physical `addr` inside a window. Writes to
    /// unclaimed addresses are dropped.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        if let Some((m, offset)) = self.find_bar(addr) {
            if offset + data.len() as u64 <= m.len {
                lock(&m.device).bar_write(m.bar, offset, data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{PciConfigIo, PciEcam};
    use crate::config::{BarSpec, PciConfiguration, PciHeader};
    use devices::BusDevice;

    /// A function with one 64-bit BAR that records BAR traffic.
    struct Probe {
        config: PciConfiguration,
        moves: Vec<Vec<BarRange>>,
        last_write: Option<(u8, u64, Vec<u8>)>,
        config_reads: usize,
    }

    impl PciDevice for Probe {
        fn config_read(&mut self, reg: usize) -> u32 {
            self.config_reads += 1;
            self.config.read_reg(reg)
        }
        fn config_write(&mut self, offset: usize, data: &[u8]) {
            self.config.write(offset, data);
        }
        fn decoded_bars(&self) -> Vec<BarRange> {
            self.config.decoded_bars()
        }
        fn bars_moved(&mut self, _old: &[BarRange], new: &[BarRange]) {
            self.moves.push(new.to_vec());
        }
        fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
            data.fill(bar + u8::try_from(offset).unwrap_or(0xff));
        }
        fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
            self.last_write = Some((bar, offset, data.to_vec()));
        }
    }

    fn probe_bus() -> (Arc<PciBus>, Arc<Mutex<Probe>>) {
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1042,
            ..Default::default()
        });
        let spec = BarSpec {
            size: 0x4000,
            is_64bit: true,
            prefetchable: false,
        };
        config.add_bar(0, spec).unwrap();
        config.set_bar_address(0, 0xc000_0000);
        config.enable_memory_and_bus_master();
        let probe = Arc::new(Mutex::new(Probe {
            config,
            moves: Vec::new(),
            last_write: None,
            config_reads: 0,
        }));
        let bus = Arc::new(PciBus::new(&[(0xc000_0000, 0x2000_0000)]));
        assert_eq!(bus.add_device(None, probe.clone()).unwrap(), 1);
        (bus, probe)
    }

    #[test]
    fn ecam_and_cf8_see_the_same_functions() {
        let (bus, _) = probe_bus();
        let mut ecam = PciEcam::new(bus.clone());
        let mut id = [0u8; 4];
        ecam.read(1 << 15, &mut id);
        assert_eq!(u32::from_le_bytes(id), 0x1042_1af4);
        ecam.read(0, &mut id);
        assert_eq!(u32::from_le_bytes(id), 0x0008_1b36, "host bridge");
        ecam.read(2 << 15, &mut id);
        assert_eq!(id, [0xff; 4], "empty slot");
        ecam.read(1 << 20 | 1 << 15, &mut id);
        assert_eq!(id, [0xff; 4], "bus 1 does not exist");
        let mut io = PciConfigIo::new(bus);
        io.write(0, &(0x8000_0000u32 | 1 << 11).to_le_bytes());
        io.read(4, &mut id);
        assert_eq!(u32::from_le_bytes(id), 0x1042_1af4);
        let mut half = [0u8; 2];
        io.read(6, &mut half);
        assert_eq!(u16::from_le_bytes(half), 0x1042);
    }

    #[test]
    fn a_config_access_reads_each_dword_once() {
        let (bus, probe) = probe_bus();
        let mut ecam = PciEcam::new(bus.clone());
        let mut id = [0u8; 4];
        ecam.read(1 << 15, &mut id);
        assert_eq!(u32::from_le_bytes(id), 0x1042_1af4);
        assert_eq!(probe.lock().unwrap().config_reads, 1);
        let mut io = PciConfigIo::new(bus);
        io.write(0, &(0x8000_0000u32 | 1 << 11).to_le_bytes());
        let mut half = [0u8; 2];
        io.read(6, &mut half);
        assert_eq!(u16::from_le_bytes(half), 0x1042);
        assert_eq!(probe.lock().unwrap().config_reads, 2);
    }

    #[test]
    fn bar_accesses_follow_the_bar() {
        let (bus, probe) = probe_bus();
        let mut d = [0u8; 4];
        bus.mmio_read(0xc000_0010, &mut d);
        assert_eq!(d, [0x10; 4]);
        // Move the BAR through ECAM; the old address goes dead.
        let mut ecam = PciEcam::new(bus.clone());
        ecam.write(1 << 15 | 0x10, &0xc010_0000u32.to_le_bytes());
        bus.mmio_read(0xc000_0010, &mut d);
        assert_eq!(d, [0xff; 4]);
        bus.mmio_write(0xc010_0008, &[1, 2]);
        assert_eq!(probe.lock().unwrap().last_write, Some((0, 8, vec![1, 2])));
        // Sizing leaves the BAR outside the window: nothing is mapped.
        ecam.write(1 << 15 | 0x10, &u32::MAX.to_le_bytes());
        ecam.write(1 << 15 | 0x14, &u32::MAX.to_le_bytes());
        let moves = probe.lock().unwrap().moves.clone();
        assert_eq!(moves.last().unwrap(), &Vec::<BarRange>::new());
        // Accesses straddling the BAR's end are dropped.
        ecam.write(1 << 15 | 0x14, &0u32.to_le_bytes());
        ecam.write(1 << 15 | 0x10, &0xc000_0000u32.to_le_bytes());
        bus.mmio_read(0xc000_3ffe, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn slots_are_managed() {
        let (bus, probe) = probe_bus();
        assert_eq!(
            bus.add_device(Some(1), probe.clone()).unwrap_err(),
            PciBusError::SlotTaken(1)
        );
        assert!(matches!(
            bus.remove_device(0),
            Err(PciBusError::SlotEmpty(0))
        ));
        bus.remove_device(1).unwrap();
        let mut d = [0u8; 4];
        bus.mmio_read(0xc000_0000, &mut d);
        assert_eq!(d, [0xff; 4]);
        assert_eq!(bus.config_read(0, 1, 0, 0), u32::MAX);
    }
}
