//! Giving guest pages back to the host: how each region of guest RAM is
//! backed decides how (MADV_DONTNEED for private mappings, MADV_REMOVE for
//! shared ones, which punches the hole in the memfd or file), and in what
//! unit (a huge page backing can only give back whole huge pages).
//!
//! The backing is read from each mapping itself (its MAP_SHARED and
//! MAP_HUGETLB flags, the file system of its file), so whatever the VMM
//! maps, the device releases it the right way.

use std::os::fd::AsRawFd;

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap};

use crate::device::GuestMemory;

/// The balloon's page: the spec's page frame numbers count 4 KiB units.
pub const PAGE_SIZE: u64 = 4096;
const PAGE_SHIFT: u32 = 12;

/// hugetlbfs's statfs magic (memfds made with MFD_HUGETLB live there too).
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
/// Where MAP_HUGETLB encodes log2 of the page size.
const MAP_HUGE_SHIFT: i32 = 26;
const MAP_HUGE_MASK: i32 = 0x3f;

/// How one region is backed, as far as giving pages back goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionBacking {
    /// Shared mapping (memfd, shared file): pages are freed by punching
    /// a hole; a private one drops its pages with MADV_DONTNEED.
    pub shared: bool,
    /// The host page size (4 KiB, or a huge page size).
    pub page_size: u64,
}

impl RegionBacking {
    /// Read the backing from the mapping.
    pub fn of(region: &GuestRegionMmap<()>) -> Self {
        let flags = region.flags();
        let shared = flags & libc::MAP_SHARED != 0;
        let mut page_size = PAGE_SIZE;
        if flags & libc::MAP_HUGETLB != 0 {
            let shift = (flags >> MAP_HUGE_SHIFT) & MAP_HUGE_MASK;
            // 0 asks for the host's default huge page size, 2 MiB on x86.
            page_size = if shift == 0 { 2 << 20 } else { 1u64 << shift };
        } else if let Some(file) = region.file_offset() {
            // SAFETY: fstatfs writes only into the zeroed struct we pass.
            let mut st: libc::statfs = unsafe { std::mem::zeroed() };
            // SAFETY: the descriptor is open (the region holds it) and `st`
            // is a valid, writable statfs.
            let ok = unsafe { libc::fstatfs(file.file().as_raw_fd(), &mut st) } == 0;
            if ok && st.f_type == HUGETLBFS_MAGIC {
                page_size = u64::try_from(st.f_bsize)
                    .unwrap_or(PAGE_SIZE)
                    .max(PAGE_SIZE);
            }
        }
        Self { shared, page_size }
    }
}

/// What one request came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Pages (4 KiB) taken: inside guest RAM.
    pub pages: u64,
    /// Page numbers outside guest RAM, ignored.
    pub bad: u64,
    /// Bytes given back to the host.
    pub released: u64,
    /// Bytes that could not be given back because they cover only part of
    /// a host huge page (free page reporting only; inflated pages wait
    /// for the rest of their huge page instead).
    pub skipped: u64,
    /// madvise calls that failed.
    pub errors: u64,
}

struct Region {
    base: u64,
    len: u64,
    backing: RegionBacking,
    /// With huge pages: which 4 KiB pages of the region are in the
    /// balloon, one bit each, so a huge page is released once all of it is.
    inflated: Option<Vec<u64>>,
}

impl Region {
    fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.len
    }
}

/// Guest RAM as the balloon sees it.
pub struct GuestRam {
    mem: GuestMemory,
    regions: Vec<Region>,
}

impl GuestRam {
    /// Look at how each region of `mem` is backed.
    pub fn new(mem: &GuestMemory) -> Self {
        let regions = mem
            .iter()
            .map(|r| {
                let backing = RegionBacking::of(r);
                let len = r.len();
                let inflated = (backing.page_size > PAGE_SIZE).then(|| {
                    vec![0u64; usize::try_from((len / PAGE_SIZE).div_ceil(64)).unwrap_or(0)]
                });
                Region {
                    base: r.start_addr().0,
                    len,
                    backing,
                    inflated,
                }
            })
            .collect();
        Self {
            mem: mem.clone(),
            regions,
        }
    }

    /// The backing of the region holding guest address `addr`.
    #[cfg(test)]
    pub fn backing_at(&self, addr: GuestAddress) -> Option<RegionBacking> {
        self.regions
            .iter()
            .find(|r| r.contains(addr.0))
            .map(|r| r.backing)
    }

    /// As [`GuestRam::new`], every region taken to have host pages of
    /// `page_size` (huge page bookkeeping without a hugetlb pool).
    #[cfg(test)]
    pub fn with_page_size(mem: &GuestMemory, page_size: u64) -> Self {
        let mut ram = Self::new(mem);
        for r in &mut ram.regions {
            r.backing.page_size = page_size;
            let words = usize::try_from((r.len / PAGE_SIZE).div_ceil(64)).unwrap_or(0);
            r.inflated = (page_size > PAGE_SIZE).then(|| vec![0u64; words]);
        }
        ram
    }

    fn region_of(&self, addr: u64) -> Option<usize> {
        self.regions.iter().position(|r| r.contains(addr))
    }

    /// Pages the guest put in the balloon: give them back to the host.
    /// Sorted and merged first, so neighbours go in one madvise.
    pub fn inflate(&mut self, pfns: &mut [u32]) -> Outcome {
        let mut out = Outcome::default();
        pfns.sort_unstable();
        let mut runs: Vec<(usize, u64, u64)> = Vec::new();
        let mut last = None;
        for &pfn in pfns.iter() {
            if last == Some(pfn) {
                continue;
            }
            last = Some(pfn);
            let addr = u64::from(pfn) << PAGE_SHIFT;
            let Some(i) = self.region_of(addr) else {
                out.bad += 1;
                continue;
            };
            out.pages += 1;
            let region = &mut self.regions[i];
            let (start, len) = match &mut region.inflated {
                None => (addr, PAGE_SIZE),
                Some(bits) => {
                    let page = (addr - region.base) / PAGE_SIZE;
                    set_bit(bits, page, true);
                    let per = region.backing.page_size / PAGE_SIZE;
                    let first = page - page % per;
                    if !(first..first + per).all(|p| get_bit(bits, p)) {
                        continue;
                    }
                    (region.base + first * PAGE_SIZE, region.backing.page_size)
                }
            };
            push_run(&mut runs, i, start, len);
        }
        for (i, start, len) in runs {
            self.release(i, start, len, &mut out);
        }
        out
    }

    /// Pages the guest took back out of the balloon. They come back on the
    /// guest's next touch; only the huge page bookkeeping changes.
    pub fn deflate(&mut self, pfns: &[u32]) -> Outcome {
        let mut out = Outcome::default();
        for &pfn in pfns {
            let addr = u64::from(pfn) << PAGE_SHIFT;
            let Some(i) = self.region_of(addr) else {
                out.bad += 1;
                continue;
            };
            out.pages += 1;
            let region = &mut self.regions[i];
            if let Some(bits) = &mut region.inflated {
                set_bit(bits, (addr - region.base) / PAGE_SIZE, false);
            }
        }
        out
    }

    /// A range the guest reported free: give back the host pages it
    /// covers whole. A range reaching outside guest RAM is refused whole.
    pub fn report(&mut self, addr: GuestAddress, len: u64) -> Outcome {
        let mut out = Outcome::default();
        let (start, end) = (addr.0, addr.0.saturating_add(len));
        let Some(i) = self.region_of(start).filter(|&i| {
            let r = &self.regions[i];
            end - r.base <= r.len
        }) else {
            out.bad += len.div_ceil(PAGE_SIZE);
            return out;
        };
        let page = self.regions[i].backing.page_size;
        let first = start.next_multiple_of(page);
        let last = end - end % page;
        out.pages = len.div_ceil(PAGE_SIZE);
        if first >= last {
            out.skipped = len;
            return out;
        }
        out.skipped = (first - start) + (end - last);
        self.release(i, first, last - first, &mut out);
        out
    }

    /// Give `[start, start + len)` of region `i` back to the host.
    fn release(&self, i: usize, start: u64, len: u64, out: &mut Outcome) {
        let region = &self.regions[i];
        let advice = if region.backing.shared {
            libc::MADV_REMOVE
        } else {
            libc::MADV_DONTNEED
        };
        let Ok(host) = self.mem.get_host_address(GuestAddress(start)) else {
            out.errors += 1;
            return;
        };
        let Ok(n) = usize::try_from(len) else {
            out.errors += 1;
            return;
        };
        // SAFETY: `[start, start + len)` lies inside one region of guest
        // memory (checked by the callers against the region's bounds), so
        // `host..host + n` is inside a mapping `self.mem` keeps alive.
        // Dropping or punching out guest pages is what the guest asked
        // for; it moves no data into this process's own memory.
        if unsafe { libc::madvise(host.cast(), n, advice) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!("virtio-balloon: madvise of {n} bytes at guest {start:#x}: {e}");
            out.errors += 1;
            return;
        }
        out.released += len;
    }
}

/// Extend the last run if `start` follows it in the same region.
fn push_run(runs: &mut Vec<(usize, u64, u64)>, region: usize, start: u64, len: u64) {
    if let Some((r, s, l)) = runs.last_mut() {
        if *r == region && *s + *l == start {
            *l += len;
            return;
        }
    }
    runs.push((region, start, len));
}

fn set_bit(bits: &mut [u64], i: u64, on: bool) {
    let (word, bit) = (usize::try_from(i / 64).unwrap_or(usize::MAX), i % 64);
    if let Some(w) = bits.get_mut(word) {
        if on {
            *w |= 1 << bit;
        } else {
            *w &= !(1 << bit);
        }
    }
}

fn get_bit(bits: &[u64], i: u64) -> bool {
    let word = usize::try_from(i / 64).unwrap_or(usize::MAX);
    bits.get(word).is_some_and(|w| w & (1 << (i % 64)) != 0)
}
