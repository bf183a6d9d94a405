//! virtio-balloon against well-formed and hostile rings, on real guest
//! memory: whether a page went back to the host is read from the kernel
//! (mincore for private memory, the memfd's allocated blocks for shared).

use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::device::*;
use super::ram::{GuestRam, PAGE_SIZE};
use crate::device::{ActivateContext, GuestMemory, VirtioDevice};
use crate::net::tests::{
    make_queue, memory, wait_for, DriverQueue, TestInterrupt, BUF_BASE, D, MEM_SIZE,
};

/// Guest pages the tests inflate: well past the rings and buffers.
const PAGES_BASE: u64 = 0x80_0000;
const STATS_FEATURES: u64 = 1 << VIRTIO_BALLOON_F_STATS_VQ;

struct Rig<'a> {
    balloon: Balloon,
    mem: &'a GuestMemory,
    queues: Vec<Option<DriverQueue<'a>>>,
    interrupt: Arc<TestInterrupt>,
}

impl<'a> Rig<'a> {
    fn new(mem: &'a GuestMemory, config: BalloonConfig, features: u64, enabled: &[u16]) -> Self {
        let mut balloon = Balloon::new(config).unwrap();
        let interrupt = Arc::new(TestInterrupt::default());
        let mut active = Vec::new();
        let mut queues: Vec<Option<DriverQueue<'a>>> = (0..5).map(|_| None).collect();
        for &i in enabled {
            let (queue, driver) = make_queue(mem, i);
            active.push(queue);
            queues[usize::from(i)] = Some(driver);
        }
        balloon
            .activate(ActivateContext {
                mem: mem.clone(),
                interrupt: interrupt.clone(),
                queues: active,
                features,
            })
            .unwrap();
        Self {
            balloon,
            mem,
            queues,
            interrupt,
        }
    }

    fn q(&mut self, i: usize) -> &mut DriverQueue<'a> {
        self.queues[i].as_mut().unwrap()
    }

    fn counter(&self, name: &str) -> u64 {
        let c = self.balloon.counters();
        c.into_iter().find(|(n, _)| *n == name).unwrap().1
    }

    /// Write `pfns` at `at` and post them on queue `q` as one chain.
    fn post_pfns(&mut self, q: usize, at: u64, pfns: &[u32]) -> u16 {
        let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.mem.write_slice(&bytes, GuestAddress(at)).unwrap();
        let len = u32::try_from(bytes.len()).unwrap();
        let used = self.q(q).used_count();
        self.q(q).push(&[D(at, len, false)]);
        self.q(q).wait_used(used + 1);
        used + 1
    }
}

fn pfn(addr: u64) -> u32 {
    u32::try_from(addr / PAGE_SIZE).unwrap()
}

/// Touch `pages` guest pages from `addr` so the host backs them.
fn touch(mem: &GuestMemory, addr: u64, pages: u64) {
    for p in 0..pages {
        mem.write_obj(0xa5u8, GuestAddress(addr + p * PAGE_SIZE))
            .unwrap();
    }
}

/// How many of `pages` guest pages from `addr` the host holds in RAM.
fn resident(mem: &GuestMemory, addr: u64, pages: u64) -> u64 {
    let host = mem.get_host_address(GuestAddress(addr)).unwrap();
    let mut vec = vec![0u8; usize::try_from(pages).unwrap()];
    let len = usize::try_from(pages * PAGE_SIZE).unwrap();
    // SAFETY: the range lies in guest memory's mapping (page aligned);
    // mincore writes one byte per page into `vec`.
    let r = unsafe { libc::mincore(host.cast(), len, vec.as_mut_ptr()) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    vec.iter().map(|b| u64::from(b & 1)).sum()
}

#[test]
fn inflated_pages_go_back_to_the_host_and_deflate_is_bookkeeping() {
    let mem = memory();
    let mut rig = Rig::new(&mem, BalloonConfig::default(), STATS_FEATURES, &[0, 1]);
    touch(&mem, PAGES_BASE, 64);
    assert_eq!(resident(&mem, PAGES_BASE, 64), 64);
    // Out of order and with a duplicate: still one release each.
    let mut pfns: Vec<u32> = (0..32).rev().map(|p| pfn(PAGES_BASE) + p).collect();
    pfns.push(pfn(PAGES_BASE));
    rig.post_pfns(0, BUF_BASE, &pfns);
    assert_eq!(resident(&mem, PAGES_BASE, 32), 0);
    assert_eq!(resident(&mem, PAGES_BASE + 32 * PAGE_SIZE, 32), 32);
    assert_eq!(rig.counter("inflated_pages"), 32);
    assert_eq!(rig.counter("released_bytes"), 32 * PAGE_SIZE);
    assert_eq!(rig.q(0).used(0).1, 0);
    // A released page reads as zero.
    assert_eq!(mem.read_obj::<u8>(GuestAddress(PAGES_BASE)).unwrap(), 0);
    let ints = rig.interrupt.queue_notifies.lock().unwrap().clone();
    assert!(ints.contains(&0), "{ints:?}");
    rig.post_pfns(1, BUF_BASE, &[pfn(PAGES_BASE), pfn(PAGES_BASE) + 1]);
    assert_eq!(rig.counter("deflated_pages"), 2);
    assert_eq!(rig.counter("chain_errors"), 0);
}

#[test]
fn page_numbers_outside_guest_ram_are_ignored() {
    let mem = memory();
    let mut rig = Rig::new(&mem, BalloonConfig::default(), 0, &[0, 1]);
    touch(&mem, PAGES_BASE, 1);
    let end = pfn(u64::try_from(MEM_SIZE).unwrap());
    rig.post_pfns(0, BUF_BASE, &[end, end + 1, u32::MAX, pfn(PAGES_BASE)]);
    assert_eq!(rig.counter("bad_pages"), 3);
    assert_eq!(rig.counter("inflated_pages"), 1);
    assert_eq!(resident(&mem, PAGES_BASE, 1), 0);
    rig.post_pfns(1, BUF_BASE, &[u32::MAX]);
    assert_eq!(rig.counter("bad_pages"), 4);
    assert!(!rig.interrupt.needs_reset.load(Ordering::SeqCst));
}

#[test]
fn malformed_page_chains_are_returned_without_harm() {
    let mem = memory();
    let mut rig = Rig::new(&mem, BalloonConfig::default(), 0, &[0, 1]);
    touch(&mem, PAGES_BASE, 1);
    let mem_end = u64::try_from(MEM_SIZE).unwrap();
    let bad: [&[D]; 5] = [
        // Not a whole number of page numbers.
        &[D(BUF_BASE, 6, false)],
        // Device-writable.
        &[D(BUF_BASE, 4, true)],
        // Past the end of guest memory.
        &[D(mem_end - 2, 4, false)],
        // Empty.
        &[D(BUF_BASE, 0, false)],
        // Far too long.
        &[D(BUF_BASE, 1 << 20, false)],
    ];
    mem.write_obj(pfn(PAGES_BASE), GuestAddress(BUF_BASE))
        .unwrap();
    for (i, chain) in bad.iter().enumerate() {
        rig.q(0).push(chain);
        rig.q(0).wait_used(u16::try_from(i).unwrap() + 1);
    }
    assert_eq!(rig.counter("chain_errors"), 5);
    assert_eq!(rig.counter("inflated_pages"), 0);
    assert_eq!(resident(&mem, PAGES_BASE, 1), 1);
    // The queue still works.
    rig.post_pfns(0, BUF_BASE + 0x100, &[pfn(PAGES_BASE)]);
    assert_eq!(resident(&mem, PAGES_BASE, 1), 0);
    assert!(!rig.interrupt.needs_reset.load(Ordering::SeqCst));
}

#[test]
fn a_descriptor_chain_that_loops_is_refused() {
    let mem = memory();
    let mut rig = Rig::new(&mem, BalloonConfig::default(), 0, &[0, 1]);
    touch(&mem, PAGES_BASE, 1);
    mem.write_obj(pfn(PAGES_BASE), GuestAddress(BUF_BASE))
        .unwrap();
    // Held between events while the chain is made to point at itself.
    assert!(rig.balloon.pause());
    let head = rig.q(0).push(&[D(BUF_BASE, 4, false)]);
    let looped = SplitDescriptor::new(BUF_BASE, 4, u16::try_from(VRING_DESC_F_NEXT).unwrap(), head);
    rig.q(0)
        .mock
        .desc_table()
        .store(head, RawDescriptor::from(looped))
        .unwrap();
    rig.balloon.resume();
    rig.q(0).wait_used(1);
    assert_eq!(rig.counter("chain_errors"), 1);
    assert_eq!(rig.counter("inflated_pages"), 0);
    assert_eq!(resident(&mem, PAGES_BASE, 1), 1);
}

/// A statistics buffer of `(tag, value)` pairs at `at`.
fn stats_buffer(mem: &GuestMemory, at: u64, stats: &[(u16, u64)]) -> u32 {
    let bytes: Vec<u8> = stats
        .iter()
        .flat_map(|(t, v)| t.to_le_bytes().into_iter().chain(v.to_le_bytes()))
        .collect();
    mem.write_slice(&bytes, GuestAddress(at)).unwrap();
    u32::try_from(bytes.len()).unwrap()
}

#[test]
fn statistics_are_kept_and_the_buffer_is_handed_back_each_period() {
    let mem = memory();
    let config = BalloonConfig {
        stats_period: 1,
        ..BalloonConfig::default()
    };
    let mut rig = Rig::new(&mem, config, STATS_FEATURES, &[0, 1, 2]);
    let control = rig.balloon.control();
    assert_eq!(control.stats().last_update, None);
    // Tag 42 is unknown: ignored.
    let len = stats_buffer(&mem, BUF_BASE, &[(4, 1 << 30), (5, 2 << 30), (42, 7)]);
    rig.q(2).push(&[D(BUF_BASE, len, false)]);
    wait_for("statistics", || control.stats().last_update.is_some());
    let stats = control.stats();
    assert_eq!(stats.values.get(&4), Some(&(1 << 30)));
    assert_eq!(stats.values.get(&5), Some(&(2 << 30)));
    assert_eq!(stats.values.len(), 2);
    // Held until the period ends, then handed back.
    assert_eq!(rig.q(2).used_count(), 0);
    rig.q(2).wait_used(1);
    // A malformed buffer goes back at once and changes nothing.
    rig.q(2).push(&[D(BUF_BASE, 9, false)]);
    rig.q(2).wait_used(2);
    assert_eq!(rig.counter("chain_errors"), 1);
    assert_eq!(control.stats().values.len(), 2);
    // Period 0: a new buffer is held for good.
    control.set_stats_period(0);
    let len = stats_buffer(&mem, BUF_BASE, &[(0, 4096)]);
    rig.q(2).push(&[D(BUF_BASE, len, false)]);
    wait_for("new statistics", || {
        control.stats().values.get(&0) == Some(&4096)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rig.q(2).used_count(), 2);
    assert_eq!(rig.counter("stats_updates"), 2);
}

#[test]
fn the_target_is_config_space_and_actual_is_the_drivers() {
    let mem = memory();
    let config = BalloonConfig {
        num_pages: 1000,
        deflate_on_oom: true,
        ..BalloonConfig::default()
    };
    let rig = Rig::new(&mem, config, STATS_FEATURES, &[0, 1, 2]);
    let mut balloon = rig.balloon;
    assert_eq!(balloon.device_type(), 5);
    assert_ne!(
        balloon.features() & (1 << VIRTIO_BALLOON_F_DEFLATE_ON_OOM),
        0
    );
    assert_eq!(balloon.features() & (1 << VIRTIO_BALLOON_F_REPORTING), 0);
    assert_eq!(balloon.queue_max_sizes().len(), 3);
    let mut buf = [0u8; 4];
    balloon.read_config(0, &mut buf);
    assert_eq!(u32::from_le_bytes(buf), 1000);
    let control = balloon.control();
    control.set_num_pages(2000);
    assert_eq!(rig.interrupt.config_notifies.load(Ordering::SeqCst), 1);
    control.set_num_pages(2000);
    assert_eq!(rig.interrupt.config_notifies.load(Ordering::SeqCst), 1);
    balloon.read_config(0, &mut buf);
    assert_eq!(u32::from_le_bytes(buf), 2000);
    // The driver writes actual, byte by byte or whole; num_pages is not its.
    balloon.write_config(4, &1234u32.to_le_bytes());
    balloon.write_config(0, &[9, 9, 9, 9, 0x35]);
    assert_eq!(control.num_pages(), 2000);
    assert_eq!(control.actual_pages(), 1234 & !0xff | 0x35);
    balloon.write_config(u64::MAX, &[1, 2]);
    let mut wide = [0xffu8; 16];
    balloon.read_config(0, &mut wide);
    assert_eq!(&wide[8..], &[0; 8]);
    balloon.read_config(u64::MAX, &mut buf);
    assert_eq!(buf, [0; 4]);
    // After a reset the driver's claim is gone and no interrupt is sent.
    balloon.reset();
    assert_eq!(control.actual_pages(), 0);
    control.set_num_pages(5);
    assert_eq!(rig.interrupt.config_notifies.load(Ordering::SeqCst), 1);
}

#[test]
fn activation_needs_inflate_and_deflate() {
    let mem = memory();
    let mut balloon = Balloon::new(BalloonConfig::default()).unwrap();
    let (q, _driver) = make_queue(&mem, 0);
    let e = balloon.activate(ActivateContext {
        mem: mem.clone(),
        interrupt: Arc::new(TestInterrupt::default()),
        queues: vec![q],
        features: 0,
    });
    assert!(matches!(e, Err(crate::ActivateError::BadQueues(_))));
}

#[test]
fn reported_free_ranges_go_back_and_bad_ones_are_refused() {
    let mem = memory();
    let config = BalloonConfig {
        free_page_reporting: true,
        ..BalloonConfig::default()
    };
    // Statistics not negotiated: the reporting queue is the third (2).
    let mut rig = Rig::new(&mem, config, 1 << VIRTIO_BALLOON_F_REPORTING, &[0, 1, 2]);
    assert_eq!(rig.balloon.queue_max_sizes().len(), 4);
    touch(&mem, PAGES_BASE, 512);
    let mem_end = u64::try_from(MEM_SIZE).unwrap();
    rig.q(2).push(&[
        D(PAGES_BASE, 256 * 4096, true),
        D(PAGES_BASE + (300 << 12), 0, true),
        D(mem_end - 4096, 8192, true),
    ]);
    rig.q(2).wait_used(1);
    assert_eq!(resident(&mem, PAGES_BASE, 256), 0);
    assert_eq!(resident(&mem, PAGES_BASE + (256 << 12), 256), 256);
    assert_eq!(rig.counter("reported_bytes"), 256 * 4096);
    assert_eq!(rig.counter("bad_pages"), 2);
    // A range that wraps the address space refuses the chain.
    rig.q(2).push(&[D(u64::MAX - 4095, 8192, true)]);
    rig.q(2).wait_used(2);
    assert_eq!(rig.counter("chain_errors"), 1);
}

#[test]
fn with_huge_pages_only_whole_huge_pages_are_released() {
    const HUGE: u64 = 2 << 20;
    let mem = memory();
    let mut ram = GuestRam::with_page_size(&mem, HUGE);
    let base = 4 * HUGE;
    touch(&mem, base, 1024);
    let first: Vec<u32> = (0..511).map(|p| pfn(base) + p).collect();
    let out = ram.inflate(&mut first.clone());
    assert_eq!((out.pages, out.released), (511, 0));
    assert_eq!(resident(&mem, base, 512), 512);
    // Taking one back and giving it again leaves the huge page whole.
    ram.deflate(&[pfn(base)]);
    let out = ram.inflate(&mut [pfn(base) + 511]);
    assert_eq!(out.released, 0);
    let out = ram.inflate(&mut [pfn(base)]);
    assert_eq!(out.released, HUGE);
    assert_eq!(resident(&mem, base, 512), 0);
    assert_eq!(resident(&mem, base + HUGE, 512), 512);
    // A report covering one and a half huge pages gives back one.
    let out = ram.report(GuestAddress(base + HUGE), HUGE + HUGE / 2);
    assert_eq!((out.released, out.skipped), (HUGE, HUGE / 2));
    let out = ram.report(GuestAddress(base + 4096), 8192);
    assert_eq!((out.released, out.skipped), (0, 8192));
    assert_eq!(ram.backing_at(GuestAddress(base)).unwrap().page_size, HUGE);
}

#[test]
fn shared_memory_is_punched_out_of_its_memfd() {
    // SAFETY: the name is a NUL-terminated literal; creates a new fd.
    let fd = unsafe { libc::memfd_create(c"balloon-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: `fd` is new and owned by nothing else.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    let size = 4u64 << 20;
    file.set_len(size).unwrap();
    let region = vm_memory::mmap::MmapRegionBuilder::new(usize::try_from(size).unwrap())
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_SHARED)
        .with_file_offset(FileOffset::new(file.try_clone().unwrap(), 0))
        .build()
        .unwrap();
    let mem: GuestMemory = GuestMemoryMmap::from_regions(vec![vm_memory::GuestRegionMmap::new(
        region,
        GuestAddress(0),
    )
    .unwrap()])
    .unwrap();
    let mut ram = GuestRam::new(&mem);
    assert!(ram.backing_at(GuestAddress(0)).unwrap().shared);
    touch(&mem, 1 << 20, 256);
    let blocks = |f: &std::fs::File| {
        // SAFETY: fstat writes only into the zeroed struct we pass.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is open and `st` valid.
        assert_eq!(unsafe { libc::fstat(f.as_raw_fd(), &mut st) }, 0);
        st.st_blocks * 512
    };
    assert_eq!(blocks(&file), 1 << 20);
    let mut pfns: Vec<u32> = (0..128).map(|p| pfn(1 << 20) + p).collect();
    let out = ram.inflate(&mut pfns);
    assert_eq!(out.released, 128 * 4096);
    assert_eq!(blocks(&file), 512 << 10);
}

#[test]
fn a_second_statistics_buffer_replaces_the_held_one() {
    let mem = memory();
    let mut rig = Rig::new(&mem, BalloonConfig::default(), STATS_FEATURES, &[0, 1, 2]);
    let control = rig.balloon.control();
    let len = stats_buffer(&mem, BUF_BASE, &[(4, 1)]);
    let first = rig.q(2).push(&[D(BUF_BASE, len, false)]);
    wait_for("first statistics", || {
        control.stats().values.get(&4) == Some(&1)
    });
    let len = stats_buffer(&mem, BUF_BASE + 0x100, &[(4, 2)]);
    rig.q(2).push(&[D(BUF_BASE + 0x100, len, false)]);
    // The older buffer goes back; the newer is held.
    rig.q(2).wait_used(1);
    assert_eq!(rig.q(2).used(0).0, u32::from(first));
    assert_eq!(control.stats().values.get(&4), Some(&2));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(rig.q(2).used_count(), 1);
}

#[test]
fn huge_page_backings_are_read_from_the_mapping() {
    // MAP_NORESERVE: no huge page is needed until one is touched, and
    // none is here, so this runs on a host without a huge page pool.
    let huge_2m = libc::MAP_PRIVATE
        | libc::MAP_ANONYMOUS
        | libc::MAP_HUGETLB
        | libc::MAP_NORESERVE
        | (21 << 26);
    let Ok(region) = vm_memory::mmap::MmapRegionBuilder::new(4 << 20)
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(huge_2m)
        .build()
    else {
        // A kernel without hugetlb: nothing to read.
        return;
    };
    let mem: GuestMemory = GuestMemoryMmap::from_regions(vec![vm_memory::GuestRegionMmap::new(
        region,
        GuestAddress(0),
    )
    .unwrap()])
    .unwrap();
    let ram = GuestRam::new(&mem);
    let backing = ram.backing_at(GuestAddress(0)).unwrap();
    assert_eq!((backing.page_size, backing.shared), (2 << 20, false));
    // A hugetlb memfd, shared, as --memory-backend backend=memfd,hugepages=2M maps it.
    // SAFETY: the name is a NUL-terminated literal; creates a new fd.
    let fd = unsafe {
        libc::memfd_create(
            c"balloon-huge".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_HUGETLB | (21 << 26),
        )
    };
    if fd < 0 {
        return;
    }
    // SAFETY: `fd` is new and owned by nothing else.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(4 << 20).unwrap();
    let region = vm_memory::mmap::MmapRegionBuilder::new(4 << 20)
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE)
        .with_file_offset(FileOffset::new(file, 0))
        .build()
        .unwrap();
    let mem: GuestMemory = GuestMemoryMmap::from_regions(vec![vm_memory::GuestRegionMmap::new(
        region,
        GuestAddress(0),
    )
    .unwrap()])
    .unwrap();
    let backing = GuestRam::new(&mem).backing_at(GuestAddress(0)).unwrap();
    assert_eq!((backing.page_size, backing.shared), (2 << 20, true));
}
