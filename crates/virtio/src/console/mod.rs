//! virtio-console (console device, type 3): a single port. What the guest
//! writes to its transmit queue goes to an output the VMM chose (stdout,
//! a file, a unix socket); an optional input descriptor feeds the
//! receive queue. No MULTIPORT, no size, no emergency write.

mod device;
mod event_handler;
mod metrics;
mod request;

pub use device::{Console, RECEIVE_QUEUE, TRANSMIT_QUEUE};
pub use metrics::ConsoleMetrics;
pub use request::MAX_CHAIN_LEN;

#[cfg(test)]
mod tests;
