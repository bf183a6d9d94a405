//! virtio-console through virtio-drivers' `VirtIOConsole` (port 0): write a
//! line, and optionally mirror the debug console onto it.

use crate::hal::GuestHal;
use crate::out::{self, Sink};
use crate::say;
use crate::watch::Watched;
use alloc::boxed::Box;
use virtio_drivers::device::console::VirtIOConsole;

/// The transmit queue of port 0, the one the watch bounds.
pub const TRANSMIT_QUEUE: u16 = 1;

type Console = VirtIOConsole<GuestHal, Watched>;

struct Mirror(Console);

impl Sink for Mirror {
    fn write_line(&mut self, line: &[u8]) {
        let _ = self.0.send_bytes(line);
    }
}

/// `mirror`: whether this console should carry every debug-console line
/// from now on (only the first console found does).
pub fn run(transport: Watched, mirror: bool) {
    let mut console = match Console::new(transport) {
        Ok(console) => console,
        Err(e) => return say!("virtio-console: FAIL init: {}", e),
    };
    if let Err(e) = console.send_bytes(b"virtio-console: hello from the guest\n") {
        return say!("virtio-console: FAIL send: {}", e);
    }
    if mirror {
        out::set_mirror(Box::leak(Box::new(Mirror(console))));
    } else {
        // Dropping would reset the device through the crate's unbounded wait.
        core::mem::forget(console);
    }
    say!("virtio-console: ok");
}
