//! Placing BARs in the PCI MMIO windows, as firmware does before boot.

use vm_allocator::{AddressAllocator, AllocPolicy, RangeInclusive};

/// Errors placing a BAR.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// The window is too small or its base/size is invalid.
    #[error("PCI window {base:#x}+{size:#x} is invalid: {source}")]
    Window {
        /// Window base.
        base: u64,
        /// Window size.
        size: u64,
        /// Why vm-allocator refused it.
        #[source]
        source: vm_allocator::Error,
    },
    /// No room left for a BAR of this size in any window allowed for it.
    #[error("no room for a {0:#x}-byte BAR in the PCI windows")]
    Exhausted(u64),
}

/// The 32-bit and 64-bit MMIO windows, handed out BAR by BAR.
pub struct BarAllocator {
    mmio32: AddressAllocator,
    mmio64: AddressAllocator,
}

impl BarAllocator {
    /// Allocators over `[base32, base32 + size32)` and `[base64, base64 + size64)`.
    pub fn new(base32: u64, size32: u64, base64: u64, size64: u64) -> Result<Self, AllocError> {
        let window = |base, size| {
            AddressAllocator::new(base, size).map_err(|source| AllocError::Window {
                base,
                size,
                source,
            })
        };
        Ok(Self {
            mmio32: window(base32, size32)?,
            mmio64: window(base64, size64)?,
        })
    }

    /// Place a BAR of `size` bytes (naturally aligned, as PCI requires).
    /// Every BAR goes below 4 GiB while there is room, so guests that map
    /// only the low 4 GiB still reach it; a 64-bit BAR spills over to the
    /// high window when the low one is full.
    pub fn allocate(&mut self, size: u64, is_64bit: bool) -> Result<u64, AllocError> {
        if let Ok(r) = self.mmio32.allocate(size, size, AllocPolicy::FirstMatch) {
            return Ok(r.start());
        }
        if is_64bit {
            if let Ok(r) = self.mmio64.allocate(size, size, AllocPolicy::FirstMatch) {
                return Ok(r.start());
            }
        }
        Err(AllocError::Exhausted(size))
    }

    /// Give back a BAR placed at `addr` (device unplugged).
    pub fn free(&mut self, addr: u64, size: u64) {
        let Ok(range) = RangeInclusive::new(addr, addr + size - 1) else {
            return;
        };
        if self.mmio32.free(&range).is_err() {
            let _ = self.mmio64.free(&range);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_aligned_and_fill_low_first() {
        let mut a = BarAllocator::new(0xc000_0000, 0x10_0000, 0x40_0000_0000, 0x1000_0000).unwrap();
        let x = a.allocate(0x1000, true).unwrap();
        let y = a.allocate(0x8_0000, true).unwrap();
        assert_eq!(x, 0xc000_0000);
        assert_eq!(y % 0x8_0000, 0);
        assert!(y < 0xc010_0000);
        // The low window is now too fragmented for another 512 KiB BAR.
        let z = a.allocate(0x8_0000, true).unwrap();
        assert!(z >= 0x40_0000_0000);
        assert!(matches!(
            a.allocate(0x8_0000, false),
            Err(AllocError::Exhausted(_))
        ));
        a.free(y, 0x8_0000);
        assert_eq!(a.allocate(0x8_0000, false).unwrap(), y);
    }
}
