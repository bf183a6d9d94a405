//! virtio-blk (block device, type 2): requests from any number of queues
//! run asynchronously on a [`block::DiskImage`], so one slow request does
//! not hold up the others.

mod device;
mod event_handler;
mod metrics;
mod policy;
mod request;
#[cfg(test)]
mod tests;

pub use device::{Block, BlockConfig};
pub use policy::{ErrorAction, ErrorPolicy, StopNotifier};
pub use request::{parse, Request, RequestError, RequestKind, SECTOR_SIZE};
