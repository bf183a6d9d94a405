//! Draining a virtqueue safely: the loop every device's worker runs when
//! its queue is kicked, with the checks the ring itself needs.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use crate::device::GuestMemory;

/// The ring itself is broken (not one request): only a reset can help.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The driver's available index ran more than a ring's worth ahead.
    #[error("available index {avail} is {ahead} entries ahead of the device (ring size {size})")]
    AvailIndex {
        /// The driver's index.
        avail: u16,
        /// How far ahead of our position it is.
        ahead: u16,
        /// Queue size.
        size: u16,
    },
    /// Reading or writing the ring structures in guest memory failed.
    #[error("ring access failed: {0}")]
    Access(#[from] virtio_queue::Error),
}

/// A popped request: its chain, for the device to parse.
pub type Chain<'a> = DescriptorChain<&'a GuestMemory>;

/// Check the driver's available index before trusting it.
fn check_avail(queue: &Queue, mem: &GuestMemory) -> Result<(), RingError> {
    let avail = queue.avail_idx(mem, Ordering::Acquire)?;
    let ahead = (avail - Wrapping(queue.next_avail())).0;
    if ahead > queue.size() {
        return Err(RingError::AvailIndex {
            avail: avail.0,
            ahead,
            size: queue.size(),
        });
    }
    Ok(())
}

/// Serve every available request with `handle`, which returns how many
/// bytes it wrote into the chain; publish each as used. With EVENT_IDX,
/// keeps going until the driver has nothing more, so no kick is lost.
/// Returns whether the driver wants an interrupt.
pub fn drain<F>(queue: &mut Queue, mem: &GuestMemory, mut handle: F) -> Result<bool, RingError>
where
    F: FnMut(Chain<'_>) -> u32,
{
    let mut used = false;
    loop {
        queue.disable_notification(mem)?;
        check_avail(queue, mem)?;
        while let Some(chain) = queue.iter(mem)?.next() {
            let head = chain.head_index();
            let len = handle(chain);
            queue.add_used(mem, head, len)?;
            used = true;
        }
        if !queue.enable_notification(mem)? {
            break;
        }
    }
    Ok(used && queue.needs_notification(mem)?)
}

/// Pop available chains one at a time, for devices that may stop early
/// (a receive queue with no packet to place): `next` returns None when
/// the ring has nothing available.
pub fn pop<'a>(queue: &mut Queue, mem: &'a GuestMemory) -> Result<Option<Chain<'a>>, RingError> {
    check_avail(queue, mem)?;
    Ok(queue.iter(mem)?.next())
}
