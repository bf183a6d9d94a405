//! The whole virtio-blk path over arbitrary guest memory: a real
//! `virtio::block::Block` is activated on a queue laid out in the fuzzer's
//! memory, kicked, and stopped. Its disk is an in-memory image that checks
//! every buffer it is handed lies inside guest memory and every range
//! inside the disk, then really copies the data, so a bad pointer or range
//! the parser let through crashes here.

#![no_main]

use std::sync::{Arc, Mutex};

use block::{DiskImage, IoBuf, IoBufMut};
use libfuzzer_sys::fuzz_target;
use virtio::block::{Block, BlockConfig};
use virtio::{ActivateContext, ActiveQueue, VirtioDevice, VirtioInterrupt};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vmm_sys_util::eventfd::EventFd;

mod common;

/// A disk in host memory that trusts nothing it is handed.
struct MemDisk {
    data: Mutex<Vec<u8>>,
    read_only: bool,
    guest: Vec<(usize, usize)>,
}

impl MemDisk {
    fn range(&self, offset: u64, len: u64) -> std::ops::Range<usize> {
        let size = self.data.lock().unwrap().len() as u64;
        let end = offset.checked_add(len).expect("range end overflows");
        assert!(end <= size, "request {offset:#x}+{len:#x} past the disk's end {size:#x}");
        offset as usize..end as usize
    }
}

impl DiskImage for MemDisk {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_vectored(&self, offset: u64, bufs: &[IoBufMut]) -> block::Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let range = self.range(offset, total as u64);
        let data = self.data.lock().unwrap();
        let mut at = range.start;
        for b in bufs {
            common::assert_inside(&self.guest, b.as_mut_ptr() as usize, b.len());
            // SAFETY: the buffer was just checked to lie inside guest
            // memory, which outlives the device; the source is our own
            // vector, which does not overlap it.
            unsafe { std::ptr::copy_nonoverlapping(data[at..].as_ptr(), b.as_mut_ptr(), b.len()) };
            at += b.len();
        }
        Ok(())
    }

    fn write_vectored(&self, offset: u64, bufs: &[IoBuf]) -> block::Result<()> {
        assert!(!self.read_only, "write to a read-only disk");
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let range = self.range(offset, total as u64);
        let mut data = self.data.lock().unwrap();
        let mut at = range.start;
        for b in bufs {
            common::assert_inside(&self.guest, b.as_ptr() as usize, b.len());
            // SAFETY: as in read_vectored, the other way round.
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), data[at..].as_mut_ptr(), b.len()) };
            at += b.len();
        }
        Ok(())
    }

    fn flush(&self) -> block::Result<()> {
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> block::Result<()> {
        self.write_zeroes(offset, len, true)
    }

    fn write_zeroes(&self, offset: u64, len: u64, _unmap: bool) -> block::Result<()> {
        assert!(!self.read_only, "zeroing a read-only disk");
        let range = self.range(offset, len);
        self.data.lock().unwrap()[range].fill(0);
        Ok(())
    }

    fn resize(&self, _new_size: u64) -> block::Result<()> {
        Err(block::Error::Unsupported("resize"))
    }
}

struct NoInterrupt;

impl VirtioInterrupt for NoInterrupt {
    fn notify_queue(&self, _queue: u16) {}
    fn notify_config(&self) {}
    fn set_needs_reset(&self) {}
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = common::Input::parse(data) else {
        return;
    };
    let mem = common::memory(input.image);
    // A small disk (up to 64 KiB, whole sectors) the fuzzer can reach the end of.
    let size = (input.capacity % 128 + 1) * 512;
    let disk = Arc::new(MemDisk {
        data: Mutex::new(vec![0; size as usize]),
        read_only: input.read_only,
        guest: common::host_ranges(&mem),
    });
    let mut device = Block::new(BlockConfig {
        disk,
        serial: "fuzz".into(),
        queues: 1,
        io_workers: 1,
        error_policy: virtio::block::ErrorPolicy::default(),
        on_stop: None,
    });
    let kick = EventFd::new(libc_nonblock()).expect("eventfd");
    let mut features = 1u64 << VIRTIO_F_VERSION_1;
    if input.event_idx {
        features |= 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
    }
    let ctx = ActivateContext {
        mem: mem.clone(),
        interrupt: Arc::new(NoInterrupt),
        queues: vec![ActiveQueue {
            index: 0,
            queue: common::queue(input.queue_size, input.event_idx),
            kick: kick.try_clone().expect("eventfd"),
        }],
        features,
    };
    device.activate(ctx).expect("activate");
    kick.write(1).expect("kick");
    // The kick is pending before the stop: the worker serves the queue,
    // then stops; dropping its handler waits for the disk's requests.
    device.reset();
});

fn libc_nonblock() -> i32 {
    0o4000
}
