//! virtio-rng through virtio-drivers' `VirtIORng`: 64 bytes that are not all
//! the same.

use crate::hal::GuestHal;
use crate::say;
use crate::watch::Watched;
use virtio_drivers::device::rng::VirtIORng;

/// The request queue, the one the watch bounds.
pub const REQUEST_QUEUE: u16 = 0;
const WANTED: usize = 64;

pub fn run(transport: Watched) {
    let mut rng = match VirtIORng::<GuestHal, _>::new(transport) {
        Ok(rng) => rng,
        Err(e) => return say!("virtio-rng: FAIL init: {}", e),
    };
    let mut bytes = [0u8; WANTED];
    let mut got = 0;
    // A device may return fewer bytes than asked; a few rounds must do.
    for _ in 0..16 {
        if got == WANTED {
            break;
        }
        match rng.request_entropy(&mut bytes[got..]) {
            Ok(n) => got += n.min(WANTED - got),
            Err(e) => {
                core::mem::forget(rng);
                return say!("virtio-rng: FAIL request: {}", e);
            }
        }
    }
    // Dropping would reset the device through the crate's unbounded wait.
    core::mem::forget(rng);
    if got < WANTED {
        say!("virtio-rng: FAIL got {} of {} bytes", got, WANTED);
    } else if bytes.iter().all(|&b| b == bytes[0]) {
        say!(
            "virtio-rng: FAIL all {} bytes are {:#04x}",
            WANTED,
            bytes[0]
        );
    } else {
        say!("virtio-rng: ok");
    }
}
