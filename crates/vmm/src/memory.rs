//! Guest RAM: sized against what the host has, then mapped.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::error::{Error, Result};
use crate::memory_backend::MemoryBackend;

/// Guest memory as the VMM holds it.
pub type GuestMemory = GuestMemoryMmap<()>;

/// RAM plus swap of this host, in bytes.
fn host_memory() -> Option<u64> {
    // SAFETY: sysinfo only writes into the struct we pass.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable sysinfo struct.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return None;
    }
    let unit = u64::from(info.mem_unit.max(1));
    Some((info.totalram as u64).saturating_add(info.totalswap as u64) * unit)
}

/// Guest RAM is mapped into KVM in whole host pages.
const PAGE_SIZE: u64 = 4096;

/// Check that `size` bytes make a guest and that the host can back them.
pub fn check_size(size: u64) -> Result<()> {
    if !size.is_multiple_of(PAGE_SIZE) {
        let shown = if size.is_multiple_of(1024) {
            format!("{} KiB", size / 1024)
        } else {
            format!("{size} bytes")
        };
        return Err(Error::InvalidConfig(format!(
            "memory size {shown} is not a multiple of 4 KiB (guest RAM is mapped in 4 KiB pages)"
        )));
    }
    arch::memory::ram_regions(size)?;
    match host_memory() {
        Some(host) if size > host => Err(Error::NotEnoughHostMemory {
            requested_mib: size >> 20,
            host_mib: host >> 20,
        }),
        _ => Ok(()),
    }
}

/// Map `size` bytes of guest RAM, laid out around the MMIO hole.
///
/// The mapping is lazy (pages are faulted in as the guest touches them), so
/// the size is checked up front against the host's RAM and swap: otherwise
/// a guest that touches all its memory would be killed by the OOM killer
/// long after start.
pub fn create_guest_memory(size: u64, backend: &MemoryBackend) -> Result<GuestMemory> {
    check_size(size)?;
    let ranges = arch::memory::ram_regions(size)?
        .into_iter()
        .map(|(addr, len)| {
            usize::try_from(len)
                .map(|len| (addr, len))
                .map_err(|_| Error::GuestMemory("size does not fit the address space".into()))
        })
        .collect::<Result<Vec<(GuestAddress, usize)>>>()?;
    if !backend.is_default() {
        return crate::memory_map::map_with_backend(size, &ranges, backend);
    }
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| Error::GuestMemory(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryBackend;

    #[test]
    fn sizes_that_are_not_whole_pages_are_refused() {
        let err = check_size((4 << 20) + 1024).unwrap_err().to_string();
        assert!(err.contains("4097 KiB is not a multiple of 4 KiB"), "{err}");
        let err = check_size((4 << 20) + 1).unwrap_err().to_string();
        assert!(err.contains("4194305 bytes"), "{err}");
        check_size((4 << 20) + 4096).unwrap();
    }

    #[test]
    fn maps_around_the_hole_and_refuses_absurd_sizes() {
        let m = create_guest_memory(64 << 20, &MemoryBackend::default()).unwrap();
        assert_eq!(m.num_regions(), 1);
        assert!(matches!(
            create_guest_memory(1 << 50, &MemoryBackend::default()),
            Err(Error::NotEnoughHostMemory { .. })
        ));
    }
}
