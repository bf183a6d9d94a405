//! Guest RAM: sized against what the host has, then mapped.

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::error::{Error, Result};
use crate::memory_backend::MemoryBackend;
use crate::numa::{MemPolicy, NumaLayout};

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
///
/// With NUMA cells each cell's memory is its own region (two if it
/// straddles the MMIO hole), bound to its host nodes before any page of it
/// is touched.
pub fn create_guest_memory(
    size: u64,
    backend: &MemoryBackend,
    numa: Option<&NumaLayout>,
) -> Result<GuestMemory> {
    check_size(size)?;
    let cells: Vec<(Option<usize>, GuestAddress, u64)> = match numa {
        Some(layout) => layout
            .ram_ranges()?
            .into_iter()
            .map(|(cell, base, len)| (Some(cell), GuestAddress(base), len))
            .collect(),
        None => arch::memory::ram_regions(size)?
            .into_iter()
            .map(|(addr, len)| (None, addr, len))
            .collect(),
    };
    let ranges = cells
        .iter()
        .map(|&(_, addr, len)| {
            usize::try_from(len)
                .map(|len| (addr, len))
                .map_err(|_| Error::GuestMemory("size does not fit the address space".into()))
        })
        .collect::<Result<Vec<(GuestAddress, usize)>>>()?;
    let bindings: Vec<Binding<'_>> = cells
        .iter()
        .map(|(cell, _, _)| cell.and_then(|c| numa.and_then(|n| n.binding(c))))
        .collect();
    if !backend.is_default() {
        return crate::memory_map::map_with_backend(size, &ranges, &bindings, backend);
    }
    let mem =
        GuestMemoryMmap::from_ranges(&ranges).map_err(|e| Error::GuestMemory(e.to_string()))?;
    // Nothing has touched the lazy mappings yet.
    for (region, binding) in mem.iter().zip(&bindings) {
        let len = usize::try_from(region.len())
            .map_err(|_| Error::GuestMemory("size does not fit the address space".into()))?;
        crate::memory_map::advise_default_thp(region.as_ptr(), region.start_addr(), len)?;
        bind_region(region.as_ptr(), region.len(), *binding)?;
    }
    Ok(mem)
}

/// A region's host binding: nodes and policy, or none.
pub(crate) type Binding<'a> = Option<(&'a [u32], MemPolicy)>;

/// Apply `binding` to the mapping at `ptr`.
pub(crate) fn bind_region(ptr: *mut u8, len: u64, binding: Binding<'_>) -> Result<()> {
    let Some((nodes, policy)) = binding else {
        return Ok(());
    };
    let len = usize::try_from(len)
        .map_err(|_| Error::GuestMemory("size does not fit the address space".into()))?;
    crate::numa::bind_memory(ptr as usize, len, nodes, policy).map_err(|e| {
        Error::GuestMemory(format!(
            "mbind to host nodes {} (policy={}): {e}",
            crate::numa::list_string(nodes),
            policy.name()
        ))
    })
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
        let m = create_guest_memory(64 << 20, &MemoryBackend::default(), None).unwrap();
        assert_eq!(m.num_regions(), 1);
        assert!(matches!(
            create_guest_memory(1 << 50, &MemoryBackend::default(), None),
            Err(Error::NotEnoughHostMemory { .. })
        ));
    }

    /// The `VmFlags` of the mapping of this process that starts at `addr`.
    fn vm_flags_at(addr: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut current = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((start, _)) = range.split_once('-') {
                    if let Ok(start) = usize::from_str_radix(start, 16) {
                        current = start == addr;
                        continue;
                    }
                }
            }
            if current {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return Some(flags.trim().to_string());
                }
            }
        }
        None
    }

    #[test]
    fn default_memory_is_thp_advised_above_its_first_2_mib_only() {
        let m = create_guest_memory(64 << 20, &MemoryBackend::default(), None).unwrap();
        let base = m.iter().next().unwrap().as_ptr() as usize;
        let low = vm_flags_at(base).expect("the first 2 MiB are a mapping of their own");
        let high = vm_flags_at(base + (2 << 20)).expect("the rest is a mapping of its own");
        assert!(!low.split(' ').any(|f| f == "hg"), "{low}");
        assert!(high.split(' ').any(|f| f == "hg"), "{high}");
        let off = MemoryBackend {
            thp: Some(false),
            ..MemoryBackend::default()
        };
        let m = create_guest_memory(64 << 20, &off, None).unwrap();
        let flags = vm_flags_at(m.iter().next().unwrap().as_ptr() as usize).unwrap();
        assert!(flags.split(' ').any(|f| f == "nh"), "{flags}");
    }
}
