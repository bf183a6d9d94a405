//! `reinit`: drive each device a little through a throwaway driver first,
//! then let the real run start over. virtio-drivers begins every init by
//! writing device status 0, so a device that does not reset its queues
//! (enable bits, ring indices) fails the real run that follows.

use crate::hal::GuestHal;
use crate::watch::Watched;
use alloc::boxed::Box;
use core::mem::forget;
use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::device::console::VirtIOConsole;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::device::rng::VirtIORng;
use virtio_drivers::transport::DeviceType;
use virtio_drivers::Result;

/// The drivers are leaked, not dropped: dropping resets through the crate's
/// unbounded status wait, and the reset under test is the next init's.
pub fn warm_up(kind: DeviceType, transport: Watched) -> Result {
    match kind {
        DeviceType::Console => {
            let mut console = VirtIOConsole::<GuestHal, _>::new(transport)?;
            console.send_bytes(b"virtio-console: before reset\n")?;
            forget(console);
        }
        DeviceType::EntropySource => {
            let mut rng = VirtIORng::<GuestHal, _>::new(transport)?;
            rng.request_entropy(&mut [0; 16])?;
            forget(rng);
        }
        DeviceType::Block => {
            let mut blk = VirtIOBlk::<GuestHal, _>::new(transport)?;
            blk.read_blocks(0, &mut [0; SECTOR_SIZE])?;
            forget(blk);
        }
        _ => {
            let mut net = VirtIONetRaw::<GuestHal, _, 16>::new(transport)?;
            let buffer: &'static mut [u8] = Box::leak(Box::new([0u8; 2048]));
            // SAFETY: the buffer is leaked, so it outlives the device's use.
            unsafe { net.receive_begin(buffer) }?;
            forget(net);
        }
    }
    Ok(())
}
