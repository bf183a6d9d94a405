//! virtio-balloon, driven by hand on virtio-drivers' `VirtQueue` (the
//! crate has no balloon driver): the guest writes a pattern into
//! `balloon-mib` MiB of its RAM from 64 MiB up, puts every page of it in
//! the balloon (page numbers, 256 per request, as Linux sends them), checks
//! that a page given back to the host reads as zero, then takes them all
//! out again and checks it can write them. Prints
//! `bench: balloon inflate mib=N cycles=C` and `... deflate ...` (TSC
//! cycles; bench/balloon.py turns them into MiB/s) and `virtio-balloon: ok`.

use core::arch::x86_64::_rdtsc;
use core::ptr::{read_volatile, write_volatile};

use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceStatus, Transport};

use crate::hal::GuestHal;
use crate::say;
use crate::watch::Watched;

/// The inflate queue, the one the watch bounds.
pub const INFLATE_QUEUE: u16 = 0;
const DEFLATE_QUEUE: u16 = 1;
const QUEUE_SIZE: usize = 16;
/// Page numbers per request (Linux's VIRTIO_BALLOON_ARRAY_PFNS_MAX).
const PFNS_PER_REQUEST: usize = 256;
/// Where the ballooned memory starts: above the guest image, its heap and
/// DMA pools.
const BASE: u64 = 64 << 20;
const PAGE: u64 = 4096;
const VERSION_1: u64 = 1 << 32;

fn cycles() -> u64 {
    // SAFETY: rdtsc has no side effects and is allowed at CPL 3.
    unsafe { _rdtsc() }
}

pub fn run(mut transport: Watched, mib: u64) {
    if let Err(e) = exercise(&mut transport, mib) {
        say!("virtio-balloon: FAIL {}", e);
    }
}

fn exercise(transport: &mut Watched, mib: u64) -> Result<(), &'static str> {
    transport.set_status(DeviceStatus::empty());
    transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    if transport.read_device_features() & VERSION_1 == 0 {
        return Err("the device does not offer VIRTIO_F_VERSION_1");
    }
    // Neither statistics nor reporting: the two page queues only.
    transport.write_driver_features(VERSION_1);
    transport
        .set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
    let mut inflate =
        VirtQueue::<GuestHal, QUEUE_SIZE>::new(transport, INFLATE_QUEUE, false, false)
            .map_err(|_| "cannot set up the inflate queue")?;
    let mut deflate =
        VirtQueue::<GuestHal, QUEUE_SIZE>::new(transport, DEFLATE_QUEUE, false, false)
            .map_err(|_| "cannot set up the deflate queue")?;
    transport.finish_init();
    let num_pages: u32 = transport
        .read_config_space(0)
        .map_err(|_| "cannot read num_pages")?;
    say!("virtio-balloon: num_pages={}", num_pages);

    let pages = mib * (1 << 20) / PAGE;
    // Backed by the host: every page written.
    for p in 0..pages {
        let at = (BASE + p * PAGE) as *mut u64;
        // SAFETY: guest RAM from BASE up is identity-mapped and used by
        // nothing else in this guest (the VM has at least BASE + mib MiB).
        unsafe { write_volatile(at, 0x5a5a_5a5a_0000_0000 | p) };
    }
    let mut pfns = [0u32; PFNS_PER_REQUEST];
    let mut send = |queue: &mut VirtQueue<GuestHal, QUEUE_SIZE>,
                    transport: &mut Watched|
     -> Result<u64, &'static str> {
        let start = cycles();
        let mut p = 0;
        while p < pages {
            let n = (pages - p).min(PFNS_PER_REQUEST as u64) as usize;
            for (i, pfn) in pfns[..n].iter_mut().enumerate() {
                *pfn = ((BASE >> 12) + p) as u32 + i as u32;
            }
            // SAFETY: plain u32s viewed as their bytes.
            let bytes = unsafe { core::slice::from_raw_parts(pfns.as_ptr().cast::<u8>(), n * 4) };
            queue
                .add_notify_wait_pop(&[bytes], &mut [], transport)
                .map_err(|_| "a page request failed")?;
            p += n as u64;
        }
        Ok(cycles() - start)
    };
    let inflated = send(&mut inflate, transport)?;
    say!("bench: balloon inflate mib={} cycles={}", mib, inflated);
    // SAFETY: as above; the page is in the balloon, so reading it is
    // exactly what a guest must not rely on, and what this checks.
    let first = unsafe { read_volatile(BASE as *const u64) };
    // SAFETY: the last page of the same range.
    let last = unsafe { read_volatile((BASE + (pages - 1) * PAGE) as *const u64) };
    let deflated = send(&mut deflate, transport)?;
    say!("bench: balloon deflate mib={} cycles={}", mib, deflated);
    for p in (0..pages).step_by(97) {
        let at = (BASE + p * PAGE) as *mut u64;
        // SAFETY: as above; the page is the guest's again.
        unsafe { write_volatile(at, p) };
        // SAFETY: the page just written.
        if unsafe { read_volatile(at) } != p {
            return Err("a deflated page does not keep what is written");
        }
    }
    if first != 0 || last != 0 {
        say!(
            "virtio-balloon: FAIL released pages read {:#x} and {:#x}, not zero",
            first,
            last
        );
        return Ok(());
    }
    say!(
        "virtio-balloon: ok {} pages in and out, released ones read zero",
        pages
    );
    Ok(())
}
