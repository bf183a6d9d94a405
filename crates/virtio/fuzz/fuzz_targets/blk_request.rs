//! virtio-blk request parsing over arbitrary guest memory: every chain the
//! ring offers goes through `virtio::block::parse`, and whatever it
//! accepts must be within the guest's memory, the disk and the limits.

#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio::block::{parse, RequestKind, SECTOR_SIZE};
use virtio_queue::QueueT;
use vm_memory::GuestMemoryBackend;

mod common;

/// Largest data transfer the device accepts (block::request::MAX_TRANSFER).
const MAX_TRANSFER: u64 = 32 << 20;

fuzz_target!(|data: &[u8]| {
    let Some(input) = common::Input::parse(data) else {
        return;
    };
    let mem = common::memory(input.image);
    let ranges = common::host_ranges(&mem);
    let mut queue = common::queue(input.queue_size, input.event_idx);
    let mut popped = 0u32;
    loop {
        let chain = match virtio::queue::pop(&mut queue, &mem) {
            Ok(Some(c)) => c,
            Ok(None) | Err(_) => break,
        };
        popped += 1;
        // The available-index check bounds one pass to a ring's worth.
        assert!(popped <= u32::from(input.queue_size), "popped {popped} chains");
        let head = chain.head_index();
        // A walk that ends on a descriptor still linking onwards was cut
        // short (a loop, a chain past the queue size, an unreadable link).
        let cut_short = chain.clone().last().is_some_and(|d| d.has_next());
        let used = match parse(chain, input.capacity, input.read_only) {
            Ok(req) => {
                assert!(!cut_short, "a chain cut short was accepted");
                assert!(mem.address_in_range(req.status_addr));
                check(&req.kind, &input, &ranges, req.used_len);
                req.used_len
            }
            Err((_, Some(status))) => {
                assert!(mem.address_in_range(status));
                1
            }
            Err((_, None)) => 0,
        };
        if queue.add_used(&mem, head, used).is_err() {
            break;
        }
    }
});

fn check(kind: &RequestKind, input: &common::Input<'_>, ranges: &[(usize, usize)], used: u32) {
    let in_disk = |offset: u64, len: u64| {
        assert!(offset.checked_add(len).is_some_and(|e| e <= input.capacity));
    };
    match kind {
        RequestKind::Read { offset, bufs } => {
            let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
            for b in bufs {
                common::assert_inside(ranges, b.as_mut_ptr() as usize, b.len());
            }
            assert!(total <= MAX_TRANSFER && total % SECTOR_SIZE == 0);
            assert_eq!(u64::from(used), total + 1);
            in_disk(*offset, total);
        }
        RequestKind::Write { offset, bufs } => {
            assert!(!input.read_only);
            let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
            for b in bufs {
                common::assert_inside(ranges, b.as_ptr() as usize, b.len());
            }
            assert!(total <= MAX_TRANSFER && total % SECTOR_SIZE == 0);
            assert_eq!(used, 1);
            in_disk(*offset, total);
        }
        RequestKind::Discard { offset, len } | RequestKind::WriteZeroes { offset, len, .. } => {
            assert!(!input.read_only);
            assert_eq!(used, 1);
            in_disk(*offset, *len);
        }
        RequestKind::GetId { len, .. } => {
            assert!(*len <= 20);
            assert_eq!(used, len + 1);
        }
        RequestKind::Flush => assert_eq!(used, 1),
    }
}
