//! Where guest RAM goes, and the e820 map that describes it.

use vm_memory::GuestAddress;

use crate::layout::{
    EBDA_START, HIMEM_START, MMIO_HOLE_END, MMIO_HOLE_START, PCI_ECAM_SIZE, PCI_ECAM_START,
};
use crate::Error;

/// Smallest guest we build: the first megabyte plus room for a kernel.
pub const MIN_MEMORY: u64 = 4 << 20;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved ranges.
pub const E820_RESERVED: u32 = 2;

/// One entry of the guest's physical memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMapEntry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The guest-physical ranges that hold `size` bytes of RAM: below the MMIO
/// hole first, the rest from 4 GiB up.
pub fn ram_regions(size: u64) -> Result<Vec<(GuestAddress, u64)>, Error> {
    if size < MIN_MEMORY {
        return Err(Error::MemoryTooSmall {
            requested: size,
            min: MIN_MEMORY,
        });
    }
    let low = size.min(MMIO_HOLE_START);
    let mut regions = vec![(GuestAddress(0), low)];
    if size > low {
        regions.push((GuestAddress(MMIO_HOLE_END), size - low));
    }
    Ok(regions)
}

/// The RAM of `cells` (their sizes, in order) laid out one after the
/// other in guest-physical space, as [`ram_regions`] lays out their total:
/// each cell gets one range, or two when it straddles the MMIO hole.
/// Returns (cell index, base, length) in address order.
pub fn cell_regions(cells: &[u64]) -> Result<Vec<(usize, GuestAddress, u64)>, Error> {
    let total = cells.iter().try_fold(0u64, |a, &c| a.checked_add(c));
    let regions = ram_regions(total.unwrap_or(u64::MAX))?;
    let mut out = Vec::new();
    let mut region = 0;
    let mut used = 0u64;
    for (cell, &size) in cells.iter().enumerate() {
        let mut left = size;
        while left > 0 {
            let (base, len) = regions[region];
            let take = left.min(len - used);
            out.push((cell, GuestAddress(base.0 + used), take));
            left -= take;
            used += take;
            if used == len {
                region += 1;
                used = 0;
            }
        }
    }
    Ok(out)
}

/// The memory map a guest with `size` bytes of RAM sees.
///
/// The legacy area below 1 MiB is reserved from the EBDA up (ACPI tables
/// live there), and ECAM is listed as reserved because Linux only trusts an
/// MCFG region that the firmware map reserves.
pub fn memory_map(size: u64) -> Result<Vec<MemoryMapEntry>, Error> {
    let regions = ram_regions(size)?;
    let low_end = regions[0].1;
    let mut map = vec![
        MemoryMapEntry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        MemoryMapEntry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
        MemoryMapEntry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820_RAM,
        },
        MemoryMapEntry {
            addr: PCI_ECAM_START,
            size: PCI_ECAM_SIZE,
            kind: E820_RESERVED,
        },
    ];
    if let Some(&(high, len)) = regions.get(1) {
        map.push(MemoryMapEntry {
            addr: high.0,
            size: len,
            kind: E820_RAM,
        });
    }
    Ok(map)
}

/// End (exclusive) of RAM below 4 GiB for a guest of `size` bytes.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_HOLE_START)
}

/// Where the 64-bit PCI MMIO window starts for a VM with `size` bytes of
/// RAM: the first aligned address above all RAM (and never below 4 GiB).
pub fn pci_mmio64_start(size: u64) -> u64 {
    let ram_top = crate::layout::MMIO_HOLE_END + (size - low_ram_end(size));
    ram_top.next_multiple_of(crate::layout::PCI_MMIO64_ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_region() {
        let r = ram_regions(128 << 20).unwrap();
        assert_eq!(r, vec![(GuestAddress(0), 128 << 20)]);
        let map = memory_map(128 << 20).unwrap();
        assert_eq!(map[2].addr + map[2].size, 128 << 20);
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn large_guest_skips_the_hole() {
        let r = ram_regions(4 << 30).unwrap();
        assert_eq!(
            r,
            vec![(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 1 << 30)]
        );
        let map = memory_map(4 << 30).unwrap();
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        // Everything but the EBDA..1 MiB gap is usable.
        assert_eq!(ram, (4 << 30) - (HIMEM_START - EBDA_START));
        // Nothing usable inside the hole.
        assert!(map.iter().all(|e| e.kind != E820_RAM
            || e.addr + e.size <= MMIO_HOLE_START
            || e.addr >= MMIO_HOLE_END));
    }

    #[test]
    fn cells_follow_each_other_around_the_hole() {
        let r = cell_regions(&[1 << 30, 1 << 30]).unwrap();
        assert_eq!(
            r,
            vec![
                (0, GuestAddress(0), 1 << 30),
                (1, GuestAddress(1 << 30), 1 << 30)
            ]
        );
        // Cell 1 straddles the hole: it gets two ranges.
        let r = cell_regions(&[2 << 30, 2 << 30, 1 << 30]).unwrap();
        assert_eq!(
            r,
            vec![
                (0, GuestAddress(0), 2 << 30),
                (1, GuestAddress(2 << 30), 1 << 30),
                (1, GuestAddress(MMIO_HOLE_END), 1 << 30),
                (2, GuestAddress(MMIO_HOLE_END + (1 << 30)), 1 << 30),
            ]
        );
        // Together they cover what the unsplit layout does.
        let total: u64 = r.iter().map(|c| c.2).sum();
        assert_eq!(total, 5 << 30);
        assert!(cell_regions(&[1 << 20]).is_err());
    }

    #[test]
    fn too_small_is_refused() {
        assert!(matches!(
            ram_regions(1 << 20),
            Err(Error::MemoryTooSmall { .. })
        ));
    }
}
