//! virtio-drivers' `Hal` for this guest: physical == virtual (longmode.S
//! identity-maps 4 GiB), DMA pages and the heap come from pools in .bss that
//! are never freed (the guest runs one pass and powers off).

use crate::out::Global;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

const DMA_PAGES: usize = 256;
const HEAP_SIZE: usize = 14 * 1024 * 1024;

#[repr(C, align(4096))]
struct Pages([u8; DMA_PAGES * PAGE_SIZE]);

struct Bump<T> {
    memory: T,
    used: usize,
}

static DMA: Global<Bump<Pages>> = Global::new(Bump {
    memory: Pages([0; DMA_PAGES * PAGE_SIZE]),
    used: 0,
});

#[repr(C, align(64))]
struct Heap([u8; HEAP_SIZE]);

static HEAP: Global<Bump<Heap>> = Global::new(Bump {
    memory: Heap([0; HEAP_SIZE]),
    used: 0,
});

pub struct GuestHal;

// SAFETY: the DMA pages are never handed out twice, physical addresses equal
// virtual ones, and MMIO below 4 GiB is mapped by longmode.S.
unsafe impl Hal for GuestHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // SAFETY: single-threaded; this is the only live reference.
        let dma = unsafe { DMA.get() };
        let size = pages * PAGE_SIZE;
        if dma.used + size > dma.memory.0.len() {
            return (0, NonNull::dangling());
        }
        let area = &mut dma.memory.0[dma.used..dma.used + size];
        dma.used += size;
        area.fill(0);
        let ptr = NonNull::new(area.as_mut_ptr()).unwrap();
        (ptr.as_ptr() as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("MMIO at physical address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

pub struct BumpAllocator;

// SAFETY: hands out disjoint, suitably aligned pieces of HEAP; never reuses.
unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded; this is the only live reference.
        let heap = unsafe { HEAP.get() };
        let base = heap.memory.0.as_mut_ptr() as usize;
        let start = (base + heap.used).next_multiple_of(layout.align());
        let end = start + layout.size();
        if end > base + HEAP_SIZE {
            return core::ptr::null_mut();
        }
        heap.used = end - base;
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}
