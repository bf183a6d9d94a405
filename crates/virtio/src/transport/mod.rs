//! Transports: how a driver reaches a virtio device. Vireo offers the
//! modern (virtio 1.x) PCI transport only.

mod common_config;
mod interrupt;
mod pci;
#[cfg(test)]
mod tests;

pub use interrupt::{PciInterrupt, NO_VECTOR};
pub use pci::{VirtioPciDevice, VIRTIO_PCI_VENDOR_ID};
