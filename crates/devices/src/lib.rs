//! Vireo's legacy platform devices and the buses they sit on.
//!
//! What a PC guest expects before any PCI device exists: the 16550 UART on
//! COM1, the i8042 (only for its reset line), the CMOS real-time clock, and
//! the ACPI fixed registers for power-off and reset, and the I/O APIC of
//! the split irqchip. Devices signal the VMM through event fds and never
//! call into it; the I/O APIC reaches KVM only through its `IoapicSink`.
//!
//! Also here: the MMIO debug console for CPL-3 test guests, and the host
//! side of the serial console (`--serial` backends, raw terminal, the
//! input-forwarding thread).

pub mod acpi_pm;
pub mod bus;
pub mod cmos;
pub mod debugcon;
pub mod ged;
pub mod i8042;
pub mod ioapic;
pub mod pci_hotplug;
pub mod serial;
pub mod serial_backend;
pub mod serial_input;
pub mod terminal;

pub use acpi_pm::AcpiPm;
pub use bus::{Bus, BusDevice, BusError};
pub use cmos::{Cmos, CmosMemory};
pub use debugcon::DebugConsole;
pub use ged::{Ged, GedEvent};
pub use i8042::I8042;
pub use ioapic::{Ioapic, IoapicSink, MsiMessage};
pub use pci_hotplug::{PciHotplug, PciHotplugError};
pub use serial::{Serial, SharedOutput};
pub use serial_backend::{OpenedBackend, SerialBackend, SerialBackendError};
pub use serial_input::{spawn_input_thread, spawn_serial_input, SerialInput};
pub use terminal::RawTerminal;
