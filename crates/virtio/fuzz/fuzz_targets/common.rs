//! What the virtio fuzz targets share: a guest memory built from the
//! fuzzer's bytes, with a split virtqueue laid out at its start, and the
//! check that a host pointer lies inside that memory.
//!
//! Input layout: byte 0 picks the queue size (1 << (b % 9)), byte 1 holds
//! flags (bit 0 read-only disk, bit 1 EVENT_IDX), bytes 2..10 a disk
//! capacity, and the rest is copied into guest memory from address 0 on.
//! Guest memory is two adjacent 32 KiB regions (so buffers may cross from
//! one into the other), a hole, and one 4 KiB region at 0x20000. The
//! available ring sits at 2, the descriptor table right after it, the used
//! ring after that, so short inputs already control all three.

#![allow(dead_code)]

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

pub type Memory = GuestMemoryMmap<()>;

pub const REGIONS: [(u64, usize); 3] = [(0, 0x8000), (0x8000, 0x8000), (0x2_0000, 0x1000)];
const HEADER: usize = 10;

pub struct Input<'a> {
    pub queue_size: u16,
    pub read_only: bool,
    pub event_idx: bool,
    pub capacity: u64,
    pub image: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        if data.len() < HEADER {
            return None;
        }
        let mut cap = [0u8; 8];
        cap.copy_from_slice(&data[2..10]);
        Some(Self {
            queue_size: 1 << (data[0] % 9),
            read_only: data[1] & 1 != 0,
            event_idx: data[1] & 2 != 0,
            capacity: u64::from_le_bytes(cap),
            image: &data[HEADER..],
        })
    }
}

/// Guest memory holding `image` from address 0 on (as far as it reaches).
pub fn memory(image: &[u8]) -> Memory {
    let ranges: Vec<(GuestAddress, usize)> =
        REGIONS.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    let mem = Memory::from_ranges(&ranges).expect("guest memory");
    let mut rest = image;
    for &(addr, len) in &REGIONS {
        let n = rest.len().min(len);
        mem.write_slice(&rest[..n], GuestAddress(addr)).expect("fill");
        rest = &rest[n..];
    }
    mem
}

/// Ring addresses for a queue of `size`: (descriptors, available, used).
pub fn layout(size: u16) -> (u64, u64, u64) {
    let size = u64::from(size);
    // Not at 0: virtio-queue takes an available ring at 0 for "not set up".
    let avail = 2;
    let desc = (avail + 6 + 2 * size).next_multiple_of(16);
    let used = (desc + 16 * size).next_multiple_of(4);
    (desc, avail, used)
}

/// A ready queue over the layout, as a driver would have set it up.
pub fn queue(size: u16, event_idx: bool) -> Queue {
    let (desc, avail, used) = layout(size);
    let mut q = Queue::new(256).expect("queue");
    q.try_set_size(size).expect("size");
    q.try_set_desc_table_address(GuestAddress(desc)).expect("desc");
    q.try_set_avail_ring_address(GuestAddress(avail)).expect("avail");
    q.try_set_used_ring_address(GuestAddress(used)).expect("used");
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q
}

/// The host ranges backing guest memory, as (start, end).
pub fn host_ranges(mem: &Memory) -> Vec<(usize, usize)> {
    REGIONS
        .iter()
        .map(|&(a, l)| {
            let p = mem.get_host_address(GuestAddress(a)).expect("host address") as usize;
            (p, p + l)
        })
        .collect()
}

/// Panics unless `[ptr, ptr + len)` lies inside one guest region: the
/// device must never hand the disk (or anything) memory outside the guest.
pub fn assert_inside(ranges: &[(usize, usize)], ptr: usize, len: usize) {
    let end = ptr.checked_add(len).expect("buffer end overflows");
    assert!(
        ranges.iter().any(|&(s, e)| ptr >= s && end <= e),
        "buffer {ptr:#x}+{len:#x} lies outside guest memory {ranges:x?}"
    );
}
