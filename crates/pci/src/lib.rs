//! The PCI root complex Vireo's guests see.
//!
//! One segment with one bus: the host bridge at 00:00.0 and up to 31
//! functions, reached through configuration mechanism #1 (CF8/CFC) or ECAM.
//! Functions describe their BARs and capabilities with
//! [`PciConfiguration`]; the bus maps BARs where the guest (or the VMM, as
//! firmware) puts them and routes accesses there. [`Msix`] implements MSI-X
//! tables on top of host routes given through [`MsiRoutes`].
//!
//! This crate knows nothing about KVM or virtio: doorbells and interrupt
//! routes reach the host through the [`IoEventRegistry`] and [`MsiRoutes`]
//! traits the VMM implements.

mod access;
mod allocator;
mod bus;
mod config;
mod device;
mod host_bridge;
mod msix;

pub use access::{PciConfigIo, PciEcam, PciMmioWindow, CONFIG_IO_LEN, CONFIG_IO_PORT};
pub use allocator::{AllocError, BarAllocator};
pub use bus::{PciBus, PciBusError, SharedPciDevice, NUM_SLOTS};
pub use config::{
    BarRange, BarSpec, ConfigError, PciConfiguration, PciHeader, BAR0_REG, COMMAND_BUS_MASTER,
    COMMAND_MEMORY_SPACE, COMMAND_REG, CONFIG_SPACE_SIZE, NUM_BARS,
};
pub use device::{IoEventRegistry, PciDevice};
pub use host_bridge::HostBridge;
pub use msix::{MsiRoutes, Msix, MsixVector, MAX_MSIX_VECTORS, MSIX_CAP_ID, MSIX_ENTRY_SIZE};
