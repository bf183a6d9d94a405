//! virtio-rng (entropy device, type 4): one queue of write-only buffers the
//! device fills from the host's getrandom(2).

mod device;
mod event_handler;
mod metrics;
mod request;

pub use device::Rng;
