//! Virtio devices and the virtio-pci transport.
//!
//! A device ([`VirtioDevice`]) knows its queues, features and
//! configuration space and does its I/O on its own worker thread; the
//! transport ([`VirtioPciDevice`]) turns it into a PCI function the guest
//! driver negotiates with. Everything a guest places in its rings is
//! untrusted: requests are parsed and bounded in each device's `request`
//! module, and a malformed one fails that request, or at worst sets
//! DEVICE_NEEDS_RESET; it never panics the VMM or reaches memory outside
//! the guest.

pub mod balloon;
pub mod block;
pub mod console;
mod device;
pub mod net;
pub mod queue;
pub mod rng;
pub mod transport;
mod worker;

pub use device::{
    ActivateContext, ActivateError, ActiveQueue, GuestMemory, VirtioDevice, VirtioInterrupt,
};
pub use transport::VirtioPciDevice;
pub use worker::Worker;
